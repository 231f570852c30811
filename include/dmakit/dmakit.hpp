/* dmakit/dmakit.hpp: the C++ layer, IOKit's classes (OSObject, OSSharedPtr, IOMemoryDescriptor,
 * IOBufferMemoryDescriptor, IOMemoryMap, IODMACommand, IOService, IOMapper) over dmakit's C API, header
 * only, C++17. Ported driver code includes Apple's paths instead (<IOKit/IODMACommand.h>,
 * <DriverKit/IOBufferMemoryDescriptor.h> ...), found in include/dmakit/compat (pkg-config
 * dmakit-cxx, CMake dmakit::cxx). docs/cxx.md tells the details. */
#ifndef DMAKIT_DMAKIT_HPP
#define DMAKIT_DMAKIT_HPP

#include <dmakit/dmakit.h>
#include <dmakit/compat/libkern/c++/OSObject.h>
#include <dmakit/compat/libkern/c++/OSSharedPtr.h>
#include <dmakit/compat/libkern/c++/OSPtr.h>
#include <dmakit/compat/IOKit/IOLib.h>
#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOSubMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOMultiMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOGuardPageMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOBufferMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IODMACommand.h>
#include <dmakit/compat/IOKit/IOService.h>
#include <dmakit/compat/IOKit/IOMapper.h>
#include <dmakit/compat/libkern/OSByteOrder.h>

#endif
