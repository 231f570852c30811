/* IOKit/IOReturn.h (dmakit C++ layer): IOKit's return codes with their exact values. */
#ifndef DMAKIT_COMPAT_IOKIT_IORETURN_H
#define DMAKIT_COMPAT_IOKIT_IORETURN_H

#include <dmakit/IOReturn.h>

#endif
