/* src/base/counters.h: statistics counters kept per thread, so hot paths count without atomic
 * read-modify-writes. Each thread owns a block it alone writes (relaxed stores); readers sum
 * the blocks of live threads and what exited threads left, under a lock. */
#ifndef DK_COUNTERS_H
#define DK_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
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
  int in_use;                 /* a live thread owns it (changed under the registry lock) */
} dk_tctr;

extern _Thread_local dk_tctr *dk__tl_ctr __attribute__((tls_model("initial-exec")));   /* 8 bytes of static TLS */
dk_tctr *dk__ctr_register(void);

/* This thread's block, taken on first use; then dk__ctr_bump for several counters. */
static inline dk_tctr *dk__ctr_self(void)
{
  dk_tctr *t = dk__tl_ctr;
  return __builtin_expect(t != NULL, 1) ? t : dk__ctr_register();
}
static inline void dk__ctr_bump(dk_tctr *t, dk_ctr c, int64_t d)
{
  int64_t v = atomic_load_explicit(&t->v[c], memory_order_relaxed);
  atomic_store_explicit(&t->v[c], v + d, memory_order_relaxed);
}
static inline void dk__ctr_add(dk_ctr c, int64_t d) { dk__ctr_bump(dk__ctr_self(), c, d); }

int64_t dk__ctr_sum(dk_ctr c);

#endif
