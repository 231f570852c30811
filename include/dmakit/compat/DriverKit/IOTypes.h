/* DriverKit/IOTypes.h (dmakit C++ layer): DriverKit's scalar types and IOAddressSegment. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOTYPES_H
#define DMAKIT_COMPAT_DRIVERKIT_IOTYPES_H

#include <dmakit/IOTypes.h>

#endif
