/* src/iokit/driverkit.c: DriverKit's calls (REFERENCE.md §6) on top of the kernel-style ones:
 * Create's option check and error folding, SetLength's unconditional success, CreateMapping's
 * translation of DriverKit options (guards by default, its own cache selector encoding). */
#include "iokit/internal.h"

kern_return_t IOBufferMemoryDescriptor_Create(uint64_t options, uint64_t capacity, uint64_t alignment,
                                              IOBufferMemoryDescriptor **memory)
{
  dk__enter("IOBufferMemoryDescriptor::Create");
  if (memory) *memory = NULL;
  if (!memory)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "memory (the result pointer) is NULL");
  if (options & ~(uint64_t)kIOMemoryDirectionOutIn)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "options 0x%llx: only direction bits (0x3) are allowed", (unsigned long long)options);
  if (capacity > (uint64_t)SIZE_MAX || alignment > (uint64_t)SIZE_MAX)
    return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_ARGUMENT, "capacity or alignment too large");
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, (IOOptionBits)(options & 3) | kIOMemoryKernelUserShared | kIOMemoryThreadSafe,
      (vm_size_t)capacity, (vm_offset_t)alignment);
  if (!b) {
    /* every init failure, capacity 0 included, is NoMemory in DriverKit; keep the reason */
    dk__fail_recode("IOBufferMemoryDescriptor::Create", kIOReturnNoMemory);
    return kIOReturnNoMemory;
  }
  *memory = b;
  return kIOReturnSuccess;
}

kern_return_t IOBufferMemoryDescriptor_SetLength(IOBufferMemoryDescriptor *self, uint64_t length)
{
  if (length <= (uint64_t)SIZE_MAX) IOBufferMemoryDescriptor_setLength(self, (vm_size_t)length);
  return kIOReturnSuccess;
}

kern_return_t IOBufferMemoryDescriptor_GetAddressRange(IOBufferMemoryDescriptor *self, IOAddressSegment *range)
{
  dk__enter("IOBufferMemoryDescriptor::GetAddressRange");
  IOMemoryDescriptor *md = dk__md(self);
  if (!md || !range) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "bad argument");
  range->address = (uint64_t)(uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(self);
  range->length = md->length;
  return kIOReturnSuccess;
}

kern_return_t IOMemoryDescriptor_GetLength(IOMemoryDescriptor *self, uint64_t *returnLength)
{
  dk__enter("IOMemoryDescriptor::GetLength");
  IOMemoryDescriptor *md = dk__md(self);
  if (!md || !returnLength) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "bad argument");
  *returnLength = md->length;
  return kIOReturnSuccess;
}

kern_return_t IOMemoryDescriptor_CreateMapping(IOMemoryDescriptor *self, uint64_t options, uint64_t address,
                                               uint64_t offset, uint64_t length, uint64_t alignment,
                                               IOMemoryMap **map)
{
  (void)alignment;   /* ignored, as in DriverKit */
  dk__enter("IOMemoryDescriptor::CreateMapping");
  if (map) *map = NULL;
  IOMemoryDescriptor *md = dk__md(self);
  if (!md || !map) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "bad argument");
  IOOptionBits k = 0;
  switch (options & 0xFF00) {
  case kIOMemoryMapCacheModeDefault:      k |= kIOMapDefaultCache; break;
  case kIOMemoryMapCacheModeInhibit:      k |= kIOMapInhibitCache; break;
  case kIOMemoryMapCacheModeCopyback:     k |= kIOMapCopybackCache; break;
  case kIOMemoryMapCacheModeWriteThrough: k |= kIOMapWriteThruCache; break;
  case kIOMemoryMapCacheModeRealTime:     k |= kIOMapRealTimeCache; break;
  default:
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "unknown cache selector 0x%llx",
                    (unsigned long long)(options & 0xFF00));
  }
  bool fixed = options & kIOMemoryMapFixedAddress;
  if (!fixed) k |= kIOMapAnywhere;
  switch (options & kIOMemoryMapGuardedMask) {
  case kIOMemoryMapGuardedDefault: if (!fixed) k |= kIOMapGuardedSmall; break;
  case kIOMemoryMapGuardedNone:    break;
  case kIOMemoryMapGuardedSmall:   k |= kIOMapGuardedSmall; break;
  case kIOMemoryMapGuardedLarge:   k |= kIOMapGuardedLarge; break;
  default:
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "unknown guard selector 0x%llx",
                    (unsigned long long)(options & kIOMemoryMapGuardedMask));
  }
  if (options & kIOMemoryMapReadOnly) k |= kIOMapReadOnly;
  IOMemoryMap *m = dk__create_mapping(md, kernel_task, address, k, offset, length);
  if (!m) {
    dk__fail_recode("IOMemoryDescriptor::CreateMapping", kIOReturnError);
    return kIOReturnError;
  }
  *map = m;
  return kIOReturnSuccess;
}

uint64_t IOMemoryMap_GetAddress(IOMemoryMap *map) { return IOMemoryMap_getAddress(map); }
uint64_t IOMemoryMap_GetLength(IOMemoryMap *map) { return IOMemoryMap_getLength(map); }
uint64_t IOMemoryMap_GetOffset(IOMemoryMap *p)
{
  IOMemoryMap *m = dk__object_cast(p, &dk__map_class);
  return m ? m->offset : 0;
}
