/* tests/test_extmem.c: descriptors over memory the driver already has (withAddressRange(s),
 * withOptions, withAddress, withPhysicalAddress, IOSubMemoryDescriptor, IOMultiMemoryDescriptor,
 * IOGuardPageMemoryDescriptor). Every physical promise is read back through this test's own
 * pagemap reader (tests/support); the pin is seen in the kernel's own count (VmPin in
 * /proc/self/status) and in dmakit's; 4K and hugepage-backed memory; several and overlapping
 * ranges; IODMACommand over them with and without a (software) mapper; mappings of them; bad
 * input (unmapped, read-only, PROT_NONE, wrapping ranges, other tasks); memory unmapped while
 * prepared; frames that stay put under compaction; every prim call of prepare failed in turn
 * with nothing left behind; and, as an ordinary user, what works without frame numbers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iokit/dmacommand.h"
#include "iokit/internal.h"
#include "mapper/mapper_impl.h"
#include "phys/phys.h"
#include "prim/prim.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))
#define KiB (1ull << 10)
#define MiB (1ull << 20)

static size_t page(void) { return dk_capabilities()->page_size; }

/* Anonymous memory, populated, `fill` in every byte (shared: MAP_SHARED | MAP_ANONYMOUS). */
static uint8_t *anon(size_t len, bool shared, int fill)
{
  uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  memset(p, fill, len);
  return p;
}

/* The counters every operation must give back: prim's (fds, mapped and locked bytes, heap
 * blocks), pins, objects, and the kernel's own pinned-memory count. */
typedef struct snapshot { dk_prim_counters c; long pins, objects, vmpin_kb; } snapshot;
static snapshot snap(void)
{
  dk__thread_caches_flush();
  snapshot s = { dk__prim_counters(), dk__pins_live(), dk__objects_live(), dkt_pinned_kb() };
  return s;
}
static void assert_same(const snapshot *a, const snapshot *b, const char *what)
{
  /* the kernel's count is compared when no fault was injected: a failed unregistration (an
   * injected io_uring fault) leaves the kernel's pin until the slot is used again, by design */
  bool vmpin = !dk__fault_fired();
  if ((vmpin && a->vmpin_kb != b->vmpin_kb) ||a->c.fds != b->c.fds || a->c.map_bytes != b->c.map_bytes || a->c.lock_bytes != b->c.lock_bytes ||
      a->c.heap_blocks != b->c.heap_blocks || a->pins != b->pins || a->objects != b->objects)
    fail_msg("%s: not given back: fds %ld->%ld map %ld->%ld lock %ld->%ld heap %ld->%ld pins %ld->%ld objects %ld->%ld "
             "VmPin %ld->%ld kB", what, a->c.fds, b->c.fds, a->c.map_bytes, b->c.map_bytes, a->c.lock_bytes,
             b->c.lock_bytes, a->c.heap_blocks, b->c.heap_blocks, a->pins, b->pins, a->objects, b->objects,
             a->vmpin_kb, b->vmpin_kb);
}

/* Every segment of md (kIOMemoryMapperNone) against frames read here for the descriptor's
 * ranges: the address of each byte the walk reports is the one pagemap gives, and each run
 * ends where the ranges or the frames stop being contiguous. */
static void check_segments(IOMemoryDescriptor *md, const IOAddressRange *r, uint32_t n)
{
  IOByteCount off = 0, len = 0;
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) total += r[i].length;
  assert_int_equal(IOMemoryDescriptor_getLength(md), total);
  uint32_t i = 0;
  uint64_t in = 0;                      /* offset within range i */
  while (off < total) {
    while (in >= r[i].length) { i++; in = 0; }
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, off, &len, kIOMemoryMapperNone);
    if (!a || !len) fail_msg("no segment at offset 0x%llx: %s", (unsigned long long)off, dkt_failure_text());
    const uint8_t *va = (const uint8_t *)(uintptr_t)r[i].address + in;
    uint64_t rest = r[i].length - in;
    assert_true(len <= rest);
    size_t np = dkt_page_count(va, (size_t)rest);
    uint64_t *pfn = calloc(np, sizeof *pfn);
    assert_int_equal(dkt_read_frames(va, (size_t)rest, pfn), np);
    uint64_t run = 0;
    uint64_t want = dkt_expected_segment(va, (size_t)rest, pfn, 0, &run);
    free(pfn);
    if (a != want || len != run)
      fail_msg("offset 0x%llx: dmakit says 0x%llx+0x%llx, pagemap says 0x%llx+0x%llx", (unsigned long long)off,
               (unsigned long long)a, (unsigned long long)len, (unsigned long long)want, (unsigned long long)run);
    off += len;
    in += len;
  }
  /* past the end: 0 and a length of 0 */
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, total, &len, kIOMemoryMapperNone), 0);
  assert_int_equal(len, 0);
}

/* The pin's own set-up (its ring) is made once, by the first pin: made here, before any
 * snapshot is taken. */
static void warm(void)
{
  static bool done;
  if (done) return;
  uint8_t *p = anon(page(), false, 0);
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)p, page(), kIODirectionInOut, kernel_task);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  OSObject_release(md);
  munmap(p, page());
  done = true;
}

/* A buffer of 4K pages of its own (kIOMemoryKernelUserShared), whatever the pool does. */
static IOBufferMemoryDescriptor *buffer_4k(size_t len, int fill)
{
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryKernelUserShared, len, page());
  assert_non_null(b);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b), fill, len);
  return b;
}

/* ==== 1. one range of ordinary memory ====================================================== */

static void one_range(void **state)
{
  (void)state;
  dkt_require_physical();
  size_t len = 64 * KiB;
  uint8_t *buf = anon(len, false, 0x5a);
  warm();
  snapshot before = snap();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)buf + 100, len - 200, kIODirectionInOut,
                                                               kernel_task);
  assert_non_null(md);
  assert_string_equal(((OSObject *)md)->cls->name, "IOGeneralMemoryDescriptor");
  assert_int_equal(IOMemoryDescriptor_getLength(md), len - 200);
  assert_int_equal(IOMemoryDescriptor_getDirection(md), kIODirectionInOut);
  assert_int_equal(IOMemoryDescriptor_getFlags(md) & kIOMemoryTypeMask, kIOMemoryTypeVirtual64);
  /* nothing is pinned or translated before prepare */
  IOByteCount l = 1;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0), 0);
  assert_int_equal(l, 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotReady);
  assert_int_equal(dk__pins_live(), before.pins);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  assert_int_equal(dk__pins_live(), before.pins + 1);
  if (dkt_pinned_kb() >= 0) assert_true(dkt_pinned_kb() >= before.vmpin_kb + (long)(len / 1024));
  IOAddressRange r = { (uintptr_t)buf + 100, len - 200 };
  check_segments(md, &r, 1);
  /* a second prepare only counts; complete to zero gives the pin back */
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionIn));
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  assert_int_equal(dk__pins_live(), before.pins + 1);
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  assert_int_equal(dk__pins_live(), before.pins);
  OSObject_release(md);
  { snapshot after_ = snap(); assert_same(&before, &after_, "one range"); }
  munmap(buf, len);
}

/* ==== 2. several ranges, overlapping ones, zero-length ones ================================== */

static void several_ranges(void **state)
{
  (void)state;
  dkt_require_physical();
  size_t len = 96 * KiB;
  uint8_t *a = anon(len, false, 1), *b = anon(len, true, 2);
  IOAddressRange r[5] = {
    { (uintptr_t)a + 3000, 10000 },
    { (uintptr_t)b + page() - 1, 20 * KiB },
    { (uintptr_t)a + 3000, 64 },                 /* overlaps the first: XNU allows it */
    { (uintptr_t)b, 0 },                          /* nothing */
    { (uintptr_t)a + 40 * KiB, 24 * KiB },
  };
  warm();
  snapshot before = snap();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRanges(r, 5, kIODirectionOut, kernel_task);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  check_segments(md, r, 5);
  /* the bytes, through the ranges in order */
  uint64_t total = IOMemoryDescriptor_getLength(md);
  uint8_t *got = malloc(total);
  assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, got, total), total);
  uint64_t o = 0;
  for (int i = 0; i < 5; i++) {
    assert_memory_equal(got + o, (void *)(uintptr_t)r[i].address, r[i].length);
    o += r[i].length;
  }
  free(got);
  /* prepared for Out: writeBytes copies nothing (XNU), a prepare for writing is refused */
  assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, "x", 1), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotWritable);
  DKT_RC(kIOReturnNotWritable, IOMemoryDescriptor_prepare(md, kIODirectionIn));
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  /* prepared for In, writes go to the ranges */
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionInOut));
  uint8_t w[12000];
  memset(w, 0xee, sizeof w);
  assert_int_equal(IOMemoryDescriptor_writeBytes(md, 9000, w, sizeof w), sizeof w);
  assert_true(dkt_all_bytes(a + 3000 + 9000, 1000, 0xee));                 /* end of range 0 ... */
  assert_true(dkt_all_bytes(b + page() - 1, sizeof w - 1000, 0xee));      /* ... into range 1 */
  assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, NULL, 64), 64);  /* NULL zero-fills */
  assert_true(dkt_all_bytes(a + 3000, 64, 0));
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  { snapshot after_ = snap(); assert_same(&before, &after_, "several ranges"); }
  munmap(a, len);
  munmap(b, len);
}

/* ==== 3. hugepage-backed memory =============================================================== */

static void hugepage_memory(void **state)
{
  (void)state;
  dkt_require_physical();
  if (!dkt_pool_usable()) DKT_SKIP("the hugepage pool is not usable here (root with hugetlb)");
  /* a pool buffer is hugetlb memory this process already has: describe part of it again */
  long was = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 1);
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.contiguous = true;
  IOBufferMemoryDescriptor *buf = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut,
                                                                                1 * MiB, &c);
  dk_option_set(DK_OPTION_POOL, was);
  if (!buf) DKT_SKIP("no 1 MiB contiguous pool buffer here: %s", dkt_failure_text());
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(buf);
  IOAddressRange r[2] = { { (uintptr_t)va + 5000, 300 * KiB }, { (uintptr_t)va, 4096 } };
  warm();
  snapshot before = snap();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRanges(r, 2, kIODirectionInOut, kernel_task);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  check_segments(md, r, 2);
  /* hugetlb memory is contiguous: the first range is one segment */
  IOByteCount l = 0;
  addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0);
  assert_int_equal(l, 300 * KiB);
  assert_int_equal(pa, IOMemoryDescriptor_getPhysicalSegment(MD(buf), 5000, NULL, 0));
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  { snapshot after_ = snap(); assert_same(&before, &after_, "hugepage-backed ranges"); }
  OSObject_release(buf);
}

/* MAP_HUGETLB memory of the process's own, where the kernel has free hugepages. */
static void hugetlb_mapping(void **state)
{
  (void)state;
  dkt_require_physical();
  size_t hp = 2 * MiB;
  void *p = mmap(NULL, hp, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (p == MAP_FAILED) DKT_SKIP("no free 2 MiB hugepage for MAP_HUGETLB here (nr_hugepages is left as found)");
  memset(p, 7, hp);
  IOAddressRange r = { (uintptr_t)p + 12345, hp - 20000 };
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRanges(&r, 1, kIODirectionIn, kernel_task);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  check_segments(md, &r, 1);
  IOByteCount l = 0;
  assert_true(IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0) != 0);
  assert_int_equal(l, r.length);                  /* one hugepage: one run */
  OSObject_release(md);                           /* release completes what is outstanding */
  munmap(p, hp);
}

/* ==== 4. frames stay put while prepared ======================================================= */

static void frames_stay_put(void **state)
{
  (void)state;
  dkt_require_physical();
  if (dk_capabilities()->pin_method != DK_PIN_IO_URING) DKT_SKIP("no long-term pin here (io_uring)");
  size_t len = 4 * MiB;
  uint8_t *buf = anon(len, false, 3);
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)buf, len, kIODirectionInOut, kernel_task);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  size_t np = len / page();
  uint64_t *before = calloc(np, 8), *after = calloc(np, 8);
  assert_int_equal(dkt_read_frames(buf, len, before), np);
  if (dkt_fragment_memory(256 * MiB) == 0) {
    (void)dkt_compact_memory();
    dkt_unfragment();
  } else {
    (void)dkt_compact_memory();
  }
  assert_int_equal(dkt_read_frames(buf, len, after), np);
  for (size_t i = 0; i < np; i++)
    if (before[i] != after[i]) fail_msg("page %zu moved from frame 0x%llx to 0x%llx while prepared", i,
                                        (unsigned long long)before[i], (unsigned long long)after[i]);
  IOAddressRange r = { (uintptr_t)buf, len };
  check_segments(md, &r, 1);
  free(before);
  free(after);
  OSObject_release(md);
  munmap(buf, len);
}

/* ==== 5. bad input ============================================================================== */

static void bad_input(void **state)
{
  (void)state;
  size_t len = 16 * KiB;
  warm();
  snapshot before = snap();
  /* arguments */
  IOAddressRange wrap[2] = { { 0x1000, 0x1000 }, { UINT64_MAX - 10, 100 } };
  assert_null(IOMemoryDescriptor_withAddressRanges(wrap, 2, kIODirectionIn, kernel_task));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_null(IOMemoryDescriptor_withAddressRanges(NULL, 1, kIODirectionIn, kernel_task));
  assert_null(IOMemoryDescriptor_withAddressRanges(wrap, 0, kIODirectionIn, kernel_task));
  assert_null(IOMemoryDescriptor_withOptions(wrap, 1, 4, kernel_task, kIOMemoryTypeVirtual64, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_null(IOMemoryDescriptor_withOptions(wrap, 1, 0, kernel_task, kIOMemoryTypeUPL, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_null(IOMemoryDescriptor_withOptions(wrap, 1, 0, NULL, kIOMemoryTypeVirtual64, NULL));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_TASK);
  assert_null(IOMemoryDescriptor_withOptions(wrap, 1, 0, kernel_task, kIOMemoryTypePhysical64, NULL));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_TASK);
  assert_null(IOMemoryDescriptor_withAddressRange(0x1000, 10, kIODirectionIn, (task_t)(uintptr_t)&before));
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);

  /* unmapped memory: refused at prepare, nothing held */
  uint8_t *gone = anon(len, false, 0);
  munmap(gone, len);
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)gone, len, kIODirectionInOut, kernel_task);
  assert_non_null(md);
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  assert_true(dkt_text_has(dk_last_failure()->text, "not mapped"));
  OSObject_release(md);
  /* part of the range unmapped: the pins taken for the ranges before it are given back */
  uint8_t *ok = anon(len, false, 0), *hole = anon(len, false, 0);
  munmap(hole + 4096, 4096);
  IOAddressRange two[2] = { { (uintptr_t)ok, len }, { (uintptr_t)hole, len } };
  md = IOMemoryDescriptor_withAddressRanges(two, 2, kIODirectionIn, kernel_task);
  assert_non_null(md);
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  assert_int_equal(dk__pins_live(), before.pins);
  OSObject_release(md);
  munmap(ok, len);
  munmap(hole, 4096);
  munmap(hole + 8192, len - 8192);

  /* read-only memory: the device may not write it; nor can the pin take it for Out */
  uint8_t *ro = anon(len, false, 9);
  assert_int_equal(mprotect(ro, len, PROT_READ), 0);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)ro, len, kIODirectionIn, kernel_task);
  DKT_RC(kIOReturnNotWritable, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  assert_true(dkt_text_has(dk_last_failure()->text, "read-only"));
  OSObject_release(md);
  if (dkt_pfn_readable() && dk_capabilities()->pin_method == DK_PIN_IO_URING) {
    md = IOMemoryDescriptor_withAddressRange((uintptr_t)ro, len, kIODirectionOut, kernel_task);
    DKT_RC(kIOReturnCannotWire, IOMemoryDescriptor_prepare(md, kIODirectionNone));
    assert_true(dkt_text_has(dk_last_failure()->text, "read-only"));
    OSObject_release(md);
  }
  /* PROT_NONE */
  assert_int_equal(mprotect(ro, len, PROT_NONE), 0);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)ro, len, kIODirectionOut, kernel_task);
  DKT_RC(kIOReturnNotReadable, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  /* and reading it through the descriptor is refused, not a crash */
  uint8_t x[8];
  assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, x, sizeof x), 0);
  OSObject_release(md);
  munmap(ro, len);
  { snapshot after_ = snap(); assert_same(&before, &after_, "refused input"); }
}

/* ==== 6. unmapped while prepared ================================================================ */

static void unmapped_while_prepared(void **state)
{
  (void)state;
  dkt_require_physical();
  if (dk_capabilities()->pin_method != DK_PIN_IO_URING) DKT_SKIP("no long-term pin here (io_uring)");
  size_t len = 256 * KiB;
  uint8_t *buf = anon(len, false, 0x42);
  warm();
  snapshot before = snap();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)buf, len, kIODirectionInOut, kernel_task);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  size_t np = len / page();
  uint64_t *pfn = calloc(np, 8);
  assert_int_equal(dkt_read_frames(buf, len, pfn), np);
  long pinned = dkt_pinned_kb();
  assert_int_equal(munmap(buf, len), 0);
  /* the pin keeps the pages (the kernel still counts them pinned) and their frames stay valid for
   * the device: the descriptor still reports them */
  assert_int_equal(dkt_pinned_kb(), pinned);
  for (size_t i = 0; i < np; i++) {
    IOByteCount l = 0;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, i * page(), &l, 0);
    assert_int_equal(a, pfn[i] * page());
  }
  /* an IODMACommand still walks them */
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0, kIODMAMapOptionMapped, 0, 1,
                                                     NULL, NULL);
  assert_non_null(cmd);
  DKT_OK(IODMACommand_setMemoryDescriptor(cmd, md, true));
  UInt64 off = 0;
  IODMACommandSegment64 seg;
  UInt32 n = 1;
  DKT_OK(IODMACommand_gen64IOVMSegments(cmd, &off, &seg, &n));
  assert_int_equal(seg.fIOVMAddr, pfn[0] * page());
  DKT_OK(IODMACommand_clearMemoryDescriptor(cmd, true));
  OSObject_release(cmd);
  /* CPU access through the vanished range is refused, not a crash */
  uint8_t x[16];
  assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, x, sizeof x), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnVMError);
  assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, x, sizeof x), 0);
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_performOperation(md, kIOMemoryIncoherentIOFlush, 0, 64));
  /* complete gives everything back: the pages are freed with the pin */
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  free(pfn);
  { snapshot after_ = snap(); assert_same(&before, &after_, "unmapped while prepared"); }
}

/* ==== 7. sub and multi descriptors ================================================================ */

static void sub_and_multi(void **state)
{
  (void)state;
  dkt_require_physical();
  size_t len = 64 * KiB;
  uint8_t *a = anon(len, true, 0);
  for (size_t i = 0; i < len; i++) a[i] = (uint8_t)(i / page());
  IOBufferMemoryDescriptor *b = buffer_4k(3 * page(), 0xbb);
  warm();
  snapshot before = snap();
  IOMemoryDescriptor *g = IOMemoryDescriptor_withAddressRange((uintptr_t)a, len, kIODirectionInOut, kernel_task);
  IOSubMemoryDescriptor *s = IOSubMemoryDescriptor_withSubRange(g, 5 * page() + 10, 3 * page(), kIODirectionInOut);
  assert_non_null(s);
  assert_null(IOSubMemoryDescriptor_withSubRange(g, len - 10, 11, kIODirectionInOut));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(s)), 3 * page());
  /* the sub-range's prepare is the parent's */
  DKT_OK(IOMemoryDescriptor_prepare(MD(s), kIODirectionNone));
  assert_int_equal(atomic_load(&g->wire_count), 1);
  IOByteCount l1 = 0, l2 = 0;
  addr64_t p1 = IOMemoryDescriptor_getPhysicalSegment(MD(s), 100, &l1, 0);
  addr64_t p2 = IOMemoryDescriptor_getPhysicalSegment(g, 5 * page() + 110, &l2, 0);
  assert_int_equal(p1, p2);
  assert_true(l1 <= 3 * page() - 100);
  IOAddressRange sr = { (uintptr_t)a + 5 * page() + 10, 3 * page() };
  check_segments(MD(s), &sr, 1);
  /* three parts end to end: a buffer, the sub-range, the whole range */
  IOMemoryDescriptor *parts[3] = { MD(b), MD(s), g };
  IOMultiMemoryDescriptor *m = IOMultiMemoryDescriptor_withDescriptors(parts, 3, kIODirectionInOut, false);
  assert_non_null(m);
  uint64_t total = 3 * page() + 3 * page() + len;
  assert_int_equal(IOMemoryDescriptor_getLength(MD(m)), total);
  DKT_OK(IOMemoryDescriptor_prepare(MD(m), kIODirectionNone));
  assert_int_equal(atomic_load(&g->wire_count), 3);
  uint8_t *all = malloc(total);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(m), 0, all, total), total);
  assert_true(dkt_all_bytes(all, 3 * page(), 0xbb));
  assert_memory_equal(all + 3 * page(), a + 5 * page() + 10, 3 * page());
  assert_memory_equal(all + 6 * page(), a, len);
  free(all);
  IOByteCount l = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(m), 3 * page() + 100, &l, 0), p1);
  /* getDMAMapLength: every part's pages */
  uint64_t dmaoff = 1;
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(MD(m), &dmaoff), 3 * page() + 4 * page() + len);
  assert_int_equal(dmaoff, 0);
  /* a mapping of the whole: each part at its place (the sub-range starts 10 bytes into a page,
   * so it cannot follow the buffer in a linear view) */
  IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(MD(m), kernel_task, 0, kIOMapAnywhere, 0, 0);
  assert_null(map);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotAligned);
  IOMemoryDescriptor *parts2[2] = { MD(b), g };
  IOMultiMemoryDescriptor *m2 = IOMultiMemoryDescriptor_withDescriptors(parts2, 2, kIODirectionInOut, false);
  map = IOMemoryDescriptor_createMappingInTask(MD(m2), kernel_task, 0, kIOMapAnywhere, 0, 0);
  assert_non_null(map);
  uint8_t *v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_true(dkt_all_bytes(v, 3 * page(), 0xbb));
  assert_memory_equal(v + 3 * page(), a, len);
  v[3 * page() + 7] = 0x77;                       /* the same pages: a write shows in the range */
  assert_int_equal(a[7], 0x77);
  OSObject_release(map);
  OSObject_release(m2);
  DKT_OK(IOMemoryDescriptor_complete(MD(m), kIODirectionNone));
  DKT_OK(IOMemoryDescriptor_complete(MD(s), kIODirectionNone));
  assert_int_equal(atomic_load(&g->wire_count), 0);
  OSObject_release(m);
  OSObject_release(s);
  OSObject_release(g);
  { snapshot after_ = snap(); assert_same(&before, &after_, "sub and multi"); }
  OSObject_release(b);
  munmap(a, len);
}

/* Refused input of the composite descriptors, a part that cannot be prepared (the parts before it
 * are completed again), a part completed behind the concatenation's back (complete is never
 * refused, as in XNU), and the tag and direction a concatenation takes from its parts. */
static void composite_edges(void **state)
{
  (void)state;
  size_t len = 4 * page();
  warm();
  uint8_t *a = anon(len, false, 0x11), *gone = anon(len, false, 0);
  munmap(gone, len);
  snapshot before = snap();
  IOMemoryDescriptor *g = IOMemoryDescriptor_withAddressRange((uintptr_t)a, len, kIODirectionInOut, kernel_task);
  IOMemoryDescriptor *bad = IOMemoryDescriptor_withAddressRange((uintptr_t)gone, len, kIODirectionInOut, kernel_task);
  assert_non_null(g);
  assert_non_null(bad);
  /* a sub-range of nothing, and one whose end wraps */
  assert_null(IOSubMemoryDescriptor_withSubRange(NULL, 0, 1, kIODirectionIn));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_null(IOSubMemoryDescriptor_withSubRange(g, UINT64_MAX, 2, kIODirectionIn));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  /* a concatenation of no array, of no parts, of something that is not a descriptor */
  IOMemoryDescriptor *parts[2] = { g, (IOMemoryDescriptor *)(void *)a };
  assert_null(IOMultiMemoryDescriptor_withDescriptors(NULL, 1, kIODirectionIn, false));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "NULL"));
  assert_null(IOMultiMemoryDescriptor_withDescriptors(parts, 0, kIODirectionIn, false));
  assert_true(dkt_text_has(dk_last_failure()->text, "count 0"));
  assert_null(IOMultiMemoryDescriptor_withDescriptors(parts, 2, kIODirectionIn, false));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "descriptor 1 is not"));
  /* lengths that add up past 2^64 (physical ranges of 2^63 bytes: nothing is touched) */
  IOMemoryDescriptor *huge = IOMemoryDescriptor_withPhysicalAddress(0, 1ull << 63, kIODirectionIn);
  assert_non_null(huge);
  IOMemoryDescriptor *twice[2] = { huge, huge };
  assert_null(IOMultiMemoryDescriptor_withDescriptors(twice, 2, kIODirectionIn, false));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  OSObject_release(huge);
  /* the parts must agree on being pageable buffers, either way round */
  IOBufferMemoryDescriptor *pg =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, page(), page());
  assert_non_null(pg);
  IOMemoryDescriptor *mixed[2] = { g, MD(pg) };
  assert_null(IOMultiMemoryDescriptor_withDescriptors(mixed, 2, kIODirectionIn, false));
  assert_true(dkt_text_has(dk_last_failure()->text, "descriptor 1 is pageable and descriptor 0 is not"));
  mixed[0] = MD(pg);
  mixed[1] = g;
  assert_null(IOMultiMemoryDescriptor_withDescriptors(mixed, 2, kIODirectionIn, false));
  assert_true(dkt_text_has(dk_last_failure()->text, "descriptor 1 is not pageable and descriptor 0 is pageable"));
  OSObject_release(pg);

  /* the tag of the first part that has one; the direction given, for prepare without one */
  IOMemoryDescriptor_setTag(g, 7);
  IOMemoryDescriptor_setTag(bad, 9);
  IOMemoryDescriptor *ok_then_bad[2] = { g, bad };
  IOMultiMemoryDescriptor *m = IOMultiMemoryDescriptor_withDescriptors(ok_then_bad, 2, kIODirectionOut, false);
  assert_non_null(m);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(m)), 7);
  /* the second part cannot be pinned: the first, prepared already, is completed again */
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_prepare(MD(m), kIODirectionNone));
  assert_true(dkt_text_has(dk_last_failure()->text, "preparing a part failed"));
  assert_int_equal(atomic_load(&g->wire_count), 0);
  assert_int_equal(atomic_load(&bad->wire_count), 0);
  assert_int_equal(dk__pins_live(), before.pins);
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_prepare(MD(m), kIODirectionIn));
  assert_int_equal(atomic_load(&g->wire_count), 0);
  OSObject_release(m);

  /* a part completed on its own meanwhile: complete() of the whole completes the others and
   * reports that part's refusal */
  IOMemoryDescriptor *g2 = IOMemoryDescriptor_withAddressRange((uintptr_t)a + page(), page(), kIODirectionInOut,
                                                               kernel_task);
  assert_non_null(g2);
  IOMemoryDescriptor *both[2] = { g, g2 };
  m = IOMultiMemoryDescriptor_withDescriptors(both, 2, kIODirectionInOut, false);
  assert_non_null(m);
  DKT_OK(IOMemoryDescriptor_prepare(MD(m), kIODirectionOut));
  assert_int_equal(atomic_load(&g->wire_count), 1);
  assert_int_equal(atomic_load(&g2->wire_count), 1);
  DKT_OK(IOMemoryDescriptor_complete(g2, kIODirectionNone));
  assert_int_equal(atomic_load(&g2->wire_count), 0);
  DKT_OK(IOMemoryDescriptor_complete(MD(m), kIODirectionOut));     /* unbalanced for g2: XNU only asserts */
  assert_int_equal(atomic_load(&g->wire_count), 0);
  assert_int_equal(atomic_load(&g2->wire_count), 0);
  assert_int_equal(dk__pins_live(), before.pins);
  OSObject_release(m);
  OSObject_release(g2);
  OSObject_release(bad);
  OSObject_release(g);
  { snapshot after_ = snap(); assert_same(&before, &after_, "composite edges"); }
  munmap(a, len);
}

/* ==== 8. mappings ====================================================================================== */

static void mappings(void **state)
{
  (void)state;
  size_t len = 32 * KiB;
  uint8_t *shared = anon(len, true, 0x11), *private = anon(len, false, 0x22);
  warm();
  snapshot before = snap();
  /* one range in this process: map() is the range itself (the identity mapping, kIOMapStatic) */
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)private + 8, 100, kIODirectionInOut,
                                                               kernel_task);
  IOMemoryMap *map = IOMemoryDescriptor_map(md, 0);
  assert_non_null(map);
  assert_int_equal(IOMemoryMap_getAddress(map), (uintptr_t)private + 8);
  assert_true(IOMemoryMap_getMapOptions(map) & kIOMapStatic);
  OSObject_release(map);
  /* a second view of private memory does not exist on Linux: refused, saying why */
  assert_null(IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0));
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_true(dkt_text_has(dk_last_failure()->text, "private"));
  OSObject_release(md);
  /* of shared memory it does: the same pages at a second address, read-only when asked */
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)shared + 8, len - 16, kIODirectionInOut, kernel_task);
  map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapUnique | kIOMapReadOnly, 0, 0);
  assert_non_null(map);
  uint8_t *v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_true(v != shared + 8);
  assert_int_equal(((uintptr_t)v & (page() - 1)), 8);
  assert_int_equal(IOMemoryMap_getLength(map), len - 16);
  shared[100] = 0x99;
  assert_int_equal(v[92], 0x99);
  OSObject_release(map);
  /* kIOMemoryMapCopyOnWrite: a copy, taken at map time */
  OSObject_release(md);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)private, len, kIODirectionInOut | kIOMemoryMapCopyOnWrite,
                                           kernel_task);
  map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(map);
  v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  private[0] = 0x33;
  assert_int_equal(v[0], 0x22);
  assert_true(dkt_all_bytes(v, len, 0x22));
  OSObject_release(map);
  /* placed below vm.mmap_min_addr (and 64 KiB): refused as XNU refuses addresses outside its map */
  assert_null(IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0x2000, 0, 0, 0));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  OSObject_release(md);
  /* guard pages around the view */
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)shared, len, kIODirectionInOut, kernel_task);
  map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapGuardedSmall, 0, 0);
  assert_non_null(map);
  v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_true(dkt_all_bytes(v + 101, 10, 0x11));
  assert_true(dkt_is_mapped(v - 1));               /* reserved, no access */
  OSObject_release(map);
  OSObject_release(md);
  { snapshot after_ = snap(); assert_same(&before, &after_, "mappings"); }
  munmap(shared, len);
  munmap(private, len);
}

/* ==== 9. IODMACommand over the caller's memory ========================================================== */

static void dma_command(void **state)
{
  (void)state;
  dkt_require_physical();
  size_t len = 40 * KiB;
  uint8_t *a = anon(len, false, 0x10);
  IOAddressRange r[2] = { { (uintptr_t)a + 512, 20 * KiB }, { (uintptr_t)a + 24 * KiB, 8 * KiB } };
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRanges(r, 2, kIODirectionInOut, kernel_task);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, page(), kIODMAMapOptionMapped, 0, 1,
                                                     NULL, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(cmd, md, true));
  assert_false(dk_dmacommand_is_double_buffered(cmd));
  /* every segment is what getPhysicalSegment says, cut at a page (the maximum segment size) */
  UInt64 off = 0;
  IOByteCount done = 0;
  while (off < IOMemoryDescriptor_getLength(md)) {
    IODMACommandSegment64 seg;
    UInt32 n = 1;
    DKT_OK(IODMACommand_gen64IOVMSegments(cmd, &off, &seg, &n));
    IOByteCount l = 0;
    addr64_t want = IOMemoryDescriptor_getPhysicalSegment(md, done, &l, kIOMemoryMapperNone);
    assert_int_equal(seg.fIOVMAddr, want);
    assert_true(seg.fLength <= page() && seg.fLength <= l);
    done += seg.fLength;
  }
  /* the command's own copies reach each range: 8 KiB across the end of range 0 */
  uint8_t pat[8 * KiB], back[8 * KiB];
  for (size_t i = 0; i < sizeof pat; i++) pat[i] = (uint8_t)(i * 7 + 1);
  UInt64 at = 20 * KiB - 3 * KiB;
  assert_int_equal(IODMACommand_writeBytes(cmd, at, pat, sizeof pat), sizeof pat);
  assert_memory_equal(a + 512 + at, pat, 3 * KiB);
  assert_memory_equal(a + 24 * KiB, pat + 3 * KiB, 5 * KiB);
  memset(back, 0, sizeof back);
  assert_int_equal(IODMACommand_readBytes(cmd, at, back, sizeof back), sizeof back);
  assert_memory_equal(back, pat, sizeof pat);
  DKT_OK(IODMACommand_clearMemoryDescriptor(cmd, true));
  OSObject_release(cmd);
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  munmap(a, len);
}

/* VT-d as VFIO reports it: 39 address bits minus the MSI window. */
static const uint64_t g_vtd[2][2] = { { 0, 0xfedfffffull }, { 0xfef00000ull, (1ull << 39) - 1 } };

static void under_a_mapper(void **state)
{
  (void)state;
  IOMapper *mapper = dk__mapper_create_soft(g_vtd, 2, 0);
  assert_non_null(mapper);
  dk_mapper_set_system(mapper);
  size_t len = 48 * KiB;
  uint8_t *a = anon(len, false, 0x21), *b = anon(len, false, 0x43);
  warm();
  snapshot before = snap();
  /* one range: one IOVA range for all of it, mapped at prepare, gone at complete */
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)a + 100, len - 100, kIODirectionInOut,
                                                               kernel_task);
  assert_non_null(md);
  IOByteCount l = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0), 0);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  addr64_t iova = IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0);
  assert_true(iova != 0);
  assert_int_equal(l, len - 100);
  assert_int_equal(iova & (page() - 1), 100);
  dk_mapper_info mi;
  DKT_OK(dk_mapper_get_info(mapper, &mi));
  assert_int_equal(mi.mappings_live, 1);
  if (dkt_pfn_readable()) {
    IOAddressRange r = { (uintptr_t)a + 100, len - 100 };
    check_segments(md, &r, 1);                    /* MapperNone: the CPU's frames */
  }
  /* a command maps nothing new: it shares the descriptor's mapping; one segment */
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, 39, 0, kIODMAMapOptionMapped, 0, 1,
                                                     NULL, NULL);
  DKT_OK(IODMACommand_setMemoryDescriptor(cmd, md, true));
  UInt64 off = 0;
  IODMACommandSegment64 seg;
  UInt32 n = 1;
  DKT_OK(IODMACommand_gen64IOVMSegments(cmd, &off, &seg, &n));
  assert_int_equal(seg.fIOVMAddr, iova);
  assert_int_equal(seg.fLength, len - 100);
  DKT_OK(IODMACommand_clearMemoryDescriptor(cmd, true));
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  DKT_OK(dk_mapper_get_info(mapper, &mi));
  assert_int_equal(mi.mappings_live, 0);
  OSObject_release(md);
  /* two ranges: each its own IOVA range; a command over both goes through a bounce buffer the
   * device writes, and complete() copies that into the ranges */
  IOAddressRange r2[2] = { { (uintptr_t)a, 8 * KiB }, { (uintptr_t)b + 4 * KiB, 8 * KiB } };
  md = IOMemoryDescriptor_withAddressRanges(r2, 2, kIODirectionIn, kernel_task);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  DKT_OK(IODMACommand_setMemoryDescriptor(cmd, md, true));
  assert_true(dk_dmacommand_is_double_buffered(cmd));
  uint64_t blen = 0;
  uint8_t *bounce = dk__dmacommand_bounce_bytes(cmd, &blen);
  assert_int_equal(blen, 16 * KiB);
  memset(bounce, 0xd1, blen);                      /* the device writes */
  DKT_OK(IODMACommand_complete(cmd, true, true));
  assert_true(dkt_all_bytes(a, 8 * KiB, 0xd1));
  assert_true(dkt_all_bytes(b + 4 * KiB, 8 * KiB, 0xd1));
  assert_true(dkt_all_bytes(b, 4 * KiB, 0x43));
  DKT_OK(IODMACommand_clearMemoryDescriptor(cmd, true));
  OSObject_release(cmd);
  OSObject_release(md);                           /* releases the outstanding prepare */
  DKT_OK(dk_mapper_get_info(mapper, &mi));
  assert_int_equal(mi.mappings_live, 0);
  { snapshot after_ = snap(); assert_same(&before, &after_, "under a mapper"); }
  dk_mapper_set_system(NULL);
  char report[256];
  assert_int_equal(dk_mapper_close(mapper, report, sizeof report), 0);
  munmap(a, len);
  munmap(b, len);
}

/* ==== 10. physical and remote ranges, guard pages ======================================================= */

static void physical_ranges(void **state)
{
  (void)state;
  IOMemoryDescriptor *md = IOMemoryDescriptor_withPhysicalAddress(0x12345000, 3 * page(), kIODirectionIn);
  assert_non_null(md);
  assert_int_equal(IOMemoryDescriptor_getFlags(md) & kIOMemoryTypeMask, kIOMemoryTypePhysical64);
  IOByteCount l = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 10, &l, 0), 0x12345000 + 10);
  assert_int_equal(l, 3 * page() - 10);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));      /* wired by definition */
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  uint8_t x[4];
  assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, x, 4), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_null(IOMemoryDescriptor_map(md, 0));
  uint64_t dmaoff = 9;
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(md, &dmaoff), 3 * page());
  assert_int_equal(dmaoff, 0);
  OSObject_release(md);
}

/* Touch the guard page in a child: it must die of SIGSEGV. */
static void touch(void *p) { *(volatile uint8_t *)p = 1; }

static void guard_pages(void **state)
{
  (void)state;
  size_t len = 2 * page();
  uint8_t *data = anon(len, true, 0x5c);
  IOMemoryDescriptor *mds[3];
  mds[0] = MD(IOGuardPageMemoryDescriptor_withSize(page() - 1));
  mds[1] = IOMemoryDescriptor_withAddressRange((uintptr_t)data, len, kIODirectionOutIn, kernel_task);
  mds[2] = MD(IOGuardPageMemoryDescriptor_withSize(2 * page()));
  assert_non_null(mds[0]);
  assert_int_equal(IOMemoryDescriptor_getLength(mds[0]), page());
  IOMultiMemoryDescriptor *m = IOMultiMemoryDescriptor_withDescriptors(mds, 3, kIODirectionOutIn, false);
  for (int i = 0; i < 3; i++) OSObject_release(mds[i]);
  IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(MD(m), kernel_task, 0, kIOMapAnywhere, 0, 0);
  assert_non_null(map);
  uint8_t *v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_int_equal(IOMemoryMap_getLength(map), 5 * page());
  assert_true(dkt_all_bytes(v + page(), len, 0x5c));
  int status;
  assert_int_equal(dkt_run_in_child(touch, v, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  assert_int_equal(dkt_run_in_child(touch, v + 3 * page(), &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  assert_int_equal(dkt_run_in_child(touch, v + page(), &status), 0);
  dkt_assert_child_ok(status);
  OSObject_release(map);
  OSObject_release(m);
  munmap(data, len);
}

/* A window of a buffer maps as the buffer at the window's offset: hugepage-pool memory (as
 * root) as its whole hugepages at an address congruent with them, 4K-page memory (as a user)
 * as its file's pages. Before, the pool case was refused for every kIOMapAnywhere request
 * (the view's address was chosen page-aligned, not congruent with the hugepage). */
static void sub_of_buffer_mappings(void **state)
{
  (void)state;
  warm();
  snapshot before = snap();
  size_t len = 3 * page();
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, len, page());
  assert_non_null(b);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(i * 7 + 1);
  IOSubMemoryDescriptor *s = IOSubMemoryDescriptor_withSubRange(MD(b), page() + 100, page(), kIODirectionInOut);
  assert_non_null(s);
  IOSubMemoryDescriptor *ss = IOSubMemoryDescriptor_withSubRange(MD(s), 50, 200, kIODirectionInOut);
  assert_non_null(ss);
  /* map(): anywhere, the window's bytes, the same memory both ways */
  IOMemoryMap *map = IOMemoryDescriptor_map(MD(s), 0);
  if (!map) fail_msg("map of a window: %s", dk_last_failure()->text);
  uint8_t *v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_true(v != p + page() + 100);
  assert_int_equal(IOMemoryMap_getLength(map), page());
  assert_memory_equal(v, p + page() + 100, page());
  v[5] = 0xee;
  assert_int_equal(p[page() + 105], 0xee);
  p[2 * page() + 99] = 0x5a;
  assert_int_equal(v[page() - 1], 0x5a);
  /* a window of the window, read-only: its bytes, and a write faults */
  IOMemoryMap *ro = IOMemoryDescriptor_createMappingInTask(MD(ss), kernel_task, 0, kIOMapAnywhere | kIOMapReadOnly, 0, 0);
  if (!ro) fail_msg("read-only map of a window of a window: %s", dk_last_failure()->text);
  uint8_t *w = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(ro);
  assert_int_equal(IOMemoryMap_getLength(ro), 200);
  assert_memory_equal(w, p + page() + 150, 200);
  int status;
  assert_int_equal(dkt_run_in_child(touch, w, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  /* a part of the window, as a mapping of its own */
  IOMemoryMap *part = IOMemoryDescriptor_createMappingInTask(MD(s), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 64, 128);
  if (!part) fail_msg("map of part of a window: %s", dk_last_failure()->text);
  assert_memory_equal((uint8_t *)(uintptr_t)IOMemoryMap_getAddress(part), p + page() + 164, 128);
  OSObject_release(part);
  OSObject_release(ro);
  OSObject_release(map);
  OSObject_release(ss);
  OSObject_release(s);
  OSObject_release(b);
  { snapshot after_ = snap(); assert_same(&before, &after_, "window mappings"); }
}

/* Views (mappings of described memory) at an address asked for: a free one, a taken one
 * (kIOReturnNoSpace, the caller's mapping untouched), one replaced with kIOMapOverwrite; and
 * redirect's refusals, blocking (NULL backing), a read-only unique mapping, a backing that
 * cannot be mapped. */
static void fixed_views_and_redirect(void **state)
{
  (void)state;
  size_t len = 2 * page();
  uint8_t *data = anon(len, true, 0x6d);
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)data, len, kIODirectionOutIn, kernel_task);
  assert_non_null(md);
  warm();
  snapshot before = snap();
  /* a free address */
  uint8_t *hole = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(hole != MAP_FAILED);
  munmap(hole, len);
  IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, (uintptr_t)hole, 0, 0, 0);
  if (!map) fail_msg("a view at a free address: %s", dkt_failure_text());
  assert_ptr_equal((void *)(uintptr_t)IOMemoryMap_getAddress(map), hole);
  assert_true(dkt_all_bytes(hole, len, 0x6d));
  OSObject_release(map);
  /* a taken one: refused, what is there stays */
  uint8_t *mine = anon(len, false, 0x5a);
  assert_null(IOMemoryDescriptor_createMappingInTask(md, kernel_task, (uintptr_t)mine, 0, 0, 0));
  assert_int_equal(dk_last_failure()->code, kIOReturnNoSpace);
  assert_true(dkt_text_has(dk_last_failure()->text, "at the address asked for"));
  assert_true(dkt_all_bytes(mine, len, 0x5a));
  /* with kIOMapOverwrite: replaced; released, the range is dmakit's to unmap */
  map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, (uintptr_t)mine, kIOMapOverwrite, 0, 0);
  if (!map) fail_msg("a view over the caller's mapping: %s", dkt_failure_text());
  assert_ptr_equal((void *)(uintptr_t)IOMemoryMap_getAddress(map), mine);
  assert_true(dkt_all_bytes(mine, len, 0x6d));
  OSObject_release(map);
  assert_false(dkt_is_mapped(mine));
  { snapshot after_ = snap(); assert_same(&before, &after_, "views at an address"); }

  /* redirect */
  IOBufferMemoryDescriptor *b1 = buffer_4k(page(), 0x11), *b2 = buffer_4k(page(), 0x22);
  map = IOMemoryDescriptor_createMappingInTask(MD(b1), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(map);
  uint8_t *v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  DKT_RC(kIOReturnBadArgument, IOMemoryMap_redirect(NULL, MD(b2), 0, 0));
  assert_true(dkt_text_has(dk_last_failure()->text, "not an IOMemoryMap"));
  DKT_RC(kIOReturnBadArgument, IOMemoryMap_redirect(map, (IOMemoryDescriptor *)(void *)data, 0, 0));
  assert_true(dkt_text_has(dk_last_failure()->text, "not a memory descriptor"));
  DKT_RC(kIOReturnBadArgument, IOMemoryMap_redirect(map, MD(b2), 0, 1));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  DKT_RC(kIOReturnBadArgument, IOMemoryMap_redirect(map, MD(b2), 0, UINT64_MAX));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  /* physical ranges cannot be shown: refused, the mapping still shows its memory */
  IOMemoryDescriptor *phys = IOMemoryDescriptor_withPhysicalAddress(0x12345000, page(), kIODirectionOutIn);
  assert_non_null(phys);
  assert_int_not_equal(IOMemoryMap_redirect(map, phys, 0, 0), kIOReturnSuccess);
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(map), MD(b1));
  assert_true(dkt_all_bytes(v, page(), 0x11));
  OSObject_release(phys);
  /* blocked: every access faults; redirected to the same memory again, it shows it */
  DKT_OK(IOMemoryMap_redirect(map, NULL, 0, 0));
  int status;
  assert_int_equal(dkt_run_in_child(touch, v, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  DKT_OK(IOMemoryMap_redirect(map, MD(b1), 0, 0));
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(map), MD(b1));
  assert_true(dkt_all_bytes(v, page(), 0x11));
  OSObject_release(map);
  /* read-only and unique: redirected, still read-only */
  map = IOMemoryDescriptor_createMappingInTask(MD(b1), kernel_task, 0, kIOMapAnywhere | kIOMapUnique | kIOMapReadOnly,
                                               0, 0);
  assert_non_null(map);
  v = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  DKT_OK(IOMemoryMap_redirect(map, MD(b2), 0, 0));
  assert_true(dkt_all_bytes(v, page(), 0x22));
  assert_int_equal(dkt_run_in_child(touch, v, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  OSObject_release(map);
  OSObject_release(b1);
  OSObject_release(b2);
  OSObject_release(md);
  munmap(data, len);
}

/* ==== 11. context, redirect, getDMAMapLength ============================================================ */

static void context_and_redirect(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b1 = buffer_4k(page(), 0), *b2 = buffer_4k(page(), 0);
  IOBufferMemoryDescriptor *ctx = IOBufferMemoryDescriptor_withCapacity(64, kIODirectionNone, false);
  assert_null(IOMemoryDescriptor_copyContext(MD(b1)));
  IOMemoryDescriptor_setContext(MD(b1), ctx);
  assert_int_equal(OSObject_getRetainCount(ctx), 2);
  void *got = IOMemoryDescriptor_copyContext(MD(b1));
  assert_ptr_equal(got, ctx);
  OSObject_release(got);
  IOMemoryDescriptor_setContext(MD(b1), NULL);
  assert_null(IOMemoryDescriptor_copyContext(MD(b1)));
  IOMemoryDescriptor_setContext(MD(b1), ctx);
  /* redirect: a unique mapping shows other memory at the same address */
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b1), 0x11, page());
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b2), 0x22, page());
  IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(MD(b1), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(map);
  uint32_t *w = (uint32_t *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_int_equal(w[0], 0x11111111);
  DKT_OK(IOMemoryMap_redirect(map, MD(b2), 0, 0));
  assert_int_equal(w[0], 0x22222222);
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(map), MD(b2));
  DKT_OK(IOMemoryMap_redirect(map, MD(b1), 0, 0));
  assert_int_equal(w[0], 0x11111111);
  OSObject_release(map);
  IOMemoryMap *shared = IOMemoryDescriptor_map(MD(b1), 0);
  DKT_RC(kIOReturnBadArgument, IOMemoryMap_redirect(shared, MD(b2), 0, 0));   /* not unique */
  OSObject_release(shared);
  OSObject_release(b1);                            /* the context goes with it */
  assert_int_equal(OSObject_getRetainCount(ctx), 1);
  OSObject_release(b2);
  OSObject_release(ctx);
  /* getDMAMapLength (XNU's own cases, TestIOMemoryDescriptor.cpp) */
  uint8_t *data = anon(8 * page(), false, 0);
  uint64_t o = 7;
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)data, 2, kIODirectionOutIn, kernel_task);
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(md, &o), page());
  assert_int_equal(o, 0);
  OSObject_release(md);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)data + page() - 2, 4, kIODirectionOutIn, kernel_task);
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(md, &o), 2 * page());
  assert_int_equal(o, page() - 2);
  OSObject_release(md);
  munmap(data, 8 * page());
}

/* ==== 12. fault injection =============================================================================== */

static IOReturn op_prepare(void)
{
  static uint8_t *mem;
  size_t len = 24 * KiB;
  if (!mem) mem = anon(len, false, 1);
  IOAddressRange r[2] = { { (uintptr_t)mem + 10, 8 * KiB }, { (uintptr_t)mem + 12 * KiB, 12 * KiB } };
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRanges(r, 2, kIODirectionInOut, kernel_task);
  if (!md) return dk_last_failure()->code;
  IOReturn rc = IOMemoryDescriptor_prepare(md, kIODirectionNone);
  if (rc == kIOReturnSuccess) {
    IOByteCount l = 0;
    if (dkt_pfn_readable() && !IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0)) rc = kIOReturnInternalError;
    IOMemoryDescriptor_complete(md, kIODirectionNone);
  }
  OSObject_release(md);
  return rc;
}

/* A view of shared memory between guard pages, through a concatenation and a sub-range. */
static IOReturn op_map(void)
{
  static uint8_t *mem;
  size_t len = 16 * KiB;
  if (!mem) mem = anon(len, true, 2);
  IOMemoryDescriptor *g = IOMemoryDescriptor_withAddressRange((uintptr_t)mem, len, kIODirectionInOut, kernel_task);
  if (!g) return dk_last_failure()->code;
  IOMemoryDescriptor *parts[3] = { MD(IOGuardPageMemoryDescriptor_withSize(page())),
                                   MD(IOSubMemoryDescriptor_withSubRange(g, page(), 2 * page(), kIODirectionInOut)),
                                   MD(IOGuardPageMemoryDescriptor_withSize(page())) };
  IOReturn rc = kIOReturnSuccess;
  IOMultiMemoryDescriptor *m = NULL;
  if (parts[0] && parts[1] && parts[2]) m = IOMultiMemoryDescriptor_withDescriptors(parts, 3, kIODirectionInOut, false);
  if (!m) rc = dk_last_failure()->code;
  IOMemoryMap *map = m ? IOMemoryDescriptor_createMappingInTask(MD(m), kernel_task, 0, kIOMapAnywhere | kIOMapGuardedSmall,
                                                               0, 0) : NULL;
  if (m && !map) rc = dk_last_failure()->code;
  if (map && ((uint8_t *)(uintptr_t)IOMemoryMap_getAddress(map))[page()] != 2) rc = kIOReturnInternalError;
  OSObject_release(map);
  OSObject_release(m);
  for (int i = 0; i < 3; i++) OSObject_release(parts[i]);
  OSObject_release(g);
  return rc;
}

/* Fail the nth prim call of op, n = 1, 2, ... until op no longer reaches the fault, once and for
 * ever: a documented code with a reason each time, and nothing left behind. */
static void sweep(const char *name, IOReturn (*op)(void))
{
  warm();
  assert_int_equal(op(), kIOReturnSuccess);
  snapshot base = snap();
  unsigned long points = 0;
  for (int forever = 0; forever < 2; forever++) {
    for (unsigned long n = 1; n < 1000; n++) {
      dk__thread_caches_flush();
      dk__fault_arm(n, forever, 0, 0);
      IOReturn rc = op();
      int fired = dk__fault_fired();
      dk__fault_disarm();
      snapshot now = snap();
      char what[96];
      snprintf(what, sizeof what, "%s, fault at call %lu%s", name, n, forever ? " for ever" : "");
      assert_same(&base, &now, what);
      if (rc != kIOReturnSuccess) {
        if (!fired) fail_msg("%s: %s with no fault", what, dk_ioreturn_name(rc));
        if (rc != kIOReturnNoMemory && rc != kIOReturnNoResources && rc != kIOReturnCannotWire &&
            rc != kIOReturnVMError && rc != kIOReturnNotReadable && rc != kIOReturnNotWritable &&
            rc != kIOReturnNoSpace)
          fail_msg("%s: undocumented %s: %s", what, dk_ioreturn_name(rc), dk_last_failure()->text);
        if (!dk_last_failure()->text[0]) fail_msg("%s: %s without a reason", what, dk_ioreturn_name(rc));
      }
      if (!fired) break;
      points++;
    }
  }
  assert_true(points > 0);
  print_message("%s: %lu injected failures, nothing left behind\n", name, points);
  assert_int_equal(op(), kIOReturnSuccess);
}

/* withOptions' memory types, wrapping totals, guard-page sizes; the mapper a descriptor takes
 * (given, identity, none asked for, the system's) and a mapper that runs out of mappings half
 * way through the ranges: nothing stays mapped or pinned. */
static IOMapper *g_opt_mapper;
static IOReturn op_options(void)
{
  static uint8_t *mem;
  if (!mem) mem = anon(4 * page(), false, 3);
  IOAddressRange r[2] = { { (uintptr_t)mem, page() }, { (uintptr_t)mem + 2 * page(), 2 * page() } };
  IOMemoryDescriptor *md =
      IOMemoryDescriptor_withOptions(r, 2, 0, kernel_task, kIOMemoryTypeVirtual64 | kIODirectionInOut |
                                     kIOMemoryThreadSafe | kIOMemoryAutoPrepare, g_opt_mapper);
  if (!md) return dk_last_failure()->code;
  IOByteCount l = 0;
  IOReturn rc = IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0) ? kIOReturnSuccess : kIOReturnInternalError;
  IOMemoryDescriptor_complete(md, kIODirectionNone);
  OSObject_release(md);
  return rc;
}

static void gmd_edges(void **state)
{
  (void)state;
  warm();
  uint8_t *a = anon(4 * page(), false, 0x31);
  snapshot before = snap();
  IOAddressRange r = { (uintptr_t)a, page() };
  /* memory types: UIO, persistent and UPL descriptors are IOKit's, others no type at all */
  static const IOOptionBits unsupported[] = { kIOMemoryTypeUIO, kIOMemoryTypePersistentMD };
  for (size_t i = 0; i < 2; i++) {
    assert_null(IOMemoryDescriptor_withOptions(&r, 1, 0, kernel_task, unsupported[i], NULL));
    assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  }
  assert_null(IOMemoryDescriptor_withOptions(&r, 1, 0, kernel_task, 0x60, NULL));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "memory type 0x60"));
  /* the total wraps although no range does; a virtual range ending in the last page */
  IOAddressRange halves[2] = { { 0x1000, 1ull << 63 }, { 0x1000, 1ull << 63 } };
  assert_null(IOMemoryDescriptor_withAddressRanges(halves, 2, kIODirectionIn, NULL));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  IOAddressRange top = { UINT64_MAX - page() - 10, 20 };
  assert_null(IOMemoryDescriptor_withAddressRanges(&top, 1, kIODirectionIn, kernel_task));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  assert_true(dkt_text_has(dk_last_failure()->text, "wraps"));
  /* guard pages: no size, a size that does not round to pages; no bus address */
  assert_null(IOGuardPageMemoryDescriptor_withSize(0));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_null(IOGuardPageMemoryDescriptor_withSize(SIZE_MAX));
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  IOGuardPageMemoryDescriptor *gp = IOGuardPageMemoryDescriptor_withSize(page());
  assert_non_null(gp);
  IOByteCount l = 5;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(gp), 0, &l, 0), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  uint8_t x[4];
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(gp), 0, x, sizeof x), 0);
  assert_true(dkt_text_has(dk_last_failure()->text, "guard pages hold no bytes"));
  OSObject_release(gp);
  /* physical ranges are not copied either */
  IOMemoryDescriptor *phys = IOMemoryDescriptor_withPhysicalAddress(0x12345000, page(), kIODirectionIn);
  assert_non_null(phys);
  assert_int_equal(IOMemoryDescriptor_writeBytes(phys, 0, x, sizeof x), 0);
  assert_true(dkt_text_has(dk_last_failure()->text, "physical ranges cannot be copied"));
  OSObject_release(phys);
  /* auto-prepared memory that cannot be pinned: no descriptor */
  uint8_t *gone = anon(page(), false, 0);
  munmap(gone, page());
  assert_null(IOMemoryDescriptor_withAddress(gone, page(), kIODirectionInOut));
  assert_int_equal(dk_last_failure()->code, kIOReturnVMError);
  assert_string_equal(dk_last_failure()->function, "withAddress");

  /* the mapper: one given is used, the identity mapper or kIOMemoryMapperNone is none, and a
   * zero-length range needs no mapping */
  IOMapper *soft = dk__mapper_create_soft(g_vtd, 2, 0);
  assert_non_null(soft);
  IOAddressRange two[2] = { { (uintptr_t)a, page() }, { (uintptr_t)a + 2 * page(), 0 } };
  IOMemoryDescriptor *md = IOMemoryDescriptor_withOptions(two, 2, 0, kernel_task,
                                                          kIOMemoryTypeVirtual64 | kIODirectionInOut, soft);
  assert_non_null(md);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  dk_mapper_info mi;
  DKT_OK(dk_mapper_get_info(soft, &mi));
  assert_int_equal(mi.buffers_mapped, 1);
  l = 0;
  addr64_t iova = IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0);
  assert_true(iova != 0);
  assert_int_equal(l, page());
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  DKT_OK(dk_mapper_get_info(soft, &mi));
  assert_int_equal(mi.buffers_mapped, 0);
  OSObject_release(md);
  md = IOMemoryDescriptor_withOptions(&r, 1, 0, kernel_task, kIOMemoryTypeVirtual64 | kIODirectionInOut,
                                      dk_mapper_identity());
  assert_non_null(md);
  assert_false(md->has_mapper);
  OSObject_release(md);
  dk_mapper_set_system(soft);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)a, page(), kIODirectionInOut | kIOMemoryMapperNone, kernel_task);
  assert_non_null(md);
  assert_false(md->has_mapper);
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  DKT_OK(dk_mapper_get_info(soft, &mi));
  assert_int_equal(mi.buffers_mapped, 0);
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(soft, NULL, 0), 0);

  /* a mapper with room for one mapping, two ranges in different places: the second is
   * refused, the first is unmapped again and the pins are given back */
  IOMapper *one = dk__mapper_create_soft(g_vtd, 2, 1);
  assert_non_null(one);
  IOAddressRange apart[2] = { { (uintptr_t)a, page() }, { (uintptr_t)a + 2 * page(), page() } };
  md = IOMemoryDescriptor_withOptions(apart, 2, 0, kernel_task, kIOMemoryTypeVirtual64 | kIODirectionInOut, one);
  assert_non_null(md);
  DKT_RC(kIOReturnNoResources, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  assert_true(dkt_text_has(dk_last_failure()->text, "limit of 1 mappings"));
  DKT_OK(dk_mapper_get_info(one, &mi));
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.buffers_mapped, 0);
  assert_int_equal(atomic_load(&md->wire_count), 0);
  assert_int_equal(dk__pins_live(), before.pins);
  OSObject_release(md);
  assert_int_equal(dk_mapper_close(one, NULL, 0), 0);
  { snapshot after_ = snap(); assert_same(&before, &after_, "descriptor options"); }

  /* thread-safe, auto-prepared, under a mapper: every prim call of it failed in turn */
  g_opt_mapper = dk__mapper_create_soft(g_vtd, 2, 0);
  assert_non_null(g_opt_mapper);
  sweep("withOptions thread-safe, auto-prepared, under a mapper", op_options);
  assert_int_equal(dk_mapper_close(g_opt_mapper, NULL, 0), 0);
  g_opt_mapper = NULL;
  munmap(a, 4 * page());
}

static void faults(void **state)
{
  (void)state;
  sweep("prepare of two ranges", op_prepare);
  sweep("a guarded view of a sub-range between guard pages", op_map);
}

/* ==== 13. as an ordinary user ============================================================================= */

static void as_user(void **state)
{
  (void)state;
  if (geteuid() == 0 || dkt_pfn_readable())
    DKT_SKIP("runs as an ordinary user: test_extmem_as_user (tests/run_as_user.sh)");
  size_t len = 16 * KiB;
  uint8_t *a = anon(len, false, 3);
  snapshot before = snap();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)a, len, kIODirectionInOut, kernel_task);
  assert_non_null(md);
  /* prepare works (the pages are faulted in and checked), copies work; frames are hidden */
  DKT_OK(IOMemoryDescriptor_prepare(md, kIODirectionNone));
  IOByteCount l = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(md, 0, &l, 0), 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNotPrivileged);
  uint8_t x[8];
  assert_int_equal(IOMemoryDescriptor_readBytes(md, 8, x, 8), 8);
  assert_int_equal(x[0], 3);
  DKT_OK(IOMemoryDescriptor_complete(md, kIODirectionNone));
  OSObject_release(md);
  /* refusals read the same */
  assert_int_equal(mprotect(a, len, PROT_READ), 0);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)a, len, kIODirectionIn, kernel_task);
  DKT_RC(kIOReturnNotWritable, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  OSObject_release(md);
  munmap(a, len);
  md = IOMemoryDescriptor_withAddressRange((uintptr_t)a, len, kIODirectionIn, kernel_task);
  DKT_RC(kIOReturnVMError, IOMemoryDescriptor_prepare(md, kIODirectionNone));
  OSObject_release(md);
  { snapshot after_ = snap(); assert_same(&before, &after_, "as an ordinary user"); }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(one_range),
    cmocka_unit_test(several_ranges),
    cmocka_unit_test(hugepage_memory),
    cmocka_unit_test(hugetlb_mapping),
    cmocka_unit_test(frames_stay_put),
    cmocka_unit_test(bad_input),
    cmocka_unit_test(unmapped_while_prepared),
    cmocka_unit_test(sub_and_multi),
    cmocka_unit_test(composite_edges),
    cmocka_unit_test(mappings),
    cmocka_unit_test(sub_of_buffer_mappings),
    cmocka_unit_test(dma_command),
    cmocka_unit_test(under_a_mapper),
    cmocka_unit_test(physical_ranges),
    cmocka_unit_test(guard_pages),
    cmocka_unit_test(context_and_redirect),
    cmocka_unit_test(fixed_views_and_redirect),
    cmocka_unit_test(faults),
    cmocka_unit_test(gmd_edges),
    cmocka_unit_test(as_user),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
