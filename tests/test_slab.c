/* tests/test_slab.c: small buffers across threads. A slot released on another thread than the
 * one that made it goes back into circulation (the maker's next buffers reuse it, the pool
 * does not grow); slabs of a thread that exited pass to the threads still running; a
 * producer/consumer pair through a ring keeps the pool bounded; releasing never allocates
 * (every free path runs with the C heap failing); and every slot handed out is zero and meets
 * its window. Needs root and hugetlb (the pool). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/pool.h"
#include "iokit/internal.h"
#include "prim/prim.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

static void require_pool(void)
{
  DKT_REQUIRE_ROOT();
  if (!dk_capabilities()->pool_usable) DKT_SKIP("no hugetlb support: the pool cannot run here");
  dk_option_set(DK_OPTION_POOL, 1);
}

static void validate(void)
{
  char why[256];
  if (dk__debug_validate(why, sizeof why) != 0) fail_msg("inconsistent: %s", why);
  if (dk__pool_validate(true, why, sizeof why) != 0) fail_msg("pool inconsistent: %s", why);
}

static IOBufferMemoryDescriptor *small(uint64_t len)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, len, len);
  if (!b) fail_msg("refused: %s", dkt_failure_text());
  return b;
}

static uint64_t pool_bytes(void)
{
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  return st.bytes_pool_2m + st.bytes_pool_1g;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* ---- released on another thread ------------------------------------------------------------ */

#define CT_N 3072                                /* three full slabs of 64-byte slots */
typedef struct batch { IOBufferMemoryDescriptor *b[CT_N]; int n; } batch;

static void *release_all(void *arg)
{
  batch *bt = arg;
  for (int i = 0; i < bt->n; i++) OSObject_release(bt->b[i]);
  return NULL;
}

/* A thread that releases what it is handed and stays alive until told to stop: whatever it
 * kept for itself would be stranded while it lives. */
typedef struct releaser {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  batch *work;
  bool done, stop;
} releaser;

static void *releaser_main(void *arg)
{
  releaser *r = arg;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    while (!r->work && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
    if (r->stop) break;
    release_all(r->work);
    r->work = NULL;
    r->done = true;
    pthread_cond_broadcast(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

static void hand_over(releaser *r, batch *bt)
{
  pthread_mutex_lock(&r->mu);
  r->work = bt;
  r->done = false;
  pthread_cond_broadcast(&r->cv);
  while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
}

static uint64_t pool_free_bytes(void)
{
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  return st.bytes_pool_free;
}

static void slab_cross_thread_release_recirculates(void **state)
{
  (void)state;
  require_pool();
  static batch bt;
  static releaser r = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, false, false };
  r.stop = false;
  dk__objects_cache_flush();
  dk__pool_thread_flush();                     /* no 64-byte slab of this thread is partly used */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, releaser_main, &r), 0);
  bt.n = CT_N;
  uint64_t held = 0, free_after_first = 0;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < CT_N; i++) {
      bt.b[i] = small(64);
      assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(bt.b[i]), 64, 0));
      memset(IOBufferMemoryDescriptor_getBytesNoCopy(bt.b[i]), 0xa5, 64);
    }
    /* with CT_N live every round: the same number of slabs, carved from the same pool */
    if (round == 0) {
      held = pool_bytes();
      free_after_first = pool_free_bytes();
    } else {
      assert_int_equal(pool_bytes(), held);
      assert_int_equal(pool_free_bytes(), free_after_first);
    }
    hand_over(&r, &bt);                          /* released there; that thread lives on */
  }
  pthread_mutex_lock(&r.mu);
  r.stop = true;
  pthread_cond_broadcast(&r.cv);
  pthread_mutex_unlock(&r.mu);
  pthread_join(t, NULL);
  validate();
  dk_pool_trim();
}

/* ---- a thread that exits with live buffers ------------------------------------------------ */

static void *make_and_exit(void *arg)
{
  batch *bt = arg;
  for (int i = 0; i < bt->n; i++) bt->b[i] = small(128);
  return NULL;
}

static void slab_exited_thread_slabs_adopted(void **state)
{
  (void)state;
  require_pool();
  static batch bt;
  static uint64_t freed[CT_N / 2], ours[CT_N / 2];
  dk__objects_cache_flush();
  dk__pool_thread_flush();                     /* this thread holds no free small slot now */
  bt.n = CT_N;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, make_and_exit, &bt), 0);
  pthread_join(t, NULL);                       /* its slabs are orphans now */
  for (int i = 0; i < CT_N; i += 2) {          /* half of them freed into the orphans */
    freed[i / 2] = IOMemoryDescriptor_getPhysicalSegment(MD(bt.b[i]), 0, NULL, kIOMemoryMapperNone);
    OSObject_release(bt.b[i]);
  }
  uint64_t held = pool_bytes();
  for (int i = 0; i < CT_N / 2; i++) {
    IOBufferMemoryDescriptor *b = small(128);
    ours[i] = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, kIOMemoryMapperNone);
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), 128, 0));
    bt.b[2 * i] = b;
  }
  /* nothing new: exactly the slots freed into the exited thread's slabs served this one */
  assert_int_equal(pool_bytes(), held);
  qsort(freed, CT_N / 2, sizeof freed[0], cmp_u64);
  qsort(ours, CT_N / 2, sizeof ours[0], cmp_u64);
  assert_memory_equal(freed, ours, sizeof ours);
  for (int i = 0; i < CT_N; i++) OSObject_release(bt.b[i]);
  validate();
  dk_pool_trim();
}

/* ---- producer / consumer ------------------------------------------------------------------ */

#define RING 256
typedef struct ring {
  _Atomic(IOBufferMemoryDescriptor *) slot[RING];
  _Atomic unsigned long head, tail;
  unsigned long total;
  _Atomic int failed;
} ring;

static void *consumer(void *arg)
{
  ring *r = arg;
  for (unsigned long done = 0; done < r->total;) {
    unsigned long t = atomic_load(&r->tail);
    if (t == atomic_load(&r->head)) {
      if (atomic_load(&r->failed)) break;
      continue;
    }
    IOBufferMemoryDescriptor *b = atomic_load(&r->slot[t % RING]);
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    if (p[0] != (uint8_t)t) atomic_store(&r->failed, 1);
    OSObject_release(b);
    atomic_store(&r->tail, t + 1);
    done++;
  }
  return NULL;
}

static void slab_producer_consumer_bounded(void **state)
{
  (void)state;
  require_pool();
  static ring r;
  memset(&r, 0, sizeof r);
  r.total = 200000;
  IOBufferMemoryDescriptor *warm = small(64);
  uint64_t before = pool_bytes();
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, consumer, &r), 0);
  for (unsigned long i = 0; i < r.total && !atomic_load(&r.failed); i++) {
    while (atomic_load(&r.head) - atomic_load(&r.tail) >= RING) {}
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 64);
    if (!b) { atomic_store(&r.failed, 2); break; }
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    if (!dkt_all_bytes(p, 64, 0)) atomic_store(&r.failed, 3);
    p[0] = (uint8_t)i;
    atomic_store(&r.slot[i % RING], b);
    atomic_store(&r.head, i + 1);
  }
  pthread_join(t, NULL);
  assert_int_equal(atomic_load(&r.failed), 0);
  /* 200,000 buffers went through, at most RING alive: the pool stays as it was */
  assert_int_equal(pool_bytes(), before);
  OSObject_release(warm);
  validate();
  dk_pool_trim();
}

/* ---- descriptor arenas ------------------------------------------------------------------------- */

/* Descriptors live in 2 MiB arenas of 64 KiB blocks. 20,000 buffers need more than one arena;
 * once they are released their blocks are the allocator's cache (mapped, counted as cache, not
 * as memory held for callers); dk_pool_trim unmaps every arena with no block in use. The
 * descriptors are written through while live, so a block handed out twice would show. */
static void arena_round(IOBufferMemoryDescriptor **b, int n, dk_prim_counters *live)
{
  for (int i = 0; i < n; i++) {
    b[i] = small(64);
    IOMemoryDescriptor_setTag(MD(b[i]), (IOOptionBits)i);
  }
  if (live) *live = dk__prim_counters();
  for (int i = 0; i < n; i++) assert_int_equal(IOMemoryDescriptor_getTag(MD(b[i])), (IOOptionBits)i);
  for (int i = 0; i < n; i++) OSObject_release(b[i]);
  dk__thread_caches_flush();
}

static void slab_object_arenas_cached_then_trimmed(void **state)
{
  (void)state;
  require_pool();
  enum { NB = 20000 };
  IOBufferMemoryDescriptor **b = calloc(NB, sizeof *b);
  assert_non_null(b);
  dk__thread_caches_flush();
  dk_pool_trim();
  arena_round(b, NB, NULL);                    /* the pool grows to hold them, once */
  dk_prim_counters before = dk__prim_counters(), live;
  arena_round(b, NB, &live);
  dk_prim_counters released = dk__prim_counters();
  print_message("descriptor arenas: %ld KiB held while live, %ld KiB cached after release\n",
                (live.map_bytes - before.map_bytes) >> 10, released.cache_bytes >> 10);
  /* 20,000 descriptors take more than 2 MiB of blocks, held for callers while live */
  assert_true(live.map_bytes - before.map_bytes >= 2l << 20);
  assert_int_equal(released.map_bytes, before.map_bytes);  /* nothing held for a caller */
  assert_int_equal(released.cache_bytes, before.cache_bytes);
  assert_true(released.cache_bytes >= 2l << 20);            /* the emptied arenas stay mapped */
  validate();
  dk_pool_trim();
  dk_prim_counters trimmed = dk__prim_counters();
  assert_true(trimmed.map_bytes <= before.map_bytes);       /* the pool gave its memory back too */
  assert_true(trimmed.cache_bytes < 2l << 20);              /* only arenas with a block in use remain */
  free(b);
}

/* ---- releasing never allocates --------------------------------------------------------------- */

static void slab_release_with_heap_failing(void **state)
{
  (void)state;
  require_pool();
  enum { NB = 400 };
  static IOBufferMemoryDescriptor *b[NB];
  dk__objects_cache_flush();
  uint64_t sizes[] = { 64, 4096, 8192, 64 * 1024 + 512, 3 << 20 };
  for (int i = 0; i < NB; i++) {
    dk_constraints c = DK_CONSTRAINTS_NONE;
    c.contiguous = true;
    c.alignment = 64;
    b[i] = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, sizes[i % 5], &c);
    if (!b[i]) fail_msg("refused: %s", dkt_failure_text());
  }
  /* release every other one first, so that frees land between live blocks (no coalescing:
   * each needs its own free-list node) */
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC) | DK_PRIM_BIT(DK_PRIM_REALLOC), ENOMEM);
  for (int i = 0; i < NB; i += 2) OSObject_release(b[i]);
  for (int i = 1; i < NB; i += 2) OSObject_release(b[i]);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  print_message("heap failures during the releases: %s\n", fired ? "yes (and survived)" : "none asked for");
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, 0);
  validate();
  dk_pool_trim();
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);     /* nothing held for ever */
}

/* ---- many threads, windows ------------------------------------------------------------------- */

typedef struct mixer { int seed; uint64_t high; _Atomic int *bad; IOBufferMemoryDescriptor **shared; } mixer;

static void *mix(void *arg)
{
  mixer *m = arg;
  unsigned s = (unsigned)m->seed;
  for (int i = 0; i < 20000; i++) {
    s = s * 1103515245u + 12345u;
    uint64_t len = 64ull << ((s >> 16) % 7);
    dk_constraints c = DK_CONSTRAINTS_NONE;
    if ((s >> 8) & 1) c.high = m->high;          /* a window every slot handed out must meet */
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, len, &c);
    if (!b) {
      /* the pool may have to grow where the kernel's next frames lie above the window: a
       * refusal naming the window is a kept promise; anything else is not */
      if (!c.high || dk_last_failure()->constraint != DK_CONSTRAINT_MASK) atomic_store(m->bad, 1);
      continue;
    }
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, kIOMemoryMapperNone);
    if (!dkt_all_bytes(p, (size_t)len, 0) || (c.high && pa + len - 1 > c.high)) atomic_store(m->bad, 2);
    memset(p, 0x5a, (size_t)len);
    /* hand it to whoever comes next: releases land on every thread */
    IOBufferMemoryDescriptor *old = __atomic_exchange_n(&m->shared[s % 64], b, __ATOMIC_ACQ_REL);
    if (old) OSObject_release(old);
  }
  return NULL;
}

static void slab_threads_mix_windows(void **state)
{
  (void)state;
  require_pool();
  static IOBufferMemoryDescriptor *shared[64];
  /* a window from what the pool holds now: the top of its lowest run */
  IOBufferMemoryDescriptor *warm = small(64);
  dk_pool_run runs[64];
  size_t n = 0;
  assert_int_equal(dk_pool_get_runs(runs, 64, &n), kIOReturnSuccess);
  assert_true(n > 0);
  uint64_t high = runs[0].physical + runs[0].length - 1;
  _Atomic int bad = 0;
  pthread_t t[4];
  mixer m[4];
  for (int i = 0; i < 4; i++) {
    m[i] = (mixer){ i + 1, high, &bad, shared };
    assert_int_equal(pthread_create(&t[i], NULL, mix, &m[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_int_equal(atomic_load(&bad), 0);
  for (int i = 0; i < 64; i++) OSObject_release(shared[i]);
  OSObject_release(warm);
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, 0);
  validate();
  dk_pool_trim();
}

/* ---- a thread's first small buffer with the heap failing ---------------------------------------- */

/* Threads come one after another, each keeping its slab heap (it lives until told to stop), so
 * the heap records made earlier run out and a later thread has to make one. Each thread's first
 * buffer is asked for with the library's next heap allocation failing: it is given, or refused
 * for memory and saying so; once the heap works again the thread gets its buffer. A thread whose
 * heap record could not be made is refused with "this thread's slab heap". Nothing leaks. */
#define HEAP_THREADS 64
typedef struct heap_probe {
  pthread_mutex_t *mu;
  pthread_cond_t *cv;
  bool *stop;
  bool reported, refused, ok;
  IOReturn code;
  char text[sizeof dk_last_failure()->text];
  IOBufferMemoryDescriptor *b;
} heap_probe;

static void *heap_probe_main(void *arg)
{
  heap_probe *p = arg;
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC), ENOMEM);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 64);
  dk__fault_disarm();
  p->refused = b == NULL;
  if (!b) {
    p->code = dk_last_failure()->code;
    snprintf(p->text, sizeof p->text, "%s", dk_last_failure()->text);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 64);
  }
  p->ok = b && dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), 64, 0);
  p->b = b;
  pthread_mutex_lock(p->mu);
  p->reported = true;
  pthread_cond_broadcast(p->cv);
  while (!*p->stop) pthread_cond_wait(p->cv, p->mu);
  pthread_mutex_unlock(p->mu);
  if (b) OSObject_release(b);
  return NULL;
}

static void slab_thread_heap_with_heap_failing(void **state)
{
  (void)state;
  require_pool();
  static heap_probe probes[HEAP_THREADS];
  static pthread_t t[HEAP_THREADS];
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  static bool stop;
  stop = false;
  long live = dk__objects_live();
  int n = 0, heap_refused = -1;
  while (n < HEAP_THREADS && heap_refused < 0) {
    heap_probe *p = &probes[n];
    *p = (heap_probe){ .mu = &mu, .cv = &cv, .stop = &stop };
    assert_int_equal(pthread_create(&t[n], NULL, heap_probe_main, p), 0);
    pthread_mutex_lock(&mu);
    while (!p->reported) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (!p->ok) fail_msg("thread %d: no buffer once the heap worked again", n);
    if (p->refused) {
      if (p->code != kIOReturnNoMemory) fail_msg("thread %d: refused with 0x%x: %s", n, p->code, p->text);
      if (strstr(p->text, "this thread's slab heap")) heap_refused = n;
    }
    n++;
  }
  print_message("a new slab heap was needed by thread %d of %d\n", heap_refused, n);
  assert_true(heap_refused >= 0);
  pthread_mutex_lock(&mu);
  stop = true;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  assert_int_equal(dk__objects_live(), live);
  validate();
  dk_pool_trim();
}

/* ---- descriptor objects ---------------------------------------------------------------------- */

/* Descriptor objects have one size, set by the first; another size is the library's own error,
 * refused and said, and the slab heap is as it was. The consistency check runs from a thread
 * that never made a slab heap too (it checks the pool's orphans only). */
static void *validate_elsewhere(void *arg)
{
  char *why = arg;
  return (void *)(intptr_t)dk__pool_validate(true, why, 256);
}

static void slab_objects_one_size(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *b = small(64);      /* descriptor objects have their size now */
  long live = dk__objects_live();
  assert_null(dk__obj_alloc(1 << 12));
  assert_int_equal(dk_last_failure()->code, kIOReturnInternalError);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
  assert_non_null(strstr(dk_last_failure()->text, "descriptor objects are"));
  dk__obj_free(NULL);                            /* nothing to free: nothing happens */
  assert_int_equal(dk__objects_live(), live);
  OSObject_release(b);
  static char why[256];
  pthread_t t;
  void *rc = NULL;
  assert_int_equal(pthread_create(&t, NULL, validate_elsewhere, why), 0);
  pthread_join(t, &rc);
  if (rc) fail_msg("inconsistent, seen from a thread without a slab heap: %s", why);
  validate();
}

/* ---- a window's floor ------------------------------------------------------------------------ */

/* Slabs of this thread below a request's floor are passed over, more of them in one band than
 * a lookup scans before it moves on to the next band: the slot handed out lies above the floor,
 * or, with the pool capped at what it holds, the request is refused for memory. Nothing else
 * changes. */
#define FLOOR_N (20 * 16)                        /* twenty slabs of 4 KiB slots */
static void slab_window_floor_passes_slabs_over(void **state)
{
  (void)state;
  require_pool();
  static IOBufferMemoryDescriptor *b[FLOOR_N];
  static uint64_t pa[FLOOR_N];
  dk__objects_cache_flush();
  dk__pool_thread_flush();
  long live = dk__objects_live();
  uint64_t top = 0;
  for (int i = 0; i < FLOOR_N; i++) {
    b[i] = small(4096);
    pa[i] = IOMemoryDescriptor_getPhysicalSegment(MD(b[i]), 0, NULL, kIOMemoryMapperNone);
    if (pa[i] > top) top = pa[i];
  }
  /* one slot back in each slab: every one of them is queued with a free slot (and none is
   * empty, which would send all but one back to the pool) */
  int queued = 0;
  for (int i = 0; i < FLOOR_N; i++) {
    bool first = true;
    for (int j = 0; j < i; j++)
      if (!b[j] && pa[j] >> 16 == pa[i] >> 16) first = false;
    if (first) {
      OSObject_release(b[i]);
      b[i] = NULL;
      queued++;
    }
  }
  dk__objects_cache_flush();                     /* kept built for a next request: back in their slabs */
  assert_true(queued >= FLOOR_N / 16);
  long max_mb = dk_option_get(DK_OPTION_POOL_MAX_MB);
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  dk_option_set(DK_OPTION_POOL_MAX_MB, (long)((st.bytes_pool_2m + st.bytes_pool_1g) >> 20));
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.low = (top | 0xFFFF) + 1;                    /* above every slab this thread holds */
  IOBufferMemoryDescriptor *x = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 4096, &c);
  dk_option_set(DK_OPTION_POOL_MAX_MB, max_mb);
  if (x) {
    addr64_t xp = IOMemoryDescriptor_getPhysicalSegment(MD(x), 0, NULL, kIOMemoryMapperNone);
    assert_true(xp >= c.low);
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(x), 4096, 0));
    print_message("above the floor: 0x%llx\n", (unsigned long long)xp);
    OSObject_release(x);
  } else {
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    print_message("refused: %s\n", dk_last_failure()->text);
  }
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  for (int i = 0; i < FLOOR_N; i++)
    if (b[i]) OSObject_release(b[i]);
  assert_int_equal(dk__objects_live(), live);
  validate();
  dk_pool_trim();
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(slab_cross_thread_release_recirculates),
    cmocka_unit_test(slab_exited_thread_slabs_adopted),
    cmocka_unit_test(slab_producer_consumer_bounded),
    cmocka_unit_test(slab_release_with_heap_failing),
    cmocka_unit_test(slab_object_arenas_cached_then_trimmed),
    cmocka_unit_test(slab_threads_mix_windows),
    cmocka_unit_test(slab_thread_heap_with_heap_failing),
    cmocka_unit_test(slab_objects_one_size),
    cmocka_unit_test(slab_window_floor_passes_slabs_over),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
