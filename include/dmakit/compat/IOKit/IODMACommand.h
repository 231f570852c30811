/* IOKit/IODMACommand.h (dmakit C++ layer): IODMACommand as IOKit's class over
 * include/dmakit/IODMACommand.h: the nested types (Segment32/64, SegmentOptions,
 * MappingOptions, SegmentFunction), the output functions (the C library's own functions under
 * IOKit's names, so kIODMACommandOutputHost64 == IODMACommand::OutputHost64 ==
 * IODMACommand_OutputHost64), withSpecification with Apple's default arguments, and the
 * descriptor / prepare / segment members; and DriverKit's members on the same class (Create,
 * PrepareForDMA, CompleteDMA, GetPreparation, PerformOperation, with IODMACommandSpecification
 * and the kIODMACommand* options of include/dmakit/DriverKit.h). */
#ifndef DMAKIT_COMPAT_IOKIT_IODMACOMMAND_H
#define DMAKIT_COMPAT_IOKIT_IODMACOMMAND_H

#include <dmakit/DriverKit.h>
#include <dmakit/IODMACommand.h>
#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOService.h>

/* A member that is the C function itself (the same address), for the output functions. */
#define DK_CXX_LABEL3(prefix, name) #prefix #name
#define DK_CXX_LABEL2(prefix, name) DK_CXX_LABEL3(prefix, name)
#define DK_CXX_C_FUNCTION(name) __asm__(DK_CXX_LABEL2(__USER_LABEL_PREFIX__, name))

class IODMACommand : public OSObject {
public:
  static constexpr const char dk_class_name[] = "IODMACommand";

  typedef IODMACommandSegment32 Segment32;
  typedef IODMACommandSegment64 Segment64;
  typedef IODMACommandSegmentOptions SegmentOptions;

  enum MappingOptions {
    kMapped = kIODMAMapOptionMapped,
    kBypassed = kIODMAMapOptionBypassed,
    kNonCoherent = kIODMAMapOptionNonCoherent,
    kUnmapped = kIODMAMapOptionUnmapped,
    kTypeMask = kIODMAMapOptionTypeMask,
    kNoCacheStore = kIODMAMapOptionNoCacheStore,
    kOnChip = kIODMAMapOptionOnChip,
    kIterateOnly = kIODMAMapOptionIterateOnly,
  };
  enum SynchronizeOptions { kForceDoubleBuffer = kIODMACommandForceDoubleBuffer };

  typedef IODMACommandSegmentFunction SegmentFunction;

  static bool OutputHost32(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputHost32);
  static bool OutputBig32(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputBig32);
  static bool OutputLittle32(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputLittle32);
  static bool OutputHost64(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputHost64);
  static bool OutputBig64(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputBig64);
  static bool OutputLittle64(IODMACommand *target, Segment64 seg, void *segs, UInt32 ind)
      DK_CXX_C_FUNCTION(IODMACommand_OutputLittle64);

  /* ---- creation ---- */
  static DK_OSPTR_ABI OSPtr<IODMACommand> withSpecification(SegmentFunction outSegFunc, UInt8 numAddressBits,
                                                            UInt64 maxSegmentSize,
                                                            MappingOptions mappingOptions = kMapped,
                                                            UInt64 maxTransferSize = 0, UInt32 alignment = 1,
                                                            IOMapper *mapper = NULL, void *refCon = NULL)
  {
    return dk_cxx::osptr(IODMACommand_withSpecification(outSegFunc, numAddressBits, maxSegmentSize, mappingOptions,
                                                        maxTransferSize, alignment, mapper, refCon));
  }
  static DK_OSPTR_ABI OSPtr<IODMACommand> withSpecification(SegmentFunction outSegFunc,
                                                            const SegmentOptions *segmentOptions,
                                                            uint32_t mappingOptions, IOMapper *mapper, void *refCon)
  {
    return dk_cxx::osptr(
        IODMACommand_withSpecificationOptions(outSegFunc, segmentOptions, mappingOptions, mapper, refCon));
  }
  /* XNU's inline form: kIOReturnSuccess, or kIOReturnError (*newCommand NULL). */
  static inline IOReturn weakWithSpecification(IODMACommand **newCommand, SegmentFunction outSegFunc,
                                               UInt8 numAddressBits, UInt64 maxSegmentSize,
                                               MappingOptions mapType = kMapped, UInt64 maxTransferSize = 0,
                                               UInt32 alignment = 1, IOMapper *mapper = NULL, void *refCon = NULL)
  {
    if (!newCommand) return kIOReturnBadArgument;
    *newCommand = IODMACommand_withSpecification(outSegFunc, numAddressBits, maxSegmentSize, mapType,
                                                 maxTransferSize, alignment, mapper, refCon);
    return *newCommand ? kIOReturnSuccess : kIOReturnError;
  }

  /* ---- the memory descriptor ---- */
  IOReturn setMemoryDescriptor(const IOMemoryDescriptor *mem, bool autoPrepare = true)
  {
    return IODMACommand_setMemoryDescriptor(this, mem, autoPrepare);
  }
  IOReturn clearMemoryDescriptor(bool autoComplete = true)
  {
    return IODMACommand_clearMemoryDescriptor(this, autoComplete);
  }
  const IOMemoryDescriptor *getMemoryDescriptor() const { return IODMACommand_getMemoryDescriptor(dk_cxx::mut(this)); }
  IOMemoryDescriptor *getIOMemoryDescriptor() const
  {
    return dk_cxx::mut(IODMACommand_getMemoryDescriptor(dk_cxx::mut(this)));
  }

  /* ---- preparation ---- */
  IOReturn prepare(UInt64 offset = 0, UInt64 length = 0, bool flushCache = true, bool sync = true)
  {
    return IODMACommand_prepare(this, offset, length, flushCache, sync);
  }
  IOReturn complete(bool invalidateCache = true, bool sync = true)
  {
    return IODMACommand_complete(this, invalidateCache, sync);
  }
  IOReturn synchronize(IOOptionBits options) { return IODMACommand_synchronize(this, options); }
  IOReturn getPreparedOffsetAndLength(UInt64 *offset, UInt64 *length)
  {
    return IODMACommand_getPreparedOffsetAndLength(this, offset, length);
  }
  UInt64 readBytes(UInt64 offset, void *bytes, UInt64 length)
  {
    return IODMACommand_readBytes(this, offset, bytes, length);
  }
  UInt64 writeBytes(UInt64 offset, const void *bytes, UInt64 length)
  {
    return IODMACommand_writeBytes(this, offset, bytes, length);
  }

  /* ---- segments ---- */
  IOReturn genIOVMSegments(UInt64 *offset, void *segments, UInt32 *numSegments)
  {
    return IODMACommand_genIOVMSegments(this, offset, segments, numSegments);
  }
  IOReturn genIOVMSegments(SegmentFunction segmentFunction, UInt64 *offsetP, void *segmentsP, UInt32 *numSegmentsP)
  {
    return IODMACommand_genIOVMSegmentsWithFunction(this, segmentFunction, offsetP, segmentsP, numSegmentsP);
  }
  IOReturn gen32IOVMSegments(UInt64 *offset, Segment32 *segments, UInt32 *numSegments)
  {
    return IODMACommand_gen32IOVMSegments(this, offset, segments, numSegments);
  }
  IOReturn gen64IOVMSegments(UInt64 *offset, Segment64 *segments, UInt32 *numSegments)
  {
    return IODMACommand_gen64IOVMSegments(this, offset, segments, numSegments);
  }

  /* ---- the specification ---- */
  UInt8 getNumAddressBits() { return IODMACommand_getNumAddressBits(this); }
  UInt32 getAlignment() { return IODMACommand_getAlignment(this); }

  /* ---- DriverKit (IODMACommand.iig); `supermethod` is accepted and ignored ---- */
  static kern_return_t Create(IOService *device, uint64_t options, const IODMACommandSpecification *specification,
                              IODMACommand **command)
  {
    return IODMACommand_Create(device, options, specification, command);
  }
  kern_return_t PrepareForDMA(uint64_t options, IOMemoryDescriptor *memory, uint64_t offset, uint64_t length,
                              uint64_t *flags, uint32_t *segmentsCount, IOAddressSegment *segments,
                              OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IODMACommand_PrepareForDMA(this, options, memory, offset, length, flags, segmentsCount, segments);
  }
  kern_return_t CompleteDMA(uint64_t options, OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IODMACommand_CompleteDMA(this, options);
  }
  /* *memory is retained for the caller. */
  kern_return_t GetPreparation(uint64_t *offset, uint64_t *length, IOMemoryDescriptor **memory,
                               OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IODMACommand_GetPreparation(this, offset, length, memory);
  }
  kern_return_t PerformOperation(uint64_t options, uint64_t dmaOffset, uint64_t length, uint64_t dataOffset,
                                 IOMemoryDescriptor *data, OSDispatchMethod supermethod = nullptr)
  {
    (void)supermethod;
    return IODMACommand_PerformOperation(this, options, dmaOffset, length, dataOffset, data);
  }

protected:
  ~IODMACommand() = default;
};

static_assert(__is_standard_layout(IODMACommand), "an object pointer must convert to its base classes unchanged");

#endif
