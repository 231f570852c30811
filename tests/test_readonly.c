/* tests/test_readonly.c: real second mappings (read-only and writable), unmap, and freed
 * memory never showing old contents.
 *
 * A read-only mapping is proven read-only by writing through it in a forked child, which
 * must die of SIGSEGV. Where frame numbers are readable (root) the mapping is also shown to
 * use the very same frames as the buffer. */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static size_t PS;

#define MiB ((size_t)1 << 20)

static int group_setup(void **state) {
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS == 0 ? -1 : 0;
}


/* ---- children ------------------------------------------------------------------------------ */
static void write_byte_child(void *arg) {
  volatile unsigned char *p = arg;
  *p = 0x42;
  _exit(0);   /* survived: the mapping was writable */
}

static void read_byte_child(void *arg) {
  volatile unsigned char *p = arg;
  unsigned char c = *p;
  (void)c;
  _exit(0);   /* survived: the address was still mapped */
}

static void assert_segv(void (*fn)(void *), void *addr, const char *what) {
  int st = 0;
  if (fn == write_byte_child) {
    /* the child must see the mapping at all (no MADV_DONTFORK), or its SIGSEGV proves nothing */
    assert_int_equal(dkt_run_in_child(read_byte_child, addr, &st), 0);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
      fail_msg("%s at %p: a child cannot even read there (status 0x%x)", what, addr, st);
  }
  assert_int_equal(dkt_run_in_child(fn, addr, &st), 0);
  if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV)) {
    if (WIFEXITED(st))
      fail_msg("%s at %p: the child exited %d instead of dying of SIGSEGV", what, addr, WEXITSTATUS(st));
    else
      fail_msg("%s at %p: the child died of signal %d, not SIGSEGV", what, addr,
               WIFSIGNALED(st) ? WTERMSIG(st) : -1);
  }
}

/* After an unmap: dmakit's memory is gone from addr, and if nothing else took the range (a
 * sanitizer runtime may reuse it at once), a read faults. */
static void assert_unmapped(unsigned char *addr, const char *what) {
  if (dkt_maps_dmakit(addr)) fail_msg("%s at %p: dmakit memory is still mapped there", what, (void *)addr);
#if !defined(__SANITIZE_THREAD__)
  /* (TSan's runtime maps memory of its own around fork(), often into a range just freed) */
  if (!dkt_is_mapped(addr)) assert_segv(read_byte_child, addr, what);
#endif
}

/* Where frames are visible: the mapping uses the buffer's own frames. */
static void assert_same_frames(const void *a, const void *b, size_t len, const char *what) {
  if (!dkt_pfn_readable()) return;
  dkt_touch_read(a, len);
  dkt_touch_read(b, len);
  size_t na = 0, nb = 0;
  uint64_t *fa = dkt_read_frames_alloc(a, len, &na), *fb = dkt_read_frames_alloc(b, len, &nb);
  assert_non_null(fa);
  assert_non_null(fb);
  assert_int_equal(na, nb);
  for (size_t i = 0; i < na; i++)
    if (fa[i] == 0 || fa[i] != fb[i])
      fail_msg("%s: page %zu: frame 0x%llx vs 0x%llx", what, i, (unsigned long long)fa[i],
               (unsigned long long)fb[i]);
  free(fa);
  free(fb);
}

static void fill(unsigned char *p, size_t len, unsigned seed) {
  for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 37 + seed);
}

/* ---- kernel_task buffer, read-only unique mapping ------------------------------------------ */
static void test_readonly_unique_mapping_of_kernel_buffer(void **state) {
  (void)state;
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    size_t size = sizes[s];
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
    assert_non_null(b);
    IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
    unsigned char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    fill(va, size, 1);

    IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(
        md, kernel_task, 0, kIOMapAnywhere | kIOMapReadOnly | kIOMapUnique, 0, 0);
    if (!map) fail_msg("createMappingInTask(ReadOnly|Unique) of %zu bytes: NULL, %s", size, dkt_failure_text());
    unsigned char *ro = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
    assert_non_null(ro);
    assert_true(ro != va);                                   /* a real second mapping */
    assert_int_equal((uintptr_t)ro % PS, (uintptr_t)va % PS); /* same place within the page */
    assert_int_equal(IOMemoryMap_getLength(map), size);
    assert_int_equal(IOMemoryMap_getMapOptions(map) & kIOMapStatic, 0);
    assert_true(IOMemoryMap_getMapOptions(map) & kIOMapReadOnly);
    assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(map), md);

    assert_memory_equal(ro, va, size);                       /* shows the contents */
    fill(va, size, 9);                                       /* writes show through */
    assert_memory_equal(ro, va, size);
    va[size - 1] = 0xfe;
    assert_int_equal(ro[size - 1], 0xfe);
    assert_same_frames(ro, va, size, "read-only mapping");

    assert_segv(write_byte_child, ro, "write through the read-only mapping");
    assert_segv(write_byte_child, ro + size - 1, "write through the read-only mapping (last byte)");
    /* the parent's memory is untouched by the dead child */
    assert_int_equal(ro[0], (unsigned char)9);

    /* a second ReadOnly|Unique mapping is yet another one */
    IOMemoryMap *map2 = IOMemoryDescriptor_createMappingInTask(
        md, kernel_task, 0, kIOMapAnywhere | kIOMapReadOnly | kIOMapUnique, 0, 0);
    assert_non_null(map2);
    assert_true(map2 != map);
    assert_true(IOMemoryMap_getAddress(map2) != IOMemoryMap_getAddress(map));
    OSObject_release(map2);

    OSObject_release(map);
    OSObject_release(b);
  }
}

/* A sub-range read-only mapping shows that range. */
static void test_readonly_subrange_mapping(void **state) {
  (void)state;
  size_t size = 4 * PS;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, PS);
  assert_non_null(b);
  unsigned char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  fill(va, size, 3);
  IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(
      (IOMemoryDescriptor *)b, kernel_task, 0, kIOMapAnywhere | kIOMapReadOnly | kIOMapUnique, PS, 2 * PS);
  if (!map) fail_msg("sub-range ReadOnly mapping: NULL, %s", dkt_failure_text());
  unsigned char *ro = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_non_null(ro);
  assert_int_equal(IOMemoryMap_getLength(map), 2 * PS);
  assert_memory_equal(ro, va + PS, 2 * PS);
  assert_same_frames(ro, va + PS, 2 * PS, "sub-range read-only mapping");
  assert_segv(write_byte_child, ro + PS, "write through the sub-range read-only mapping");
  OSObject_release(map);
  OSObject_release(b);
}

/* ---- NULL-task buffer: map(kIOMapReadOnly) is a real mapping ---------------------------------- */
static void test_null_task_readonly_map(void **state) {
  (void)state;
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    size_t size = sizes[s];
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, size, 1);
    if (!b) fail_msg("inTaskWithOptions(NULL, InOut, %zu): NULL, %s", size, dkt_failure_text());
    IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
    assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));

    IOMemoryMap *ro_map = IOMemoryDescriptor_map(md, kIOMapReadOnly);
    if (!ro_map) fail_msg("map(ReadOnly) of a NULL-task buffer: NULL, %s", dkt_failure_text());
    unsigned char *ro = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(ro_map);
    assert_non_null(ro);
    assert_int_equal(IOMemoryMap_getMapOptions(ro_map) & kIOMapStatic, 0);
    assert_true(IOMemoryMap_getMapOptions(ro_map) & kIOMapReadOnly);
    assert_true(IOMemoryMap_getMapOptions(ro_map) & kIOMapAnywhere);
    assert_true(dkt_all_bytes(ro, size, 0));

    unsigned char *pattern = malloc(size);
    assert_non_null(pattern);
    fill(pattern, size, 5);
    assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, pattern, size), size);
    assert_memory_equal(ro, pattern, size);

    /* a writable map of it, and writes through that show in the read-only one */
    IOMemoryMap *rw_map = IOMemoryDescriptor_map(md, 0);
    assert_non_null(rw_map);
    unsigned char *rw = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(rw_map);
    assert_non_null(rw);
    assert_true(rw != ro);
    rw[0] = 0xab;
    assert_int_equal(ro[0], 0xab);
    unsigned char got = 0;
    assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, &got, 1), 1);
    assert_int_equal(got, 0xab);
    assert_same_frames(ro, rw, size, "NULL-task read-only vs writable map");

    assert_segv(write_byte_child, ro, "write through a NULL-task buffer's read-only map()");
    assert_segv(write_byte_child, ro + size - 1, "write through the read-only map() (last byte)");

    free(pattern);
    OSObject_release(rw_map);
    OSObject_release(ro_map);
    OSObject_release(b);
  }
}

/* ---- writable unique mapping ------------------------------------------------------------- */
static void test_writable_unique_mapping_writes_through(void **state) {
  (void)state;
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB };
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    size_t size = sizes[s];
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
    assert_non_null(b);
    IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
    unsigned char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0,
                                                              kIOMapAnywhere | kIOMapUnique, 0, 0);
    if (!map) fail_msg("createMappingInTask(Unique) of %zu: NULL, %s", size, dkt_failure_text());
    unsigned char *rw = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
    assert_non_null(rw);
    assert_true(rw != va);
    assert_int_equal(IOMemoryMap_getMapOptions(map) & kIOMapStatic, 0);
    assert_true(dkt_all_bytes(rw, size, 0));
    fill(rw, size, 7);
    assert_memory_equal(va, rw, size);
    unsigned char *back = malloc(size);
    assert_non_null(back);
    assert_int_equal(IOMemoryDescriptor_readBytes(md, 0, back, size), size);
    assert_memory_equal(back, rw, size);
    free(back);
    assert_same_frames(rw, va, size, "writable unique mapping");

    /* a child's write through it does not fault (and, MAP_SHARED, would be seen: not checked) */
    int st = 0;
    assert_int_equal(dkt_run_in_child(write_byte_child, rw, &st), 0);
    dkt_assert_child_ok(st);
    OSObject_release(map);
    OSObject_release(b);
  }
}

/* ---- unmap ---------------------------------------------------------------------------------- */
static void test_unmap_then_access_faults(void **state) {
  (void)state;
  const size_t size = 3 * PS + 17;
  const IOOptionBits kinds[] = { kIOMapAnywhere | kIOMapUnique,
                                 kIOMapAnywhere | kIOMapUnique | kIOMapReadOnly };
  for (int k = 0; k < 2; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
    assert_non_null(b);
    IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
    IOMemoryMap *map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kinds[k], 0, 0);
    assert_non_null(map);
    unsigned char *addr = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
    assert_non_null(addr);
    (void)*(volatile unsigned char *)addr;
    int st = 0;
    assert_int_equal(dkt_run_in_child(read_byte_child, addr, &st), 0);
    dkt_assert_child_ok(st);   /* readable in a child before unmap */
    assert_int_equal(IOMemoryMap_unmap(map), kIOReturnSuccess);
    assert_int_equal(IOMemoryMap_getAddress(map), 0);
    assert_unmapped(addr, "read after unmap()");
    assert_unmapped(addr + size - 1, "read after unmap() (last byte)");
    assert_int_equal(IOMemoryMap_unmap(map), kIOReturnSuccess);   /* twice is fine */
    /* the buffer itself is untouched */
    unsigned char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    va[0] = 1;
    assert_int_equal(va[0], 1);
    OSObject_release(map);
    OSObject_release(b);
  }

  /* the NULL-task buffer's map() */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, size, 1);
  assert_non_null(b);
  IOMemoryMap *map = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, 0);
  assert_non_null(map);
  unsigned char *addr = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
  assert_non_null(addr);
  addr[1] = 7;
  assert_int_equal(IOMemoryMap_unmap(map), kIOReturnSuccess);
  assert_unmapped(addr, "read after unmap() of a NULL-task buffer's map");
  unsigned char got = 0;
  assert_int_equal(IOMemoryDescriptor_readBytes((IOMemoryDescriptor *)b, 1, &got, 1), 1);
  assert_int_equal(got, 7);
  OSObject_release(map);
  OSObject_release(b);

  /* releasing the last reference unmaps too */
  b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
  assert_non_null(b);
  map = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)b, kernel_task, 0,
                                               kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(map);
  addr = (unsigned char *)(uintptr_t)IOMemoryMap_getAddress(map);
  OSObject_release(map);
  assert_unmapped(addr, "read after the map's last release");
  OSObject_release(b);
}

/* ---- freed memory never shows old contents --------------------------------------------------- */
enum { REUSE_N = 24 };

static IOBufferMemoryDescriptor *make_kind(int kind, size_t size) {
  switch (kind) {
  case 0: return IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
  case 1: return IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, size, 1);
  case 2: return IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, size, 1);
  default: return IOBufferMemoryDescriptor_withCapacity(size, kIODirectionInOut, false);
  }
}

/* Read the whole capacity (not only the length) of a fresh buffer; all must be zero. */
static bool reads_zero(IOBufferMemoryDescriptor *b, size_t size, unsigned char *scratch) {
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  const unsigned char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  if (va && !dkt_all_bytes(va, size, 0)) return false;
  if (IOMemoryDescriptor_readBytes(md, 0, scratch, size) != size) return false;
  return dkt_all_bytes(scratch, size, 0);
}

static void test_freed_memory_never_shows_old_contents(void **state) {
  (void)state;
  const size_t sizes[] = { 100, PS, 3 * PS + 17, 1 * MiB, 4 * MiB };
  const char *names[] = { "wired", "NULL-task", "pageable", "withCapacity" };
  bool frames = dkt_pfn_readable();
  unsigned char *scratch = malloc(4 * MiB);
  assert_non_null(scratch);
  for (int kind = 0; kind < 4; kind++) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      size_t size = sizes[s];
      size_t reused = 0;
      /* without CAP_IPC_LOCK, stay within half of RLIMIT_MEMLOCK */
      int nfresh = REUSE_N;
      uint64_t lim = dk_capabilities()->memlock_limit;
      if (geteuid() != 0 && lim != UINT64_MAX) {
        uint64_t per = (size + PS - 1) / PS * PS;
        uint64_t fit = lim / 2 / per;
        if (fit < (uint64_t)nfresh) nfresh = (int)fit;
        if (nfresh < 1) {
          printf("%s %zu bytes: skipped, RLIMIT_MEMLOCK %" PRIu64 " is too small\n", names[kind], size, lim);
          continue;
        }
      }
      for (int round = 0; round < 3; round++) {
        /* fill several buffers with a pattern and free them */
        enum { OLD = 4 };
        uint64_t old_frames[OLD][2] = { { 0 } };
        for (int o = 0; o < OLD; o++) {
          IOBufferMemoryDescriptor *b = make_kind(kind, size);
          if (!b) fail_msg("%s %zu: NULL, %s", names[kind], size, dkt_failure_text());
          IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
          if (kind == 2) assert_int_equal(IOMemoryDescriptor_prepare(md, 0), kIOReturnSuccess);
          memset(scratch, 0xa5, size);
          assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, scratch, size), size);
          if (frames) {
            IOByteCount sl = 0;
            old_frames[o][0] = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, 0) / PS;
            old_frames[o][1] = IOMemoryDescriptor_getPhysicalSegment(md, size - 1, &sl, 0) / PS;
          }
          /* a pageable buffer is freed while still prepared: free completes */
          OSObject_release(b);
        }
        /* many new buffers of the same size */
        IOBufferMemoryDescriptor *fresh[REUSE_N];
        for (int n = 0; n < nfresh; n++) {
          fresh[n] = make_kind(kind, size);
          if (!fresh[n]) fail_msg("%s %zu: NULL, %s", names[kind], size, dkt_failure_text());
          if (kind == 2) assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)fresh[n], 0), kIOReturnSuccess);
          if (!reads_zero(fresh[n], size, scratch))
            fail_msg("%s buffer of %zu bytes (round %d, #%d) shows old contents", names[kind], size,
                     round, n);
          if (frames) {
            IOByteCount sl = 0;
            uint64_t f = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)fresh[n], 0, &sl, 0) / PS;
            for (int o = 0; o < OLD; o++) reused += f != 0 && (f == old_frames[o][0] || f == old_frames[o][1]);
          }
        }
        for (int n = 0; n < nfresh; n++) OSObject_release(fresh[n]);
      }
      if (frames)
        printf("%s %zu bytes: %zu fresh buffers started on a frame that held the old pattern\n",
               names[kind], size, reused);
    }
  }
  free(scratch);
}

/* Every test runs with 4K pages and again with the hugepage pool (where it is usable): read-only
 * mappings, unmapping and zeroed reuse are per provider. */
DKT_POOL_VARIANTS(test_readonly_unique_mapping_of_kernel_buffer)
DKT_POOL_VARIANTS(test_readonly_subrange_mapping)
DKT_POOL_VARIANTS(test_null_task_readonly_map)
DKT_POOL_VARIANTS(test_writable_unique_mapping_writes_through)
DKT_POOL_VARIANTS(test_unmap_then_access_faults)
DKT_POOL_VARIANTS(test_freed_memory_never_shows_old_contents)

int main(void) {
  const struct CMUnitTest tests[] = {
      DKT_TEST_4K(test_readonly_unique_mapping_of_kernel_buffer),
      DKT_TEST_POOL(test_readonly_unique_mapping_of_kernel_buffer),
      DKT_TEST_4K(test_readonly_subrange_mapping),
      DKT_TEST_POOL(test_readonly_subrange_mapping),
      DKT_TEST_4K(test_null_task_readonly_map),
      DKT_TEST_POOL(test_null_task_readonly_map),
      DKT_TEST_4K(test_writable_unique_mapping_writes_through),
      DKT_TEST_POOL(test_writable_unique_mapping_writes_through),
      DKT_TEST_4K(test_unmap_then_access_faults),
      DKT_TEST_POOL(test_unmap_then_access_faults),
      DKT_TEST_4K(test_freed_memory_never_shows_old_contents),
      DKT_TEST_POOL(test_freed_memory_never_shows_old_contents),
  };
  return cmocka_run_group_tests_name("readonly", tests, group_setup, NULL);
}
