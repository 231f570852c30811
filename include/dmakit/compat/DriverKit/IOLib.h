/* DriverKit/IOLib.h (dmakit C++ layer): IOLog, IOMalloc, IOMallocZero, IOFree, IONew,
 * IONewZero, IODelete and IOSafeDeleteNULL, as in IOKit/IOLib.h; IOVMPageSize (the unit of I/O
 * mappings, include/dmakit/IOMapper.h); and the byte-order helpers DriverKit's IOLib has
 * (libkern/OSByteOrder.h). */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOLIB_H
#define DMAKIT_COMPAT_DRIVERKIT_IOLIB_H

#include <dmakit/IOMapper.h>
#include <dmakit/compat/IOKit/IOLib.h>
#include <dmakit/compat/libkern/OSByteOrder.h>

#endif
