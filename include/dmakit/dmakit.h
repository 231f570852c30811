/* dmakit/dmakit.h: the umbrella header. Include this one. */
#ifndef DMAKIT_DMAKIT_H
#define DMAKIT_DMAKIT_H

#include <dmakit/IOTypes.h>
#include <dmakit/IOReturn.h>
#include <dmakit/OSObject.h>
#include <dmakit/IOMemoryDescriptor.h>
#include <dmakit/IOBufferMemoryDescriptor.h>
#include <dmakit/DriverKit.h>
#include <dmakit/dk.h>
#include <dmakit/reserve.h>
#include <dmakit/share.h>
#include <dmakit/IOService.h>
#include <dmakit/IOMapper.h>
#include <dmakit/IODMACommand.h>

#define DMAKIT_VERSION_MAJOR 0
#define DMAKIT_VERSION_MINOR 1
#define DMAKIT_VERSION_PATCH 0

#endif
