/* dmakit/IOService.h: the provider a driver is given, as far as DMA needs it. In IOKit an
 * IOService is a node of the registry (for a PCI driver, its IOPCIDevice); here it is one PCI
 * function named by its address ("0000:00:04.0"), opened with dk_service_open, counted as any
 * OSObject, and knowing its IOMapper: the VFIO mapper when the function is bound to vfio-pci
 * (the one already open in this process, else a new one), else none (bus address = physical
 * address). Registers, config space and interrupts stay with the driver: docs/porting.md. */
#ifndef DMAKIT_IOSERVICE_H
#define DMAKIT_IOSERVICE_H

#include <dmakit/IOReturn.h>
#include <dmakit/OSObject.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A class in C++ (the C++ layer's IOService completes it), a struct in C. */
DK_OBJECT_TYPEDEF(IOService);

/* The PCI function at `address` (domain:bus:device.function, as in /sys/bus/pci/devices),
 * +1 for the caller (OSObject_release). Bound to vfio-pci, it opens the device's VFIO mapper
 * unless one is open in this process already (dk_mapper_open_vfio), and then fails as that
 * would. kIOReturnBadArgument (not an address, NULL out), kIOReturnNoDevice (no such function). */
DK_API IOReturn dk_service_open(const char *address, IOService **out);
/* Its PCI address, or NULL for anything but an IOService. */
DK_API const char *dk_service_get_address(IOService *service);

#ifdef __cplusplus
}
#endif
#endif
