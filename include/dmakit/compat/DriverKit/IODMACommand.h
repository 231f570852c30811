/* DriverKit/IODMACommand.h (dmakit C++ layer): IODMACommand with DriverKit's Create,
 * PrepareForDMA, CompleteDMA, GetPreparation and PerformOperation, IODMACommandSpecification and
 * the kIODMACommand* options; the same class as IOKit/IODMACommand.h. As DriverKit's header, it
 * brings IOService and IOMemoryDescriptor. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IODMACOMMAND_H
#define DMAKIT_COMPAT_DRIVERKIT_IODMACOMMAND_H

#include <dmakit/compat/DriverKit/IOMemoryDescriptor.h>
#include <dmakit/compat/DriverKit/IOService.h>
#include <dmakit/compat/IOKit/IODMACommand.h>

#endif
