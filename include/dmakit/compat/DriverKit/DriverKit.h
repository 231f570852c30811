/* DriverKit/DriverKit.h (dmakit C++ layer): the DriverKit umbrella: every DriverKit
 * header dmakit provides. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_DRIVERKIT_H
#define DMAKIT_COMPAT_DRIVERKIT_DRIVERKIT_H

#include <dmakit/compat/DriverKit/IOTypes.h>
#include <dmakit/compat/DriverKit/IOReturn.h>
#include <dmakit/compat/DriverKit/IOLib.h>
#include <dmakit/compat/DriverKit/OSObject.h>
#include <dmakit/compat/DriverKit/OSSharedPtr.h>
#include <dmakit/compat/DriverKit/IOMemoryDescriptor.h>
#include <dmakit/compat/DriverKit/IOMemoryMap.h>
#include <dmakit/compat/DriverKit/IOBufferMemoryDescriptor.h>
#include <dmakit/compat/DriverKit/IODMACommand.h>
#include <dmakit/compat/DriverKit/IOService.h>

#endif
