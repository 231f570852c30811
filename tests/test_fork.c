/* tests/test_fork.c: a forked child starts empty (src/base/fork.c and the fork handlers of the
 * pool, the slabs, the pin rings, the hugepage limits, the IOKit caches and the mappers). The
 * parent holds wired buffers (4K pages and, where the hugepage pool is usable, pool blocks and
 * slab slots), a pageable one, and one mapped by a software IOMapper; then it forks. The child
 * releases what it inherited (nothing is given back: the parent's bytes, frames and pins are
 * unchanged after it ends), makes new buffers (never the parent's memory: no frame shared with
 * the parent's buffers), its internal consistency check passes, and its coverage counts are written
 * before it ends. The parent then frees everything: nothing left behind. */
#include "dk_test.h"
#include "iokit/internal.h"
#include "mapper/mapper_impl.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))
#define NBUF 5

typedef struct held {
  IOBufferMemoryDescriptor *b[NBUF];
  size_t len[NBUF];
  uint64_t *pfn[NBUF];
  size_t npfn[NBUF];
  IOMapper *mapper;
} held;

/* A child ends here. In a coverage build (--coverage: gcov's merge function is linked in),
 * exit() writes the child's counts; elsewhere _exit, so that what the child inherited and
 * dropped on purpose is not reported by a leak checker at exit. */
extern void __gcov_merge_add(void *, unsigned) __attribute__((weak));
static void child_exit(int code)
{
  fflush(NULL);
  if (__gcov_merge_add) exit(code);
  _exit(code);
}

static held g;

static IOBufferMemoryDescriptor *make(IOOptionBits o, size_t len, IOMapper *mapper)
{
  IOBufferMemoryDescriptor *b = NULL;
  if (mapper) dk_mapper_set_system(mapper);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, o, len, 4096);
  if (mapper) dk_mapper_set_system(NULL);
  if (!b) fail_msg("a buffer of %zu bytes: %s", len, dkt_failure_text());
  return b;
}

static void fill(int i, unsigned char seed)
{
  unsigned char *p = IOBufferMemoryDescriptor_getBytesNoCopy(g.b[i]);
  for (size_t k = 0; k < g.len[i]; k++) p[k] = (unsigned char)(seed + k * 13);
}

static bool intact(int i, unsigned char seed)
{
  const unsigned char *p = IOBufferMemoryDescriptor_getBytesNoCopy(g.b[i]);
  for (size_t k = 0; k < g.len[i]; k++)
    if (p[k] != (unsigned char)(seed + k * 13)) return false;
  return true;
}

/* Does any frame of [va, va + len) belong to one of the parent's wired buffers? */
static bool shares_a_frame(const void *va, size_t len)
{
  size_t n;
  uint64_t *f = dkt_read_frames_alloc(va, len, &n);
  if (!f) return true;
  bool shared = false;
  for (size_t k = 0; k < n && !shared; k++)
    for (int i = 0; i < NBUF && !shared; i++)
      for (size_t j = 0; g.pfn[i] && j < g.npfn[i] && !shared; j++) shared = f[k] && f[k] == g.pfn[i][j];
  free(f);
  return shared;
}

static void child(void *arg)
{
  (void)arg;
  /* what it inherited: released, nothing given back to anyone */
  for (int i = 0; i < NBUF; i++) OSSafeReleaseNULL(g.b[i]);
  /* new memory of every kind works, and is never the parent's */
  IOBufferMemoryDescriptor *n[4] = {
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * 1024, 4096),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 512, 64),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPageable, 16384, 4096),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous,
                                               2 * 1024 * 1024, 4096),
  };
  for (int i = 0; i < 4; i++) {
    if (!n[i]) fprintf(stderr, "child: buffer %d: %s\n", i, dkt_failure_text());
    DKT_CHILD_CHECK(n[i] != NULL);
    IOByteCount len = IOMemoryDescriptor_getLength(MD(n[i]));
    unsigned char *p = IOBufferMemoryDescriptor_getBytesNoCopy(n[i]);
    DKT_CHILD_CHECK(dkt_all_bytes(p, len, 0));            /* zeroed, never the parent's bytes */
    memset(p, 0xc3, len);
    if (i != 2 && dk_capabilities()->pagemap_frames) DKT_CHILD_CHECK(!shares_a_frame(p, len));
  }
  char why[256];
  if (dk__debug_validate(why, sizeof why) != 0) fprintf(stderr, "child: %s\n", why);
  DKT_CHILD_CHECK(dk__debug_validate(why, sizeof why) == 0);
  for (int i = 0; i < 4; i++) OSSafeReleaseNULL(n[i]);
  dk_pool_trim();
  /* the parent's mapper is not this child's to close or use */
  child_exit(0);
}

static void a_child_starts_empty(void **state)
{
  (void)state;
  dkt_require_physical();    /* the buffers it forks with include the pool's, contiguous ones */
  /* warm-up: what the library makes once (the pin ring, capabilities) is made before the count */
  OSObject_release(make(kIODirectionInOut, 4096, NULL));
  dk_option_set(DK_OPTION_POOL, 0);
  OSObject_release(make(kIODirectionInOut, 4096, NULL));
  dk_option_set(DK_OPTION_POOL, 1);
  dk_pool_trim();
  dk__thread_caches_flush();
  dk_prim_counters base = dk__prim_counters();
  long objects = dk__objects_live(), pins = dk__pins_live();
  const uint64_t ranges[1][2] = { { 1ull << 32, 1ull << 40 } };
  g.mapper = dk__mapper_create_soft(ranges, 1, 4096);
  assert_non_null(g.mapper);
  g.len[0] = 64 * 1024;
  g.b[0] = make(kIODirectionInOut, g.len[0], NULL);                 /* pool block or 4K pages */
  g.len[1] = 700;
  g.b[1] = make(kIODirectionInOut, g.len[1], NULL);                 /* slab slot or 4K pages */
  g.len[2] = 16384;
  g.b[2] = make(kIODirectionInOut | kIOMemoryPageable, g.len[2], NULL);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(g.b[2]), kIODirectionNone), kIOReturnSuccess);
  g.len[3] = 32768;
  g.b[3] = make(kIODirectionInOut, g.len[3], g.mapper);              /* mapped by the soft mapper */
  dk_option_set(DK_OPTION_POOL, 0);
  g.len[4] = 12288;
  g.b[4] = make(kIODirectionInOut, g.len[4], NULL);                 /* 4K pages, pinned */
  dk_option_set(DK_OPTION_POOL, 1);
  dk_buffer_info before[NBUF];
  for (int i = 0; i < NBUF; i++) {
    fill(i, (unsigned char)(i * 31 + 1));
    assert_int_equal(dk_buffer_get_info(g.b[i], &before[i]), kIOReturnSuccess);
    g.pfn[i] = dk_capabilities()->pagemap_frames && i != 2
                   ? dkt_read_frames_alloc(IOBufferMemoryDescriptor_getBytesNoCopy(g.b[i]), g.len[i], &g.npfn[i])
                   : NULL;
  }
  dk_mapper_info mi;
  assert_int_equal(dk_mapper_get_info(g.mapper, &mi), kIOReturnSuccess);
  uint64_t mapped = mi.bytes_mapped;
  assert_true(mapped > 0);

  /* fork through a pointer: a coverage build (--coverage) turns a direct call of fork() into
   * __gcov_fork, which zeroes the child's counts after the fork handlers ran, so the handlers
   * under test would never be counted; child_exit() writes its counts either way */
  pid_t (*volatile do_fork)(void) = fork;
  fflush(NULL);
  pid_t pid = do_fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
    child(NULL);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  dkt_assert_child_ok(st);

  /* the parent's memory is as it was */
  for (int i = 0; i < NBUF; i++) {
    if (!intact(i, (unsigned char)(i * 31 + 1))) fail_msg("buffer %d changed while the child ran", i);
    dk_buffer_info now;
    assert_int_equal(dk_buffer_get_info(g.b[i], &now), kIOReturnSuccess);
    assert_int_equal(now.wired, before[i].wired);
    assert_int_equal(now.pinned, before[i].pinned);
    assert_int_equal(now.iova, before[i].iova);
    if (g.pfn[i]) {
      size_t n;
      uint64_t *f = dkt_read_frames_alloc(IOBufferMemoryDescriptor_getBytesNoCopy(g.b[i]), g.len[i], &n);
      assert_non_null(f);
      assert_int_equal(n, g.npfn[i]);
      assert_memory_equal(f, g.pfn[i], n * sizeof *f);
      free(f);
    }
  }
  assert_int_equal(dk_mapper_get_info(g.mapper, &mi), kIOReturnSuccess);
  assert_int_equal(mi.bytes_mapped, mapped);
  char why[256];
  if (dk__debug_validate(why, sizeof why) != 0) fail_msg("after the child: %s", why);

  IOMemoryDescriptor_complete(MD(g.b[2]), kIODirectionNone);
  for (int i = 0; i < NBUF; i++) {
    OSSafeReleaseNULL(g.b[i]);
    free(g.pfn[i]);
    g.pfn[i] = NULL;
  }
  char report[512] = "";
  unsigned leaks = dk_mapper_close(g.mapper, report, sizeof report);
  if (leaks) fail_msg("the soft mapper closed with %u live mapping(s): %s", leaks, report);
  g.mapper = NULL;
  dk_pool_trim();
  dk__thread_caches_flush();
  dk_prim_counters end = dk__prim_counters();
  assert_int_equal(end.fds, base.fds);
  assert_int_equal(end.lock_bytes, base.lock_bytes);
  assert_int_equal(end.heap_blocks, base.heap_blocks);
  assert_int_equal(dk__objects_live(), objects);
  assert_int_equal(dk__pins_live(), pins);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(a_child_starts_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
