/* dmakit/IOTypes.h: IOKit's scalar types on LP64 Linux (REFERENCE.md §1.1), the task
 * handle, and the one export macro. Every other public header includes this one. */
#ifndef DMAKIT_IOTYPES_H
#define DMAKIT_IOTYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DK_BUILDING)
#define DK_API __attribute__((visibility("default")))
#else
#define DK_API
#endif

/* The object types (OSObject, IOMemoryDescriptor, ...) are opaque structs in C. In C++ they are
 * the classes of the C++ layer (<dmakit/dmakit.hpp>), declared with IOKit's class key, so that
 * C and C++ code share one type and a driver's own `class IOMemoryDescriptor;` matches. */
#ifdef __cplusplus
#define DK_OBJECT_TYPEDEF(name) typedef class name name
#else
#define DK_OBJECT_TYPEDEF(name) typedef struct name name
#endif

typedef uint8_t  UInt8;
typedef uint16_t UInt16;
typedef uint32_t UInt32;
typedef uint64_t UInt64;
typedef int8_t   SInt8;
typedef int16_t  SInt16;
typedef int32_t  SInt32;
typedef int64_t  SInt64;
typedef bool     Boolean;

typedef UInt32       IOOptionBits;
typedef IOOptionBits IODirection;          /* LP64: a plain option word, not an enum */
typedef int          kern_return_t;
typedef kern_return_t IOReturn;

typedef uint64_t  mach_vm_size_t;
typedef uint64_t  mach_vm_address_t;
typedef uintptr_t vm_size_t;
typedef uintptr_t vm_offset_t;
typedef uintptr_t vm_address_t;

typedef UInt64 IOByteCount64;
typedef IOByteCount64 IOByteCount;         /* 64-bit, as in the LP64 kernel */
typedef UInt64 IOPhysicalAddress64;
typedef UInt64 IOPhysicalAddress;
typedef UInt64 IOPhysicalLength;
typedef uint64_t addr64_t;
typedef mach_vm_address_t IOVirtualAddress;
typedef uint32_t ppnum_t;

typedef struct { IOPhysicalAddress address; IOByteCount length; } IOPhysicalRange;
typedef struct { IOVirtualAddress address; IOByteCount length; } IOVirtualRange;
typedef IOVirtualRange IOAddressRange;

/* DriverKit's segment. */
typedef struct IOAddressSegment { uint64_t address; uint64_t length; } IOAddressSegment;

/* A task is an address space that can hold buffers: kernel_task is this process (the driver);
 * NULL is "no task" (memory wired and owned by dmakit, visible to nobody until map()). */
typedef struct dk_task *task_t;
typedef struct dk_task *vm_map_t;          /* an address space; kernel_map is this process's */

extern DK_API task_t kernel_task;
extern DK_API vm_map_t kernel_map;

#ifdef __cplusplus
}
#endif
#endif
