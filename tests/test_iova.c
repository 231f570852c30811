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
/* The free extents in address order (into g_ext), and how many there are. */
static dk_run g_ext[64];
static size_t extents(const dk_iova_space *s)
{
  size_t n = dk__iova_extents(s, g_ext, 64);
  assert_true(n <= 64);
  return n;
}

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
    assert_int_equal(extents(&s), 2);
    assert_int_equal(g_ext[0].addr, 0x10000);
    assert_int_equal(g_ext[0].len, 0x30000);
    assert_int_equal(g_ext[1].addr, 0x80000);
    assert_int_equal(g_ext[1].len, 0x10000);
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
  assert_int_equal(extents(&s), 2);
  assert_int_equal(g_ext[0].addr, 0x1000);
  assert_int_equal(g_ext[0].len, 0x2000);
  assert_true(g_ext[1].addr + g_ext[1].len > g_ext[1].addr);    /* no wrap */
  uint64_t a = 0, top = g_ext[1].addr + g_ext[1].len;
  assert_true(dk__iova_alloc(&s, P, P, 0, 0, &a));
  assert_int_equal(a + P, top);                                  /* the highest page first */
  assert_true(dk__iova_free(&s, a, P));
  dk__iova_fini(&s);
  /* nothing usable at all */
  const uint64_t none[][2] = { { 0, 0xfff } };
  assert_true(dk__iova_init(&s, none, 1, P));
  assert_int_equal(extents(&s), 0);
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
  const uint64_t HEAP = DK_PRIM_BIT(DK_PRIM_CALLOC) | DK_PRIM_BIT(DK_PRIM_MALLOC);
  /* init: the aperture copy, then the extent nodes; any of them failing fails it whole */
  for (unsigned long nth = 1; nth <= 3; nth++) {
    dk__fault_arm(nth, 0, HEAP, 0);
    bool ok = dk__iova_init(&s, r, 1, P);
    bool fired = dk__fault_fired();
    dk__fault_disarm();
    if (!fired) { assert_true(ok); dk__iova_fini(&s); break; }
    assert_false(ok);
    assert_int_equal(extents(&s), 0);
    heap_back();
  }
  assert_true(dk__iova_init(&s, r, 1, P));
  uint64_t a[40], x = 0;
  /* an allocation takes the nodes a later free may need; when that fails, ENOMEM and nothing
   * changed */
  size_t i = 0;
  for (; i < 40; i++) {
    size_t n = extents(&s);
    uint64_t used = s.used;
    dk__fault_arm(1, 0, HEAP, 0);
    errno = 0;
    bool ok = dk__iova_alloc(&s, P, P, 0, 0, &x);
    bool fired = dk__fault_fired();
    dk__fault_disarm();
    if (fired) {
      assert_false(ok);
      assert_int_equal(errno, ENOMEM);
      assert_int_equal(extents(&s), n);
      assert_int_equal(s.used, used);
    } else {
      assert_true(ok);
    }
    if (!ok) assert_true(dk__iova_alloc(&s, P, P, 0, 0, &x));
    a[i] = x;
  }
  /* every other one back with the heap failing for ever: each free makes an extent, with the
   * node kept for it, and none asks the heap */
  dk__fault_arm(1, 1, HEAP, 0);
  for (i = 0; i < 40; i += 2) assert_true(dk__iova_free(&s, a[i], P));
  unsigned long asked = dk__fault_calls_seen();
  dk__fault_disarm();
  assert_int_equal(asked, 0);
  assert_int_equal(extents(&s), 21);
  /* freeing the middle of a range (a split) may need a node beyond those kept: when there is
   * none, false and nothing changed */
  uint64_t big = 0;
  assert_true(dk__iova_alloc(&s, 3 * P, P, 0, 0, &big));
  while (s.nspare) {                                  /* use up the nodes kept */
    uint64_t y = 0;
    if (!dk__iova_alloc(&s, 2 * P, P, 0, 0, &y)) break;
    if (!dk__iova_free(&s, y + P, P)) break;
  }
  size_t n = extents(&s);
  uint64_t used = s.used;
  dk__fault_arm(1, 1, HEAP, 0);
  bool ok = dk__iova_free(&s, big + P, P);            /* the middle page: no neighbour is free */
  dk__fault_disarm();
  if (!ok) {
    assert_int_equal(extents(&s), n);
    assert_int_equal(s.used, used);
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
