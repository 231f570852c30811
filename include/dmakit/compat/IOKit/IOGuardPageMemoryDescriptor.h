/* IOKit/IOGuardPageMemoryDescriptor.h (dmakit C++ layer): IOGuardPageMemoryDescriptor as IOKit's class, a kind of
 * IOMemoryDescriptor: no-access pages that fault on any touch in a mapping (around data in an
 * IOMultiMemoryDescriptor, say). Forwards to include/dmakit/IOMemoryDescriptor.h. */
#ifndef DMAKIT_COMPAT_IOKIT_IOGUARDPAGEMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_IOKIT_IOGUARDPAGEMEMORYDESCRIPTOR_H

#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

class IOGuardPageMemoryDescriptor : public IOMemoryDescriptor {
public:
  static constexpr const char dk_class_name[] = "IOGuardPageMemoryDescriptor";

  static DK_OSPTR_ABI OSPtr<IOGuardPageMemoryDescriptor> withSize(vm_size_t size)
  {
    return dk_cxx::osptr(IOGuardPageMemoryDescriptor_withSize(size));
  }

protected:
  ~IOGuardPageMemoryDescriptor() = default;
};

static_assert(__is_standard_layout(IOGuardPageMemoryDescriptor), "an object pointer must convert to its base classes unchanged");

#endif
