/* tests/test_caps_fallback.c: what the capability probe (src/phys/caps.c) concludes on machines
 * unlike this one, and what the library then does, each in a child process whose system calls
 * say so (src/prim's table swapped before the first library call: the probe runs once per
 * process). Without io_uring buffer registration and with vm.compact_unevictable_allowed = 0,
 * locked pages are the pin (no-compaction): wired 4K buffers are pinned and their frames handed
 * out. With compaction allowed to move locked pages, nothing pins (none) and the detail says
 * why. /proc/zoneinfo unreadable leaves the RAM top unknown (0); a finite RLIMIT_MEMLOCK is
 * reported. And the first pin ring of a process failing to be made (io_uring_setup, the sparse
 * buffer registration, the ring's record, the first slot update, each failed in turn): the first
 * wired buffer is refused with a documented code and a reason, nothing is left behind, and the
 * next one works. The children write their coverage counts before they end. */
#include "dk_test.h"
#include "iokit/internal.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ull << 20)

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

static const char *g_cua;   /* what vm.compact_unevictable_allowed reads */

static int fake_open(const char *path, int flags, mode_t mode)
{
  if (!strcmp(path, "/proc/zoneinfo")) {
    errno = EACCES;
    return -1;
  }
  if (!strcmp(path, "/proc/sys/vm/compact_unevictable_allowed")) return dkt_text_fd(g_cua);
  return dk__prim_default.open(path, flags, mode);
}

static int no_io_uring(unsigned entries, struct io_uring_params *p)
{
  (void)entries;
  (void)p;
  errno = ENOSYS;
  return -1;
}

static int memlock_64m(int resource, struct rlimit *rl)
{
  int r = dk__prim_default.getrlimit(resource, rl);
  if (r == 0 && resource == RLIMIT_MEMLOCK) rl->rlim_cur = 64 * MIB;
  return r;
}

static void machine(const char *cua)
{
  g_cua = cua;
  dk__prim.open = fake_open;
  dk__prim.io_uring_setup = no_io_uring;
  dk__prim.getrlimit = memlock_64m;
}

static void no_compaction_child(void *arg)
{
  (void)arg;
  machine("0\n");
  const dk_caps *c = dk_capabilities();
  fprintf(stderr, "child: pin method %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  DKT_CHILD_CHECK(c->pin_method == DK_PIN_NO_COMPACTION);
  DKT_CHILD_CHECK(!strcmp(dk_pin_method_name(c->pin_method), "no-compaction"));
  DKT_CHILD_CHECK(strstr(c->pin_detail, "vm.compact_unevictable_allowed = 0") != NULL);
  DKT_CHILD_CHECK(c->compact_unevictable_allowed == 0);
  DKT_CHILD_CHECK(c->ram_top == 0);
  DKT_CHILD_CHECK(c->memlock_limit == 64 * MIB);
  if (c->root && c->pagemap_frames) {
    /* a wired 4K buffer is pinned by being locked, and its frames are handed out */
    dk_option_set(DK_OPTION_POOL, 0);
    dk_prim_counters before = dk__prim_counters();
    long pins = dk__pins_live();
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * 1024, 4096);
    if (!b) fprintf(stderr, "child: %s\n", dkt_failure_text());
    DKT_CHILD_CHECK(b != NULL);
    dk_buffer_info info;
    DKT_CHILD_CHECK(dk_buffer_get_info(b, &info) == kIOReturnSuccess);
    DKT_CHILD_CHECK(info.wired && info.pinned);
    DKT_CHILD_CHECK(dk__pins_live() == pins);          /* no io_uring pin taken */
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &len, 0);
    DKT_CHILD_CHECK(pa != 0 && len >= 4096);
    uint64_t pfn = 0;
    DKT_CHILD_CHECK(dkt_read_frames(IOBufferMemoryDescriptor_getBytesNoCopy(b), 4096, &pfn) == 1);
    DKT_CHILD_CHECK(pfn * 4096 == (pa & ~4095ull));
    OSObject_release(b);
    dk__thread_caches_flush();
    dk_prim_counters after = dk__prim_counters();
    DKT_CHILD_CHECK(after.lock_bytes == before.lock_bytes);
    DKT_CHILD_CHECK(after.fds == before.fds);
  }
  child_exit(0);
}

static void none_child(void *arg)
{
  (void)arg;
  machine("1\n");
  const dk_caps *c = dk_capabilities();
  fprintf(stderr, "child: pin method %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  DKT_CHILD_CHECK(c->pin_method == DK_PIN_NONE);
  DKT_CHILD_CHECK(!strcmp(dk_pin_method_name(c->pin_method), "none"));
  DKT_CHILD_CHECK(strstr(c->pin_detail, "vm.compact_unevictable_allowed = 1 lets compaction move locked pages") != NULL);
  if (c->root && c->pagemap_frames) {
    /* frames that could move are not handed out (unless the caller waives the pin) */
    dk_option_set(DK_OPTION_POOL, 0);
    dk_option_set(DK_OPTION_REQUIRE_PIN, 1);
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 8192, 4096);
    DKT_CHILD_CHECK(b != NULL);
    dk_buffer_info info;
    DKT_CHILD_CHECK(dk_buffer_get_info(b, &info) == kIOReturnSuccess);
    DKT_CHILD_CHECK(!info.pinned);
    IOByteCount len = 0;
    dk_clear_failure();
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &len, 0);
    fprintf(stderr, "child: getPhysicalSegment: 0x%llx, %s\n", (unsigned long long)pa, dkt_failure_text());
    DKT_CHILD_CHECK(pa == 0);
    DKT_CHILD_CHECK(dk_last_failure()->code != kIOReturnSuccess);
    OSObject_release(b);
  }
  child_exit(0);
}

static void pins_by_locking(void **state)
{
  (void)state;
  int st;
  assert_int_equal(dkt_run_in_child(no_compaction_child, NULL, &st), 0);
  dkt_assert_child_ok(st);
}

static void nothing_pins(void **state)
{
  (void)state;
  int st;
  assert_int_equal(dkt_run_in_child(none_child, NULL, &st), 0);
  dkt_assert_child_ok(st);
}

/* In a fresh process (the probe done, no ring yet): the nth eligible call of the first pin fails. */
static unsigned long g_nth;
static void first_ring_child(void *arg)
{
  (void)arg;
  const dk_caps *c = dk_capabilities();
  if (c->pin_method != DK_PIN_IO_URING || !c->root) child_exit(77);
  dk_option_set(DK_OPTION_POOL, 0);
  dk_prim_counters before = dk__prim_counters();
  long objects = dk__objects_live();
  dk__fault_arm(g_nth, 0, DK_PRIM_BIT(DK_PRIM_IO_URING_SETUP) | DK_PRIM_BIT(DK_PRIM_IO_URING_REGISTER) |
                              DK_PRIM_BIT(DK_PRIM_CALLOC), ENOMEM);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 32768, 4096);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  if (!b) {
    fprintf(stderr, "child %lu: %s\n", g_nth, dkt_failure_text());
    IOReturn rc = dk_last_failure()->code;
    DKT_CHILD_CHECK(fired);
    DKT_CHILD_CHECK(rc == kIOReturnCannotWire || rc == kIOReturnNoMemory || rc == kIOReturnNoResources);
    DKT_CHILD_CHECK(dk_last_failure()->text[0] != '\0');
    dk__thread_caches_flush();
    dk_prim_counters after = dk__prim_counters();
    /* a ring made before the failure stays, as rings do, for later pins: one descriptor */
    DKT_CHILD_CHECK(after.fds - before.fds <= 1 && after.map_bytes == before.map_bytes &&
                    after.lock_bytes == before.lock_bytes);
    DKT_CHILD_CHECK(dk__objects_live() == objects && dk__pins_live() == 0);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 32768, 4096);
    DKT_CHILD_CHECK(b != NULL);       /* and the next one works */
  }
  dk_buffer_info info;
  DKT_CHILD_CHECK(dk_buffer_get_info(b, &info) == kIOReturnSuccess && info.pinned);
  OSObject_release(b);
  child_exit(fired ? 10 : 11);              /* tell the parent whether the fault was met */
}

static void first_pin_ring_failures(void **state)
{
  (void)state;
  unsigned long points = 0;
  for (g_nth = 1; g_nth < 50; g_nth++) {
    int st;
    assert_int_equal(dkt_run_in_child(first_ring_child, NULL, &st), 0);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) DKT_SKIP("io_uring pins need root and io_uring here");
    if (WEXITSTATUS(st) == 11) break;
    if (WEXITSTATUS(st) != 10) fail_msg("fault at call %lu: the child failed (exit %d)", g_nth, WEXITSTATUS(st));
    points++;
  }
  print_message("  %lu fault points in the first pin\n", points);
  assert_true(points >= 3);           /* setup, registration, update at least */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(pins_by_locking),
    cmocka_unit_test(nothing_pins),
    cmocka_unit_test(first_pin_ring_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
