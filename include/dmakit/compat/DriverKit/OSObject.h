/* DriverKit/OSObject.h (dmakit C++ layer): OSObject (retain, release) and OSSafeReleaseNULL,
 * OSDynamicCast, as in libkern. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_OSOBJECT_H
#define DMAKIT_COMPAT_DRIVERKIT_OSOBJECT_H

#include <dmakit/compat/libkern/c++/OSObject.h>

#endif
