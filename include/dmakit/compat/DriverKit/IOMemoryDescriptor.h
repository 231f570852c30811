/* DriverKit/IOMemoryDescriptor.h (dmakit C++ layer): IOMemoryDescriptor with
 * DriverKit's members (GetLength, CreateMapping) and the kIOMemoryDirection* and kIOMemoryMap*
 * options; the same class as IOKit/IOMemoryDescriptor.h. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_DRIVERKIT_IOMEMORYDESCRIPTOR_H

#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

#endif
