/* dmakit/IODMACommand.h: IOKit's IODMACommand: a device's view of a memory descriptor.
 * withSpecification states what the device can address (address bits, maximum segment size,
 * maximum transfer, alignment) and through which mapper; prepare() makes the memory ready
 * (wired, mapped into the mapper's IOVA space, or double-buffered through bounce pages the
 * device can reach when there is no mapper); gen64IOVMSegments hands out the bus segments;
 * synchronize copies between the memory and the bounce pages; complete() undoes prepare. */
#ifndef DMAKIT_IODMACOMMAND_H
#define DMAKIT_IODMACOMMAND_H

#include <dmakit/IOMapper.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct IODMACommand IODMACommand;

/* IODMACommand::Segment64 / Segment32 */
typedef struct IODMACommandSegment64 { UInt64 fIOVMAddr; UInt64 fLength; } IODMACommandSegment64;
typedef struct IODMACommandSegment32 { UInt32 fIOVMAddr; UInt32 fLength; } IODMACommandSegment32;

/* IODMACommand::SegmentFunction: store segment `index` into the caller's array `segments`.
 * The Output* functions below are IOKit's. */
typedef bool (*IODMACommandSegmentFunction)(IODMACommand *target, IODMACommandSegment64 segment,
                                            void *segments, UInt32 segmentIndex);
DK_API bool IODMACommand_OutputHost32(IODMACommand *, IODMACommandSegment64, void *, UInt32);
DK_API bool IODMACommand_OutputBig32(IODMACommand *, IODMACommandSegment64, void *, UInt32);
DK_API bool IODMACommand_OutputLittle32(IODMACommand *, IODMACommandSegment64, void *, UInt32);
DK_API bool IODMACommand_OutputHost64(IODMACommand *, IODMACommandSegment64, void *, UInt32);
DK_API bool IODMACommand_OutputBig64(IODMACommand *, IODMACommandSegment64, void *, UInt32);
DK_API bool IODMACommand_OutputLittle64(IODMACommand *, IODMACommandSegment64, void *, UInt32);

/* IODMACommand::MappingOptions (kIODMAMapOption*) are in IOMemoryDescriptor.h (REFERENCE.md §1). */
/* IODMACommand::synchronize options besides the directions */
#define kIODMACommandForceDoubleBuffer 0x01000000u

/* outSegFunc must not be NULL (as XNU: the factory then returns NULL). `mapper` NULL means
 * the system mapper (dk_mapper_get_system) for Mapped, NonCoherent and Bypassed (Bypassed with
 * a mapper is refused), and none for Unmapped. numAddressBits 0 means 64 (32 with a 32-bit
 * output function); maxSegmentSize and maxTransferSize 0 mean no limit; alignment 0 means 1.
 * In prepare(), length 0 means the descriptor's length whatever the offset. Pageable memory
 * must be prepared (IOMemoryDescriptor_prepare) before the command is, and stay prepared while
 * it is: see docs/dmacommand.md. */
DK_API IODMACommand *IODMACommand_withSpecification(IODMACommandSegmentFunction outSegFunc, UInt8 numAddressBits,
                                                   UInt64 maxSegmentSize, UInt32 mappingOptions,
                                                   UInt64 maxTransferSize, UInt32 alignment, IOMapper *mapper,
                                                   void *refCon);
DK_API IOReturn IODMACommand_setMemoryDescriptor(IODMACommand *, const IOMemoryDescriptor *mem, bool autoPrepare);
DK_API IOReturn IODMACommand_clearMemoryDescriptor(IODMACommand *, bool autoComplete);
DK_API const IOMemoryDescriptor *IODMACommand_getMemoryDescriptor(IODMACommand *);
/* offset/length 0/0 = the whole descriptor */
DK_API IOReturn IODMACommand_prepare(IODMACommand *, UInt64 offset, UInt64 length, bool flushCache, bool synchronize);
DK_API IOReturn IODMACommand_complete(IODMACommand *, bool invalidateCache, bool synchronize);
DK_API IOReturn IODMACommand_synchronize(IODMACommand *, IOOptionBits options);
DK_API IOReturn IODMACommand_gen64IOVMSegments(IODMACommand *, UInt64 *offset, IODMACommandSegment64 *segments,
                                               UInt32 *numSegments);
DK_API IOReturn IODMACommand_genIOVMSegments(IODMACommand *, UInt64 *offset, void *segments, UInt32 *numSegments);
DK_API void *IODMACommand_getRefCon(IODMACommand *);
/* Whether the prepared range goes through bounce pages (dmakit: for tests and diagnostics). */
DK_API bool dk_dmacommand_is_double_buffered(IODMACommand *);

#ifdef __cplusplus
}
#endif
#endif
