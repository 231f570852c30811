/* libkern/OSTypes.h (dmakit C++ layer): libkern's integer types (UInt8 ... SInt64, Boolean). */
#ifndef DMAKIT_COMPAT_LIBKERN_OSTYPES_H
#define DMAKIT_COMPAT_LIBKERN_OSTYPES_H

#include <dmakit/IOTypes.h>

#endif
