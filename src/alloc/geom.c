/* src/alloc/geom.c: the constraint predicate and segment arithmetic (see geom.h). */
#include "alloc/geom.h"

#include <stdio.h>

bool dk__constraints_valid(const dk_constraints *c, char *why, size_t cap)
{
  if (c->alignment > 1 && !dk__is_pow2(c->alignment)) {
    snprintf(why, cap, "alignment 0x%llx is not a power of two", (unsigned long long)c->alignment);
    return false;
  }
  if (c->boundary && !dk__is_pow2(c->boundary)) {
    snprintf(why, cap, "boundary 0x%llx is not a power of two", (unsigned long long)c->boundary);
    return false;
  }
  if (c->high && c->low > c->high) {
    snprintf(why, cap, "window low 0x%llx is above high 0x%llx", (unsigned long long)c->low,
             (unsigned long long)c->high);
    return false;
  }
  return true;
}

/* Segments a piece of `len` bytes makes at the maximum segment size. */
static uint64_t pieces(const dk_constraints *c, uint64_t len)
{
  if (!len) return 0;
  return c->max_segment_size ? len / c->max_segment_size + (len % c->max_segment_size != 0) : 1;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }
static uint64_t sat_mul(uint64_t a, uint64_t b) { return b && a > UINT64_MAX / b ? UINT64_MAX : a * b; }

/* Segments one run makes: split at boundary lines, then each piece at max_segment_size.
 * Arithmetic, not a walk: a run may make billions of segments. Saturates at UINT64_MAX. */
static uint64_t run_segments(const dk_constraints *c, uint64_t addr, uint64_t len)
{
  if (!c->boundary) return pieces(c, len);
  uint64_t to_line = c->boundary - (addr & (c->boundary - 1));
  uint64_t first = len < to_line ? len : to_line;
  uint64_t rest = len - first;
  uint64_t full = rest / c->boundary, last = rest % c->boundary;
  return sat_add(sat_add(pieces(c, first), sat_mul(full, pieces(c, c->boundary))), pieces(c, last));
}

uint64_t dk__segments_count(const dk_constraints *c, const dk_run *runs, size_t n)
{
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) total = sat_add(total, run_segments(c, runs[i].addr, runs[i].len));
  return total;
}

dk_constraint_kind dk__segment_check(const dk_constraints *c, uint64_t addr, uint64_t len, bool first, char *why,
                                     size_t cap)
{
  uint64_t last = addr + len - 1;
  if (len && last < addr) {
    if (why) snprintf(why, cap, "the range 0x%llx+0x%llx wraps past the top of the address space",
                      (unsigned long long)addr, (unsigned long long)len);
    return DK_CONSTRAINT_MASK;
  }
  if (addr < c->low) {
    if (why) snprintf(why, cap, "memory at 0x%llx is below the window's low end 0x%llx", (unsigned long long)addr,
                      (unsigned long long)c->low);
    return DK_CONSTRAINT_MASK;
  }
  if (c->high && last > c->high) {
    if (why) snprintf(why, cap, "memory up to 0x%llx lies above the limit 0x%llx", (unsigned long long)last,
                      (unsigned long long)c->high);
    return DK_CONSTRAINT_MASK;
  }
  if (first && c->alignment > 1 && (addr & (c->alignment - 1))) {
    if (why) snprintf(why, cap, "the start 0x%llx is not aligned to 0x%llx", (unsigned long long)addr,
                      (unsigned long long)c->alignment);
    return DK_CONSTRAINT_ALIGNMENT;
  }
  if (c->boundary && len <= c->boundary && (addr & ~(c->boundary - 1)) != (last & ~(c->boundary - 1))) {
    if (why) snprintf(why, cap, "0x%llx+0x%llx crosses a 0x%llx boundary", (unsigned long long)addr,
                      (unsigned long long)len, (unsigned long long)c->boundary);
    return DK_CONSTRAINT_BOUNDARY;
  }
  return DK_CONSTRAINT_NONE;
}

dk_constraint_kind dk__pages_can_keep(const dk_constraints *c, uint64_t size, uint64_t page)
{
  if (c->alignment > page) return DK_CONSTRAINT_ALIGNMENT;
  if (c->contiguous && size > page) return DK_CONSTRAINT_CONTIGUITY;
  if (c->boundary && c->boundary < page && size > c->boundary) return DK_CONSTRAINT_BOUNDARY;
  return DK_CONSTRAINT_NONE;
}

dk_constraint_kind dk__runs_check(const dk_constraints *c, const dk_run *runs, size_t n,
                                  char *why, size_t cap)
{
  if (n == 0) {
    snprintf(why, cap, "no physical memory");
    return DK_CONSTRAINT_RESOURCE;
  }
  /* the window for every run, the alignment for the first (boundaries come below, on the
   * contiguous run or through the segment count) */
  dk_constraints w = *c;
  w.boundary = 0;
  for (size_t i = 0; i < n; i++) {
    dk_constraint_kind k = dk__segment_check(&w, runs[i].addr, runs[i].len, i == 0, why, cap);
    if (k != DK_CONSTRAINT_NONE) return k;
  }
  if (c->contiguous && n > 1) {
    snprintf(why, cap, "memory is in %zu physical runs, contiguity needs one", n);
    return DK_CONSTRAINT_CONTIGUITY;
  }
  if (c->contiguous && c->boundary &&
      (runs[0].addr & ~(c->boundary - 1)) != ((runs[0].addr + runs[0].len - 1) & ~(c->boundary - 1))) {
    snprintf(why, cap, "contiguous run 0x%llx+0x%llx crosses a 0x%llx boundary",
             (unsigned long long)runs[0].addr, (unsigned long long)runs[0].len,
             (unsigned long long)c->boundary);
    return DK_CONSTRAINT_BOUNDARY;
  }
  if (c->contiguous && c->max_segment_size && runs[0].len > c->max_segment_size) {
    snprintf(why, cap, "contiguous run of 0x%llx bytes exceeds the maximum segment size 0x%llx",
             (unsigned long long)runs[0].len, (unsigned long long)c->max_segment_size);
    return DK_CONSTRAINT_SEGMENTS;
  }
  if (c->max_segments) {
    uint64_t segs = dk__segments_count(c, runs, n);
    if (segs > c->max_segments) {
      snprintf(why, cap, "memory makes %llu segments, at most %u allowed",
               (unsigned long long)segs, c->max_segments);
      return DK_CONSTRAINT_SEGMENTS;
    }
  }
  return DK_CONSTRAINT_NONE;
}

bool dk__place(const dk_constraints *c, uint64_t align, uint64_t start, uint64_t end, uint64_t len,
               uint64_t *out)
{
  if (len == 0 || end <= start || end - start < len) return false;
  if (align == 0) align = 1;
  uint64_t lo = start > c->low ? start : c->low;
  uint64_t top = end;                                   /* exclusive */
  if (c->high && c->high < top - 1) top = c->high + 1;  /* high is inclusive; +1 cannot wrap here */
  if (top <= lo || top - lo < len) return false;
  uint64_t x = (top - len) & ~(align - 1);              /* highest aligned start */
  if (x < lo) return false;
  if (c->boundary && len > c->boundary) return false;
  if (c->boundary) {
    uint64_t line = (x + len - 1) & ~(c->boundary - 1); /* the line at or below the last byte */
    if (line > x) {                                     /* crosses: end at that line instead */
      x = (line - len) & ~(align - 1);                  /* line >= boundary >= len: no wrap */
      if (x < lo) return false;
    }
  }
  *out = x;
  return true;
}
