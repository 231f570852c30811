/* tests/test_pool.c: the hugepage pool, proven through the frames. Every buffer's promise
 * (contiguity, alignment up to 1 GiB, 4 GiB and smaller boundaries, masks chosen from the
 * layout) is checked against this test's own pagemap read; small buffers are packed and
 * disjoint; freed memory is zero before reuse; statistics add up; trim gives every hugepage
 * and every kernel limit dmakit raised back. Needs root (frames) and hugetlb. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>

#include "alloc/pool.h"
#include "iokit/internal.h"
#include "phys/huge.h"
#include "prim/prim.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))
#define MiB (1ull << 20)
#define GiB (1ull << 30)

static void require_pool(void)
{
  DKT_REQUIRE_ROOT();
  if (!dk_capabilities()->pool_usable) DKT_SKIP("no hugetlb support: the pool cannot run here");
  dk_option_set(DK_OPTION_POOL, 1);
}

static long sysfs_long(const char *path)
{
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f) { if (fscanf(f, "%ld", &v) != 1) v = -1; fclose(f); }
  return v;
}
/* Write v to a sysfs limit (or any file); false if it cannot be opened. */
static bool write_long(const char *path, long v)
{
  FILE *f = fopen(path, "w");
  if (!f) return false;
  fprintf(f, "%ld\n", v);
  return fclose(f) == 0;
}
#define OVERCOMMIT_2M "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages"
#define NR_1G "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"

/* The buffer's frames read independently; checks one contiguous run, the alignment, the
 * window and the boundary, and that getPhysicalSegment agrees byte for byte. */
static void prove(IOBufferMemoryDescriptor *b, uint64_t len, uint64_t align, uint64_t high, uint64_t boundary)
{
  assert_non_null(b);
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(va);
  if (align > 1) assert_int_equal((uintptr_t)va % align, 0);   /* virtual alignment too */
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &n);
  assert_non_null(pfn);
  size_t ps = dkt_page_size();
  uint64_t start = pfn[0] * ps + ((uintptr_t)va % ps);
  for (size_t i = 1; i < n; i++)
    if (pfn[i] != pfn[0] + i) fail_msg("page %zu of a contiguous buffer is at frame 0x%llx, expected 0x%llx", i,
                                       (unsigned long long)pfn[i], (unsigned long long)(pfn[0] + i));
  free(pfn);
  if (align > 1) assert_int_equal(start % align, 0);
  if (high) assert_true(start + len - 1 <= high);
  if (boundary) assert_int_equal(start / boundary, (start + len - 1) / boundary);
  IOByteCount seglen = 0;
  addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &seglen, kIOMemoryMapperNone);
  assert_int_equal(pa, start);
  assert_int_equal(seglen, IOMemoryDescriptor_getLength(MD(b)));
}

static IOBufferMemoryDescriptor *constrained(uint64_t len, uint64_t align, uint64_t high, uint64_t boundary,
                                             bool contiguous)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.alignment = align;
  c.high = high;
  c.boundary = boundary;
  c.contiguous = contiguous;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, len, &c);
  if (!b) print_message("refused: %s\n", dk_last_failure()->text);
  return b;
}

static void validate(bool deep)
{
  char why[256];
  if (dk__pool_validate(deep, why, sizeof why) != 0) fail_msg("pool inconsistent: %s", why);
}

static void pool_contiguous_sizes(void **state)
{
  (void)state;
  require_pool();
  const uint64_t sizes[] = { 4096, 64 * 1024, 2 * MiB, 2 * MiB + 4096, 16 * MiB, 64 * MiB };
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    IOBufferMemoryDescriptor *b = constrained(sizes[i], 4096, 0, 0, true);
    prove(b, sizes[i], 4096, 0, 0);
    dk_buffer_info info;
    assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
    assert_int_equal(info.provider, sizes[i] <= 4096 ? DK_PROVIDER_POOL_SLAB : DK_PROVIDER_POOL);
    OSObject_release(b);
  }
  validate(true);
  dk_pool_trim();
}

static void pool_alignments(void **state)
{
  (void)state;
  require_pool();
  for (unsigned k = 6; k <= 24; k++) {            /* 64 B .. 16 MiB */
    uint64_t a = 1ull << k;
    IOBufferMemoryDescriptor *b = constrained(4096, a, 0, 0, true);
    prove(b, 4096, a, 0, 0);
    OSObject_release(b);
  }
  /* withCapacity's alignment == capacity (XNU), odd capacities rounded to a power of two */
  IOBufferMemoryDescriptor *w = IOBufferMemoryDescriptor_withCapacity(3 * 4096, kIODirectionIn, true);
  prove(w, 3 * 4096, 4 * 4096, 0, 0);
  OSObject_release(w);
  dk_pool_trim();
}

static void pool_gigabyte_alignment(void **state)
{
  (void)state;
  require_pool();
  bool have_1g = false;
  for (uint32_t i = 0; i < dk_capabilities()->hugepage_size_count; i++)
    if (dk_capabilities()->hugepage_sizes[i] == GiB) have_1g = true;
  if (!have_1g) DKT_SKIP("no 1 GiB hugepages on this kernel");
  long nr0 = sysfs_long(NR_1G);
  IOBufferMemoryDescriptor *b = constrained(8 * MiB, GiB, 0, 0, true);
  if (!b) DKT_SKIP("the kernel could not form a 1 GiB page now: %s", dk_last_failure()->text);
  prove(b, 8 * MiB, GiB, 0, 0);
  OSObject_release(b);
  dk_pool_trim();
  assert_int_equal(sysfs_long(NR_1G), nr0);        /* the 1 GiB page went back */
}

static void pool_boundaries(void **state)
{
  (void)state;
  require_pool();
  const uint64_t bounds[] = { 64 * 1024, 2 * MiB, 4ull * GiB };
  for (size_t i = 0; i < 3; i++) {
    for (int k = 0; k < 8; k++) {
      uint64_t len = bounds[i] < 2 * MiB ? bounds[i] / 2 + 4096 * (uint64_t)k : MiB + 4096 * (uint64_t)k;
      IOBufferMemoryDescriptor *b = constrained(len, 4096, 0, bounds[i], true);
      prove(b, len, 4096, 0, bounds[i]);
      OSObject_release(b);
    }
  }
  /* a buffer longer than its boundary can never be contiguous */
  assert_null(constrained(2 * 64 * 1024, 4096, 0, 64 * 1024, true));
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_BOUNDARY);
  dk_pool_trim();
}

static void pool_masks_from_layout(void **state)
{
  (void)state;
  require_pool();
  /* 64 KiB: the pool page at its lowest frame keeps room for the masked buffers below */
  IOBufferMemoryDescriptor *probe = constrained(64 * 1024, 4096, 0, 0, true);
  assert_non_null(probe);
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_true(st.lowest_frame > 0);
  /* a mask just above the lowest memory held: met, and every byte below it */
  uint64_t mask = 1;
  while (mask < st.lowest_frame + 64 * MiB) mask = (mask << 1) | 1;
  for (int k = 0; k < 16; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 64 * 1024, mask);
    prove(b, 64 * 1024, 4096, mask, 0);
    OSObject_release(b);
  }
  /* a mask below all RAM (1 MiB): refused, naming the mask and the lowest frame found */
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, 64);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MS, 500);
  IOBufferMemoryDescriptor *none = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 4096, 0xFFFFF);
  assert_null(none);
  const dk_failure *f = dk_last_failure();
  assert_int_equal(f->code, kIOReturnNoMemory);
  assert_int_equal(f->constraint, DK_CONSTRAINT_MASK);
  assert_true(dkt_text_has(f->text, "0xfffff"));
  assert_true(dkt_text_has(f->text, "lowest frame"));
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, 2048);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MS, 3000);
  OSObject_release(probe);
  validate(false);
  dk_pool_trim();
}

static void pool_small_buffers_packed(void **state)
{
  (void)state;
  require_pool();
  enum { N = 300 };
  IOBufferMemoryDescriptor *b[N];
  uint64_t pa[N], len[N];
  dk_pool_stats before, after;
  dk_pool_get_stats(&before);
  for (int i = 0; i < N; i++) {
    len[i] = 1 + (uint64_t)(i * 37) % 2048;
    b[i] = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, len[i], 1);
    assert_non_null(b[i]);
    dk_buffer_info info;
    dk_buffer_get_info(b[i], &info);
    assert_int_equal(info.provider, DK_PROVIDER_POOL_SLAB);
    IOByteCount l;
    pa[i] = IOMemoryDescriptor_getPhysicalSegment(MD(b[i]), 0, &l, 0);
    assert_int_equal(l, len[i]);                                  /* inside one slot: contiguous */
    uint64_t cls = 64;
    while (cls < len[i]) cls <<= 1;
    assert_int_equal(pa[i] % cls, 0);                             /* naturally aligned */
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b[i]), len[i], 0));
    memset(IOBufferMemoryDescriptor_getBytesNoCopy(b[i]), 0xC5, len[i]);
  }
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      if (pa[i] < pa[j] + len[j] && pa[j] < pa[i] + len[i]) fail_msg("buffers %d and %d overlap", i, j);
  dk_pool_get_stats(&after);
  assert_int_equal(after.requests_slab - before.requests_slab, N);
  /* 300 small buffers cost slabs of 64 KiB, not 300 hugepages */
  assert_true(after.bytes_pool_2m + after.bytes_pool_1g <= before.bytes_pool_2m + before.bytes_pool_1g + 64 * MiB);
  for (int i = 0; i < N; i++) OSObject_release(b[i]);
  validate(true);
  /* the same slots again: zero */
  for (int i = 0; i < N; i++) {
    b[i] = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, len[i], 1);
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b[i]), len[i], 0));
  }
  for (int i = 0; i < N; i++) OSObject_release(b[i]);
  dk_pool_trim();
}

static void pool_freed_memory_is_zero(void **state)
{
  (void)state;
  require_pool();
  for (int round = 0; round < 20; round++) {
    uint64_t len = (uint64_t)(round + 1) * 192 * 1024;
    IOBufferMemoryDescriptor *b = constrained(len, 4096, 0, 0, true);
    assert_non_null(b);
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    assert_true(dkt_all_bytes(p, len, 0));
    memset(p, 0xA5 ^ round, len);
    OSObject_release(b);
  }
  validate(true);                 /* every free byte of the pool is zero */
  dk_pool_trim();
}

/* Large ranges are zeroed with streaming stores (pool.c, zero_range): odd lengths and a start
 * that is not on a cache line (a sub-range of a contiguous run) are zero too, head, body and
 * tail, and nothing around them is touched. */
static void pool_large_freed_memory_is_zero(void **state)
{
  (void)state;
  require_pool();
  const uint64_t lens[] = { 32 * MiB, 40 * MiB + 4096 + 100 };
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    IOBufferMemoryDescriptor *b = constrained(lens[i], 4096, 0, 0, true);
    assert_non_null(b);
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    assert_true(dkt_all_bytes(p, lens[i], 0));
    memset(p, 0x5C, lens[i]);
    OSObject_release(b);
    validate(true);
    b = constrained(lens[i], 4096, 0, 0, true);
    assert_non_null(b);
    assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), lens[i], 0));
    OSObject_release(b);
  }
  /* no alignment and odd lengths: the pool places a buffer at the top of a free extent, so
   * the first starts off a cache line, and the second, placed just below it, also ends off one
   * (head, body and tail all used); zeroing one leaves its neighbour's bytes alone */
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.contiguous = true;
  const uint64_t la = 33 * MiB + 3, lb = 34 * MiB + 5;
  IOBufferMemoryDescriptor *a = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, la, &c);
  IOBufferMemoryDescriptor *nb = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, lb, &c);
  assert_non_null(a);
  assert_non_null(nb);
  uint8_t *pa_ = IOBufferMemoryDescriptor_getBytesNoCopy(a), *pb = IOBufferMemoryDescriptor_getBytesNoCopy(nb);
  assert_int_not_equal((uintptr_t)pa_ % 64, 0);
  memset(pa_, 0x77, la);
  memset(pb, 0x66, lb);
  OSObject_release(nb);
  assert_true(dkt_all_bytes(pa_, la, 0x77));
  validate(true);
  OSObject_release(a);
  validate(true);
  dk_pool_trim();
}

static void pool_stats_add_up(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *a = constrained(6 * MiB, 4096, 0, 0, true);
  IOBufferMemoryDescriptor *s = IOBufferMemoryDescriptor_withOptions(0, 100, 1);
  assert_non_null(a);
  assert_non_null(s);
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.size, sizeof st);
  assert_int_equal(st.version, 1);
  assert_true(st.bytes_pool_2m + st.bytes_pool_1g >= 6 * MiB);
  assert_true(st.bytes_pool_used >= 6 * MiB + 128);
  assert_true(st.bytes_pool_free <= st.bytes_pool_2m + st.bytes_pool_1g - st.bytes_pool_used);
  assert_true(st.runs >= 1);
  assert_true(st.largest_run >= 6 * MiB);
  assert_true(st.largest_free <= st.bytes_pool_free);
  assert_true(st.fragmentation >= 0.0 && st.fragmentation <= 1.0);
  assert_true(st.requests_pool >= 1 && st.requests_slab >= 1);
  /* the runs: lowest first, disjoint, adding up to what the pool holds, each buffer inside one */
  size_t nruns = 0;
  assert_int_equal(dk_pool_get_runs(NULL, 0, &nruns), kIOReturnSuccess);
  assert_int_equal(nruns, st.runs);
  dk_pool_run *runs = calloc(nruns, sizeof *runs);
  assert_non_null(runs);
  assert_int_equal(dk_pool_get_runs(runs, nruns, &nruns), kIOReturnSuccess);
  uint64_t held = 0, free_bytes = 0;
  for (size_t i = 0; i < nruns; i++) {
    if (i) assert_true(runs[i].physical >= runs[i - 1].physical + runs[i - 1].length);
    assert_true(runs[i].page_size == 2 * MiB || runs[i].page_size == GiB);
    assert_int_equal(runs[i].length % runs[i].page_size, 0);
    assert_true(runs[i].bytes_free <= runs[i].length);
    held += runs[i].length;
    free_bytes += runs[i].bytes_free;
  }
  assert_int_equal(held, st.bytes_pool_2m + st.bytes_pool_1g);
  assert_int_equal(free_bytes, st.bytes_pool_free);
  IOBufferMemoryDescriptor *both[2] = { a, s };
  for (int k = 0; k < 2; k++) {
    uint64_t pa = IOMemoryDescriptor_getPhysicalAddress(MD(both[k])), len = IOMemoryDescriptor_getLength(MD(both[k]));
    bool inside = false;
    for (size_t i = 0; i < nruns; i++)
      if (pa >= runs[i].physical && pa + len <= runs[i].physical + runs[i].length) inside = true;
    assert_true(inside);
  }
  free(runs);
  assert_int_equal(dk_pool_get_runs(NULL, 4, &nruns), kIOReturnBadArgument);
  /* a refused request is counted under its constraint */
  uint64_t before = st.failures[DK_CONSTRAINT_ARGUMENT];
  assert_null(IOBufferMemoryDescriptor_withOptions(0, 0, 1));
  dk_pool_get_stats(&st);
  assert_int_equal(st.failures[DK_CONSTRAINT_ARGUMENT], before + 1);
  OSObject_release(a);
  OSObject_release(s);
  dk_pool_trim();
}

static void write_one(void *p) { *(volatile uint8_t *)p = 1; }

static void pool_map_and_readonly(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *b = constrained(3 * MiB, 4096, 0, 0, true);
  assert_non_null(b);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  for (size_t i = 0; i < 3 * MiB; i += 4096) p[i] = (uint8_t)(i >> 12);
  IOMemoryMap *ro = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0,
                                                           kIOMapAnywhere | kIOMapReadOnly | kIOMapUnique, 4096, 2 * MiB);
  assert_non_null(ro);
  const uint8_t *q = (const uint8_t *)(uintptr_t)IOMemoryMap_getAddress(ro);
  assert_ptr_not_equal(q, p + 4096);
  for (size_t i = 0; i < 2 * MiB; i += 4096) assert_int_equal(q[i], (uint8_t)((i + 4096) >> 12));
  p[8192] = 0x77;                                   /* writes through the buffer show through */
  assert_int_equal(q[4096], 0x77);
  int status;
  assert_int_equal(dkt_run_in_child(write_one, (void *)(uintptr_t)q, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  /* the frames behind the view are the buffer's */
  size_t n;
  uint64_t *f1 = dkt_read_frames_alloc(q, 2 * MiB, &n), *f2 = dkt_read_frames_alloc(p + 4096, 2 * MiB, &n);
  assert_memory_equal(f1, f2, n * sizeof *f1);
  free(f1);
  free(f2);
  assert_int_equal(IOMemoryMap_unmap(ro), kIOReturnSuccess);
  OSObject_release(ro);
  /* a NULL-task buffer from the pool is reached through map() */
  IOBufferMemoryDescriptor *nb = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, 0, 64 * 1024, 1);
  assert_non_null(nb);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(nb));
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(nb), 0);
  assert_non_null(m);
  assert_true(dkt_all_bytes((void *)(uintptr_t)IOMemoryMap_getAddress(m), 64 * 1024, 0));
  OSObject_release(m);
  OSObject_release(nb);
  OSObject_release(b);
  dk_pool_trim();
}

/* Pool memory is mapped again in whole hugepages (hugetlb cannot alias 4K pieces): guards lie
 * outside the hugepages that hold the range, a placed mapping needs the whole span free, and
 * kIOMapOverwrite is refused unless it would replace exactly the requested range. */
static void pool_map_granularity(void **state)
{
  (void)state;
  require_pool();
  const uint64_t H = 2 * MiB;
  IOBufferMemoryDescriptor *b = constrained(3 * 4096, 4096, 0, 0, true);
  assert_non_null(b);
  uint64_t in_page = IOMemoryDescriptor_getPhysicalAddress(MD(b)) % H;
  IOMemoryMap *g = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapGuardedSmall, 0, 0);
  assert_non_null(g);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(g);
  assert_int_equal((uintptr_t)p % H, in_page);           /* placed like the memory in its page */
  int status;
  assert_int_equal(dkt_run_in_child(write_one, p - in_page - 1, &status), 0);   /* the guard */
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  assert_int_equal(dkt_run_in_child(write_one, p - in_page + H, &status), 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  OSObject_release(g);
  /* placed: an address congruent with the memory, in a free span of whole hugepages */
  uint8_t *hole = mmap(NULL, 4 * H, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(hole != MAP_FAILED);
  uint8_t *span = (uint8_t *)(((uintptr_t)hole + H - 1) & ~(uintptr_t)(H - 1));
  munmap(hole, 4 * H);
  IOMemoryMap *pm = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, (uintptr_t)(span + in_page), 0, 0, 0);
  assert_non_null(pm);
  assert_int_equal(IOMemoryMap_getAddress(pm), (uintptr_t)(span + in_page));
  ((uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(b))[7] = 0x5e;
  assert_int_equal(span[in_page + 7], 0x5e);
  OSObject_release(pm);
  /* overwrite over memory of ours: refused, and that memory untouched */
  uint8_t *mine = mmap(NULL, 3 * H, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(mine != MAP_FAILED);
  uint8_t *target = (uint8_t *)(((uintptr_t)mine + H - 1) & ~(uintptr_t)(H - 1)) + in_page;
  memset(mine, 0x33, 3 * H);
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, (uintptr_t)target, kIOMapOverwrite, 0, 0));
  if (in_page == 0) assert_int_equal(dk_last_failure()->code, kIOReturnUnsupported);
  assert_true(dkt_all_bytes(mine, 3 * H, 0x33));
  munmap(mine, 3 * H);
  OSObject_release(b);
  dk_pool_trim();
}

/* A record in /run/dmakit of `pages` raised by process `pid` (huge.c's format); path receives it. */
static void write_record(const char *kind, int pid, long pages, char *path, size_t cap)
{
  mkdir("/run/dmakit", 0700);
  snprintf(path, cap, "/run/dmakit/%s.%d", kind, pid);
  assert_true(write_long(path, pages));
}

/* A process killed while holding 1 GiB pages leaves nr_hugepages raised (gigantic pages cannot
 * be surplus pages). Its record in /run/dmakit lets the next dmakit process give them back. */
static void exit_now(void *unused) { (void)unused; _exit(0); }

static void pool_reclaims_dead_reservations(void **state)
{
  (void)state;
  require_pool();
  long nr0 = sysfs_long(NR_1G);
  if (nr0 < 0) DKT_SKIP("no 1 GiB hugepages on this kernel");
  int status;
  pid_t dead;
  assert_int_equal(dkt_run_in_child(exit_now, NULL, &status), 0);   /* a pid that has exited... */
  dead = (pid_t)dkt_last_child_pid();
  /* ...pretend it reserved one 1 GiB page and died */
  assert_true(write_long(NR_1G, nr0 + 1));
  if (sysfs_long(NR_1G) != nr0 + 1) {
    (void)write_long(NR_1G, nr0);
    DKT_SKIP("the kernel cannot form a 1 GiB page now");
  }
  char path[64];
  write_record("gigantic", (int)dead, 1, path, sizeof path);
  dk__huge_reclaim_dead();
  assert_int_equal(sysfs_long(NR_1G), nr0);
  assert_int_equal(access(path, F_OK), -1);          /* the record is gone */
}

/* The same for 2 MiB pages: a process killed holding surplus pages leaves
 * nr_overcommit_hugepages raised (its pages go back to the kernel at its death, the limit does
 * not). A real pool records its raise while it is raised, and removes the record when it gives
 * the raise back; the next dmakit process gives back a dead process's raise, once. */
static void pool_reclaims_dead_overcommit(void **state)
{
  (void)state;
  require_pool();
  dk_pool_trim();
  dk__huge_reclaim_dead();                          /* raises of processes gone before this test */
  long oc0 = sysfs_long(OVERCOMMIT_2M);
  assert_true(oc0 >= 0);
  char mine[64];
  snprintf(mine, sizeof mine, "/run/dmakit/overcommit.%d", (int)getpid());
  assert_int_equal(access(mine, F_OK), -1);
  IOBufferMemoryDescriptor *b = constrained(3 * MiB, 4096, 0, 0, true);
  assert_non_null(b);
  dk_pool_stats st = { .size = sizeof st };
  dk_pool_get_stats(&st);
  if (st.hugepages_raised_2m > 0) {                 /* raised: recorded while it lasts */
    assert_int_equal(sysfs_long(mine), st.hugepages_raised_2m);
  }
  OSObject_release(b);
  dk_pool_trim();
  assert_int_equal(access(mine, F_OK), -1);         /* given back: the record goes */
  assert_int_equal(sysfs_long(OVERCOMMIT_2M), oc0);

  int status;
  assert_int_equal(dkt_run_in_child(exit_now, NULL, &status), 0);
  pid_t dead = (pid_t)dkt_last_child_pid();
  assert_true(write_long(OVERCOMMIT_2M, oc0 + 3));   /* it raised the limit by 3 and died */
  char path[64];
  write_record("overcommit", (int)dead, 3, path, sizeof path);
  /* a live process's record stays (one for pid 1, which is always alive) */
  char live[64];
  snprintf(live, sizeof live, "/run/dmakit/overcommit.%d", 1);
  bool made_live = access(live, F_OK) != 0;
  if (made_live) write_record("overcommit", 1, 5, live, sizeof live);
  dk__huge_reclaim_dead();
  long after = sysfs_long(OVERCOMMIT_2M);
  bool live_kept = access(live, F_OK) == 0;
  if (made_live) unlink(live);
  assert_int_equal(after, oc0);
  assert_int_equal(access(path, F_OK), -1);
  assert_true(live_kept);
  dk__huge_reclaim_dead();                          /* nothing left to give back */
  assert_int_equal(sysfs_long(OVERCOMMIT_2M), oc0);
}

/* Two processes growing and trimming their pools at once raise and lower the same limit: each
 * change is made under one lock, so no raise is lost (a lost one leaves a pool short of the
 * surplus pages it counted on) and none is given back twice. The limit starts above zero here,
 * so a give-back too many shows. */
static void grow_and_trim(void *unused)
{
  (void)unused;
  for (int i = 0; i < 12; i++) {
    dk_pool_trim();
    IOBufferMemoryDescriptor *b = constrained(8 * MiB, 4096, 0, 0, true);
    if (!b) exit(2);
    dk_pool_stats st = { .size = sizeof st };
    dk_pool_get_stats(&st);
    if (st.bytes_pool_2m + st.bytes_pool_1g < 8 * MiB) exit(3);   /* from the pool, not another provider */
    OSObject_release(b);
  }
  dk_pool_trim();
  exit(0);                                           /* the exit code gives back what is left */
}

static void pool_limits_shared_by_two_processes(void **state)
{
  (void)state;
  require_pool();
  dk_pool_trim();
  dk__huge_reclaim_dead();
  long oc0 = sysfs_long(OVERCOMMIT_2M);
  assert_true(oc0 >= 0);
  assert_true(write_long(OVERCOMMIT_2M, oc0 + 3));
  pid_t kid[2];
  fflush(NULL);
  for (int i = 0; i < 2; i++) {
    kid[i] = fork();
    assert_true(kid[i] >= 0);
    if (kid[i] == 0) grow_and_trim(NULL);
  }
  int st[2];
  for (int i = 0; i < 2; i++) assert_int_equal(waitpid(kid[i], &st[i], 0), kid[i]);
  long after = sysfs_long(OVERCOMMIT_2M);
  assert_true(write_long(OVERCOMMIT_2M, oc0));
  for (int i = 0; i < 2; i++) dkt_assert_child_ok(st[i]);
  assert_int_equal(after, oc0 + 3);
}

static void pool_trim_gives_everything_back(void **state)
{
  (void)state;
  require_pool();
  dk_pool_trim();
  long oc0 = sysfs_long(OVERCOMMIT_2M), nr1g0 = sysfs_long(NR_1G);
  IOBufferMemoryDescriptor *bufs[8];
  for (int i = 0; i < 8; i++) {
    bufs[i] = constrained(5 * MiB, 4096, 0, 0, true);
    assert_non_null(bufs[i]);
  }
  dk_pool_stats st;
  dk_pool_get_stats(&st);
  assert_true(st.bytes_pool_2m + st.bytes_pool_1g >= 40 * MiB);
  dk_pool_trim();                                   /* in use: nothing can go */
  dk_pool_get_stats(&st);
  assert_true(st.bytes_pool_2m + st.bytes_pool_1g >= 40 * MiB);
  for (int i = 0; i < 8; i++) OSObject_release(bufs[i]);
  dk_pool_trim();
  dk_pool_get_stats(&st);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);
  assert_int_equal(st.runs, 0);
  assert_int_equal(st.hugepages_raised_2m, 0);
  assert_int_equal(st.hugepages_raised_1g, 0);
  assert_int_equal(sysfs_long(OVERCOMMIT_2M), oc0);
  assert_int_equal(sysfs_long(NR_1G), nr1g0);
}

/* dk_pool_reserve's arguments: a page size other than 2 MiB or 1 GiB, nothing asked, and more
 * pages than a count can hold (the byte count near 2^64 included: rounded up, it must not wrap
 * to nothing) are refused, and the pool does not change. */
static void pool_reserve_arguments(void **state)
{
  (void)state;
  require_pool();
  dk_pool_stats before, after;
  assert_int_equal(dk_pool_get_stats(&before), kIOReturnSuccess);
  assert_int_equal(dk_pool_reserve(2 * MiB, 4096), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(dk_pool_reserve(0, 0), kIOReturnBadArgument);
  dk_option_set(DK_OPTION_POOL, 0);              /* the pool switched off: not for this process */
  assert_int_equal(dk_pool_reserve(2 * MiB, 0), kIOReturnNotPrivileged);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_PRIVILEGE);
  dk_option_set(DK_OPTION_POOL, 1);
  const uint64_t too_many[][2] = {
    { (1ull << 32) * 2 * MiB, 0 },            /* 2^32 pages of 2 MiB */
    { (1ull << 32) * GiB, GiB },             /* 2^32 pages of 1 GiB, 2^62 bytes */
    { UINT64_MAX, 0 },
    { UINT64_MAX - 2 * MiB + 2, 2 * MiB },
    { UINT64_MAX, GiB },
  };
  for (size_t i = 0; i < sizeof too_many / sizeof too_many[0]; i++) {
    IOReturn rc = dk_pool_reserve(too_many[i][0], too_many[i][1]);
    if (rc != kIOReturnNoMemory)
      fail_msg("dk_pool_reserve(0x%llx, 0x%llx): %s (%s), want kIOReturnNoMemory", (unsigned long long)too_many[i][0],
               (unsigned long long)too_many[i][1], dk_ioreturn_name(rc), dkt_failure_text());
    assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
    assert_non_null(strstr(dk_last_failure()->text, "too many pages"));
  }
  assert_int_equal(dk_pool_get_stats(&after), kIOReturnSuccess);
  assert_int_equal(after.grows, before.grows);
  assert_int_equal(after.bytes_pool_2m + after.bytes_pool_1g, before.bytes_pool_2m + before.bytes_pool_1g);
}

/* Growth under a cap (DMAKIT_POOL_MAX_MB) of one 2 MiB page: a growth of several pages is
 * halved down to the one the request needs; then each request the cap leaves no room for is
 * refused under the constraint it breaks (contiguity past the longest run, a length no single
 * run holds, an alignment no run offers), with the pool as it was. */
static void pool_refusals_under_cap(void **state)
{
  (void)state;
  require_pool();
  long max_mb = dk_option_get(DK_OPTION_POOL_MAX_MB), grow_mb = dk_option_get(DK_OPTION_POOL_GROW_MB);
  dk__thread_caches_flush();
  dk_pool_trim();
  dk_pool_stats st;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);
  uint64_t grows = st.grows;
  long search_mb = dk_option_get(DK_OPTION_LOWMEM_SEARCH_MB);
  dk_option_set(DK_OPTION_POOL_MAX_MB, 2);
  const dk_constraints none = DK_CONSTRAINTS_NONE;

  /* below 1 MiB no 2 MiB page can lie (RAM starts there): a search bounded to one page finds
   * only memory above the mask, says so, and gives that page back */
  dk_option_set(DK_OPTION_POOL_GROW_MB, 2);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, 2);
  dk_constraints low = DK_CONSTRAINTS_NONE;
  low.high = 0xFFFFF;
  dk_block m;
  uint64_t searches = st.lowmem_searches;
  assert_false(dk__pool_alloc(&low, 8192, 4096, &m));
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, search_mb);
  /* (the reason given is the first one met: the cap refusing the 1 GiB page tried last) */
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  print_message("below 1 MiB: %s\n", dk_last_failure()->text);
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.lowmem_searches, searches + 1);      /* a page was searched, above the mask */
  assert_int_equal(st.grows, grows + 1);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);  /* and given back */
  grows = st.grows;

  dk_option_set(DK_OPTION_POOL_GROW_MB, 8);
  dk_block a;
  if (!dk__pool_alloc(&none, 8192, 4096, &a)) fail_msg("refused under a cap of one page: %s", dkt_failure_text());
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m, 2 * MiB);             /* 4 pages wanted, 1 taken */
  assert_int_equal(st.grows, grows + 1);

  /* Where the pool tries to grow, the cap's refusal is the reason given (the first met); where
   * no page size could serve the request, no growth is tried and the constraint is named. */
  typedef struct refusal { const char *name; uint64_t len, align; bool contiguous; dk_constraint_kind kind; const char *says; } refusal;
  const char *cap = "DMAKIT_POOL_MAX_MB";
  const refusal rows[] = {
    { "contiguous past the longest run", 256 * MiB, 4096, true, DK_CONSTRAINT_RESOURCE, cap },
    { "longer than any run", 256 * MiB, 4096, false, DK_CONSTRAINT_RESOURCE, cap },
    { "two pages, 2 MiB aligned", 4 * MiB, 2 * MiB, false, DK_CONSTRAINT_RESOURCE, cap },
    { "1 GiB aligned", 8192, GiB, false, DK_CONSTRAINT_RESOURCE, cap },
    { "contiguous, 1 GiB aligned", 8192, GiB, true, DK_CONSTRAINT_RESOURCE, cap },
    { "a whole page beside a block", 2 * MiB, 4096, true, DK_CONSTRAINT_RESOURCE, cap },
    { "2 GiB aligned: no page size serves it", 8192, 2 * GiB, false, DK_CONSTRAINT_ALIGNMENT, "cannot place" },
    { "longer than 64 GiB", 65 * GiB, 4096, false, DK_CONSTRAINT_RESOURCE, "could not form a run" },
    { "contiguous, longer than 64 GiB", 65 * GiB, 4096, true, DK_CONSTRAINT_CONTIGUITY, "no physically contiguous run" },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const refusal *r = &rows[i];
    dk_constraints c = DK_CONSTRAINTS_NONE;
    c.contiguous = r->contiguous;
    c.alignment = r->align;
    dk_block b;
    if (dk__pool_alloc(&c, r->len, r->align, &b)) {
      /* the one run held may happen to start on a 1 GiB line: then the promise is kept */
      if (r->align < GiB) fail_msg("%s: placed under a cap of one page", r->name);
      assert_int_equal(b.pa % r->align, 0);
      dk__pool_free(&b);
      continue;
    }
    if (dk_last_failure()->code != kIOReturnNoMemory || dk_last_failure()->constraint != r->kind ||
        !strstr(dk_last_failure()->text, r->says))
      fail_msg("%s: refused with %s under %s (%s), want %s saying '%s'", r->name,
               dk_ioreturn_name(dk_last_failure()->code), dk_constraint_name(dk_last_failure()->constraint),
               dkt_failure_text(), dk_constraint_name(r->kind), r->says);
    assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
    assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 2 * MiB);
    assert_int_equal(st.grows, grows + 1);
  }
  /* a block 1 MiB aligned lies inside the free extent below `a`: the extent splits in two and
   * needs a node for its upper part and one for the block. Either missing, nothing changes. */
  uint64_t free_before = dk__pool_free_bytes();
  for (unsigned long nth = 1; nth <= 2; nth++) {
    dk_block b;
    dk__fault_arm(nth, 0, DK_PRIM_BIT(DK_PRIM_MALLOC), ENOMEM);
    bool ok = dk__pool_alloc(&none, 4096, MiB, &b);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    assert_true(fired);
    assert_false(ok);
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    assert_non_null(strstr(dk_last_failure()->text, "free-list node"));
    assert_int_equal(dk__pool_free_bytes(), free_before);
    validate(false);
  }
  dk_block b;
  if (!dk__pool_alloc(&none, 4096, MiB, &b)) fail_msg("1 MiB aligned: %s", dkt_failure_text());
  assert_int_equal(b.pa % MiB, 0);
  assert_true(b.pa > a.pa - 2 * MiB && b.pa < a.pa);      /* inside the one page, below `a` */
  assert_int_equal(dk__pool_free_bytes(), free_before - 4096);
  validate(false);
  dk__pool_free(&b);
  assert_int_equal(dk__pool_free_bytes(), free_before);   /* joined back into one extent */
  dk__pool_free(&a);
  dk_option_set(DK_OPTION_POOL_MAX_MB, max_mb);
  dk_option_set(DK_OPTION_POOL_GROW_MB, grow_mb);
  validate(true);
  dk_pool_trim();
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);
}

/* Refusals are counted by constraint; a kind past the statistics' table is not counted. */
static void pool_failure_counts(void **state)
{
  (void)state;
  require_pool();
  dk_pool_stats a, b;
  assert_int_equal(dk_pool_get_stats(&a), kIOReturnSuccess);
  dk__pool_note_failure(DK_CONSTRAINT_RANGE);
  dk__pool_note_failure(DK_CONSTRAINT_PEER);
  dk__pool_note_failure(DK_CONSTRAINT_CONNECTION);
  assert_int_equal(dk_pool_get_stats(&b), kIOReturnSuccess);
  for (int k = 0; k <= DK_CONSTRAINT_RANGE; k++)
    assert_int_equal(b.failures[k], a.failures[k] + (k == DK_CONSTRAINT_RANGE));
}

/* The pool's smaller edges: statistics and runs with nothing to write to; an empty block is
 * freed as nothing and has no page size; alignment 0 is 1; a small block under a boundary
 * below 64 KiB is carved from the pool itself (a slab's slots would not keep it) and keeps it;
 * the streaming zeroing of a few bytes off a cache line touches only them. */
static void pool_small_edges(void **state)
{
  (void)state;
  require_pool();
  dk_pool_run one;
  assert_int_equal(dk_pool_get_stats(NULL), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(dk_pool_get_runs(&one, 1, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);

  dk_pool_stats st, st2;
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  dk_block empty;
  memset(&empty, 0, sizeof empty);
  assert_int_equal(dk__pool_page(&empty), 0);
  dk__pool_free(&empty);
  assert_int_equal(dk_pool_get_stats(&st2), kIOReturnSuccess);
  assert_int_equal(st2.bytes_pool_used, st.bytes_pool_used);

  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.boundary = 4096;
  dk_block b, z;
  assert_false(dk__pool_alloc(&c, 4097, 64, &b));  /* longer than the distance between lines */
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_BOUNDARY);
  if (!dk__pool_alloc(&c, 256, 64, &b)) fail_msg("256 bytes under a 4 KiB boundary: %s", dkt_failure_text());
  assert_null(b.slab);
  assert_int_equal(b.len, 256);
  assert_int_equal(b.pa / 4096, (b.pa + 255) / 4096);
  assert_int_equal(b.pa % 64, 0);
  assert_true(dk__pool_page(&b) == 2 * MiB || dk__pool_page(&b) == GiB);
  assert_true(dkt_all_bytes(b.va, 256, 0));
  dk_constraints none = DK_CONSTRAINTS_NONE;
  if (!dk__pool_alloc(&none, 8192, 0, &z)) fail_msg("alignment 0: %s", dkt_failure_text());
  assert_int_equal(z.len, 8192);
  assert_true(dkt_all_bytes(z.va, 8192, 0));
  memset(z.va, 0xff, 8192);
  dk__pool_zero_stream(z.va + 1, 10);            /* shorter than the way to the next line */
  assert_int_equal(z.va[0], 0xff);
  assert_true(dkt_all_bytes(z.va + 1, 10, 0));
  assert_int_equal(z.va[11], 0xff);
  memset(z.va, 0xff, 8192);
  dk__pool_zero_stream(z.va + 3, 8192 - 3 - 5);  /* head, lines, tail */
  assert_int_equal(z.va[2], 0xff);
  assert_true(dkt_all_bytes(z.va + 3, 8192 - 8, 0));
  assert_int_equal(z.va[8192 - 5], 0xff);
  memset(z.va, 0, 8192);
  dk__pool_free(&z);
  dk__pool_free(&b);
  assert_int_equal(dk_pool_get_stats(&st2), kIOReturnSuccess);
  assert_int_equal(st2.bytes_pool_used, st.bytes_pool_used);
  validate(true);
  dk_pool_trim();
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(pool_contiguous_sizes),   cmocka_unit_test(pool_alignments),
    cmocka_unit_test(pool_gigabyte_alignment), cmocka_unit_test(pool_boundaries),
    cmocka_unit_test(pool_masks_from_layout),  cmocka_unit_test(pool_small_buffers_packed),
    cmocka_unit_test(pool_freed_memory_is_zero), cmocka_unit_test(pool_stats_add_up),
    cmocka_unit_test(pool_large_freed_memory_is_zero),
    cmocka_unit_test(pool_map_and_readonly),   cmocka_unit_test(pool_map_granularity),
    cmocka_unit_test(pool_reclaims_dead_reservations),
    cmocka_unit_test(pool_reserve_arguments),
    cmocka_unit_test(pool_refusals_under_cap),
    cmocka_unit_test(pool_failure_counts),
    cmocka_unit_test(pool_small_edges),
    cmocka_unit_test(pool_reclaims_dead_overcommit),
    cmocka_unit_test(pool_limits_shared_by_two_processes),
    cmocka_unit_test(pool_trim_gives_everything_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
