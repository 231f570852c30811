/* tests/test_dmacommand.c: IODMACommand against XNU's IODMACommand.cpp and against the kernel.
 *
 * The argument checks and return codes of withSpecification, setMemoryDescriptor, prepare,
 * complete, synchronize and gen*IOVMSegments; the output functions' encodings; the segments
 * compared with this test's own pagemap reading (physical runs, split at the maximum segment
 * size); double buffering when the memory lies above the device's reach (bits chosen from
 * where the buffer really is, so the bounce must happen), with the bounce buffer's segments
 * checked against pagemap and the data round-tripped in each direction; a bounce that cannot
 * be had; and the mapped path through the software IOMapper (IOVAs, nothing programmed). */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include <endian.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iokit/dmacommand.h"
#include "mapper/mapper_impl.h"
#include "prim/prim.h"

static size_t PS;   /* dk_capabilities()->page_size */

static int group_setup(void **state) {
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS == 0 ? -1 : 0;
}




static IOMemoryDescriptor *MD(IOBufferMemoryDescriptor *b) { return (IOMemoryDescriptor *)b; }

static IOBufferMemoryDescriptor *new_buffer(size_t len, IODirection dir) {
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, dir, len, PS);
  if (!b) fail_msg("buffer of %zu bytes: %s", len, dkt_failure_text());
  return b;
}

static IODMACommand *new_command(UInt8 bits, UInt64 max_seg, UInt32 type, UInt32 align, IOMapper *m) {
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, bits, max_seg, type, 0, align, m, NULL);
  if (!c) fail_msg("withSpecification(%u bits): %s", bits, dkt_failure_text());
  return c;
}

static void fill(uint8_t *p, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(i * 131u + seed * 7u + (i >> 12));
}
static bool filled(const uint8_t *p, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++)
    if (p[i] != (uint8_t)(i * 131u + seed * 7u + (i >> 12))) return false;
  return true;
}

/* ---- segments, collected ---------------------------------------------------------------- */
typedef struct seg { uint64_t a, l; } seg;
#define MAXSEGS 4096

/* Every segment of the prepared range, `per_call` at a time; the walk ends in Overrun. */
static size_t collect(IODMACommand *c, seg *out, UInt32 per_call) {
  UInt64 off = 0;
  size_t n = 0;
  for (;;) {
    IODMACommandSegment64 s[64];
    UInt32 k = per_call;
    IOReturn rc = IODMACommand_gen64IOVMSegments(c, &off, s, &k);
    if (rc == kIOReturnOverrun) break;
    if (rc != kIOReturnSuccess) fail_msg("gen64IOVMSegments at %" PRIu64 ": %s", (uint64_t)off, dkt_failure_text());
    assert_true(k >= 1 && k <= per_call);
    for (UInt32 i = 0; i < k; i++) {
      assert_true(n < MAXSEGS);
      assert_true(s[i].fLength > 0);
      out[n++] = (seg){ s[i].fIOVMAddr, s[i].fLength };
    }
  }
  return n;
}

/* The physical runs of [va, va+len) by pagemap, each cut into pieces of at most max_seg. */
static size_t expected_runs(const void *va, size_t len, uint64_t max_seg, seg *out) {
  size_t pages = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &pages);
  assert_non_null(pfn);
  size_t n = 0, off = 0;
  while (off < len) {
    uint64_t run = 0, a = dkt_expected_segment(va, len, pfn, off, &run);
    assert_true(a != 0 && run > 0);
    off += run;
    while (run) {
      uint64_t piece = run < max_seg ? run : max_seg;
      assert_true(n < MAXSEGS);
      out[n++] = (seg){ a, piece };
      a += piece;
      run -= piece;
    }
  }
  free(pfn);
  return n;
}

static void same_segments(const seg *got, size_t ng, const seg *want, size_t nw, const char *what) {
  for (size_t i = 0; i < ng && i < nw; i++)
    if (got[i].a != want[i].a || got[i].l != want[i].l)
      fail_msg("%s: segment %zu is 0x%" PRIx64 "+0x%" PRIx64 ", pagemap says 0x%" PRIx64 "+0x%" PRIx64, what, i,
               got[i].a, got[i].l, want[i].a, want[i].l);
  if (ng != nw) fail_msg("%s: %zu segments, pagemap gives %zu", what, ng, nw);
}

/* The highest physical byte of [va, va+len), by pagemap. */
static uint64_t highest_phys(const void *va, size_t len) {
  size_t pages = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &pages);
  assert_non_null(pfn);
  uint64_t hi = 0;
  for (size_t i = 0; i < pages; i++) {
    assert_true(pfn[i] != 0);
    if (pfn[i] * PS + PS - 1 > hi) hi = pfn[i] * PS + PS - 1;
  }
  free(pfn);
  return hi;
}

static unsigned bitlen(uint64_t x) { return x ? 64u - (unsigned)__builtin_clzll(x) : 0u; }

/* ---- withSpecification ------------------------------------------------------------------ */

static void test_withSpecification_arguments(void **state) {
  (void)state;
  long live = dk__objects_live();
  unsigned shift = dk_capabilities()->page_shift;
  /* NULL output function: XNU's setSpecification returns kIOReturnBadArgument, the factory NULL */
  assert_null(IODMACommand_withSpecification(NULL, 64, 0, kIODMAMapOptionMapped, 0, 1, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_string_equal(dk_last_failure()->function, "withSpecification");
  /* a 32-bit output function with more than 32 address bits */
  assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost32, 33, 0, 0, 0, 1, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_null(IODMACommand_withSpecification(IODMACommand_OutputBig32, 64, 0, 0, 0, 1, NULL, NULL));
  assert_null(IODMACommand_withSpecification(IODMACommand_OutputLittle32, 40, 0, 0, 0, 1, NULL, NULL));
  /* fewer address bits than a page needs; exactly a page's is fine */
  for (unsigned b = 1; b < shift; b++) {
    assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)b, 0, 0, 0, 1, NULL, NULL));
    assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  }
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)shift, 0, 0, 0, 1, NULL, NULL);
  assert_non_null(c);
  OSSafeReleaseNULL(c);
  /* 0 bits (no limit), 64 and more all mean no limit */
  const UInt8 fine_bits[] = { 0, 32, 36, 63, 64, 65, 255 };
  for (size_t i = 0; i < sizeof fine_bits; i++) {
    c = IODMACommand_withSpecification(IODMACommand_OutputHost64, fine_bits[i], 0, 0, 0, 1, NULL, NULL);
    assert_non_null(c);
    assert_int_equal(dk_last_failure()->code, kIOReturnSuccess);
    OSSafeReleaseNULL(c);
  }
  /* 32-bit output functions: 0 bits becomes 32, 32 and fewer are fine */
  c = IODMACommand_withSpecification(IODMACommand_OutputHost32, 0, 0, 0, 0, 1, NULL, NULL);
  assert_non_null(c);
  OSSafeReleaseNULL(c);
  c = IODMACommand_withSpecification(IODMACommand_OutputLittle32, 32, 0, 0, 0, 1, NULL, NULL);
  assert_non_null(c);
  OSSafeReleaseNULL(c);
  /* alignment: 0 means 1; powers of two; anything else refused (dmakit) */
  const UInt32 fine_align[] = { 0, 1, 2, 4, 4096, 1u << 31 };
  for (size_t i = 0; i < sizeof fine_align / sizeof fine_align[0]; i++) {
    c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, 0, 0, fine_align[i], NULL, NULL);
    assert_non_null(c);
    OSSafeReleaseNULL(c);
  }
  const UInt32 bad_align[] = { 3, 6, 4097, 0xffffffffu };
  for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
    assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, 0, 0, bad_align[i], NULL, NULL));
    assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
    assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ALIGNMENT);
  }
  /* mapping types: Mapped, Bypassed (no mapper here), NonCoherent, Unmapped, with flag bits */
  const UInt32 fine_types[] = { kIODMAMapOptionMapped, kIODMAMapOptionBypassed, kIODMAMapOptionNonCoherent,
                                kIODMAMapOptionUnmapped, kIODMAMapOptionMapped | kIODMAMapOptionIterateOnly,
                                kIODMAMapOptionUnmapped | kIODMAMapOptionNoCacheStore | kIODMAMapOptionOnChip };
  for (size_t i = 0; i < sizeof fine_types / sizeof fine_types[0]; i++) {
    c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, fine_types[i], 0, 1, NULL, NULL);
    if (!c) fail_msg("mapping options 0x%x: %s", fine_types[i], dkt_failure_text());
    OSSafeReleaseNULL(c);
  }
  for (UInt32 t = 4; t <= 15; t++) {
    assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, t, 0, 1, NULL, NULL));
    assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  }
  /* the identity mapper is "no mapper": Bypassed is fine with it */
  c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, kIODMAMapOptionBypassed, 0, 1,
                                     dk_mapper_identity(), NULL);
  assert_non_null(c);
  OSSafeReleaseNULL(c);
  assert_int_equal(dk__objects_live(), live);
}

static IOMapper *soft_mapper(uint64_t start, uint64_t end) {
  const uint64_t ranges[1][2] = { { start, end } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 0);
  assert_non_null(m);
  assert_true(dk__mapper_translates(m));
  return m;
}

static void close_clean(IOMapper *m) {
  char report[512];
  unsigned leaks = dk_mapper_close(m, report, sizeof report);
  if (leaks) fail_msg("mapper closed with %u live mappings: %s", leaks, report);
}

static void test_withSpecification_bypassed_with_mapper(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  /* XNU: kBypassed with a mapper (given, or the system mapper) is kIOReturnBadArgument */
  assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, kIODMAMapOptionBypassed, 0, 1, m, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  dk_mapper_set_system(m);
  assert_null(IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, kIODMAMapOptionBypassed, 0, 1, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  /* Unmapped does not take the system mapper; Mapped and NonCoherent do */
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionUnmapped, 1, NULL);
  OSSafeReleaseNULL(c);
  c = new_command(64, 0, kIODMAMapOptionNonCoherent, 1, NULL);
  OSSafeReleaseNULL(c);
  dk_mapper_set_system(NULL);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static void test_object_refcount_and_refcon(void **state) {
  (void)state;
  long live = dk__objects_live();
  int cookie;
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, 0, 0, 1, NULL, &cookie);
  assert_non_null(c);
  assert_ptr_equal(IODMACommand_getRefCon(c), &cookie);
  assert_int_equal(OSObject_getRetainCount(c), 1);
  OSObject_retain(c);
  assert_int_equal(OSObject_getRetainCount(c), 2);
  OSObject_release(c);
  assert_int_equal(dk__objects_live(), live + 1);
  OSObject_release(c);
  assert_int_equal(dk__objects_live(), live);
  /* a descriptor is not a command */
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  assert_null(IODMACommand_getRefCon((IODMACommand *)b));
  DKT_RC(kIOReturnBadArgument, IODMACommand_prepare((IODMACommand *)b, 0, 0, true, true));
  DKT_RC(kIOReturnBadArgument, IODMACommand_complete(NULL, true, true));
  assert_false(dk_dmacommand_is_double_buffered((IODMACommand *)b));
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- the descriptor ------------------------------------------------------------------------- */

static void test_setMemoryDescriptor_rules(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);   /* so that no physical address is needed */
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
  IOBufferMemoryDescriptor *b = new_buffer(4 * PS, kIODirectionInOut);
  IOBufferMemoryDescriptor *b2 = new_buffer(PS, kIODirectionInOut);
  int before = OSObject_getRetainCount(b);

  /* not a descriptor */
  DKT_RC(kIOReturnBadArgument, IODMACommand_setMemoryDescriptor(c, (IOMemoryDescriptor *)c, false));
  assert_null(IODMACommand_getMemoryDescriptor(c));
  /* NULL with nothing set: success */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, NULL, true));
  /* set without preparing: retained, not prepared */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  assert_ptr_equal(IODMACommand_getMemoryDescriptor(c), b);
  assert_int_equal(OSObject_getRetainCount(b), before + 1);
  UInt64 off = 0;
  IODMACommandSegment64 s[4];
  UInt32 n = 4;
  DKT_RC(kIOReturnNotReady, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  /* the same descriptor with autoPrepare: success, and (as XNU) no prepare */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  /* prepared twice; the same descriptor without autoPrepare completes every prepare */
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  assert_ptr_equal(IODMACommand_getMemoryDescriptor(c), b);
  /* another descriptor while prepared: kIOReturnBusy, nothing changes */
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_RC(kIOReturnBusy, IODMACommand_setMemoryDescriptor(c, MD(b2), true));
  assert_ptr_equal(IODMACommand_getMemoryDescriptor(c), b);
  DKT_RC(kIOReturnBusy, IODMACommand_setMemoryDescriptor(c, NULL, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  /* another with autoPrepare: the first is released, the second retained and prepared */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b2), true));
  assert_int_equal(OSObject_getRetainCount(b), before);
  assert_ptr_equal(IODMACommand_getMemoryDescriptor(c), b2);
  n = 4;
  off = 0;
  DKT_OK(IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  assert_int_equal(off, PS);
  /* NULL clears, completing */
  DKT_RC(kIOReturnBusy, IODMACommand_setMemoryDescriptor(c, NULL, false));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_setMemoryDescriptor(c, NULL, false));
  assert_null(IODMACommand_getMemoryDescriptor(c));
  /* an autoPrepare that fails leaves nothing set: a transfer limit below the length */
  IODMACommand *small = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, 0, PS, 1, m, NULL);
  assert_non_null(small);
  DKT_RC(kIOReturnNoSpace, IODMACommand_setMemoryDescriptor(small, MD(b), true));
  assert_string_equal(dk_last_failure()->function, "setMemoryDescriptor");
  assert_null(IODMACommand_getMemoryDescriptor(small));
  assert_int_equal(OSObject_getRetainCount(b), before);
  /* releasing a command that still holds a prepared descriptor completes and releases it */
  DKT_OK(IODMACommand_setMemoryDescriptor(small, MD(b2), true));
  assert_int_equal(OSObject_getRetainCount(b2), 2);
  OSSafeReleaseNULL(small);
  assert_int_equal(OSObject_getRetainCount(b2), 1);

  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  OSSafeReleaseNULL(b2);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static void test_clearMemoryDescriptor_rules(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, false));     /* nothing set */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_clearMemoryDescriptor(c, false));
  assert_ptr_equal(IODMACommand_getMemoryDescriptor(c), b);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));       /* completes both prepares */
  assert_null(IODMACommand_getMemoryDescriptor(c));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  assert_int_equal(OSObject_getRetainCount(b), 1);
  dk_mapper_info info;
  DKT_OK(dk_mapper_get_info(m, &info));
  assert_int_equal(info.mappings_live, 0);
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- prepare / complete / gen / synchronize rules -------------------------------------------- */

static void test_prepare_complete_rules(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, 0, 8 * PS, 1, m, NULL);
  assert_non_null(c);
  /* no descriptor */
  DKT_RC(kIOReturnNotReady, IODMACommand_prepare(c, 0, 0, true, true));
  assert_string_equal(dk_last_failure()->function, "prepare");
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  assert_string_equal(dk_last_failure()->function, "complete");
  IOBufferMemoryDescriptor *b = new_buffer(16 * PS, kIODirectionInOut);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  /* longer than the maximum transfer: kIOReturnNoSpace (the whole descriptor, and explicitly) */
  DKT_RC(kIOReturnNoSpace, IODMACommand_prepare(c, 0, 0, true, true));
  DKT_RC(kIOReturnNoSpace, IODMACommand_prepare(c, 0, 8 * PS + 1, true, true));
  /* outside the descriptor */
  DKT_RC(kIOReturnBadArgument, IODMACommand_prepare(c, 15 * PS, 2 * PS, true, true));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  DKT_RC(kIOReturnBadArgument, IODMACommand_prepare(c, UINT64_MAX - 10, 100, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));   /* nothing was counted */
  /* counted: the same range nests, another range does not (and is not counted) */
  DKT_OK(IODMACommand_prepare(c, PS, 8 * PS, true, true));
  DKT_OK(IODMACommand_prepare(c, PS, 8 * PS, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_prepare(c, 0, 8 * PS, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_prepare(c, PS, 4 * PS, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  UInt64 off = 0;
  IODMACommandSegment64 s[2];
  UInt32 n = 2;
  DKT_OK(IODMACommand_gen64IOVMSegments(c, &off, s, &n));     /* still prepared once */
  assert_int_equal(off, 8 * PS);
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  n = 2;
  off = 0;
  DKT_RC(kIOReturnNotReady, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));

  /* pageable memory must be prepared first (XNU panics) */
  IOBufferMemoryDescriptor *pg = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut |
                                                                            kIOMemoryPageable, 4 * PS, PS);
  assert_non_null(pg);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(pg), false));
  DKT_RC(kIOReturnNotReady, IODMACommand_prepare(c, 0, 0, true, true));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_STATE);
  DKT_OK(IOMemoryDescriptor_prepare(MD(pg), kIODirectionNone));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  DKT_OK(IOMemoryDescriptor_complete(MD(pg), kIODirectionNone));

  /* length 0 is the descriptor's length as XNU takes it, whatever the offset */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(pg), false));
  OSSafeReleaseNULL(c);
  c = new_command(64, 0, 0, 1, m);
  DKT_OK(IOMemoryDescriptor_prepare(MD(pg), kIODirectionNone));
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(pg), false));
  DKT_RC(kIOReturnBadArgument, IODMACommand_prepare(c, PS, 0, true, true));
  DKT_OK(IODMACommand_prepare(c, PS, 3 * PS, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IOMemoryDescriptor_complete(MD(pg), kIODirectionNone));

  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  OSSafeReleaseNULL(pg);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static void test_gen_rules(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IODMACommand *c = new_command(64, 0, 0, 1, m);
  IOBufferMemoryDescriptor *b = new_buffer(4 * PS, kIODirectionInOut);
  UInt64 off = 0;
  IODMACommandSegment64 s[4];
  UInt32 n = 4;
  DKT_RC(kIOReturnNotReady, IODMACommand_gen64IOVMSegments(c, &off, s, &n));     /* no descriptor */
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen64IOVMSegments(c, NULL, s, &n));
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen64IOVMSegments(c, &off, NULL, &n));
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen64IOVMSegments(c, &off, s, NULL));
  n = 0;
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  assert_string_equal(dk_last_failure()->function, "gen64IOVMSegments");
  /* at and past the end: kIOReturnOverrun, outputs untouched */
  off = 4 * PS;
  n = 4;
  DKT_RC(kIOReturnOverrun, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  assert_int_equal(off, 4 * PS);
  assert_int_equal(n, 4);
  off = UINT64_MAX;
  DKT_RC(kIOReturnOverrun, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  /* from the middle */
  off = PS + 3;
  n = 4;
  DKT_OK(IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  assert_int_equal(n, 1);
  assert_int_equal(off, 4 * PS);
  assert_int_equal(s[0].fLength, 3 * PS - 3);
  /* genIOVMSegments with the command's own function does the same */
  off = 0;
  n = 4;
  DKT_OK(IODMACommand_genIOVMSegments(c, &off, s, &n));
  assert_int_equal(off, 4 * PS);
  assert_string_equal(dk_last_failure()->function, "genIOVMSegments");
  assert_int_equal(dk_last_failure()->code, kIOReturnSuccess);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static void test_synchronize_rules(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IODMACommand *c = new_command(64, 0, 0, 1, m);
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  DKT_RC(kIOReturnBadArgument, IODMACommand_synchronize(c, kIODirectionInOut));   /* checked first */
  DKT_RC(kIOReturnNotReady, IODMACommand_synchronize(c, kIODirectionIn));
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_RC(kIOReturnBadArgument, IODMACommand_synchronize(c, kIODirectionInOut | kIODMACommandForceDoubleBuffer));
  /* nothing bounced: nothing to copy */
  DKT_OK(IODMACommand_synchronize(c, kIODirectionIn));
  DKT_OK(IODMACommand_synchronize(c, kIODirectionOut));
  DKT_OK(IODMACommand_synchronize(c, kIODirectionNone));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- output functions ------------------------------------------------------------------- */

static void test_output_functions(void **state) {
  (void)state;
  IODMACommandSegment64 s = { 0x12345678u, 0x9abcu }, big = { 0x100000000ull, 16 }, longer = { 0x1000, 0x100000000ull };
  IODMACommandSegment32 h32[3];
  memset(h32, 0xee, sizeof h32);
  assert_true(IODMACommand_OutputHost32(NULL, s, h32, 1));
  assert_int_equal(h32[1].fIOVMAddr, 0x12345678u);
  assert_int_equal(h32[1].fLength, 0x9abcu);
  assert_int_equal(h32[0].fIOVMAddr, 0xeeeeeeeeu);
  /* what does not fit 32 bits is refused, not truncated (XNU truncates) */
  assert_false(IODMACommand_OutputHost32(NULL, big, h32, 2));
  assert_false(IODMACommand_OutputHost32(NULL, longer, h32, 2));
  assert_false(IODMACommand_OutputBig32(NULL, big, h32, 2));
  assert_false(IODMACommand_OutputLittle32(NULL, longer, h32, 2));
  assert_int_equal(h32[2].fIOVMAddr, 0xeeeeeeeeu);

  uint8_t raw[64];
  uint32_t w;
  uint64_t d;
  memset(raw, 0, sizeof raw);
  assert_true(IODMACommand_OutputBig32(NULL, s, raw, 1));
  memcpy(&w, raw + 8, 4);
  assert_int_equal(be32toh(w), 0x12345678u);
  memcpy(&w, raw + 12, 4);
  assert_int_equal(be32toh(w), 0x9abcu);
  assert_true(IODMACommand_OutputLittle32(NULL, s, raw, 0));
  memcpy(&w, raw, 4);
  assert_int_equal(le32toh(w), 0x12345678u);
  assert_int_equal(raw[0], 0x78);

  IODMACommandSegment64 h64[2];
  assert_true(IODMACommand_OutputHost64(NULL, big, h64, 1));
  assert_int_equal(h64[1].fIOVMAddr, 0x100000000ull);
  assert_int_equal(h64[1].fLength, 16);
  memset(raw, 0, sizeof raw);
  assert_true(IODMACommand_OutputBig64(NULL, big, raw, 1));
  memcpy(&d, raw + 16, 8);
  assert_int_equal(be64toh(d), 0x100000000ull);
  memcpy(&d, raw + 24, 8);
  assert_int_equal(be64toh(d), 16);
  assert_int_equal(raw[16 + 3], 0x01);
  assert_true(IODMACommand_OutputLittle64(NULL, longer, raw, 0));
  memcpy(&d, raw + 8, 8);
  assert_int_equal(le64toh(d), 0x100000000ull);
  assert_false(IODMACommand_OutputHost64(NULL, s, NULL, 0));
}

/* ---- the mapped path (software mapper: IOVAs without an IOMMU) ------------------------------ */

static void test_mapped_one_iova_range(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t len = 24 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  dk_buffer_info bi;
  DKT_OK(dk_buffer_get_info(b, &bi));
  assert_null(bi.mapper);           /* no system mapper: the buffer itself is not mapped */
  /* 32 address bits, segments of at most 5 pages + 100 bytes, 4 KiB-aligned segments */
  IODMACommand *c = new_command(32, 5 * PS + 100, kIODMAMapOptionMapped, (UInt32)PS, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_OK(IODMACommand_prepare(c, PS, 20 * PS, true, true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  dk_mapper_info info;
  DKT_OK(dk_mapper_get_info(m, &info));
  assert_int_equal(info.mappings_live, 1);
  static seg got[MAXSEGS];
  size_t n = collect(c, got, 3);
  /* one IOVA range, cut at 5 pages + 100 bytes, shortened to keep every start page-aligned */
  assert_int_equal(n, 4);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got[i].a % PS, 0);
    assert_true(got[i].a + got[i].l - 1 <= 0xffffffffull);
    if (i) assert_int_equal(got[i].a, got[i - 1].a + got[i - 1].l);
    if (i + 1 < n) assert_int_equal(got[i].l, 5 * PS);
    total += got[i].l;
  }
  assert_int_equal(total, 20 * PS);
  /* nested prepare shares; complete unmaps at the last */
  DKT_OK(IODMACommand_prepare(c, PS, 20 * PS, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(dk_mapper_get_info(m, &info));
  assert_int_equal(info.mappings_live, 1);
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(dk_mapper_get_info(m, &info));
  assert_int_equal(info.mappings_live, 0);

  /* a 32-bit output function writes Segment32s */
  IODMACommand *c32 = IODMACommand_withSpecification(IODMACommand_OutputLittle32, 0, 0, 0, 0, 1, m, NULL);
  assert_non_null(c32);
  DKT_OK(IODMACommand_setMemoryDescriptor(c32, MD(b), true));
  IODMACommandSegment32 s32[4];
  UInt64 off = 0;
  UInt32 k = 4;
  DKT_OK(IODMACommand_genIOVMSegments(c32, &off, s32, &k));
  assert_int_equal(k, 1);
  assert_int_equal(le32toh(s32[0].fLength), len);
  assert_true(le32toh(s32[0].fIOVMAddr) != 0);
  /* gen64 on it would store Segment64s it does not make: refused */
  IODMACommandSegment64 s64[4];
  off = 0;
  k = 4;
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen64IOVMSegments(c32, &off, s64, &k));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c32, true));

  OSSafeReleaseNULL(c32);
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* With the mapper as the system mapper the buffer has its own IOVA range; a command that
 * accepts it uses it (the mapper shares the mapping) instead of mapping again. */
static void test_mapped_system_mapper_shares_buffer_iova(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  dk_mapper_set_system(m);
  size_t len = 8 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  dk_buffer_info bi;
  DKT_OK(dk_buffer_get_info(b, &bi));
  if (!bi.mapper || !bi.iova) {
    OSSafeReleaseNULL(b);
    dk_mapper_set_system(NULL);
    close_clean(m);
    DKT_SKIP("buffers are not mapped by the system mapper yet (the IOBufferMemoryDescriptor mapper integration)");
  }
  dk_mapper_info before, after;
  DKT_OK(dk_mapper_get_info(m, &before));
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_OK(IODMACommand_prepare(c, 2 * PS, 3 * PS, true, true));
  DKT_OK(dk_mapper_get_info(m, &after));
  assert_int_equal(after.mappings_live, before.mappings_live);
  static seg got[MAXSEGS];
  size_t n = collect(c, got, 8);
  assert_int_equal(n, 1);
  assert_int_equal(got[0].a, bi.iova + 2 * PS);
  assert_int_equal(got[0].l, 3 * PS);
  /* getPhysicalSegment with options 0 says the same */
  IOByteCount sl = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 2 * PS, &sl, 0), got[0].a);
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(dk_mapper_get_info(m, &after));
  assert_int_equal(after.mappings_live, before.mappings_live);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  dk_mapper_set_system(NULL);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* A start not aligned within its page cannot be given an aligned IOVA: bounced, then mapped. */
static void test_mapped_misaligned_start_bounces(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t len = 4 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, len, 1);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 8, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_OK(IODMACommand_prepare(c, 4, 2 * PS, true, true));
  assert_true(dk_dmacommand_is_double_buffered(c));
  uint64_t blen = 0;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_non_null(bb);
  assert_int_equal(blen, 2 * PS);
  assert_memory_equal(bb, va + 4, 2 * PS);       /* the Out copy at prepare */
  static seg got[MAXSEGS];
  size_t n = collect(c, got, 4);
  assert_int_equal(n, 1);
  assert_int_equal(got[0].a % 8, 0);
  assert_int_equal(got[0].l, 2 * PS);
  /* the device writes; complete copies it back into [4, 4 + 2 pages) only */
  fill(bb, blen, 2);
  DKT_OK(IODMACommand_complete(c, true, true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  assert_true(filled(va + 4, 2 * PS, 2));
  uint8_t head[4];
  fill(head, 4, 1);
  assert_memory_equal(va, head, 4);
  /* an aligned start is not bounced */
  DKT_OK(IODMACommand_prepare(c, 8, 2 * PS, true, true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* No IOVA below the device's limit: the mapper's failure is prepare's. */
static void test_mapped_no_iova_below_limit(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(1ull << 32, (1ull << 33) - 1);     /* every IOVA above 4 GiB */
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  IODMACommand *c = new_command(32, 0, kIODMAMapOptionMapped, 1, m);
  DKT_RC(kIOReturnNoResources, IODMACommand_setMemoryDescriptor(c, MD(b), true));
  assert_null(IODMACommand_getMemoryDescriptor(c));
  OSSafeReleaseNULL(c);
  c = new_command(33, 0, kIODMAMapOptionMapped, 1, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  static seg got[MAXSEGS];
  assert_int_equal(collect(c, got, 1), 1);
  assert_true(got[0].a >= (1ull << 32) && got[0].a + got[0].l - 1 <= (1ull << 33) - 1);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ForceDoubleBuffer: complete and prepare again through a bounce buffer (XNU); nested, the
 * flag waits for the next first prepare. */
static void test_force_double_buffer(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t len = 3 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, len, 3);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));
  assert_true(dk_dmacommand_is_double_buffered(c));
  uint64_t blen;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_int_equal(blen, len);
  assert_true(filled(bb, len, 3));
  DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));   /* already: success */
  /* explicit copies */
  fill(bb, len, 4);
  DKT_OK(IODMACommand_synchronize(c, kIODirectionIn));
  assert_true(filled(va, len, 4));
  fill(va, len, 5);
  DKT_OK(IODMACommand_synchronize(c, kIODirectionOut));
  assert_true(filled(bb, len, 5));
  /* complete(synchronize = false) leaves the memory as it is */
  fill(bb, len, 6);
  DKT_OK(IODMACommand_complete(c, true, false));
  assert_true(filled(va, len, 5));

  /* nested: no bounce now, at the next first prepare */
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, false));      /* no Out copy: the bounce stays zero */
  assert_true(dk_dmacommand_is_double_buffered(c));
  bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_true(dkt_all_bytes(bb, len, 0));
  DKT_OK(IODMACommand_complete(c, true, false));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  assert_false(dk_dmacommand_is_double_buffered(c));   /* used up */
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* The automatic copies follow the descriptor's direction (XNU SHOULD_COPY_DIR); an explicit
 * synchronize(In) copies whatever the direction, and a descriptor prepared read-only refuses
 * it (writeBytes copies nothing: kIOReturnUnderrun). */
static void test_copies_follow_direction(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t len = 2 * PS;
  const IODirection dirs[] = { kIODirectionNone, kIODirectionIn, kIODirectionOut, kIODirectionInOut };
  for (size_t i = 0; i < 4; i++) {
    IODirection dir = dirs[i];
    IOBufferMemoryDescriptor *b = new_buffer(len, dir);
    uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    fill(va, len, 7);
    IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
    DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
    DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));
    uint64_t blen;
    uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
    bool out = dir == kIODirectionNone || (dir & kIODirectionOut);
    bool in = dir == kIODirectionNone || (dir & kIODirectionIn);
    if (out) assert_true(filled(bb, len, 7));
    else assert_true(dkt_all_bytes(bb, len, 0));
    fill(bb, len, 8);
    if (dir == kIODirectionOut) {
      DKT_RC(kIOReturnUnderrun, IODMACommand_synchronize(c, kIODirectionIn));
      assert_true(filled(va, len, 7));
    }
    DKT_OK(IODMACommand_complete(c, true, true));
    assert_true(filled(va, len, in ? 8 : 7));
    DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
    OSSafeReleaseNULL(c);
    OSSafeReleaseNULL(b);
  }
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- the physical path (root) --------------------------------------------------------------- */

static void segments_are_physical_runs(void **state) {
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 64 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  static seg got[MAXSEGS], want[MAXSEGS];
  const uint64_t max_segs[] = { 0, 3 * PS + 100, PS / 2, 1000 };
  for (size_t k = 0; k < sizeof max_segs / sizeof max_segs[0]; k++) {
    IODMACommand *c = new_command(64, max_segs[k], kIODMAMapOptionMapped, 1, NULL);
    DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
    assert_false(dk_dmacommand_is_double_buffered(c));
    size_t nw = expected_runs(va, len, max_segs[k] ? max_segs[k] : UINT64_MAX, want);
    size_t ng = collect(c, got, max_segs[k] == 1000 ? 64 : 5);
    same_segments(got, ng, want, nw, "whole buffer");
    /* a sub-range: the same, from its own offset */
    DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
    DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
    DKT_OK(IODMACommand_prepare(c, PS + 17, 20 * PS, true, true));
    nw = expected_runs(va + PS + 17, 20 * PS, max_segs[k] ? max_segs[k] : UINT64_MAX, want);
    ng = collect(c, got, 1);
    same_segments(got, ng, want, nw, "sub-range");
    DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
    OSSafeReleaseNULL(c);
  }
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}
DKT_POOL_VARIANTS(segments_are_physical_runs)

/* One contiguous run cut at the maximum segment size; with an alignment, shortened so that the
 * next segment starts aligned (XNU: "alignment next address"). */
static void test_split_keeps_alignment(void **state) {
  (void)state;
  dkt_require_physical();
  if (!dkt_pool_usable()) DKT_SKIP("needs the hugepage pool for a physically contiguous buffer");
  long live = dk__objects_live();
  size_t len = 64 * 1024;
  dk_constraints k = DK_CONSTRAINTS_NONE;
  k.contiguous = true;
  k.alignment = 4096;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, len, &k);
  if (!b) fail_msg("contiguous buffer: %s", dkt_failure_text());
  IOByteCount run = 0;
  addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &run, kIOMemoryMapperNone);
  assert_int_equal(run, len);
  static seg got[MAXSEGS];
  IODMACommand *c = new_command(64, 10000, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  size_t n = collect(c, got, 4);
  assert_int_equal(n, (len + 9999) / 10000);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got[i].a, pa + i * 10000);
    assert_int_equal(got[i].l, i + 1 < n ? 10000 : len - (n - 1) * 10000);
  }
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  c = new_command(64, 10000, kIODMAMapOptionMapped, 4096, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  n = collect(c, got, 4);
  assert_int_equal(n, len / 8192);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got[i].a, pa + i * 8192);
    assert_int_equal(got[i].l, 8192);
  }
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* A misaligned start without a mapper is bounced to an aligned buffer. */
static void test_physical_misaligned_start_bounces(void **state) {
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 8 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, len, 9);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 16, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));            /* aligned: not bounced */
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_prepare(c, 1, 5 * PS, true, true));
  assert_true(dk_dmacommand_is_double_buffered(c));
  static seg got[MAXSEGS];
  size_t n = collect(c, got, 16);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(got[i].a % 16, 0);
    total += got[i].l;
  }
  assert_int_equal(total, 5 * PS);
  uint64_t blen;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_memory_equal(bb, va + 1, 5 * PS);
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* Memory above the device's reach is double-buffered through memory below it. The buffer is
 * made of 4K pages (high frames here); the device's address bits are one fewer than its
 * highest byte needs, so the bounce must happen; the bounce comes from the pool, which can
 * search low memory. Its segments are checked against pagemap and the data goes both ways. */
static void test_bounce_round_trip(void **state) {
  (void)state;
  dkt_require_physical();
  if (!dkt_pool_usable()) DKT_SKIP("needs the hugepage pool for bounce memory below the buffer");
  long live = dk__objects_live();
  size_t len = 16 * PS + 123;
  /* of a few buffers, the one that reaches highest: the most room below it for the bounce */
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b = NULL;
  uint64_t hi = 0;
  for (int i = 0; i < 6; i++) {
    IOBufferMemoryDescriptor *x = new_buffer(len, kIODirectionInOut);
    uint64_t h = highest_phys(IOBufferMemoryDescriptor_getBytesNoCopy(x), len);
    if (h > hi) {
      OSSafeReleaseNULL(b);
      b = x;
      hi = h;
    } else {
      OSSafeReleaseNULL(x);
    }
  }
  dk_option_set(DK_OPTION_POOL, 1);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, len, 11);
  unsigned bits = bitlen(hi) - 1;
  uint64_t limit = (1ull << bits) - 1;
  assert_true(hi > limit);
  IODMACommand *c = new_command((UInt8)bits, 3 * PS, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  IOReturn rc = IODMACommand_prepare(c, 0, 0, true, true);
  if (rc == kIOReturnMessageTooLarge) {
    char why[400];
    snprintf(why, sizeof why, "%s", dkt_failure_text());
    OSSafeReleaseNULL(c);
    OSSafeReleaseNULL(b);
    DKT_SKIP("no memory below 2^%u here for the bounce buffer: %s", bits, why);
  }
  DKT_OK(rc);
  assert_true(dk_dmacommand_is_double_buffered(c));
  uint64_t blen = 0;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_int_equal(blen, len);
  assert_true(filled(bb, len, 11));                     /* the Out copy */
  /* the segments: the bounce buffer's physical runs by pagemap, cut at 3 pages, under the limit */
  static seg got[MAXSEGS], want[MAXSEGS];
  size_t ng = collect(c, got, 2);
  size_t nw = expected_runs(bb, len, 3 * PS, want);
  same_segments(got, ng, want, nw, "bounce buffer");
  for (size_t i = 0; i < ng; i++) assert_true(got[i].a + got[i].l - 1 <= limit);
  IOMemoryDescriptor *bmd = MD(dk__dmacommand_bounce(c));
  IOByteCount sl = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(bmd, 0, &sl, kIOMemoryMapperNone), got[0].a);
  /* nested prepare of the same range: the same bounce */
  DKT_OK(IODMACommand_prepare(c, 0, 0, true, true));
  DKT_OK(IODMACommand_complete(c, true, true));
  assert_ptr_equal(dk__dmacommand_bounce_bytes(c, NULL), bb);
  /* the device writes into the bounce; complete copies it into the memory */
  fill(bb, len, 12);
  DKT_OK(IODMACommand_complete(c, true, true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  assert_null(dk__dmacommand_bounce_bytes(c, NULL));
  assert_true(filled(va, len, 12));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* IterateOnly never double-buffers: segments the device cannot reach make gen fail. */
static void test_iterate_only_does_not_bounce(void **state) {
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 8 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  unsigned bits = bitlen(highest_phys(va, len)) - 1;
  if (bits < dk_capabilities()->page_shift) DKT_SKIP("the buffer lies in the lowest pages");
  IODMACommand *c = new_command((UInt8)bits, 0, kIODMAMapOptionMapped | kIODMAMapOptionIterateOnly, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  UInt64 off = 0;
  IOReturn rc = kIOReturnSuccess;
  while (rc == kIOReturnSuccess) {
    IODMACommandSegment64 s[1];
    UInt32 n = 1;
    rc = IODMACommand_gen64IOVMSegments(c, &off, s, &n);
    if (rc == kIOReturnSuccess) assert_true(s[0].fIOVMAddr + s[0].fLength - 1 < (1ull << bits));
  }
  DKT_RC(kIOReturnMessageTooLarge, rc);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_MASK);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* A 32-bit device (a 32-bit output function and 0 address bits means 32) never gets a segment
 * above 4 GiB: the range is bounced below it, or prepare says why it cannot be. */
static void test_32bit_device(void **state) {
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 4 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, len, 13);
  if (highest_phys(va, len) <= 0xffffffffull) {
    OSSafeReleaseNULL(b);
    DKT_SKIP("the buffer already lies below 4 GiB");
  }
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost32, 0, 0, 0, 0, 1, NULL, NULL);
  assert_non_null(c);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  IOReturn rc = IODMACommand_prepare(c, 0, 0, true, true);
  if (rc == kIOReturnSuccess) {
    assert_true(dk_dmacommand_is_double_buffered(c));
    IODMACommandSegment32 s[64];
    UInt64 off = 0;
    UInt32 n = 64;
    DKT_OK(IODMACommand_genIOVMSegments(c, &off, s, &n));
    assert_int_equal(off, len);
    for (UInt32 i = 0; i < n; i++) assert_true((uint64_t)s[i].fIOVMAddr + s[i].fLength - 1 <= 0xffffffffull);
    DKT_OK(IODMACommand_complete(c, true, true));
  } else {
    DKT_RC(kIOReturnMessageTooLarge, rc);
    const dk_failure *f = dk_last_failure();
    assert_string_equal(f->function, "prepare");
    assert_true(dkt_text_has(f->text, "0xffffffff"));
    assert_true(dkt_text_has(f->text, "bounce"));
    printf("note: 32-bit device here: %s\n", f->text);
    assert_false(dk_dmacommand_is_double_buffered(c));
    DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  }
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* A bounce buffer the device can reach cannot be had: kIOReturnMessageTooLarge, with why. */
static void test_impossible_bounce(void **state) {
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  unsigned shift = dk_capabilities()->page_shift;
  size_t len = 64 * 1024;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  /* the smallest device: one page of address space, 64 KiB to move */
  IODMACommand *c = new_command((UInt8)shift, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_RC(kIOReturnMessageTooLarge, IODMACommand_setMemoryDescriptor(c, MD(b), true));
  const dk_failure *f = dk_last_failure();
  assert_int_equal(f->constraint, DK_CONSTRAINT_MASK);
  assert_true(dkt_text_has(f->text, "bounce"));
  assert_null(IODMACommand_getMemoryDescriptor(c));
  OSSafeReleaseNULL(c);
  /* with only 4K pages (pool off), a limit below every frame they get */
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  unsigned bits = bitlen(highest_phys(va, len)) - 1;
  if (bits > 20) bits = 20;
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  c = new_command((UInt8)bits, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  IOReturn rc = IODMACommand_prepare(c, 0, PS, true, true);
  dk_option_set(DK_OPTION_POOL, pool);
  DKT_RC(kIOReturnMessageTooLarge, rc);
  f = dk_last_failure();
  assert_string_equal(f->function, "prepare");
  assert_int_equal(f->constraint, DK_CONSTRAINT_MASK);
  printf("note: %s\n", f->text);
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* NonCoherent: prepare writes the lines back, complete flushes them; nothing else changes. */
static void test_noncoherent(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IOBufferMemoryDescriptor *b = new_buffer(2 * PS, kIODirectionInOut);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionNonCoherent, 1, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));
  DKT_OK(IODMACommand_complete(c, true, true));
  DKT_OK(IODMACommand_prepare(c, 0, 0, false, true));
  DKT_OK(IODMACommand_complete(c, false, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- threads: commands are per thread; descriptors and the mapper are shared -------------- */

typedef struct worker { IOBufferMemoryDescriptor *b; IOMapper *m; size_t slice; unsigned id; int errors; } worker;

static void *work(void *arg) {
  worker *w = arg;
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(w->b);
  uint8_t *mine = va + w->id * w->slice;
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 40, PS, 0, 0, 1, w->m, NULL);
  if (!c) {
    w->errors++;
    return NULL;
  }
  if (IODMACommand_setMemoryDescriptor(c, MD(w->b), false) != kIOReturnSuccess) w->errors++;
  for (unsigned i = 0; i < 200 && !w->errors; i++) {
    fill(mine, w->slice, w->id + i);
    if (IODMACommand_prepare(c, w->id * w->slice, w->slice, true, true) != kIOReturnSuccess) w->errors++;
    if (i % 2 && IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer) != kIOReturnSuccess) w->errors++;
    UInt64 off = 0;
    IODMACommandSegment64 s[16];
    UInt32 n = 16;
    if (IODMACommand_gen64IOVMSegments(c, &off, s, &n) != kIOReturnSuccess || off != w->slice) w->errors++;
    uint64_t blen;
    uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
    if (bb) fill(bb, blen, w->id + i + 1);
    if (IODMACommand_complete(c, true, true) != kIOReturnSuccess) w->errors++;
    if (!filled(mine, w->slice, w->id + i + (bb ? 1 : 0))) w->errors++;
  }
  IODMACommand_clearMemoryDescriptor(c, true);
  OSObject_release(c);
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t slice = 4 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(4 * slice, kIODirectionInOut);
  pthread_t t[4];
  worker w[4];
  for (unsigned i = 0; i < 4; i++) {
    w[i] = (worker){ b, m, slice, i, 0 };
    assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
  }
  for (unsigned i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(w[i].errors, 0);
  }
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* ---- fault injection: fail the Nth system call or allocation, once and for ever ------------ */

static IOMapper *g_fault_mapper;
static IOBufferMemoryDescriptor *g_fault_buffer;
static bool g_fault_physical;

/* A command through its whole life with a bounce buffer: mapped (software mapper) or, as root,
 * physical; the start is misaligned so that prepare bounces. */
static IOReturn op_command(void) {
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, PS, 0, 0, 16,
                                                   g_fault_physical ? NULL : g_fault_mapper, NULL);
  if (!c) return dk_last_failure()->code;
  IOReturn rc = IODMACommand_setMemoryDescriptor(c, MD(g_fault_buffer), false);
  if (rc == kIOReturnSuccess) rc = IODMACommand_prepare(c, 1, 3 * PS, true, true);
  if (rc == kIOReturnSuccess && !dk_dmacommand_is_double_buffered(c)) rc = kIOReturnInternalError;
  UInt64 off = 0;
  while (rc == kIOReturnSuccess) {
    IODMACommandSegment64 s[2];
    UInt32 n = 2;
    rc = IODMACommand_gen64IOVMSegments(c, &off, s, &n);
  }
  if (rc == kIOReturnOverrun) rc = IODMACommand_complete(c, true, true);
  OSObject_release(c);
  return rc;
}

typedef struct fsnap { dk_prim_counters c; long pins, objects; } fsnap;
static fsnap fault_snap(void) {
  fsnap s = { dk__prim_counters(), dk__pins_live(), dk__objects_live() };
  return s;
}

static void fault_sweeps(const char *what) {
  assert_int_equal(op_command(), kIOReturnSuccess);          /* warm up */
  dk__thread_caches_flush();
  fsnap base = fault_snap();
  unsigned long points = 0;
  const uint64_t masks[] = { 0, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC) };
  for (size_t m = 0; m < 2; m++)
    for (int forever = 0; forever < 2; forever++)
      for (unsigned long n = 1; n < 5000; n++) {
        dk__thread_caches_flush();
        dk__fault_arm(n, forever, masks[m], 0);
        IOReturn rc = op_command();
        int fired = dk__fault_fired();
        dk__fault_disarm();
        dk__thread_caches_flush();
        fsnap now = fault_snap();
        if (now.c.fds != base.c.fds || now.c.map_bytes != base.c.map_bytes || now.c.lock_bytes != base.c.lock_bytes ||
            now.c.heap_blocks != base.c.heap_blocks || now.pins != base.pins || now.objects != base.objects)
          fail_msg("%s, fault at call %lu: leak: fds %ld->%ld map %ld->%ld lock %ld->%ld heap %ld->%ld pins %ld->%ld "
                   "objects %ld->%ld", what, n, base.c.fds, now.c.fds, base.c.map_bytes, now.c.map_bytes,
                   base.c.lock_bytes, now.c.lock_bytes, base.c.heap_blocks, now.c.heap_blocks, base.pins, now.pins,
                   base.objects, now.objects);
        if (rc != kIOReturnSuccess) {
          if (!fired) fail_msg("%s failed (%s) with no fault injected", what, dk_ioreturn_name(rc));
          if (rc != kIOReturnNoMemory && rc != kIOReturnNoResources && rc != kIOReturnCannotWire &&
              rc != kIOReturnVMError)
            fail_msg("%s, fault at call %lu: undocumented %s: %s", what, n, dk_ioreturn_name(rc), dkt_failure_text());
          if (!dk_last_failure()->text[0]) fail_msg("%s, fault at call %lu: no reason", what, n);
        }
        if (!fired) break;
        points++;
      }
  assert_true(points > 0);
  print_message("%s: %lu injected failures\n", what, points);
  assert_int_equal(op_command(), kIOReturnSuccess);
}

static void test_faults_mapped(void **state) {
  (void)state;
  g_fault_mapper = soft_mapper(0x100000, (1ull << 40) - 1);
  g_fault_buffer = new_buffer(4 * PS, kIODirectionInOut);
  g_fault_physical = false;
  fault_sweeps("mapped command with a bounce buffer");
  OSSafeReleaseNULL(g_fault_buffer);
  close_clean(g_fault_mapper);
}

static void faults_physical(void **state) {
  (void)state;
  dkt_require_physical();
  g_fault_buffer = new_buffer(4 * PS, kIODirectionInOut);
  g_fault_physical = true;
  fault_sweeps(dkt_pool_on() ? "physical command, bounce from the pool" : "physical command, bounce of 4K pages");
  OSSafeReleaseNULL(g_fault_buffer);
}
DKT_POOL_VARIANTS(faults_physical)

/* Without frame numbers a device without a mapper cannot be given addresses: prepare (which
 * must look at them to decide whether to bounce) says so. */
static void test_unprivileged_physical(void **state) {
  (void)state;
  if (dk_capabilities()->pagemap_frames) DKT_SKIP("frame numbers are visible (root): nothing to refuse");
  long live = dk__objects_live();
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  IODMACommand *c = new_command(32, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_RC(kIOReturnNotPrivileged, IODMACommand_setMemoryDescriptor(c, MD(b), true));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_PRIVILEGE);
  OSSafeReleaseNULL(c);
  /* no limit: nothing to decide at prepare; the segments themselves are refused */
  c = new_command(64, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  UInt64 off = 0;
  IODMACommandSegment64 s[1];
  UInt32 n = 1;
  DKT_RC(kIOReturnNotPrivileged, IODMACommand_gen64IOVMSegments(c, &off, s, &n));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

/* complete() gives the command's IOVA mapping back before it frees the bounce buffer: a
 * mapping is found by virtual address, so a buffer created at the freed address in between
 * (another thread, here inside the bounce's munmap) must get a mapping of its own, not share
 * one that still points at the freed pages. */
static _Thread_local bool tl_slow_munmap;
static _Atomic int g_phase;
static int slow_munmap(void *a, size_t l)
{
  int r = munmap(a, l);
  if (tl_slow_munmap && l <= 16384) {
    g_phase = 1;
    while (g_phase != 2) usleep(1000);
  }
  return r;
}
static IOMapper *g_order_mapper;
static unsigned g_order_uses;
static void *order_other(void *arg)
{
  (void)arg;
  while (g_phase != 1) usleep(100);
  IOBufferMemoryDescriptor *n = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 4096);
  dk_md_ext *x = n ? dk__md_ext_peek(&n->md) : NULL;
  if (x && dk__mapping_live(&x->iova_use)) {
    pthread_mutex_lock(&g_order_mapper->lock);
    g_order_uses = x->iova_use.region->uses;
    pthread_mutex_unlock(&g_order_mapper->lock);
  }
  g_phase = 2;
  return n;
}
static void test_complete_unmaps_before_freeing_bounce(void **state)
{
  (void)state;
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);             /* 4K bounce pages: their address can come back */
  const uint64_t ranges[1][2] = { { 0x100000, (1ull << 39) - 1 } };
  g_order_mapper = dk__mapper_create_soft(ranges, 1, 0);
  dk_mapper_set_system(g_order_mapper);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 8192, 4096);
  IODMACommand *c = IODMACommand_withSpecification(IODMACommand_OutputHost64, 0, 0, kIODMAMapOptionMapped, 0, 64, NULL, NULL);
  assert_non_null(b);
  assert_non_null(c);
  assert_int_equal(IODMACommand_setMemoryDescriptor(c, (IOMemoryDescriptor *)b, false), kIOReturnSuccess);
  assert_int_equal(IODMACommand_prepare(c, 1, 4095, true, true), kIOReturnSuccess);   /* misaligned: bounce */
  assert_true(dk_dmacommand_is_double_buffered(c));
  g_phase = 0;
  g_order_uses = 0;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, order_other, NULL), 0);
  dk__prim.munmap = slow_munmap;
  tl_slow_munmap = true;
  IODMACommand_complete(c, true, true);
  tl_slow_munmap = false;
  dk__prim.munmap = dk__prim_default.munmap;
  void *n;
  pthread_join(t, &n);
  OSObject_release(n);
  OSObject_release(c);
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  unsigned leaks = dk_mapper_close(g_order_mapper, NULL, 0);
  dk_option_set(DK_OPTION_POOL, pool);
  assert_int_equal(leaks, 0);
  assert_int_equal(g_order_uses, 1);             /* its own mapping, not the freed bounce's */
}

/* ---- gen32IOVMSegments, another output function, the accessors, readBytes/writeBytes ---------- */

static void test_gen32_and_other_functions(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, 0xffffffffull);   /* every IOVA fits 32 bits */
  IODMACommand *c32 = IODMACommand_withSpecification(kIODMACommandOutputHost32, 0, 2 * PS, kIODMAMapOptionMapped, 0,
                                                     1, m, NULL);
  IODMACommand *c64 = IODMACommand_withSpecification(kIODMACommandOutputHost64, 0, 2 * PS, kIODMAMapOptionMapped, 0,
                                                     1, m, NULL);
  assert_non_null(c32);
  assert_non_null(c64);
  assert_ptr_equal(kIODMACommandOutputLittle64, IODMACommand_OutputLittle64);
  IOBufferMemoryDescriptor *b = new_buffer(5 * PS, kIODirectionInOut);
  DKT_OK(IODMACommand_setMemoryDescriptor(c32, MD(b), true));
  DKT_OK(IODMACommand_setMemoryDescriptor(c64, MD(b), true));
  /* each function with the record size it writes; the other is refused, outputs untouched */
  UInt64 off = 0;
  IODMACommandSegment32 s32[4];
  IODMACommandSegment64 s64[4];
  UInt32 n = 4;
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen32IOVMSegments(c64, &off, s32, &n));
  assert_string_equal(dk_last_failure()->function, "gen32IOVMSegments");
  assert_int_equal(n, 4);
  DKT_RC(kIOReturnBadArgument, IODMACommand_gen32IOVMSegments(NULL, &off, s32, &n));
  DKT_OK(IODMACommand_gen32IOVMSegments(c32, &off, s32, &n));
  assert_int_equal(n, 3);                                /* 5 pages cut at 2 */
  assert_int_equal(off, 5 * PS);
  UInt64 off64 = 0;
  UInt32 n64 = 4;
  DKT_OK(IODMACommand_gen64IOVMSegments(c64, &off64, s64, &n64));
  assert_int_equal(n64, 3);
  for (UInt32 i = 0; i < n; i++) {                       /* the same IOVA range, one mapping shared */
    assert_int_equal(s32[i].fIOVMAddr, s64[i].fIOVMAddr);
    assert_int_equal(s32[i].fLength, s64[i].fLength);
  }
  /* another output function than the command's: big-endian 64-bit records */
  uint8_t raw[4 * 16];
  off = 0;
  n = 4;
  DKT_RC(kIOReturnBadArgument, IODMACommand_genIOVMSegmentsWithFunction(c64, NULL, &off, raw, &n));
  DKT_OK(IODMACommand_genIOVMSegmentsWithFunction(c64, kIODMACommandOutputBig64, &off, raw, &n));
  assert_string_equal(dk_last_failure()->function, "genIOVMSegments");
  assert_int_equal(n, 3);
  uint64_t d;
  memcpy(&d, raw + 16, 8);
  assert_int_equal(be64toh(d), s64[1].fIOVMAddr);
  memcpy(&d, raw + 24, 8);
  assert_int_equal(be64toh(d), s64[1].fLength);
  /* the accessors */
  assert_int_equal(IODMACommand_getNumAddressBits(c32), 32);   /* 0 with a 32-bit function */
  assert_int_equal(IODMACommand_getNumAddressBits(c64), 0);
  assert_int_equal(IODMACommand_getAlignment(c64), 1);
  assert_int_equal(IODMACommand_getNumAddressBits(NULL), 0);
  IODMACommand *c36 = new_command(36, 0, kIODMAMapOptionMapped, 64, m);
  assert_int_equal(IODMACommand_getNumAddressBits(c36), 36);
  assert_int_equal(IODMACommand_getAlignment(c36), 64);
  OSSafeReleaseNULL(c36);
  UInt64 po = 1, pl = 1;
  DKT_OK(IODMACommand_getPreparedOffsetAndLength(c64, &po, &pl));
  assert_int_equal(po, 0);
  assert_int_equal(pl, 5 * PS);
  DKT_OK(IODMACommand_complete(c64, true, true));
  po = pl = 7;
  DKT_RC(kIOReturnNotReady, IODMACommand_getPreparedOffsetAndLength(c64, &po, &pl));
  assert_int_equal(po, 7);
  DKT_OK(IODMACommand_prepare(c64, PS, 2 * PS, true, true));
  DKT_OK(IODMACommand_getPreparedOffsetAndLength(c64, &po, NULL));
  DKT_OK(IODMACommand_getPreparedOffsetAndLength(c64, NULL, &pl));
  assert_int_equal(po, PS);
  assert_int_equal(pl, 2 * PS);
  DKT_OK(IODMACommand_clearMemoryDescriptor(c32, true));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c64, true));
  OSSafeReleaseNULL(c32);
  OSSafeReleaseNULL(c64);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* IODMACommand::readBytes/writeBytes reach what the device sees: the memory of the prepared
 * range, or its bounce buffer while double-buffered; clipped to the range. */
static void test_command_read_write_bytes(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  size_t len = 4 * PS;
  IOBufferMemoryDescriptor *b = new_buffer(len, kIODirectionInOut);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  memset(va, 21, len);
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
  uint8_t buf[64];
  assert_int_equal(IODMACommand_readBytes(c, 0, buf, sizeof buf), 0);          /* not prepared */
  assert_int_equal(dk_last_failure()->code, kIOReturnNotReady);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), false));
  DKT_OK(IODMACommand_prepare(c, PS, 2 * PS, true, true));
  /* offsets are within the prepared range: byte PS + 10 of the memory */
  va[PS + 10] = 0xa5;
  assert_int_equal(IODMACommand_readBytes(c, 10, buf, 1), 1);
  assert_int_equal(buf[0], 0xa5);
  memset(buf, 0x5a, sizeof buf);
  assert_int_equal(IODMACommand_writeBytes(c, 2 * PS - 16, buf, sizeof buf), 16);   /* clipped */
  assert_true(dkt_all_bytes(va + 3 * PS - 16, 16, 0x5a));
  assert_int_equal(va[3 * PS], 21);                                               /* not past it */
  assert_int_equal(IODMACommand_readBytes(c, 2 * PS, buf, 1), 0);                 /* past the end */
  assert_int_equal(dk_last_failure()->code, kIOReturnOverrun);
  /* double-buffered: the bounce buffer, not the memory */
  DKT_OK(IODMACommand_synchronize(c, kIODMACommandForceDoubleBuffer));
  assert_true(dk_dmacommand_is_double_buffered(c));
  uint64_t blen = 0;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c, &blen);
  assert_int_equal(blen, 2 * PS);
  memset(buf, 0x77, sizeof buf);
  assert_int_equal(IODMACommand_writeBytes(c, 0, buf, 32), 32);
  assert_true(dkt_all_bytes(bb, 32, 0x77));
  assert_int_equal(va[PS], 21);                          /* the memory sees it only at complete */
  bb[40] = 0x3c;
  assert_int_equal(IODMACommand_readBytes(c, 40, buf, 1), 1);
  assert_int_equal(buf[0], 0x3c);
  DKT_OK(IODMACommand_complete(c, true, true));
  assert_true(dkt_all_bytes(va + PS, 32, 0x77));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

/* The SegmentOptions form: what one alignment can express is created; the rest is refused. */
static void test_withSpecification_segment_options(void **state) {
  (void)state;
  long live = dk__objects_live();
  IODMACommandSegmentOptions o = { sizeof o, 36, 2 * PS, 0, 16, 1, 16 };
  IODMACommand *c = IODMACommand_withSpecificationOptions(kIODMACommandOutputHost64, &o, kIODMAMapOptionMapped, NULL,
                                                          NULL);
  assert_non_null(c);
  assert_int_equal(IODMACommand_getNumAddressBits(c), 36);
  assert_int_equal(IODMACommand_getAlignment(c), 16);
  OSSafeReleaseNULL(c);
  o.fAlignmentLength = 0;
  o.fAlignmentInternalSegments = 0;
  c = IODMACommand_withSpecificationOptions(kIODMACommandOutputHost64, &o, 0, NULL, NULL);
  assert_non_null(c);
  OSSafeReleaseNULL(c);
  o.fAlignmentLength = 4;
  assert_null(IODMACommand_withSpecificationOptions(kIODMACommandOutputHost64, &o, 0, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_true(dkt_text_has(dk_last_failure()->text, "fAlignmentLength"));
  o.fAlignmentLength = 1;
  o.fAlignmentInternalSegments = 8;
  assert_null(IODMACommand_withSpecificationOptions(kIODMACommandOutputHost64, &o, 0, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_null(IODMACommand_withSpecificationOptions(kIODMACommandOutputHost64, NULL, 0, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  o.fAlignmentInternalSegments = 0;
  o.fNumAddressBits = 40;          /* the factory's own rules still apply */
  assert_null(IODMACommand_withSpecificationOptions(kIODMACommandOutputHost32, &o, 0, NULL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_int_equal(dk__objects_live(), live);
}

/* dk_object_class_name: the IOKit class of each kind of object. */
/* Descriptors that are not one buffer of this process: guard pages have no bus address (the
 * walk at prepare, or gen for a command that does not walk, reports why); physical ranges
 * under a mapper go through a bounce buffer (the mapper maps this process's memory only),
 * which dmakit cannot fill from memory it does not map (kIOReturnUnderrun, and nothing is
 * left prepared). */
static void test_other_descriptors(void **state) {
  (void)state;
  long live = dk__objects_live();
  IOGuardPageMemoryDescriptor *g = IOGuardPageMemoryDescriptor_withSize(2 * PS);
  assert_non_null(g);
  /* nothing to walk at prepare: gen finds no segment */
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, (IOMemoryDescriptor *)g, false));
  DKT_OK(IODMACommand_prepare(c, 0, 0, false, false));
  UInt64 off = 0;
  IODMACommandSegment64 sg[2];
  UInt32 n = 2;
  DKT_RC(kIOReturnUnsupported, IODMACommand_gen64IOVMSegments(c, &off, sg, &n));
  assert_true(dkt_text_has(dk_last_failure()->text, "guard pages"));
  assert_int_equal(off, 0);
  DKT_OK(IODMACommand_complete(c, false, false));
  OSSafeReleaseNULL(c);
  /* an alignment above the page: prepare walks the range, and the walk finds no segment */
  c = new_command(64, 0, kIODMAMapOptionMapped, (UInt32)(2 * PS), NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, (IOMemoryDescriptor *)g, false));
  DKT_RC(kIOReturnUnsupported, IODMACommand_prepare(c, 0, 0, false, false));
  assert_string_equal(dk_last_failure()->function, "prepare");
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, false, false));
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(g);

  /* physical ranges under a mapper: double-buffered, the IOVA is the bounce buffer's */
  IOMapper *m = soft_mapper(0x100000, (1ull << 40) - 1);
  IOMemoryDescriptor *phys = IOMemoryDescriptor_withPhysicalAddress(0x12345000, 2 * PS, kIODirectionOutIn);
  assert_non_null(phys);
  c = new_command(64, 0, kIODMAMapOptionMapped, 1, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c, phys, false));
  DKT_OK(IODMACommand_prepare(c, 0, 0, false, false));
  assert_true(dk_dmacommand_is_double_buffered(c));
  static seg got[MAXSEGS];
  assert_int_equal(collect(c, got, 4), 1);
  assert_true(got[0].a >= 0x100000 && got[0].l == 2 * PS);
  /* the device's data cannot reach physical ranges dmakit does not map */
  DKT_RC(kIOReturnUnderrun, IODMACommand_synchronize(c, kIODirectionIn));
  assert_true(dkt_text_has(dk_last_failure()->text, "physical ranges cannot be copied"));
  DKT_OK(IODMACommand_complete(c, false, false));
  dk_mapper_info mi;
  DKT_OK(dk_mapper_get_info(m, &mi));
  assert_int_equal(mi.mappings_live, 0);
  /* with the copy at prepare: refused, nothing kept */
  DKT_RC(kIOReturnUnderrun, IODMACommand_prepare(c, 0, 0, false, true));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c, false, false));
  DKT_OK(dk_mapper_get_info(m, &mi));
  assert_int_equal(mi.mappings_live, 0);
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(phys);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static bool refuse_segment(IODMACommand *t, IODMACommandSegment64 s, void *segs, UInt32 i) {
  (void)t; (void)s; (void)segs; (void)i;
  return false;
}

/* A bounce buffer that cannot be mapped (the mapper's last mapping is taken): prepare fails
 * with the mapper's reason and keeps nothing; IterateOnly ignores ForceDoubleBuffer; an
 * output function that refuses a segment; synchronize without a direction copies nothing;
 * SegmentOptions with internal segments aligned like the first. */
static void test_bounce_and_output_edges(void **state) {
  (void)state;
  long live = dk__objects_live();
  const uint64_t ranges[1][2] = { { 0x100000, (1ull << 40) - 1 } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 1);
  assert_non_null(m);
  IOBufferMemoryDescriptor *b1 = new_buffer(PS, kIODirectionInOut), *b2 = new_buffer(2 * PS, kIODirectionInOut);
  /* the one mapping, of a made-up range (the soft mapper programs nothing) */
  const dk_iova_spec none = { 0, 0, 0, 0 };
  dk_mapping taken = { 0 };
  DKT_OK(dk__mapper_map(m, (const void *)(uintptr_t)0x7f0000000000ull, PS, PS, &none, &taken));
  IODMACommand *c2 = new_command(64, 0, kIODMAMapOptionMapped, 64, m);
  DKT_OK(IODMACommand_setMemoryDescriptor(c2, MD(b2), false));
  /* starting 8 bytes into the buffer: not 64-byte aligned, so a bounce buffer, then no IOVA */
  DKT_RC(kIOReturnNoResources, IODMACommand_prepare(c2, 8, PS, false, true));
  assert_true(dkt_text_has(dk_last_failure()->text, "limit of 1 mappings"));
  assert_false(dk_dmacommand_is_double_buffered(c2));
  assert_null(dk__dmacommand_bounce(c2));
  DKT_RC(kIOReturnNotReady, IODMACommand_complete(c2, false, false));
  dk__mapper_unmap(m, &taken);
  DKT_OK(IODMACommand_prepare(c2, 8, PS, false, true));                /* room again */
  assert_true(dk_dmacommand_is_double_buffered(c2));
  /* synchronize with no direction: nothing to copy */
  uint64_t blen = 0;
  uint8_t *bb = dk__dmacommand_bounce_bytes(c2, &blen);
  assert_int_equal(blen, PS);
  memset(bb, 0x5e, PS);
  DKT_OK(IODMACommand_synchronize(c2, 0));
  assert_true(dkt_all_bytes((uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(b2) + 8, PS, 0));
  /* an output function that takes no segment */
  UInt64 off = 0;
  IODMACommandSegment64 sg[1];
  UInt32 n = 1;
  DKT_RC(kIOReturnMessageTooLarge, IODMACommand_genIOVMSegmentsWithFunction(c2, refuse_segment, &off, sg, &n));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_SEGMENTS);
  DKT_OK(IODMACommand_complete(c2, false, false));
  /* not prepared: no bounce, nothing transferred */
  assert_false(dk_dmacommand_is_double_buffered(c2));
  assert_null(dk__dmacommand_bounce_bytes(c2, &blen));
  assert_int_equal(blen, 0);
  uint8_t x[4];
  assert_int_equal(dk__dmacommand_transfer(c2, false, 0, x, sizeof x), 0);
  OSSafeReleaseNULL(c2);

  /* IterateOnly never double-buffers, even when asked to */
  IODMACommand *c1 = new_command(64, 0, kIODMAMapOptionIterateOnly, 1, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(c1, MD(b1), true));
  DKT_OK(IODMACommand_synchronize(c1, kIODMACommandForceDoubleBuffer));
  assert_false(dk_dmacommand_is_double_buffered(c1));
  DKT_OK(IODMACommand_getPreparedOffsetAndLength(c1, &off, NULL));
  assert_int_equal(off, 0);
  OSSafeReleaseNULL(c1);                                             /* completes it */

  /* SegmentOptions: internal segments aligned as the first (1 with no alignment) are accepted */
  IODMACommandSegmentOptions o;
  memset(&o, 0, sizeof o);
  o.fNumAddressBits = 64;
  o.fAlignmentInternalSegments = 1;
  c1 = IODMACommand_withSpecificationOptions(IODMACommand_OutputHost64, &o, kIODMAMapOptionMapped, NULL, NULL);
  assert_non_null(c1);
  assert_int_equal(IODMACommand_getAlignment(c1), 1);
  OSSafeReleaseNULL(c1);
  OSSafeReleaseNULL(b1);
  OSSafeReleaseNULL(b2);
  close_clean(m);
  assert_int_equal(dk__objects_live(), live);
}

static void test_object_class_names(void **state) {
  (void)state;
  long live = dk__objects_live();
  IODMACommand *c = new_command(64, 0, kIODMAMapOptionMapped, 1, NULL);
  IOBufferMemoryDescriptor *b = new_buffer(PS, kIODirectionInOut);
  IOMemoryMap *map = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(map);
  assert_string_equal(dk_object_class_name(c), "IODMACommand");
  assert_string_equal(dk_object_class_name(b), "IOBufferMemoryDescriptor");
  assert_string_equal(dk_object_class_name(map), "IOMemoryMap");
  assert_null(dk_object_class_name(NULL));
  /* a mapper (its first word is a magic, not a class pointer) and the identity mapper */
  IOMapper *m = soft_mapper(0x100000, 0xffffffff);
  assert_string_equal(dk_object_class_name(m), "IOMapper");
  assert_string_equal(dk_object_class_name(dk_mapper_identity()), "IOMapper");
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  OSSafeReleaseNULL(map);
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  assert_int_equal(dk__objects_live(), live);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_withSpecification_arguments),
      cmocka_unit_test(test_withSpecification_bypassed_with_mapper),
      cmocka_unit_test(test_object_refcount_and_refcon),
      cmocka_unit_test(test_setMemoryDescriptor_rules),
      cmocka_unit_test(test_clearMemoryDescriptor_rules),
      cmocka_unit_test(test_prepare_complete_rules),
      cmocka_unit_test(test_gen_rules),
      cmocka_unit_test(test_synchronize_rules),
      cmocka_unit_test(test_output_functions),
      cmocka_unit_test(test_mapped_one_iova_range),
      cmocka_unit_test(test_mapped_system_mapper_shares_buffer_iova),
      cmocka_unit_test(test_mapped_misaligned_start_bounces),
      cmocka_unit_test(test_mapped_no_iova_below_limit),
      cmocka_unit_test(test_force_double_buffer),
      cmocka_unit_test(test_copies_follow_direction),
      cmocka_unit_test(test_noncoherent),
      DKT_TEST_4K(segments_are_physical_runs),
      DKT_TEST_POOL(segments_are_physical_runs),
      cmocka_unit_test_setup_teardown(test_split_keeps_alignment, dkt_setup_pool_on, dkt_teardown_pool_restore),
      cmocka_unit_test(test_physical_misaligned_start_bounces),
      cmocka_unit_test_setup_teardown(test_bounce_round_trip, dkt_setup_pool_on, dkt_teardown_pool_restore),
      cmocka_unit_test(test_iterate_only_does_not_bounce),
      cmocka_unit_test(test_32bit_device),
      cmocka_unit_test(test_impossible_bounce),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_unprivileged_physical),
      cmocka_unit_test(test_faults_mapped),
      cmocka_unit_test(test_complete_unmaps_before_freeing_bounce),
      cmocka_unit_test(test_gen32_and_other_functions),
      cmocka_unit_test(test_command_read_write_bytes),
      cmocka_unit_test(test_withSpecification_segment_options),
      cmocka_unit_test(test_object_class_names),
      cmocka_unit_test(test_other_descriptors),
      cmocka_unit_test(test_bounce_and_output_edges),
      DKT_TEST_4K(faults_physical),
      DKT_TEST_POOL(faults_physical),
  };
  return cmocka_run_group_tests_name("dmacommand", tests, group_setup, NULL);
}
