/* tests/test_budget_cgroup.c: the memory budget's reads (src/phys/budget.c) against memory
 * cgroups this test lays out in a directory of its own: /proc/self/mountinfo, /proc/self/cgroup,
 * /proc/self/status and /proc/meminfo are the test's text (src/prim's open is swapped), and the
 * cgroup files are ordinary files under the test's mount points. So every layout is covered on any
 * machine, whatever its own cgroups are: a v2 hierarchy seen from a cgroup namespace (mount root
 * not "/"), memory.high below memory.max, a level whose usage cannot be read, v1's "unlimited",
 * the level with least room chosen across v1 and v2, and a refusal that names the cgroup. Also
 * /proc/meminfo unreadable or without its figures: nothing is populated, and the reason says so.
 * Its own program: the budget reads the mount table once per process, and it must read ours. */
#include "dk_test.h"
#include "iokit/internal.h"
#include "phys/budget.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ull << 20)

static char g_dir[64];
static char g_mountinfo[1024], g_cgroup[256], g_status[256];
static const char *g_meminfo;          /* NULL: the real file; "" : open fails with ENOENT */

static int fake_open(const char *path, int flags, mode_t mode)
{
  if (!strcmp(path, "/proc/self/mountinfo")) return dkt_text_fd(g_mountinfo);
  if (!strcmp(path, "/proc/self/cgroup")) return dkt_text_fd(g_cgroup);
  if (!strcmp(path, "/proc/self/status") && g_status[0]) return dkt_text_fd(g_status);
  if (!strcmp(path, "/proc/meminfo") && g_meminfo) {
    if (!g_meminfo[0]) {
      errno = ENOENT;
      return -1;
    }
    return dkt_text_fd(g_meminfo);
  }
  return dk__prim_default.open(path, flags, mode);
}

/* Write `text` to g_dir/rel (its directories made), or remove it when text is NULL. */
static void put(const char *rel, const char *text)
{
  char path[256];
  snprintf(path, sizeof path, "%s/%s", g_dir, rel);
  if (!text) {
    unlink(path);
    return;
  }
  for (char *s = strchr(path + strlen(g_dir) + 1, '/'); s; s = strchr(s + 1, '/')) {
    *s = '\0';
    mkdir(path, 0700);
    *s = '/';
  }
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void put_num(const char *rel, uint64_t v)
{
  char t[32];
  snprintf(t, sizeof t, "%llu\n", (unsigned long long)v);
  put(rel, t);
}

/* One directory for the whole program: the budget reads the mount table once. */
static int group_setup(void **state)
{
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/dk-budget-cg-XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
  (void)state;
  /* cgroup2 mounted at g_dir/cg2 and seen from a namespace whose root is /ns; the v1 memory
   * hierarchy at g_dir/cg1 (with cpu beside it); an unrelated mount before both */
  snprintf(g_mountinfo, sizeof g_mountinfo,
           "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
           "30 22 0:26 /ns %s/cg2 rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_hugetlb_accounting\n"
           "31 22 0:27 / %s/cgcpu rw - cgroup cgroup rw,cpu,cpuacct\n"
           "32 22 0:28 / %s/cg1 rw - cgroup cgroup rw,memory\n",
           g_dir, g_dir, g_dir);
  snprintf(g_cgroup, sizeof g_cgroup, "7:cpu,cpuacct:/\n5:memory:/x\n0::/ns/a/b/c\n");
  g_status[0] = '\0';
  g_meminfo = NULL;
  /* v2: /a limits to 128 MiB (100 in use); /a/b has memory.high 256 MiB under max; /a/b/c has a
   * limit but no readable usage, so it limits nothing; the root has no files at all */
  put("cg2/a/memory.max", "134217728\n");
  put_num("cg2/a/memory.current", 100 * MIB);
  put("cg2/a/memory.stat", "anon 1\nactive_file 0\ninactive_file 0\n");
  put("cg2/a/b/memory.max", "max\n");
  put_num("cg2/a/b/memory.high", 256 * MIB);
  put_num("cg2/a/b/memory.current", 100 * MIB);
  put("cg2/a/b/memory.stat", "anon 5\nactive_file 1048576\ninactive_file 2097152\n");
  put_num("cg2/a/b/c/memory.max", 64 * MIB);
  /* v1: /x unlimited (the page counter's maximum), the root 512 MiB with 50 in use */
  put("cg1/x/memory.limit_in_bytes", "9223372036854771712\n");
  put_num("cg1/x/memory.usage_in_bytes", 10 * MIB);
  put_num("cg1/memory.limit_in_bytes", 512 * MIB);
  put_num("cg1/memory.usage_in_bytes", 50 * MIB);
  put("cg1/memory.stat", "cache 0\ntotal_active_file 4194304\ntotal_inactive_file 0\n");
  dk__prim.open = fake_open;
  dk_option_set(DK_OPTION_MEMORY_MARGIN_MB, -1);
  dk__budget_forget();
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  dk__prim.open = dk__prim_default.open;
  dk_option_set(DK_OPTION_POOL, 1);
  dk__budget_forget();
  return 0;
}

/* The level with least room: v2 /a (128 MiB limit, 100 in use, a 16 MiB margin: 12 MiB). */
static void least_room_level_is_chosen(void **state)
{
  (void)state;
  dk_budget_facts f;
  assert_int_equal(dk__budget_read(&f), 0);
  print_message("  cgroup v%d %s: limit %llu, usage %llu, file %llu, hugetlb %d\n", f.cg_version, f.cg_path,
                (unsigned long long)f.cg_limit, (unsigned long long)f.cg_usage, (unsigned long long)f.cg_file,
                f.cg_hugetlb);
  assert_int_equal(f.cg_version, 2);
  assert_string_equal(f.cg_path, "/a");
  assert_int_equal(f.cg_limit, 128 * MIB);
  assert_int_equal(f.cg_usage, 100 * MIB);
  assert_int_equal(f.cg_file, 0);
  assert_true(f.cg_hugetlb);
  dk_budget b;
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.cgroup, 12 * MIB);
  /* hugetlb pages are charged there too (memory_hugetlb_accounting) */
  dk__budget_compute(&f, DK_BUDGET_HUGETLB, &b);
  assert_int_equal(b.cgroup, 12 * MIB);

  /* /a/b's memory.high (256 MiB, under max) decides there once /a has room: its page cache
   * counts half (3 MiB of file pages: 1.5 MiB back) */
  put_num("cg2/a/memory.max", 4096 * MIB);
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_version, 2);
  assert_string_equal(f.cg_path, "/a/b");
  assert_int_equal(f.cg_limit, 256 * MIB);
  assert_int_equal(f.cg_file, 3 * MIB);

  /* v1's root, smaller still, wins over v2 */
  put_num("cg1/memory.limit_in_bytes", 128 * MIB);
  put_num("cg1/memory.usage_in_bytes", 120 * MIB);
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_version, 1);
  assert_string_equal(f.cg_path, "/");
  assert_int_equal(f.cg_limit, 128 * MIB);
  assert_int_equal(f.cg_file, 4 * MIB);
  assert_false(f.cg_hugetlb);                /* v1 does not charge hugetlb pages here */
  dk__budget_compute(&f, DK_BUDGET_HUGETLB, &b);
  assert_int_equal(b.cgroup, DK_BUDGET_NONE);

  /* no limit anywhere: nothing from the cgroups */
  put("cg2/a/memory.max", "max\n");
  put("cg2/a/b/memory.high", "max\n");
  put("cg1/memory.limit_in_bytes", "9223372036854771712\n");
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_limit, DK_BUDGET_NONE);
  assert_int_equal(f.cg_version, 0);
}

/* The counters with every cache of this thread emptied and the pool trimmed: a descriptor
 * object kept for the next buffer (and the block it lives in) is not memory held. */
static dk_prim_counters settled(void)
{
  dk__thread_caches_flush();
  dk_pool_trim();
  return dk__prim_counters();
}

/* A wired buffer bigger than the cgroup's room is refused before anything is populated, and
 * the reason names the cgroup and its figures. */
static void refusal_names_the_cgroup(void **state)
{
  (void)state;
  dk_option_set(DK_OPTION_POOL, 0);   /* 4K pages, which the memory cgroup is charged for */
  dk__budget_forget();
  dk_prim_counters before = settled();
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * MIB, 4096);
  if (b) {
    OSObject_release(b);
    fail_msg("a 64 MiB buffer was given with 12 MiB of room in the memory cgroup");
  }
  print_message("  %s\n", dkt_failure_text());
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
  assert_true(dkt_text_has(dk_last_failure()->text, "memory cgroup /a"));
  assert_true(dkt_text_has(dk_last_failure()->text, "limit 128.0 MiB"));
  dk_prim_counters after = settled();
  assert_int_equal(after.map_bytes, before.map_bytes);
  assert_int_equal(after.fds, before.fds);
  /* what fits is given */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4 * MIB, 4096);
  if (!b) fail_msg("4 MiB with 12 MiB of room: %s", dkt_failure_text());
  OSObject_release(b);
}

/* Without CAP_IPC_LOCK, RLIMIT_MEMLOCK and VmLck are read. */
static void lock_limited_without_cap(void **state)
{
  (void)state;
  snprintf(g_status, sizeof g_status, "Name:\ttest\nVmLck:\t    2048 kB\nCapEff:\t0000000000000000\n");
  dk_budget_facts f;
  assert_int_equal(dk__budget_read(&f), 0);
  assert_true(f.lock_limited);
  assert_int_equal(f.locked, 2048 * 1024);
  snprintf(g_status, sizeof g_status, "Name:\ttest\nVmLck:\t       0 kB\nCapEff:\t000001ffffffffff\n");
  assert_int_equal(dk__budget_read(&f), 0);
  assert_false(f.lock_limited);
  assert_int_equal(f.memlock_limit, DK_BUDGET_NONE);
}

/* /proc/meminfo unreadable, or without MemAvailable: the budget cannot be read, and a request
 * that needs it is refused (kIOReturnNoResources) with that reason; nothing is populated. */
static void meminfo_unreadable(void **state)
{
  (void)state;
  char buf[200];
  dk_budget_facts f;
  uint32_t fit;
  for (int round = 0; round < 2; round++) {
    g_meminfo = round == 0 ? "" : "MemTotal:  1000 kB\nMemFree:  10 kB\n";
    errno = 0;
    assert_int_equal(dk__budget_read(&f), -1);
    assert_int_equal(errno, round == 0 ? ENOENT : EINVAL);
    dk__budget_describe_now(0, buf, sizeof buf);
    assert_string_equal(buf, "the memory budget cannot be read");
    fit = dk__budget_huge_fit(2 * MIB, 1, 4);
    assert_int_equal(fit, 0);
    dk__budget_forget();
    dk_clear_failure();
    assert_false(dk__budget_check(64 * MIB, 0, true, "a test"));
    print_message("  %s\n", dkt_failure_text());
    assert_int_equal(dk_last_failure()->code, kIOReturnNoResources);
    assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
    assert_true(dkt_text_has(dk_last_failure()->text, "the memory budget cannot be read"));
    assert_true(dkt_text_has(dk_last_failure()->text, round == 0 ? "No such file" : "Invalid argument"));
  }
  g_meminfo = NULL;
}

/* The kernel's text, malformed or at its limits: each parser says "not there" (-1 / NONE)
 * rather than guessing, and the last line may lack its newline. */
static void parsers_refuse_malformed_text(void **state)
{
  (void)state;
  uint64_t t, a, v;
  assert_int_equal(dk__budget_parse_meminfo("MemTotal:\t1000 kB\nMemAvailable:\t500 kB", &t, &a), 0);   /* tabs, no final newline */
  assert_int_equal(t, 1000 * 1024);
  assert_int_equal(a, 500 * 1024);
  assert_int_equal(dk__budget_parse_meminfo("MemTotal: kB\nMemAvailable: 5 kB\n", &t, &a), -1);          /* no digits */
  assert_int_equal(dk__budget_parse_meminfo("MemTotal: 99999999999999999999999 kB\nMemAvailable: 5 kB\n", &t, &a), -1);
  assert_int_equal(dk__budget_parse_meminfo("MemTotalX: 5 kB\nMemTotal:5 kB\n", &t, &a), -1);             /* no separator */
  assert_int_equal(dk__budget_parse_meminfo("MemTotal: 5 kB\nMemFree: 1 kB", &t, &a), -1);   /* ends, no newline */
  assert_int_equal(dk__budget_stat_value("", "anon", &v), -1);
  assert_int_equal(dk__budget_stat_value("active_filex 1\nactive_file\t7", "active_file", &v), 0);
  assert_int_equal(v, 7);
  assert_int_equal(dk__budget_parse_limit("   1048576\n"), MIB);
  assert_true(dk__budget_parse_limit("junk\n") == DK_BUDGET_NONE);
  assert_true(dk__budget_parse_limit("99999999999999999999999\n") == DK_BUDGET_NONE);

  char path[16];
  assert_int_equal(dk__budget_cgroup_path("no colons here\n0::/ok", 2, path, sizeof path), 0);
  assert_string_equal(path, "/ok");
  assert_int_equal(dk__budget_cgroup_path("one:colon\n0::/ok\n", 2, path, sizeof path), 0);
  assert_int_equal(dk__budget_cgroup_path("1::/not-v2\n0:cpu:/neither\n", 2, path, sizeof path), -1);
  assert_int_equal(dk__budget_cgroup_path("0::\n", 2, path, sizeof path), -1);                          /* empty */
  assert_int_equal(dk__budget_cgroup_path("0::/a/path/longer/than/sixteen\n", 2, path, sizeof path), -1);
  assert_int_equal(dk__budget_cgroup_path("x\n4:memory:/m", 1, path, sizeof path), 0);
  assert_string_equal(path, "/m");
  assert_int_equal(dk__budget_cgroup_path("4:cpu\n4:memory:/m\n", 1, path, sizeof path), 0);
  assert_int_equal(dk__budget_cgroup_path("5:cpuset,memory:/c\n", 1, path, sizeof path), 0);  /* memory not first */
  assert_string_equal(path, "/c");
  assert_int_equal(dk__budget_cgroup_path("10::/x\n0:x:/y\n5:memory", 2, path, sizeof path), -1);
  assert_int_equal(dk__budget_cgroup_path("5:memory", 1, path, sizeof path), -1);           /* one colon, the end */
  assert_int_equal(dk__budget_cgroup_path("5", 1, path, sizeof path), -1);

  char point[32], root[32];
  bool huge = true;
  /* no " - ", a file system type too long to be ours, no super options, too few fields before
   * the dash, a mount point too long: each skipped */
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw cgroup2 cgroup2 rw\n", 2, point, sizeof point, root,
                                           sizeof root, &huge), -1);
  assert_false(huge);
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw - cgroup2-with-a-long-name c rw\n", 2, point, sizeof point,
                                           root, sizeof root, NULL), -1);
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw - cgroup2 cgroup2\n", 2, point, sizeof point, root,
                                           sizeof root, NULL), -1);
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / - cgroup2 cgroup2 rw\n", 2, point, sizeof point, root,
                                           sizeof root, NULL), -1);
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /a/mount/point/longer/than/thirty-two rw - cgroup2 c rw\n", 2,
                                           point, sizeof point, root, sizeof root, NULL), -1);
  /* the last line without its newline, v2 without hugetlb accounting */
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw - ext4 /dev/a rw\n3 1 0:2 / /cg rw - cgroup2 cgroup2 rw", 2,
                                           point, sizeof point, root, sizeof root, &huge), 0);
  assert_string_equal(point, "/cg");
  assert_false(huge);
  /* a line without " - " before one with it; v2 found with nobody asking about hugetlb */
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw\n3 1 0:2 /r /cg2 rw - cgroup2 cgroup2 rw,memory_hugetlb_accounting",
                                           2, point, sizeof point, root, sizeof root, NULL), 0);
  assert_string_equal(point, "/cg2");
  assert_string_equal(root, "/r");
}

/* The arithmetic's other sides: a margin the option fixes (the cgroup's too), a cgroup with more
 * room than the machine, a memlock limit below both; and the clause cut short where the
 * caller's buffer ends. */
static void compute_and_describe_edges(void **state)
{
  (void)state;
  dk_budget_facts f;
  memset(&f, 0, sizeof f);
  f.mem_total = 8192 * MIB;
  f.mem_available = 1024 * MIB;
  f.margin_option = 100 * MIB;
  f.cg_limit = 4096 * MIB;
  f.cg_usage = 100 * MIB;
  f.lock_limited = true;
  f.memlock_limit = 64 * MIB;
  f.locked = 16 * MIB;
  snprintf(f.cg_path, sizeof f.cg_path, "/big");
  dk_budget b;
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.margin, 100 * MIB);
  assert_int_equal(b.cg_margin, 100 * MIB);
  assert_int_equal(b.machine, 924 * MIB);
  assert_int_equal(b.cgroup, 3896 * MIB);
  assert_int_equal(b.room, 924 * MIB);              /* the machine binds, not the cgroup */
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  assert_int_equal(b.memlock, DK_BUDGET_NONE);      /* not locked memory */
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  assert_int_equal(b.memlock, 48 * MIB);
  assert_int_equal(b.room, 48 * MIB);
  assert_int_equal(b.bind, DK_BUDGET_BY_MEMLOCK);
  f.memlock_limit = 4096 * MIB;                     /* above the room: the machine still binds */
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  f.memlock_limit = DK_BUDGET_NONE;                 /* RLIMIT_MEMLOCK unlimited: no memlock figure */
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  assert_int_equal(b.memlock, DK_BUDGET_NONE);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  f.memlock_limit = 64 * MIB;
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);

  char full[400], cut[400];
  dk__budget_describe(&f, &b, full, sizeof full);
  assert_non_null(strstr(full, "memory cgroup /big"));
  assert_non_null(strstr(full, "RLIMIT_MEMLOCK 64.0 MiB, 16.0 MiB locked"));
  for (size_t cap = 8; cap < strlen(full); cap += 13) {
    memset(cut, 0x7f, sizeof cut);
    dk__budget_describe(&f, &b, cut, cap);
    assert_true(strlen(cut) < cap);                 /* cut short, never past the buffer */
    assert_int_equal(strncmp(cut, full, strlen(cut)), 0);
    assert_int_equal((unsigned char)cut[cap], 0x7f);
  }
  char s[24];
  assert_string_equal(dk__budget_size(1536, s, sizeof s), "1.5 KiB");
}

/* Memory given back moments ago may still be on its way to the kernel: a request refused by the
 * machine's figure that such memory could cover waits for it (reading again), and is refused
 * only once the wait is over, with the figures. */
static void refusal_waits_for_memory_just_released(void **state)
{
  (void)state;
  char mem[160];
  snprintf(mem, sizeof mem, "MemTotal: %llu kB\nMemAvailable: %llu kB\n", (unsigned long long)(8192 * 1024),
           (unsigned long long)(64 * 1024));
  g_meminfo = mem;
  dk_option_set(DK_OPTION_MEMORY_MARGIN_MB, 0);
  put("cg2/a/memory.max", "max\n");
  dk__budget_forget();
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dk__budget_note_release(512 * MIB);
  dk_clear_failure();
  assert_false(dk__budget_check(256 * MIB, 0, true, "a test"));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  print_message("  refused after %.2f s: %s\n", waited, dkt_failure_text());
  assert_true(waited >= 1.5);                       /* it waited for the release (2 s) */
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
  assert_true(dkt_text_has(dk_last_failure()->text, "256.0 MiB asked"));
  /* without a recent release: refused at once */
  dk__budget_forget();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_false(dk__budget_check(256 * MIB, 0, true, "a test"));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(waited < 1.0);                        /* no wait (a wait is 2 s) */
  g_meminfo = NULL;
  dk_option_set(DK_OPTION_MEMORY_MARGIN_MB, -1);
}

/* RLIMIT_MEMLOCK as the test sets it (src/prim's getrlimit swapped). */
static rlim_t g_memlock;
static int fake_getrlimit(int resource, struct rlimit *rl)
{
  if (resource != RLIMIT_MEMLOCK) return dk__prim_default.getrlimit(resource, rl);
  rl->rlim_cur = rl->rlim_max = g_memlock;
  return 0;
}

/* /proc/self/status without CapEff (locked memory limited) or with a VmLck that is not a number
 * (none counted); RLIMIT_MEMLOCK unreadable or unlimited (no limit). */
static void status_and_rlimit_at_their_edges(void **state)
{
  (void)state;
  snprintf(g_status, sizeof g_status, "Name:\ttest\nVmLck:\t  many kB\n");
  dk_budget_facts f;
  dk__prim.getrlimit = fake_getrlimit;
  g_memlock = 64 * MIB;
  int read64 = dk__budget_read(&f);
  dk_budget_facts at64 = f;
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_GETRLIMIT), EPERM);
  int read_failed = dk__budget_read(&f);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  dk_budget_facts unread = f;
  g_memlock = RLIM_INFINITY;
  int read_inf = dk__budget_read(&f);
  dk__prim.getrlimit = dk__prim_default.getrlimit;
  assert_int_equal(read64, 0);
  assert_true(at64.lock_limited);                   /* no CapEff: no CAP_IPC_LOCK */
  assert_int_equal(at64.locked, 0);
  assert_int_equal(at64.memlock_limit, 64 * MIB);
  assert_int_equal(read_failed, 0);
  assert_true(fired);
  assert_true(unread.lock_limited);
  assert_true(unread.memlock_limit == DK_BUDGET_NONE);
  assert_int_equal(read_inf, 0);
  assert_true(f.lock_limited);
  assert_true(f.memlock_limit == DK_BUDGET_NONE);
}

/* The process's cgroups as /proc/self/cgroup names them: in neither hierarchy (no memory cgroup
 * figure), or a v2 path outside the namespace's root (read from the mount point as it is, where
 * nothing is found here) so the v1 root's limit is the one; a level whose memory.stat is missing
 * counts no page cache. */
static void cgroup_paths_at_their_edges(void **state)
{
  (void)state;
  dk_budget_facts f;
  snprintf(g_cgroup, sizeof g_cgroup, "7:cpu,cpuacct:/\n");
  assert_int_equal(dk__budget_read(&f), 0);
  assert_true(f.cg_limit == DK_BUDGET_NONE);
  assert_int_equal(f.cg_version, 0);
  g_cgroup[0] = '\0';                               /* empty: unreadable */
  assert_int_equal(dk__budget_read(&f), 0);
  assert_true(f.cg_limit == DK_BUDGET_NONE);
  snprintf(g_cgroup, sizeof g_cgroup, "5:memory:/x\n0::/other/a\n");
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_version, 1);
  assert_string_equal(f.cg_path, "/");
  assert_int_equal(f.cg_limit, 512 * MIB);
  snprintf(g_cgroup, sizeof g_cgroup, "0::/ns/a\n");
  put("cg2/a/memory.stat", NULL);
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_version, 2);
  assert_string_equal(f.cg_path, "/a");
  assert_int_equal(f.cg_file, 0);
  put("cg2/a/memory.stat", "anon 1\n");             /* no page cache figures */
  assert_int_equal(dk__budget_read(&f), 0);
  assert_string_equal(f.cg_path, "/a");
  assert_int_equal(f.cg_file, 0);
  assert_int_equal(f.cg_usage, 100 * MIB);
  /* /nsa only shares its first letters with the namespace's root /ns: it is not under it, and
   * nothing beside the mount point (cg2a/x, where stripping "/ns" would lead) is read */
  put_num("cg2a/x/memory.max", 32 * MIB);
  put_num("cg2a/x/memory.current", 1 * MIB);
  snprintf(g_cgroup, sizeof g_cgroup, "0::/nsa/x\n");
  assert_int_equal(dk__budget_read(&f), 0);
  assert_true(f.cg_limit == DK_BUDGET_NONE);
  assert_int_equal(f.cg_version, 0);
  snprintf(g_cgroup, sizeof g_cgroup, "0::/ns\n");  /* the root itself: read at the mount point */
  put_num("cg2/memory.max", 48 * MIB);
  put_num("cg2/memory.current", 2 * MIB);
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.cg_version, 2);
  put("cg2/memory.max", NULL);                      /* the root has no files again */
  put("cg2/memory.current", NULL);
  assert_string_equal(f.cg_path, "/");
  assert_int_equal(f.cg_limit, 48 * MIB);
}

/* A request under DK_BUDGET_ADMIT_MIN is admitted without reading anything (it cannot exceed
 * the machine by itself); a larger one needs the figures. */
static void small_requests_need_no_figures(void **state)
{
  (void)state;
  g_meminfo = "";
  dk__budget_forget();
  dk_clear_failure();
  bool small = dk__budget_admit(DK_BUDGET_ADMIT_MIN - 4096, 0);
  bool large = dk__budget_admit(DK_BUDGET_ADMIT_MIN, 0);
  g_meminfo = NULL;
  assert_true(small);
  assert_false(large);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(least_room_level_is_chosen, setup, teardown),
    cmocka_unit_test_setup_teardown(refusal_names_the_cgroup, setup, teardown),
    cmocka_unit_test_setup_teardown(lock_limited_without_cap, setup, teardown),
    cmocka_unit_test_setup_teardown(meminfo_unreadable, setup, teardown),
    cmocka_unit_test(parsers_refuse_malformed_text),
    cmocka_unit_test(compute_and_describe_edges),
    cmocka_unit_test_setup_teardown(status_and_rlimit_at_their_edges, setup, teardown),
    cmocka_unit_test_setup_teardown(cgroup_paths_at_their_edges, setup, teardown),
    cmocka_unit_test_setup_teardown(small_requests_need_no_figures, setup, teardown),
    cmocka_unit_test_setup_teardown(refusal_waits_for_memory_just_released, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
