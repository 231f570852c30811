/* tests/test_mapper.c: IOMapper without an IOMMU. The IOVA allocator (src/mapper/iova.c) at
 * every edge and against a brute-force model over a small space; the mapping table through
 * the software backend and a recording backend that checks what would be programmed into an
 * IOMMU (every IOVA translates back to the buffer's own bytes, no two live mappings overlap,
 * every unmap is of a live mapping); buffers created under a system mapper (the physical mask
 * limits the IOVA, not the RAM: REFERENCE.md §2 steps 5, 12, 15, §9 rows 14, 20), checked
 * against this test's own pagemap read; sharing of mappings, the kernel's mapping limit, the
 * debug tracker, pageable buffers mapped while prepared, the identity mapper, VFIO refusing
 * cleanly on a machine without an IOMMU, and no resource left behind. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iokit/internal.h"
#include "mapper/iova.h"
#include "mapper/mapper_impl.h"
#include "phys/phys.h"
#include "prim/prim.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))
#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define MASK28 0x0FFFFFFFull

/* VT-d as VFIO reports it: 39 address bits minus the MSI window. */
static const uint64_t g_vtd[2][2] = { { 0, 0xfedfffffull }, { 0xfef00000ull, (1ull << 39) - 1 } };

static uint64_t page(void) { return dk_capabilities()->page_size; }

/* ==== 1. the IOVA allocator ================================================================ */

typedef struct space_copy {
  dk_run   ext[64];
  size_t   n;
  uint64_t total, used;
} space_copy;

/* The free extents in order (at most 64 of them in these tests), and how many there are. */
static dk_run g_ext[4096];
static size_t extents(const dk_iova_space *s)
{
  size_t n = dk__iova_extents(s, g_ext, 4096);
  assert_true(n <= 4096);
  return n;
}

static space_copy copy_of(const dk_iova_space *s)
{
  space_copy c;
  memset(&c, 0, sizeof c);
  c.n = extents(s);
  assert_true(c.n <= 64);
  memcpy(c.ext, g_ext, c.n * sizeof *g_ext);
  c.total = s->total;
  c.used = s->used;
  return c;
}

static void assert_unchanged(const dk_iova_space *s, const space_copy *c, const char *what)
{
  size_t n = extents(s);
  if (n != c->n || s->total != c->total || s->used != c->used || (n && memcmp(g_ext, c->ext, n * sizeof *g_ext) != 0))
    fail_msg("%s changed the space: %zu extents (was %zu), used 0x%llx (was 0x%llx)", what, n, c->n,
             (unsigned long long)s->used, (unsigned long long)c->used);
}

/* The free extents are exactly ext[0..n). */
static void assert_extents(const dk_iova_space *s, const uint64_t (*ext)[2], size_t n)
{
  size_t have = extents(s);
  if (have != n) {
    for (size_t i = 0; i < have; i++)
      print_message("  extent %zu: 0x%llx+0x%llx\n", i, (unsigned long long)g_ext[i].addr,
                    (unsigned long long)g_ext[i].len);
    fail_msg("%zu free extents, expected %zu", have, n);
  }
  for (size_t i = 0; i < n; i++)
    if (g_ext[i].addr != ext[i][0] || g_ext[i].len != ext[i][1])
      fail_msg("extent %zu is 0x%llx+0x%llx, expected 0x%llx+0x%llx", i, (unsigned long long)g_ext[i].addr,
               (unsigned long long)g_ext[i].len, (unsigned long long)ext[i][0], (unsigned long long)ext[i][1]);
}

static uint64_t must_alloc(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary)
{
  uint64_t x = 0;
  if (!dk__iova_alloc(s, len, align, limit, boundary, &x))
    fail_msg("alloc 0x%llx (align 0x%llx, limit 0x%llx, boundary 0x%llx) failed", (unsigned long long)len,
             (unsigned long long)align, (unsigned long long)limit, (unsigned long long)boundary);
  return x;
}

static void must_not_alloc(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary)
{
  space_copy c = copy_of(s);
  uint64_t x = 0x5a5a;
  if (dk__iova_alloc(s, len, align, limit, boundary, &x))
    fail_msg("alloc 0x%llx (align 0x%llx, limit 0x%llx, boundary 0x%llx) gave 0x%llx, expected no room",
             (unsigned long long)len, (unsigned long long)align, (unsigned long long)limit,
             (unsigned long long)boundary, (unsigned long long)x);
  assert_unchanged(s, &c, "a failed alloc");
}

static void iova_holes_and_page_zero(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space s;
  /* apertures with a hole; given out of order (the kernel sorts them; the allocator must not care) */
  const uint64_t r[2][2] = { { 0x10000, 0x13fff }, { 0x0, 0x4fff } };
  assert_true(dk__iova_init(&s, r, 2, P));
  const uint64_t e0[2][2] = { { 0x1000, 0x4000 }, { 0x10000, 0x4000 } };   /* page 0 cut off */
  assert_extents(&s, e0, 2);
  assert_int_equal(s.total, 0x8000);
  assert_int_equal(s.used, 0);
  /* nothing spans the hole, though 8 pages are free */
  must_not_alloc(&s, 0x5000, 1, 0, 0);
  assert_int_equal(must_alloc(&s, 0x2000, P, 0, 0), 0x12000);   /* highest first */
  assert_int_equal(must_alloc(&s, 0x2000, P, 0, 0), 0x10000);
  assert_int_equal(must_alloc(&s, 0x2000, P, 0, 0), 0x3000);
  assert_int_equal(must_alloc(&s, 0x1000, P, 0, 0), 0x2000);
  assert_int_equal(must_alloc(&s, 0x1000, P, 0, 0), 0x1000);    /* the lowest page there is */
  must_not_alloc(&s, 0x1000, 1, 0, 0);                          /* page 0 is never handed out */
  must_not_alloc(&s, 1, 1, 0, 0);
  assert_int_equal(extents(&s), 0);
  assert_int_equal(s.used, 0x8000);
  dk__iova_fini(&s);

  /* unaligned apertures are cut to whole pages; an aperture of page 0 alone is nothing */
  const uint64_t r2[4][2] = { { 0, 0xfff }, { 0x1800, 0x3fff }, { 0x5000, 0x6ffe }, { 0x9000, 0x9ffe } };
  assert_true(dk__iova_init(&s, r2, 4, P));
  const uint64_t e2[2][2] = { { 0x2000, 0x2000 }, { 0x5000, 0x1000 } };
  assert_extents(&s, e2, 2);
  assert_int_equal(s.total, 0x3000);
  dk__iova_fini(&s);

  /* no apertures: nothing to give */
  assert_true(dk__iova_init(&s, NULL, 0, P));
  must_not_alloc(&s, P, P, 0, 0);
  dk__iova_fini(&s);
}

static void iova_limits(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space s;
  const uint64_t r[2][2] = { { 0x100000, 0x1fffff }, { 0x400000, 0x4fffff } };
  assert_true(dk__iova_init(&s, r, 2, P));
  /* the last byte may be the limit itself */
  assert_int_equal(must_alloc(&s, P, P, 0x107fff, 0), 0x107000);
  /* one byte lower and the whole page moves down */
  assert_int_equal(must_alloc(&s, P, P, 0x106ffe, 0), 0x105000);
  /* unaligned allocation: the last byte exactly at the limit */
  assert_int_equal(must_alloc(&s, 0x10, 1, 0x10ffff, 0), 0x10fff0);
  /* a limit in the hole: the top of the aperture below it */
  assert_int_equal(must_alloc(&s, P, P, 0x3fffff, 0), 0x1ff000);
  /* a limit below every aperture, and one whose room is too small */
  must_not_alloc(&s, P, P, 0xfffff, 0);
  must_not_alloc(&s, P, 1, 0x100ffe, 0);
  must_not_alloc(&s, 2 * P, P, 0x101fff - 1, 0);
  assert_int_equal(must_alloc(&s, P, P, 0x100fff, 0), 0x100000);   /* the lowest page, exactly */
  /* no limit: the top of the space */
  assert_int_equal(must_alloc(&s, P, P, 0, 0), 0x4ff000);
  /* a limit above everything is no limit */
  assert_int_equal(must_alloc(&s, P, P, UINT64_MAX, 0), 0x4fe000);
  dk__iova_fini(&s);
}

static void iova_alignments(void **state)
{
  (void)state;
  const uint64_t P = 4096, top = 1ull << 40;
  dk_iova_space s;
  const uint64_t r[1][2] = { { 0, top - 1 } };
  assert_true(dk__iova_init(&s, r, 1, P));
  for (unsigned k = 0; k <= 30; k++) {
    uint64_t a = 1ull << k;
    uint64_t x = must_alloc(&s, P, a, 0, 0);
    uint64_t want = (top - P) & ~(a - 1);
    if (x != want) fail_msg("alignment 2^%u: 0x%llx, expected 0x%llx", k, (unsigned long long)x, (unsigned long long)want);
    assert_true(dk__iova_free(&s, x, P));
  }
  /* 1 GiB alignment under a 2 GiB limit: exactly 1 GiB */
  assert_int_equal(must_alloc(&s, 3 * P, GiB, 0x7fffffff, 0), GiB);
  /* the only 1 GiB-aligned address left under it is 0, which is never handed out */
  must_not_alloc(&s, P, GiB, 0x7fffffff, 0);
  /* stacking: each lands one alignment unit lower */
  assert_int_equal(must_alloc(&s, P, GiB, 0, 0), top - GiB);
  assert_int_equal(must_alloc(&s, P, GiB, 0, 0), top - 2 * GiB);
  /* an unaligned length with alignment: the start is aligned, the length kept, the highest place
   * (above the page at top - 1 GiB) */
  assert_int_equal(must_alloc(&s, 12345, 64 * KiB, 0, 0), top - 64 * KiB);
  assert_int_equal(must_alloc(&s, 12345, 64 * KiB, 0, 0), top - 128 * KiB);
  /* an aperture with no aligned address in it */
  dk__iova_fini(&s);
  const uint64_t r2[1][2] = { { 0x1000, 0x3fffffff } };
  assert_true(dk__iova_init(&s, r2, 1, P));
  must_not_alloc(&s, P, GiB, 0, 0);
  assert_int_equal(must_alloc(&s, P, 512 * MiB, 0, 0), 512 * MiB);
  dk__iova_fini(&s);
}

static void iova_boundaries(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space s;
  const uint64_t r[1][2] = { { 0x1000, 0xfffff } };
  assert_true(dk__iova_init(&s, r, 1, P));
  /* without a boundary: the highest place, across the 0xf0000 line */
  assert_int_equal(must_alloc(&s, 0x3000, P, 0xf1fff, 0), 0xef000);
  assert_true(dk__iova_free(&s, 0xef000, 0x3000));
  /* with one, the same request is moved down to end at the line */
  assert_int_equal(must_alloc(&s, 0x3000, P, 0xf1fff, 0x10000), 0xed000);
  /* a length equal to the boundary: exactly one window */
  assert_int_equal(must_alloc(&s, 0x10000, P, 0xe7fff, 0x10000), 0xd0000);
  /* a length above the boundary ignores it (documented) and takes the highest place */
  uint64_t x = must_alloc(&s, 0x3000, P, 0xc1fff, 0x2000);
  assert_int_equal(x, 0xbf000);
  /* every returned range keeps to its boundary when it can */
  for (int i = 0; i < 20; i++) {
    uint64_t b = 0x4000, len = 0x1000 + (uint64_t)(i % 4) * 0x1000;
    uint64_t y = must_alloc(&s, len, P, 0, b);
    if (y / b != (y + len - 1) / b) fail_msg("0x%llx+0x%llx crosses a 0x%llx line", (unsigned long long)y,
                                             (unsigned long long)len, (unsigned long long)b);
  }
  /* a boundary that cannot be met in what remains */
  dk__iova_fini(&s);
  const uint64_t r2[1][2] = { { 0x3000, 0x4fff } };     /* 2 pages straddling 0x4000 */
  assert_true(dk__iova_init(&s, r2, 1, P));
  must_not_alloc(&s, 0x2000, P, 0, 0x4000);
  assert_int_equal(must_alloc(&s, 0x2000, P, 0, 0), 0x3000);
  dk__iova_fini(&s);
}

static void iova_free_coalescing(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space s;
  const uint64_t r[1][2] = { { 0x1000, 0x10fff } };    /* 16 pages */
  assert_true(dk__iova_init(&s, r, 1, P));
  for (int i = 15; i >= 0; i--) assert_int_equal(must_alloc(&s, P, P, 0, 0), 0x1000 + (uint64_t)i * P);
  must_not_alloc(&s, P, P, 0, 0);
  assert_int_equal(extents(&s), 0);
  assert_int_equal(s.used, 16 * P);

  assert_true(dk__iova_free(&s, 0x5000, P));                       /* alone */
  const uint64_t e1[1][2] = { { 0x5000, 0x1000 } };
  assert_extents(&s, e1, 1);
  assert_true(dk__iova_free(&s, 0x4000, P));                       /* joins on its right */
  const uint64_t e2[1][2] = { { 0x4000, 0x2000 } };
  assert_extents(&s, e2, 1);
  assert_true(dk__iova_free(&s, 0x6000, P));                       /* joins on its left */
  const uint64_t e3[1][2] = { { 0x4000, 0x3000 } };
  assert_extents(&s, e3, 1);
  assert_true(dk__iova_free(&s, 0x8000, P));
  const uint64_t e4[2][2] = { { 0x4000, 0x3000 }, { 0x8000, 0x1000 } };
  assert_extents(&s, e4, 2);
  assert_true(dk__iova_free(&s, 0x7000, P));                       /* joins both */
  const uint64_t e5[1][2] = { { 0x4000, 0x5000 } };
  assert_extents(&s, e5, 1);
  assert_int_equal(s.used, 11 * P);

  /* double frees and frees overlapping free space are refused and change nothing */
  space_copy c = copy_of(&s);
  assert_false(dk__iova_free(&s, 0x7000, P));
  assert_unchanged(&s, &c, "a double free");
  assert_false(dk__iova_free(&s, 0x4000, 0x5000));
  assert_unchanged(&s, &c, "a double free of a coalesced extent");
  assert_false(dk__iova_free(&s, 0x3000, 2 * P));                  /* half allocated, half free */
  assert_unchanged(&s, &c, "a free overlapping free space on its right");
  assert_false(dk__iova_free(&s, 0x8000, 2 * P));
  assert_unchanged(&s, &c, "a free overlapping free space on its left");
  assert_false(dk__iova_free(&s, 0x2000, 0x9000));                 /* covers the free extent */
  assert_unchanged(&s, &c, "a free covering free space");
  assert_false(dk__iova_free(&s, 0x2000, 0));
  assert_unchanged(&s, &c, "a zero-length free");
  assert_false(dk__iova_free(&s, UINT64_MAX - 0xfff, 0x2000));      /* wraps */
  assert_unchanged(&s, &c, "a wrapping free");

  /* exhaustion, then reuse of exactly what was freed */
  assert_int_equal(must_alloc(&s, 5 * P, P, 0, 0), 0x4000);
  must_not_alloc(&s, P, 1, 0, 0);
  assert_true(dk__iova_free(&s, 0xa000, P));
  assert_int_equal(must_alloc(&s, P, P, 0, 0), 0xa000);
  /* a free spanning two allocations is one free (allowed: all of it is allocated) */
  assert_true(dk__iova_free(&s, 0x1000, 2 * P));
  const uint64_t e6[1][2] = { { 0x1000, 0x2000 } };
  assert_extents(&s, e6, 1);
  /* free everything: one extent, the whole aperture */
  assert_true(dk__iova_free(&s, 0x3000, 14 * P));
  const uint64_t e7[1][2] = { { 0x1000, 0x10000 } };
  assert_extents(&s, e7, 1);
  assert_int_equal(s.used, 0);
  dk__iova_fini(&s);
}

/* The space of a test that may fail with it live: its teardown gives it back, so that a failure
 * here does not show up again as a leak in nothing_left_behind. */
static dk_iova_space g_sp;
static int teardown_space(void **state)
{
  (void)state;
  dk__iova_fini(&g_sp);
  return 0;
}

/* iova.h: "false (nothing changed) if any of it is not allocated". Addresses outside every
 * aperture (page 0, a hole, past the end) were never allocated. */
static void iova_free_outside_apertures(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space *s = &g_sp;
  const uint64_t r[2][2] = { { 0x0, 0x4fff }, { 0x10000, 0x13fff } };
  assert_true(dk__iova_init(s, r, 2, P));
  (void)must_alloc(s, 0x4000, P, 0, 0);
  (void)must_alloc(s, 0x4000, P, 0, 0);
  assert_int_equal(extents(s), 0);
  space_copy c = copy_of(s);
  bool page0 = dk__iova_free(s, 0, P);
  bool hole = dk__iova_free(s, 0x8000, P);
  bool past = dk__iova_free(s, 0x20000, P);
  bool across = dk__iova_free(s, 0x4000, 0xd000);    /* allocated, a hole, allocated */
  if (page0 || hole || past || across)
    fail_msg("frees of never-allocated IOVAs were accepted: page 0 %d, hole %d, past the end %d, across a "
             "hole %d (used is now 0x%llx, was 0x%llx; %zu extents)",
             page0, hole, past, across, (unsigned long long)s->used, (unsigned long long)c.used, extents(s));
  assert_unchanged(s, &c, "frees outside the apertures");
}

/* Apertures reaching the top of the 64-bit space (an IOMMU whose aperture ends at ~0, minus
 * the MSI window: what VFIO reports for AMD-Vi's v1 tables). */
static void iova_top_of_space(void **state)
{
  (void)state;
  const uint64_t P = 4096;
  dk_iova_space *s = &g_sp;
  const uint64_t r[2][2] = { { 0, 0xfedfffffull }, { 0xfef00000ull, UINT64_MAX } };
  assert_true(dk__iova_init(s, r, 2, P));
  uint64_t x32 = 0, x64 = 0;
  bool ok32 = dk__iova_alloc(s, P, P, 0xffffffffull, 0, &x32);
  bool ok64 = dk__iova_alloc(s, P, P, 0, 0, &x64);
  bool freed64 = ok64 && dk__iova_free(s, x64, P);
  if (!ok32 || x32 != 0xfffff000ull || !ok64 || x64 < 0xfef00000ull || !freed64)
    fail_msg("an aperture ending at 2^64-1: under a 32-bit limit %s 0x%llx (expected 0xfffff000); without a limit "
             "%s 0x%llx (expected in the upper aperture), %s",
             ok32 ? "got" : "failed,", (unsigned long long)x32, ok64 ? "got" : "failed,", (unsigned long long)x64,
             freed64 ? "freed" : "not freed");
}

/* ---- the brute-force model ---- */

#define MN 768     /* bytes in the model's space */
#define MPAGE 8u   /* the model's page */

typedef struct model {
  unsigned char st[MN];   /* 0 outside every aperture, 1 free, 2 allocated */
} model;

static uint64_t rnd(uint64_t *x)
{
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 0x2545F4914F6CDD1Dull;
}

static void model_init(model *m, const uint64_t (*r)[2], size_t n)
{
  memset(m->st, 0, sizeof m->st);
  /* a page is in the space when it lies wholly inside an aperture and is not page 0 */
  for (size_t i = 0; i < n; i++)
    for (uint64_t p = MPAGE; p + MPAGE <= MN; p += MPAGE)
      if (p >= r[i][0] && p + MPAGE - 1 <= r[i][1]) memset(m->st + p, 1, MPAGE);
}

static bool model_alloc(model *m, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary, uint64_t *out)
{
  if (!len || len > MN) return false;
  uint64_t a = align ? align : 1;
  uint64_t b = boundary && len <= boundary ? boundary : 0;
  static unsigned busy[MN + 1];
  busy[0] = 0;
  for (size_t i = 0; i < MN; i++) busy[i + 1] = busy[i] + (m->st[i] != 1);
  for (int64_t x = (int64_t)(MN - len); x >= 0; x--) {
    uint64_t ux = (uint64_t)x;
    if (ux % a) continue;
    if (limit && ux + len - 1 > limit) continue;
    if (b && ux / b != (ux + len - 1) / b) continue;
    if (busy[ux + len] != busy[ux]) continue;
    memset(m->st + ux, 2, len);
    *out = ux;
    return true;
  }
  return false;
}

static bool model_free(model *m, uint64_t iova, uint64_t len)
{
  if (!len || iova + len < iova || iova + len > MN) return false;
  for (uint64_t i = iova; i < iova + len; i++)
    if (m->st[i] != 2) return false;
  memset(m->st + iova, 1, len);
  return true;
}

static bool model_all_inside(const model *m, uint64_t iova, uint64_t len)
{
  if (iova + len > MN) return false;
  for (uint64_t i = iova; i < iova + len; i++)
    if (m->st[i] == 0) return false;
  return true;
}

static void model_compare(const dk_iova_space *s, const model *m, uint64_t seed, int op)
{
  unsigned char fr[MN];
  memset(fr, 0, sizeof fr);
  size_t n = extents(s);
  for (size_t i = 0; i < n; i++) {
    const dk_run *e = &g_ext[i];
    if (!e->len || e->addr + e->len > MN)
      fail_msg("seed %llu op %d: extent %zu 0x%llx+0x%llx is empty or outside the space", (unsigned long long)seed, op,
               i, (unsigned long long)e->addr, (unsigned long long)e->len);
    if (i && g_ext[i - 1].addr + g_ext[i - 1].len >= e->addr)
      fail_msg("seed %llu op %d: extents %zu and %zu are unsorted, overlapping or adjacent", (unsigned long long)seed,
               op, i - 1, i);
    memset(fr + e->addr, 1, e->len);
  }
  uint64_t used = 0, total = 0;
  for (size_t i = 0; i < MN; i++) {
    if ((m->st[i] == 1) != (fr[i] == 1))
      fail_msg("seed %llu op %d: byte 0x%zx is %s in the allocator, %s in the model", (unsigned long long)seed, op, i,
               fr[i] ? "free" : "not free", m->st[i] == 1 ? "free" : m->st[i] == 2 ? "allocated" : "outside");
    used += m->st[i] == 2;
    total += m->st[i] != 0;
  }
  if (s->used != used || s->total != total)
    fail_msg("seed %llu op %d: used 0x%llx total 0x%llx, the model says 0x%llx and 0x%llx", (unsigned long long)seed,
             op, (unsigned long long)s->used, (unsigned long long)s->total, (unsigned long long)used,
             (unsigned long long)total);
}

static void iova_against_model(void **state)
{
  (void)state;
  unsigned long allocs = 0, fails = 0, frees = 0, refused = 0;
  for (uint64_t seed = 1; seed <= 160; seed++) {
    uint64_t rs = seed * 0x9E3779B97F4A7C15ull;
    /* 1-4 apertures with gaps of more than a page, sometimes from 0, sometimes unsorted */
    uint64_t r[4][2];
    size_t n = 0, want = 1 + rnd(&rs) % 4;
    uint64_t cur = rnd(&rs) % 4 == 0 ? 0 : rnd(&rs) % 24;
    while (n < want) {
      uint64_t b = cur + rnd(&rs) % 200;
      if (b >= MN) break;
      r[n][0] = cur;
      r[n][1] = b;
      n++;
      cur = b + 1 + MPAGE + rnd(&rs) % 40;
    }
    if (n == 0) continue;
    if (n > 1 && rnd(&rs) % 2) {
      uint64_t t0 = r[0][0], t1 = r[0][1];
      r[0][0] = r[n - 1][0]; r[0][1] = r[n - 1][1];
      r[n - 1][0] = t0; r[n - 1][1] = t1;
    }
    dk_iova_space s;
    model m;
    assert_true(dk__iova_init(&s, (const uint64_t (*)[2])r, n, MPAGE));
    model_init(&m, (const uint64_t (*)[2])r, n);
    model_compare(&s, &m, seed, -1);
    uint64_t live[256][2], dead[64][2];
    size_t nlive = 0, ndead = 0;
    for (int op = 0; op < 300; op++) {
      uint64_t k = rnd(&rs) % 100;
      if (k < 50 || nlive == 0) {
        uint64_t len = rnd(&rs) % 4 == 0 ? MPAGE * (1 + rnd(&rs) % 8) : 1 + rnd(&rs) % 96;
        uint64_t align = rnd(&rs) % 5 == 0 ? 0 : 1ull << (rnd(&rs) % 9);
        uint64_t limit = rnd(&rs) % 3 == 0 ? 0 : rnd(&rs) % (MN + 64);
        uint64_t bnd = rnd(&rs) % 2 ? 0 : 1ull << (3 + rnd(&rs) % 6);
        uint64_t xi = 0, xm = 0;
        bool oi = dk__iova_alloc(&s, len, align, limit, bnd, &xi);
        bool om = model_alloc(&m, len, align, limit, bnd, &xm);
        if (oi != om || (oi && xi != xm))
          fail_msg("seed %llu op %d: alloc len %llu align %llu limit %llu boundary %llu: allocator %s %llu, model %s %llu",
                   (unsigned long long)seed, op, (unsigned long long)len, (unsigned long long)align,
                   (unsigned long long)limit, (unsigned long long)bnd, oi ? "gave" : "refused", (unsigned long long)xi,
                   om ? "gave" : "refused", (unsigned long long)xm);
        if (oi && nlive < 256) {
          live[nlive][0] = xi;
          live[nlive][1] = len;
          nlive++;
        }
        allocs += oi;
        fails += !oi;
      } else {
        uint64_t iova, len;
        if (k < 80) {                           /* an allocation, exactly */
          size_t i = rnd(&rs) % nlive;
          iova = live[i][0];
          len = live[i][1];
          live[i][0] = live[nlive - 1][0];
          live[i][1] = live[nlive - 1][1];
          nlive--;
          if (ndead < 64) {
            dead[ndead][0] = iova;
            dead[ndead][1] = len;
            ndead++;
          }
        } else if (k < 90 && ndead) {           /* again: a double free, unless reallocated since */
          size_t i = rnd(&rs) % ndead;
          iova = dead[i][0];
          len = dead[i][1];
        } else {                                /* any range inside the apertures */
          iova = rnd(&rs) % MN;
          len = rnd(&rs) % 5 == 0 ? 0 : 1 + rnd(&rs) % 64;
          if (!model_all_inside(&m, iova, len)) continue;   /* outside: iova_free_outside_apertures */
        }
        bool oi = dk__iova_free(&s, iova, len);
        bool om = model_free(&m, iova, len);
        if (oi != om)
          fail_msg("seed %llu op %d: free %llu+%llu: allocator %s, model %s", (unsigned long long)seed, op,
                   (unsigned long long)iova, (unsigned long long)len, oi ? "accepted" : "refused",
                   om ? "accepts" : "refuses");
        frees += oi;
        refused += !oi;
      }
      model_compare(&s, &m, seed, op);
    }
    dk__iova_fini(&s);
  }
  print_message("model: %lu allocations, %lu refused; %lu frees, %lu refused\n", allocs, fails, frees, refused);
  assert_true(allocs > 1000 && fails > 100 && frees > 1000 && refused > 100);
}

/* ==== a recording backend: what an IOMMU would be told ===================================== */

typedef struct rec_entry { uint64_t va, iova, len; } rec_entry;
static struct {
  pthread_mutex_t lock;
  rec_entry live[8192];
  size_t    n;
  unsigned  maps, unmaps, closes;
  unsigned  overlaps, bad_unmaps;
  int       fail_errno;      /* the next maps fail with this */
} g_rec = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int rec_map(IOMapper *m, uint64_t va, uint64_t iova, uint64_t len)
{
  (void)m;
  pthread_mutex_lock(&g_rec.lock);
  if (g_rec.fail_errno) {
    int e = g_rec.fail_errno;
    pthread_mutex_unlock(&g_rec.lock);
    errno = e;
    return -1;
  }
  for (size_t i = 0; i < g_rec.n; i++)
    if (iova < g_rec.live[i].iova + g_rec.live[i].len && g_rec.live[i].iova < iova + len) g_rec.overlaps++;
  if (g_rec.n < 8192) g_rec.live[g_rec.n++] = (rec_entry){ va, iova, len };
  g_rec.maps++;
  pthread_mutex_unlock(&g_rec.lock);
  return 0;
}

static int rec_unmap(IOMapper *m, uint64_t iova, uint64_t len)
{
  (void)m;
  pthread_mutex_lock(&g_rec.lock);
  size_t i = 0;
  while (i < g_rec.n && !(g_rec.live[i].iova == iova && g_rec.live[i].len == len)) i++;
  if (i == g_rec.n) g_rec.bad_unmaps++;
  else g_rec.live[i] = g_rec.live[--g_rec.n];
  g_rec.unmaps++;
  pthread_mutex_unlock(&g_rec.lock);
  return 0;
}

static void rec_close(IOMapper *m)
{
  (void)m;
  g_rec.closes++;
}

static const dk_mapper_ops g_rec_ops = { rec_map, rec_unmap, rec_close };

static void rec_reset(void)
{
  pthread_mutex_lock(&g_rec.lock);
  g_rec.n = 0;
  g_rec.maps = g_rec.unmaps = g_rec.closes = 0;
  g_rec.overlaps = g_rec.bad_unmaps = 0;
  g_rec.fail_errno = 0;
  pthread_mutex_unlock(&g_rec.lock);
}

/* The VA the device reaches at `iova` through the recorded mappings; 0 if none. */
static uint64_t rec_translate(uint64_t iova)
{
  uint64_t va = 0;
  pthread_mutex_lock(&g_rec.lock);
  for (size_t i = 0; i < g_rec.n; i++)
    if (iova >= g_rec.live[i].iova && iova - g_rec.live[i].iova < g_rec.live[i].len) {
      va = g_rec.live[i].va + (iova - g_rec.live[i].iova);
      break;
    }
  pthread_mutex_unlock(&g_rec.lock);
  return va;
}

/* A software mapper that records (and checks) every map and unmap. */
static IOMapper *rec_mapper(uint32_t dma_limit)
{
  rec_reset();
  IOMapper *m = dk__mapper_new(DK_MAPPER_SOFTWARE, &g_rec_ops, g_vtd, 2);
  assert_non_null(m);
  m->info.dma_limit = dma_limit;
  return m;
}

static IOMapper *soft_mapper(uint32_t dma_limit)
{
  IOMapper *m = dk__mapper_create_soft(g_vtd, 2, dma_limit);
  assert_non_null(m);
  return m;
}

static dk_mapper_info minfo(IOMapper *m)
{
  dk_mapper_info i;
  memset(&i, 0xa5, sizeof i);
  assert_int_equal(dk_mapper_get_info(m, &i), kIOReturnSuccess);
  return i;
}

static dk_buffer_info binfo(IOBufferMemoryDescriptor *b)
{
  dk_buffer_info i;
  memset(&i, 0xa5, sizeof i);
  assert_int_equal(dk_buffer_get_info(b, &i), kIOReturnSuccess);
  return i;
}

/* Every recorded mapping lies on dmakit memory mapped in this process (VFIO_IOMMU_MAP_DMA
 * would pin exactly that), and nothing overlapped or was unmapped that was not mapped. */
static void rec_check_sane(void)
{
  assert_int_equal(g_rec.overlaps, 0);
  assert_int_equal(g_rec.bad_unmaps, 0);
  pthread_mutex_lock(&g_rec.lock);
  size_t n = g_rec.n;
  rec_entry e[64];
  if (n > 64) n = 64;
  memcpy(e, g_rec.live, n * sizeof *e);
  pthread_mutex_unlock(&g_rec.lock);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(e[i].va % page(), 0);
    assert_int_equal(e[i].iova % page(), 0);
    assert_int_equal(e[i].len % page(), 0);
    if (!dkt_maps_dmakit((void *)(uintptr_t)e[i].va) || !dkt_maps_dmakit((void *)(uintptr_t)(e[i].va + e[i].len - 1)))
      fail_msg("mapping IOVA 0x%llx+0x%llx covers va 0x%llx, not (all) dmakit memory", (unsigned long long)e[i].iova,
               (unsigned long long)e[i].len, (unsigned long long)e[i].va);
  }
}

/* The buffer's bus addresses: one IOVA range for the whole length, translating back to its bytes. */
static uint64_t check_iova(IOBufferMemoryDescriptor *b, IOMapper *m, uint64_t limit, bool recorded)
{
  IOMemoryDescriptor *md = MD(b);
  uint64_t len = IOMemoryDescriptor_getLength(md);
  dk_buffer_info bi = binfo(b);
  assert_ptr_equal(bi.mapper, m);
  IOByteCount l = 0;
  uint64_t iova = IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0);
  if (!iova) fail_msg("no IOVA: %s", dkt_failure_text());
  assert_int_equal(iova, bi.iova);
  assert_int_equal(l, len);
  if (limit) assert_true(iova + len - 1 <= limit);
  const uint64_t offs[] = { 1, page() - 1, page(), len / 2, len - 1 };
  for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
    if (offs[i] >= len) continue;
    l = 0;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, offs[i], &l, 0), iova + offs[i]);
    assert_int_equal(l, len - offs[i]);
  }
  l = 123;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, len, &l, 0), 0);
  assert_int_equal(l, 0);
  if (recorded) {
    uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    assert_non_null(va);
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
      uint64_t off = i == 0 ? 0 : offs[i];
      if (off >= len) continue;
      uint64_t t = rec_translate(iova + off);
      if (t != (uint64_t)(uintptr_t)(va + off))
        fail_msg("IOVA 0x%llx (offset 0x%llx) reaches va 0x%llx, the buffer's byte is at %p", (unsigned long long)(iova + off),
                 (unsigned long long)off, (unsigned long long)t, (void *)(va + off));
    }
  }
  return iova;
}

/* With kIOMemoryMapperNone: the CPU physical addresses, against our own pagemap read. */
static void check_physical(IOBufferMemoryDescriptor *b)
{
  IOMemoryDescriptor *md = MD(b);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint64_t len = IOMemoryDescriptor_getLength(md);
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &n);
  assert_non_null(pfn);
  IOByteCount off = 0;
  while (off < len) {
    IOByteCount l = 0;
    uint64_t pa = IOMemoryDescriptor_getPhysicalSegment(md, off, &l, kIOMemoryMapperNone);
    uint64_t run = 0, want = dkt_expected_segment(va, len, pfn, off, &run);
    if (!pa || pa != want || l != run)
      fail_msg("offset 0x%llx: physical 0x%llx+0x%llx, pagemap says 0x%llx+0x%llx (%s)", (unsigned long long)off,
               (unsigned long long)pa, (unsigned long long)l, (unsigned long long)want, (unsigned long long)run,
               pa ? "" : dkt_failure_text());
    off += l;
  }
  free(pfn);
}

/* ==== 2. buffers under a system mapper ===================================================== */

static int setup_on(void **state) { return dkt_setup_pool_on(state); }
static int setup_off(void **state) { return dkt_setup_pool_off(state); }
static int teardown(void **state)
{
  dk_mapper_set_system(NULL);
  rec_reset();
  return dkt_teardown_pool_restore(state);
}
#define T4K(fn) cmocka_unit_test_setup_teardown(fn##_4k, setup_off, teardown)
#define TPOOL(fn) cmocka_unit_test_setup_teardown(fn##_pool, setup_on, teardown)
#define TANY(fn) cmocka_unit_test_setup_teardown(fn, NULL, teardown)

static IOBufferMemoryDescriptor *mask_buffer(IOOptionBits options, uint64_t size, uint64_t mask)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, options, size, mask);
  if (!b) fail_msg("inTaskWithPhysicalMask(0x%x, 0x%llx, 0x%llx): %s", options, (unsigned long long)size,
                   (unsigned long long)mask, dkt_failure_text());
  return b;
}

static void masks_limit_iova(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  assert_ptr_equal(dk_mapper_get_system(), m);
  const uint64_t sizes[] = { 64, 4096, 3 * 4096 + 100, 64 * KiB, 2 * MiB + 4096 };
  enum { NS = sizeof sizes / sizeof sizes[0] };
  IOBufferMemoryDescriptor *bufs[NS + 3];
  uint64_t lo[NS + 3], hi[NS + 3];
  size_t nb = 0;
  /* no mask first: the highest IOVAs (the RAM is not what limits it). Later buffers in the same
   * hugepage may share this mapping when its IOVAs suit them. */
  IOBufferMemoryDescriptor *b64 = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 8192, 1);
  assert_non_null(b64);
  assert_int_equal(binfo(b64).numAddressBits, 64);
  uint64_t i64 = check_iova(b64, m, 0, true);
  assert_true(i64 > 0xffffffffull);
  lo[nb] = i64; hi[nb] = i64 + 8192; bufs[nb++] = b64;
  for (size_t i = 0; i < NS; i++) {
    IOBufferMemoryDescriptor *b = mask_buffer(kIODirectionInOut, sizes[i], MASK28);
    dk_buffer_info bi = binfo(b);
    assert_int_equal(bi.numAddressBits, 28);
    assert_int_equal(bi.physical_limit, 0);          /* the mask does not bind the RAM */
    assert_false(bi.contiguous);
    uint64_t iova = check_iova(b, m, MASK28, true);
    assert_int_equal(iova % page(), 0);               /* the mask's alignment: a page */
    check_physical(b);
    /* the bytes the device would reach through the IOVA are the buffer's */
    uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    memset(va, (int)(0x40 + i), sizes[i]);
    uint8_t *through = (uint8_t *)(uintptr_t)rec_translate(iova + sizes[i] - 1);
    assert_non_null(through);
    assert_int_equal(*through, 0x40 + i);
    lo[nb] = iova;
    hi[nb] = iova + sizes[i];
    bufs[nb++] = b;
  }
  /* 32 bits: below 4 GiB, and never in the MSI window the IOMMU reserves */
  IOBufferMemoryDescriptor *b32 = mask_buffer(kIODirectionInOut, 3 * MiB, 0xffffffffull);
  assert_int_equal(binfo(b32).numAddressBits, 32);
  uint64_t i32 = check_iova(b32, m, 0xffffffffull, true);
  assert_true(i32 + 3 * MiB - 1 < 0xfee00000ull || i32 >= 0xfef00000ull);
  lo[nb] = i32; hi[nb] = i32 + 3 * MiB; bufs[nb++] = b32;
  /* a 36-bit mask with trailing zeros: 64 KiB alignment (§2 step 6) and the 36-bit IOVA limit */
  IOBufferMemoryDescriptor *b36 = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut,
                                                                                  4096, 0xFFFFF0000ull);
  if (b36) {
    dk_buffer_info bi = binfo(b36);
    assert_int_equal(bi.numAddressBits, 36);
    uint64_t i36 = check_iova(b36, m, 0xFFFFFFFFFull, true);
    assert_int_equal(i36 % (64 * KiB), 0);
    lo[nb] = i36; hi[nb] = i36 + 4096; bufs[nb++] = b36;
  } else {
    /* 64 KiB physical alignment (rule A) needs the pool */
    assert_false(dkt_pool_on());
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  }
  /* the buffers' IOVA ranges are disjoint */
  for (size_t i = 0; i < nb; i++)
    for (size_t j = i + 1; j < nb; j++)
      if (lo[i] < hi[j] && lo[j] < hi[i])
        fail_msg("buffers %zu and %zu overlap in IOVA space: 0x%llx-0x%llx and 0x%llx-0x%llx", i, j,
                 (unsigned long long)lo[i], (unsigned long long)hi[i], (unsigned long long)lo[j], (unsigned long long)hi[j]);
  rec_check_sane();
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.kind, DK_MAPPER_SOFTWARE);
  assert_int_equal(mi.iova_range_count, 2);
  assert_int_equal(mi.iova_ranges[1].start, 0xfef00000ull);
  assert_int_equal(mi.iova_ranges[1].end, (1ull << 39) - 1);
  assert_int_equal(mi.buffers_mapped, nb);
  assert_int_equal(mi.mappings_live, g_rec.n);
  assert_true(mi.mappings_live >= 1 && mi.mappings_live <= nb);
  assert_true(mi.mappings_peak >= mi.mappings_live);
  for (size_t i = 0; i < nb; i++) OSObject_release(bufs[i]);
  mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(mi.bytes_mapped, 0);
  assert_int_equal(mi.double_unmaps, 0);
  assert_int_equal(g_rec.n, 0);
  assert_int_equal(g_rec.maps, g_rec.unmaps);
  rec_check_sane();
  dk_mapper_set_system(NULL);
  assert_null(dk_mapper_get_system());
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  assert_int_equal(g_rec.closes, 1);      /* the backend's close: once, with the last reference */
}
DKT_POOL_VARIANTS(masks_limit_iova)

/* Contiguity (§9 row 20): plain PhysicallyContiguous is IOVA contiguity only; Host... is RAM. */
static void contiguity_with_mapper(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = soft_mapper(0);
  dk_mapper_set_system(m);
  IOBufferMemoryDescriptor *pc = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous, 256 * KiB, 1);
  if (!pc) fail_msg("PhysicallyContiguous with a mapper: %s", dkt_failure_text());
  assert_false(binfo(pc).contiguous);
  check_iova(pc, m, 0, false);                      /* one IOVA segment for all 256 KiB */
  check_physical(pc);
  /* the same under kIOMemoryMapperNone is contiguous RAM */
  IOBufferMemoryDescriptor *pn = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous | kIOMemoryMapperNone, 256 * KiB, 1);
  IOBufferMemoryDescriptor *hc = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
      kernel_task, kIODirectionInOut | kIOMemoryHostPhysicallyContiguous, 256 * KiB, MASK28);
  if (dkt_pool_on()) {
    if (!pn) fail_msg("PhysicallyContiguous|MapperNone: %s", dkt_failure_text());
    if (!hc) fail_msg("HostPhysicallyContiguous with a mapper: %s", dkt_failure_text());
  } else {
    /* 4K pages cannot promise 256 KiB of contiguous RAM */
    if (!pn) assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    if (!hc) assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  }
  if (pn) {
    dk_buffer_info bi = binfo(pn);
    assert_true(bi.contiguous);
    assert_null(bi.mapper);
    assert_int_equal(bi.iova, 0);
    const char *why = dkt_check_physical_promise(IOBufferMemoryDescriptor_getBytesNoCopy(pn), 256 * KiB, 0, 0, true);
    if (why) fail_msg("MapperNone contiguous: %s", why);
    IOByteCount l = 0;
    uint64_t a0 = IOMemoryDescriptor_getPhysicalSegment(MD(pn), 0, &l, 0);
    assert_int_equal(l, 256 * KiB);
    assert_int_equal(a0, IOMemoryDescriptor_getPhysicalSegment(MD(pn), 0, NULL, kIOMemoryMapperNone));
    check_physical(pn);
  }
  if (hc) {
    dk_buffer_info bi = binfo(hc);
    assert_true(bi.contiguous);
    assert_int_equal(bi.numAddressBits, 28);
    check_iova(hc, m, MASK28, false);
    const char *why = dkt_check_physical_promise(IOBufferMemoryDescriptor_getBytesNoCopy(hc), 256 * KiB, 0, 0, true);
    if (why) fail_msg("HostPhysicallyContiguous with a mapper: %s", why);
    IOByteCount l = 0;
    assert_true(IOMemoryDescriptor_getPhysicalSegment(MD(hc), 0, &l, kIOMemoryMapperNone) != 0);
    assert_int_equal(l, 256 * KiB);
  }
  OSSafeReleaseNULL(pc);
  OSSafeReleaseNULL(pn);
  OSSafeReleaseNULL(hc);
  assert_int_equal(minfo(m).mappings_live, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}
DKT_POOL_VARIANTS(contiguity_with_mapper)

/* kIOMemoryMapperNone in the options: no IOVA, and the mask binds the RAM again. */
static void mapper_none_option(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = soft_mapper(0);
  dk_mapper_set_system(m);
  /* a wide mask first: succeeds, physical addresses only */
  IOBufferMemoryDescriptor *w = mask_buffer(kIODirectionInOut | kIOMemoryMapperNone, 8192, 0xFFFFFFFFFFull);
  dk_buffer_info bi = binfo(w);
  assert_null(bi.mapper);
  assert_int_equal(bi.iova, 0);
  assert_int_equal(bi.numAddressBits, 64);
  IOByteCount l0 = 0, l1 = 0;
  uint64_t p0 = IOMemoryDescriptor_getPhysicalSegment(MD(w), 0, &l0, 0);
  uint64_t p1 = IOMemoryDescriptor_getPhysicalSegment(MD(w), 0, &l1, kIOMemoryMapperNone);
  assert_true(p0 != 0);
  assert_int_equal(p0, p1);
  assert_int_equal(l0, l1);
  check_physical(w);
  OSObject_release(w);
  assert_int_equal(minfo(m).buffers_mapped, 0);
  /* 28 bits: RAM below 256 MiB, which this kind of machine does not give user space */
  long mb = dk_option_get(DK_OPTION_LOWMEM_SEARCH_MB), ms = dk_option_get(DK_OPTION_LOWMEM_SEARCH_MS);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, 64);      /* keep the pool's search short */
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MS, 500);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
      kernel_task, kIODirectionInOut | kIOMemoryMapperNone, 4096, MASK28);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, mb);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MS, ms);
  if (!b) {
    print_message("28-bit RAM refused as expected: %s\n", dkt_failure_text());
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    /* the mask, or (the pool, with hugepages short) the resource it searched with */
    assert_true(dk_last_failure()->constraint == DK_CONSTRAINT_MASK ||
                dk_last_failure()->constraint == DK_CONSTRAINT_RESOURCE);
  } else {
    bi = binfo(b);
    assert_null(bi.mapper);
    assert_int_equal(bi.numAddressBits, 64);
    assert_int_equal(bi.physical_limit, MASK28);
    const char *why = dkt_check_physical_promise(IOBufferMemoryDescriptor_getBytesNoCopy(b), 4096, 0, MASK28, false);
    if (why) fail_msg("MapperNone with a 28-bit mask: %s", why);
    assert_true(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0) <= MASK28);
    OSObject_release(b);
  }
  assert_int_equal(minfo(m).mappings_live, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}
DKT_POOL_VARIANTS(mapper_none_option)

/* Alignment: the IOVA of the first byte is aligned as §2 promised. */
static void alignment_of_iova(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  const uint64_t aligns[] = { 64, 4096, 64 * KiB, 2 * MiB, 4 * MiB };
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
    uint64_t a = aligns[i];
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096 + 64, a);
    if (!b) {
      /* above a page XNU allocates aligned RAM too (rule A); 4K pages cannot */
      assert_true(a > page() && !dkt_pool_on());
      assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
      continue;
    }
    uint64_t iova = check_iova(b, m, 0, true);
    if (iova % a) fail_msg("alignment 0x%llx: IOVA 0x%llx", (unsigned long long)a, (unsigned long long)iova);
    OSObject_release(b);
  }
  /* withCapacity(cap, dir, true): alignment == capacity */
  IOBufferMemoryDescriptor *w = IOBufferMemoryDescriptor_withCapacity(256, kIODirectionInOut, true);
  assert_non_null(w);
  assert_int_equal(check_iova(w, m, 0, true) % 256, 0);
  OSObject_release(w);
  rec_check_sane();
  assert_int_equal(minfo(m).mappings_live, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}
DKT_POOL_VARIANTS(alignment_of_iova)

/* inTaskWithConstraints under a system mapper: the address the device is given (options 0, the
 * IOVA) must keep the constraints the caller named for it: the limit, the alignment, the
 * boundary. (dk.h: "verified through pagemap": the RAM keeps them too.) The limit is chosen
 * above all RAM, so the RAM side is free and only the IOVA side is in question. */
static void constraints_bind_the_iova(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  uint64_t top = dk_capabilities()->ram_top;
  if (!top) DKT_SKIP("the top of RAM is unknown");
  uint64_t limit = dk__next_pow2(top) - 1;    /* at or above the top of RAM: no RAM restriction */
  if (limit >= (1ull << 38)) DKT_SKIP("RAM reaches past 2^38: no room under the soft mapper's 2^39 aperture");
  bool pool = dkt_pool_on();
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = limit;
  c.boundary = 64 * KiB;
  c.alignment = pool ? 64 * KiB : 0;         /* 4K pages cannot promise more than a page */
  c.contiguous = pool;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 16 * KiB, &c);
  if (!b) fail_msg("inTaskWithConstraints: %s", dkt_failure_text());
  const char *why = dkt_check_physical_promise(IOBufferMemoryDescriptor_getBytesNoCopy(b), 16 * KiB, c.alignment,
                                               0, c.contiguous);
  if (why) fail_msg("RAM: %s", why);
  dk_buffer_info bi = binfo(b);
  assert_ptr_equal(bi.mapper, m);
  IOByteCount l = 0;
  uint64_t bus = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
  assert_int_equal(l, 16 * KiB);
  bool below = bus + 16 * KiB - 1 <= c.high, aligned = !c.alignment || bus % c.alignment == 0,
       inside = bus / c.boundary == (bus + 16 * KiB - 1) / c.boundary;
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  if (!below || !aligned || !inside)
    fail_msg("the bus address 0x%llx+0x4000 given to the device breaks the constraints:%s%s%s",
             (unsigned long long)bus, below ? "" : " above the limit;", aligned ? "" : " not 64 KiB aligned;",
             inside ? "" : " crosses a 64 KiB boundary");
  print_message("limit 0x%llx: bus address 0x%llx\n", (unsigned long long)limit, (unsigned long long)bus);
}
DKT_POOL_VARIANTS(constraints_bind_the_iova)

/* With a mapper, dk_constraints' low bound and segment limits bind the IOVA range too (it is
 * checked like frames are): a one-segment limit the range cannot keep is refused, a window's
 * low end is honoured. */
static void constraints_segments_and_low(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.max_segment_size = 4096;
  c.max_segments = 1;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 16 * KiB, &c);
  assert_null(b);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_SEGMENTS);
  assert_int_equal(minfo(m).mappings_live, 0);
  c.max_segments = 4;                          /* 16 KiB in 4 KiB segments: exactly enough */
  b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 16 * KiB, &c);
  if (!b) fail_msg("four 4 KiB segments: %s", dkt_failure_text());
  OSObject_release(b);
  c = DK_CONSTRAINTS_NONE;
  c.low = 1ull << 38;
  c.high = (1ull << 38) + (1ull << 30) - 1;
  b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 16 * KiB, &c);
  if (!b) fail_msg("window [2^38, 2^38 + 1 GiB): %s", dkt_failure_text());
  IOByteCount l = 0;
  uint64_t iova = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  if (iova < c.low || iova + 16 * KiB - 1 > c.high)
    fail_msg("IOVA 0x%llx is outside the window [0x%llx, 0x%llx]", (unsigned long long)iova,
             (unsigned long long)c.low, (unsigned long long)c.high);
}

/* An aperture that holds no whole page gives no space (its start rounded up must not wrap
 * round to 0); one that starts in page 0 loses only page 0. */
static void iova_aperture_edges(void **state)
{
  (void)state;
  dk_iova_space *s = &g_sp;
  const uint64_t r[2][2] = { { UINT64_MAX - 0xffe, UINT64_MAX }, { 0x10, 0x3fff } };
  assert_true(dk__iova_init(s, r, 2, 4096));
  assert_int_equal(extents(s), 1);
  assert_int_equal(g_ext[0].addr, 4096);
  assert_int_equal(g_ext[0].len, 3 * 4096);
  uint64_t x = 0;
  assert_false(dk__iova_alloc(s, 4096, 4096, 0xfff, 0, &x));   /* nothing at or below page 0 */
}

/* Under a mapper: a boundary below the page size is kept when the address does not cross it
 * (an IOVA's offset in its page is the address's), and a range longer than the boundary with a
 * segment limit starts on a line whatever the pool handed out before. */
static void subpage_boundary_and_segments(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.boundary = 2048;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 1024, &c);
  if (!b) fail_msg("boundary 2 KiB, 1 KiB: %s", dkt_failure_text());
  IOByteCount l = 0;
  uint64_t bus = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
  assert_int_equal(bus / 2048, (bus + 1023) / 2048);
  OSObject_release(b);
  for (uint64_t first = 0; first <= 64 * KiB; first += 16 * KiB) {
    IOBufferMemoryDescriptor *f = first ? IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, first, 4096) : NULL;
    c = DK_CONSTRAINTS_NONE;
    c.boundary = 64 * KiB;
    c.max_segments = 2;
    b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, 96 * KiB, &c);
    if (!b) fail_msg("96 KiB in two 64 KiB-bounded segments after %llu KiB: %s", (unsigned long long)(first / KiB),
                     dkt_failure_text());
    bus = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
    assert_int_equal(bus % (64 * KiB), 0);
    OSObject_release(b);
    OSObject_release(f);
  }
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* Freeing whole ranges never needs memory: with every heap allocation failing, a hundred
 * isolated ranges still go back and the space is whole again. */
static void iova_free_needs_no_memory(void **state)
{
  (void)state;
  dk_iova_space *s = &g_sp;
  const uint64_t r[1][2] = { { 0, (1ull << 32) - 1 } };
  assert_true(dk__iova_init(s, r, 1, 4096));
  uint64_t x[100];
  for (int i = 0; i < 100; i++) assert_true(dk__iova_alloc(s, 4096, 4096, 0, 0, &x[i]));
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC), ENOMEM);
  bool all = true;
  for (int i = 0; i < 100; i += 2) all &= dk__iova_free(s, x[i], 4096);   /* every other: isolated */
  for (int i = 1; i < 100; i += 2) all &= dk__iova_free(s, x[i], 4096);
  dk__fault_disarm();
  assert_true(all);
  assert_int_equal(s->used, 0);
  assert_int_equal(extents(s), 1);
}

/* A buffer of no task is mapped too (the device is the point of it). */
static void null_task_buffer(void **state)
{
  (void)state;
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, kIODirectionInOut, 3 * 4096, MASK28);
  if (!b) fail_msg("NULL task: %s", dkt_failure_text());
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  IOByteCount l = 0;
  uint64_t iova = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
  assert_true(iova != 0 && iova + 3 * 4096 - 1 <= MASK28);
  assert_int_equal(l, 3 * 4096);
  /* what the device reaches is the buffer's memory: write through a map, read through the IOVA */
  IOMemoryMap *map = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(map);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  p[2 * 4096 + 7] = 0x7e;
  uint8_t *dev = (uint8_t *)(uintptr_t)rec_translate(iova + 2 * 4096 + 7);
  assert_non_null(dev);
  assert_int_equal(*dev, 0x7e);
  rec_check_sane();
  OSObject_release(map);
  OSObject_release(b);
  assert_int_equal(minfo(m).mappings_live, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* ==== 3. sharing ============================================================================ */

static void small_buffers_share(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  bool pool = dkt_pool_on();
  const size_t N = pool ? 2000 : 64;     /* 4K pages: one memfd (and one mapping) each */
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  IOBufferMemoryDescriptor **b = calloc(N, sizeof *b);
  uint64_t *iova = calloc(N, sizeof *iova);
  assert_non_null(b);
  assert_non_null(iova);
  for (size_t i = 0; i < N; i++) {
    b[i] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 1);
    if (!b[i]) fail_msg("buffer %zu: %s", i, dkt_failure_text());
    dk_buffer_info bi = binfo(b[i]);
    assert_ptr_equal(bi.mapper, m);
    iova[i] = bi.iova;
    assert_true(iova[i] != 0);
    uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b[i]);
    va[0] = (uint8_t)i;
    va[63] = (uint8_t)(i >> 8);
    if (rec_translate(iova[i]) != (uint64_t)(uintptr_t)va || rec_translate(iova[i] + 63) != (uint64_t)(uintptr_t)(va + 63))
      fail_msg("buffer %zu: IOVA 0x%llx does not reach its bytes", i, (unsigned long long)iova[i]);
  }
  dk_mapper_info mi = minfo(m);
  print_message("%zu buffers of 64 B: %u mappings (%s), %llu bytes mapped\n", N, mi.mappings_live,
                pool ? "pool" : "4K pages", (unsigned long long)mi.bytes_mapped);
  assert_int_equal(mi.buffers_mapped, N);
  assert_int_equal(mi.mappings_live, g_rec.n);
  if (pool) assert_true(mi.mappings_live <= 8);     /* 125 KiB of buffers: a hugepage or two */
  else assert_int_equal(mi.mappings_live, N);       /* separate mappings are never merged */
  /* distinct buffers, distinct IOVA ranges; each reaches only its own bytes */
  for (size_t i = 0; i < N; i++) {
    uint8_t *dev = (uint8_t *)(uintptr_t)rec_translate(iova[i]);
    assert_int_equal(dev[0], (uint8_t)i);
    assert_int_equal(dev[63], (uint8_t)(i >> 8));
  }
  rec_check_sane();
  /* free in a scattered order; the mappings go with their last buffer */
  for (size_t step = 0; step < 7; step++)
    for (size_t i = step; i < N; i += 7) OSObject_release(b[i]);
  mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(mi.bytes_mapped, 0);
  assert_int_equal(g_rec.n, 0);
  assert_int_equal(g_rec.bad_unmaps, 0);
  free(b);
  free(iova);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}
DKT_POOL_VARIANTS(small_buffers_share)

/* dk__mapper_map, reporting the IOVA (0 when it failed) as well. */
static IOReturn map_use(IOMapper *m, const void *va, uint64_t len, uint64_t g, const dk_iova_spec *spec,
                        uint64_t *iova, dk_mapping *u)
{
  IOReturn rc = dk__mapper_map(m, va, len, g, spec, u);
  *iova = rc == kIOReturnSuccess ? u->iova : 0;
  return rc;
}

/* The mapping table directly, with made-up addresses (nothing is programmed or touched). */
static void table_rules(void **state)
{
  (void)state;
  const uint64_t P = page(), G = 2 * MiB;
  IOMapper *m = rec_mapper(0);
  const dk_iova_spec none = { 0, 0, 0, 0 };
  uint64_t i1, i2, i3, i4, i5;
  dk_mapping u1 = { 0 }, u2 = { 0 }, u3 = { 0 }, u4 = { 0 }, u5 = { 0 };
  const uint8_t *base = (const uint8_t *)(uintptr_t)0x7f0000200000ull;     /* 2 MiB aligned */
  dk_clear_failure();
  assert_int_equal(map_use(m, base + 0x1000, 0x1000, G, &none, &i1, &u1), kIOReturnSuccess);
  assert_int_equal(g_rec.maps, 1);
  assert_int_equal(g_rec.live[0].va, (uint64_t)(uintptr_t)base);           /* whole granules */
  assert_int_equal(g_rec.live[0].len, G);
  assert_int_equal(g_rec.live[0].iova % G, 0);
  assert_int_equal(i1, g_rec.live[0].iova + 0x1000);
  assert_int_equal(i1 + 0x1000 - 1, (1ull << 39) - 1 - G + 0x2000);          /* highest first */
  /* inside the same granule: shared */
  assert_int_equal(map_use(m, base + 0x5040, 0x100, G, &none, &i2, &u2), kIOReturnSuccess);
  assert_int_equal(g_rec.maps, 1);
  assert_int_equal(i2, i1 - 0x1000 + 0x5040);
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.mappings_live, 1);
  assert_int_equal(mi.buffers_mapped, 2);
  assert_int_equal(mi.bytes_mapped, G);
  /* the same range under a 32-bit limit: the existing IOVAs do not qualify, a new mapping below it */
  const dk_iova_spec s32 = { 0xffffffffull, 0, 0, 0 };
  assert_int_equal(map_use(m, base + 0x5040, 0x100, G, &s32, &i3, &u3), kIOReturnSuccess);
  assert_int_equal(g_rec.maps, 2);
  assert_true(i3 + 0x100 - 1 <= 0xffffffffull);
  assert_int_equal(i3 % G, 0x5040);
  /* now a 32-bit request in that granule shares the second mapping */
  assert_int_equal(map_use(m, base + 0x9000, 0x1000, G, &s32, &i4, &u4), kIOReturnSuccess);
  assert_int_equal(g_rec.maps, 2);
  assert_int_equal(i4, i3 - 0x5040 + 0x9000);
  /* a range running past the granule: a new mapping of two granules */
  assert_int_equal(map_use(m, base + G - 0x1000, 0x2000, G, &none, &i5, &u5), kIOReturnSuccess);
  assert_int_equal(g_rec.maps, 3);
  assert_int_equal(g_rec.live[2].len, 2 * G);
  assert_int_equal(g_rec.live[2].va, (uint64_t)(uintptr_t)base);
  assert_int_equal(minfo(m).mappings_live, 3);
  assert_int_equal(g_rec.overlaps, 0);
  /* uses go one at a time; the mapping with its last one */
  dk__mapper_unmap(m, &u1);
  assert_int_equal(g_rec.unmaps, 0);
  dk__mapper_unmap(m, &u2);
  assert_int_equal(g_rec.unmaps, 1);
  dk__mapper_unmap(m, &u3);
  dk__mapper_unmap(m, &u4);
  dk__mapper_unmap(m, &u5);
  assert_int_equal(g_rec.unmaps, 3);
  assert_int_equal(g_rec.bad_unmaps, 0);
  mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.mappings_peak, 3);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(mi.bytes_mapped, 0);
  assert_int_equal(mi.double_unmaps, 0);

  /* alignment: a VA aligned in its granule gets a granule mapping (IOVA aligned to both)... */
  const dk_iova_spec a64k = { 0, 64 * KiB, 0, 0 };
  assert_int_equal(map_use(m, base + 0x40000, 0x3000, G, &a64k, &i1, &u1), kIOReturnSuccess);
  assert_int_equal(i1 % (64 * KiB), 0);
  assert_int_equal(g_rec.live[g_rec.n - 1].len, G);
  /* ...one that is not (0x1000 into it) a page-granular mapping of its own, aligned */
  assert_int_equal(map_use(m, base + 0x1000, 0x1000, G, &a64k, &i2, &u2), kIOReturnSuccess);
  assert_int_equal(i2 % (64 * KiB), 0);
  assert_true(g_rec.live[g_rec.n - 1].len <= 64 * KiB);    /* page-granular */
  /* an alignment the VA's offset in its page can never give */
  const dk_iova_spec a128 = { 0, 128, 0, 0 };
  dk_clear_failure();
  assert_int_equal(map_use(m, base + 0x40, 0x40, G, &a128, &i3, &u3), kIOReturnNoResources);
  assert_false(dk__mapping_live(&u3));
  assert_int_equal(i3, 0);
  dk__mapper_unmap(m, &u1);
  dk__mapper_unmap(m, &u2);

  /* a boundary: the range crosses no multiple of it in IOVA space */
  const dk_iova_spec b64k = { 0, 0, 64 * KiB, 0 };
  const uint8_t *cross = base + 0x10000 - 0x1000;     /* crosses a 64 KiB line in VA space */
  assert_int_equal(map_use(m, cross, 0x2000, G, &b64k, &i1, &u1), kIOReturnSuccess);
  if (i1 / (64 * KiB) != (i1 + 0x2000 - 1) / (64 * KiB))
    fail_msg("IOVA 0x%llx+0x2000 crosses a 64 KiB line", (unsigned long long)i1);
  /* a boundary below a page and a range crossing a page in VA: impossible */
  const dk_iova_spec b2k = { 0, 0, 2048, 0 };
  dk_clear_failure();
  assert_int_equal(map_use(m, base + 0xff0, 0x20, G, &b2k, &i2, &u2), kIOReturnNoResources);
  /* a range longer than its boundary ignores it */
  assert_int_equal(map_use(m, cross, 0x3000, G, &b2k, &i2, &u2), kIOReturnSuccess);
  dk__mapper_unmap(m, &u1);
  dk__mapper_unmap(m, &u2);

  /* bad requests */
  dk_clear_failure();
  assert_int_equal(map_use(m, base, 0, G, &none, &i1, &u1), kIOReturnBadArgument);
  assert_false(dk__mapping_live(&u1));
  dk_clear_failure();
  assert_int_equal(map_use(dk_mapper_identity(), base, P, G, &none, &i1, &u1), kIOReturnUnsupported);
  assert_false(dk__mapping_live(&u1));
  dk__mapper_unmap(dk_mapper_identity(), NULL);     /* nothing happens */
  dk__mapper_unmap(m, NULL);
  assert_int_equal(minfo(m).double_unmaps, 0);
  assert_int_equal(minfo(m).mappings_live, 0);
  assert_int_equal(g_rec.n, 0);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  assert_int_equal(g_rec.closes, 1);
}

/* A small IOVA space: exhaustion, the page-granular fallback, reuse. */
static void table_exhaustion(void **state)
{
  (void)state;
  const uint64_t P = page();
  const uint64_t r[1][2] = { { 0x100000, 0x107fff } };    /* 8 pages */
  IOMapper *m = dk__mapper_create_soft(r, 1, 0);
  assert_non_null(m);
  const dk_iova_spec none = { 0, 0, 0, 0 };
  dk_mapping u[9] = { { 0 } };
  uint64_t iova[9];
  const uint8_t *base = (const uint8_t *)(uintptr_t)0x7f0000000000ull;
  /* a 2 MiB granule does not fit: each falls back to whole pages */
  for (int i = 0; i < 8; i++) {
    dk_clear_failure();
    if (map_use(m, base + (uint64_t)i * 0x10000, P, 2 * MiB, &none, &iova[i], &u[i]) != kIOReturnSuccess)
      fail_msg("page %d: %s", i, dkt_failure_text());
    assert_true(iova[i] >= 0x100000 && iova[i] <= 0x107000);
  }
  dk_clear_failure();
  assert_int_equal(map_use(m, base + 0x100000, P, 2 * MiB, &none, &iova[8], &u[8]), kIOReturnNoResources);
  assert_int_equal(dk_last_failure()->code, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "IOVA"));
  assert_int_equal(minfo(m).mappings_live, 8);
  uint64_t freed = iova[3];
  dk__mapper_unmap(m, &u[3]);
  assert_int_equal(map_use(m, base + 0x100000, P, 2 * MiB, &none, &iova[8], &u[8]), kIOReturnSuccess);
  assert_int_equal(iova[8], freed);
  for (int i = 0; i < 9; i++)
    if (i != 3) dk__mapper_unmap(m, &u[i]);
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.double_unmaps, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  /* all 8 pages free again, in one piece */
  assert_int_equal(map_use(m, base, 8 * P, P, &none, &iova[0], &u[0]), kIOReturnSuccess);
  assert_int_equal(iova[0], 0x100000);
  dk__mapper_unmap(m, &u[0]);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* The backend refusing a mapping: the error is the kernel's, and nothing is kept. */
static void table_backend_fails(void **state)
{
  (void)state;
  IOMapper *m = rec_mapper(0);
  const dk_iova_spec none = { 0, 0, 0, 0 };
  const uint8_t *base = (const uint8_t *)(uintptr_t)0x7f0000000000ull;
  uint64_t iova = 1;
  dk_mapping u = { 0 };
  g_rec.fail_errno = EFAULT;
  dk_clear_failure();
  assert_int_equal(map_use(m, base, 4096, 4096, &none, &iova, &u), kIOReturnVMError);
  assert_false(dk__mapping_live(&u));
  assert_int_equal(iova, 0);
  assert_true(dkt_text_has(dk_last_failure()->text, strerror(EFAULT)));
  g_rec.fail_errno = ENOMEM;
  dk_clear_failure();
  assert_int_equal(map_use(m, base, 4096, 4096, &none, &iova, &u), kIOReturnNoMemory);
  g_rec.fail_errno = 0;
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.bytes_mapped, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  /* the IOVAs were given back: the next mapping gets the top of the space */
  assert_int_equal(map_use(m, base, 4096, 4096, &none, &iova, &u), kIOReturnSuccess);
  assert_int_equal(iova, (1ull << 39) - 4096);
  dk__mapper_unmap(m, &u);
  /* the same through a buffer: creation fails with the kernel's reason, nothing leaks */
  dk_mapper_set_system(m);
  g_rec.fail_errno = EFAULT;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 1);
  assert_null(b);
  assert_int_equal(dk_last_failure()->code, kIOReturnVMError);
  g_rec.fail_errno = 0;
  assert_int_equal(minfo(m).buffers_mapped, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* A backend whose unmap the kernel refuses, and whose map fails without saying why. */
static int g_quirk_unmap_rc, g_quirk_map_fail;
static int quirk_map(IOMapper *m, uint64_t va, uint64_t iova, uint64_t len)
{
  (void)m; (void)va; (void)iova; (void)len;
  if (!g_quirk_map_fail) return 0;
  errno = 0;
  return -1;
}
static int quirk_unmap(IOMapper *m, uint64_t iova, uint64_t len)
{
  (void)m; (void)iova; (void)len;
  return g_quirk_unmap_rc;
}
static const dk_mapper_ops g_quirk_ops = { quirk_map, quirk_unmap, NULL };

/* An IOVA the kernel would not unmap is never handed out again; a map failing with no errno is
 * an I/O error; a granule below the page is a page. */
static void table_backend_quirks(void **state)
{
  (void)state;
  const uint64_t P = page();
  const uint64_t r[1][2] = { { 0x100000, 0x103fff } };     /* 4 pages */
  IOMapper *m = dk__mapper_new(DK_MAPPER_SOFTWARE, &g_quirk_ops, r, 1);
  assert_non_null(m);
  const dk_iova_spec none = { 0, 0, 0, 0 };
  const uint8_t *base = (const uint8_t *)(uintptr_t)0x7f0000000000ull;
  dk_mapping u = { 0 };
  uint64_t first = 0, again = 0;
  assert_int_equal(map_use(m, base + 10, 100, 0, &none, &first, &u), kIOReturnSuccess);
  assert_int_equal(first & (P - 1), 10);
  assert_int_equal(minfo(m).bytes_mapped, P);
  g_quirk_unmap_rc = -1;
  dk__mapper_unmap(m, &u);
  g_quirk_unmap_rc = 0;
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.double_unmaps, 0);
  assert_int_equal(m->space.used, P);                /* retired: still used */
  for (int i = 0; i < 3; i++) {
    dk_mapping v = { 0 };
    assert_int_equal(map_use(m, base + (uint64_t)(i + 1) * 0x10000, P, P, &none, &again, &v), kIOReturnSuccess);
    assert_int_not_equal(again & ~(P - 1), first & ~(P - 1));
    dk__mapper_unmap(m, &v);
  }
  /* the three free pages are all there is: four do not fit */
  dk_mapping w = { 0 };
  assert_int_equal(map_use(m, base, 4 * P, P, &none, &again, &w), kIOReturnNoResources);
  g_quirk_map_fail = 1;
  dk_clear_failure();
  assert_int_equal(map_use(m, base, P, P, &none, &again, &w), kIOReturnVMError);
  assert_true(dkt_text_has(dk_last_failure()->text, strerror(EIO)));
  g_quirk_map_fail = 0;
  assert_int_equal(minfo(m).mappings_live, 0);
  assert_int_equal(m->space.used, P);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* Refused arguments of the public calls, the range count kept in the info, the mapper's own
 * allocations failing, and the tracker's report: cut to the room given, none asked for,
 * double unmaps, the debug message. */
static void tracker_reports(void **state)
{
  (void)state;
  const uint64_t P = page();
  /* not a mapper, no info */
  IOMapper *m = soft_mapper(0);
  dk_mapper_info mi;
  assert_int_equal(dk_mapper_get_info(m, NULL), kIOReturnBadArgument);
  uint64_t junk[32] = { 0 };
  assert_int_equal(dk_mapper_get_info((IOMapper *)(void *)junk, &mi), kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "not a mapper"));
  assert_false(dk__mapper_translates((IOMapper *)(void *)junk));
  assert_false(dk__mapper_translates(dk_mapper_identity()));
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  /* more apertures than the info holds: the first eight */
  uint64_t many[10][2];
  for (int i = 0; i < 10; i++) {
    many[i][0] = 0x100000ull * (uint64_t)(i + 1);
    many[i][1] = many[i][0] + 0xfffff;
  }
  m = dk__mapper_create_soft((const uint64_t (*)[2])many, 10, 0);
  assert_non_null(m);
  mi = minfo(m);
  assert_int_equal(mi.iova_range_count, 8);
  assert_int_equal(mi.iova_ranges[7].start, many[7][0]);
  assert_int_equal(m->space.total, 10 * 0x100000ull);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  /* no memory for the mapper or its IOVA space: NULL with the reason, nothing kept */
  dk__thread_caches_flush();
  long heap = dk__prim_counters().heap_blocks;
  unsigned long n = 1;
  for (;; n++) {
    dk__fault_arm(n, 0, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC) | DK_PRIM_BIT(DK_PRIM_REALLOC), 0);
    dk_clear_failure();
    m = dk__mapper_create_soft((const uint64_t (*)[2])many, 10, 3);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    if (!fired) break;
    assert_null(m);
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    assert_true(dkt_text_has(dk_last_failure()->text, "no memory for the"));
    assert_int_equal(dk__prim_counters().heap_blocks, heap);
  }
  assert_true(n > 1);
  assert_non_null(m);
  assert_int_equal(minfo(m).dma_limit, 3);

  /* two mappings left live, one use unmapped twice */
  const dk_iova_spec none = { 0, 0, 0, 0 };
  const uint8_t *base = (const uint8_t *)(uintptr_t)0x7f0000000000ull;
  dk_mapping u[3] = { { 0 } };
  uint64_t iova;
  for (int i = 0; i < 3; i++)
    assert_int_equal(map_use(m, base + (uint64_t)i * 0x100000, P, P, &none, &iova, &u[i]), kIOReturnSuccess);
  dk__mapper_unmap(m, &u[2]);
  dk__mapper_unmap(m, &u[2]);
  assert_int_equal(minfo(m).double_unmaps, 1);
  /* the report cut to 24 bytes: a prefix of the first line, terminated */
  char small[24];
  memset(small, 'x', sizeof small);
  dk__mapper_retain(m);
  assert_int_equal(dk_mapper_close(m, small, sizeof small), 2);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, "leaked: IOVA 0x", 15);
  /* no report asked for, and the debug message */
  long debug = dk_option_get(DK_OPTION_MAPPER_DEBUG);
  dk_option_set(DK_OPTION_MAPPER_DEBUG, 1);
  dk__mapper_retain(m);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 2);
  dk_option_set(DK_OPTION_MAPPER_DEBUG, debug);
  char full[512];
  assert_int_equal(dk_mapper_close(m, full, sizeof full), 2);
  assert_true(dkt_text_has(full, "double unmaps: 1"));
  /* the mappings keep the mapper; the last unmap frees it */
  dk__mapper_unmap(m, &u[0]);
  dk__mapper_unmap(m, &u[1]);
}

/* ==== 4. the kernel's mapping limit ========================================================= */

static void mapping_limit(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  bool pool = dkt_pool_on();
  /* buffers in distinct granules: a page each (4K pages), a whole hugepage each (pool) */
  uint64_t size = pool ? 2 * MiB : 4096, align = pool ? 2 * MiB : 1;
  IOMapper *m = soft_mapper(3);
  dk_mapper_set_system(m);
  assert_int_equal(minfo(m).dma_limit, 3);
  IOBufferMemoryDescriptor *b[4];
  for (int i = 0; i < 3; i++) {
    b[i] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, align);
    if (!b[i]) fail_msg("buffer %d of 3: %s", i, dkt_failure_text());
    assert_int_equal(minfo(m).mappings_live, (uint32_t)i + 1);
  }
  b[3] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, align);
  if (b[3]) fail_msg("a 4th mapping beyond the limit of 3 was made (%u live)", minfo(m).mappings_live);
  assert_int_equal(dk_last_failure()->code, kIOReturnNoResources);
  if (!dkt_text_has(dk_last_failure()->text, "limit"))
    fail_msg("the failure does not name the limit: %s", dkt_failure_text());
  assert_int_equal(minfo(m).mappings_live, 3);
  assert_int_equal(minfo(m).buffers_mapped, 3);
  /* freeing one gives its mapping back: a new one fits */
  OSObject_release(b[1]);
  b[1] = NULL;
  b[3] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, align);
  if (!b[3]) fail_msg("after freeing one: %s", dkt_failure_text());
  check_iova(b[3], m, 0, false);
  assert_int_equal(minfo(m).mappings_live, 3);
  assert_int_equal(minfo(m).mappings_peak, 3);
  for (int i = 0; i < 4; i++) OSSafeReleaseNULL(b[i]);
  assert_int_equal(minfo(m).mappings_live, 0);

  /* pageable memory meets the limit at prepare: refused, and left unprepared */
  IOBufferMemoryDescriptor *w[3];
  for (int i = 0; i < 3; i++) {
    w[i] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, align);
    assert_non_null(w[i]);
  }
  IOBufferMemoryDescriptor *pg = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, 8192, 1);
  assert_non_null(pg);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(pg), kIODirectionNone), kIOReturnNoResources);
  dk_buffer_info bi = binfo(pg);
  assert_int_equal(bi.prepare_count, 0);
  assert_false(bi.wired);
  assert_int_equal(bi.iova, 0);
  OSObject_release(w[0]);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(pg), kIODirectionNone), kIOReturnSuccess);
  assert_true(binfo(pg).iova != 0);
  OSObject_release(pg);                 /* released while prepared: unmapped with it */
  OSObject_release(w[1]);
  OSObject_release(w[2]);
  assert_int_equal(minfo(m).mappings_live, 0);
  assert_int_equal(minfo(m).buffers_mapped, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}
DKT_POOL_VARIANTS(mapping_limit)

/* ==== 5. the debug tracker and the system mapper's lifetime ================================ */

static void tracker_and_lifetime(void **state)
{
  (void)state;
  IOMapper *m1 = soft_mapper(0);
  dk_mapper_set_system(m1);
  IOBufferMemoryDescriptor *b1 = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 4096);
  assert_non_null(b1);
  dk_buffer_info bi1 = binfo(b1);
  assert_ptr_equal(bi1.mapper, m1);
  assert_true(bi1.iova != 0);
  /* an unmap of a use that is not live (one never mapped, or given back already) */
  dk_mapping local = { 0 };
  dk__mapper_unmap(m1, &local);
  dk_mapper_info mi = minfo(m1);
  assert_int_equal(mi.double_unmaps, 1);
  assert_int_equal(mi.buffers_mapped, 1);      /* the real use is untouched */
  assert_int_equal(mi.mappings_live, 1);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b1), 0, NULL, 0), bi1.iova);

  /* replace the system mapper: old buffers keep theirs, new ones get the new one */
  IOMapper *m2 = soft_mapper(0);
  dk_mapper_set_system(m2);
  assert_ptr_equal(dk_mapper_get_system(), m2);
  IOBufferMemoryDescriptor *b2 = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 4096);
  assert_non_null(b2);
  assert_ptr_equal(binfo(b2).mapper, m2);
  assert_ptr_equal(binfo(b1).mapper, m1);
  assert_int_equal(minfo(m1).buffers_mapped, 1);
  assert_int_equal(minfo(m2).buffers_mapped, 1);

  /* closing with a live buffer: reported, with its IOVA; the mapper lives on for the buffer */
  char report[512];
  memset(report, 'x', sizeof report);
  unsigned leaks = dk_mapper_close(m1, report, sizeof report);
  assert_int_equal(leaks, 1);
  /* "IOVA <start>+<length>": the mapping, which holds the buffer's IOVA */
  const char *at = strstr(report, "IOVA 0x");
  unsigned long long rs = 0, rl = 0;
  if (!at || sscanf(at, "IOVA 0x%llx+0x%llx", &rs, &rl) != 2 || bi1.iova < rs || bi1.iova + 4096 > rs + rl)
    fail_msg("the report does not name the range of IOVA 0x%llx: %s", (unsigned long long)bi1.iova, report);
  if (!dkt_text_has(report, "double unmaps: 1")) fail_msg("the report does not count the double unmap: %s", report);
  assert_int_equal(minfo(m1).leaks_reported, 1);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b1), 0, NULL, 0), bi1.iova);

  /* none: physical addresses again */
  dk_mapper_set_system(NULL);
  assert_null(dk_mapper_get_system());
  IOBufferMemoryDescriptor *b3 = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 4096);
  assert_non_null(b3);
  dk_buffer_info bi3 = binfo(b3);
  assert_null(bi3.mapper);
  assert_int_equal(bi3.iova, 0);
  assert_int_equal(bi3.numAddressBits, 64);
  if (dkt_pfn_readable()) {
    uint64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b3), 0, NULL, 0);
    assert_int_equal(pa, IOMemoryDescriptor_getPhysicalSegment(MD(b3), 0, NULL, kIOMemoryMapperNone));
    check_physical(b3);
  }
  /* the last buffer of the closed mapper goes: so does the mapper (ASan sees a later use) */
  OSObject_release(b1);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b2), 0, NULL, 0), binfo(b2).iova);
  /* a small report buffer is cut, not overrun */
  char tiny[12];
  memset(tiny, 'x', sizeof tiny);
  assert_int_equal(dk_mapper_close(m2, tiny, sizeof tiny), 1);
  assert_true(memchr(tiny, '\0', sizeof tiny) != NULL);
  OSObject_release(b2);
  OSObject_release(b3);

  /* the public calls on what is not a mapper */
  dk_mapper_info junk;
  assert_int_equal(dk_mapper_get_info(NULL, &junk), kIOReturnBadArgument);
  assert_int_equal(dk_mapper_close(NULL, report, sizeof report), 0);
  assert_string_equal(report, "");
  assert_int_equal(dk_mapper_vfio_device_fd(NULL), -1);
  assert_int_equal(dk_mapper_vfio_container_fd(dk_mapper_identity()), -1);
}

/* A clean close reports nothing, and the option prints nothing either. */
static void tracker_clean(void **state)
{
  (void)state;
  IOMapper *m = soft_mapper(0);
  dk_mapper_set_system(m);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, 1);
  assert_non_null(b);
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_vfio_device_fd(m), -1);
  char report[64] = "junk";
  assert_int_equal(dk_mapper_close(m, report, sizeof report), 0);
  assert_string_equal(report, "");
}

/* ==== 6. pageable buffers: an IOVA while prepared ========================================== */

static void pageable_mapped_while_prepared(void **state)
{
  (void)state;
  IOMapper *m = rec_mapper(0);
  dk_mapper_set_system(m);
  const uint64_t size = 3 * 4096 + 5;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
      kernel_task, kIOMemoryPageable | kIODirectionInOut, size, MASK28);
  if (!b) fail_msg("pageable: %s", dkt_failure_text());
  dk_buffer_info bi = binfo(b);
  assert_ptr_equal(bi.mapper, m);
  assert_int_equal(bi.iova, 0);
  assert_int_equal(bi.numAddressBits, 28);
  assert_int_equal(minfo(m).mappings_live, 0);
  IOByteCount l = 77;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0), 0);
  assert_int_equal(l, 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotReady);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, kIOMemoryMapperNone), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotReady);

  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  uint64_t iova = check_iova(b, m, MASK28, true);
  assert_int_equal(minfo(m).mappings_live, 1);
  if (dkt_pfn_readable()) check_physical(b);
  rec_check_sane();
  /* counted: a second prepare keeps the IOVA; the first complete keeps it too */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0), iova);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0), iova);
  assert_int_equal(minfo(m).mappings_live, 1);
  /* the last complete unmaps */
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  dk_mapper_info mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(binfo(b).iova, 0);
  assert_int_equal(g_rec.n, 0);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotReady);
  /* an unbalanced complete changes nothing */
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(minfo(m).double_unmaps, 0);
  /* prepared again, then released while prepared */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionOut), kIOReturnSuccess);
  check_iova(b, m, MASK28, true);
  OSObject_release(b);
  mi = minfo(m);
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(mi.double_unmaps, 0);
  assert_int_equal(g_rec.bad_unmaps, 0);

  /* wired buffers stay mapped through unbalanced completes (wired for life) */
  IOBufferMemoryDescriptor *w = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 1);
  assert_non_null(w);
  uint64_t wi = binfo(w).iova;
  assert_int_equal(IOMemoryDescriptor_complete(MD(w), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(MD(w), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(w), 0, NULL, 0), wi);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(w), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(w), 0, NULL, 0), wi);
  assert_int_equal(minfo(m).mappings_live, 1);
  OSObject_release(w);
  assert_int_equal(minfo(m).mappings_live, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* ==== 7. identity and VFIO ================================================================== */

static void identity_is_none(void **state)
{
  (void)state;
  IOMapper *id = dk_mapper_identity();
  assert_non_null(id);
  dk_mapper_info mi = minfo(id);
  assert_int_equal(mi.kind, DK_MAPPER_IDENTITY);
  assert_int_equal(mi.mappings_live, 0);
  dk_mapper_set_system(id);
  assert_null(dk_mapper_get_system());          /* identity is what "none" means */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * 4096, 1);
  assert_non_null(b);
  dk_buffer_info bi = binfo(b);
  assert_null(bi.mapper);
  assert_int_equal(bi.iova, 0);
  if (dkt_pfn_readable()) {
    IOByteCount l0 = 0, l1 = 0;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l0, 0),
                     IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l1, kIOMemoryMapperNone));
    assert_int_equal(l0, l1);
    check_physical(b);
  }
  OSObject_release(b);
  /* closing the identity mapper does nothing, however often */
  assert_int_equal(dk_mapper_close(id, NULL, 0), 0);
  assert_int_equal(dk_mapper_close(id, NULL, 0), 0);
  assert_ptr_equal(dk_mapper_identity(), id);
  assert_int_equal(minfo(id).kind, DK_MAPPER_IDENTITY);
}

static void vfio_refuses_cleanly(void **state)
{
  (void)state;
  int fds = dkt_fd_count();
  long heap = dk__prim_counters().heap_blocks;
  IOMapper *out = (IOMapper *)(uintptr_t)1;
  /* garbage */
  const char *bad[] = { "", "hello", "0000:00:02.0/../..", "0000:00:zz.0", "../../../dev/null",
                        "0000:00:02.0:0000:00:02.0:0000:00:02.0" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    out = (IOMapper *)(uintptr_t)1;
    IOReturn rc = dk_mapper_open_vfio(bad[i], &out);
    if (rc != kIOReturnBadArgument) fail_msg("\"%s\": %s, expected kIOReturnBadArgument", bad[i], dk_ioreturn_name(rc));
    assert_null(out);
    assert_true(dk_last_failure()->text[0] != '\0');
  }
  assert_int_equal(dk_mapper_open_vfio(NULL, &out), kIOReturnBadArgument);
  assert_int_equal(dk_mapper_open_vfio("0000:00:02.0", NULL), kIOReturnBadArgument);
  /* well formed, no such device */
  out = (IOMapper *)(uintptr_t)1;
  assert_int_equal(dk_mapper_open_vfio("0000:ff:1f.7", &out), kIOReturnNoDevice);
  assert_null(out);
  /* a real device on a machine without an IOMMU (or without VFIO) */
  DIR *d = opendir("/sys/bus/pci/devices");
  struct dirent *e = NULL;
  char bdf[sizeof e->d_name] = "";
  while (d && (e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') {
      snprintf(bdf, sizeof bdf, "%s", e->d_name);
      break;
    }
  if (d) closedir(d);
  if (bdf[0]) {
    out = (IOMapper *)(uintptr_t)1;
    IOReturn rc = dk_mapper_open_vfio(bdf, &out);
    print_message("open_vfio(%s): %s: %s\n", bdf, dk_ioreturn_name(rc), dk_last_failure()->text);
    if (rc == kIOReturnSuccess) {
      /* a machine with an IOMMU and the device bound to vfio-pci: not this test's business */
      assert_non_null(out);
      assert_int_equal(dk_mapper_close(out, NULL, 0), 0);
    } else {
      assert_null(out);
      assert_true(rc == kIOReturnUnsupported || rc == kIOReturnNoDevice || rc == kIOReturnNotPermitted ||
                  rc == kIOReturnNotReady || rc == kIOReturnExclusiveAccess);
      assert_true(dk_last_failure()->text[0] != '\0');
      char link[sizeof bdf + 64];
      snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", bdf);
      if (access(link, F_OK) != 0) {
        assert_int_equal(rc, kIOReturnUnsupported);
        assert_true(dkt_text_has(dk_last_failure()->text, "IOMMU"));
      }
    }
  }
  assert_int_equal(dkt_fd_count(), fds);
  assert_int_equal(dk__prim_counters().heap_blocks, heap);
}

/* ==== threads: creation under a changing system mapper (for TSan) =========================== */

static atomic_int g_thread_errors;
static atomic_bool g_stop;

static void *worker(void *arg)
{
  (void)arg;
  for (int i = 0; i < 150 || !atomic_load(&g_stop); i++) {
    if (i > 3000) break;
    IOBufferMemoryDescriptor *b;
    if (i % 5 == 4) {
      b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIOMemoryPageable | kIODirectionInOut, 8192, MASK28);
      if (!b) { atomic_fetch_add(&g_thread_errors, 1); continue; }
      if (IOMemoryDescriptor_prepare(MD(b), kIODirectionNone) != kIOReturnSuccess) atomic_fetch_add(&g_thread_errors, 1);
    } else {
      /* no mask: without a system mapper a mask would bind the RAM */
      b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 + (uint64_t)(i % 3) * 4096, 1);
      if (!b) { atomic_fetch_add(&g_thread_errors, 1); continue; }
    }
    dk_buffer_info bi;
    if (dk_buffer_get_info(b, &bi) != kIOReturnSuccess) atomic_fetch_add(&g_thread_errors, 1);
    else if (bi.mapper) {
      IOByteCount l = 0;
      uint64_t iova = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l, 0);
      uint64_t lim = bi.numAddressBits == 28 ? MASK28 : UINT64_MAX;
      if (!iova || iova != bi.iova || iova + l - 1 > lim || l != IOMemoryDescriptor_getLength(MD(b)))
        atomic_fetch_add(&g_thread_errors, 1);
    }
    if (i % 5 == 4) IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
    OSObject_release(b);
  }
  dk__thread_caches_flush();
  return NULL;
}

static void threads_and_system_mapper(void **state)
{
  (void)state;
  IOMapper *m1 = soft_mapper(0), *m2 = soft_mapper(0);
  atomic_store(&g_thread_errors, 0);
  atomic_store(&g_stop, false);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
  for (int i = 0; i < 300; i++) {
    dk_mapper_set_system(i % 3 == 0 ? m1 : i % 3 == 1 ? m2 : NULL);
    if (i % 50 == 0) {
      dk_mapper_info a = minfo(m1);
      (void)a;
    }
    usleep(200);
  }
  atomic_store(&g_stop, true);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  dk_mapper_set_system(NULL);
  assert_int_equal(atomic_load(&g_thread_errors), 0);
  dk_mapper_info a = minfo(m1), b = minfo(m2);
  print_message("threads: mapper 1 peak %u mappings, mapper 2 peak %u\n", a.mappings_peak, b.mappings_peak);
  assert_int_equal(a.mappings_live, 0);
  assert_int_equal(b.mappings_live, 0);
  assert_int_equal(a.buffers_mapped, 0);
  assert_int_equal(b.buffers_mapped, 0);
  assert_int_equal(a.double_unmaps + b.double_unmaps, 0);
  assert_true(a.mappings_peak > 0 && b.mappings_peak > 0);
  assert_int_equal(dk_mapper_close(m1, NULL, 0), 0);
  assert_int_equal(dk_mapper_close(m2, NULL, 0), 0);
}

/* ==== 8. nothing left behind ================================================================ */

typedef struct snapshot { dk_prim_counters c; long pins, objects; int fds; } snapshot;
static snapshot g_base;

static snapshot snap(void)
{
  dk__thread_caches_flush();
  dk_pool_trim();
  snapshot s = { dk__prim_counters(), dk__pins_live(), dk__objects_live(), dkt_fd_count() };
  return s;
}

static int group_setup(void **state)
{
  (void)state;
  /* warm up what is made once per process (capabilities, the pin ring, the pool's tables) */
  long pool = dk_option_get(DK_OPTION_POOL);
  for (int on = 0; on < 2; on++) {
    dk_option_set(DK_OPTION_POOL, on);
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 8192, 1);
    if (b) {
      (void)IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0);
      OSObject_release(b);
    }
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 1);
    OSSafeReleaseNULL(b);
  }
  dk_option_set(DK_OPTION_POOL, pool);
  IOBufferMemoryDescriptor *p = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 8192, 1);
  if (p) {
    (void)IOMemoryDescriptor_prepare(MD(p), kIODirectionNone);
    (void)IOMemoryDescriptor_complete(MD(p), kIODirectionNone);
    OSObject_release(p);
  }
  g_base = snap();
  return 0;
}

static void nothing_left_behind(void **state)
{
  (void)state;
  assert_null(dk_mapper_get_system());
  snapshot now = snap();
  if (now.c.fds != g_base.c.fds || now.c.map_bytes != g_base.c.map_bytes || now.c.lock_bytes != g_base.c.lock_bytes ||
      now.c.heap_blocks != g_base.c.heap_blocks || now.pins != g_base.pins || now.objects != g_base.objects ||
      now.fds != g_base.fds)
    fail_msg("left behind: fds %ld->%ld (process %d->%d) map %ld->%ld lock %ld->%ld heap %ld->%ld pins %ld->%ld "
             "objects %ld->%ld",
             g_base.c.fds, now.c.fds, g_base.fds, now.fds, g_base.c.map_bytes, now.c.map_bytes, g_base.c.lock_bytes,
             now.c.lock_bytes, g_base.c.heap_blocks, now.c.heap_blocks, g_base.pins, now.pins, g_base.objects,
             now.objects);
  char why[256];
  if (dk__debug_validate(why, sizeof why) != 0) fail_msg("consistency check: %s", why);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(iova_holes_and_page_zero),
    cmocka_unit_test(iova_limits),
    cmocka_unit_test(iova_alignments),
    cmocka_unit_test(iova_boundaries),
    cmocka_unit_test(iova_free_coalescing),
    cmocka_unit_test_teardown(iova_free_outside_apertures, teardown_space),
    cmocka_unit_test_teardown(iova_top_of_space, teardown_space),
    cmocka_unit_test_teardown(iova_free_needs_no_memory, teardown_space),
    cmocka_unit_test_teardown(iova_aperture_edges, teardown_space),
    cmocka_unit_test_setup_teardown(subpage_boundary_and_segments, setup_on, teardown),
    cmocka_unit_test_setup_teardown(constraints_segments_and_low, setup_on, teardown),
    cmocka_unit_test(iova_against_model),
    TANY(table_rules),
    TANY(table_exhaustion),
    TANY(table_backend_fails),
    TANY(table_backend_quirks),
    TANY(tracker_reports),
    T4K(masks_limit_iova),
    TPOOL(masks_limit_iova),
    T4K(contiguity_with_mapper),
    TPOOL(contiguity_with_mapper),
    T4K(mapper_none_option),
    TPOOL(mapper_none_option),
    T4K(alignment_of_iova),
    TPOOL(alignment_of_iova),
    T4K(constraints_bind_the_iova),
    TPOOL(constraints_bind_the_iova),
    TANY(null_task_buffer),
    T4K(small_buffers_share),
    TPOOL(small_buffers_share),
    T4K(mapping_limit),
    TPOOL(mapping_limit),
    TANY(tracker_and_lifetime),
    TANY(tracker_clean),
    TANY(pageable_mapped_while_prepared),
    TANY(identity_is_none),
    TANY(vfio_refuses_cleanly),
    TANY(threads_and_system_mapper),
    cmocka_unit_test(nothing_left_behind),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
