/* IOKit/IOMemoryDescriptor.h (dmakit C++ layer): IOMemoryDescriptor and IOMemoryMap as IOKit's
 * classes over dmakit's C calls (include/dmakit/IOMemoryDescriptor.h, DriverKit.h): the kernel
 * members with Apple's default arguments and the DriverKit members (GetLength, CreateMapping,
 * GetAddress ...) on the same classes. The constants are the C header's, with IOKit's values. */
#ifndef DMAKIT_COMPAT_IOKIT_IOMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_IOKIT_IOMEMORYDESCRIPTOR_H

#include <dmakit/DriverKit.h>
#include <dmakit/IOMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOTypes.h>
#include <dmakit/compat/libkern/c++/OSObject.h>
#include <dmakit/compat/libkern/c++/OSPtr.h>

class IOMemoryDescriptor : public OSObject {
public:
  static constexpr const char dk_class_name[] = "IOMemoryDescriptor";
  typedef IOOptionBits DMACommandOps;

  IODirection getDirection() const { return IOMemoryDescriptor_getDirection(md()); }
  IOByteCount getLength() const { return IOMemoryDescriptor_getLength(md()); }
  void setTag(IOOptionBits tag) { IOMemoryDescriptor_setTag(this, tag); }
  IOOptionBits getTag() { return IOMemoryDescriptor_getTag(this); }
  uint64_t getFlags() { return IOMemoryDescriptor_getFlags(this); }

  IOByteCount readBytes(IOByteCount offset, void *bytes, IOByteCount withLength)
  {
    return IOMemoryDescriptor_readBytes(this, offset, bytes, withLength);
  }
  IOByteCount writeBytes(IOByteCount offset, const void *bytes, IOByteCount withLength)
  {
    return IOMemoryDescriptor_writeBytes(this, offset, bytes, withLength);
  }

  addr64_t getPhysicalSegment(IOByteCount offset, IOByteCount *length, IOOptionBits options = 0)
  {
    return IOMemoryDescriptor_getPhysicalSegment(this, offset, length, options);
  }
  IOPhysicalAddress getPhysicalAddress() { return IOMemoryDescriptor_getPhysicalAddress(this); }

  IOReturn prepare(IODirection forDirection = kIODirectionNone) { return IOMemoryDescriptor_prepare(this, forDirection); }
  IOReturn complete(IODirection forDirection = kIODirectionNone)
  {
    return IOMemoryDescriptor_complete(this, forDirection);
  }
  IOReturn performOperation(IOOptionBits options, IOByteCount offset, IOByteCount length)
  {
    return IOMemoryDescriptor_performOperation(this, options, offset, length);
  }
  IOReturn setPurgeable(IOOptionBits newState, IOOptionBits *oldState)
  {
    return IOMemoryDescriptor_setPurgeable(this, newState, oldState);
  }

  /* ---- descriptors over memory the caller already has (IOKit's factories, each +1) ---- */
  static DK_OSPTR_ABI OSPtr<IOMemoryDescriptor> withAddressRange(mach_vm_address_t address, mach_vm_size_t length,
                                                                 IOOptionBits options, task_t task)
  {
    return dk_cxx::osptr(IOMemoryDescriptor_withAddressRange(address, length, options, task));
  }
  static DK_OSPTR_ABI OSPtr<IOMemoryDescriptor> withAddressRanges(IOAddressRange *ranges, UInt32 rangeCount,
                                                                  IOOptionBits options, task_t task)
  {
    return dk_cxx::osptr(IOMemoryDescriptor_withAddressRanges(ranges, rangeCount, options, task));
  }
  static DK_OSPTR_ABI OSPtr<IOMemoryDescriptor> withOptions(void *buffers, UInt32 count, UInt32 offset, task_t task,
                                                            IOOptionBits options, IOMapper *mapper = kIOMapperSystem)
  {
    return dk_cxx::osptr(IOMemoryDescriptor_withOptions(buffers, count, offset, task, options, mapper));
  }
  static DK_OSPTR_ABI OSPtr<IOMemoryDescriptor> withAddress(void *address, IOByteCount withLength,
                                                            IODirection withDirection)
  {
    return dk_cxx::osptr(IOMemoryDescriptor_withAddress(address, withLength, withDirection));
  }
  static DK_OSPTR_ABI OSPtr<IOMemoryDescriptor> withPhysicalAddress(IOPhysicalAddress address, IOByteCount withLength,
                                                                    IODirection withDirection)
  {
    return dk_cxx::osptr(IOMemoryDescriptor_withPhysicalAddress(address, withLength, withDirection));
  }

  uint64_t getDMAMapLength(uint64_t *offset = nullptr) { return IOMemoryDescriptor_getDMAMapLength(this, offset); }
  void setContext(OSObject *context) { IOMemoryDescriptor_setContext(this, context); }
  DK_OSPTR_ABI OSPtr<OSObject> copyContext() const
  {
    return dk_cxx::osptr(static_cast<OSObject *>(IOMemoryDescriptor_copyContext(md())));
  }

  DK_OSPTR_ABI OSPtr<IOMemoryMap> createMappingInTask(task_t intoTask, mach_vm_address_t atAddress,
                                                      IOOptionBits options, mach_vm_size_t offset = 0,
                                                      mach_vm_size_t length = 0);
  DK_OSPTR_ABI OSPtr<IOMemoryMap> map(IOOptionBits options = 0);

  /* ---- DriverKit ---- */
  kern_return_t GetLength(uint64_t *returnLength) { return IOMemoryDescriptor_GetLength(this, returnLength); }
  kern_return_t CreateMapping(uint64_t options, uint64_t address, uint64_t offset, uint64_t length,
                              uint64_t alignment, IOMemoryMap **map, OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IOMemoryDescriptor_CreateMapping(this, options, address, offset, length, alignment, map);
  }

protected:
  ~IOMemoryDescriptor() = default;

private:
  IOMemoryDescriptor *md() const { return dk_cxx::mut(this); }
};

class IOMemoryMap : public OSObject {
public:
  static constexpr const char dk_class_name[] = "IOMemoryMap";

  IOVirtualAddress getVirtualAddress() { return IOMemoryMap_getVirtualAddress(this); }
  IOPhysicalAddress getPhysicalSegment(IOByteCount offset, IOByteCount *length, IOOptionBits options = 0)
  {
    return IOMemoryMap_getPhysicalSegment(this, offset, length, options);
  }
  IOPhysicalAddress getPhysicalAddress() { return IOMemoryMap_getPhysicalAddress(this); }
  IOByteCount getLength() { return IOMemoryMap_getLength(this); }
  task_t getAddressTask() { return IOMemoryMap_getAddressTask(this); }
  IOMemoryDescriptor *getMemoryDescriptor() { return IOMemoryMap_getMemoryDescriptor(this); }
  IOOptionBits getMapOptions() { return IOMemoryMap_getMapOptions(this); }
  IOReturn unmap() { return IOMemoryMap_unmap(this); }
  mach_vm_address_t getAddress() { return IOMemoryMap_getAddress(this); }
  mach_vm_size_t getSize() { return IOMemoryMap_getSize(this); }
  IOReturn redirect(IOMemoryDescriptor *newBackingMemory, IOOptionBits options, mach_vm_size_t offset = 0)
  {
    return IOMemoryMap_redirect(this, newBackingMemory, options, offset);
  }

  /* ---- DriverKit ---- */
  uint64_t GetAddress() { return IOMemoryMap_GetAddress(this); }
  uint64_t GetLength() { return IOMemoryMap_GetLength(this); }
  uint64_t GetOffset() { return IOMemoryMap_GetOffset(this); }

protected:
  ~IOMemoryMap() = default;
};

inline OSPtr<IOMemoryMap> IOMemoryDescriptor::createMappingInTask(task_t intoTask, mach_vm_address_t atAddress,
                                                                  IOOptionBits options, mach_vm_size_t offset,
                                                                  mach_vm_size_t length)
{
  return dk_cxx::osptr(IOMemoryDescriptor_createMappingInTask(this, intoTask, atAddress, options, offset, length));
}

inline OSPtr<IOMemoryMap> IOMemoryDescriptor::map(IOOptionBits options)
{
  return dk_cxx::osptr(IOMemoryDescriptor_map(this, options));
}

static_assert(__is_standard_layout(IOMemoryDescriptor) && __is_standard_layout(IOMemoryMap),
              "an object pointer must convert to its base classes unchanged");

#endif
