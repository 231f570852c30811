/* src/iokit/service.h: what service.c shows the rest of dmakit: the IOService class and the
 * check that a pointer is one (DriverKit's IODMACommand_Create takes a device). */
#ifndef DK_IOKIT_SERVICE_H
#define DK_IOKIT_SERVICE_H

#include "iokit/internal.h"

extern const dk_class dk__service_class;

/* `p` as an IOService, or NULL (NULL, freed, another class). */
IOService *dk__service(const void *p);

#endif
