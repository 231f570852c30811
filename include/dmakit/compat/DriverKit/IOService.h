/* DriverKit/IOService.h (dmakit C++ layer): IOService, the provider IODMACommand::Create takes;
 * the same class as IOKit/IOService.h. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IOSERVICE_H
#define DMAKIT_COMPAT_DRIVERKIT_IOSERVICE_H

#include <dmakit/compat/IOKit/IOService.h>

#endif
