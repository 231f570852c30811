/* tests/test_death.c: a process that dies at a random moment leaves nothing behind. Several
 * rounds: fork a child that loops creating and wiring buffers (wired kernel_task, NULL-task,
 * pageable + prepare, purgeable), holding a few dozen MiB at a time, and SIGKILL it at a random
 * time after it has started. Afterwards the machine must be back where it was: /proc/meminfo
 * Mlocked, Shmem (memfd pages are shmem) and the HugePages counters near their baseline, the
 * child gone from /proc (its memfds and io_uring pins go with it), no new files in /dev/shm or
 * /dev/hugepages, and a fresh allocation in the parent works and is zeroed.
 *
 * What it catches: anything that outlives the process: pages held by a leaked pin (io_uring
 * rings whose teardown is deferred), hugetlb pages reserved through a file in a shared mount,
 * files left in /dev/shm. It can fail: while the child runs, the same counters are required to
 * be raised (Shmem by what the child holds, and, where mlock works and pins are taken, Mlocked
 * and the child's VmPin), so a broken measurement cannot pass silently; pointing the check at
 * the moment before the kill (or keeping one buffer's fd open in the parent via
 * /proc/<pid>/fd) makes the "back to baseline" check fail. */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include "phys/huge.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define HOLD      24          /* buffers a child keeps alive */
#define BUF_BYTES (1u << 20)  /* 1 MiB each: the child holds ~24 MiB */
#define ROUNDS    5
#define TOL_KB    (12 * 1024) /* tolerance for other activity on the machine */

static long proc_status_kb(pid_t pid, const char *key)
{
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') { v = atol(line + kl + 1); break; }
  fclose(f);
  return v;
}

static int count_files(const char *dir)
{
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

typedef struct snapshot {
  long mlocked, shmem, hp_total, hp_free, hp_rsvd, hp_surp;
  int shm_files, huge_files;
} snapshot;

#define OVERCOMMIT_2M "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages"

static long sysfs_long(const char *path)
{
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f) { if (fscanf(f, "%ld", &v) != 1) v = -1; fclose(f); }
  return v;
}

/* One reading of /proc/meminfo for all its fields: read field by field, the hugepage counters
 * could come from different moments (another process's surplus page freed between them). */
static snapshot take(void)
{
  snapshot s = { -1, -1, -1, -1, -1, -1, count_files("/dev/shm"), count_files("/dev/hugepages") };
  static const char *const keys[] = { "Mlocked", "Shmem", "HugePages_Total", "HugePages_Free", "HugePages_Rsvd",
                                      "HugePages_Surp" };
  long *const out[] = { &s.mlocked, &s.shmem, &s.hp_total, &s.hp_free, &s.hp_rsvd, &s.hp_surp };
  FILE *f = fopen("/proc/meminfo", "r");
  char buf[8192];
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[n] = '\0';
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    size_t kl = strlen(keys[i]);
    for (const char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
      if (!strncmp(l, keys[i], kl) && l[kl] == ':') { *out[i] = atol(l + kl + 1); break; }
  }
  return s;
}

/* The baseline: a snapshot whose hugepage counters and files hold still over two readings
 * 10 ms apart (the test before may still be giving pages back), within 3 s. */
static snapshot take_settled(void)
{
  snapshot a = take();
  for (int tries = 0; tries < 300; tries++) {
    struct timespec t10 = { 0, 10 * 1000000L };
    nanosleep(&t10, NULL);
    snapshot b = take();
    bool same = a.hp_total == b.hp_total && a.hp_free == b.hp_free && a.hp_rsvd == b.hp_rsvd &&
                a.hp_surp == b.hp_surp && a.shm_files == b.shm_files && a.huge_files == b.huge_files;
    a = b;
    if (same) break;
  }
  return a;
}

/* The child: create and wire buffers for ever; tell the parent once it holds HOLD of them. */
static void child_loop(int ready_fd)
{
  IOBufferMemoryDescriptor *held[HOLD] = { 0 };
  unsigned k = 0;
  bool told = false;
  for (;;) {
    unsigned i = k % HOLD;
    OSSafeReleaseNULL(held[i]);
    IOBufferMemoryDescriptor *b;
    switch (k % 4) {
    case 0: b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, BUF_BYTES, 1); break;
    case 1: b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut | kIOMemoryThreadSafe, BUF_BYTES, 1); break;
    case 2: b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, BUF_BYTES, 1); break;
    default: b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIOMemoryPurgeable | kIODirectionInOut, BUF_BYTES, 1); break;
    }
    if (!b) _exit(3);
    if (k % 4 >= 2 && IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone) != kIOReturnSuccess) _exit(4);
    /* touch the memory, map it once: a child killed mid-way holds mappings too */
    IOMemoryDescriptor_writeBytes((IOMemoryDescriptor *)b, 0, NULL, 4096);
    if (k % 3 == 0) {
      IOMemoryMap *m = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, 0);
      OSObject_release(m);
    }
    held[i] = b;
    k++;
    if (!told && k >= HOLD) {
      char c = 'r';
      if (write(ready_fd, &c, 1) != 1) { /* the parent stopped listening (an early kill) */ }
      told = true;
    }
  }
}

static void test_sigkill_leaves_nothing(void **state)
{
  (void)state;
  DKT_REQUIRE_ROOT();
  bool mlock_counts = dkt_mlock_works();   /* ASan makes mlock a no-op */
  snapshot base = take_settled();
  assert_true(base.mlocked >= 0 && base.shmem >= 0 && base.hp_total >= 0);
  dk__huge_reclaim_dead();                 /* raises of processes gone before this test */
  long oc_base = sysfs_long(OVERCOMMIT_2M);
  srand((unsigned)time(NULL));
  long max_pin_kb = 0;

  for (int round = 0; round < ROUNDS; round++) {
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(pfd[0]);
      signal(SIGSEGV, SIG_DFL);
      signal(SIGABRT, SIG_DFL);
      signal(SIGPIPE, SIG_IGN);
      child_loop(pfd[1]);
      _exit(0);
    }
    close(pfd[1]);
    char c;
    bool early = round >= ROUNDS - 2;   /* the last rounds kill while the child is still building up */
    if (early) {
      struct timespec t = { 0, (long)(1 + rand() % 30) * 1000000L };
      nanosleep(&t, NULL);
    }
    ssize_t got = early ? 1 : read(pfd[0], &c, 1);
    close(pfd[0]);
    if (got != 1) {
      int st;
      waitpid(pid, &st, 0);
      fail_msg("round %d: the child died before holding its buffers (status 0x%x)", round, st);
    }
    /* The child is mid-way: it holds ~HOLD MiB. The counters must show it (the measurement
     * works), then kill it at a random moment of its loop. */
    snapshot live = take();
    long pin_kb = proc_status_kb(pid, "VmPin");
    if (pin_kb > max_pin_kb) max_pin_kb = pin_kb;
    if (!early) {
      assert_true(live.shmem >= base.shmem + (long)(HOLD / 2) * (long)(BUF_BYTES / 1024) - TOL_KB);
      if (mlock_counts) assert_true(live.mlocked > base.mlocked);
    }
    struct timespec ts = { 0, (long)(rand() % 40) * 1000000L };
    nanosleep(&ts, NULL);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) fail_msg("round %d: child ended with status 0x%x", round, st);

    /* The kernel tears some things down after the process is reaped (io_uring rings are
     * released from a workqueue), so allow it a moment. */
    snapshot after = take();
    for (int tries = 0; tries < 300; tries++) {
      after = take();
      if (after.mlocked <= base.mlocked + TOL_KB && after.shmem <= base.shmem + TOL_KB &&
          after.hp_total - after.hp_free == base.hp_total - base.hp_free && after.hp_rsvd == base.hp_rsvd &&
          after.hp_surp == base.hp_surp)
        break;
      struct timespec t10 = { 0, 10 * 1000000L };
      nanosleep(&t10, NULL);
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    struct stat sb;
    assert_true(stat(path, &sb) < 0 && errno == ENOENT);   /* reaped: its fds and pins are gone */
    printf("round %d: child held Shmem +%ld kB, Mlocked +%ld kB, VmPin %ld kB; after kill: "
           "Shmem %+ld kB, Mlocked %+ld kB\n", round, live.shmem - base.shmem, live.mlocked - base.mlocked,
           pin_kb, after.shmem - base.shmem, after.mlocked - base.mlocked);
    if (after.mlocked > base.mlocked + TOL_KB) fail_msg("Mlocked stayed %ld kB above baseline", after.mlocked - base.mlocked);
    if (after.shmem > base.shmem + TOL_KB) fail_msg("Shmem stayed %ld kB above baseline (memfd pages kept alive)", after.shmem - base.shmem);
    /* hugepages in use (total - free) back to baseline; a changed pool size is reported (a
     * killed process cannot lower nr_hugepages/overcommit it raised, nor can a concurrent
     * test on this machine be told apart) */
    assert_int_equal(after.hp_total - after.hp_free, base.hp_total - base.hp_free);
    if (after.hp_total != base.hp_total)
      printf("NOTE: HugePages_Total changed %ld -> %ld during round %d\n", base.hp_total, after.hp_total, round);
    assert_int_equal(after.hp_rsvd, base.hp_rsvd);
    assert_int_equal(after.hp_surp, base.hp_surp);
    assert_int_equal(after.shm_files, base.shm_files);
    assert_int_equal(after.huge_files, base.huge_files);
  }
  if (dk_capabilities()->pin_method == DK_PIN_IO_URING && mlock_counts)
    assert_true(max_pin_kb > 0);   /* the children really held io_uring pins when killed */

  /* The limit a killed child raised (nr_overcommit_hugepages, for its surplus pages) outlives
   * it; its record lets the next dmakit process give it back, here this one. */
  long oc_left = sysfs_long(OVERCOMMIT_2M);
  dk__huge_reclaim_dead();
  long oc_after = sysfs_long(OVERCOMMIT_2M);
  printf("nr_overcommit_hugepages: %ld before, %ld after the kills, %ld once the dead children's raises are given back\n",
         oc_base, oc_left, oc_after);
  assert_int_equal(oc_after, oc_base);

  /* A fresh allocation in the parent works, is zeroed and has frames. */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4 * BUF_BYTES, 1);
  assert_non_null(b);
  assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), 4 * BUF_BYTES, 0));
  IOByteCount len = 0;
  assert_true(IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &len, 0) != 0);
  OSObject_release(b);
  IOBufferMemoryDescriptor *p = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable, BUF_BYTES, 1);
  assert_non_null(p);
  assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)p, kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete((IOMemoryDescriptor *)p, kIODirectionNone), kIOReturnSuccess);
  OSObject_release(p);
}

int main(void)
{
  const struct CMUnitTest tests[] = { cmocka_unit_test(test_sigkill_leaves_nothing) };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
