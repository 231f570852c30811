/* src/mapper/iova.c: the IOVA allocator (see iova.h). Free extents in the range tree; the
 * nodes a free may need are kept from the allocations that could need them. */
#include "mapper/iova.h"
#include "prim/prim.h"

#include <errno.h>
#include <string.h>

static dk_xnode *node_take(dk_iova_space *s)
{
  dk_xnode *n = s->spare;
  if (n) {
    s->spare = n->r;
    s->nspare--;
    return n;
  }
  return dk__malloc(sizeof *n);
}

static void node_keep(dk_iova_space *s, dk_xnode *n)
{
  n->r = s->spare;
  s->spare = n;
  s->nspare++;
}

/* Keep only the nodes the allocations still live could need for their frees. */
static void trim(dk_iova_space *s)
{
  while (s->nspare && s->free.count + s->nspare > s->allocs + s->napertures + 1) dk__free(node_take(s));
}

/* Nodes in the tree and kept add up to at least `need`; on failure none is added. */
static bool nodes_for(dk_iova_space *s, size_t need)
{
  size_t added = 0;
  while (s->free.count + s->nspare < need) {
    dk_xnode *n = dk__malloc(sizeof *n);
    if (!n) {
      while (added--) dk__free(node_take(s));
      return false;
    }
    node_keep(s, n);
    added++;
  }
  return true;
}

bool dk__iova_init(dk_iova_space *s, const uint64_t (*ranges)[2], size_t nranges, uint64_t page)
{
  memset(s, 0, sizeof *s);
  dk_run *ap = dk__calloc(nranges ? nranges : 1, sizeof *ap);
  if (!ap) return false;
  size_t n = 0;
  for (size_t i = 0; i < nranges; i++) {
    uint64_t a = ranges[i][0], b = ranges[i][1];
    if (a > UINT64_MAX - page) continue;              /* no whole page starts in it */
    a = (a + page - 1) & ~(page - 1);
    if (a < page) a = page;                           /* IOVA 0 reads as "no address" */
    if (b > UINT64_MAX - page) b = UINT64_MAX - page; /* so no exclusive end wraps to 0 */
    if (b < a || b - a + 1 < page) continue;
    uint64_t len = ((b - a + 1) & ~(page - 1));
    /* insert sorted (apertures come sorted from the kernel; be safe) */
    size_t at = n;
    while (at > 0 && ap[at - 1].addr > a) at--;
    memmove(ap + at + 1, ap + at, (n - at) * sizeof *ap);
    ap[at] = (dk_run){ a, len };
    n++;
  }
  /* apertures that touch or overlap become one extent (freed ranges coalesce across them) */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w && ap[w - 1].addr + ap[w - 1].len >= ap[i].addr) {
      uint64_t end = ap[i].addr + ap[i].len, prev = ap[w - 1].addr + ap[w - 1].len;
      if (end > prev) ap[w - 1].len = end - ap[w - 1].addr;
      continue;
    }
    ap[w++] = ap[i];
  }
  s->apertures = ap;
  s->napertures = w;
  if (!nodes_for(s, w + 1)) {
    dk__iova_fini(s);
    return false;
  }
  for (size_t i = 0; i < w; i++) {
    dk_xnode *e = node_take(s);
    e->start = ap[i].addr;
    e->end = ap[i].addr + ap[i].len;
    e->owner = NULL;
    dk__xtree_insert(&s->free, e);
    s->total += ap[i].len;
  }
  return true;
}

static bool drop_node(dk_xnode *n, void *arg)
{
  (void)arg;
  dk__free(n);
  return true;
}

void dk__iova_fini(dk_iova_space *s)
{
  dk__xtree_walk(&s->free, drop_node, NULL);
  while (s->spare) dk__free(node_take(s));
  dk__free(s->apertures);
  memset(s, 0, sizeof *s);
}

/* [iova, iova+len) lies inside one aperture. */
static bool in_apertures(const dk_iova_space *s, uint64_t iova, uint64_t len)
{
  for (size_t i = 0; i < s->napertures; i++)
    if (iova >= s->apertures[i].addr && iova + len <= s->apertures[i].addr + s->apertures[i].len) return true;
  return false;
}

bool dk__iova_alloc(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary,
                    uint64_t *iova)
{
  return dk__iova_alloc_window(s, len, align, 0, limit, boundary, iova);
}

typedef struct place_arg { const dk_constraints *c; uint64_t len, align, x; } place_arg;

static bool place_in(const dk_xnode *n, void *arg)
{
  place_arg *a = arg;
  return dk__place(a->c, a->align, n->start, n->end, a->len, &a->x);
}

bool dk__iova_alloc_window(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t low, uint64_t limit,
                           uint64_t boundary, uint64_t *iova)
{
  if (!len) { errno = ENOSPC; return false; }
  /* nodes for every extent the allocations can ever make, this one included, so that frees
   * need no memory */
  if (!nodes_for(s, s->allocs + 1 + s->napertures + 1)) { errno = ENOMEM; return false; }
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.low = low;
  c.high = limit;
  c.boundary = boundary && len <= boundary ? boundary : 0;
  if (align < 1) align = 1;
  place_arg a = { &c, len, align, 0 };
  /* extents are disjoint, so the highest-starting one that can hold it holds the highest place */
  dk_xnode *e = dk__xtree_find_highest(&s->free, len, low, limit ? limit : UINT64_MAX, place_in, &a);
  if (!e) { errno = ENOSPC; return false; }
  /* carve [x, x+len) out of e: up to two pieces remain */
  uint64_t x = a.x, start = e->start, end = e->end;
  bool left = x > start, right = x + len < end;
  if (left && right) {
    dk_xnode *tail = node_take(s);
    tail->start = x + len;
    tail->end = end;
    tail->owner = NULL;
    e->end = x;
    dk__xtree_update(&s->free, e);
    dk__xtree_insert(&s->free, tail);
  } else if (left) {
    e->end = x;
    dk__xtree_update(&s->free, e);
  } else if (right) {
    e->start = x + len;
    dk__xtree_update(&s->free, e);
  } else {
    dk__xtree_remove(&s->free, e);
    node_keep(s, e);
  }
  s->used += len;
  s->allocs++;
  *iova = x;
  return true;
}

bool dk__iova_free(dk_iova_space *s, uint64_t iova, uint64_t len)
{
  if (!len || iova + len < iova || !in_apertures(s, iova, len)) return false;
  dk_xnode *prev = dk__xtree_le(&s->free, iova), *next = dk__xtree_ge(&s->free, iova);
  if (prev && prev->end > iova) return false;                      /* overlaps free space */
  if (next && next->start < iova + len) return false;
  bool join_left = prev && prev->end == iova;
  bool join_right = next && next->start == iova + len;
  if (join_left && join_right) {
    uint64_t e = next->end;
    dk__xtree_remove(&s->free, next);
    node_keep(s, next);
    prev->end = e;
    dk__xtree_update(&s->free, prev);
  } else if (join_left) {
    prev->end += len;
    dk__xtree_update(&s->free, prev);
  } else if (join_right) {
    next->start = iova;
    dk__xtree_update(&s->free, next);
  } else {
    dk_xnode *n = node_take(s);       /* kept at allocation for whole ranges */
    if (!n) return false;
    n->start = iova;
    n->end = iova + len;
    n->owner = NULL;
    dk__xtree_insert(&s->free, n);
  }
  s->used -= len;
  if (s->allocs) s->allocs--;
  trim(s);
  return true;
}

void dk__iova_retire(dk_iova_space *s, uint64_t iova, uint64_t len)
{
  (void)iova;
  (void)len;
  if (s->allocs) s->allocs--;          /* it stays used: counted in `used`, never in a free extent */
  trim(s);
}

typedef struct ext_arg { dk_run *out; size_t cap, n; } ext_arg;

static bool list_extent(dk_xnode *n, void *arg)
{
  ext_arg *a = arg;
  if (a->n < a->cap) a->out[a->n] = (dk_run){ n->start, n->end - n->start };
  a->n++;
  return true;
}

size_t dk__iova_extents(const dk_iova_space *s, dk_run *out, size_t cap)
{
  ext_arg a = { out, cap, 0 };
  dk__xtree_walk(&s->free, list_extent, &a);
  return a.n;
}
