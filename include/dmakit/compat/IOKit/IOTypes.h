/* IOKit/IOTypes.h (dmakit C++ layer): IOKit's scalar types, as dmakit defines them for LP64
 * Linux (REFERENCE.md §1.1), the task handles (kernel_task is this process), and, as in XNU,
 * the return codes. */
#ifndef DMAKIT_COMPAT_IOKIT_IOTYPES_H
#define DMAKIT_COMPAT_IOKIT_IOTYPES_H

#include <dmakit/IOReturn.h>
#include <dmakit/IOTypes.h>

#endif
