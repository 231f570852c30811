/* src/alloc/pool_impl.h: what the pool's two halves share. pool.c owns regions, free extents,
 * growth and the pool lock; slab.c owns small-buffer slabs and the per-thread slab heaps and
 * takes its 64 KiB slabs from pool.c's extents. Nothing outside src/alloc includes this. */
#ifndef DK_POOL_IMPL_H
#define DK_POOL_IMPL_H

#include "alloc/pool.h"

#include <pthread.h>

#define DK_SLAB_BYTES (64u * 1024)
#define DK_SLAB_MIN   64u
#define DK_SLAB_MAX   4096u
#define DK_NCLASS     7                  /* 64 128 256 512 1024 2048 4096 */

typedef struct dk_chunk_node dk_chunk_node;

struct dk_region {
  dk_chunk_node *owner;
  uint32_t       run;                    /* index in owner->chunk.runs */
  uint8_t       *va;
  uint64_t       pa, len;
  uint64_t       free_bytes;
  dk_region     *next;                   /* regions by descending pa */
};

/* The pool lock: regions, extents, chunks, orphaned slabs and the spare heaps. */
extern pthread_mutex_t dk__pool_lock;

/* Carve a block meeting c (already placed under the lock), growing the pool when nothing
 * fits. false with the failure recorded. Called with the lock held. */
bool dk__pool_carve_locked(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out);
/* Give a large block back (its memory already zero). Called with the lock held. */
void dk__pool_give_locked(dk_block *b);

/* ---- slab.c ---------------------------------------------------------------------------- */
/* The size class of a request (len bytes at alignment align), or -1 above DK_SLAB_MAX. */
int  dk__slab_class(uint64_t len, uint64_t align);
/* A slot of class k meeting c's window; false with the failure recorded. No lock is held. */
bool dk__slab_alloc(const dk_constraints *c, int k, dk_block *out);
/* Free a slot (already zeroed), from any thread. Never allocates. */
void dk__slab_free(dk_block *b);
/* Under the pool lock: give back the empty slabs the pool can reach (orphaned ones); part of
 * trim. */
void dk__slab_trim_locked(void);
/* In a forked child (base/fork.h): forget the slabs and heaps, which are the parent's. */
void dk__slab_in_child(void);
/* A slab or a block that a parent process made (this one is its forked child). */
bool dk__slab_inherited(const dk_slab *s);
bool dk__pool_inherited(const dk_block *b);
/* Under the pool lock: check the slabs the pool can reach; 0 or -1 with why. */
int  dk__slab_validate_locked(char *why, size_t cap);

#endif
