/* tests/test_iova.c: the IOVA allocator's edges beyond test_mapper's tables: apertures that
 * overlap, touch, contain each other, lie at the top of the address space or hold no whole
 * page; the bookkeeping's memory failing (the allocator's calloc made to fail through the
 * fault injector) at init, at an allocation and at a free that splits a range, with nothing
 * changed and nothing leaked; refused frees. Pure: no privilege, no physical memory. */
#include "dk_test.h"
#include "mapper/iova.h"
#include "prim/prim.h"

#include <errno.h>
#include <string.h>

#define P 0x1000ull

static long heap0;
static void heap_mark(void) { heap0 = dk__prim_counters().heap_blocks; }
static void heap_back(void) { assert_int_equal(dk__prim_counters().heap_blocks, heap0); }

static void iova_apertures_merge(void **state)
{
  (void)state;
  heap_mark();
  dk_iova_space s;
  /* unsorted; the second overlaps the first and reaches further, the third lies inside the
   * second, the fourth touches the second's end, the fifth stands apart */
  const uint64_t r[][2] = { { 0x10000, 0x1ffff }, { 0x18000, 0x2ffff }, { 0x20000, 0x27fff },
                            { 0x30000, 0x3ffff }, { 0x80000, 0x8ffff } };
  const uint64_t shuffled[][2] = { { r[4][0], r[4][1] }, { r[2][0], r[2][1] }, { r[0][0], r[0][1] },
                                   { r[3][0], r[3][1] }, { r[1][0], r[1][1] } };
  for (int k = 0; k < 2; k++) {
    assert_true(dk__iova_init(&s, k ? shuffled : r, 5, P));
    assert_int_equal(s.n, 2);
    assert_int_equal(s.free[0].addr, 0x10000);
    assert_int_equal(s.free[0].len, 0x30000);
    assert_int_equal(s.free[1].addr, 0x80000);
    assert_int_equal(s.free[1].len, 0x10000);
    assert_int_equal(s.total, 0x40000);
    assert_int_equal(s.napertures, 2);
    /* the merged aperture is one: a range across the old seams can be freed whole */
    uint64_t a = 0;
    assert_true(dk__iova_alloc(&s, 0x30000, P, 0x3ffff, 0, &a));
    assert_int_equal(a, 0x10000);
    assert_true(dk__iova_free(&s, a, 0x30000));
    dk__iova_fini(&s);
  }
  heap_back();
}

static void iova_apertures_without_pages(void **state)
{
  (void)state;
  heap_mark();
  dk_iova_space s;
  const uint64_t r[][2] = {
    { UINT64_MAX - 10, UINT64_MAX },            /* no whole page starts there */
    { 0x5001, 0x5fff },                         /* less than a page once aligned */
    { 0x9000, 0x8000 },                         /* empty */
    { 0, 0x2fff },                              /* page 0 is never handed out: 0x1000..0x2fff */
    { UINT64_MAX - 0x10fff, UINT64_MAX },       /* the top: no exclusive end wraps to 0 */
  };
  assert_true(dk__iova_init(&s, r, 5, P));
  assert_int_equal(s.n, 2);
  assert_int_equal(s.free[0].addr, 0x1000);
  assert_int_equal(s.free[0].len, 0x2000);
  assert_true(s.free[1].addr + s.free[1].len > s.free[1].addr);   /* no wrap */
  uint64_t a = 0;
  assert_true(dk__iova_alloc(&s, P, P, 0, 0, &a));
  assert_int_equal(a, s.free[1].addr + s.free[1].len);          /* the highest page first */
  assert_true(dk__iova_free(&s, a, P));
  dk__iova_fini(&s);
  /* nothing usable at all */
  const uint64_t none[][2] = { { 0, 0xfff } };
  assert_true(dk__iova_init(&s, none, 1, P));
  assert_int_equal(s.n, 0);
  errno = 0;
  assert_false(dk__iova_alloc(&s, P, P, 0, 0, &a));
  assert_int_equal(errno, ENOSPC);
  dk__iova_fini(&s);
  heap_back();
}

static void iova_bookkeeping_memory_fails(void **state)
{
  (void)state;
  heap_mark();
  dk_iova_space s;
  const uint64_t r[][2] = { { 0x100000, 0x1ffffff } };
  /* init: the extent array, then the aperture copy */
  for (unsigned long nth = 1; nth <= 2; nth++) {
    dk__fault_arm(nth, 0, DK_PRIM_BIT(DK_PRIM_CALLOC), 0);
    bool ok = dk__iova_init(&s, r, 1, P);
    dk__fault_disarm();
    assert_false(ok);
    assert_null(s.free);
    assert_int_equal(s.n, 0);
    heap_back();
  }
  assert_true(dk__iova_init(&s, r, 1, P));
  uint64_t a[40], x = 0;
  /* allocations grow the extent array; when that fails, ENOMEM and nothing changed */
  size_t i = 0;
  for (; i < 40; i++) {
    size_t cap = s.cap, n = s.n;
    uint64_t used = s.used;
    dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_CALLOC), 0);
    errno = 0;
    bool ok = dk__iova_alloc(&s, P, P, 0, 0, &x);
    bool fired = dk__fault_fired();
    dk__fault_disarm();
    if (fired) {
      assert_false(ok);
      assert_int_equal(errno, ENOMEM);
      assert_int_equal(s.cap, cap);
      assert_int_equal(s.n, n);
      assert_int_equal(s.used, used);
    } else {
      assert_true(ok);
    }
    if (!ok) assert_true(dk__iova_alloc(&s, P, P, 0, 0, &x));
    a[i] = x;
  }
  /* every other one back: each free makes an extent, with room already reserved */
  for (i = 0; i < 40; i += 2) assert_true(dk__iova_free(&s, a[i], P));
  /* freeing the middle page of a 3-page range that is left (a split) may need memory: when
   * there is none, false and nothing changed */
  uint64_t big = 0;
  assert_true(dk__iova_alloc(&s, 3 * P, P, 0, 0, &big));
  assert_true(dk__iova_free(&s, big, P));          /* its first page */
  while (s.n < s.cap) {                             /* fill the reserve with single free pages */
    uint64_t y = 0;
    if (!dk__iova_alloc(&s, 2 * P, P, 0, 0, &y)) break;
    assert_true(dk__iova_free(&s, y + P, P));
  }
  if (s.n == s.cap) {
    size_t n = s.n;
    dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_CALLOC), 0);
    bool ok = dk__iova_free(&s, big + 2 * P, P);   /* not adjacent to free space */
    dk__fault_disarm();
    if (!ok) assert_int_equal(s.n, n);
    else assert_true(dk__iova_free(&s, big + P, P));
  }
  dk__iova_fini(&s);
  heap_back();
}

static void iova_refused_requests(void **state)
{
  (void)state;
  dk_iova_space s;
  const uint64_t r[][2] = { { 0x100000, 0x1fffff } };
  assert_true(dk__iova_init(&s, r, 1, P));
  uint64_t a = 0;
  errno = 0;
  assert_false(dk__iova_alloc(&s, 0, P, 0, 0, &a));                 /* nothing */
  assert_int_equal(errno, ENOSPC);
  assert_false(dk__iova_alloc(&s, 0x200000, P, 0, 0, &a));          /* more than there is */
  assert_false(dk__iova_alloc_window(&s, P, P, 0x180000, 0x17ffff, 0, &a));   /* empty window */
  assert_true(dk__iova_alloc_window(&s, P, P, 0x180000, 0x180fff, 0, &a));
  assert_int_equal(a, 0x180000);
  assert_false(dk__iova_free(&s, a, 0));                            /* nothing */
  assert_false(dk__iova_free(&s, UINT64_MAX - P + 1, 2 * P));       /* wraps */
  assert_false(dk__iova_free(&s, 0x300000, P));                     /* outside the apertures */
  assert_false(dk__iova_free(&s, a + P, P));                        /* free already */
  assert_false(dk__iova_free(&s, a, 2 * P));                        /* half of it free */
  assert_true(dk__iova_free(&s, a, P));
  assert_int_equal(s.used, 0);
  dk__iova_fini(&s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(iova_apertures_merge),
    cmocka_unit_test(iova_apertures_without_pages),
    cmocka_unit_test(iova_bookkeeping_memory_fails),
    cmocka_unit_test(iova_refused_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
