/* src/base/counters.h: statistics counters kept per thread, so hot paths count without atomic
 * read-modify-writes. Each thread owns a block it alone writes (relaxed stores); readers sum
 * the blocks of live threads and what exited threads left, under a lock. */
#ifndef DK_COUNTERS_H
#define DK_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

typedef enum dk_ctr {
  DK_CTR_OBJECTS_LIVE,      /* objects created minus freed */
  DK_CTR_REQUESTS_SLAB,     /* small buffers met from slabs */
  DK_CTR_BYTES_POOL_USED,   /* pool bytes in live buffers */
  DK_CTR__COUNT
} dk_ctr;

typedef struct dk_tctr {
  _Atomic int64_t v[DK_CTR__COUNT];
  struct dk_tctr *next;
  int registered;
} dk_tctr;

extern _Thread_local dk_tctr dk__tl_ctr;
void dk__ctr_register(void);

static inline void dk__ctr_add(dk_ctr c, int64_t d)
{
  if (__builtin_expect(!dk__tl_ctr.registered, 0)) dk__ctr_register();
  int64_t v = atomic_load_explicit(&dk__tl_ctr.v[c], memory_order_relaxed);
  atomic_store_explicit(&dk__tl_ctr.v[c], v + d, memory_order_relaxed);
}

int64_t dk__ctr_sum(dk_ctr c);

#endif
