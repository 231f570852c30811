/* tests/test_physical.c: getPhysicalSegment against the kernel's own page tables (root).
 *
 * Every segment the library hands out is compared with the frames this test reads itself
 * from /proc/self/pagemap (tests/support, not the library's reader): the same address byte
 * for byte, and a length that ends exactly at the next real physical discontinuity or at
 * getLength(). Masks are picked from the layout observed on this machine. */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static size_t PS;   /* dk_capabilities()->page_size */

#define MiB ((size_t)1 << 20)

static const IODirection kDirections[] = { kIODirectionNone, kIODirectionIn, kIODirectionOut,
                                           kIODirectionInOut };

static int group_setup(void **state) {
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS == 0 ? -1 : 0;
}



/* ---- the walk -------------------------------------------------------------------------- */
/* Compare every segment of md with the frames of [va, va + getLength()). */
static size_t check_segments(IOMemoryDescriptor *md, const void *va, IOOptionBits opts,
                             const char *what) {
  IOByteCount len = IOMemoryDescriptor_getLength(md);
  if (len == 0) {
    IOByteCount sl = 99;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, opts), 0);
    assert_int_equal(sl, 0);
    return 0;
  }
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &n);
  assert_non_null(pfn);
  for (size_t i = 0; i < n; i++)
    if (pfn[i] == 0) fail_msg("%s: page %zu of %zu is not present in pagemap", what, i, n);

  /* the walk over the whole length */
  IOByteCount off = 0;
  size_t segs = 0;
  while (off < len) {
    IOByteCount sl = 0xdead;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, off, &sl, opts);
    uint64_t run = 0;
    uint64_t e = dkt_expected_segment(va, len, pfn, off, &run);
    if (a != e || sl != run)
      fail_msg("%s opts 0x%x: offset %" PRIu64 " of %" PRIu64 ": got 0x%" PRIx64 " +%" PRIu64
               ", pagemap says 0x%" PRIx64 " +%" PRIu64 " (%s)",
               what, opts, (uint64_t)off, (uint64_t)len, (uint64_t)a, (uint64_t)sl, e, run,
               a == 0 ? dkt_failure_text() : "");
    off += sl;
    segs++;
  }
  assert_int_equal(off, len);

  /* offsets around every virtual page boundary, and inside pages */
  uintptr_t base = (uintptr_t)va;
  for (uintptr_t b = (base / PS + 1) * PS; b - base < len + 1; b += PS) {
    size_t rel = b - base;
    size_t probes[4] = { rel - 1, rel, rel + 1, rel - PS / 2 };
    for (int k = 0; k < 4; k++) {
      size_t o = probes[k];
      if (o >= len || (k == 3 && rel < PS / 2)) continue;
      IOByteCount sl = 0xdead;
      addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, o, &sl, opts);
      uint64_t run = 0;
      uint64_t e = dkt_expected_segment(va, len, pfn, o, &run);
      if (a != e || sl != run)
        fail_msg("%s opts 0x%x: offset %zu: got 0x%" PRIx64 " +%" PRIu64 ", pagemap 0x%" PRIx64
                 " +%" PRIu64, what, opts, o, (uint64_t)a, (uint64_t)sl, e, run);
    }
  }

  /* getPhysicalAddress is the segment at 0 */
  uint64_t run0 = 0;
  if (opts == 0)
    assert_int_equal(IOMemoryDescriptor_getPhysicalAddress(md),
                     dkt_expected_segment(va, len, pfn, 0, &run0));

  /* past the end: 0 and *length 0, and the failure is a range failure */
  const IOByteCount past[] = { len, len + 1, len + PS, UINT64_MAX };
  for (size_t k = 0; k < sizeof past / sizeof past[0]; k++) {
    IOByteCount sl = 0xdead;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, past[k], &sl, opts);
    if (a != 0 || sl != 0)
      fail_msg("%s: offset %" PRIu64 " >= length %" PRIu64 " gave 0x%" PRIx64 " +%" PRIu64, what,
               (uint64_t)past[k], (uint64_t)len, (uint64_t)a, (uint64_t)sl);
    assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  }
  free(pfn);
  return segs;
}

/* Where the buffer came from: with the pool on every wired buffer is a pool range or slab
 * slot, physically one segment (proven again from our own pagemap read); with it off, 4K
 * pages. */
static void check_provider(IOBufferMemoryDescriptor *bmd, size_t segs, const char *what) {
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(bmd, &info), kIOReturnSuccess);
  if (info.pageable) {
    assert_int_equal(info.provider, DK_PROVIDER_MEMFD_4K);
    return;
  }
  uint64_t pa2 = 1;
  while (pa2 < (info.alignment ? info.alignment : 1)) pa2 <<= 1;
  /* kIOMemoryKernelUserShared buffers keep page-granular mappings: 4K pages unless only the
   * pool can meet them (alignment above a page) */
  bool shared_4k = (info.options & kIOMemorySharingTypeMask) && pa2 <= dkt_page_size();
  if (!dkt_pool_on() || shared_4k) {
    if (info.provider != DK_PROVIDER_MEMFD_4K)
      fail_msg("%s: provider %s with the pool %s", what, dk_provider_name(info.provider),
               dkt_pool_on() ? "on (shared buffer)" : "off");
    return;
  }
  if (info.provider != DK_PROVIDER_POOL && info.provider != DK_PROVIDER_POOL_SLAB)
    fail_msg("%s: provider %s with the pool on", what, dk_provider_name(info.provider));
  uint64_t a = 1;
  while (a < (info.alignment ? info.alignment : 1)) a <<= 1;
  uint64_t need = info.allocation_size > a ? info.allocation_size : a;
  assert_int_equal(info.provider, need <= 4096 ? DK_PROVIDER_POOL_SLAB : DK_PROVIDER_POOL);
  IOByteCount len = IOMemoryDescriptor_getLength((IOMemoryDescriptor *)bmd);
  if (len && segs != 1) fail_msg("%s: pool memory in %zu physical segments", what, segs);
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(bmd);
  if (len && va) {
    const char *why = dkt_check_physical_promise(va, len, a, info.physical_limit, true);
    if (why) fail_msg("%s: pagemap: %s", what, why);
  }
}

/* Walk with both option values, then after setLength smaller, then restore the length. */
static void check_buffer(IOBufferMemoryDescriptor *bmd, const char *what) {
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)bmd;
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(bmd);
  assert_non_null(va);
  vm_size_t cap = IOBufferMemoryDescriptor_getCapacity(bmd);
  assert_int_equal(IOMemoryDescriptor_getLength(md), cap);
  size_t segs = check_segments(md, va, 0, what);
  check_segments(md, va, kIOMemoryMapperNone, what);
  check_provider(bmd, segs, what);

  const vm_size_t shorter[] = { cap / 2 + 3, cap > PS + 5 ? PS + 5 : 1, 1, 0 };
  for (size_t k = 0; k < sizeof shorter / sizeof shorter[0]; k++) {
    if (shorter[k] > cap) continue;
    IOBufferMemoryDescriptor_setLength(bmd, shorter[k]);
    assert_int_equal(IOMemoryDescriptor_getLength(md), shorter[k]);
    check_segments(md, va, kIOMemoryMapperNone, what);
    check_segments(md, va, 0, what);
  }
  IOBufferMemoryDescriptor_setLength(bmd, cap);
  check_segments(md, va, 0, what);
}

static const size_t *test_sizes(size_t *count) {
  static size_t sizes[6];
  sizes[0] = 1;
  sizes[1] = 100;
  sizes[2] = PS;
  sizes[3] = 3 * PS + 17;
  sizes[4] = 1 * MiB;
  sizes[5] = 16 * MiB;
  *count = 6;
  return sizes;
}

static void test_segments_match_pagemap_withOptions(void **state) {
  (void)state;
  dkt_require_physical();
  size_t ns;
  const size_t *sizes = test_sizes(&ns);
  for (size_t s = 0; s < ns; s++) {
    for (size_t d = 0; d < sizeof kDirections / sizeof kDirections[0]; d++) {
      char what[96];
      snprintf(what, sizeof what, "withOptions(dir %u, %zu, 1)", kDirections[d], sizes[s]);
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kDirections[d], sizes[s], 1);
      if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
      assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), sizes[s], 0));
      if (d == 0 && sizes[s] >= MiB)   /* how much discontinuity the walk really met */
        printf("%s: %zu physical segments\n", what,
               check_segments((IOMemoryDescriptor *)b, IOBufferMemoryDescriptor_getBytesNoCopy(b), 0, what));
      check_buffer(b, what);
      OSObject_release(b);
    }
  }
}

static void test_segments_match_pagemap_other_factories(void **state) {
  (void)state;
  dkt_require_physical();
  size_t ns;
  const size_t *sizes = test_sizes(&ns);
  for (size_t s = 0; s < ns; s++) {
    size_t size = sizes[s];
    char what[128];
    IOBufferMemoryDescriptor *b;

    snprintf(what, sizeof what, "inTaskWithOptions(kernel_task, In|MapperNone, %zu, 0)", size);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionIn | kIOMemoryMapperNone,
                                                   size, 0);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    check_buffer(b, what);
    OSObject_release(b);

    snprintf(what, sizeof what, "withCapacity(%zu, Out, false)", size);
    b = IOBufferMemoryDescriptor_withCapacity(size, kIODirectionOut, false);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    check_buffer(b, what);
    OSObject_release(b);

    snprintf(what, sizeof what, "inTaskWithOptions(kernel_task, KernelUserShared|InOut, %zu, 1)", size);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(
        kernel_task, kIOMemoryKernelUserShared | kIODirectionInOut, size, 1);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % PS, 0);
    check_buffer(b, what);
    OSObject_release(b);

    snprintf(what, sizeof what, "inTaskWithOptions(kernel_task, InOut, %zu, page)", size);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, PS);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    check_buffer(b, what);
    OSObject_release(b);

    snprintf(what, sizeof what, "inTaskWithOptions(kernel_task, ThreadSafe|CopybackCache|InOut, %zu, 1)", size);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(
        kernel_task, kIOMemoryThreadSafe | kIOMapCopybackCache | kIODirectionInOut, size, 1);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    check_buffer(b, what);
    OSObject_release(b);

    snprintf(what, sizeof what, "DriverKit Create(InOut, %zu, 0)", size);
    b = NULL;
    assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, size, 0, &b), kIOReturnSuccess);
    assert_non_null(b);
    check_buffer(b, what);
    OSObject_release(b);

    unsigned char *pattern = malloc(size);
    assert_non_null(pattern);
    for (size_t i = 0; i < size; i++) pattern[i] = (unsigned char)(i * 7 + 3);
    snprintf(what, sizeof what, "withBytes(%zu, Out, false)", size);
    b = IOBufferMemoryDescriptor_withBytes(pattern, size, kIODirectionOut, false);
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), pattern, size);
    check_buffer(b, what);
    OSObject_release(b);
    free(pattern);
  }
}

/* Two descriptors alive at once never share a frame byte range. */
static void test_live_buffers_do_not_overlap_physically(void **state) {
  (void)state;
  dkt_require_physical();
  enum { N = 64 };
  IOBufferMemoryDescriptor *b[N];
  uint64_t lo[N], hi[N];
  for (int i = 0; i < N; i++) {
    size_t size = (i % 4 == 0) ? 100 : (i % 4 == 1) ? PS : (i % 4 == 2) ? 3 * PS + 17 : 64 * 1024;
    b[i] = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
    assert_non_null(b[i]);
    IOByteCount sl = 0;
    lo[i] = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b[i], 0, &sl, 0);
    assert_int_not_equal(lo[i], 0);
    hi[i] = lo[i] + sl;
  }
  /* first segments of different buffers must not overlap */
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      if (lo[i] < hi[j] && lo[j] < hi[i])
        fail_msg("buffers %d and %d overlap physically: [0x%" PRIx64 ",0x%" PRIx64 ") and [0x%" PRIx64
                 ",0x%" PRIx64 ")", i, j, lo[i], hi[i], lo[j], hi[j]);
  for (int i = 0; i < N; i++) OSObject_release(b[i]);
}

/* ---- masks ---------------------------------------------------------------------------- */
static unsigned bit_length(uint64_t v) { return v ? 64u - (unsigned)__builtin_clzll(v) : 0; }

/* The frames of a fresh probe buffer: lowest address and highest end. */
static void probe_layout(uint64_t *lowest, uint64_t *highest_end) {
  /* the frames the kernel gives 4K pages, whatever provider the test itself uses */
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *probe = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 16 * MiB, 1);
  dk_option_set(DK_OPTION_POOL, pool);
  assert_non_null(probe);
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(IOBufferMemoryDescriptor_getBytesNoCopy(probe), 16 * MiB, &n);
  assert_non_null(pfn);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_not_equal(pfn[i], 0);
    if (pfn[i] < lo) lo = pfn[i];
    if (pfn[i] > hi) hi = pfn[i];
  }
  *lowest = lo * PS;
  *highest_end = (hi + 1) * PS;
  free(pfn);
  OSObject_release(probe);
}

static void check_under_limit(IOBufferMemoryDescriptor *b, uint64_t limit, const char *what) {
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  size_t segs = check_segments(md, IOBufferMemoryDescriptor_getBytesNoCopy(b), 0, what);
  check_provider(b, segs, what);
  IOByteCount len = IOMemoryDescriptor_getLength(md), off = 0;
  while (off < len) {
    IOByteCount sl = 0;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, off, &sl, kIOMemoryMapperNone);
    assert_int_not_equal(a, 0);
    if (a + sl - 1 > limit)
      fail_msg("%s: segment 0x%" PRIx64 " +%" PRIu64 " ends above the limit 0x%" PRIx64, what,
               (uint64_t)a, (uint64_t)sl, limit);
    off += sl;
  }
  /* the whole allocation, not only getLength(): every page of the capacity */
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(IOBufferMemoryDescriptor_getBytesNoCopy(b),
                                        IOBufferMemoryDescriptor_getCapacity(b), &n);
  assert_non_null(pfn);
  for (size_t i = 0; i < n; i++)
    if (pfn[i] == 0 || (pfn[i] + 1) * PS - 1 > limit)
      fail_msg("%s: page %zu at frame 0x%" PRIx64 " breaks limit 0x%" PRIx64, what, i, pfn[i], limit);
  free(pfn);
}

static void check_mask_limit(uint64_t limit);

/* A refusal of `size` bytes under `limit` that the machine's state explains: kIOReturnNoMemory
 * naming the mask (or, from the pool, the resource it could not reserve), while the pool holds
 * no memory below the limit. Where the kernel puts the next frames, and what other processes
 * hold, decide whether memory under a mask can be had; a returned buffer is always checked. */
static bool refusal_explained(size_t size, uint64_t limit, const char *what)
{
  const dk_failure fc = *dk_last_failure(), *f = &fc;
  char ftext[512];
  snprintf(ftext, sizeof ftext, "%s", dkt_failure_text());
  dk_pool_stats st = { .size = sizeof st };
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  /* memory the pool holds below the limit explains nothing away when the pool is off (the 4K
   * variant): 4K pages are what was asked, wherever an earlier test left the pool */
  bool pool_could = dkt_pool_on() && st.lowest_frame != 0 && st.lowest_frame + size - 1 <= limit;
  if (f->code != kIOReturnNoMemory || (f->constraint != DK_CONSTRAINT_MASK && f->constraint != DK_CONSTRAINT_RESOURCE) ||
      pool_could)
    fail_msg("%s: NULL, %s (pool's lowest frame 0x%" PRIx64 ")", what, ftext, st.lowest_frame);
  printf("note: %s: no memory below the limit obtainable now (%s)\n", what, ftext);
  return true;
}

static void test_mask_above_observed_frames_succeeds(void **state) {
  (void)state;
  dkt_require_physical();
  const dk_caps *caps = dk_capabilities();
  uint64_t lowest, highest_end;
  probe_layout(&lowest, &highest_end);
  /* the smallest 2^n - 1 covering the probe; if that does not restrict RAM, a mask with low
   * ones just above the probe (only the top of a mask is enforced) */
  uint64_t limit = (bit_length(highest_end - 1) >= 64) ? UINT64_MAX
                                                       : ((1ULL << bit_length(highest_end - 1)) - 1);
  if (caps->ram_top && limit >= caps->ram_top - 1) {
    uint64_t g = 256 * MiB;
    limit = (highest_end + 64 * MiB + g - 1) / g * g - 1;
  }
  /* and one just above the probe's highest frame (low bits all ones: only the top counts) */
  uint64_t tight = (highest_end + 2 * MiB - 1) / (2 * MiB) * (2 * MiB) + 2 * MiB - 1;
  printf("probe frames 0x%" PRIx64 "..0x%" PRIx64 ", ram_top 0x%" PRIx64 ", limits 0x%" PRIx64
         " and 0x%" PRIx64 "\n", lowest, highest_end, caps->ram_top, limit, tight);
  /* The frames the probe got say nothing about the next ones: 16 MiB more 4K pages, or the
   * pool's hugepages, can come from above the probe's highest frame, and then a limit just
   * above it is refused (correctly). What is returned must meet it; a refusal must name it. */
  if (caps->ram_top && limit >= caps->ram_top - 1)
    DKT_SKIP("no restricting mask above the probe's frames (highest end 0x%" PRIx64
             ", ram_top 0x%" PRIx64 ")", highest_end, caps->ram_top);
  check_mask_limit(limit);
  check_mask_limit(tight);
}

/* Every size under `limit`: a buffer returned is always checked; a refusal must be one the
 * machine's state explains. */
static void check_mask_limit(uint64_t limit) {
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB, 16 * MiB };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    char what[128];
    snprintf(what, sizeof what, "inTaskWithPhysicalMask(kernel_task, InOut, %zu, 0x%" PRIx64 ")",
             sizes[s], limit);
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
        kernel_task, kIODirectionInOut, sizes[s], limit);
    if (!b && refusal_explained(sizes[s], limit, what)) continue;
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), sizes[s], 0));
    dk_buffer_info info;
    assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
    assert_int_equal(info.physical_limit, limit);
    check_under_limit(b, limit, what);
    OSObject_release(b);

    /* the same through the constraint value */
    dk_constraints c = DK_CONSTRAINTS_NONE;
    c.high = limit;
    snprintf(what, sizeof what, "inTaskWithConstraints(high 0x%" PRIx64 ", %zu)", limit, sizes[s]);
    b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, sizes[s], &c);
    if (!b && refusal_explained(sizes[s], limit, what)) continue;
    if (!b) fail_msg("%s: NULL, %s", what, dkt_failure_text());
    check_under_limit(b, limit, what);
    OSObject_release(b);
  }
}

static void test_mask_below_lowest_frame_fails(void **state) {
  (void)state;
  dkt_require_physical();
  uint64_t lowest, highest_end;
  probe_layout(&lowest, &highest_end);
  /* the largest 2^n - 1 below the lowest frame we were given */
  unsigned bits = bit_length(lowest) - 1;   /* 2^bits <= lowest */
  uint64_t mask = (1ULL << bits) - 1;
  printf("probe lowest frame 0x%" PRIx64 "; mask 0x%" PRIx64 " must fail\n", lowest, mask);
  if (mask < 16 * MiB) DKT_SKIP("the kernel hands out frames below 16 MiB here");

  const size_t sizes[] = { 100, PS, 1 * MiB };
  if (dkt_pool_on()) {
    /* the pool meets masks below the frames 4K pages get, 32 bits included: the buffer must
     * exist and lie below the mask, through getPhysicalSegment and our own pagemap read */
    const uint64_t masks[] = { mask, 0xFFFFFFFFull };
    for (size_t m = 0; m < 2; m++) {
      for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char what[96];
        snprintf(what, sizeof what, "pool, mask 0x%" PRIx64 ", %zu bytes", masks[m], sizes[s]);
        IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
            kernel_task, kIODirectionInOut, sizes[s], masks[m]);
        /* low memory is shared with other processes (their hugepages) */
        if (!b && refusal_explained(sizes[s], masks[m], what)) continue;
        assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), sizes[s], 0));
        dk_buffer_info info;
        assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
        assert_int_equal(info.physical_limit, masks[m]);
        check_under_limit(b, masks[m], what);
        const char *why = dkt_check_physical_promise(IOBufferMemoryDescriptor_getBytesNoCopy(b),
                                                     IOBufferMemoryDescriptor_getCapacity(b), PS, masks[m], true);
        if (why) fail_msg("%s: pagemap: %s", what, why);
        OSObject_release(b);
      }
    }
    return;
  }
  long lck0 = dkt_locked_kb();
  int fd0 = dkt_fd_count();
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
        kernel_task, kIODirectionInOut, sizes[s], mask);
    if (b) {
      /* not impossible (the library may search low memory); then the promise must hold */
      printf("note: mask 0x%" PRIx64 " met for %zu bytes; checking it\n", mask, sizes[s]);
      check_under_limit(b, mask, "low mask");
      OSObject_release(b);
      continue;
    }
    const dk_failure *f = dk_last_failure();
    if (f->code != kIOReturnNoMemory || f->constraint != DK_CONSTRAINT_MASK)
      fail_msg("mask 0x%" PRIx64 ": expected kIOReturnNoMemory/MASK, got %s", mask, dkt_failure_text());
    char needle[32];
    snprintf(needle, sizeof needle, "0x%" PRIx64, mask);
    if (!dkt_text_has(f->text, needle))
      fail_msg("failure text does not name the mask %s: \"%s\"", needle, f->text);
    printf("mask 0x%" PRIx64 ", %zu bytes: %s\n", mask, sizes[s], f->text);
  }
  /* the failed attempts gave back what they took */
  if (dkt_locked_kb() != lck0 || dkt_fd_count() != fd0)
    fail_msg("after failed masked allocations: VmLck %ld kB (was %ld), fds %d (were %d)",
             dkt_locked_kb(), lck0, dkt_fd_count(), fd0);
}

/* ---- alignment and contiguity ---------------------------------------------------------- */
static void test_alignment_up_to_page(void **state) {
  (void)state;
  dkt_require_physical();
  const vm_offset_t aligns[] = { 2, 16, 64, 256, 1024, PS / 2, PS };
  const size_t sizes[] = { 1, 100, PS, 3 * PS + 17 };
  for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      IOBufferMemoryDescriptor *b =
          IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, sizes[s], aligns[a]);
      if (!b) fail_msg("align %zu size %zu: NULL, %s", (size_t)aligns[a], sizes[s], dkt_failure_text());
      void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
      assert_int_equal((uintptr_t)va % aligns[a], 0);
      IOByteCount sl = 0;
      addr64_t p = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &sl,
                                                         kIOMemoryMapperNone);
      assert_int_not_equal(p, 0);
      if (p % aligns[a] != 0)
        fail_msg("align %zu: physical start 0x%" PRIx64 " not aligned", (size_t)aligns[a], (uint64_t)p);
      if (aligns[a] == PS && p % PS != 0)
        fail_msg("page alignment: physical start 0x%" PRIx64, (uint64_t)p);
      check_buffer(b, "aligned");
      OSObject_release(b);
    }
  }
}

static void test_contiguous_one_page(void **state) {
  (void)state;
  dkt_require_physical();
  const IODirection dirs[] = { kIODirectionIn, kIODirectionOut, kIODirectionInOut };
  for (size_t d = 0; d < 3; d++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(PS, dirs[d], true);
    if (!b) fail_msg("withCapacity(page, %u, true): NULL, %s", dirs[d], dkt_failure_text());
    IOByteCount sl = 0;
    addr64_t p = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &sl, 0);
    assert_int_not_equal(p, 0);
    assert_int_equal(sl, PS);           /* one segment */
    assert_int_equal(p % PS, 0);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % PS, 0);
    check_buffer(b, "withCapacity(page, contiguous)");
    OSObject_release(b);
  }
  /* below a page: contiguous by lying inside one page (alignment = capacity, not a power of
   * two; virtually next_pow2, REFERENCE.md §9 row 8) */
  const size_t small[] = { 1, 100, 1000, PS / 2 + 1 };
  for (size_t k = 0; k < sizeof small / sizeof small[0]; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(small[k], kIODirectionInOut, true);
    if (!b) fail_msg("withCapacity(%zu, InOut, true): NULL, %s", small[k], dkt_failure_text());
    IOByteCount sl = 0;
    addr64_t p = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &sl, 0);
    assert_int_not_equal(p, 0);
    if (sl != small[k]) fail_msg("withCapacity(%zu, contiguous): first segment %" PRIu64 " bytes", small[k], (uint64_t)sl);
    check_buffer(b, "withCapacity(small, contiguous)");
    OSObject_release(b);
  }
}

/* A request for more than a page of contiguity, or alignment above a page, cannot be met by
 * 4K pages in general (the hugepage pool comes later): NULL with kIOReturnNoMemory and the
 * constraint. If the library does return a buffer (pages that happen to be contiguous,
 * checked through pagemap), the promise must really hold. */
static void check_contiguous_or_refused(IOBufferMemoryDescriptor *b, size_t size, uint64_t align,
                                        const char *what) {
  if (!b && dkt_pool_on()) fail_msg("%s: the hugepage pool must meet it: %s", what, dkt_failure_text());
  if (!b) {
    const dk_failure *f = dk_last_failure();
    if (f->code != kIOReturnNoMemory ||
        (f->constraint != DK_CONSTRAINT_CONTIGUITY && f->constraint != DK_CONSTRAINT_ALIGNMENT))
      fail_msg("%s: expected kIOReturnNoMemory with CONTIGUITY or ALIGNMENT, got %s", what,
               dkt_failure_text());
    printf("%s: refused: %s\n", what, f->text);
    return;
  }
  printf("%s: met (checking through pagemap)\n", what);
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  check_segments((IOMemoryDescriptor *)b, va, kIOMemoryMapperNone, what);
  IOByteCount sl = 0;
  addr64_t p = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &sl, kIOMemoryMapperNone);
  if (sl != size) fail_msg("%s: first segment %" PRIu64 " bytes of %zu: not contiguous", what, (uint64_t)sl, size);
  if (align > 1 && p % align != 0) fail_msg("%s: physical 0x%" PRIx64 " not aligned to %" PRIu64, what, (uint64_t)p, align);
  const char *why = dkt_check_physical_promise(va, size, align, 0, true);
  if (why) fail_msg("%s: pagemap: %s", what, why);
  check_provider(b, 1, what);
  OSObject_release(b);
}

static void test_contiguity_and_alignment_above_page(void **state) {
  (void)state;
  dkt_require_physical();
  check_contiguous_or_refused(IOBufferMemoryDescriptor_withCapacity(2 * PS, kIODirectionInOut, true),
                              2 * PS, 2 * PS, "withCapacity(2 pages, contiguous)");
  check_contiguous_or_refused(IOBufferMemoryDescriptor_withCapacity(1 * MiB, kIODirectionInOut, true),
                              1 * MiB, 1 * MiB, "withCapacity(1 MiB, contiguous)");
  check_contiguous_or_refused(
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPhysicallyContiguous, 8 * PS, 1),
      8 * PS, 1, "inTaskWithOptions(PhysicallyContiguous, 8 pages)");
  check_contiguous_or_refused(
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryHostPhysicallyContiguous, 64 * 1024, 1),
      64 * 1024, 1, "inTaskWithOptions(HostPhysicallyContiguous, 64 KiB)");
  check_contiguous_or_refused(
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, PS, 4 * PS),
      PS, 4 * PS, "inTaskWithOptions(page, alignment 4 pages)");
  check_contiguous_or_refused(
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 256 * 1024, 64 * 1024),
      256 * 1024, 64 * 1024, "inTaskWithOptions(256 KiB, alignment 64 KiB)");
  /* a mask with 16 trailing zeros: alignment 64 KiB, so contiguity (REFERENCE.md §2 steps 6, 9);
   * its top lies above all RAM, so only the alignment remains */
  check_contiguous_or_refused(
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, PS,
                                                      0x000FFFFFFFFF0000ull),
      PS, 64 * 1024, "inTaskWithPhysicalMask(page, 0xF_FFFF_FFFF_0000)");
}

/* ---- NULL task ------------------------------------------------------------------------ */
static void test_null_task_wired_buffer(void **state) {
  (void)state;
  dkt_require_physical();
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    IOBufferMemoryDescriptor *b =
        IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, sizes[s], 1);
    if (!b) fail_msg("inTaskWithOptions(NULL, InOut, %zu): NULL, %s", sizes[s], dkt_failure_text());
    IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
    assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
    /* physical segments work without any mapping */
    IOByteCount sl = 0;
    addr64_t p0 = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, 0);
    if (p0 == 0) fail_msg("NULL-task wired buffer: no physical segment: %s", dkt_failure_text());
    assert_true(sl > 0 && sl <= sizes[s]);

    IOMemoryMap *map = IOMemoryDescriptor_map(md, 0);
    assert_non_null(map);
    const char *va = (const char *)(uintptr_t)IOMemoryMap_getAddress(map);
    assert_non_null(va);
    assert_int_equal(IOMemoryMap_getLength(map), sizes[s]);
    dkt_touch_read(va, sizes[s]);
    assert_true(dkt_all_bytes(va, sizes[s], 0));
    check_segments(md, va, 0, "NULL-task buffer through its map()");
    check_segments(md, va, kIOMemoryMapperNone, "NULL-task buffer through its map()");
    sl = 0;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, 0), p0);
    OSObject_release(map);
    OSObject_release(b);
  }
}

/* ---- pageable ------------------------------------------------------------------------- */
static void check_unprepared(IOMemoryDescriptor *md, const char *what) {
  IOByteCount sl = 0xdead;
  addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, 0);
  if (a != 0 || sl != 0)
    fail_msg("%s: unprepared pageable buffer gave 0x%" PRIx64 " +%" PRIu64, what, (uint64_t)a, (uint64_t)sl);
  if (dk_last_failure()->constraint != DK_CONSTRAINT_STATE)
    fail_msg("%s: expected constraint STATE, got %s", what, dkt_failure_text());
  sl = 0xdead;
  a = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, kIOMemoryMapperNone);
  assert_int_equal(a, 0);
  assert_int_equal(sl, 0);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_STATE);
}

static void test_pageable_needs_prepare(void **state) {
  (void)state;
  dkt_require_physical();
  const size_t size = 1 * MiB + 100;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIOMemoryPageable | kIODirectionInOut, size, 1);
  if (!b) fail_msg("pageable: NULL, %s", dkt_failure_text());
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(va);
  check_unprepared(md, "before prepare");

  long base = dkt_locked_kb();
  assert_true(base >= 0);
  assert_int_equal(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnSuccess);
  long up = dkt_locked_kb();
  bool lck = dkt_mlock_works();
  if (!lck) printf("note: mlock does not lock in this process (sanitizer?): VmLck not checked\n");
  if (lck && up < base + (long)(size / 1024))
    fail_msg("VmLck %ld kB -> %ld kB after prepare of %zu bytes", base, up, size);
  check_segments(md, va, 0, "pageable after prepare");
  check_segments(md, va, kIOMemoryMapperNone, "pageable after prepare");
  assert_true(dkt_all_bytes(va, size, 0));

  /* counted: a second prepare and one complete leave it prepared */
  assert_int_equal(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess);
  check_segments(md, va, 0, "pageable after prepare x2, complete x1");
  assert_true(dkt_locked_kb() >= up);

  assert_int_equal(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess);
  long down = dkt_locked_kb();
  if (lck && down != base) fail_msg("VmLck %ld kB before prepare, %ld kB after the final complete", base, down);
  check_unprepared(md, "after the final complete");
  OSObject_release(b);
}

static void test_null_task_pageable(void **state) {
  (void)state;
  dkt_require_physical();
  const size_t size = 3 * PS + 17;
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIODirectionInOut, size, 1);
  if (!b) fail_msg("NULL-task pageable: NULL, %s", dkt_failure_text());
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  check_unprepared(md, "NULL-task pageable before prepare");
  assert_int_equal(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnSuccess);
  IOMemoryMap *map = IOMemoryDescriptor_map(md, 0);
  assert_non_null(map);
  const char *va = (const char *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_non_null(va);
  dkt_touch_read(va, size);
  check_segments(md, va, 0, "NULL-task pageable, prepared, through map()");
  assert_int_equal(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess);
  check_unprepared(md, "NULL-task pageable after complete");
  OSObject_release(map);
  OSObject_release(b);
}

/* ---- IOMemoryMap_getPhysicalSegment ---------------------------------------------------- */
static void test_map_physical_segment_forwards_with_offset(void **state) {
  (void)state;
  dkt_require_physical();
  const size_t size = 6 * PS + 100;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
  assert_non_null(b);
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  const mach_vm_size_t map_offsets[] = { 0, PS, 2 * PS };
  for (size_t k = 0; k < 3; k++) {
    mach_vm_size_t moff = map_offsets[k];
    IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere,
                                                              moff, 2 * PS);
    if (!map) fail_msg("createMappingInTask(offset %" PRIu64 ", 2 pages): NULL, %s", moff, dkt_failure_text());
    const size_t probes[] = { 0, 1, PS - 1, PS, PS + 7, 2 * PS - 1, 2 * PS + 5 /* past the map */ };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
      for (int o = 0; o < 2; o++) {
        IOOptionBits opts = o ? kIOMemoryMapperNone : 0;
        IOPhysicalLength ml = 0xdead;
        IOByteCount dl = 0xbeef;
        IOPhysicalAddress ma = IOMemoryMap_getPhysicalSegment(map, probes[i], &ml, opts);
        addr64_t da = IOMemoryDescriptor_getPhysicalSegment(md, moff + probes[i], &dl, opts);
        assert_int_not_equal(da, 0);
        if (ma != da || ml != dl)
          fail_msg("map offset %" PRIu64 " + %zu: map gave 0x%" PRIx64 " +%" PRIu64
                   ", descriptor 0x%" PRIx64 " +%" PRIu64, moff, probes[i], (uint64_t)ma,
                   (uint64_t)ml, (uint64_t)da, (uint64_t)dl);
      }
    }
    /* the mapping shows the same frames */
    const char *va = (const char *)(uintptr_t)IOMemoryMap_getAddress(map);
    assert_non_null(va);
    dkt_touch_read(va, 2 * PS);
    uint64_t f[3] = { 0 }, g[3] = { 0 };
    size_t nf = dkt_read_frames(va, 2 * PS, f);
    const char *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    size_t ng = dkt_read_frames(base + moff, 2 * PS, g);
    assert_true(nf >= 2);
    assert_int_equal(nf, ng);
    for (size_t i = 0; i < nf; i++) assert_int_equal(f[i], g[i]);
    assert_int_equal(IOMemoryMap_getPhysicalAddress(map),
                     IOMemoryDescriptor_getPhysicalSegment(md, moff, NULL, 0));
    /* past the descriptor's length */
    IOPhysicalLength ml = 0xdead;
    assert_int_equal(IOMemoryMap_getPhysicalSegment(map, size - moff, &ml, 0), 0);
    assert_int_equal(ml, 0);
    OSObject_release(map);
  }
  OSObject_release(b);
}

/* Each wired-buffer test runs with 4K pages (frame-by-frame discontinuities, refusals) and
 * again with the hugepage pool (one segment, promises met) where it is usable. */
DKT_POOL_VARIANTS(test_segments_match_pagemap_withOptions)
DKT_POOL_VARIANTS(test_segments_match_pagemap_other_factories)
DKT_POOL_VARIANTS(test_live_buffers_do_not_overlap_physically)
DKT_POOL_VARIANTS(test_mask_above_observed_frames_succeeds)
DKT_POOL_VARIANTS(test_mask_below_lowest_frame_fails)
DKT_POOL_VARIANTS(test_alignment_up_to_page)
DKT_POOL_VARIANTS(test_contiguous_one_page)
DKT_POOL_VARIANTS(test_contiguity_and_alignment_above_page)
DKT_POOL_VARIANTS(test_null_task_wired_buffer)
DKT_POOL_VARIANTS(test_map_physical_segment_forwards_with_offset)

int main(void) {
  const struct CMUnitTest tests[] = {
      DKT_TEST_4K(test_segments_match_pagemap_withOptions),
      DKT_TEST_POOL(test_segments_match_pagemap_withOptions),
      DKT_TEST_4K(test_segments_match_pagemap_other_factories),
      DKT_TEST_POOL(test_segments_match_pagemap_other_factories),
      DKT_TEST_4K(test_live_buffers_do_not_overlap_physically),
      DKT_TEST_POOL(test_live_buffers_do_not_overlap_physically),
      DKT_TEST_4K(test_mask_above_observed_frames_succeeds),
      DKT_TEST_POOL(test_mask_above_observed_frames_succeeds),
      DKT_TEST_4K(test_mask_below_lowest_frame_fails),
      DKT_TEST_POOL(test_mask_below_lowest_frame_fails),
      DKT_TEST_4K(test_alignment_up_to_page),
      DKT_TEST_POOL(test_alignment_up_to_page),
      DKT_TEST_4K(test_contiguous_one_page),
      DKT_TEST_POOL(test_contiguous_one_page),
      DKT_TEST_4K(test_contiguity_and_alignment_above_page),
      DKT_TEST_POOL(test_contiguity_and_alignment_above_page),
      DKT_TEST_4K(test_null_task_wired_buffer),
      DKT_TEST_POOL(test_null_task_wired_buffer),
      cmocka_unit_test(test_pageable_needs_prepare),
      cmocka_unit_test(test_null_task_pageable),
      DKT_TEST_4K(test_map_physical_segment_forwards_with_offset),
      DKT_TEST_POOL(test_map_physical_segment_forwards_with_offset),
  };
  return cmocka_run_group_tests_name("physical", tests, group_setup, NULL);
}
