/* src/alloc/pool.c: the hugepage pool's heap (see pool.h): regions and their free extents,
 * large blocks, growth and the low-memory search, trim, statistics. Small buffers go to
 * slab.c, which takes its slabs from here. */
#include "alloc/pool_impl.h"
#include "base/counters.h"
#include "base/fork.h"
#include "phys/budget.h"
#include "phys/reserve.h"
#include "prim/prim.h"

#include <errno.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <string.h>
#include <time.h>

struct dk_chunk_node {
  dk_hchunk             chunk;
  uint32_t              epoch;           /* dk__fork_epoch() when it was added */
  long                  raised;          /* kernel limit this chunk's growth raised, in pages */
  dk_region            *regs;            /* one per run, an array */
  struct dk_chunk_node *next;
};

pthread_mutex_t dk__pool_lock = PTHREAD_MUTEX_INITIALIZER;
#define g_lock dk__pool_lock
static dk_region     *g_regions;         /* by descending pa */
static dk_chunk_node *g_chunks;
static dk_xtree       g_free;            /* every free extent, by physical address */
static dk_pool_stats  g_stats;
static uint64_t       g_bytes_4k, g_requests_4k;

/* ---- extent nodes -------------------------------------------------------------------- *
 * Taken from the C heap when a carve needs them (before it changes anything) and given back
 * when a free joins extents; a large block keeps the one its own free will need. No cache:
 * what the heap holds for the pool is exactly its extents and its blocks' spares. */

static dk_xnode *node_get(void) { return dk__malloc(sizeof(dk_xnode)); }
static void node_put(dk_xnode *n) { dk__free(n); }

/* ---- extents ----------------------------------------------------------------------------- */

typedef struct place_arg {
  const dk_constraints *c;
  uint64_t len, align, x;
} place_arg;

static bool place_in(const dk_xnode *n, void *arg)
{
  place_arg *a = arg;
  return dk__place(a->c, a->align, n->start, n->end, a->len, &a->x);
}

/* The highest place for the request among the free extents: extents are disjoint, so the
 * highest-starting one that can hold it holds the highest place. Subtrees with no extent long
 * enough are skipped: O(log n) unless alignment or a boundary turns many long-enough extents
 * away. */
static dk_xnode *find_place(const dk_constraints *c, uint64_t len, uint64_t align, uint64_t *x)
{
  place_arg a = { c, len, align, 0 };
  dk_xnode *n = dk__xtree_find_highest(&g_free, len, c->low, c->high ? c->high : UINT64_MAX, place_in, &a);
  if (n) *x = a.x;
  return n;
}

/* Carve [x, x+len) out of extent n; the block gets a node for its free. The nodes it needs
 * are taken first: false (nothing changed, failure recorded) when there is no memory. */
static bool carve(dk_xnode *n, uint64_t x, uint64_t len, dk_block *out)
{
  dk_region *r = n->owner;
  uint64_t end = x + len;
  bool split = x > n->start && end < n->end, whole = x == n->start && end == n->end;
  dk_xnode *tail = split ? node_get() : NULL;
  dk_xnode *spare = whole ? n : node_get();
  if ((split && !tail) || !spare) {           /* (a whole extent's spare is its own node) */
    node_put(tail);
    node_put(spare);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a free-list node");
    return false;
  }
  if (split) {                                   /* split in two */
    tail->start = end;
    tail->end = n->end;
    tail->owner = r;
    n->end = x;
    dk__xtree_update(&g_free, n);
    dk__xtree_insert(&g_free, tail);
  } else if (x > n->start) {
    n->end = x;
    dk__xtree_update(&g_free, n);
  } else if (end < n->end) {
    n->start = end;
    dk__xtree_update(&g_free, n);
  } else {                                       /* the whole extent: its node is the spare */
    dk__xtree_remove(&g_free, n);
  }
  r->free_bytes -= len;
  out->region = r;
  out->slab = NULL;
  out->spare = spare;
  out->pa = x;
  out->va = r->va + (x - r->pa);
  out->len = len;
  return true;
}

/* Return [pa, pa+len) to its region's free extents, coalescing; the memory is already zero.
 * Uses only the block's own node: never allocates. */
static void give(dk_block *b)
{
  dk_region *r = b->region;
  uint64_t pa = b->pa, len = b->len;
  dk_xnode *spare = b->spare;
  dk_xnode *prev = dk__xtree_le(&g_free, pa);
  dk_xnode *next = dk__xtree_ge(&g_free, pa + len);
  if (prev && (prev->owner != r || prev->end != pa)) prev = NULL;
  if (next && (next->owner != r || next->start != pa + len)) next = NULL;
  if (prev && next) {
    uint64_t e = next->end;
    dk__xtree_remove(&g_free, next);
    prev->end = e;
    dk__xtree_update(&g_free, prev);
    node_put(next);
    node_put(spare);
  } else if (prev) {
    prev->end += len;
    dk__xtree_update(&g_free, prev);
    node_put(spare);
  } else if (next) {
    next->start = pa;
    dk__xtree_update(&g_free, next);
    node_put(spare);
  } else {
    spare->start = pa;
    spare->end = pa + len;
    spare->owner = r;
    dk__xtree_insert(&g_free, spare);
  }
  r->free_bytes += len;
  b->spare = NULL;
}

void dk__pool_give_locked(dk_block *b) { give(b); }

/* 1 placed, 0 nowhere to place it, -1 no memory to carve it (failure recorded). */
static int try_place(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  uint64_t x;
  dk_xnode *n = find_place(c, len, align, &x);
  if (!n) return 0;
  return carve(n, x, len, out) ? 1 : -1;
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

/* Put a new chunk's runs into the pool; false (chunk destroyed, the limits it raised given back,
 * node freed) when there is no memory for its records. */
static bool add_chunk(dk_chunk_node *node)
{
  uint64_t page = node->chunk.page, n = node->chunk.npages;
  uint32_t nruns = node->chunk.nruns;
  node->epoch = dk__fork_epoch();
  node->regs = dk__calloc(nruns, sizeof *node->regs);
  dk_xnode **exts = node->regs ? dk__calloc(nruns, sizeof *exts) : NULL;
  for (uint32_t i = 0; exts && i < nruns; i++)
    if (!(exts[i] = node_get())) {
      while (i-- > 0) node_put(exts[i]);
      dk__free(exts);
      exts = NULL;
    }
  if (!exts) {
    dk__free(node->regs);
    dk__hchunk_destroy(&node->chunk);
    dk__huge_give_back(page, node->raised);
    dk__free(node);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for region records");
    return false;
  }
  for (uint32_t i = 0; i < nruns; i++) {
    const dk_hrun *run = &node->chunk.runs[i];
    dk_region *r = &node->regs[i];
    r->owner = node;
    r->run = i;
    r->va = run->va;
    r->pa = run->pa;
    r->len = run->len;
    r->free_bytes = run->len;
    exts[i]->start = run->pa;
    exts[i]->end = run->pa + run->len;
    exts[i]->owner = r;
    dk__xtree_insert(&g_free, exts[i]);
    insert_region(r);
  }
  dk__free(exts);
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
  char purpose[96], sz[24];
  snprintf(purpose, sizeof purpose, "growing the hugepage pool by %u pages of %s", n,
           dk__budget_size(page, sz, sizeof sz));
  if (!dk__budget_huge_check(page, n, purpose)) return false;   /* before the kernel is asked */
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

/* Grow by `want` pages of `page` bytes, or by fewer when the machine is short of memory
 * (src/phys/budget.c) or cannot reserve that many at once, halving down to `need`. false with
 * the failure recorded; *short_of_memory when the budget allowed not even `need`. */
static bool grow_some(uint64_t page, uint32_t need, uint32_t want, dk_chunk_node **added, bool *short_of_memory)
{
  uint32_t n = dk__budget_huge_fit(page, need, want);
  *short_of_memory = n == 0;
  if (n == 0) n = need;            /* grow()'s own check refuses it, with the figures */
  while (!grow(page, n, added)) {
    if (n <= need) return false;
    n = n / 2 > need ? n / 2 : need;
    dk__fail_forget();             /* the smaller try's reason is the one to report */
  }
  *short_of_memory = false;        /* memory came back between the two reads */
  return true;
}

static bool chunk_unused(const dk_chunk_node *node)
{
  for (uint32_t i = 0; i < node->chunk.nruns; i++)
    if (node->regs[i].free_bytes != node->regs[i].len) return false;
  return true;
}

/* Remove a chunk whose regions are all free; gives its pages back to the kernel. */
static void drop_chunk(dk_chunk_node *node)
{
  for (uint32_t i = 0; i < node->chunk.nruns; i++) {
    dk_region *r = &node->regs[i];
    dk_xnode *e = dk__xtree_le(&g_free, r->pa);     /* a free region is one extent */
    if (e && e->owner == r) {
      dk__xtree_remove(&g_free, e);
      node_put(e);
    }
    for (dk_region **pp = &g_regions; *pp; pp = &(*pp)->next)
      if (*pp == r) { *pp = r->next; break; }
  }
  for (dk_chunk_node **pp = &g_chunks; *pp; pp = &(*pp)->next)
    if (*pp == node) { *pp = node->next; break; }
  uint64_t page = node->chunk.page, bytes = page * node->chunk.npages;
  if (page >= (1ull << 30)) g_stats.bytes_pool_1g -= bytes;
  else g_stats.bytes_pool_2m -= bytes;
  dk__hchunk_destroy(&node->chunk);
  dk__huge_give_back(page, node->raised);
  dk__free(node->regs);
  dk__free(node);
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
  if (try_place(c, len, align, out) > 0) return 1;
  drop_chunk(node);
  return -1;
}

/* Grow until the request fits, within bounds; records why not. Called with the lock held and
 * two nodes ready. */
static bool grow_for(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  const uint64_t P2 = 1ull << 21, P1G = 1ull << 30;
  uint64_t sizes[2];
  int nsizes = dk__huge_sizes(sizes, 2);
  bool have_1g = nsizes == 2;
  uint64_t grow_min = (uint64_t)dk__option(DK_OPTION_POOL_GROW_MB) << 20;
  bool big = align > P2 || len > 64 * P2;
  uint64_t lowest_seen = UINT64_MAX;
  bool short_of_memory = false;      /* the memory budget ended the growth */

  /* 0. a reservation under the limit: its pages first, no search. When one applies but cannot
   *    serve (its pages are held), the pool grows as it would without it, and if that fails
   *    too, the reservation's reason is the one reported (it says how to grow it). */
  dk_failure reserved = { .code = kIOReturnSuccess };
  if (c->high) {
    int r = grow_reserved(c, len, align, out);
    if (r > 0) return true;
    if (r < 0) reserved = *dk_last_failure();
    dk__fail_forget();
  }

  /* 1. 2 MiB pages. When what the pool grew by does not meet the request, search on, holding
   *    what the kernel hands out (freed, the same pages would come back): below a mask in
   *    chunks of grow_min, or for a run long enough in growing chunks (a bigger chunk holds more
   *    physically adjacent pages). Bounded in memory and time; every chunk that found nothing
   *    useful is given back at once when the search ends. */
  if (!big) {
    uint64_t want = len;                 /* (not big: the alignment is a 2 MiB page's at most) */
    uint64_t bytes = want > grow_min ? want : grow_min;
    uint64_t t0 = now_ms(), held_for_search = 0;
    dk_chunk_node *searched[256];
    unsigned nsearched = 0;
    bool lowmem = false;
    uint32_t need = (uint32_t)((want + P2 - 1) / P2);
    for (;;) {
      dk_chunk_node *node;
      uint32_t n = (uint32_t)((bytes + P2 - 1) / P2);
      if (!grow_some(P2, need, n, &node, &short_of_memory)) break;
      if (node->chunk.npages && node->chunk.pa[0] < lowest_seen) lowest_seen = node->chunk.pa[0];
      int placed = try_place(c, len, align, out);
      if (placed > 0) {
        drop_unused(searched, nsearched);
        return true;
      }
      if (placed < 0) {                    /* no memory to carve: what this growth took goes back */
        searched[nsearched++] = node;
        drop_unused(searched, nsearched);
        return false;
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
      int placed = try_place(c, len, align, out);
      if (placed > 0) return true;
      if (chunk_unused(node)) drop_chunk(node);
      if (placed < 0) return false;
    }
  }
  /* say which constraint could not be met */
  if (c->high && (lowest_seen == UINT64_MAX || lowest_seen > c->high)) {
    uint64_t low = lowest_seen != UINT64_MAX ? lowest_seen : lowest_held();
    char bound[200];
    if (short_of_memory) dk__budget_describe_now(DK_BUDGET_HUGETLB, bound, sizeof bound);
    else snprintf(bound, sizeof bound, "searched up to %ld MiB for %ld ms", dk__option(DK_OPTION_LOWMEM_SEARCH_MB),
                  dk__option(DK_OPTION_LOWMEM_SEARCH_MS));
    if (short_of_memory) dk__fail_forget();    /* the mask is what failed; the budget ended the search */
    char found[64] = "nothing was found";
    if (low) snprintf(found, sizeof found, "the lowest frame found was 0x%llx", (unsigned long long)low);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK, "no memory below mask 0x%llx: %s (%s%s)", (unsigned long long)c->high,
             found, short_of_memory ? "the search stopped at the memory budget: " : "", bound);
  } else if (len > largest_run() && !c->contiguous) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
             "the pool could not form a run of %llu bytes (its buffers are single runs; the longest is %llu bytes)",
             (unsigned long long)len, (unsigned long long)largest_run());
  } else if (len > largest_run()) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_CONTIGUITY,
             "no physically contiguous run of %llu bytes: the largest the pool could form is %llu bytes",
             (unsigned long long)len, (unsigned long long)largest_run());
  } else {
    dk__fail(kIOReturnNoMemory, align > P2 ? DK_CONSTRAINT_ALIGNMENT : DK_CONSTRAINT_RESOURCE,
             "the pool cannot place %llu bytes at alignment 0x%llx under these constraints",
             (unsigned long long)len, (unsigned long long)align);
  }
  if (reserved.code != kIOReturnSuccess) {
    dk__fail_forget();
    dk__fail(reserved.code, reserved.constraint, "%s", reserved.text);
  }
  return false;
}

bool dk__pool_carve_locked(const dk_constraints *c, uint64_t len, uint64_t align, dk_block *out)
{
  int placed = try_place(c, len, align, out);
  return placed ? placed > 0 : grow_for(c, len, align, out);
}

/* ---- fork ------------------------------------------------------------------------------ */

/* In a forked child: the parent's chunks are mapped here too (MAP_SHARED), but they are the
 * parent's: the child forgets them (its copies of the records stay, for the buffers it
 * inherited) and grows a pool of its own. */
static void pool_in_child(void)
{
  pthread_mutex_init(&g_lock, NULL);
  g_regions = NULL;
  g_chunks = NULL;
  g_free = (dk_xtree){ 0 };
  memset(&g_stats, 0, sizeof g_stats);
  g_bytes_4k = g_requests_4k = 0;
  dk__slab_in_child();
}

bool dk__pool_inherited(const dk_block *b)
{
  return b->region && b->region->owner->epoch != dk__fork_epoch();
}

/* ---- public to the library ----------------------------------------------------------- */

uint64_t dk__pool_free_bytes(void)
{
  uint64_t n = 0;
  pthread_mutex_lock(&g_lock);
  for (dk_region *r = g_regions; r; r = r->next) n += r->free_bytes;
  pthread_mutex_unlock(&g_lock);
  return n;
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;
static void register_fork(void) { dk__fork_register(DK_FORK_POOL, pool_in_child); }

bool dk__pool_usable(void)
{
  pthread_once(&g_fork_once, register_fork);
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
  int k = (c->boundary == 0 || c->boundary >= DK_SLAB_BYTES) ? dk__slab_class(len, align) : -1;
  if (k >= 0) {
    if (!dk__slab_alloc(c, k, out)) return false;
    dk_tctr *t = dk__ctr_self();
    dk__ctr_bump(t, DK_CTR_REQUESTS_SLAB, 1);
    dk__ctr_bump(t, DK_CTR_BYTES_POOL_USED, (int64_t)out->len);
    return true;
  }
  pthread_mutex_lock(&g_lock);
  bool ok = dk__pool_carve_locked(c, len, align, out);
  if (ok) g_stats.requests_pool++;
  pthread_mutex_unlock(&g_lock);
  if (ok) dk__ctr_add(DK_CTR_BYTES_POOL_USED, (int64_t)out->len);
  return ok;
}

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
  if (__builtin_expect(b->slab ? dk__slab_inherited(b->slab) : dk__pool_inherited(b), 0)) {
    memset(b, 0, sizeof *b);               /* a parent's memory: nothing to give back here */
    return;
  }
  dk__pool_zero(b->va, (size_t)b->len);    /* every free byte is zero */
  dk__ctr_add(DK_CTR_BYTES_POOL_USED, -(int64_t)b->len);
  if (b->slab) {
    dk__slab_free(b);
  } else {
    pthread_mutex_lock(&g_lock);
    give(b);
    pthread_mutex_unlock(&g_lock);
  }
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

/* ---- validation --------------------------------------------------------------------------- */

typedef struct validate_arg {
  bool deep;
  char *why;
  size_t cap;
  int rc;
  const dk_xnode *last;
} validate_arg;

/* Every free byte of [start, end) is zero: word by word, then the last bytes alone (the
 * bytes past its end belong to a buffer in use). */
static uint64_t first_nonzero(const uint8_t *p, uint64_t len)
{
  uint64_t i = 0;
  for (uint64_t w; i + 8 <= len; i += 8) {
    memcpy(&w, p + i, 8);
    if (w) break;
  }
  for (; i < len && !p[i]; i++) {}
  return i;
}

static bool validate_extent(dk_xnode *e, void *arg)
{
  validate_arg *a = arg;
  const dk_region *r = e->owner;
  if (!r || e->start >= e->end || e->start < r->pa || e->end > r->pa + r->len) {
    snprintf(a->why, a->cap, "free extent 0x%llx-0x%llx outside its region", (unsigned long long)e->start,
             (unsigned long long)e->end);
    a->rc = -1;
    return false;
  }
  if (a->last && (a->last->end > e->start || (a->last->end == e->start && a->last->owner == r))) {
    snprintf(a->why, a->cap, "free extents overlap or are not coalesced at 0x%llx", (unsigned long long)e->start);
    a->rc = -1;
    return false;
  }
  if (a->deep) {
    uint64_t len = e->end - e->start, i = first_nonzero(r->va + (e->start - r->pa), len);
    if (i < len) {
      snprintf(a->why, a->cap, "free memory at 0x%llx is not zero", (unsigned long long)(e->start + i));
      a->rc = -1;
      return false;
    }
  }
  a->last = e;
  return true;
}

typedef struct sum_arg { const dk_region *r; uint64_t sum; } sum_arg;
static bool sum_region(dk_xnode *e, void *arg)
{
  sum_arg *a = arg;
  if (e->owner == a->r) a->sum += e->end - e->start;
  return true;
}

int dk__pool_validate(bool deep, char *why, size_t cap)
{
  pthread_mutex_lock(&g_lock);
  validate_arg a = { deep, why, cap, 0, NULL };
  if (dk__xtree_check(&g_free) < 0) {
    snprintf(why, cap, "the free-extent tree is malformed");
    a.rc = -1;
  }
  if (!a.rc) dk__xtree_walk(&g_free, validate_extent, &a);
  uint64_t held = 0;
  for (dk_region *r = g_regions; r && !a.rc; r = r->next) {
    held += r->len;
    if (r->next && r->next->pa >= r->pa) {
      snprintf(why, cap, "regions out of order");
      a.rc = -1;
      break;
    }
    if (g_free.count < 4096) {       /* per-region sums walk the tree once each */
      sum_arg s = { r, 0 };
      dk__xtree_walk(&g_free, sum_region, &s);
      if (s.sum != r->free_bytes) {
        snprintf(why, cap, "region free bytes %llu, extents add to %llu", (unsigned long long)r->free_bytes,
                 (unsigned long long)s.sum);
        a.rc = -1;
      }
    }
  }
  if (!a.rc && held != g_stats.bytes_pool_1g + g_stats.bytes_pool_2m) {
    snprintf(why, cap, "regions hold %llu bytes, statistics say %llu", (unsigned long long)held,
             (unsigned long long)(g_stats.bytes_pool_1g + g_stats.bytes_pool_2m));
    a.rc = -1;
  }
  if (!a.rc) a.rc = dk__slab_validate_locked(why, cap);
  pthread_mutex_unlock(&g_lock);
  return a.rc;
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
  uint64_t free_bytes = 0, runs = 0, longest = 0;
  for (dk_region *r = g_regions; r; r = r->next) {
    runs++;
    if (r->len > longest) longest = r->len;
    free_bytes += r->free_bytes;
  }
  uint64_t largest = g_free.root ? g_free.root->max_len : 0;
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
  uint64_t n = bytes / page_size + (bytes % page_size != 0);   /* rounded up without wrapping */
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
  dk__pool_thread_flush();                /* this thread's empty slabs; other threads' stay theirs */
  pthread_mutex_lock(&g_lock);
  dk__slab_trim_locked();                 /* empty slabs of exited threads */
  for (dk_chunk_node *n = g_chunks, *next; n; n = next) {
    next = n->next;
    if (chunk_unused(n)) drop_chunk(n);
  }
  g_stats.trims++;
  pthread_mutex_unlock(&g_lock);
  return kIOReturnSuccess;
}
