/* DriverKit/IOLib.h (dmakit C++ layer): IOLog, IOMalloc, IOMallocZero and IOFree,
 * as in IOKit/IOLib.h. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOLIB_H
#define DMAKIT_COMPAT_DRIVERKIT_IOLIB_H

#include <dmakit/compat/IOKit/IOLib.h>

#endif
