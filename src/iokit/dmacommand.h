/* src/iokit/dmacommand.h: what dmacommand.c shows the rest of dmakit and its tests: the class,
 * and the bounce buffer of a double-buffered preparation (tests play the device through it). */
#ifndef DK_IOKIT_DMACOMMAND_H
#define DK_IOKIT_DMACOMMAND_H

#include "iokit/internal.h"

#include <dmakit/IODMACommand.h>

extern const dk_class dk__dmacommand_class;

/* The bounce buffer of the current preparation (not retained), or NULL when the prepared
 * range is not double-buffered. Its bytes [0, prepared length) are what the device sees. */
IOBufferMemoryDescriptor *dk__dmacommand_bounce(IODMACommand *cmd);
/* Its bytes in this process and, in *length, the prepared length; NULL when not bouncing. */
uint8_t *dk__dmacommand_bounce_bytes(IODMACommand *cmd, uint64_t *length);

#endif
