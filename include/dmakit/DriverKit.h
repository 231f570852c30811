/* dmakit/DriverKit.h: DriverKit's IOBufferMemoryDescriptor surface (REFERENCE.md §1.8, §6):
 * Create, SetLength, GetAddressRange, CreateMapping and the IOMemoryMap getters, each a
 * kern_return_t call shaped as in DriverKit, mapped onto the kernel-style calls; and DriverKit's
 * IODMACommand (Create, PrepareForDMA, CompleteDMA, GetPreparation, PerformOperation), the same
 * object as the kernel-style IODMACommand. docs/dmacommand.md, "DriverKit". */
#ifndef DMAKIT_DRIVERKIT_H
#define DMAKIT_DRIVERKIT_H

#include <dmakit/IOBufferMemoryDescriptor.h>
#include <dmakit/IODMACommand.h>
#include <dmakit/IOService.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Creation options (DriverKit spells the directions kIOMemoryDirection*). */
#define kIOMemoryDirectionNone       0x0ull
#define kIOMemoryDirectionIn         0x1ull
#define kIOMemoryDirectionOut        0x2ull
#define kIOMemoryDirectionOutIn      0x3ull
#define kIOMemoryDirectionInOut      kIOMemoryDirectionOutIn
#define kIOMemoryDisableCopyOnWrite  0x10ull

/* CreateMapping options. The cache selectors differ from the kernel's kIOMap*Cache values. */
#define kIOMemoryMapFixedAddress        0x0001ull
#define kIOMemoryMapReadOnly            0x0002ull
#define kIOMemoryMapGuardedMask         0x001Cull
#define kIOMemoryMapGuardedDefault      0x0000ull
#define kIOMemoryMapGuardedNone         0x0004ull
#define kIOMemoryMapGuardedSmall        0x0008ull
#define kIOMemoryMapGuardedLarge        0x000Cull
#define kIOMemoryMapCacheModeDefault    0x0000ull
#define kIOMemoryMapCacheModeInhibit    0x0100ull
#define kIOMemoryMapCacheModeCopyback   0x0200ull
#define kIOMemoryMapCacheModeWriteThrough 0x0400ull
#define kIOMemoryMapCacheModeRealTime   0x0800ull

/* Only direction bits are allowed (else kIOReturnBadArgument); any other failure, capacity 0
 * included, is kIOReturnNoMemory. The buffer is kernel_task, wired, kIOMemoryKernelUserShared
 * and kIOMemoryThreadSafe. *memory is NULL on failure. */
DK_API kern_return_t IOBufferMemoryDescriptor_Create(uint64_t options, uint64_t capacity,
                                                     uint64_t alignment,
                                                     IOBufferMemoryDescriptor **memory);
/* Always kIOReturnSuccess, even when the length exceeds the capacity and is ignored. */
DK_API kern_return_t IOBufferMemoryDescriptor_SetLength(IOBufferMemoryDescriptor *self,
                                                        uint64_t length);
DK_API kern_return_t IOBufferMemoryDescriptor_GetAddressRange(IOBufferMemoryDescriptor *self,
                                                              IOAddressSegment *range);
DK_API kern_return_t IOMemoryDescriptor_GetLength(IOMemoryDescriptor *self, uint64_t *returnLength);
/* A mapping in this process; an unknown cache selector is kIOReturnBadArgument, a failed
 * mapping kIOReturnError. `alignment` is ignored (only 0 is documented). */
DK_API kern_return_t IOMemoryDescriptor_CreateMapping(IOMemoryDescriptor *self, uint64_t options,
                                                      uint64_t address, uint64_t offset,
                                                      uint64_t length, uint64_t alignment,
                                                      IOMemoryMap **map);
DK_API uint64_t IOMemoryMap_GetAddress(IOMemoryMap *map);
DK_API uint64_t IOMemoryMap_GetLength(IOMemoryMap *map);
DK_API uint64_t IOMemoryMap_GetOffset(IOMemoryMap *map);

/* ---- IODMACommand (DriverKit IODMACommand.iig) --------------------------------------- */
#define kIODMACommandCreateNoOptions             0ull
#define kIODMACommandPrepareForDMANoOptions      0ull
#define kIODMACommandCompleteDMANoOptions        0ull
#define kIODMACommandSpecificationNoOptions      0ull
#define kIODMACommandPerformOperationOptionRead  0x00000001ull
#define kIODMACommandPerformOperationOptionWrite 0x00000002ull
#define kIODMACommandPerformOperationOptionZero  0x00000004ull

typedef struct IODMACommandSpecification {
  uint64_t options;          /* kIODMACommandSpecificationNoOptions */
  uint64_t maxAddressBits;   /* what the device addresses; 0 = 64 */
#ifdef __cplusplus
  uint64_t _resv[16] = {};   /* so that C++ `{ .options = ..., .maxAddressBits = ... }` leaves no field uninitialized */
#else
  uint64_t _resv[16];
#endif
} IODMACommandSpecification;

/* A command for `device`'s DMA (XNU IODMACommand::Create_Impl): 64-bit host-order segments of any
 * size, maxAddressBits address bits, through the device's mapper (IOMapper_copyMapperForDevice),
 * else the system mapper (a NULL device: the system mapper). kIOReturnBadArgument for options,
 * a NULL specification or command pointer, maxAddressBits above 255, or a device that is no
 * IOService; any other failure is kIOReturnNoMemory, as in DriverKit. *command is NULL on failure. */
DK_API kern_return_t IODMACommand_Create(IOService *device, uint64_t options, const IODMACommandSpecification *spec,
                                         IODMACommand **command);
/* Prepare `memory` (IOMemoryDescriptor_prepare) and its range [offset, offset + length) (length
 * 0: the descriptor's length) for the device, and return its segments: on input
 * *segmentsCount is the room in `segments`, on output how many were written; *flags gets
 * kIOMemoryDirectionOut/In from the descriptor's direction. The segments always cover the whole
 * range: without a mapper a range of more physical runs than the room given is double-buffered
 * (into contiguous memory), so one segment of room gives one segment; when that cannot be done
 * it fails (kIOReturnMessageTooLarge / kIOReturnNoResources) instead of returning part of the
 * range. kIOReturnBusy while prepared. On failure nothing stays prepared. */
DK_API kern_return_t IODMACommand_PrepareForDMA(IODMACommand *command, uint64_t options, IOMemoryDescriptor *memory,
                                                uint64_t offset, uint64_t length, uint64_t *flags,
                                                uint32_t *segmentsCount, IOAddressSegment *segments);
/* Undo PrepareForDMA: copy back what the device wrote into a double buffer, release the
 * mapping, complete the descriptor. kIOReturnNotReady when PrepareForDMA did not prepare it. */
DK_API kern_return_t IODMACommand_CompleteDMA(IODMACommand *command, uint64_t options);
/* The prepared range (each pointer may be NULL) and the descriptor, retained for the caller
 * (OSObject_release). kIOReturnNotReady when not prepared. */
DK_API kern_return_t IODMACommand_GetPreparation(IODMACommand *command, uint64_t *offset, uint64_t *length,
                                                 IOMemoryDescriptor **memory);
/* CPU access to what the device sees of the preparation (the double buffer when there is one):
 * Write copies `length` bytes of `data` from dataOffset to dmaOffset, Read the other way, Zero
 * zeroes (data NULL). kIOReturnUnderrun when the range does not fit, kIOReturnBadArgument for
 * anything but exactly one option, kIOReturnNotReady when not prepared. */
DK_API kern_return_t IODMACommand_PerformOperation(IODMACommand *command, uint64_t options, uint64_t dmaOffset,
                                                   uint64_t length, uint64_t dataOffset, IOMemoryDescriptor *data);

#ifdef __cplusplus
}
#endif
#endif
