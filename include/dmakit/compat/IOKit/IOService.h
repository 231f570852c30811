/* IOKit/IOService.h (dmakit C++ layer): IOService, the provider a driver's DMA is for. In dmakit
 * it is one PCI function opened with dk_service_open (include/dmakit/IOService.h), an OSObject
 * that knows the function's IOMapper (IOMapper::copyMapperForDevice, IODMACommand::Create). The
 * C header declares the class; this completes it. Matching, the registry, power management and
 * the device's registers are not here (docs/porting.md): a driver's own provider class such as
 * IOPCIDevice derives from it, and pointers to it convert to IOService * unchanged. */
#ifndef DMAKIT_COMPAT_IOKIT_IOSERVICE_H
#define DMAKIT_COMPAT_IOKIT_IOSERVICE_H

#include <dmakit/IOService.h>
#include <dmakit/compat/libkern/c++/OSObject.h>

class IOService : public OSObject {
public:
  static constexpr const char dk_class_name[] = "IOService";

protected:
  ~IOService() = default;
};

static_assert(__is_standard_layout(IOService), "an object pointer must convert to its base classes unchanged");

#endif
