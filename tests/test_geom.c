/* tests/test_geom.c: the constraint predicate and segment arithmetic as tables, at every edge:
 * exactly at the limit and one byte past it, at the window's low end, at alignment 2^k and
 * one page off, on and across boundary lines (4 GiB lines included), segment counts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "alloc/geom.h"

#define G4 (1ull << 32)

typedef struct row {
  const char        *name;
  dk_constraints     c;
  dk_run             runs[4];
  size_t             n;
  dk_constraint_kind want;
} row;

static dk_constraints C(uint64_t low, uint64_t high, uint64_t align, uint64_t boundary,
                        uint64_t maxseg, uint32_t nseg, bool contig)
{
  dk_constraints c = { low, high, align, boundary, maxseg, nseg, contig, -1 };
  return c;
}

static void check_table(void **state)
{
  (void)state;
  const row rows[] = {
    { "no constraints", C(0, 0, 0, 0, 0, 0, false), { { 0x1000, 0x3000 } }, 1, DK_CONSTRAINT_NONE },
    { "last byte exactly at the limit", C(0, 0xFFFFFFFF, 0, 0, 0, 0, false), { { 0xFFFFF000, 0x1000 } }, 1, DK_CONSTRAINT_NONE },
    { "one byte past the limit", C(0, 0xFFFFFFFE, 0, 0, 0, 0, false), { { 0xFFFFF000, 0x1000 } }, 1, DK_CONSTRAINT_MASK },
    { "second run past the limit", C(0, 0xFFFFFFFF, 0, 0, 0, 0, false), { { 0x1000, 0x1000 }, { G4, 0x1000 } }, 2, DK_CONSTRAINT_MASK },
    { "exactly at the window's low end", C(0x100000, 0, 0, 0, 0, 0, false), { { 0x100000, 0x1000 } }, 1, DK_CONSTRAINT_NONE },
    { "one page below the window", C(0x100000, 0, 0, 0, 0, 0, false), { { 0xFF000, 0x1000 } }, 1, DK_CONSTRAINT_MASK },
    { "aligned to 2^21", C(0, 0, 1ull << 21, 0, 0, 0, false), { { 7ull << 21, 0x1000 } }, 1, DK_CONSTRAINT_NONE },
    { "one page off 2^21", C(0, 0, 1ull << 21, 0, 0, 0, false), { { (7ull << 21) + 0x1000, 0x1000 } }, 1, DK_CONSTRAINT_ALIGNMENT },
    { "alignment 1 never fails", C(0, 0, 1, 0, 0, 0, false), { { 0x1234, 1 } }, 1, DK_CONSTRAINT_NONE },
    { "contiguous, one run", C(0, 0, 0, 0, 0, 0, true), { { 0x200000, 0x200000 } }, 1, DK_CONSTRAINT_NONE },
    { "contiguous, two runs", C(0, 0, 0, 0, 0, 0, true), { { 0x200000, 0x1000 }, { 0x400000, 0x1000 } }, 2, DK_CONSTRAINT_CONTIGUITY },
    { "contiguous ending exactly at a 4 GiB line", C(0, 0, 0, G4, 0, 0, true), { { G4 - 0x2000, 0x2000 } }, 1, DK_CONSTRAINT_NONE },
    { "contiguous crossing a 4 GiB line", C(0, 0, 0, G4, 0, 0, true), { { G4 - 0x1000, 0x2000 } }, 1, DK_CONSTRAINT_BOUNDARY },
    { "contiguous starting on a 4 GiB line", C(0, 0, 0, G4, 0, 0, true), { { G4, 0x2000 } }, 1, DK_CONSTRAINT_NONE },
    { "scattered crossing a line splits, no count limit", C(0, 0, 0, 0x10000, 0, 0, false), { { 0xF000, 0x2000 } }, 1, DK_CONSTRAINT_NONE },
    { "split at a line exceeds 1 segment", C(0, 0, 0, 0x10000, 0, 1, false), { { 0xF000, 0x2000 } }, 1, DK_CONSTRAINT_SEGMENTS },
    { "two runs within 2 segments", C(0, 0, 0, 0, 0, 2, false), { { 0x1000, 0x1000 }, { 0x5000, 0x1000 } }, 2, DK_CONSTRAINT_NONE },
    { "three runs over 2 segments", C(0, 0, 0, 0, 0, 2, false), { { 0x1000, 0x1000 }, { 0x5000, 0x1000 }, { 0x9000, 0x1000 } }, 3, DK_CONSTRAINT_SEGMENTS },
    { "max segment size splits a run", C(0, 0, 0, 0, 0x1000, 2, false), { { 0x1000, 0x3000 } }, 1, DK_CONSTRAINT_SEGMENTS },
    { "max segment size exactly", C(0, 0, 0, 0, 0x1000, 3, false), { { 0x1000, 0x3000 } }, 1, DK_CONSTRAINT_NONE },
    { "contiguous longer than max segment", C(0, 0, 0, 0, 0x1000, 0, true), { { 0x1000, 0x2000 } }, 1, DK_CONSTRAINT_SEGMENTS },
    { "contiguous exactly the max segment", C(0, 0, 0, 0, 0x2000, 0, true), { { 0x1000, 0x2000 } }, 1, DK_CONSTRAINT_NONE },
    { "empty", C(0, 0, 0, 0, 0, 0, false), { { 0, 0 } }, 0, DK_CONSTRAINT_RESOURCE },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    char why[200] = "";
    dk_constraint_kind k = dk__runs_check(&rows[i].c, rows[i].runs, rows[i].n, why, sizeof why);
    if (k != rows[i].want)
      fail_msg("%s: got %s (%s), want %s", rows[i].name, dk_constraint_name(k), why,
               dk_constraint_name(rows[i].want));
    if (k != DK_CONSTRAINT_NONE) assert_true(why[0] != '\0');
  }
}

static void segments_count(void **state)
{
  (void)state;
  dk_constraints c = C(0, 0, 0, 0, 0, 0, false);
  dk_run r[2] = { { 0x1000, 0x5000 }, { 0x10000, 0x1000 } };
  assert_int_equal(dk__segments_count(&c, r, 2), 2);
  c.boundary = 0x2000;                       /* 0x1000-0x6000 crosses 0x2000 and 0x4000 */
  assert_int_equal(dk__segments_count(&c, r, 1), 3);
  c.max_segment_size = 0x1000;               /* every 4K piece alone */
  assert_int_equal(dk__segments_count(&c, r, 2), 6);
  c.boundary = 0;
  c.max_segment_size = 0x3000;               /* 0x5000 in 0x3000 pieces: 2 */
  assert_int_equal(dk__segments_count(&c, r, 1), 2);
  /* a 64-bit boundary: a run across 4 GiB */
  dk_constraints g = C(0, 0, 0, G4, 0, 0, false);
  dk_run across = { G4 - 0x1000, 0x3000 };
  assert_int_equal(dk__segments_count(&g, &across, 1), 2);
  /* huge counts are computed, not walked, and saturate */
  dk_constraints tiny = C(0, 0, 0, 0, 1, 0, false);
  dk_run big = { 0, UINT64_MAX };
  assert_int_equal(dk__segments_count(&tiny, &big, 1), UINT64_MAX);
  dk_run bigs[2] = { { 0, UINT64_MAX }, { 0, UINT64_MAX } };   /* the sum of two saturated runs */
  assert_int_equal(dk__segments_count(&tiny, bigs, 2), UINT64_MAX);
  dk_constraints b2 = C(0, 0, 0, 2, 1, 0, false);              /* 2^63 lines of 2 pieces each */
  assert_int_equal(dk__segments_count(&b2, &big, 1), UINT64_MAX);
  dk_run two = { 0, 1ull << 40 };
  dk_constraints b4k = C(0, 0, 0, 4096, 512, 0, false);
  assert_int_equal(dk__segments_count(&b4k, &two, 1), (1ull << 40) / 512);
  dk_run odd = { 100, 10000 };                  /* 3996 + 4096 + 1908 at lines, then /1000 */
  dk_constraints b1k = C(0, 0, 0, 4096, 1000, 0, false);
  assert_int_equal(dk__segments_count(&b1k, &odd, 1), 4 + 5 + 2);
}

/* The arithmetic against a walk, on small numbers. */
static void segments_match_walk(void **state)
{
  (void)state;
  for (uint64_t addr = 0; addr < 70; addr += 7)
    for (uint64_t len = 1; len < 200; len += 13)
      for (uint64_t b = 0; b <= 64; b = b ? b * 2 : 8)
        for (uint64_t m = 0; m <= 40; m += 10) {
          dk_constraints c = C(0, 0, 0, b, m, 0, false);
          uint64_t walk = 0, a = addr, l = len;
          while (l) {
            uint64_t piece = l;
            if (b) { uint64_t to = b - (a % b); if (to < piece) piece = to; }
            walk += m ? (piece + m - 1) / m : 1;
            a += piece;
            l -= piece;
          }
          dk_run r = { addr, len };
          assert_int_equal(dk__segments_count(&c, &r, 1), walk);
        }
}

static void validity(void **state)
{
  (void)state;
  char why[200];
  dk_constraints ok = C(0, 0xFFFFFFFF, 4096, G4, 0, 0, true);
  assert_true(dk__constraints_valid(&ok, why, sizeof why));
  dk_constraints bad_align = C(0, 0, 3000, 0, 0, 0, false);
  assert_false(dk__constraints_valid(&bad_align, why, sizeof why));
  dk_constraints bad_boundary = C(0, 0, 0, 0x3000, 0, 0, false);
  assert_false(dk__constraints_valid(&bad_boundary, why, sizeof why));
  dk_constraints bad_window = C(0x2000, 0x1000, 0, 0, 0, 0, false);
  assert_false(dk__constraints_valid(&bad_window, why, sizeof why));
  assert_non_null(strstr(why, "window low 0x2000 is above high 0x1000"));
  /* the create path's check without a reason agrees on each */
  assert_true(dk__constraints_ok(&ok));
  assert_false(dk__constraints_ok(&bad_align));
  assert_false(dk__constraints_ok(&bad_boundary));
  assert_false(dk__constraints_ok(&bad_window));
  dk_constraints low_only = C(0x2000, 0, 1, 0, 0, 0, false);   /* a floor with no limit; alignment 1 */
  assert_true(dk__constraints_valid(&low_only, why, sizeof why));
  assert_true(dk__constraints_ok(&low_only));
}

/* The segment predicate alone, each rule at its edge, with and without a reason asked for:
 * the verdict is the same either way, and a reason names the addresses. */
static void segment_predicate(void **state)
{
  (void)state;
  typedef struct srow {
    const char *name; dk_constraints c; uint64_t addr, len; bool first; dk_constraint_kind want; const char *says;
  } srow;
  const srow rows[] = {
    { "wraps past the top", C(0, 0, 0, 0, 0, 0, false), UINT64_MAX - 0xFFF, 0x2000, true, DK_CONSTRAINT_MASK, "wraps" },
    { "ends exactly at the top", C(0, 0, 0, 0, 0, 0, false), UINT64_MAX - 0xFFF, 0x1000, true, DK_CONSTRAINT_NONE, NULL },
    { "below the window", C(0x2000, 0, 0, 0, 0, 0, false), 0x1FFF, 1, true, DK_CONSTRAINT_MASK, "below the window" },
    { "above the limit", C(0, 0x1FFF, 0, 0, 0, 0, false), 0x1000, 0x1001, true, DK_CONSTRAINT_MASK, "above the limit" },
    { "misaligned first segment", C(0, 0, 0x1000, 0, 0, 0, false), 0x1800, 0x100, true, DK_CONSTRAINT_ALIGNMENT, "not aligned" },
    { "misaligned later segment is fine", C(0, 0, 0x1000, 0, 0, 0, false), 0x1800, 0x100, false, DK_CONSTRAINT_NONE, NULL },
    { "crosses a line", C(0, 0, 0, 0x1000, 0, 0, false), 0x1F00, 0x200, false, DK_CONSTRAINT_BOUNDARY, "crosses" },
    { "up to the line", C(0, 0, 0, 0x1000, 0, 0, false), 0x1F00, 0x100, false, DK_CONSTRAINT_NONE, NULL },
    { "longer than a line: cut by the caller", C(0, 0, 0, 0x1000, 0, 0, false), 0x1F00, 0x1001, false, DK_CONSTRAINT_NONE, NULL },
    { "empty at the top of a window", C(0x1000, 0x1FFF, 0, 0, 0, 0, false), 0x1000, 0, true, DK_CONSTRAINT_NONE, NULL },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const srow *r = &rows[i];
    char why[200] = "";
    dk_constraint_kind k = dk__segment_check(&r->c, r->addr, r->len, r->first, why, sizeof why);
    if (k != r->want) fail_msg("%s: got %s (%s), want %s", r->name, dk_constraint_name(k), why, dk_constraint_name(r->want));
    if (r->says && !strstr(why, r->says)) fail_msg("%s: the reason '%s' does not say '%s'", r->name, why, r->says);
    if (!r->says) assert_string_equal(why, "");
    assert_int_equal(dk__segment_check(&r->c, r->addr, r->len, r->first, NULL, 0), r->want);
    assert_int_equal(dk__segment_ok(&r->c, r->addr, r->len, r->first), r->want == DK_CONSTRAINT_NONE);
  }
}

/* What 4K pages can promise: alignment, contiguity and boundaries up to a page, no further. */
static void pages_promise(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  typedef struct krow { const char *name; dk_constraints c; uint64_t size; dk_constraint_kind want; } krow;
  const krow rows[] = {
    { "nothing asked", C(0, 0, 0, 0, 0, 0, false), 1 << 20, DK_CONSTRAINT_NONE },
    { "alignment of a page", C(0, 0, P, 0, 0, 0, false), 1 << 20, DK_CONSTRAINT_NONE },
    { "alignment above a page", C(0, 0, 2 * P, 0, 0, 0, false), P, DK_CONSTRAINT_ALIGNMENT },
    { "contiguous within a page", C(0, 0, 0, 0, 0, 0, true), P, DK_CONSTRAINT_NONE },
    { "contiguous past a page", C(0, 0, 0, 0, 0, 0, true), P + 1, DK_CONSTRAINT_CONTIGUITY },
    { "boundary below a page, buffer within it", C(0, 0, 0, 1024, 0, 0, false), 1024, DK_CONSTRAINT_NONE },
    { "boundary below a page, buffer past it", C(0, 0, 0, 1024, 0, 0, false), 1025, DK_CONSTRAINT_BOUNDARY },
    { "boundary of a page or more", C(0, 0, 0, P, 0, 0, false), 1 << 20, DK_CONSTRAINT_NONE },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    dk_constraint_kind k = dk__pages_can_keep(&rows[i].c, rows[i].size, P);
    if (k != rows[i].want)
      fail_msg("%s: got %s, want %s", rows[i].name, dk_constraint_name(k), dk_constraint_name(rows[i].want));
  }
}

/* Placement at every edge; each row is checked for the promise too, independently. */
static void placement(void **state)
{
  (void)state;
  typedef struct prow { const char *name; dk_constraints c; uint64_t align, start, end, len; bool ok; uint64_t want; } prow;
  const uint64_t M2 = 1ull << 21, G1 = 1ull << 30;
  const prow rows[] = {
    { "whole extent", C(0, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x3000, 0x2000, true, 0x1000 },
    { "highest first", C(0, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x9000, 0x1000, true, 0x8000 },
    { "too small", C(0, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x2000, 0x1001, false, 0 },
    { "nothing asked for", C(0, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x2000, 0, false, 0 },
    { "empty extent", C(0, 0, 0, 0, 0, 0, false), 1, 0x2000, 0x2000, 0x10, false, 0 },
    { "alignment 0 taken as 1", C(0, 0, 0, 0, 0, 0, false), 0, 0x1001, 0x1003, 0x1, true, 0x1002 },
    { "last byte exactly at high", C(0, 0x8FFF, 0, 0, 0, 0, false), 1, 0, 0x100000, 0x1000, true, 0x8000 },
    { "high one byte short", C(0, 0x8FFE, 0, 0, 0, 0, false), 0x1000, 0, 0x100000, 0x1000, true, 0x7000 },
    { "high below the extent", C(0, 0xFFF, 0, 0, 0, 0, false), 1, 0x1000, 0x9000, 0x10, false, 0 },
    { "low raises the floor", C(0x5000, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x7000, 0x2000, true, 0x5000 },
    { "low leaves no room", C(0x6001, 0, 0, 0, 0, 0, false), 1, 0x1000, 0x8000, 0x2000, false, 0 },
    { "align 2M inside a 4M extent", C(0, 0, 0, 0, 0, 0, false), M2, 0x100000, 0x500000, 0x1000, true, 0x400000 },
    { "align 2M, no aligned start fits", C(0, 0, 0, 0, 0, 0, false), M2, 0x201000, 0x3FF000, 0x1000, false, 0 },
    { "align 1G", C(0, 0, 0, 0, 0, 0, false), G1, G1 - 0x1000, 2 * G1 + 0x1000, 0x1000, true, 2 * G1 },
    { "boundary: fits below the line", C(0, 0, 0, 0x10000, 0, 0, false), 0x1000, 0x8000, 0x18000, 0x8000, true, 0x10000 },
    { "boundary: would cross, moved down", C(0, 0, 0, 0x10000, 0, 0, false), 0x1000, 0x8000, 0x14000, 0x8000, true, 0x8000 },
    { "boundary: ends exactly on the line", C(0, 0, 0, 0x10000, 0, 0, false), 1, 0x0, 0x10000, 0x10000, true, 0x0 },
    { "boundary smaller than len", C(0, 0, 0, 0x1000, 0, 0, false), 1, 0, 0x10000, 0x1001, false, 0 },
    { "boundary: crossing, no room below", C(0, 0, 0, 0x10000, 0, 0, false), 1, 0xC000, 0x14000, 0x8000, false, 0 },
    { "4 GiB line: starts on it", C(0, 0, 0, 1ull << 32, 0, 0, false), M2, (1ull << 32) - 0x400000, (1ull << 32) + 0x400000, 0x300000, true, 1ull << 32 },
    { "4 GiB line: 6M fits on neither side", C(0, 0, 0, 1ull << 32, 0, 0, false), M2, (1ull << 32) - 0x400000, (1ull << 32) + 0x400000, 0x600000, false, 0 },
    { "mask + align + boundary", C(0, 0xFFFFFFFF, 0, 0x100000, 0, 0, false), 0x10000, 0xFFF00000, 0x100100000, 0x20000, true, 0xFFFE0000 },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const prow *r = &rows[i];
    uint64_t x = 0;
    bool ok = dk__place(&r->c, r->align, r->start, r->end, r->len, &x);
    if (ok != r->ok) fail_msg("%s: placed %d, want %d", r->name, ok, r->ok);
    if (!ok) continue;
    if (x != r->want) fail_msg("%s: at 0x%llx, want 0x%llx", r->name, (unsigned long long)x, (unsigned long long)r->want);
    /* the promise, checked by the predicate */
    dk_constraints c = r->c;
    c.alignment = r->align;
    c.contiguous = true;
    dk_run run = { x, r->len };
    char why[200];
    if (dk__runs_check(&c, &run, 1, why, sizeof why) != DK_CONSTRAINT_NONE) fail_msg("%s: %s", r->name, why);
    assert_true(x >= r->start && x + r->len <= r->end);
  }
}

/* Exhaustive small-space check: every placement the function finds is valid, and when it
 * finds none, no valid one exists (brute force over all starts). */
static void placement_exhaustive(void **state)
{
  (void)state;
  for (uint64_t start = 0; start < 64; start += 3)
    for (uint64_t end = start + 1; end <= 96; end += 5)
      for (uint64_t len = 1; len <= 40; len += 3)
        for (uint64_t align = 1; align <= 16; align <<= 1)
          for (uint64_t boundary = 0; boundary <= 32; boundary = boundary ? boundary << 1 : 8)
            for (uint64_t high = 0; high <= 80; high += 20) {
              dk_constraints c = C(0, high, 0, boundary, 0, 0, false);
              uint64_t x = 0, best = UINT64_MAX;
              bool ok = dk__place(&c, align, start, end, len, &x);
              for (uint64_t y = start; y + len <= end; y++) {
                if (y % align) continue;
                if (high && y + len - 1 > high) continue;
                if (boundary && y / boundary != (y + len - 1) / boundary) continue;
                best = y;                                  /* keep the highest */
              }
              if (ok != (best != UINT64_MAX) || (ok && x != best))
                fail_msg("start %llu end %llu len %llu align %llu boundary %llu high %llu: got %d/%llu, want %llu",
                         (unsigned long long)start, (unsigned long long)end, (unsigned long long)len,
                         (unsigned long long)align, (unsigned long long)boundary, (unsigned long long)high, ok,
                         (unsigned long long)x, (unsigned long long)best);
            }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(check_table),
    cmocka_unit_test(segments_count),
    cmocka_unit_test(segments_match_walk),
    cmocka_unit_test(validity),
    cmocka_unit_test(segment_predicate),
    cmocka_unit_test(pages_promise),
    cmocka_unit_test(placement),
    cmocka_unit_test(placement_exhaustive),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
