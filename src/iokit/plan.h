/* src/iokit/plan.h: REFERENCE.md §2 steps 1-16 as a pure function. Given the arguments of
 * initWithPhysicalMask, the page size and whether a mapper is present, it derives exactly
 * what XNU derives (alignment, allocation size, address limit, contiguity, the _flags word,
 * the DMA address bits) or the reason XNU would return false. No memory is touched; the
 * fuzzer's model and the table tests compare against it. */
#ifndef DK_PLAN_H
#define DK_PLAN_H

#include "base/base.h"

typedef enum dk_task_kind { DK_TASK_KERNEL, DK_TASK_NULL, DK_TASK_OTHER } dk_task_kind;

typedef struct dk_plan {
  IOOptionBits options;        /* the caller's raw options (_options) */
  uint64_t     capacity;       /* requested (getCapacity) */
  uint64_t     alignment;      /* final alignment (step 10) */
  uint64_t     alloc_size;     /* bytes to allocate (steps 8 and 15A) */
  uint64_t     limit;          /* highest physical address allowed, 0 = none (step 6, 12) */
  uint8_t      num_address_bits;
  bool         pageable;
  bool         purgeable;
  bool         contig;         /* step 15: physical contiguity required */
  uint32_t     flags;          /* the descriptor's _flags */
  uint32_t     cache_mode;     /* (options & kIOMapCacheMask) >> kIOMapCacheShift */
} dk_plan;

/* kIOReturnSuccess and *p filled, or a failure code with *kind and why[] set. */
IOReturn dk__plan(dk_plan *p, dk_task_kind task, IOOptionBits options, uint64_t capacity,
                  uint64_t alignment, uint64_t physical_mask, uint64_t page_size, bool mapped,
                  dk_constraint_kind *kind, char *why, size_t cap);

#endif
