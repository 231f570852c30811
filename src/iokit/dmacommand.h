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

/* DriverKit's layer (driverkit_dma.c) over the same command. prepare_fit is prepare() with at
 * most `max_segments` segments (0: any) without a mapper: more are double-buffered, into
 * contiguous memory where needed. dext_prepared marks a preparation PrepareForDMA made (its
 * descriptor prepared too), which CompleteDMA alone undoes. */
IOReturn dk__dmacommand_prepare_fit(IODMACommand *cmd, uint64_t offset, uint64_t length, uint32_t max_segments);
void dk__dmacommand_set_dext_prepared(IODMACommand *cmd, bool prepared);
bool dk__dmacommand_dext_prepared(const IODMACommand *cmd);
/* The prepared range and descriptor (not retained); false when not prepared. */
bool dk__dmacommand_preparation(IODMACommand *cmd, uint64_t *offset, uint64_t *length, IOMemoryDescriptor **md);
/* Copy between `bytes` and what the device sees of the prepared range from `offset` (the bounce
 * buffer when double-buffered): to_dma writes (`bytes` NULL writes zeros), else reads. Returns
 * the bytes copied, clipped to the prepared length (XNU IODMACommand::readBytes/writeBytes). */
uint64_t dk__dmacommand_transfer(IODMACommand *cmd, bool to_dma, uint64_t offset, void *bytes, uint64_t length);

#endif
