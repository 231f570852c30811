/* dmakit/IOMemoryDescriptor.h: the IOMemoryDescriptor and IOMemoryMap constants with their IOKit
 * values (REFERENCE.md §1.2 and §1.4-1.6) and the methods a buffer inherits (§4, §5).
 * A method Class::name is the function Class_name(Class *self, ...). */
#ifndef DMAKIT_IOMEMORYDESCRIPTOR_H
#define DMAKIT_IOMEMORYDESCRIPTOR_H

#include <dmakit/IOTypes.h>
#include <dmakit/IOReturn.h>
#include <dmakit/OSObject.h>

#ifdef __cplusplus
extern "C" {
#endif

DK_OBJECT_TYPEDEF(IOMemoryDescriptor);
DK_OBJECT_TYPEDEF(IOMemoryMap);
DK_OBJECT_TYPEDEF(IOMapper);
DK_OBJECT_TYPEDEF(IOSubMemoryDescriptor);
DK_OBJECT_TYPEDEF(IOMultiMemoryDescriptor);
DK_OBJECT_TYPEDEF(IOGuardPageMemoryDescriptor);

/* ---- §1.2 directions ---------------------------------------------------------------- */
#define kIODirectionNone                   0x0u
#define kIODirectionIn                     0x1u   /* device writes memory */
#define kIODirectionOut                    0x2u   /* device reads memory */
#define kIODirectionOutIn                  (kIODirectionOut | kIODirectionIn)
#define kIODirectionInOut                  (kIODirectionIn | kIODirectionOut)
#define kIODirectionPrepareToPhys32        0x00000004u
#define kIODirectionPrepareNoFault         0x00000008u
#define kIODirectionPrepareReserved1       0x00000010u
#define kIODirectionPrepareNoZeroFill      kIODirectionPrepareReserved1
#define kIODirectionPrepareNonCoherent     0x00000020u
#define kIODirectionPrepareAvoidThrottling 0x00000100u
#define kIODirectionCompleteWithError      0x00000040u
#define kIODirectionCompleteWithDataValid  0x00000080u

/* ---- §1.4 descriptor flags (what getFlags() reports) -------------------------------- */
#define kIOMemoryDirectionMask      0x00000007u
#define kIOMemoryAutoPrepare        0x00000008u
#define kIOMemoryTypeVirtual        0x00000010u
#define kIOMemoryTypePhysical       0x00000020u
#define kIOMemoryTypeUPL            0x00000030u
#define kIOMemoryTypePersistentMD   0x00000040u
#define kIOMemoryTypeUIO            0x00000050u
#define kIOMemoryTypeVirtual64      kIOMemoryTypeVirtual
#define kIOMemoryTypePhysical64     kIOMemoryTypePhysical
#define kIOMemoryTypeMask           0x000000f0u
#define kIOMemoryAsReference        0x00000100u
#define kIOMemoryBufferPageable     0x00000400u
#define kIOMemoryMapperNone         0x00000800u
#define kIOMemoryHostOnly           0x00001000u
#define kIOMemoryRedirected         0x00004000u
#define kIOMemoryPreparedReadOnly   0x00008000u
#define kIOMemoryPersistent         0x00010000u
#define kIOMemoryMapCopyOnWrite     0x00020000u
#define kIOMemoryRemote             0x00040000u
#define kIOMemoryThreadSafe         0x00100000u
#define kIOMemoryClearEncrypt       0x00200000u
#define kIOMemoryBufferPurgeable    0x00400000u
#define kIOMemoryUseReserve         0x00800000u
#define kIOMemoryBufferCacheMask    0x70000000u
#define kIOMemoryBufferCacheShift   28

/* ---- §1.5 cache modes and map options ----------------------------------------------- */
#define kIODefaultCache              0
#define kIOInhibitCache              1
#define kIOWriteThruCache            2
#define kIOCopybackCache             3
#define kIOWriteCombineCache         4
#define kIOCopybackInnerCache        5
#define kIOPostedWrite               6
#define kIORealTimeCache             7
#define kIOPostedReordered           8
#define kIOPostedCombinedReordered   9

#define kIOMapAnywhere                0x00000001u
#define kIOMapCacheMask               0x00000f00u
#define kIOMapCacheShift              8
#define kIOMapDefaultCache            (kIODefaultCache << kIOMapCacheShift)
#define kIOMapInhibitCache            (kIOInhibitCache << kIOMapCacheShift)
#define kIOMapWriteThruCache          (kIOWriteThruCache << kIOMapCacheShift)
#define kIOMapCopybackCache           (kIOCopybackCache << kIOMapCacheShift)
#define kIOMapWriteCombineCache       (kIOWriteCombineCache << kIOMapCacheShift)
#define kIOMapCopybackInnerCache      (kIOCopybackInnerCache << kIOMapCacheShift)
#define kIOMapPostedWrite             (kIOPostedWrite << kIOMapCacheShift)
#define kIOMapRealTimeCache           (kIORealTimeCache << kIOMapCacheShift)
#define kIOMapPostedReordered         (kIOPostedReordered << kIOMapCacheShift)
#define kIOMapPostedCombinedReordered (kIOPostedCombinedReordered << kIOMapCacheShift)
#define kIOMapUserOptionsMask         0x00000fffu
#define kIOMapReadOnly                0x00001000u
#define kIOMapStatic                  0x01000000u
#define kIOMapReference               0x02000000u
#define kIOMapUnique                  0x04000000u
#define kIOMap64Bit                   0x08000000u
#define kIOMapPrefault                0x10000000u
#define kIOMapOverwrite               0x20000000u
#define kIOMapGuardedMask             0xC0000000u
#define kIOMapGuardedSmall            0x40000000u
#define kIOMapGuardedLarge            0x80000000u

/* ---- §1.6 purgeable states, operations, preparation IDs, DMA mapping ----------------- */
#define kIOMemoryPurgeableKeepCurrent 1
#define kIOMemoryPurgeableNonVolatile 2
#define kIOMemoryPurgeableVolatile    3
#define kIOMemoryPurgeableEmpty       4

#define kIOMemoryIncoherentIOFlush    1
#define kIOMemoryIncoherentIOStore    2
#define kIOMemoryClearEncrypted       50
#define kIOMemorySetEncrypted         51

#define kIOPreparationIDUnprepared     0
#define kIOPreparationIDUnsupported    1
#define kIOPreparationIDAlwaysPrepared 2

#define kIOMapperSystem ((IOMapper *)NULL)

#define kIODMAMapOptionMapped       0x00000000u
#define kIODMAMapOptionBypassed     0x00000001u
#define kIODMAMapOptionNonCoherent  0x00000002u
#define kIODMAMapOptionUnmapped     0x00000003u
#define kIODMAMapOptionTypeMask     0x0000000fu
#define kIODMAMapOptionNoCacheStore 0x00000010u
#define kIODMAMapOptionOnChip       0x00000020u
#define kIODMAMapOptionIterateOnly  0x00000040u
#define kIODMAMapOptionDextOwner    0x00000080u

/* What a buffer hands the DMA layer (REFERENCE.md §2 step 12). `device` stands for IOService*. */
typedef struct IODMAMapSpecification {
  uint64_t alignment;
  void    *device;
  uint32_t options;
  uint8_t  numAddressBits;
  uint8_t  resvA[3];
  uint32_t resvB[4];
} IODMAMapSpecification;

/* ---- IOMemoryDescriptor methods (§4) ----------------------------------------------- */
DK_API IOByteCount  IOMemoryDescriptor_getLength(IOMemoryDescriptor *md);
DK_API IODirection  IOMemoryDescriptor_getDirection(IOMemoryDescriptor *md);
DK_API void         IOMemoryDescriptor_setDirection(IOMemoryDescriptor *md, IODirection direction);
DK_API IOOptionBits IOMemoryDescriptor_getTag(IOMemoryDescriptor *md);
DK_API void         IOMemoryDescriptor_setTag(IOMemoryDescriptor *md, IOOptionBits tag);
DK_API uint64_t     IOMemoryDescriptor_getFlags(IOMemoryDescriptor *md);

/* Bus address of the byte at `offset` (the CPU physical address with kIOMemoryMapperNone or
 * without a mapper) and, in *length, the bytes from there to the next physical discontinuity,
 * clipped to getLength(). 0 (and *length 0) past the end, on unprepared pageable memory, or
 * where frame numbers cannot be read: dk_last_failure() says which. */
DK_API addr64_t IOMemoryDescriptor_getPhysicalSegment(IOMemoryDescriptor *md, IOByteCount offset,
                                                      IOByteCount *length, IOOptionBits options);
DK_API IOPhysicalAddress IOMemoryDescriptor_getPhysicalAddress(IOMemoryDescriptor *md);

DK_API IOReturn IOMemoryDescriptor_prepare(IOMemoryDescriptor *md, IODirection forDirection);
DK_API IOReturn IOMemoryDescriptor_complete(IOMemoryDescriptor *md, IODirection forDirection);

DK_API IOByteCount IOMemoryDescriptor_readBytes(IOMemoryDescriptor *md, IOByteCount offset,
                                                void *bytes, IOByteCount withLength);
DK_API IOByteCount IOMemoryDescriptor_writeBytes(IOMemoryDescriptor *md, IOByteCount offset,
                                                 const void *bytes, IOByteCount withLength);
DK_API IOReturn IOMemoryDescriptor_performOperation(IOMemoryDescriptor *md, IOOptionBits options,
                                                    IOByteCount offset, IOByteCount length);
DK_API IOReturn IOMemoryDescriptor_setPurgeable(IOMemoryDescriptor *md, IOOptionBits newState,
                                                IOOptionBits *oldState);

DK_API IOMemoryMap *IOMemoryDescriptor_map(IOMemoryDescriptor *md, IOOptionBits options);
DK_API IOMemoryMap *IOMemoryDescriptor_createMappingInTask(IOMemoryDescriptor *md, task_t intoTask,
                                                           mach_vm_address_t atAddress,
                                                           IOOptionBits options,
                                                           mach_vm_size_t offset,
                                                           mach_vm_size_t length);

/* The bytes an IOMMU mapping of the descriptor spans (each source run rounded out to pages) and,
 * in *offset, the first byte's offset within its page (XNU getDMAMapLength). */
DK_API uint64_t IOMemoryDescriptor_getDMAMapLength(IOMemoryDescriptor *md, uint64_t *offset);
/* An object kept with the descriptor (XNU setContext/copyContext, an OSObject there): retained
 * while set when it is a dmakit object (any pointer may be kept, unretained); copyContext
 * returns it retained (+1: release it), NULL when none. */
DK_API void  IOMemoryDescriptor_setContext(IOMemoryDescriptor *md, void *object);
DK_API void *IOMemoryDescriptor_copyContext(IOMemoryDescriptor *md);

/* ---- descriptors over memory the caller already has (docs/porting.md) ----------------------
 * IOMemoryDescriptor::withAddressRange(s) / withOptions: `task` kernel_task means ranges of this
 * process's address space: nothing is touched until prepare(), which long-term pins the pages
 * (their frames never move while prepared, even if the range is unmapped meanwhile), reads
 * their frames and, with a mapper, maps them; complete() to zero gives all of it back. A NULL
 * task means physical addresses (wired as given; kIOMemoryRemote: opaque bus addresses).
 * Ranges may overlap. The descriptor does not own the memory: keep it mapped while you use
 * the descriptor for CPU access. Factories return NULL with dk_last_failure() saying why. */
DK_API IOMemoryDescriptor *IOMemoryDescriptor_withAddressRange(mach_vm_address_t address, mach_vm_size_t length,
                                                               IOOptionBits options, task_t task);
DK_API IOMemoryDescriptor *IOMemoryDescriptor_withAddressRanges(IOAddressRange *ranges, UInt32 rangeCount,
                                                                IOOptionBits options, task_t task);
/* `buffers` is an IOAddressRange array of `count` ranges (options' type kIOMemoryTypeVirtual64
 * with a task, kIOMemoryTypePhysical64 without); `offset` applies to UPLs only and must be 0;
 * `mapper` kIOMapperSystem (NULL) for the system mapper, or an IOMapper. */
DK_API IOMemoryDescriptor *IOMemoryDescriptor_withOptions(void *buffers, UInt32 count, UInt32 offset, task_t task,
                                                          IOOptionBits options, IOMapper *mapper);
/* withAddressRange(address, length, direction | kIOMemoryAutoPrepare, kernel_task): prepared at once. */
DK_API IOMemoryDescriptor *IOMemoryDescriptor_withAddress(void *address, IOByteCount length, IODirection direction);
DK_API IOMemoryDescriptor *IOMemoryDescriptor_withPhysicalAddress(IOPhysicalAddress address, IOByteCount length,
                                                                  IODirection direction);
/* A window [offset, offset+length) of `of` (retained), whose prepare, complete and segments
 * are the parent's. */
DK_API IOSubMemoryDescriptor *IOSubMemoryDescriptor_withSubRange(IOMemoryDescriptor *of, IOByteCount offset,
                                                                 IOByteCount length, IOOptionBits options);
/* `withCount` descriptors end to end (each retained; asReference is accepted and ignored: the
 * array is always copied). They must agree on being pageable. */
DK_API IOMultiMemoryDescriptor *IOMultiMemoryDescriptor_withDescriptors(IOMemoryDescriptor **descriptors,
                                                                        UInt32 withCount, IODirection withDirection,
                                                                        bool asReference);
/* `size` bytes (rounded up to pages) of no-access pages: in a mapping (of an
 * IOMultiMemoryDescriptor around data, say) they fault on any touch. */
DK_API IOGuardPageMemoryDescriptor *IOGuardPageMemoryDescriptor_withSize(vm_size_t size);

/* ---- IOMemoryMap (§5) ---------------------------------------------------------------- */
DK_API mach_vm_address_t IOMemoryMap_getAddress(IOMemoryMap *map);
DK_API IOVirtualAddress  IOMemoryMap_getVirtualAddress(IOMemoryMap *map);
DK_API mach_vm_size_t    IOMemoryMap_getSize(IOMemoryMap *map);
DK_API IOByteCount       IOMemoryMap_getLength(IOMemoryMap *map);
DK_API IOOptionBits      IOMemoryMap_getMapOptions(IOMemoryMap *map);
DK_API task_t            IOMemoryMap_getAddressTask(IOMemoryMap *map);
DK_API IOMemoryDescriptor *IOMemoryMap_getMemoryDescriptor(IOMemoryMap *map);
DK_API IOPhysicalAddress IOMemoryMap_getPhysicalSegment(IOMemoryMap *map, IOByteCount offset,
                                                        IOPhysicalLength *length,
                                                        IOOptionBits options);
DK_API IOPhysicalAddress IOMemoryMap_getPhysicalAddress(IOMemoryMap *map);
DK_API IOReturn          IOMemoryMap_unmap(IOMemoryMap *map);
/* Point a kIOMapUnique mapping at other memory (XNU redirect): newBackingMemory's bytes from
 * `offset` appear at the same address; NULL makes the mapping inaccessible until redirected
 * again. kIOReturnBadArgument for other mappings. */
DK_API IOReturn          IOMemoryMap_redirect(IOMemoryMap *map, IOMemoryDescriptor *newBackingMemory,
                                              IOOptionBits options, mach_vm_size_t offset);

#ifdef __cplusplus
}
#endif
#endif
