/* src/iokit/plan.c: initWithPhysicalMask's derivations (REFERENCE.md §2), step by step. */
#include "iokit/plan.h"

#include <stdio.h>
#include <string.h>

#define FAIL(k, ...) do { *kind = (k); snprintf(why, cap, __VA_ARGS__); return kIOReturnBadArgument; } while (0)

IOReturn dk__plan(dk_plan *p, dk_task_kind task, IOOptionBits options, uint64_t capacity,
                  uint64_t alignment, uint64_t physical_mask, uint64_t page_size, bool mapped,
                  dk_constraint_kind *kind, char *why, size_t cap)
{
  memset(p, 0, sizeof *p);
  const IOOptionBits raw_options = options;
  *kind = DK_CONSTRAINT_NONE;
  why[0] = '\0';

  /* 1. zero capacity */
  if (capacity == 0) FAIL(DK_CONSTRAINT_ARGUMENT, "capacity is 0");
  /* 2. the requested capacity is what getCapacity() and the initial length report */
  p->capacity = capacity;
  /* 4. _flags: direction and the other buffer flags, unvalidated */
  p->flags = kIOMemoryTypeVirtual64 | kIOMemoryAsReference | (options & kIOBufferDescriptorMemoryFlags);
  /* 5. mapper: only without kIOMemoryMapperNone */
  mapped = mapped && !(options & kIOMemoryMapperNone);

  /* 6. the mask gives alignment and limit, only when no alignment was asked for */
  uint64_t limit = 0;
  if (physical_mask && alignment <= 1) {
    uint64_t tz = (~physical_mask) & (physical_mask - 1);
    limit = physical_mask | tz;
    alignment = tz + 1;
    if (alignment < page_size) alignment = page_size;
  }
  /* 7. sharing, cache mode and encryption force page alignment */
  if ((options & (kIOMemorySharingTypeMask | kIOMapCacheMask | kIOMemoryClearEncrypt)) &&
      alignment < page_size)
    alignment = page_size;
  /* 8. page rounding of the allocation (not of _capacity) */
  uint64_t size = capacity;
  if (alignment >= page_size && !dk__round_up(capacity, page_size, &size))
    FAIL(DK_CONSTRAINT_ARGUMENT, "capacity 0x%llx overflows when rounded to pages",
         (unsigned long long)capacity);
  /* 9. alignment above a page means physically contiguous */
  if (alignment > page_size) options |= kIOMemoryPhysicallyContiguous;
  /* 10. overflow guard on size + alignment */
  if (size + alignment < size)
    FAIL(DK_CONSTRAINT_ARGUMENT, "capacity 0x%llx plus alignment 0x%llx overflows",
         (unsigned long long)size, (unsigned long long)alignment);
  p->alignment = alignment;
  /* 11. wired memory lives in kernel_task. A NULL task is allowed too: the seed page's
   *     "unmapped DMA buffer" (DESIGN.md, Decisions). */
  p->pageable = (options & kIOMemoryPageable) != 0;
  if (task == DK_TASK_OTHER && !p->pageable)
    FAIL(DK_CONSTRAINT_TASK, "wired memory must live in kernel_task or no task; another task needs kIOMemoryPageable");
  /* 12. DMA map specification: with a mapper the limit bounds I/O addresses, not RAM */
  p->num_address_bits = 64;
  if (limit && mapped) {
    p->num_address_bits = (uint8_t)dk__bitlen(limit);
    limit = 0;
  }
  /* 13. cache mode into bits 28-30, unmasked (modes 8 and 9 spill, as in XNU) */
  p->cache_mode = (options & kIOMapCacheMask) >> kIOMapCacheShift;
  p->flags |= p->cache_mode << kIOMemoryBufferCacheShift;

  if (p->pageable) {
    /* 14. pageable: zero-fill on demand; contiguity, limit and big alignment are ignored */
    p->flags |= kIOMemoryBufferPageable;
    if (options & kIOMemoryPurgeable) {
      p->flags |= kIOMemoryBufferPurgeable;
      p->purgeable = true;
    }
    if (!dk__round_up(capacity, page_size, &size))
      FAIL(DK_CONSTRAINT_ARGUMENT, "capacity 0x%llx overflows when rounded to pages",
           (unsigned long long)capacity);
    limit = 0;
  } else {
    /* 15. wired: auto-prepared; contiguity as XNU decides it */
    p->flags |= kIOMemoryAutoPrepare;
    p->contig = (options & kIOMemoryHostPhysicallyContiguous) ||
                ((options & kIOMemoryPhysicallyContiguous) && (!mapped || (options & kIOMemoryMapperNone)));
    /* rule A rounds to pages when a limit remains */
    if (limit && !dk__round_up(size, page_size, &size))
      FAIL(DK_CONSTRAINT_ARGUMENT, "capacity 0x%llx overflows when rounded to pages",
           (unsigned long long)capacity);
  }
  /* 16. pageable or cache-moded buffers are persistent */
  if (p->pageable || (options & kIOMapCacheMask)) p->flags |= kIOMemoryPersistent;

  p->options = raw_options;    /* XNU's _options: what the caller passed */
  p->alloc_size = size;
  p->limit = limit;
  return kIOReturnSuccess;
}
