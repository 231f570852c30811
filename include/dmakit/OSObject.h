/* dmakit/OSObject.h: IOKit-style reference counting. Every dmakit object (descriptors, maps)
 * starts at a count of 1 for its creator; the last OSObject_release frees it. The count is
 * atomic, so objects may be retained and released from any thread. */
#ifndef DMAKIT_OSOBJECT_H
#define DMAKIT_OSOBJECT_H

#include <dmakit/IOTypes.h>

#ifdef __cplusplus
extern "C" {
#endif

DK_OBJECT_TYPEDEF(OSObject);

/* NULL is ignored by both. */
DK_API void OSObject_retain(void *object);
DK_API void OSObject_release(void *object);
/* The current count (for diagnostics and tests); 0 for NULL. */
DK_API int  OSObject_getRetainCount(const void *object);
/* The IOKit class of a dmakit object ("IOBufferMemoryDescriptor", "IOMemoryMap", "IODMACommand",
 * "IOService", "IOMapper"), NULL for NULL. What OSDynamicCast of the C++ layer decides by. */
DK_API const char *dk_object_class_name(const void *object);

#define OSSafeReleaseNULL(p) do { if (p) { OSObject_release(p); (p) = NULL; } } while (0)

#ifdef __cplusplus
}
#endif
#endif
