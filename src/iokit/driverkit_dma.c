/* src/iokit/driverkit_dma.c: DriverKit's IODMACommand (IODMACommand.iig; its kernel side is XNU
 * IOUserServer.cpp, IODMACommand::*_Impl) as a thin layer over the kernel-style command of
 * dmacommand.c: Create is withSpecification with the device's mapper, PrepareForDMA is the
 * descriptor's prepare, setMemoryDescriptor, prepare and one gen, CompleteDMA undoes the three.
 * The one addition: the segments always cover the whole range (dmacommand.c double-buffers a
 * range of more physical runs than the caller has room for, into contiguous memory), because
 * DriverKit drivers count on one segment. docs/dmacommand.md, "DriverKit". */
#include "iokit/dmacommand.h"
#include "iokit/service.h"
#include "prim/prim.h"

#include <string.h>

static IODMACommand *enter_cmd(const char *fn, IODMACommand *p)
{
  dk__enter(fn);
  IODMACommand *c = dk__object_cast(p, &dk__dmacommand_class);
  if (!c) dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an IODMACommand");
  return c;
}

/* An inner public call's failure, reported as this call's with `code`. */
static kern_return_t fold(const char *fn, kern_return_t code)
{
  if (!dk__failed()) dk__fail(code, DK_CONSTRAINT_STATE, "%s failed", fn);
  dk__fail_recode(fn, code);
  return code;
}

kern_return_t IODMACommand_Create(IOService *device, uint64_t options, const IODMACommandSpecification *spec,
                                  IODMACommand **command)
{
  static const char fn[] = "IODMACommand::Create";
  dk__enter(fn);
  if (command) *command = NULL;
  if (!command || !spec)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "the specification and the result pointer are required");
  if (options != kIODMACommandCreateNoOptions)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "options 0x%llx: only kIODMACommandCreateNoOptions (0) is defined", (unsigned long long)options);
  if (spec->maxAddressBits > UINT8_MAX)   /* XNU: os_convert_overflow into the UInt8 of the command */
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "maxAddressBits %llu does not fit in 8 bits",
                    (unsigned long long)spec->maxAddressBits);
  if (device && !dk__service(device))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "device is not an IOService (dk_service_open)");
  /* the device's mapper, else (NULL) withSpecification takes the system mapper, as XNU */
  IOMapper *mapper = IOMapper_copyMapperForDevice(device);
  UInt8 bits = (UInt8)spec->maxAddressBits;
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, bits, 0,
                                                   kIODMAMapOptionDextOwner | kIODMAMapOptionMapped, 0, 1, mapper, NULL);
  dk__mapper_release(mapper);
  if (!c) return fold(fn, kIOReturnNoMemory);       /* DriverKit folds every failure into NoMemory */
  dk__enter(fn);
  *command = c;
  return kIOReturnSuccess;
}

/* Undo a PrepareForDMA that got as far as the descriptor being set (and maybe prepared), and
 * report `rc` with the reason the failure left (the undoing calls start records of their own). */
static kern_return_t unwind(const char *fn, IODMACommand *c, IOMemoryDescriptor *md, kern_return_t rc)
{
  if (!dk__failed()) dk__fail(rc, DK_CONSTRAINT_STATE, "%s failed", fn);
  dk_failure saved = *dk_last_failure();
  if (c) IODMACommand_clearMemoryDescriptor(c, true);
  IOMemoryDescriptor_complete(md, kIODirectionNone);
  dk__enter(fn);
  return dk__fail(rc, saved.constraint, "%s", saved.text);
}

kern_return_t IODMACommand_PrepareForDMA(IODMACommand *command, uint64_t options, IOMemoryDescriptor *memory,
                                         uint64_t offset, uint64_t length, uint64_t *flags, uint32_t *segmentsCount,
                                         IOAddressSegment *segments)
{
  static const char fn[] = "IODMACommand::PrepareForDMA";
  IODMACommand *c = enter_cmd(fn, command);
  if (!c) return kIOReturnBadArgument;
  if (options != kIODMACommandPrepareForDMANoOptions)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "options 0x%llx: only kIODMACommandPrepareForDMANoOptions (0) is defined",
                    (unsigned long long)options);
  IOMemoryDescriptor *md = dk__md(memory);
  if (!md || !flags || !segmentsCount || !segments)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "memory (an initialized descriptor), flags, segmentsCount and segments are required");
  uint32_t room = *segmentsCount;
  if (!room)   /* XNU: genIOVMSegments refuses room for no segment (forum thread 666880) */
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "*segmentsCount is 0: set it to the number of entries in segments");
  if (dk__dmacommand_preparation(c, NULL, NULL, NULL))
    return dk__fail(kIOReturnBusy, DK_CONSTRAINT_STATE, "the command is prepared: CompleteDMA() it first");

  /* 1. the descriptor, for its own direction (IOMemoryDescriptor::prepare) */
  kern_return_t rc = IOMemoryDescriptor_prepare(md, kIODirectionNone);
  if (rc != kIOReturnSuccess) return fold(fn, rc);
  /* 2. the command's descriptor and range; without a mapper at most `room` segments */
  rc = IODMACommand_setMemoryDescriptor(c, md, false);
  if (rc != kIOReturnSuccess) return unwind(fn, NULL, md, rc);
  dk__enter(fn);
  rc = dk__dmacommand_prepare_fit(c, offset, length, room);
  if (rc != kIOReturnSuccess) return unwind(fn, c, md, rc);
  /* 3. the segments, from the start of the range */
  UInt64 at = 0, prepared = 0;
  UInt32 n = room;
  dk__dmacommand_preparation(c, NULL, &prepared, NULL);
  _Static_assert(sizeof(IODMACommandSegment64) == sizeof(IOAddressSegment), "a segment is two 64-bit words");
  rc = IODMACommand_gen64IOVMSegments(c, &at, (IODMACommandSegment64 *)(void *)segments, &n);
  if (rc == kIOReturnSuccess && at < prepared)
    rc = dk__fail(kIOReturnNoSpace, DK_CONSTRAINT_SEGMENTS,
                  "%u segments cover 0x%llx of the 0x%llx bytes prepared: give room for more", n,
                  (unsigned long long)at, (unsigned long long)prepared);
  if (rc != kIOReturnSuccess) return unwind(fn, c, md, rc);
  dk__dmacommand_set_dext_prepared(c, true);
  uint32_t mdflags = md->flags;
  *flags = ((mdflags & kIODirectionOut) ? kIOMemoryDirectionOut : 0) | ((mdflags & kIODirectionIn) ? kIOMemoryDirectionIn : 0);
  *segmentsCount = n;
  dk__enter(fn);
  return kIOReturnSuccess;
}

kern_return_t IODMACommand_CompleteDMA(IODMACommand *command, uint64_t options)
{
  static const char fn[] = "IODMACommand::CompleteDMA";
  IODMACommand *c = enter_cmd(fn, command);
  if (!c) return kIOReturnBadArgument;
  if (options != kIODMACommandCompleteDMANoOptions)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "options 0x%llx: only kIODMACommandCompleteDMANoOptions (0) is defined",
                    (unsigned long long)options);
  if (!dk__dmacommand_dext_prepared(c))
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared by PrepareForDMA");
  IOMemoryDescriptor *md = NULL;
  dk__dmacommand_preparation(c, NULL, NULL, &md);
  OSObject_retain(md);
  kern_return_t rc = IODMACommand_clearMemoryDescriptor(c, true);   /* copies back, unmaps */
  kern_return_t crc = IOMemoryDescriptor_complete(md, kIODirectionNone);
  OSObject_release(md);
  if (rc == kIOReturnSuccess) rc = crc;
  if (rc != kIOReturnSuccess) return fold(fn, rc);
  dk__enter(fn);
  return kIOReturnSuccess;
}

kern_return_t IODMACommand_GetPreparation(IODMACommand *command, uint64_t *offset, uint64_t *length,
                                          IOMemoryDescriptor **memory)
{
  static const char fn[] = "IODMACommand::GetPreparation";
  IODMACommand *c = enter_cmd(fn, command);
  if (memory) *memory = NULL;
  if (!c) return kIOReturnBadArgument;
  IOMemoryDescriptor *md = NULL;
  if (!dk__dmacommand_preparation(c, offset, length, &md))
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared");
  if (memory) {
    OSObject_retain(md);
    *memory = md;
  }
  return kIOReturnSuccess;
}

kern_return_t IODMACommand_PerformOperation(IODMACommand *command, uint64_t options, uint64_t dmaOffset,
                                            uint64_t length, uint64_t dataOffset, IOMemoryDescriptor *data)
{
  static const char fn[] = "IODMACommand::PerformOperation";
  IODMACommand *c = enter_cmd(fn, command);
  if (!c) return kIOReturnBadArgument;
  if (options != kIODMACommandPerformOperationOptionRead && options != kIODMACommandPerformOperationOptionWrite &&
      options != kIODMACommandPerformOperationOptionZero)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "options 0x%llx: exactly one of Read (1), Write (2) and Zero (4)", (unsigned long long)options);
  IOMemoryDescriptor *md = NULL;
  if (!dk__dmacommand_preparation(c, NULL, NULL, &md))
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared");
  if (length > md->length)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "length 0x%llx is more than the descriptor's 0x%llx",
                    (unsigned long long)length, (unsigned long long)md->length);
  IOMemoryDescriptor *d = NULL;
  if (options != kIODMACommandPerformOperationOptionZero) {
    if (!(d = dk__md(data)))
      return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "Read and Write need a data descriptor");
    if (length > d->length)
      return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "length 0x%llx is more than the data's 0x%llx",
                      (unsigned long long)length, (unsigned long long)d->length);
  }
  if (!length) return kIOReturnSuccess;
  uint8_t *buf = dk__malloc((size_t)length);
  if (!buf) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a copy of 0x%llx bytes",
                            (unsigned long long)length);
  kern_return_t rc = kIOReturnSuccess;
  if (options == kIODMACommandPerformOperationOptionZero) {
    if (dk__dmacommand_transfer(c, true, dmaOffset, NULL, length) != length) rc = kIOReturnUnderrun;
  } else if (options == kIODMACommandPerformOperationOptionWrite) {
    if (IOMemoryDescriptor_readBytes(d, dataOffset, buf, length) != length ||
        dk__dmacommand_transfer(c, true, dmaOffset, buf, length) != length)
      rc = kIOReturnUnderrun;
  } else {
    if (dk__dmacommand_transfer(c, false, dmaOffset, buf, length) != length ||
        IOMemoryDescriptor_writeBytes(d, dataOffset, buf, length) != length)
      rc = kIOReturnUnderrun;
  }
  dk__free(buf);
  dk__enter(fn);
  if (rc != kIOReturnSuccess)
    return dk__fail(rc, DK_CONSTRAINT_RANGE,
                    "0x%llx bytes at DMA offset 0x%llx and data offset 0x%llx do not fit the preparation and the data",
                    (unsigned long long)length, (unsigned long long)dmaOffset, (unsigned long long)dataOffset);
  return kIOReturnSuccess;
}
