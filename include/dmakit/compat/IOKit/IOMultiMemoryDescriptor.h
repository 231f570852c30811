/* IOKit/IOMultiMemoryDescriptor.h (dmakit C++ layer): IOMultiMemoryDescriptor as IOKit's class, a kind of
 * IOMemoryDescriptor: descriptors end to end (each retained; the array is always copied, so
 * asReference is accepted and ignored). Forwards to include/dmakit/IOMemoryDescriptor.h. */
#ifndef DMAKIT_COMPAT_IOKIT_IOMULTIMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_IOKIT_IOMULTIMEMORYDESCRIPTOR_H

#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

class IOMultiMemoryDescriptor : public IOMemoryDescriptor {
public:
  static constexpr const char dk_class_name[] = "IOMultiMemoryDescriptor";

  static DK_OSPTR_ABI OSPtr<IOMultiMemoryDescriptor> withDescriptors(IOMemoryDescriptor **descriptors, UInt32 withCount,
                                                                     IODirection withDirection, bool asReference = false)
  {
    return dk_cxx::osptr(IOMultiMemoryDescriptor_withDescriptors(descriptors, withCount, withDirection, asReference));
  }

protected:
  ~IOMultiMemoryDescriptor() = default;
};

static_assert(__is_standard_layout(IOMultiMemoryDescriptor), "an object pointer must convert to its base classes unchanged");

#endif
