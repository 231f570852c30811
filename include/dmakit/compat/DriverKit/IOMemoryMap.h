/* DriverKit/IOMemoryMap.h (dmakit C++ layer): IOMemoryMap with DriverKit's GetAddress,
 * GetLength and GetOffset; the same class as IOKit/IOMemoryDescriptor.h declares. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOMEMORYMAP_H
#define DMAKIT_COMPAT_DRIVERKIT_IOMEMORYMAP_H

#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

#endif
