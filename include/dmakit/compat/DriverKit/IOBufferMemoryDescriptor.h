/* DriverKit/IOBufferMemoryDescriptor.h (dmakit C++ layer): IOBufferMemoryDescriptor
 * with DriverKit's Create, SetLength and GetAddressRange; the same class as
 * IOKit/IOBufferMemoryDescriptor.h. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOBUFFERMEMORYDESCRIPTOR_H
#define DMAKIT_COMPAT_DRIVERKIT_IOBUFFERMEMORYDESCRIPTOR_H

#include <dmakit/compat/IOKit/IOBufferMemoryDescriptor.h>

#endif
