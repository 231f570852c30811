/* dmakit/IOBufferMemoryDescriptor.h: buffers with device constraints, with IOKit's calls,
 * option values (REFERENCE.md §1.3) and edge cases (§2-§4). An IOBufferMemoryDescriptor *
 * may be cast to IOMemoryDescriptor * (the descriptor is its first member). */
#ifndef DMAKIT_IOBUFFERMEMORYDESCRIPTOR_H
#define DMAKIT_IOBUFFERMEMORYDESCRIPTOR_H

#include <dmakit/IOMemoryDescriptor.h>

#ifdef __cplusplus
extern "C" {
#endif

DK_OBJECT_TYPEDEF(IOBufferMemoryDescriptor);

#define kIOMemoryPhysicallyContiguous     0x00000010u
#define kIOMemoryPageable                 0x00000020u
#define kIOMemoryPurgeable                0x00000040u
#define kIOMemoryHostPhysicallyContiguous 0x00000080u
#define kIOMemorySharingTypeMask          0x000f0000u
#define kIOMemoryUnshared                 0x00000000u
#define kIOMemoryKernelUserShared         0x00010000u

#define kIOBufferDescriptorMemoryFlags                                                     \
  (kIOMemoryDirectionMask | kIOMemoryAutoPrepare | kIOMemoryThreadSafe |                 \
   kIOMemoryClearEncrypt | kIOMemoryMapperNone | kIOMemoryUseReserve)   /* 0x00B0080F */

#define _IOBUFFERMEMORYDESCRIPTOR_INTASKWITHOPTIONS_        1
#define _IOBUFFERMEMORYDESCRIPTOR_HOSTPHYSICALLYCONTIGUOUS_ 1
#define IOBUFFERMEMORYDESCRIPTOR_SUPPORTS_INTASKWITHOPTIONS_TAGS 1

/* ---- factories (§3): each returns a +1 object or NULL; dk_last_failure() says why ---- */
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithOptions(
    task_t inTask, IOOptionBits options, vm_size_t capacity, vm_offset_t alignment);
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithOptionsTagged(
    task_t inTask, IOOptionBits options, vm_size_t capacity, vm_offset_t alignment,
    uint32_t kernTag, uint32_t userTag);
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
    task_t inTask, IOOptionBits options, mach_vm_size_t capacity, mach_vm_address_t physicalMask);
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withOptions(
    IOOptionBits options, vm_size_t capacity, vm_offset_t alignment);
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withCapacity(
    vm_size_t capacity, IODirection withDirection, bool withContiguousMemory);
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withBytes(
    const void *bytes, vm_size_t withLength, IODirection withDirection, bool withContiguousMemory);
/* A copy of [source, source+size) of sourceMap (only kernel_map, this process, is known),
 * placed in inTask; needs kIOMemoryPageable and a non-NULL task, as in XNU. */
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withCopy(
    task_t inTask, IOOptionBits options, vm_map_t sourceMap, mach_vm_address_t source,
    mach_vm_size_t size);

/* Two-step creation: _alloc gives an empty +1 object, _initWithPhysicalMask fills it in.
 * On false, release the object. */
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_alloc(void);
DK_API bool IOBufferMemoryDescriptor_initWithPhysicalMask(
    IOBufferMemoryDescriptor *self, task_t inTask, IOOptionBits options, mach_vm_size_t capacity,
    mach_vm_address_t alignment, mach_vm_address_t physicalMask);

/* ---- buffer methods (§4) ----------------------------------------------------------- */
DK_API void     *IOBufferMemoryDescriptor_getBytesNoCopy(IOBufferMemoryDescriptor *self);
DK_API void     *IOBufferMemoryDescriptor_getBytesNoCopyRange(IOBufferMemoryDescriptor *self,
                                                              vm_size_t start, vm_size_t withLength);
DK_API vm_size_t IOBufferMemoryDescriptor_getCapacity(IOBufferMemoryDescriptor *self);
DK_API void      IOBufferMemoryDescriptor_setLength(IOBufferMemoryDescriptor *self, vm_size_t length);
DK_API bool      IOBufferMemoryDescriptor_appendBytes(IOBufferMemoryDescriptor *self,
                                                      const void *bytes, vm_size_t withLength);

#ifdef __cplusplus
}
#endif
#endif
