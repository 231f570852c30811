/* dmakit/DriverKit.h: DriverKit's IOBufferMemoryDescriptor surface (REFERENCE.md §1.8, §6):
 * Create, SetLength, GetAddressRange, CreateMapping and the IOMemoryMap getters, each a
 * kern_return_t call shaped as in DriverKit, mapped onto the kernel-style calls. */
#ifndef DMAKIT_DRIVERKIT_H
#define DMAKIT_DRIVERKIT_H

#include <dmakit/IOBufferMemoryDescriptor.h>

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

#ifdef __cplusplus
}
#endif
#endif
