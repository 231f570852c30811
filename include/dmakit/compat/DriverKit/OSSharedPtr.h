/* DriverKit/OSSharedPtr.h (dmakit C++ layer): OSSharedPtr, with DriverKit's attach()
 * for out-parameters (one class for kernel and DriverKit code). */
#ifndef DMAKIT_COMPAT_DRIVERKIT_OSSHAREDPTR_H
#define DMAKIT_COMPAT_DRIVERKIT_OSSHAREDPTR_H

#include <dmakit/compat/libkern/c++/OSSharedPtr.h>

#endif
