/* src/alloc/pool.c: the hugepage pool's heap (see pool.h). */
#include "alloc/pool.h"
#include "base/counters.h"
#include "phys/reserve.h"
#include "prim/prim.h"

#include <errno.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SLAB_BYTES   (64u * 1024)
#define SLAB_MIN     64u
#define SLAB_MAX     4096u
#define NCLASS       7                   /* 64 128 256 512 1024 2048 4096 */
#define SLAB_WORDS   (SLAB_BYTES / SLAB_MIN / 64)

typedef struct dk_extent {
  uint64_t start, end;                   /* physical, [start, end) */
  struct dk_extent *next;
} dk_extent;

typedef struct dk_chunk_node {
  dk_hchunk             chunk;
  long                  raised;          /* kernel limit this chunk's growth raised, in pages */
  struct dk_chunk_node *next;
} dk_chunk_node;

struct dk_region {
  dk_chunk_node *owner;
  uint32_t       run;                    /* index in owner->chunk.runs */
  uint8_t       *va;
  uint64_t       pa, len;
  dk_extent     *free;                   /* address-ordered, coalesced */
  uint64_t       free_bytes;
  dk_region     *next;                   /* regions by descending pa */
};

struct dk_slab {
  dk_block  mem;                         /* the 64 KiB the slab occupies */
  uint32_t  cls;                         /* slot size */
  uint32_t  nslots, nfree;
  uint64_t  bits[SLAB_WORDS];            /* 1 = slot in use */
  dk_slab  *next;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dk_region     *g_regions;
static dk_chunk_node *g_chunks;
static dk_slab       *g_slabs[NCLASS];
static dk_pool_stats  g_stats;

/* Per-thread magazines of free slab slots (zeroed, still marked in their slab), so that
 * a small create/release pair takes no lock. */
#define MAG 32
typedef struct magazine { uint32_t n; dk_block b[MAG]; } magazine;
static _Thread_local magazine tl_mag[NCLASS];
static _Thread_local bool tl_mag_keyed;
static pthread_key_t g_mag_key;
static pthread_once_t g_mag_once = PTHREAD_ONCE_INIT;
static void slot_release_locked(dk_block *b);
static uint64_t       g_bytes_4k, g_requests_4k;

/* ---- extents --------------------------------------------------------------------------- */

/* Best placement in one region: the highest fitting address over its free extents. */
static bool region_place(const dk_region *r, const dk_constraints *c, uint64_t len, uint64_t align, uint64_t *x,
                         dk_extent **prev_out, dk_extent **ext_out)
{
  bool found = false;
  dk_extent *prev = NULL;
  for (dk_extent *e = r->free; e; prev = e, e = e->next) {
    uint64_t at;
    if (e->end - e->start < len) continue;
    if (dk__place(c, align, e->start, e->end, len, &at) && (!found || at > *x)) {
      *x = at;
      *prev_out = prev;
      *ext_out = e;
      found = true;
    }
  }
  return found;
}

/* Carve [x, x+len) out of extent e (whose predecessor is prev). */
static bool carve(dk_region *r, dk_extent *prev, dk_extent *e, uint64_t x, uint64_t len)
{
  uint64_t end = x + len;
  if (x > e->start && end < e->end) {           /* split in two */
    dk_extent *tail = dk__malloc(sizeof *tail);
    if (!tail) return false;
    tail->start = end;
    tail->end = e->end;
    tail->next = e->next;
    e->end = x;
    e->next = tail;
  } else if (x > e->start) {
    e->end = x;
  } else if (end < e->end) {
    e->start = end;
  } else {                                       /* the whole extent */
    if (prev) prev->next = e->next;
    else r->free = e->next;
    dk__free(e);
  }
  r->free_bytes -= len;
  return true;
}

/* Return [pa, pa+len) to the region's free list, coalescing. The memory is already zero. */
static void give(dk_region *r, uint64_t pa, uint64_t len)
{
  dk_extent *prev = NULL, *e = r->free;
  while (e && e->start < pa) { prev = e; e = e->next; }
  bool join_prev = prev && prev->end == pa;
  bool join_next = e && e->start == pa + len;
  if (join_prev && join_next) {
    prev->end = e->end;
    prev->next = e->next;
    dk__free(e);
  } else if (join_prev) {
    prev->end += len;
  } else if (join_next) {
    e->start = pa;
  } else {
    dk_extent *n = dk__malloc(sizeof *n);
    if (!n) return;            /* lost to the heap until trim: never handed out twice */
    n->start = pa;
    n->end = pa + len;
    n->next = e;
    if (prev) prev->next = n;
    else r->free = n;
  }
  r->free_bytes += len;
}

/* ---- growth ---------------------------------------------------------------------------- */

static void insert_region(dk_region *n)
{
  dk_region **pp = &g_regions;
  while (*pp && (*pp)->pa > n->pa) pp = &(*pp)->next;
  n->next = *pp;
  *pp = n;
}

static uint64_t held_bytes(void) { return g_stats.bytes_pool_2m + g_stats.bytes_pool_1g; }

static uint64_t cap_bytes(void) { return (uint64_t)dk__option(DK_OPTION_POOL_MAX_MB) << 20; }

/* Put a new chunk's runs into the pool; false (chunk destroyed, node freed) on no memory. */
static bool add_chunk(dk_chunk_node *node)
{
  uint64_t page = node->chunk.page, n = node->chunk.npages;
  dk_region *regs = dk__calloc(node->chunk.nruns, sizeof *regs);
  dk_extent *exts = NULL;
  bool ok = regs != NULL;
  for (uint32_t i = 0; ok && i < node->chunk.nruns; i++) {
    dk_extent *e = dk__malloc(sizeof *e);
    if (!e) { ok = false; break; }
    e->next = exts;
    exts = e;
  }
  if (!ok) {
    while (exts) { dk_extent *nx = exts->next; dk__free(exts); exts = nx; }
    dk__free(regs);
    dk__hchunk_destroy(&node->chunk);
    dk__huge_give_back(page, node->raised);
    dk__free(node);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for region records");
    return false;
  }
  for (uint32_t i = 0; i < node->chunk.nruns; i++) {
    const dk_hrun *run = &node->chunk.runs[i];
    dk_region *r = &regs[i];
    dk_extent *e = exts;
    exts = exts->next;
    r->owner = node;
    r->run = i;
    r->va = run->va;
    r->pa = run->pa;
    r->len = run->len;
    e->start = run->pa;
    e->end = run->pa + run->len;
    e->next = NULL;
    r->free = e;
    r->free_bytes = run->len;
    insert_region(r);
  }
  node->next = g_chunks;
  g_chunks = node;
  if (page >= (1ull << 30)) g_stats.bytes_pool_1g += page * n;
  else g_stats.bytes_pool_2m += page * n;
  g_stats.grows++;
  return true;
}

/* Add a chunk of n pages; false with the failure recorded. *added receives it. */
static bool grow(uint64_t page, uint32_t n, dk_chunk_node **added)
{
  if (held_bytes() + page * n > cap_bytes()) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
             "the pool holds %llu MiB; %u more %llu KiB pages would pass its cap of %ld MiB (DMAKIT_POOL_MAX_MB)",
             (unsigned long long)(held_bytes() >> 20), n, (unsigned long long)(page >> 10),
             dk__option(DK_OPTION_POOL_MAX_MB));
    return false;
  }
  long raised;
  if (!dk__huge_make_room(page, n, (long)(cap_bytes() / page), &raised)) {
    dk__huge_give_back(page, raised);
    return false;
  }
  dk_chunk_node *node = dk__calloc(1, sizeof *node);
  if (!node) {
    dk__huge_give_back(page, raised);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a chunk record");
    return false;
  }
  node->raised = raised;
  if (!dk__hchunk_create(&node->chunk, page, n)) {
    dk__huge_give_back(page, raised);
    dk__free(node);
    return false;
  }
  if (!add_chunk(node)) return false;
  *added = node;
  return true;
}

/* Remove a chunk whose regions are all free; gives its pages back to the kernel. */
static void drop_chunk(dk_chunk_node *node)
{
  dk_region *first = NULL;
  for (dk_region **pp = &g_regions; *pp;) {
    dk_region *r = *pp;
    if (r->owner == node) {
      *pp = r->next;
      while (r->free) { dk_extent *nx = r->free->next; dk__free(r->free); r->free = nx; }
      if (r->run == 0) first = r;
    } else {
      pp = &r->next;
    }
  }
  for (dk_chunk_node **pp = &g_chunks; *pp; pp = &(*pp)->next)
    if (*pp == node) { *pp = node->next; break; }
  uint64_t page = node->chunk.page, bytes = page * node->chunk.npages;
  if (page >= (1ull << 30)) g_stats.bytes_pool_1g -= bytes;
  else g_stats.bytes_pool_2m -= bytes;
  dk__hchunk_destroy(&node->chunk);
  dk__huge_give_back(page, node->raised);
  dk__free(first);          /* the regions of a chunk are one array */
  dk__free(node);
}

static bool chunk_unused(const dk_chunk_node *node)
{
  for (dk_region *r = g_regions; r; r = r->next)
    if (r->owner == node && r->free_bytes != r->len) return false;
  return true;
}

/* Give back every chunk of a finished search that holds nothing. */
static void drop_unused(dk_chunk_node **chunks, unsigned n)
{
  for (unsigned i = 0; i < n; i++)
    if (chunk_unused(chunks[i])) drop_chunk(chunks[i]);
}

static bool chunk_has_below(const dk_chunk_node *node, uint64_t high)
{
  return node->chunk.npages && node->chunk.pa[0] <= high;
}

static uint64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* ---- allocation ------------------------------------------------------------------------ */

static bool try_place(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  for (dk_region *r = g_regions; r; r = r->next) {
    if (r->free_bytes < len) continue;
    if (c->high && r->pa > c->high) continue;
    if (c->low && r->pa + r->len <= c->low) continue;
    uint64_t x;
    dk_extent *prev = NULL, *e = NULL;
    if (!region_place(r, c, len, align, &x, &prev, &e)) continue;
    if (!carve(r, prev, e, x, len)) {
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a free-list node");
      return false;
    }
    out->region = r;
    out->slab = NULL;
    out->pa = x;
    out->va = r->va + (x - r->pa);
    out->len = len;
    return true;
  }
  return false;
}

static uint64_t largest_run(void)
{
  uint64_t best = 0;
  for (dk_region *r = g_regions; r; r = r->next) if (r->len > best) best = r->len;
  return best;
}

static uint64_t lowest_held(void)
{
  uint64_t low = 0;
  for (dk_region *r = g_regions; r; r = r->next) low = r->pa;    /* descending order: last is lowest */
  return low;
}

/* A chunk of pages claimed from a reservation (src/phys/claim.c) for a request under its mask:
 * no growth, no search. Dropping it returns the pages to the reservation. 1 placed, 0 no
 * reservation applies, -1 one applies but cannot serve this request (failure recorded). */
static int grow_reserved(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  dk_chunk_node *node = dk__calloc(1, sizeof *node);
  if (!node) return 0;
  int r = dk__reserve_claim(c, len, align, &node->chunk);
  if (r <= 0 || !add_chunk(node)) {
    if (r <= 0) dk__free(node);
    return r < 0 ? -1 : 0;
  }
  if (try_place(c, len, align, out)) return 1;
  drop_chunk(node);
  return -1;
}

/* Grow until the request fits, within bounds; records why not. Called with the lock held. */
static bool grow_for(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  const uint64_t P2 = 1ull << 21, P1G = 1ull << 30;
  uint64_t sizes[2];
  int nsizes = dk__huge_sizes(sizes, 2);
  bool have_1g = nsizes == 2;
  uint64_t grow_min = (uint64_t)dk__option(DK_OPTION_POOL_GROW_MB) << 20;
  bool big = align > P2 || len > 64 * P2;
  uint64_t lowest_seen = UINT64_MAX;

  /* 0. a reservation under the limit: its pages first, no search (on -1 its reason stands) */
  if (c->high && grow_reserved(c, len, align, out) > 0) return true;

  /* 1. 2 MiB pages. When what the pool grew by does not meet the request, search on, holding
   *    what the kernel hands out (freed, the same pages would come back): below a mask in
   *    chunks of grow_min, or for a run long enough in growing chunks (a bigger chunk holds more
   *    physically adjacent pages). Bounded in memory and time; every chunk that found nothing
   *    useful is given back at once when the search ends. */
  if (!big) {
    uint64_t want = len + (align > P2 ? align : 0);
    uint64_t bytes = want > grow_min ? want : grow_min;
    uint64_t t0 = now_ms(), held_for_search = 0;
    dk_chunk_node *searched[256];
    unsigned nsearched = 0;
    bool lowmem = false;
    for (;;) {
      dk_chunk_node *node;
      uint32_t n = (uint32_t)((bytes + P2 - 1) / P2);
      if (!grow(P2, n, &node)) break;
      if (node->chunk.npages && node->chunk.pa[0] < lowest_seen) lowest_seen = node->chunk.pa[0];
      if (try_place(c, len, align, out)) {
        drop_unused(searched, nsearched);
        return true;
      }
      bool below = !c->high || chunk_has_below(node, c->high);
      if (!below && !lowmem) {
        g_stats.lowmem_searches++;
        lowmem = true;
      }
      searched[nsearched++] = node;
      held_for_search += node->chunk.page * node->chunk.npages;
      if (nsearched == 256 || held_for_search >= (uint64_t)dk__option(DK_OPTION_LOWMEM_SEARCH_MB) << 20 ||
          now_ms() - t0 >= (uint64_t)dk__option(DK_OPTION_LOWMEM_SEARCH_MS))
        break;
      bytes = !below ? grow_min : (bytes * 2 > 256 * P2 ? 256 * P2 : bytes * 2);
    }
    drop_unused(searched, nsearched);
  }
  /* 2. 1 GiB pages: large contiguity and alignment, and low memory the kernel still has */
  if (have_1g && len <= 64 * P1G && align <= P1G) {
    uint32_t n = (uint32_t)((len + P1G - 1) / P1G);
    dk_chunk_node *node;
    if (grow(P1G, n, &node)) {
      if (node->chunk.npages && node->chunk.pa[0] < lowest_seen) lowest_seen = node->chunk.pa[0];
      if (try_place(c, len, align, out)) return true;
      if (chunk_unused(node)) drop_chunk(node);
    }
  }
  /* say which constraint could not be met */
  if (c->high && (lowest_seen == UINT64_MAX || lowest_seen > c->high)) {
    uint64_t low = lowest_seen != UINT64_MAX ? lowest_seen : lowest_held();
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK,
             "no memory below mask 0x%llx: the lowest frame found was 0x%llx (searched up to %ld MiB for %ld ms)",
             (unsigned long long)c->high, (unsigned long long)low, dk__option(DK_OPTION_LOWMEM_SEARCH_MB),
             dk__option(DK_OPTION_LOWMEM_SEARCH_MS));
  } else if (len > largest_run()) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_CONTIGUITY,
             "no physically contiguous run of %llu bytes: the largest the pool could form is %llu bytes",
             (unsigned long long)len, (unsigned long long)largest_run());
  } else {
    dk__fail(kIOReturnNoMemory, align > P2 ? DK_CONSTRAINT_ALIGNMENT : DK_CONSTRAINT_RESOURCE,
             "the pool cannot place %llu bytes at alignment 0x%llx under these constraints",
             (unsigned long long)len, (unsigned long long)align);
  }
  return false;
}

/* ---- slabs ------------------------------------------------------------------------------ */

static int class_of(uint64_t len, uint64_t align)
{
  uint64_t need = len > align ? len : align;
  if (need > SLAB_MAX) return -1;
  uint64_t size = SLAB_MIN;
  int k = 0;
  while (size < need) { size <<= 1; k++; }
  return k;
}

static bool slab_fits(const dk_slab *s, const dk_constraints *c)
{
  if (c->high && s->mem.pa + SLAB_BYTES - 1 > c->high) return false;
  if (c->low && s->mem.pa < c->low) return false;
  return true;
}

static bool slab_take(dk_slab *s, dk_block *out)
{
  for (uint32_t w = 0; w < (s->nslots + 63) / 64; w++) {
    uint64_t free_bits = ~s->bits[w];
    if (w == s->nslots / 64 && s->nslots % 64) free_bits &= (1ull << (s->nslots % 64)) - 1;
    if (!free_bits) continue;
    uint32_t b = (uint32_t)__builtin_ctzll(free_bits);
    s->bits[w] |= 1ull << b;
    s->nfree--;
    uint64_t off = (uint64_t)(w * 64 + b) * s->cls;
    out->region = s->mem.region;
    out->slab = s;
    out->pa = s->mem.pa + off;
    out->va = s->mem.va + off;
    out->len = s->cls;
    return true;
  }
  return false;
}

static bool slab_alloc(const dk_constraints *c, int k, dk_block *out)
{
  for (dk_slab *s = g_slabs[k]; s; s = s->next)
    if (s->nfree && slab_fits(s, c) && slab_take(s, out)) return true;
  /* a new slab: 64 KiB aligned, so no slot crosses a boundary of 64 KiB or more */
  dk_slab *s = dk__calloc(1, sizeof *s);
  if (!s) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a slab record");
    return false;
  }
  dk_constraints sc = *c;
  sc.boundary = 0;
  if (!try_place(&sc, SLAB_BYTES, SLAB_BYTES, &s->mem) && !grow_for(&sc, SLAB_BYTES, SLAB_BYTES, &s->mem)) {
    dk__free(s);
    return false;
  }
  s->cls = SLAB_MIN << k;
  s->nslots = s->nfree = SLAB_BYTES / s->cls;
  s->next = g_slabs[k];
  g_slabs[k] = s;
  return slab_take(s, out);
}

/* ---- public to the library ----------------------------------------------------------- */

bool dk__pool_usable(void)
{
  return dk__caps()->pool_usable && dk__option(DK_OPTION_POOL);
}

bool dk__pool_alloc(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  if (align < 1) align = 1;
  if (c->boundary && len > c->boundary) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_BOUNDARY,
             "%llu contiguous bytes cannot fit between boundary lines 0x%llx apart",
             (unsigned long long)len, (unsigned long long)c->boundary);
    return false;
  }
  bool ok;
  int k = (c->boundary == 0 || c->boundary >= SLAB_BYTES) ? class_of(len, align) : -1;
  if (k >= 0) {
    magazine *m = &tl_mag[k];
    for (uint32_t i = m->n; i-- > 0;) {          /* newest first: warm in the cache */
      dk_block *b = &m->b[i];
      if ((c->high && b->pa + b->len - 1 > c->high) || b->pa < c->low) continue;
      *out = *b;
      *b = m->b[--m->n];
      dk__ctr_add(DK_CTR_REQUESTS_SLAB, 1);
      dk__ctr_add(DK_CTR_BYTES_POOL_USED, (int64_t)out->len);
      return true;
    }
  }
  pthread_mutex_lock(&g_lock);
  if (k >= 0) {
    ok = slab_alloc(c, k, out);
    if (ok) dk__ctr_add(DK_CTR_REQUESTS_SLAB, 1);
  } else {
    ok = try_place(c, len, align, out) || grow_for(c, len, align, out);
    if (ok) g_stats.requests_pool++;
  }
  if (ok) dk__ctr_add(DK_CTR_BYTES_POOL_USED, (int64_t)out->len);
  pthread_mutex_unlock(&g_lock);
  return ok;
}

static void slot_release_locked(dk_block *b)
{
  dk_slab *s = b->slab;
  uint32_t slot = (uint32_t)((b->pa - s->mem.pa) / s->cls);
  s->bits[slot / 64] &= ~(1ull << (slot % 64));
  s->nfree++;
}

static void magazines_flush(void *unused)
{
  (void)unused;
  pthread_mutex_lock(&g_lock);
  for (int k = 0; k < NCLASS; k++) {
    while (tl_mag[k].n) slot_release_locked(&tl_mag[k].b[--tl_mag[k].n]);
  }
  pthread_mutex_unlock(&g_lock);
}
/* At thread exit: a slot freed by a later destructor goes to the magazine again, which must
 * register again for the next round of destructors. */
static void magazines_thread_exit(void *unused)
{
  tl_mag_keyed = false;
  magazines_flush(unused);
}
static void mag_key_init(void) { pthread_key_create(&g_mag_key, magazines_thread_exit); }

void dk__pool_magazines_flush(void) { magazines_flush(NULL); }

/* Zero a range of DK_POOL_ZERO_STREAM or more (pool.h, dk__pool_zero) with non-temporal
 * stores, which skip reading every line before writing it (glibc 2.36's memset has no such
 * path); below that size memset keeps the lines in cache and is faster. Measured on this
 * machine kind with 2 MiB pages (medians of 21 interleaved trials): at 16 MiB memset 18-22 GB/s,
 * streaming 13-14; at 32 MiB memset 10, streaming 14; at 64 MiB-1 GiB memset 8-9, streaming
 * 19-21. Head and tail off a cache line by memset; the stores are fenced before the range is
 * free again. */
void dk__pool_zero_stream(uint8_t *p, size_t n)
{
#if defined(__x86_64__)
  size_t head = (size_t)(-(uintptr_t)p & 63);
  if (head > n) head = n;
  memset(p, 0, head);
  p += head;
  n -= head;
  size_t body = n & ~(size_t)63;
  const __m128i z = _mm_setzero_si128();
  for (size_t i = 0; i < body; i += 64) {
    _mm_stream_si128((__m128i *)(void *)(p + i), z);
    _mm_stream_si128((__m128i *)(void *)(p + i + 16), z);
    _mm_stream_si128((__m128i *)(void *)(p + i + 32), z);
    _mm_stream_si128((__m128i *)(void *)(p + i + 48), z);
  }
  _mm_sfence();
  memset(p + body, 0, n - body);
#else
  memset(p, 0, n);
#endif
}

void dk__pool_free(dk_block *b)
{
  if (!b->region) return;
  dk__pool_zero(b->va, (size_t)b->len);    /* every free byte is zero */
  dk__ctr_add(DK_CTR_BYTES_POOL_USED, -(int64_t)b->len);
  if (b->slab) {
    magazine *m = &tl_mag[class_of(b->len, 1)];
    if (m->n < MAG) {
      if (!tl_mag_keyed) {
        pthread_once(&g_mag_once, mag_key_init);
        pthread_setspecific(g_mag_key, (void *)1);   /* the thread's exit flushes it */
        tl_mag_keyed = true;
      }
      m->b[m->n++] = *b;
      memset(b, 0, sizeof *b);
      return;
    }
    pthread_mutex_lock(&g_lock);
    slot_release_locked(b);
  } else {
    pthread_mutex_lock(&g_lock);
    give(b->region, b->pa, b->len);
  }
  pthread_mutex_unlock(&g_lock);
  memset(b, 0, sizeof *b);
}

uint64_t dk__pool_page(const dk_block *b) { return b->region ? b->region->owner->chunk.page : 0; }

void *dk__pool_map(const dk_block *b, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                   bool overwrite, void **base, size_t *span)
{
  const dk_hchunk *c = &b->region->owner->chunk;
  return dk__hchunk_map(c, &c->runs[b->region->run], b->pa + off, len, prot, guard, fixed, overwrite, base, span);
}

void dk__pool_note_4k(uint64_t bytes, int delta)
{
  pthread_mutex_lock(&g_lock);
  if (delta > 0) { g_bytes_4k += bytes; g_requests_4k++; }
  else g_bytes_4k -= bytes;
  pthread_mutex_unlock(&g_lock);
}

void dk__pool_note_failure(dk_constraint_kind kind)
{
  pthread_mutex_lock(&g_lock);
  if ((unsigned)kind <= DK_CONSTRAINT_RANGE) g_stats.failures[kind]++;
  pthread_mutex_unlock(&g_lock);
}

int dk__pool_validate(bool deep, char *why, size_t cap)
{
  int rc = 0;
  pthread_mutex_lock(&g_lock);
  uint64_t free_total = 0, held = 0;
  for (dk_region *r = g_regions; r && !rc; r = r->next) {
    uint64_t sum = 0, last_end = 0;
    held += r->len;
    if (r->next && r->next->pa >= r->pa) { snprintf(why, cap, "regions out of order"); rc = -1; break; }
    for (dk_extent *e = r->free; e; e = e->next) {
      if (e->start >= e->end || e->start < r->pa || e->end > r->pa + r->len) {
        snprintf(why, cap, "free extent 0x%llx-0x%llx outside its region", (unsigned long long)e->start,
                 (unsigned long long)e->end);
        rc = -1;
        break;
      }
      if (last_end && e->start <= last_end) {
        snprintf(why, cap, "free extents unsorted or not coalesced at 0x%llx", (unsigned long long)e->start);
        rc = -1;
        break;
      }
      if (deep) {
        /* word by word, then the last bytes alone: an extent may start and end anywhere, and
         * the bytes past its end belong to a buffer in use */
        const uint8_t *p = r->va + (e->start - r->pa);
        uint64_t len = e->end - e->start, i = 0;
        for (uint64_t w; i + 8 <= len; i += 8) {
          memcpy(&w, p + i, 8);
          if (w) break;
        }
        for (; i < len && !p[i]; i++) {}
        if (i < len) {
          snprintf(why, cap, "free memory at 0x%llx is not zero", (unsigned long long)(e->start + i));
          rc = -1;
        }
      }
      last_end = e->end;
      sum += e->end - e->start;
    }
    if (!rc && sum != r->free_bytes) {
      snprintf(why, cap, "region free bytes %llu, extents add to %llu", (unsigned long long)r->free_bytes,
               (unsigned long long)sum);
      rc = -1;
    }
    free_total += sum;
  }
  if (!rc && held != g_stats.bytes_pool_1g + g_stats.bytes_pool_2m) {
    snprintf(why, cap, "regions hold %llu bytes, statistics say %llu", (unsigned long long)held,
             (unsigned long long)(g_stats.bytes_pool_1g + g_stats.bytes_pool_2m));
    rc = -1;
  }
  (void)free_total;
  pthread_mutex_unlock(&g_lock);
  return rc;
}

/* ---- public API ----------------------------------------------------------------------------- */

IOReturn dk_pool_get_stats(dk_pool_stats *st)
{
  dk__enter("dk_pool_get_stats");
  if (!st) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "stats is NULL");
  pthread_mutex_lock(&g_lock);
  *st = g_stats;
  st->requests_slab = (uint64_t)dk__ctr_sum(DK_CTR_REQUESTS_SLAB);
  st->bytes_pool_used = (uint64_t)dk__ctr_sum(DK_CTR_BYTES_POOL_USED);
  st->size = sizeof *st;
  st->version = 1;
  st->bytes_4k = g_bytes_4k;
  st->requests_4k = g_requests_4k;
  uint64_t free_bytes = 0, largest = 0, runs = 0, longest = 0;
  for (dk_region *r = g_regions; r; r = r->next) {
    runs++;
    if (r->len > longest) longest = r->len;
    free_bytes += r->free_bytes;
    for (dk_extent *e = r->free; e; e = e->next)
      if (e->end - e->start > largest) largest = e->end - e->start;
  }
  st->bytes_pool_free = free_bytes;
  st->runs = runs;
  st->largest_run = longest;
  st->largest_free = largest;
  st->fragmentation = free_bytes ? 1.0 - (double)largest / (double)free_bytes : 0.0;
  st->lowest_frame = lowest_held();
  pthread_mutex_unlock(&g_lock);
  st->hugepages_raised_2m = (uint64_t)dk__huge_raised(1ull << 21);
  st->hugepages_raised_1g = (uint64_t)dk__huge_raised(1ull << 30);
  return kIOReturnSuccess;
}

IOReturn dk_pool_get_runs(dk_pool_run *runs, size_t capacity, size_t *count)
{
  dk__enter("dk_pool_get_runs");
  if (!count || (capacity && !runs))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "count is NULL, or runs is NULL with a capacity");
  pthread_mutex_lock(&g_lock);
  size_t n = 0;
  for (dk_region *r = g_regions; r; r = r->next) n++;
  *count = n;
  /* regions are kept highest first: fill from the end so the answer is lowest first */
  size_t i = n;
  for (dk_region *r = g_regions; r; r = r->next) {
    i--;
    if (i < capacity)
      runs[i] = (dk_pool_run){ r->pa, r->len, r->owner->chunk.page, r->free_bytes };
  }
  pthread_mutex_unlock(&g_lock);
  return kIOReturnSuccess;
}

IOReturn dk_pool_reserve(uint64_t bytes, uint64_t page_size)
{
  dk__enter("dk_pool_reserve");
  if (!page_size) page_size = 1ull << 21;
  if ((page_size != (1ull << 21) && page_size != (1ull << 30)) || bytes == 0)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "page size must be 2 MiB or 1 GiB, bytes > 0");
  if (!dk__pool_usable())
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE,
                    "the hugepage pool needs root (frame numbers), hugetlb support and DMAKIT_POOL=1");
  uint64_t n = (bytes + page_size - 1) / page_size;
  if (n > UINT32_MAX) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_ARGUMENT, "too many pages");
  pthread_mutex_lock(&g_lock);
  dk_chunk_node *node;
  bool ok = grow(page_size, (uint32_t)n, &node);
  pthread_mutex_unlock(&g_lock);
  return ok ? kIOReturnSuccess : dk__failure_code();
}

static void (*_Atomic g_trim_hook)(void);
void dk__pool_set_trim_hook(void (*fn)(void)) { atomic_store(&g_trim_hook, fn); }

IOReturn dk_pool_trim(void)
{
  dk__enter("dk_pool_trim");
  void (*hook)(void) = atomic_load(&g_trim_hook);
  if (hook) hook();                       /* this thread's ready descriptors give their slots back */
  dk__config_bump();                      /* other threads' drop theirs at their next call */
  magazines_flush(NULL);                  /* this thread's cached slots; other threads' stay */
  pthread_mutex_lock(&g_lock);
  /* empty slabs go back to their regions first */
  for (int k = 0; k < NCLASS; k++) {
    for (dk_slab **pp = &g_slabs[k]; *pp;) {
      dk_slab *s = *pp;
      if (s->nfree == s->nslots) {
        *pp = s->next;
        give(s->mem.region, s->mem.pa, SLAB_BYTES);
        dk__free(s);
      } else {
        pp = &s->next;
      }
    }
  }
  for (dk_chunk_node *n = g_chunks, *next; n; n = next) {
    next = n->next;
    if (chunk_unused(n)) drop_chunk(n);
  }
  g_stats.trims++;
  pthread_mutex_unlock(&g_lock);
  return kIOReturnSuccess;
}
