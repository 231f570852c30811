/* IOKit/IOBufferMemoryDescriptor.h (dmakit C++ layer): IOBufferMemoryDescriptor as IOKit's
 * class: the static factories with Apple's default arguments (each a +1 object, or NULL with
 * the reason in dk_last_failure()), the buffer members, and DriverKit's Create / SetLength /
 * GetAddressRange on the same class. Everything forwards to include/dmakit/
 * IOBufferMemoryDescriptor.h and DriverKit.h. */
#ifndef DMAKIT_COMPAT_IOKIT_IOBUFFERMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_IOKIT_IOBUFFERMEMORYDESCRIPTOR_H

#include <dmakit/IOBufferMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

class IOBufferMemoryDescriptor : public IOMemoryDescriptor {
public:
  static constexpr const char dk_class_name[] = "IOBufferMemoryDescriptor";

  /* ---- factories (REFERENCE.md §3) ---- */
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> withCopy(task_t inTask, IOOptionBits options,
                                                               vm_map_t sourceMap, mach_vm_address_t source,
                                                               mach_vm_size_t size)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_withCopy(inTask, options, sourceMap, source, size));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> withOptions(IOOptionBits options, vm_size_t capacity,
                                                                  vm_offset_t alignment = 1)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_withOptions(options, capacity, alignment));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> inTaskWithOptions(task_t inTask, IOOptionBits options,
                                                                        vm_size_t capacity,
                                                                        vm_offset_t alignment = 1)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_inTaskWithOptions(inTask, options, capacity, alignment));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> inTaskWithOptions(task_t inTask, IOOptionBits options,
                                                                        vm_size_t capacity, vm_offset_t alignment,
                                                                        uint32_t kernTag, uint32_t userTag)
  {
    return dk_cxx::osptr(
        IOBufferMemoryDescriptor_inTaskWithOptionsTagged(inTask, options, capacity, alignment, kernTag, userTag));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> inTaskWithPhysicalMask(task_t inTask, IOOptionBits options,
                                                                             mach_vm_size_t capacity,
                                                                             mach_vm_address_t physicalMask)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_inTaskWithPhysicalMask(inTask, options, capacity, physicalMask));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> withCapacity(vm_size_t capacity, IODirection withDirection,
                                                                   bool withContiguousMemory = false)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_withCapacity(capacity, withDirection, withContiguousMemory));
  }
  static DK_OSPTR_ABI OSPtr<IOBufferMemoryDescriptor> withBytes(const void *bytes, vm_size_t withLength,
                                                                IODirection withDirection,
                                                                bool withContiguousMemory = false)
  {
    return dk_cxx::osptr(IOBufferMemoryDescriptor_withBytes(bytes, withLength, withDirection, withContiguousMemory));
  }

  /* Two-step creation: OSTypeAlloc(IOBufferMemoryDescriptor), then initWithPhysicalMask; on
   * false, release() the object. */
  static IOBufferMemoryDescriptor *dk_alloc() { return IOBufferMemoryDescriptor_alloc(); }
  bool initWithPhysicalMask(task_t inTask, IOOptionBits options, mach_vm_size_t capacity,
                            mach_vm_address_t alignment, mach_vm_address_t physicalMask)
  {
    return IOBufferMemoryDescriptor_initWithPhysicalMask(this, inTask, options, capacity, alignment, physicalMask);
  }

  /* ---- buffer members (§4) ---- */
  void setLength(vm_size_t length) { IOBufferMemoryDescriptor_setLength(this, length); }
  void setDirection(IODirection direction) { IOMemoryDescriptor_setDirection(this, direction); }
  vm_size_t getCapacity() const { return IOBufferMemoryDescriptor_getCapacity(dk_cxx::mut(this)); }
  void *getBytesNoCopy() { return IOBufferMemoryDescriptor_getBytesNoCopy(this); }
  void *getBytesNoCopy(vm_size_t start, vm_size_t withLength)
  {
    return IOBufferMemoryDescriptor_getBytesNoCopyRange(this, start, withLength);
  }
  bool appendBytes(const void *bytes, vm_size_t withLength)
  {
    return IOBufferMemoryDescriptor_appendBytes(this, bytes, withLength);
  }

  /* ---- DriverKit (§6) ---- */
  static kern_return_t Create(uint64_t options, uint64_t capacity, uint64_t alignment,
                              IOBufferMemoryDescriptor **memory)
  {
    return IOBufferMemoryDescriptor_Create(options, capacity, alignment, memory);
  }
  kern_return_t SetLength(uint64_t length, OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IOBufferMemoryDescriptor_SetLength(this, length);
  }
  kern_return_t GetAddressRange(IOAddressSegment *range)
  {
    return IOBufferMemoryDescriptor_GetAddressRange(this, range);
  }

protected:
  ~IOBufferMemoryDescriptor() = default;
};

static_assert(__is_standard_layout(IOBufferMemoryDescriptor),
              "an object pointer must convert to its base classes unchanged");

#endif
