#!/bin/sh
# tests/check_exports.sh LIB: the shared library exports the public API and nothing else.
# Public names: IOKit's (IO*, OS*), kernel_task/kernel_map, and dk_*.
set -eu
lib="$1"
syms=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort -u)
bad=$(printf '%s\n' "$syms" | grep -vE '^(IO[A-Za-z]+_[A-Za-z0-9]+|OSObject_[a-zA-Z]+|IOVMPageSize|kernel_task|kernel_map|dk_[a-z_]+|_init|_fini|__odr_asan\.[A-Za-z_]+)$' || true)
if [ -n "$bad" ]; then
  echo "FAIL: non-public symbols exported:"; printf '  %s\n' $bad; exit 1
fi
# the fixed names of DESIGN.md must all be there
for s in IOBufferMemoryDescriptor_inTaskWithPhysicalMask IOBufferMemoryDescriptor_inTaskWithOptions \
         IOBufferMemoryDescriptor_inTaskWithOptionsTagged IOBufferMemoryDescriptor_withOptions \
         IOBufferMemoryDescriptor_withCapacity IOBufferMemoryDescriptor_withBytes IOBufferMemoryDescriptor_alloc \
         IOBufferMemoryDescriptor_initWithPhysicalMask IOBufferMemoryDescriptor_getBytesNoCopy \
         IOBufferMemoryDescriptor_getBytesNoCopyRange IOBufferMemoryDescriptor_getCapacity \
         IOBufferMemoryDescriptor_setLength IOBufferMemoryDescriptor_appendBytes IOBufferMemoryDescriptor_withCopy \
         IOMemoryDescriptor_getLength IOMemoryDescriptor_getDirection IOMemoryDescriptor_setDirection \
         IOMemoryDescriptor_getTag IOMemoryDescriptor_setTag IOMemoryDescriptor_getFlags \
         IOMemoryDescriptor_getPhysicalSegment IOMemoryDescriptor_prepare IOMemoryDescriptor_complete \
         IOMemoryDescriptor_readBytes IOMemoryDescriptor_writeBytes IOMemoryDescriptor_performOperation \
         IOMemoryDescriptor_setPurgeable IOMemoryDescriptor_map IOMemoryDescriptor_createMappingInTask \
         IOMemoryMap_getAddress IOMemoryMap_getSize IOMemoryMap_getLength IOMemoryMap_getMapOptions IOMemoryMap_unmap \
         OSObject_retain OSObject_release kernel_task dk_last_failure dk_ioreturn_name dk_ioreturn_string \
         IOBufferMemoryDescriptor_inTaskWithConstraints dk_reserve_estimate dk_reserve_create dk_reserve_list \
         dk_reserve_pages dk_reserve_release; do
  printf '%s\n' "$syms" | grep -qx "$s" || { echo "FAIL: $s is not exported"; exit 1; }
done
echo "1 passed, 0 failed"
