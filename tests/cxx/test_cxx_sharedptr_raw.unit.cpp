/* tests/cxx/test_cxx_sharedptr_raw.unit.cpp: the other unit of test_cxx_sharedptr: IOKit's
 * factories as raw pointers (no IOKIT_ENABLE_SHARED_PTR here), linked with a unit where they
 * return OSSharedPtr. */
#include <IOKit/IOBufferMemoryDescriptor.h>

IOBufferMemoryDescriptor *raw_unit_with_capacity(vm_size_t capacity);
IOMemoryMap *raw_unit_map(IOBufferMemoryDescriptor *b);

IOBufferMemoryDescriptor *raw_unit_with_capacity(vm_size_t capacity)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor::withCapacity(capacity, kIODirectionOut);
  return b;
}

IOMemoryMap *raw_unit_map(IOBufferMemoryDescriptor *b)
{
  IOMemoryMap *m = b->map();
  return m;
}
