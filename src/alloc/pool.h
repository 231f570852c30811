/* src/alloc/pool.h: the hugepage pool's heap policy. Runs of physically contiguous hugepages
 * (src/phys/huge.c) are regions; their free extents live in one tree ordered by physical
 * address that keeps the longest extent of every subtree (alloc/xtree.h), so the highest
 * fitting place for a request under its limit is found in O(log n), highest first so that low
 * memory stays for the masks that need it. Small buffers (64 B .. 4 KiB) are slots of 64 KiB
 * slabs (alloc/slab.c) owned by the thread that made them. Freed memory is zeroed before it is
 * free again, so every free byte is zero. Growth asks for more hugepages (and searches for low
 * frames when a mask is below everything held); trim gives back whole chunks nobody uses.
 * Frees never allocate: a block carries the extent node its free may need. */
#ifndef DK_POOL_H
#define DK_POOL_H

#include "alloc/geom.h"
#include "alloc/xtree.h"
#include "base/counters.h"
#include "phys/huge.h"

#include <string.h>

typedef struct dk_region dk_region;
typedef struct dk_slab dk_slab;

/* A buffer's memory from the pool: one physically contiguous range. */
typedef struct dk_block {
  dk_region *region;
  dk_slab   *slab;       /* non-NULL for a slot of a small-buffer slab */
  dk_xnode  *spare;      /* a large block's free-list node for its free (frees never allocate) */
  uint8_t   *va;
  uint64_t   pa;
  uint64_t   len;        /* bytes reserved (the slot size for slab buffers) */
} dk_block;

/* Allocate len bytes at alignment `align` (power of two) meeting c (window, boundary; the
 * block is always one contiguous run). false with the failure recorded. */
bool dk__pool_alloc(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out);
/* Free a block (zeroing it first); never allocates, on any thread. */
void dk__pool_free(dk_block *b);
/* Map the block's [off, off+len) again (whole hugepages; see dk__hchunk_map). */
void *dk__pool_map(const dk_block *b, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                   bool overwrite, void **base, size_t *span);
/* The hugepage size backing the block. */
uint64_t dk__pool_page(const dk_block *b);
/* Bytes in the pool's free extents (the memory budget counts them as available). */
uint64_t dk__pool_free_bytes(void);
/* Whether the pool can be used at all here (root, frames visible, hugetlb, enabled). */
bool dk__pool_usable(void);
/* Count a request met by another provider, or a failure, in the statistics. */
void dk__pool_note_4k(uint64_t bytes, int delta);
void dk__pool_note_failure(dk_constraint_kind kind);
/* Zero freed pool memory (every free byte of the pool is zero). Slab slots of up to 256 bytes
 * (whole cache lines, naturally aligned) with plain vector stores: a constant-size memset there
 * became `rep stos`, whose start-up cost more than the zeroing. Ranges of DK_POOL_ZERO_STREAM
 * or more with streaming stores (pool.c), the rest with memset. */
#define DK_POOL_ZERO_STREAM (32ull << 20)
void dk__pool_zero_stream(uint8_t *p, size_t n);
static inline void dk__pool_zero(uint8_t *p, size_t n)
{
  if (n <= 256 && !(n & 63) && !((uintptr_t)p & 15)) {
    typedef uint64_t v16 __attribute__((vector_size(16), may_alias));
    v16 *q = (v16 *)(void *)p;
    for (size_t i = 0; i < n / 16; i += 4) {
      q[i] = (v16){ 0, 0 };
      q[i + 1] = (v16){ 0, 0 };
      q[i + 2] = (v16){ 0, 0 };
      q[i + 3] = (v16){ 0, 0 };
    }
  } else if (n >= DK_POOL_ZERO_STREAM) {
    dk__pool_zero_stream(p, n);
  } else {
    memset(p, 0, n);
  }
}

/* A slab block kept by its released descriptor for the next identical request (iokit's ready
 * descriptors): zeroed now and counted free; counted used again when handed out (unpark) or
 * before it is freed for good. */
static inline void dk__pool_park(dk_block *b)
{
  dk__pool_zero(b->va, (size_t)b->len);
  dk__ctr_add(DK_CTR_BYTES_POOL_USED, -(int64_t)b->len);
}
static inline void dk__pool_unpark(dk_tctr *t, const dk_block *b, bool request)
{
  if (request) dk__ctr_bump(t, DK_CTR_REQUESTS_SLAB, 1);
  dk__ctr_bump(t, DK_CTR_BYTES_POOL_USED, (int64_t)b->len);
}
/* Called by dk_pool_trim first, to give back what the caller's thread keeps above the pool. */
void dk__pool_set_trim_hook(void (*fn)(void));
/* Descriptor objects (iokit's), `size` bytes each (one size for the process): slots of slabs of
 * ordinary memory with the small buffers' per-thread heaps, so creating and releasing them,
 * on any thread, takes no lock and no call into the C heap. NULL with the failure recorded. */
void *dk__obj_alloc(size_t size);
void  dk__obj_free(void *p);
/* Give the calling thread's empty slabs back to the pool (tests: the next small buffer then
 * needs a new slab, where faults are injected). */
void dk__pool_thread_flush(void);
/* Internal consistency of the heap (free extents ordered, coalesced, within their regions,
 * zero-filled when checked deeply; the slabs the pool can see); 0 or -1 with why. */
int  dk__pool_validate(bool deep, char *why, size_t cap);

#endif
