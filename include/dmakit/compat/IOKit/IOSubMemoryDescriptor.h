/* IOKit/IOSubMemoryDescriptor.h (dmakit C++ layer): IOSubMemoryDescriptor as IOKit's class, a kind of
 * IOMemoryDescriptor: a window of another descriptor (retained), whose prepare, complete and segments
 * are the parent's. Forwards to include/dmakit/IOMemoryDescriptor.h. */
#ifndef DMAKIT_COMPAT_IOKIT_IOSUBMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_IOKIT_IOSUBMEMORYDESCRIPTOR_H

#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

class IOSubMemoryDescriptor : public IOMemoryDescriptor {
public:
  static constexpr const char dk_class_name[] = "IOSubMemoryDescriptor";

  static DK_OSPTR_ABI OSPtr<IOSubMemoryDescriptor> withSubRange(IOMemoryDescriptor *of, IOByteCount offset,
                                                                 IOByteCount length, IOOptionBits options)
  {
    return dk_cxx::osptr(IOSubMemoryDescriptor_withSubRange(of, offset, length, options));
  }

protected:
  ~IOSubMemoryDescriptor() = default;
};

static_assert(__is_standard_layout(IOSubMemoryDescriptor), "an object pointer must convert to its base classes unchanged");

#endif
