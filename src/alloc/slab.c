/* src/alloc/slab.c: small buffers (64 B .. 4 KiB, naturally aligned) as slots of 64 KiB slabs
 * carved from the pool. Each thread has a slab heap of its own (as mimalloc gives each thread
 * its pages): the slabs it made, in queues by size class and by how high they lie (a band per
 * bit of the slab's top address), so a request under a mask finds a slab with a free slot in
 * O(1) without a lock. A slot freed by another thread goes back to its slab at once with one
 * atomic OR on the slab's remote bitmap; the first such free also pushes the slab on its
 * owner's lock-free stack, and the owner folds the remote bits in at its next allocation.
 * When a thread exits, its slabs pass to the pool as orphans that other threads adopt.
 * Slab records and heaps are never given back to the C heap (they are reused), so a late
 * remote free never touches freed memory. Frees never allocate. */
#include "alloc/pool_impl.h"
#include "base/fork.h"
#include "base/tld.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define NBAND       49                   /* band = bit length of the slab's top address - 16 */
#define OBJ         DK_NCLASS            /* the class of descriptor objects (dk__obj_alloc) */
#define NQ          (DK_NCLASS + 1)
#define OBJ_HEADER  64u                  /* an object slab's block starts with its record's address */
#define NWORDS      (DK_SLAB_BYTES / DK_SLAB_MIN / 64)
#define EMPTY_KEEP  1                    /* empty slabs a heap keeps per class */
#define SCAN_LIMIT  8                    /* slabs looked at in one band before the next band */

typedef struct dk_theap dk_theap;

struct dk_slab {
  /* the owner's side (or the pool lock's, for an orphan) */
  dk_theap *_Atomic owner;               /* NULL: orphaned, kept by the pool */
  dk_slab  *prev, *next;                 /* in a band queue, while it has a free slot */
  dk_slab  *all_prev, *all_next;         /* in the owner's list of every slab it holds */
  dk_block  mem;                         /* the 64 KiB */
  uint32_t  cls;                         /* slot size */
  uint16_t  k;                           /* size class */
  uint16_t  nslots, nfree;
  uint16_t  hint;                        /* the lowest bitmap word that may have a free slot */
  uint16_t  base;                        /* offset of slot 0 in the block (OBJ_HEADER for objects) */
  uint32_t  epoch;                       /* dk__fork_epoch() when it was made */
  uint8_t   band;
  bool      queued;
  uint64_t  used[NWORDS];                /* 1 = taken (a remote free not yet folded in counts) */
  /* the other threads' side */
  _Alignas(64) _Atomic uint64_t remote[NWORDS];
  _Atomic int notified;                  /* 1 while the slab is on a heap's remote stack */
  dk_slab  *rnext;                       /* on that stack */
  dk_slab  *free_next;                   /* in the list of records for reuse */
};

typedef struct slabq {
  uint64_t mask;                         /* bands with a slab */
  dk_slab *head[NBAND];
} slabq;

struct dk_theap {
  slabq             q[NQ];
  uint32_t          nempty[NQ];
  dk_slab          *all;
  _Atomic(dk_slab *) remote;             /* slabs with slots freed by other threads */
  bool              in_use;              /* a thread has it (pool lock) */
  dk_theap         *next;                /* every heap made */
};

static _Thread_local dk_theap *tl_heap __attribute__((tls_model("initial-exec")));
static dk_theap *g_heaps;                /* pool lock */
static slabq     g_orphans[NQ];          /* pool lock */
static _Atomic uint32_t g_obj_size;      /* dk__obj_alloc: the one object size */
static dk_slab  *g_orphan_all;           /* pool lock */
static dk_slab  *g_records;              /* pool lock: records for reuse */

/* ---- small helpers ------------------------------------------------------------------- */

int dk__slab_class(uint64_t len, uint64_t align)
{
  uint64_t need = len > align ? len : align;
  if (need > DK_SLAB_MAX) return -1;
  if (need <= DK_SLAB_MIN) return 0;
  return (int)(64 - __builtin_clzll(need - 1)) - 6;   /* 64 -> 0, 128 -> 1, ... 4096 -> 6 */
}

_Static_assert(64 - 16 < NBAND && NBAND <= 63, "every 64-bit address has a band; a band mask fits 64 bits");

static unsigned band_of(uint64_t top)
{
  unsigned b = dk__bitlen(top);
  return b > 16 ? b - 16 : 0;
}

static uint64_t words_of(const dk_slab *s) { return (s->nslots + 63u) / 64u; }

static uint64_t word_mask(const dk_slab *s, unsigned w)
{
  unsigned rest = s->nslots - w * 64;
  return rest >= 64 ? ~0ull : (1ull << rest) - 1;
}

static void q_push(slabq *q, dk_slab *s)
{
  s->prev = NULL;
  s->next = q->head[s->band];
  if (s->next) s->next->prev = s;
  q->head[s->band] = s;
  q->mask |= 1ull << s->band;
  s->queued = true;
}

static void q_remove(slabq *q, dk_slab *s)
{
  if (s->prev) s->prev->next = s->next;
  else q->head[s->band] = s->next;
  if (s->next) s->next->prev = s->prev;
  if (!q->head[s->band]) q->mask &= ~(1ull << s->band);
  s->prev = s->next = NULL;
  s->queued = false;
}

/* A queued slab whose slots lie in c's window: the highest band first (low memory stays for
 * the masks that need it). Bands wholly under the limit fit as they are; in the band the limit
 * falls in, a few slabs are looked at. */
static dk_slab *q_find(const slabq *q, const dk_constraints *c)
{
  uint64_t m = q->mask;
  uint64_t hi = c->high ? c->high : UINT64_MAX;
  if (c->high) m &= (2ull << band_of(c->high)) - 1;
  while (m) {
    unsigned b = 63u - (unsigned)__builtin_clzll(m);
    int scanned = 0;
    for (dk_slab *s = q->head[b]; s && scanned < SCAN_LIMIT; s = s->next, scanned++)
      if (s->mem.pa + DK_SLAB_BYTES - 1 <= hi && s->mem.pa >= c->low) return s;
    m &= ~(1ull << b);
  }
  return NULL;
}

static void all_add(dk_slab **all, dk_slab *s)
{
  s->all_prev = NULL;
  s->all_next = *all;
  if (*all) (*all)->all_prev = s;
  *all = s;
}

static void all_remove(dk_slab **all, dk_slab *s)
{
  if (s->all_prev) s->all_prev->all_next = s->all_next;
  else *all = s->all_next;
  if (s->all_next) s->all_next->all_prev = s->all_prev;
  s->all_prev = s->all_next = NULL;
}

/* Fold the slots other threads freed into the bitmap; true if any were. */
static bool collect(dk_slab *s)
{
  bool any = false;
  for (unsigned w = 0; w < words_of(s); w++) {
    if (!atomic_load_explicit(&s->remote[w], memory_order_relaxed)) continue;
    uint64_t bits = atomic_exchange(&s->remote[w], 0);
    s->used[w] &= ~bits;
    s->nfree = (uint16_t)(s->nfree + __builtin_popcountll(bits));
    if (w < s->hint) s->hint = (uint16_t)w;
    any = true;
  }
  return any;
}

/* A record for a new slab: one given up earlier, or a new one. Pool lock held. */
static dk_slab *record_get(void)
{
  dk_slab *s = g_records;
  if (s) {
    g_records = s->free_next;
    return s;
  }
  s = dk__alloc_persistent(64, sizeof *s);
  if (!s) dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a slab record");
  return s;
}

/* Give an empty slab's 64 KiB back to the pool and keep its record for reuse. Pool lock held;
 * the slab is in no queue and no heap's list. */
static void obj_block_put(dk_block *mem);
static void release_locked(dk_slab *s)
{
  atomic_store(&s->owner, NULL);
  if (s->k == OBJ) obj_block_put(&s->mem);
  else dk__pool_give_locked(&s->mem);
  s->free_next = g_records;
  g_records = s;
}

/* ---- the memory of object slabs ------------------------------------------------------------ *
 * Descriptor objects live in slabs of ordinary memory: 64 KiB blocks, aligned to 64 KiB so that
 * an object's block (and from its header, its slab) is found from the object's address. Blocks
 * are cut from 2 MiB arenas, mapped on their own and 2 MiB-aligned; every arena after a
 * process's first asks for transparent hugepages, so a million live descriptors sit in a
 * hundred TLB entries, not fifty thousand. An empty block goes back to its arena and stays
 * mapped (its next slab takes no page fault); dk_pool_trim() unmaps the arenas with no block
 * in use. All under the pool lock. */

#define ARENA_BYTES  (2u << 20)
#define ARENA_BLOCKS (ARENA_BYTES / DK_SLAB_BYTES)
_Static_assert(ARENA_BLOCKS <= 32, "an arena's free blocks are one 32-bit mask");

/* Descriptors live in these mappings, not in malloc'd chunks, so LeakSanitizer (ASan builds)
 * would not follow a live descriptor's pointers to its heap records and would report them as
 * leaked: arenas are its root regions. Descriptor leaks are dmakit's own count to check
 * (dk__objects_live), as every test does. */
#if defined(__SANITIZE_ADDRESS__)
#define DK_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DK_LSAN 1
#endif
#endif
#ifdef DK_LSAN
#include <sanitizer/lsan_interface.h>
#define DK_LSAN_ROOT_ADD(p, n) __lsan_register_root_region((p), (n))
#define DK_LSAN_ROOT_DEL(p, n) __lsan_unregister_root_region((p), (n))
#else
#define DK_LSAN_ROOT_ADD(p, n) ((void)0)
#define DK_LSAN_ROOT_DEL(p, n) ((void)0)
#endif

typedef struct obj_arena {
  uint8_t          *base;
  uint32_t          free;                /* bit i: block i is free */
  struct obj_arena *prev, *next;         /* in g_arenas_free while it has a free block */
  struct obj_arena *all_next;            /* every arena (records are reused, never freed) */
  bool              mapped, listed;
} obj_arena;

static obj_arena *g_arenas_free;         /* pool lock: arenas with a free block */
static obj_arena *g_arenas_all;          /* pool lock */
static unsigned   g_arenas_mapped;       /* pool lock */

/* a block's header: its slab record at +0, its arena at +8 (kept while the block is free) */
static obj_arena **block_arena(uint8_t *block) { return (obj_arena **)(void *)(block + sizeof(void *)); }

static void arena_list(obj_arena *a)
{
  a->prev = NULL;
  a->next = g_arenas_free;
  if (a->next) a->next->prev = a;
  g_arenas_free = a;
  a->listed = true;
}

static void arena_unlist(obj_arena *a)
{
  if (a->prev) a->prev->next = a->next;
  else g_arenas_free = a->next;
  if (a->next) a->next->prev = a->prev;
  a->prev = a->next = NULL;
  a->listed = false;
}

static obj_arena *arena_new(void)
{
  obj_arena *a = g_arenas_all;
  while (a && a->mapped) a = a->all_next;
  if (!a) {
    if (!(a = dk__alloc_persistent(64, sizeof *a))) return NULL;
    memset(a, 0, sizeof *a);
    a->all_next = g_arenas_all;
    g_arenas_all = a;
  }
  uint8_t *p = dk__reserve_aligned(ARENA_BYTES, ARENA_BYTES, 0);
  if (p && dk__mprotect(p, ARENA_BYTES, PROT_READ | PROT_WRITE) < 0) {
    dk__munmap(p, ARENA_BYTES);
    p = NULL;
  }
  if (!p) return NULL;
  /* a process with a few buffers keeps a few 64 KiB of descriptors; past the first arena the
   * count is large and hugepages pay (a kernel without them ignores the advice) */
  if (g_arenas_mapped > 0) (void)dk__madvise(p, ARENA_BYTES, MADV_HUGEPAGE);
  DK_LSAN_ROOT_ADD(p, ARENA_BYTES);
  a->base = p;
  a->free = (uint32_t)((1ull << ARENA_BLOCKS) - 1);
  a->mapped = true;
  g_arenas_mapped++;
  dk__prim_count_cache((long)ARENA_BYTES);  /* free blocks are the allocator's cache */
  for (unsigned i = 0; i < ARENA_BLOCKS; i++) *block_arena(p + (size_t)i * DK_SLAB_BYTES) = a;
  arena_list(a);
  return a;
}

static bool obj_block_get(dk_block *mem)
{
  obj_arena *a = g_arenas_free;
  if (!a && !(a = arena_new())) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for descriptor objects: %s", strerror(errno));
    return false;
  }
  unsigned i = (unsigned)__builtin_ctz(a->free);
  a->free &= ~(1u << i);
  dk__prim_count_cache(-(long)DK_SLAB_BYTES);
  if (!a->free) arena_unlist(a);
  memset(mem, 0, sizeof *mem);
  mem->va = a->base + (size_t)i * DK_SLAB_BYTES;
  mem->len = DK_SLAB_BYTES;
  return true;
}

static void obj_block_put(dk_block *mem)
{
  obj_arena *a = *block_arena(mem->va);
  a->free |= 1u << ((unsigned)(mem->va - a->base) / DK_SLAB_BYTES);
  dk__prim_count_cache((long)DK_SLAB_BYTES);
  if (!a->listed) arena_list(a);
  mem->va = NULL;
}

/* Unmap every arena with no block in use. Pool lock held. */
static void arenas_trim_locked(void)
{
  for (obj_arena *a = g_arenas_all; a; a = a->all_next) {
    if (!a->mapped || a->free != (uint32_t)((1ull << ARENA_BLOCKS) - 1)) continue;
    arena_unlist(a);
    dk__prim_count_cache(-(long)ARENA_BYTES);
    DK_LSAN_ROOT_DEL(a->base, ARENA_BYTES);
    dk__munmap(a->base, ARENA_BYTES);
    a->base = NULL;
    a->mapped = false;
    g_arenas_mapped--;
  }
}

/* ---- the heap of this thread ------------------------------------------------------------ */

static void heap_thread_exit(void);
static void drain(dk_theap *h);

static dk_theap *heap_self(void)
{
  dk_theap *h = tl_heap;
  if (__builtin_expect(h != NULL, 1)) return h;
  pthread_mutex_lock(&dk__pool_lock);
  for (h = g_heaps; h && h->in_use; h = h->next) {}
  if (!h && (h = dk__alloc_persistent(64, sizeof *h))) {
    h->next = g_heaps;
    g_heaps = h;
  }
  if (h) h->in_use = true;
  pthread_mutex_unlock(&dk__pool_lock);
  if (!h) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for this thread's slab heap");
    return NULL;
  }
  tl_heap = h;
  dk__tld_arm(DK_TLD_HEAP, heap_thread_exit);
  drain(h);                              /* what was pushed while nobody had it */
  return h;
}

/* An empty slab beyond the few a heap keeps goes back to the pool. */
static void became_empty(dk_theap *h, dk_slab *s)
{
  if (++h->nempty[s->k] <= EMPTY_KEEP) return;
  h->nempty[s->k]--;
  q_remove(&h->q[s->k], s);
  all_remove(&h->all, s);
  pthread_mutex_lock(&dk__pool_lock);
  release_locked(s);
  pthread_mutex_unlock(&dk__pool_lock);
}

/* After slots came back to s (owned by h): queue it again, count it empty (it was not empty
 * before: at least one slot came back). */
static void slots_back(dk_theap *h, dk_slab *s)
{
  if (!s->queued) q_push(&h->q[s->k], s);
  if (s->nfree == s->nslots) became_empty(h, s);
}

/* Put a slab with remote frees where it belongs now. Pool lock not held. */
static void push_remote(dk_theap *o, dk_slab *s)
{
  if (atomic_exchange(&s->notified, 1)) return;            /* already on a stack */
  dk_slab *head = atomic_load_explicit(&o->remote, memory_order_relaxed);
  do {
    s->rnext = head;
  } while (!atomic_compare_exchange_weak_explicit(&o->remote, &head, s, memory_order_release,
                                                  memory_order_relaxed));
}

static void orphan_collect_locked(dk_slab *s)
{
  if (!collect(s)) return;
  if (!s->queued) q_push(&g_orphans[s->k], s);
  if (s->nfree == s->nslots) {                       /* emptied by what came back */
    q_remove(&g_orphans[s->k], s);
    all_remove(&g_orphan_all, s);
    release_locked(s);
  }
}

/* Take h's stack of slabs with remote frees (h is this thread's, or nobody's under the pool
 * lock) and fold each in, or pass it on to its owner now. */
static void drain_stack(dk_theap *h, bool locked)
{
  dk_slab *s = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
  while (s) {
    dk_slab *next = s->rnext;
    atomic_store(&s->notified, 0);      /* before the bits are read: a later free pushes again */
    dk_theap *o = atomic_load(&s->owner);
    if (o == h && !locked) {
      if (collect(s)) slots_back(h, s);
    } else if (o) {
      push_remote(o, s);                  /* it changed hands since it was pushed */
    } else {
      if (!locked) pthread_mutex_lock(&dk__pool_lock);
      if (!atomic_load(&s->owner)) orphan_collect_locked(s);
      else push_remote(atomic_load(&s->owner), s);
      if (!locked) pthread_mutex_unlock(&dk__pool_lock);
    }
    s = next;
  }
}

static void drain(dk_theap *h) { drain_stack(h, false); }

/* The remote stacks of heaps no thread has (their slabs are orphans by now). */
static void drain_unowned_locked(void)
{
  for (dk_theap *h = g_heaps; h; h = h->next)
    if (!h->in_use && atomic_load_explicit(&h->remote, memory_order_relaxed)) drain_stack(h, true);
}

/* The thread exits: its slabs become orphans (empty ones go back to the pool). */
static void heap_thread_exit(void)
{
  dk_theap *h = tl_heap;
  if (!h) return;
  drain(h);
  pthread_mutex_lock(&dk__pool_lock);
  while (h->all) {
    dk_slab *s = h->all;
    all_remove(&h->all, s);
    if (s->queued) q_remove(&h->q[s->k], s);
    atomic_store(&s->owner, NULL);
    collect(s);
    if (s->nfree == s->nslots) {
      release_locked(s);
    } else {
      all_add(&g_orphan_all, s);
      if (s->nfree) q_push(&g_orphans[s->k], s);
    }
  }
  memset(h->q, 0, sizeof h->q);
  memset(h->nempty, 0, sizeof h->nempty);
  h->in_use = false;
  pthread_mutex_unlock(&dk__pool_lock);
  tl_heap = NULL;
}

/* ---- allocation and free ---------------------------------------------------------------- */

static void take(dk_theap *h, dk_slab *s, dk_block *out)
{
  if (s->nfree == s->nslots) h->nempty[s->k]--;
  for (unsigned w = s->hint;; w++) {
    uint64_t free_bits = ~s->used[w] & word_mask(s, w);
    if (!free_bits) continue;
    unsigned b = (unsigned)__builtin_ctzll(free_bits);
    s->used[w] |= 1ull << b;
    s->hint = (uint16_t)w;
    uint64_t off = s->base + (uint64_t)(w * 64 + b) * s->cls;
    out->region = s->mem.region;
    out->slab = s;
    out->spare = NULL;
    out->va = s->mem.va + off;
    out->pa = s->mem.pa + off;
    out->len = s->cls;
    break;
  }
  if (--s->nfree == 0) q_remove(&h->q[s->k], s);
}

/* An orphan that fits, adopted by h, or a new slab; pool lock held. */
static dk_slab *adopt_or_new_locked(dk_theap *h, const dk_constraints *c, int k)
{
  drain_unowned_locked();
  dk_slab *s = q_find(&g_orphans[k], c);
  if (s) {
    q_remove(&g_orphans[k], s);
    all_remove(&g_orphan_all, s);
    atomic_store(&s->owner, h);
    collect(s);
  } else {
    s = record_get();
    if (!s) return NULL;
    bool got;
    if (k == OBJ) {
      got = obj_block_get(&s->mem);
    } else {
      dk_constraints sc = *c;
      sc.boundary = 0;                   /* 64 KiB aligned: no slot crosses a line of 64 KiB or more */
      got = dk__pool_carve_locked(&sc, DK_SLAB_BYTES, DK_SLAB_BYTES, &s->mem);
    }
    if (!got) {
      s->free_next = g_records;
      g_records = s;
      return NULL;
    }
    if (k == OBJ) *(dk_slab **)(void *)s->mem.va = s;   /* the block's header: its record */
    s->epoch = dk__fork_epoch();
    s->cls = k == OBJ ? atomic_load(&g_obj_size) : DK_SLAB_MIN << k;
    s->k = (uint16_t)k;
    s->base = k == OBJ ? OBJ_HEADER : 0;
    s->nslots = s->nfree = (uint16_t)((DK_SLAB_BYTES - s->base) / s->cls);
    s->hint = 0;
    s->band = k == OBJ ? 0 : (uint8_t)band_of(s->mem.pa + DK_SLAB_BYTES - 1);
    s->queued = false;
    memset(s->used, 0, sizeof s->used);
    /* the remote bitmap is clear (the slab was empty when it was given up) and `notified` is
     * left as it is: a free that was on its way when the slab was given up may still push the
     * record on its old owner's stack, and whoever drains that stack passes it on */
    atomic_store(&s->owner, h);
  }
  /* an orphan was queued, so it has a free slot; a new slab has all of them */
  all_add(&h->all, s);
  q_push(&h->q[k], s);
  if (s->nfree == s->nslots) h->nempty[k]++;
  return s;
}

bool dk__slab_alloc(const dk_constraints *c, int k, dk_block *out)
{
  dk_theap *h = heap_self();
  if (!h) return false;
  if (atomic_load_explicit(&h->remote, memory_order_relaxed)) drain(h);
  dk_slab *s = q_find(&h->q[k], c);
  if (__builtin_expect(!s, 0)) {
    pthread_mutex_lock(&dk__pool_lock);
    s = adopt_or_new_locked(h, c, k);
    pthread_mutex_unlock(&dk__pool_lock);
    if (!s) return false;
  }
  take(h, s, out);
  return true;
}

void dk__slab_free(dk_block *b)
{
  dk_slab *s = b->slab;
  unsigned slot = (unsigned)((uint64_t)(b->va - s->mem.va - s->base) / s->cls), w = slot / 64;
  uint64_t bit = 1ull << (slot % 64);
  dk_theap *h = tl_heap;
  for (;;) {
    dk_theap *o = atomic_load_explicit(&s->owner, memory_order_acquire);
    if (o && o == h) {                   /* ours: no atomic read-modify-write */
      s->used[w] &= ~bit;
      s->nfree++;
      if (w < s->hint) s->hint = (uint16_t)w;
      slots_back(h, s);
      return;
    }
    if (o) {                             /* another thread's: its remote bitmap */
      atomic_fetch_or(&s->remote[w], bit);
      push_remote(o, s);
      return;
    }
    pthread_mutex_lock(&dk__pool_lock);  /* an orphan: the pool's, under its lock */
    if (!atomic_load(&s->owner)) {
      s->used[w] &= ~bit;
      s->nfree++;
      if (w < s->hint) s->hint = (uint16_t)w;
      if (!s->queued) q_push(&g_orphans[s->k], s);
      if (s->nfree == s->nslots) {
        q_remove(&g_orphans[s->k], s);
        all_remove(&g_orphan_all, s);
        release_locked(s);
      }
      pthread_mutex_unlock(&dk__pool_lock);
      return;
    }
    pthread_mutex_unlock(&dk__pool_lock);    /* adopted meanwhile: try again */
  }
}

void *dk__obj_alloc(size_t size)
{
  uint32_t want = (uint32_t)((size + 15) & ~(size_t)15), none = 0;
  /* set once, by the first call: a plain load after that, not a locked compare-and-swap */
  if (atomic_load_explicit(&g_obj_size, memory_order_relaxed) != want &&
      !atomic_compare_exchange_strong((_Atomic uint32_t *)&g_obj_size, &none, want) && none != want) {
    dk__fail(kIOReturnInternalError, DK_CONSTRAINT_RESOURCE, "descriptor objects are %u bytes, not %u", none, want);
    return NULL;
  }
  static const dk_constraints anywhere = DK_CONSTRAINTS_NONE;
  dk_block b;
  if (!dk__slab_alloc(&anywhere, OBJ, &b)) return NULL;
  return b.va;
}

void dk__obj_free(void *p)
{
  if (!p) return;
  dk_block b = { 0 };
  b.slab = *(dk_slab **)(void *)((uintptr_t)p & ~(uintptr_t)(DK_SLAB_BYTES - 1));
  b.va = p;
  if (__builtin_expect(dk__slab_inherited(b.slab), 0)) return;   /* the parent's slab */
  dk__slab_free(&b);
}

bool dk__slab_inherited(const dk_slab *s) { return s->epoch != dk__fork_epoch(); }

void dk__slab_in_child(void)
{
  /* every heap, slab and record here is a copy of the parent's: the child keeps the copies
   * (its inherited buffers point into them) and starts with none */
  g_heaps = NULL;
  memset(g_orphans, 0, sizeof g_orphans);
  g_orphan_all = NULL;
  g_records = NULL;
  g_arenas_free = g_arenas_all = NULL;    /* (the copies of the parent's arenas stay mapped) */
  g_arenas_mapped = 0;
  tl_heap = NULL;
  dk__tl_armed &= ~(1u << DK_TLD_HEAP);
}

void dk__pool_thread_flush(void)
{
  dk_theap *h = tl_heap;
  if (!h) return;
  drain(h);
  pthread_mutex_lock(&dk__pool_lock);
  for (dk_slab *s = h->all, *next; s; s = next) {
    next = s->all_next;
    if (s->nfree != s->nslots) continue;
    q_remove(&h->q[s->k], s);            /* an empty slab has free slots: it is queued */
    all_remove(&h->all, s);
    release_locked(s);
  }
  memset(h->nempty, 0, sizeof h->nempty);
  pthread_mutex_unlock(&dk__pool_lock);
}

void dk__slab_trim_locked(void)
{
  drain_unowned_locked();
  for (dk_slab *s = g_orphan_all, *next; s; s = next) {
    next = s->all_next;
    collect(s);
    if (s->nfree != s->nslots) continue;
    if (s->queued) q_remove(&g_orphans[s->k], s);
    all_remove(&g_orphan_all, s);
    release_locked(s);
  }
  arenas_trim_locked();                  /* last: the object slabs above gave their blocks back */
}

/* The bitmap agrees with the count, and the queues hold exactly the slabs with a free slot. */
static int check_slab(const dk_slab *s, char *why, size_t cap)
{
  unsigned used = 0;
  for (unsigned w = 0; w < words_of(s); w++) used += (unsigned)__builtin_popcountll(s->used[w] & word_mask(s, w));
  if (used + s->nfree != s->nslots) {
    snprintf(why, cap, "slab at 0x%llx: %u slots taken and %u free of %u", (unsigned long long)s->mem.pa, used,
             s->nfree, s->nslots);
    return -1;
  }
  if (s->queued != (s->nfree > 0)) {
    snprintf(why, cap, "slab at 0x%llx with %u free slots is %squeued", (unsigned long long)s->mem.pa, s->nfree,
             s->queued ? "" : "not ");
    return -1;
  }
  return 0;
}

int dk__slab_validate_locked(char *why, size_t cap)
{
  for (const dk_slab *s = g_orphan_all; s; s = s->all_next)
    if (check_slab(s, why, cap) < 0) return -1;
  const dk_theap *h = tl_heap;           /* the caller's own; other threads' are theirs alone */
  if (h)
    for (const dk_slab *s = h->all; s; s = s->all_next)
      if (check_slab(s, why, cap) < 0) return -1;
  return 0;
}
