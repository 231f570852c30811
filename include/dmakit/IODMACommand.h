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

DK_OBJECT_TYPEDEF(IODMACommand);

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

/* IOKit's names for them (XNU defines these as IODMACommand::Output*, the same functions). */
#define kIODMACommandOutputHost32   (IODMACommand_OutputHost32)
#define kIODMACommandOutputBig32    (IODMACommand_OutputBig32)
#define kIODMACommandOutputLittle32 (IODMACommand_OutputLittle32)
#define kIODMACommandOutputHost64   (IODMACommand_OutputHost64)
#define kIODMACommandOutputBig64    (IODMACommand_OutputBig64)
#define kIODMACommandOutputLittle64 (IODMACommand_OutputLittle64)

/* IODMACommand::SegmentOptions (XNU layout). */
typedef struct IODMACommandSegmentOptions {
  uint8_t  fStructSize;
  uint8_t  fNumAddressBits;
  uint64_t fMaxSegmentSize;
  uint64_t fMaxTransferSize;
  uint32_t fAlignment;
  uint32_t fAlignmentLength;
  uint32_t fAlignmentInternalSegments;
} IODMACommandSegmentOptions;

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
/* The SegmentOptions form. dmakit aligns every segment start alike and no segment length:
 * fAlignmentLength above 1, or fAlignmentInternalSegments other than 0 or fAlignment, is
 * kIOReturnUnsupported (NULL, with the reason in dk_last_failure()). */
DK_API IODMACommand *IODMACommand_withSpecificationOptions(IODMACommandSegmentFunction outSegFunc,
                                                           const IODMACommandSegmentOptions *segmentOptions,
                                                           UInt32 mappingOptions, IOMapper *mapper, void *refCon);
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
/* 32-bit segments; the command's output function must be a 32-bit one (else kIOReturnBadArgument:
 * XNU would write 64-bit records into the 32-bit array). */
DK_API IOReturn IODMACommand_gen32IOVMSegments(IODMACommand *, UInt64 *offset, IODMACommandSegment32 *segments,
                                               UInt32 *numSegments);
/* genIOVMSegments with another output function than the command's (XNU's overload). */
DK_API IOReturn IODMACommand_genIOVMSegmentsWithFunction(IODMACommand *, IODMACommandSegmentFunction segmentFunction,
                                                         UInt64 *offset, void *segments, UInt32 *numSegments);
/* The prepared range; kIOReturnNotReady when not prepared. Either pointer may be NULL. */
DK_API IOReturn IODMACommand_getPreparedOffsetAndLength(IODMACommand *, UInt64 *offset, UInt64 *length);
/* Copy from / to what the device sees at `offset` of the prepared range (the bounce buffer when
 * double-buffered), clipped to the range; the bytes copied (0 when not prepared or past the end). */
DK_API UInt64 IODMACommand_readBytes(IODMACommand *, UInt64 offset, void *bytes, UInt64 length);
DK_API UInt64 IODMACommand_writeBytes(IODMACommand *, UInt64 offset, const void *bytes, UInt64 length);
/* The specification as given: numAddressBits (32 for a 32-bit output function's 0) and alignment. */
DK_API UInt8  IODMACommand_getNumAddressBits(IODMACommand *);
DK_API UInt32 IODMACommand_getAlignment(IODMACommand *);
DK_API void *IODMACommand_getRefCon(IODMACommand *);
/* Whether the prepared range goes through bounce pages (dmakit: for tests and diagnostics). */
DK_API bool dk_dmacommand_is_double_buffered(IODMACommand *);

#ifdef __cplusplus
}
#endif
#endif
