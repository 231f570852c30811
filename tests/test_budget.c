/* tests/test_budget.c: memory the machine does not have ends in a refusal (src/phys/budget.c).
 * The arithmetic and the parsers against tables; requests of 1.5x RAM refused before anything
 * is populated, with the figures, and nothing left held (counters, pins, objects, VmLck, the
 * kernel's oom_kill count); inside a memory cgroup of our own (where the machine allows one) a
 * request at its limit refused; the 4K provider's step populate failed at every step and
 * refused when the budget shrinks between steps; the pool grown by less when memory is short.
 * Figures the library reads are replaced where a test needs them exact: /proc/meminfo is served
 * from a memfd through the prim table. Nothing here exhausts the host: the "until refused" runs
 * are in the QEMU guest (e2e/budget.c). */
#include "dk_test.h"

#include "phys/budget.h"
#include "iokit/internal.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MIB (1ull << 20)
#define GIB (1ull << 30)

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t meminfo_kb(const char *key)
{
  FILE *f = fopen("/proc/meminfo", "r");
  char line[160];
  unsigned long long v = 0;
  size_t klen = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, klen) && line[klen] == ':') { v = strtoull(line + klen + 1, NULL, 10); break; }
  if (f) fclose(f);
  return v;
}

/* The kernel's count of OOM kills (/proc/vmstat oom_kill); -1 when unreadable. */
static long oom_kills(void)
{
  FILE *f = fopen("/proc/vmstat", "r");
  char line[128];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "oom_kill %ld", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

typedef struct held { dk_prim_counters c; long pins, objects, locked_kb, ooms; dk_pool_stats pool; } held;

static held snap(void)
{
  dk__thread_caches_flush();
  held h = { dk__prim_counters(), dk__pins_live(), dk__objects_live(), dkt_locked_kb(), oom_kills(), { .size = 0 } };
  h.pool.size = sizeof h.pool;
  dk_pool_get_stats(&h.pool);
  return h;
}

static void assert_nothing_held(const held *a, const char *what)
{
  held b = snap();
  if (a->c.fds != b.c.fds || a->c.map_bytes != b.c.map_bytes || a->c.lock_bytes != b.c.lock_bytes ||
      a->c.heap_blocks != b.c.heap_blocks || a->pins != b.pins || a->objects != b.objects ||
      (dkt_mlock_works() && a->locked_kb != b.locked_kb) || a->ooms != b.ooms ||
      a->pool.bytes_pool_2m != b.pool.bytes_pool_2m || a->pool.bytes_pool_1g != b.pool.bytes_pool_1g ||
      a->pool.hugepages_raised_2m != b.pool.hugepages_raised_2m ||
      a->pool.hugepages_raised_1g != b.pool.hugepages_raised_1g)
    fail_msg("%s left something held: fds %ld->%ld, mapped %ld->%ld, locked %ld->%ld, heap %ld->%ld, pins %ld->%ld, "
             "objects %ld->%ld, VmLck %ld->%ld kB, oom_kill %ld->%ld, pool 2M %llu->%llu 1G %llu->%llu",
             what, a->c.fds, b.c.fds, a->c.map_bytes, b.c.map_bytes, a->c.lock_bytes, b.c.lock_bytes, a->c.heap_blocks,
             b.c.heap_blocks, a->pins, b.pins, a->objects, b.objects, a->locked_kb, b.locked_kb, a->ooms, b.ooms,
             (unsigned long long)a->pool.bytes_pool_2m, (unsigned long long)b.pool.bytes_pool_2m,
             (unsigned long long)a->pool.bytes_pool_1g, (unsigned long long)b.pool.bytes_pool_1g);
}

/* Count the calls that populate memory, through the prim table. */
static _Atomic long g_populating;
static int count_fallocate(int fd, int mode, off_t off, off_t len)
{
  if (!(mode & FALLOC_FL_PUNCH_HOLE)) g_populating++;
  return dk__prim_default.fallocate(fd, mode, off, len);
}
static int count_madvise(void *a, size_t len, int advice)
{
  if (advice == MADV_POPULATE_WRITE) g_populating++;
  return dk__prim_default.madvise(a, len, advice);
}
static int count_mlock(const void *a, size_t len)
{
  g_populating++;
  return dk__prim_default.mlock(a, len);
}
static void *count_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
  if (flags & MAP_POPULATE) g_populating++;
  return dk__prim_default.mmap(a, len, prot, flags, fd, off);
}
static void counting(bool on)
{
  g_populating = 0;
  dk__prim.fallocate = on ? count_fallocate : dk__prim_default.fallocate;
  dk__prim.madvise = on ? count_madvise : dk__prim_default.madvise;
  dk__prim.mlock = on ? count_mlock : dk__prim_default.mlock;
  dk__prim.mmap = on ? count_mmap : dk__prim_default.mmap;
}

/* /proc/meminfo as the test says: MemAvailable takes the values of `avail` in turn (the last
 * one stays), MemTotal is the real one. */
static uint64_t g_fake_avail[8];
static int g_fake_n, g_fake_i;
static int fake_fd(const char *txt, size_t n)
{
  int fd = memfd_create("fake-proc", MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (write(fd, txt, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) != 0) { close(fd); errno = EIO; return -1; }
  return fd;
}
static int fake_open(const char *path, int flags, mode_t mode)
{
  /* no free persistent hugepages either (another process may have left some): every page the
   * pool takes is then new memory, which the budget must allow */
  size_t plen = strlen(path);
  if (plen > 15 && !strcmp(path + plen - 15, "/free_hugepages")) return fake_fd("0\n", 2);
  if (strcmp(path, "/proc/meminfo") != 0) return dk__prim_default.open(path, flags, mode);
  uint64_t avail = g_fake_avail[g_fake_i < g_fake_n ? g_fake_i : g_fake_n - 1];
  g_fake_i++;
  char txt[256];
  int n = snprintf(txt, sizeof txt, "MemTotal:       %llu kB\nMemFree:        %llu kB\nMemAvailable:   %llu kB\n",
                   (unsigned long long)meminfo_kb("MemTotal"), (unsigned long long)(avail >> 10),
                   (unsigned long long)(avail >> 10));
  return fake_fd(txt, (size_t)n);
}
/* Fake MemAvailable values in bytes (n of them), no free persistent hugepages, the margin 0;
 * n == 0 puts the real files back. */
static void fake_meminfo(int n, const uint64_t *avail)
{
  g_fake_n = n;
  g_fake_i = 0;
  for (int i = 0; i < n && i < 8; i++) g_fake_avail[i] = avail[i];
  dk__prim.open = n ? fake_open : dk__prim_default.open;
  dk_option_set(DK_OPTION_MEMORY_MARGIN_MB, n ? 0 : -1);
  dk__budget_forget();
}

static int teardown_all(void **state)
{
  (void)state;
  counting(false);
  fake_meminfo(0, NULL);
  dk__budget_set_step(0);
  dk__fault_disarm();
  dk_option_set(DK_OPTION_POOL, 1);
  dk_option_set(DK_OPTION_POOL_MAX_MB, 4096);
  dk_pool_trim();
  return 0;
}

static bool text_has(const char *needle) { return strstr(dk_last_failure()->text, needle) != NULL; }

static void assert_budget_refusal(const char *what)
{
  const dk_failure *f = dk_last_failure();
  print_message("  %s: %s\n", what, dkt_failure_text());
  if (f->code != kIOReturnNoMemory || f->constraint != DK_CONSTRAINT_RESOURCE)
    fail_msg("%s: expected kIOReturnNoMemory (resource), got %s", what, dkt_failure_text());
  if (!text_has("asked") || !text_has("MemAvailable") || !text_has("margin"))
    fail_msg("%s: the reason lacks the figures: %s", what, f->text);
}

/* ---- pure: margin, arithmetic, parsers ----------------------------------------------- */

static void margin_table(void **state)
{
  (void)state;
  static const struct { uint64_t total, margin; } t[] = {
    { 0, 0 },
    { 64 * MIB, 8 * MIB },            /* an eighth below 128 MiB */
    { 128 * MIB, 16 * MIB },
    { 481 * MIB, 16 * MIB },          /* a 512 MiB guest: the 16 MiB floor */
    { 512 * MIB, 16 * MIB },
    { 1 * GIB, 32 * MIB },            /* 1/32 from 512 MiB up */
    { 24 * GIB, 768 * MIB },
    { 256 * GIB, 8 * GIB },
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (dk__budget_margin(t[i].total) != t[i].margin)
      fail_msg("margin of %llu bytes: %llu, expected %llu", (unsigned long long)t[i].total,
               (unsigned long long)dk__budget_margin(t[i].total), (unsigned long long)t[i].margin);
}

static dk_budget_facts facts(uint64_t total, uint64_t avail)
{
  dk_budget_facts f;
  memset(&f, 0, sizeof f);
  f.mem_total = total;
  f.mem_available = avail;
  f.margin_option = -1;
  f.cg_limit = DK_BUDGET_NONE;
  f.memlock_limit = DK_BUDGET_NONE;
  return f;
}

static void compute_table(void **state)
{
  (void)state;
  dk_budget b;
  /* the machine alone: MemAvailable less the margin */
  dk_budget_facts f = facts(1 * GIB, 900 * MIB);
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.margin, 32 * MIB);
  assert_int_equal(b.machine, 868 * MIB);
  assert_int_equal(b.room, 868 * MIB);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  assert_true(b.cgroup == DK_BUDGET_NONE && b.memlock == DK_BUDGET_NONE);
  /* available below the margin: nothing, never a wrap-around */
  f = facts(1 * GIB, 10 * MIB);
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.room, 0);
  /* an explicit margin replaces the automatic one, for the cgroup too */
  f = facts(1 * GIB, 900 * MIB);
  f.margin_option = 0;
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.room, 900 * MIB);
  /* a cgroup with less room binds: limit - (usage - file/2) - its margin */
  f = facts(24 * GIB, 20 * GIB);
  f.cg_limit = 256 * MIB;
  f.cg_usage = 100 * MIB;
  f.cg_file = 40 * MIB;
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.cg_margin, 16 * MIB);
  assert_int_equal(b.cgroup, 256 * MIB - 80 * MIB - 16 * MIB);
  assert_int_equal(b.room, b.cgroup);
  assert_int_equal(b.bind, DK_BUDGET_BY_CGROUP);
  /* over its limit: 0 */
  f.cg_usage = 300 * MIB;
  f.cg_file = 0;
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.room, 0);
  /* hugetlb pages are not charged to the memory cgroup unless it says so */
  f.cg_usage = 100 * MIB;
  dk__budget_compute(&f, DK_BUDGET_HUGETLB, &b);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  assert_true(b.cgroup == DK_BUDGET_NONE);
  f.cg_hugetlb = true;
  dk__budget_compute(&f, DK_BUDGET_HUGETLB, &b);
  assert_int_equal(b.bind, DK_BUDGET_BY_CGROUP);
  /* RLIMIT_MEMLOCK binds locked memory without CAP_IPC_LOCK, and only that */
  f = facts(24 * GIB, 20 * GIB);
  f.lock_limited = true;
  f.memlock_limit = 8 * MIB;
  f.locked = 3 * MIB;
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  assert_int_equal(b.room, 5 * MIB);
  assert_int_equal(b.bind, DK_BUDGET_BY_MEMLOCK);
  dk__budget_compute(&f, 0, &b);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  f.lock_limited = false;
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  assert_int_equal(b.bind, DK_BUDGET_BY_MACHINE);
  /* the cost of 4K pages carries their tables; hugepages none; no overflow */
  assert_int_equal(dk__budget_cost(64 * MIB, 0), 65 * MIB);
  assert_int_equal(dk__budget_cost(64 * MIB, DK_BUDGET_HUGETLB), 64 * MIB);
  assert_true(dk__budget_cost(UINT64_MAX - 1, 0) == UINT64_MAX);
  /* the description names every figure that applies */
  f = facts(1 * GIB, 900 * MIB);
  f.cg_limit = 256 * MIB;
  f.cg_usage = 10 * MIB;
  snprintf(f.cg_path, sizeof f.cg_path, "/test/x");
  f.lock_limited = true;
  f.memlock_limit = 8 * MIB;
  dk__budget_compute(&f, DK_BUDGET_LOCKED, &b);
  char text[320];
  dk__budget_describe(&f, &b, text, sizeof text);
  print_message("  %s\n", text);
  assert_non_null(strstr(text, "MemAvailable 900.0 MiB"));
  assert_non_null(strstr(text, "32.0 MiB margin"));
  assert_non_null(strstr(text, "memory cgroup /test/x"));
  assert_non_null(strstr(text, "limit 256.0 MiB"));
  assert_non_null(strstr(text, "RLIMIT_MEMLOCK 8.0 MiB"));
}

static void parser_table(void **state)
{
  (void)state;
  uint64_t t, a, v;
  assert_int_equal(dk__budget_parse_meminfo("MemTotal:       24683784 kB\nMemFree:        22580016 kB\n"
                                            "MemAvailable:   23196272 kB\nBuffers: 1 kB\n", &t, &a), 0);
  assert_int_equal(t, 24683784ull << 10);
  assert_int_equal(a, 23196272ull << 10);
  assert_int_equal(dk__budget_parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n", &t, &a), -1);   /* before 3.14 */
  assert_int_equal(dk__budget_stat_value("anon 1\nfile 2\nactive_file 30\ninactive_file 40\n", "active_file", &v), 0);
  assert_int_equal(v, 30);
  assert_int_equal(dk__budget_stat_value("inactive_file 40\n", "active_file", &v), -1);  /* no prefix match */
  assert_true(dk__budget_parse_limit("max\n") == DK_BUDGET_NONE);
  assert_true(dk__budget_parse_limit("9223372036854771712\n") == DK_BUDGET_NONE);  /* v1 unlimited */
  assert_int_equal(dk__budget_parse_limit("268435456\n"), 256 * MIB);
  assert_true(dk__budget_parse_limit("") == DK_BUDGET_NONE);
  char path[128];
  const char *hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/0f4e\n3:cpuset:/\n0::/\n";
  assert_int_equal(dk__budget_cgroup_path(hybrid, 1, path, sizeof path), 0);
  assert_string_equal(path, "/process_api/0f4e");
  assert_int_equal(dk__budget_cgroup_path(hybrid, 2, path, sizeof path), 0);
  assert_string_equal(path, "/");
  assert_int_equal(dk__budget_cgroup_path("0::/user.slice/user-0.slice/session-1.scope\n", 2, path, sizeof path), 0);
  assert_string_equal(path, "/user.slice/user-0.slice/session-1.scope");
  assert_int_equal(dk__budget_cgroup_path("0::/a\n", 1, path, sizeof path), -1);
  assert_int_equal(dk__budget_cgroup_path("5:cpu,memory:/b\n", 1, path, sizeof path), 0);
  assert_string_equal(path, "/b");
  assert_int_equal(dk__budget_cgroup_path("5:memory_x:/b\n", 1, path, sizeof path), -1);
  char point[128], root[128];
  bool huge;
  const char *mi =
    "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    "29 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
    "33 25 0:30 /lxc/x /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_hugetlb_accounting\n";
  assert_int_equal(dk__budget_cgroup_mount(mi, 1, point, sizeof point, root, sizeof root, NULL), 0);
  assert_string_equal(point, "/sys/fs/cgroup/memory");
  assert_string_equal(root, "/");
  assert_int_equal(dk__budget_cgroup_mount(mi, 2, point, sizeof point, root, sizeof root, &huge), 0);
  assert_string_equal(point, "/sys/fs/cgroup/unified");
  assert_string_equal(root, "/lxc/x");
  assert_true(huge);
  assert_int_equal(dk__budget_cgroup_mount("1 2 0:1 / /x rw - cgroup cgroup rw,cpu\n", 1, point, sizeof point, root,
                                           sizeof root, NULL), -1);
  char s[24];
  assert_string_equal(dk__budget_size(1536 * MIB, s, sizeof s), "1.5 GiB");
  assert_string_equal(dk__budget_size(16 * MIB, s, sizeof s), "16.0 MiB");
  assert_string_equal(dk__budget_size(DK_BUDGET_NONE, s, sizeof s), "unlimited");
}

/* The figures the library reads agree with the kernel's (its own read, within what changes
 * between two reads of a machine others use). */
static void reads_agree_with_the_kernel(void **state)
{
  (void)state;
  dk_budget_facts f;
  assert_int_equal(dk__budget_read(&f), 0);
  assert_int_equal(f.mem_total, meminfo_kb("MemTotal") << 10);
  uint64_t avail = meminfo_kb("MemAvailable") << 10;
  uint64_t diff = f.mem_available > avail ? f.mem_available - avail : avail - f.mem_available;
  assert_true(diff < 512 * MIB);
  print_message("  MemTotal %llu MiB, MemAvailable %llu MiB, cgroup v%d %s limit %s, lock-limited %d\n",
                (unsigned long long)(f.mem_total >> 20), (unsigned long long)(f.mem_available >> 20), f.cg_version,
                f.cg_path, f.cg_limit == DK_BUDGET_NONE ? "none" : "set", f.lock_limited);
  assert_int_equal(f.lock_limited, geteuid() != 0);
}

/* ---- 1.5x RAM: refused before anything is populated ----------------------------------- */

static uint64_t one_and_a_half_ram(void) { return (meminfo_kb("MemTotal") << 10) / 2 * 3; }

static void refuse_wired(void **state)
{
  (void)state;
  uint64_t big = one_and_a_half_ram();
  held base = snap();
  counting(true);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, big, 4096);
  long populated = g_populating;
  counting(false);
  assert_null(b);
  assert_budget_refusal("1.5x RAM, wired");
  assert_true(text_has("more than can be had"));
  assert_int_equal(populated, 0);          /* refused before anything was populated */
  assert_nothing_held(&base, "1.5x RAM, wired");
  /* contiguous, and through the constraints call: the same refusal, never "contiguous" */
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.contiguous = true;
  b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, big, &c);
  assert_null(b);
  assert_budget_refusal("1.5x RAM, contiguous");
  c = DK_CONSTRAINTS_NONE;
  c.high = 0xffffffffull;
  b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, big, &c);
  assert_null(b);
  assert_budget_refusal("1.5x RAM, below 4 GiB");
  assert_nothing_held(&base, "1.5x RAM, constrained");
}
DKT_POOL_VARIANTS(refuse_wired)

/* A pageable buffer is populated by its user; prepare() wires it, and is refused the same way. */
static void refuse_prepare(void **state)
{
  (void)state;
  uint64_t big = one_and_a_half_ram();
  held base = snap();
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPageable, big, 4096);
  assert_non_null(b);                       /* nothing is populated yet */
  counting(true);
  IOReturn rc = IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone);
  long populated = g_populating;
  counting(false);
  assert_int_equal(rc, kIOReturnNoMemory);
  assert_budget_refusal("1.5x RAM, prepare");
  assert_int_equal(populated, 0);
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_false(info.wired);
  assert_int_equal(info.prepare_count, 0);
  /* a page of it still works once prepared, populated by its user */
  OSSafeReleaseNULL(b);
  assert_nothing_held(&base, "1.5x RAM, prepare");
}

static void refuse_pool_reserve(void **state)
{
  (void)state;
  if (!dkt_pool_usable()) DKT_SKIP("the hugepage pool is not usable here");
  held base = snap();
  assert_int_equal(dk_pool_reserve(one_and_a_half_ram(), 0), kIOReturnNoMemory);
  assert_budget_refusal("1.5x RAM, dk_pool_reserve");
  assert_true(text_has("growing the hugepage pool"));
  assert_nothing_held(&base, "1.5x RAM, dk_pool_reserve");
}

/* ---- a memory cgroup of our own --------------------------------------------------------- */

typedef struct cg { char dir[320]; int version; } cg;

/* Create a cgroup with the memory controller and a `limit`, under the root of the hierarchy
 * that has it (v2, else v1). false with the reason printed when the machine does not allow. */
static bool cgroup_make(cg *g, uint64_t limit, char *why, size_t cap)
{
  if (geteuid() != 0) { snprintf(why, cap, "creating a cgroup needs root"); return false; }
  FILE *f = fopen("/proc/self/mountinfo", "r");
  char line[1024], v1[256] = "", v2[256] = "";
  while (f && fgets(line, sizeof line, f)) {
    char point[256], fstype[32], super[512];
    const char *dash = strstr(line, " - ");
    if (!dash || sscanf(line, "%*s %*s %*s %*s %255s", point) != 1 ||
        sscanf(dash + 3, "%31s %*s %511s", fstype, super) != 2)
      continue;
    if (!strcmp(fstype, "cgroup2") && !v2[0]) snprintf(v2, sizeof v2, "%s", point);
    if (!strcmp(fstype, "cgroup") && strstr(super, "memory") && !v1[0]) snprintf(v1, sizeof v1, "%s", point);
  }
  if (f) fclose(f);
  char path[400], ctl[256] = "";
  if (v2[0]) {
    snprintf(path, sizeof path, "%s/cgroup.controllers", v2);
    FILE *c = fopen(path, "r");
    if (c) { if (!fgets(ctl, sizeof ctl, c)) ctl[0] = 0; fclose(c); }
  }
  if (v2[0] && strstr(ctl, "memory")) {
    g->version = 2;
    snprintf(path, sizeof path, "%s/cgroup.subtree_control", v2);
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { (void)!write(fd, "+memory", 7); close(fd); }
    snprintf(g->dir, sizeof g->dir, "%s/dmakit-test-%d", v2, (int)getpid());
  } else if (v1[0]) {
    g->version = 1;
    snprintf(g->dir, sizeof g->dir, "%s/dmakit-test-%d", v1, (int)getpid());
  } else {
    snprintf(why, cap, "no cgroup hierarchy with the memory controller is mounted");
    return false;
  }
  if (mkdir(g->dir, 0755) < 0) { snprintf(why, cap, "mkdir %.300s: %s", g->dir, strerror(errno)); return false; }
  snprintf(path, sizeof path, "%s/%s", g->dir, g->version == 2 ? "memory.max" : "memory.limit_in_bytes");
  int fd = open(path, O_WRONLY);
  char v[32];
  int n = snprintf(v, sizeof v, "%llu", (unsigned long long)limit);
  bool ok = fd >= 0 && write(fd, v, (size_t)n) == n;
  if (fd >= 0) close(fd);
  if (!ok) { snprintf(why, cap, "setting %.300s: %s", path, strerror(errno)); rmdir(g->dir); return false; }
  return true;
}

static uint64_t cgroup_read(const cg *g, const char *name)
{
  char path[400], txt[64] = "";
  snprintf(path, sizeof path, "%s/%s", g->dir, name);
  FILE *f = fopen(path, "r");
  if (f) { if (!fgets(txt, sizeof txt, f)) txt[0] = 0; fclose(f); }
  return strtoull(txt, NULL, 10);
}

#define CG_LIMIT (256 * MIB)

static void in_cgroup(void *arg)
{
  (void)arg;
  dk_option_set(DK_OPTION_POOL, 0);   /* 4K pages are charged to the memory cgroup; hugetlb is not */
  dk__budget_forget();
  /* at the limit: refused, naming the cgroup */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, CG_LIMIT, 4096);
  if (b) fprintf(stderr, "child: a buffer at the cgroup's limit was given\n");
  DKT_CHILD_CHECK(!b);
  fprintf(stderr, "child: %s\n", dkt_failure_text());
  DKT_CHILD_CHECK(dk_last_failure()->code == kIOReturnNoMemory);
  DKT_CHILD_CHECK(strstr(dk_last_failure()->text, "memory cgroup") != NULL);
  DKT_CHILD_CHECK(strstr(dk_last_failure()->text, "limit 256.0 MiB") != NULL);
  /* pageable, then prepare: refused too */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPageable, CG_LIMIT, 4096);
  DKT_CHILD_CHECK(b != NULL);
  DKT_CHILD_CHECK(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone) == kIOReturnNoMemory);
  DKT_CHILD_CHECK(strstr(dk_last_failure()->text, "memory cgroup") != NULL);
  OSSafeReleaseNULL(b);
  /* what fits in the cgroup is given */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, CG_LIMIT / 4, 4096);
  if (!b) fprintf(stderr, "child: a quarter of the limit was refused: %s\n", dkt_failure_text());
  DKT_CHILD_CHECK(b != NULL);
  OSSafeReleaseNULL(b);
  _exit(0);
}

static void refuse_at_cgroup_limit(void **state)
{
  (void)state;
  cg g;
  char why[400];
  if (!cgroup_make(&g, CG_LIMIT, why, sizeof why)) DKT_SKIP("no memory cgroup of our own: %s", why);
  print_message("  cgroup v%d %s, limit 256 MiB\n", g.version, g.dir);
  long ooms = oom_kills();
  int sync[2];
  assert_int_equal(pipe(sync), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char c;
    close(sync[1]);
    if (read(sync[0], &c, 1) != 1) _exit(3);   /* moved into the cgroup first */
    in_cgroup(NULL);
  }
  close(sync[0]);
  char path[400], num[32];
  snprintf(path, sizeof path, "%s/cgroup.procs", g.dir);
  int fd = open(path, O_WRONLY);
  int n = snprintf(num, sizeof num, "%d", (int)pid);
  bool moved = fd >= 0 && write(fd, num, (size_t)n) == n;
  if (fd >= 0) close(fd);
  (void)!write(sync[1], "g", 1);
  close(sync[1]);
  int status;
  waitpid(pid, &status, 0);
  uint64_t failcnt = g.version == 1 ? cgroup_read(&g, "memory.failcnt") : 0;
  rmdir(g.dir);
  if (!moved) DKT_SKIP("could not move a process into %s", g.dir);
  dkt_assert_child_ok(status);
  assert_int_equal(failcnt, 0);            /* nothing ran into the limit */
  if (ooms >= 0) assert_int_equal(oom_kills(), ooms);
}

/* ---- the 4K provider's step populate ------------------------------------------------- */

#define STEP (1 * MIB)
#define STEPS 8

static IOReturn create_release(void)
{
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, STEPS * STEP, 4096);
  if (!b) return dk_last_failure()->code;
  OSSafeReleaseNULL(b);
  return kIOReturnSuccess;
}

/* Fail each populating call of each step, once: refused, and nothing kept. */
static void steps_fail_at_every_step(void **state)
{
  (void)state;
  dk_option_set(DK_OPTION_POOL, 0);
  dk__budget_set_step(STEP);
  assert_int_equal(create_release(), kIOReturnSuccess);
  held base = snap();
  static const dk_prim_call calls[] = { DK_PRIM_FALLOCATE, DK_PRIM_MADVISE, DK_PRIM_MLOCK };
  for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++) {
    if (calls[k] == DK_PRIM_MLOCK && !dkt_mlock_works()) continue;
    /* without frame numbers (an ordinary user) a lock refused for lack of RLIMIT_MEMLOCK leaves
     * the pages populated but unlocked (physical.md): the buffer is given, and locking stops */
    bool tolerated = calls[k] == DK_PRIM_MLOCK && !dk_capabilities()->pagemap_frames;
    unsigned long points = 0;
    for (unsigned long nth = 1; nth < 100; nth++) {
      dk__thread_caches_flush();
      dk__fault_arm(nth, 0, DK_PRIM_BIT(calls[k]), ENOMEM);
      IOReturn rc = create_release();
      int fired = dk__fault_fired();
      dk__fault_disarm();
      assert_nothing_held(&base, dk__prim_call_name(calls[k]));
      if (!fired) { assert_int_equal(rc, kIOReturnSuccess); break; }
      if (tolerated) {
        if (rc != kIOReturnSuccess) fail_msg("mlock refused at call %lu without privilege: %s", nth, dkt_failure_text());
        points++;
        continue;
      }
      if (rc != kIOReturnNoMemory && rc != kIOReturnCannotWire)
        fail_msg("%s failing at call %lu: %s", dk__prim_call_name(calls[k]), nth, dkt_failure_text());
      points++;
    }
    print_message("  %s: failed at %lu points%s\n", dk__prim_call_name(calls[k]), points,
                  tolerated ? " (each time the buffer was given, unlocked)" : "");
    assert_true(tolerated ? points >= 1 : points >= STEPS);   /* once per step, at least */
  }
}

/* The budget is read again between steps: memory that runs short mid-way ends the populate,
 * and everything is given back. */
static void steps_stop_when_memory_runs_short(void **state)
{
  (void)state;
  dk_option_set(DK_OPTION_POOL, 0);
  dk__budget_set_step(STEP);
  assert_int_equal(create_release(), kIOReturnSuccess);
  held base = snap();
  /* plenty at the first read, then a little less than one step at every read after it */
  const uint64_t avail[] = { 1 * GIB, STEP / 2 };
  fake_meminfo(2, avail);
  counting(true);
  IOReturn rc = create_release();
  long populated = g_populating;
  counting(false);
  fake_meminfo(0, NULL);
  assert_int_equal(rc, kIOReturnNoMemory);
  assert_budget_refusal("memory short after the first step");
  assert_true(text_has("wiring 8.0 MiB of 4K pages"));
  /* one step ran (allocate, populate, lock) before the second check refused */
  assert_true(populated >= 2 && populated <= 3);
  assert_nothing_held(&base, "a populate stopped between steps");
}

/* ---- the pool grows by less when memory is short --------------------------------------- */

static void pool_grows_by_less(void **state)
{
  (void)state;
  if (!dkt_pool_on()) DKT_SKIP("the hugepage pool is not usable here");
  dk_pool_trim();
  held base = snap();
  /* room for 3 hugepages (and a little): the pool grows by 3 instead of 16 */
  const uint64_t avail[] = { 3 * 2 * MIB + MIB };
  fake_meminfo(1, avail);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * 1024, 4096);
  if (!b) fail_msg("a 64 KiB pool buffer with room for 3 hugepages: %s", dkt_failure_text());
  dk_pool_stats st = { .size = sizeof st };
  dk_pool_get_stats(&st);
  print_message("  pool after one 64 KiB buffer: %llu MiB of 2 MiB pages\n", (unsigned long long)(st.bytes_pool_2m >> 20));
  assert_int_equal(st.bytes_pool_2m - base.pool.bytes_pool_2m, 3 * 2 * MIB);
  OSSafeReleaseNULL(b);
  dk_pool_trim();
  /* room for less than one hugepage: a buffer only the pool can give (aligned past a page) is
   * refused, naming the pool's growth and the figures */
  const uint64_t none[] = { MIB };
  fake_meminfo(1, none);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * 1024, 64 * 1024);
  assert_null(b);
  assert_budget_refusal("no room for a hugepage");
  assert_true(text_has("growing the hugepage pool"));
  /* a mask the search cannot meet within the budget: the mask is named, and the budget */
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, 4096, 0xfffffull);
  assert_null(b);
  print_message("  mask 0xfffff: %s\n", dkt_failure_text());
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_MASK);
  assert_true(text_has("memory budget"));
  fake_meminfo(0, NULL);
  dk_pool_trim();
  assert_nothing_held(&base, "the pool grown within a budget");
}

/* A request the pool cannot serve but that needs nothing of it is answered by 4K pages, and
 * refused for their reason: never "no physically contiguous run" when no contiguity was asked. */
static void fallback_names_what_failed(void **state)
{
  (void)state;
  if (!dkt_pool_on()) DKT_SKIP("the hugepage pool is not usable here");
  dk_pool_trim();
  held base = snap();
  dk_option_set(DK_OPTION_POOL_MAX_MB, 16);             /* the pool cannot hold 64 MiB */
  const uint64_t plenty[] = { 1 * GIB };
  fake_meminfo(1, plenty);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64 * MIB, 4096);
  if (!b) fail_msg("64 MiB, pool capped at 16 MiB, 1 GiB available: %s", dkt_failure_text());
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  assert_int_equal(info.provider, DK_PROVIDER_MEMFD_4K);
  OSSafeReleaseNULL(b);
  /* 4K pages short of memory: their refusal is the one reported */
  const uint64_t short_[] = { 48 * MIB };
  fake_meminfo(1, short_);
  assert_int_equal(dk_pool_reserve(16 * MIB, 0), kIOReturnSuccess);   /* the pool holds 16 MiB free */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 56 * MIB, 4096);
  assert_null(b);
  assert_budget_refusal("56 MiB, 4K pages short");
  assert_null(strstr(dk_last_failure()->text, "contiguous"));
  assert_true(text_has("4K pages"));
  fake_meminfo(0, NULL);
  dk_option_set(DK_OPTION_POOL_MAX_MB, 4096);
  dk_pool_trim();
  assert_nothing_held(&base, "the fallback to 4K pages");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(margin_table),
    cmocka_unit_test(compute_table),
    cmocka_unit_test(parser_table),
    cmocka_unit_test(reads_agree_with_the_kernel),
    DKT_TEST_4K(refuse_wired),
    DKT_TEST_POOL(refuse_wired),
    cmocka_unit_test_teardown(refuse_prepare, teardown_all),
    cmocka_unit_test_teardown(refuse_pool_reserve, teardown_all),
    cmocka_unit_test_teardown(refuse_at_cgroup_limit, teardown_all),
    cmocka_unit_test_teardown(steps_fail_at_every_step, teardown_all),
    cmocka_unit_test_teardown(steps_stop_when_memory_runs_short, teardown_all),
    cmocka_unit_test_teardown(pool_grows_by_less, teardown_all),
    cmocka_unit_test_teardown(fallback_names_what_failed, teardown_all),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
