/* src/mapper/iova.c: the IOVA allocator (see iova.h). Free extents in a sorted array: the
 * number of extents stays small (buffers are freed into their neighbours), so linear scans
 * beat a tree at these sizes and the code stays obviously right. */
#include "mapper/iova.h"
#include "prim/prim.h"

#include <errno.h>
#include <string.h>

static bool reserve(dk_iova_space *s, size_t need)
{
  if (need <= s->cap) return true;
  size_t cap = s->cap ? s->cap * 2 : 16;
  while (cap < need) cap *= 2;
  dk_run *a = dk__calloc(cap, sizeof *a);
  if (!a) return false;
  if (s->n) memcpy(a, s->free, s->n * sizeof *a);
  dk__free(s->free);
  s->free = a;
  s->cap = cap;
  return true;
}

bool dk__iova_init(dk_iova_space *s, const uint64_t (*ranges)[2], size_t nranges, uint64_t page)
{
  memset(s, 0, sizeof *s);
  if (!reserve(s, nranges ? nranges : 1)) return false;
  for (size_t i = 0; i < nranges; i++) {
    uint64_t a = ranges[i][0], b = ranges[i][1];
    if (a > UINT64_MAX - page) continue;              /* no whole page starts in it */
    a = (a + page - 1) & ~(page - 1);
    if (a < page) a = page;                           /* IOVA 0 reads as "no address" */
    if (b > UINT64_MAX - page) b = UINT64_MAX - page; /* so no exclusive end wraps to 0 */
    if (b < a || b - a + 1 < page) continue;
    uint64_t len = ((b - a + 1) & ~(page - 1));
    /* insert sorted (apertures come sorted from the kernel; be safe) */
    size_t at = s->n;
    while (at > 0 && s->free[at - 1].addr > a) at--;
    memmove(s->free + at + 1, s->free + at, (s->n - at) * sizeof *s->free);
    s->free[at] = (dk_run){ a, len };
    s->n++;
    s->total += len;
  }
  /* apertures that touch or overlap become one extent (freed ranges coalesce across them) */
  size_t w = 0;
  for (size_t i = 0; i < s->n; i++) {
    if (w && s->free[w - 1].addr + s->free[w - 1].len >= s->free[i].addr) {
      uint64_t end = s->free[i].addr + s->free[i].len, prev = s->free[w - 1].addr + s->free[w - 1].len;
      if (end > prev) {
        s->total -= prev - s->free[i].addr;          /* the overlap was counted twice */
        s->free[w - 1].len = end - s->free[w - 1].addr;
      } else {
        s->total -= s->free[i].len;
      }
      continue;
    }
    s->free[w++] = s->free[i];
  }
  s->n = w;
  s->apertures = dk__calloc(s->n ? s->n : 1, sizeof *s->apertures);
  if (!s->apertures) {
    dk__free(s->free);
    memset(s, 0, sizeof *s);
    return false;
  }
  if (s->n) memcpy(s->apertures, s->free, s->n * sizeof *s->free);
  s->napertures = s->n;
  return true;
}

/* [iova, iova+len) lies inside one aperture. */
static bool in_apertures(const dk_iova_space *s, uint64_t iova, uint64_t len)
{
  for (size_t i = 0; i < s->napertures; i++)
    if (iova >= s->apertures[i].addr && iova + len <= s->apertures[i].addr + s->apertures[i].len) return true;
  return false;
}

void dk__iova_fini(dk_iova_space *s)
{
  dk__free(s->free);
  dk__free(s->apertures);
  memset(s, 0, sizeof *s);
}

bool dk__iova_alloc(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary,
                    uint64_t *iova)
{
  return dk__iova_alloc_window(s, len, align, 0, limit, boundary, iova);
}

bool dk__iova_alloc_window(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t low, uint64_t limit,
                           uint64_t boundary, uint64_t *iova)
{
  if (!len) { errno = ENOSPC; return false; }
  /* room for every extent the allocations can ever make, this one included, so that frees
   * need no memory */
  if (!reserve(s, s->allocs + 1 + s->napertures + 1)) { errno = ENOMEM; return false; }
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.low = low;
  c.high = limit;
  c.boundary = boundary && len <= boundary ? boundary : 0;
  if (align < 1) align = 1;
  for (size_t i = s->n; i-- > 0;) {                   /* highest extent first */
    dk_run *r = &s->free[i];
    uint64_t x;
    if (!dk__place(&c, align, r->addr, r->addr + r->len, len, &x)) continue;
    /* carve [x, x+len) out of r: up to two pieces remain */
    uint64_t a = r->addr, end = r->addr + r->len;
    bool left = x > a, right = x + len < end;
    if (left && right) {
      /* reserved above for whole-range frees; a caller that freed parts of ranges may need more */
      if (!reserve(s, s->n + 1)) { errno = ENOMEM; return false; }
      r = &s->free[i];
      memmove(s->free + i + 2, s->free + i + 1, (s->n - i - 1) * sizeof *s->free);
      s->free[i] = (dk_run){ a, x - a };
      s->free[i + 1] = (dk_run){ x + len, end - x - len };
      s->n++;
    } else if (left) {
      r->len = x - a;
    } else if (right) {
      r->addr = x + len;
      r->len = end - x - len;
    } else {
      memmove(s->free + i, s->free + i + 1, (s->n - i - 1) * sizeof *s->free);
      s->n--;
    }
    s->used += len;
    s->allocs++;
    *iova = x;
    return true;
  }
  errno = ENOSPC;
  return false;
}

bool dk__iova_free(dk_iova_space *s, uint64_t iova, uint64_t len)
{
  if (!len || iova + len < iova || !in_apertures(s, iova, len)) return false;
  /* the first extent at or after iova; the range must not overlap free space */
  size_t i = 0;
  while (i < s->n && s->free[i].addr + s->free[i].len <= iova) i++;
  if (i < s->n && s->free[i].addr < iova + len) return false;            /* overlaps free space */
  bool join_left = i > 0 && s->free[i - 1].addr + s->free[i - 1].len == iova;
  bool join_right = i < s->n && s->free[i].addr == iova + len;
  if (join_left && join_right) {
    s->free[i - 1].len += len + s->free[i].len;
    memmove(s->free + i, s->free + i + 1, (s->n - i - 1) * sizeof *s->free);
    s->n--;
  } else if (join_left) {
    s->free[i - 1].len += len;
  } else if (join_right) {
    s->free[i].addr = iova;
    s->free[i].len += len;
  } else {
    if (!reserve(s, s->n + 1)) return false;   /* reserved at allocation for whole ranges */
    memmove(s->free + i + 1, s->free + i, (s->n - i) * sizeof *s->free);
    s->free[i] = (dk_run){ iova, len };
    s->n++;
  }
  s->used -= len;
  if (s->allocs) s->allocs--;
  return true;
}
