/* DriverKit/IOReturn.h (dmakit C++ layer): DriverKit's return codes (IOKit's values). */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IORETURN_H
#define DMAKIT_COMPAT_DRIVERKIT_IORETURN_H

#include <dmakit/IOReturn.h>

#endif
