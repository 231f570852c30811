/* DriverKit/IODMACommand.h (dmakit C++ layer): IODMACommand. DriverKit's members
 * (Create, PrepareForDMA, CompleteDMA, GetPreparation) and IODMACommandSpecification join the
 * class of IOKit/IODMACommand.h when the C library has them; until then this is that class. */
#ifndef DMAKIT_COMPAT_DRIVERKIT_IODMACOMMAND_H
#define DMAKIT_COMPAT_DRIVERKIT_IODMACOMMAND_H

#include <dmakit/compat/IOKit/IODMACommand.h>

#endif
