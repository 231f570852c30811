/* tests/support/dk_test.c: see dk_test.h. No dmakit calls in here, except the pool-variant
 * fixtures at the end (DK_OPTION_POOL and the capabilities only). */
#include "dk_test.h"

#include <dmakit/dk.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#define PM_PRESENT  (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

size_t dkt_page_size(void) {
  long ps = sysconf(_SC_PAGESIZE);
  return ps > 0 ? (size_t)ps : 4096u;   /* sysconf never fails for this; a fallback only */
}

size_t dkt_page_count(const void *va, size_t len) {
  if (len == 0) return 0;
  size_t ps = dkt_page_size();
  uintptr_t a = (uintptr_t)va;
  uintptr_t first = a / ps, last = (a + len - 1) / ps;
  return (size_t)(last - first + 1);
}

size_t dkt_read_frames(const void *va, size_t len, uint64_t *pfn_out) {
  size_t n = dkt_page_count(va, len);
  if (n == 0 || pfn_out == NULL) return 0;
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t ps = dkt_page_size();
  uint64_t first = (uint64_t)(uintptr_t)va / ps;
  enum { BATCH = 4096 };
  static __thread uint64_t buf[BATCH];
  size_t done = 0;
  while (done < n) {
    size_t want = n - done < BATCH ? n - done : BATCH;
    ssize_t r = pread(fd, buf, want * sizeof(uint64_t), (off_t)((first + done) * sizeof(uint64_t)));
    if (r <= 0 || (size_t)r % sizeof(uint64_t) != 0) {
      if (r < 0 && errno == EINTR) continue;
      close(fd);
      return 0;
    }
    size_t got = (size_t)r / sizeof(uint64_t);
    for (size_t i = 0; i < got; i++)
      pfn_out[done + i] = (buf[i] & PM_PRESENT) ? (buf[i] & PM_PFN_MASK) : 0;
    done += got;
  }
  close(fd);
  return n;
}

uint64_t *dkt_read_frames_alloc(const void *va, size_t len, size_t *count) {
  size_t n = dkt_page_count(va, len);
  if (count) *count = 0;
  if (n == 0) return NULL;
  uint64_t *p = calloc(n, sizeof *p);
  if (!p) return NULL;
  if (dkt_read_frames(va, len, p) != n) {
    free(p);
    return NULL;
  }
  if (count) *count = n;
  return p;
}

bool dkt_pfn_readable(void) {
  size_t ps = dkt_page_size();
  void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  *(volatile char *)p = 1;
  uint64_t pfn = 0;
  bool ok = dkt_read_frames(p, 1, &pfn) == 1 && pfn != 0;
  munmap(p, ps);
  return ok;
}

void dkt_touch_read(const void *va, size_t len) {
  if (len == 0) return;
  size_t ps = dkt_page_size();
  const volatile char *p = va;
  uintptr_t a = (uintptr_t)va;
  uintptr_t end = a + len;
  for (uintptr_t q = a; q < end; q = (q / ps + 1) * ps) (void)p[q - a];
}

uint64_t dkt_expected_segment(const void *va, size_t len, const uint64_t *pfn, size_t offset,
                              uint64_t *run) {
  size_t ps = dkt_page_size();
  uintptr_t base = (uintptr_t)va, base_page = base / ps;
  if (run) *run = 0;
  if (offset >= len) return 0;
  uintptr_t a = base + offset;
  size_t i = a / ps - base_page;
  if (pfn[i] == 0) return 0;
  uint64_t phys = pfn[i] * ps + a % ps;
  /* bytes left in this page, then whole pages while the frames follow each other */
  uint64_t r = ps - a % ps;
  size_t n = dkt_page_count(va, len);
  while (offset + r < len && i + 1 < n && pfn[i + 1] != 0 && pfn[i + 1] == pfn[i] + 1) {
    r += ps;
    i++;
  }
  if (offset + r > len) r = len - offset;
  if (run) *run = r;
  return phys;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t n = strlen(text);
  ssize_t w = write(fd, text, n);
  int err = w == (ssize_t)n ? 0 : (w < 0 ? -errno : -EIO);
  close(fd);
  return err;
}

int dkt_compact_memory(void) { return write_file("/proc/sys/vm/compact_memory", "1\n"); }

long dkt_read_sysctl(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "/proc/sys/%s", name);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  long v = -1;
  if (fscanf(f, "%ld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

static char  *frag_base;
static size_t frag_len;

int dkt_fragment_memory(size_t bytes) {
  size_t ps = dkt_page_size();
  if (frag_base) return -EBUSY;
  bytes = (bytes + ps - 1) / ps * ps;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -errno;
  (void)madvise(p, bytes, MADV_NOHUGEPAGE);   /* 4K pages, so freeing every other page frees */
  char *c = p;
  for (size_t off = 0; off < bytes; off += ps) c[off] = (char)(off / ps | 1);
  for (size_t off = ps; off < bytes; off += 2 * ps) (void)madvise(c + off, ps, MADV_DONTNEED);
  frag_base = c;
  frag_len = bytes;
  return 0;
}

void dkt_unfragment(void) {
  if (frag_base) munmap(frag_base, frag_len);
  frag_base = NULL;
  frag_len = 0;
}

static pid_t g_last_child;

long dkt_last_child_pid(void) { return (long)g_last_child; }

int dkt_run_in_child(void (*fn)(void *), void *arg, int *status) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -errno;
  g_last_child = pid;
  if (pid == 0) {
    /* cmocka catches these in the parent and longjmps into its test; a child must die of
     * them instead, and must not write a core file. */
    static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGABRT };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
    struct rlimit nocore = { 0, 0 };
    (void)setrlimit(RLIMIT_CORE, &nocore);
    fn(arg);
    fflush(stdout);
    fflush(stderr);
    _exit(0);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR) return -errno;
  }
  if (status) *status = st;
  return 0;
}

int dkt_drop_root(void) {
  if (setgroups(0, NULL) != 0) return -errno;
  if (setgid(65534) != 0) return -errno;
  if (setuid(65534) != 0) return -errno;
  if (getuid() != 65534 || geteuid() != 65534) return -EPERM;
  /* setuid made us non-dumpable, which leaves /proc/self owned by root; a real non-root
   * process owns its /proc/self, so restore that. */
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return -errno;
  return 0;
}

static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  char line[256];
  size_t klen = strlen(key);
  long v = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      v = strtol(line + klen + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

long dkt_locked_kb(void) { return status_kb("VmLck"); }
long dkt_pinned_kb(void) { return status_kb("VmPin"); }

bool dkt_mlock_works(void) {
  static int known = -1;
  if (known >= 0) return known;
  size_t len = 16 * dkt_page_size();
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  long before = dkt_locked_kb();
  bool ok = mlock(p, len) == 0 && dkt_locked_kb() >= before + (long)(len / 1024);
  munlock(p, len);
  munmap(p, len);
  known = ok;
  return ok;
}

int dkt_fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    n++;
  }
  closedir(d);
  return n - 1;   /* the directory's own descriptor */
}

static void squash(const char *in, char *out, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; in[i] && j + 1 < cap; i++) {
    if (in[i] == '_') continue;
    out[j++] = (char)tolower((unsigned char)in[i]);
  }
  out[j] = 0;
}

bool dkt_text_has(const char *text, const char *needle) {
  if (!text || !needle) return false;
  char a[1024], b[256];
  squash(text, a, sizeof a);
  squash(needle, b, sizeof b);
  return strstr(a, b) != NULL;
}

bool dkt_all_bytes(const void *p, size_t len, unsigned char c) {
  const unsigned char *q = p;
  for (size_t i = 0; i < len; i++)
    if (q[i] != c) return false;
  return true;
}

void dkt_assert_child_ok(int status) {
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFSIGNALED(status))
    fail_msg("child died from signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    fail_msg("child exited with status %d (see its message above)", WEXITSTATUS(status));
}

/* ---- pool variants ------------------------------------------------------------------------ */
static long pool_saved = -1;

void dkt_require_physical(void)
{
  DKT_REQUIRE_ROOT();
  const dk_caps *caps = dk_capabilities();
  assert_true(caps->pagemap_frames);   /* root, and our own reader sees frames */
  if (caps->pin_method == DK_PIN_NONE && dk_option_get(DK_OPTION_REQUIRE_PIN))
    DKT_SKIP("pin_method NONE: physical addresses are refused (%s); see test_pinning", caps->pin_detail);
}

bool dkt_pool_usable(void) { return dk_capabilities()->pool_usable; }
bool dkt_pool_on(void) { return dkt_pool_usable() && dk_option_get(DK_OPTION_POOL) != 0; }

static int pool_set(long v) {
  if (pool_saved < 0) pool_saved = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, v);
  return 0;
}
int dkt_setup_pool_off(void **state) { (void)state; return pool_set(0); }
int dkt_setup_pool_on(void **state) { (void)state; return pool_set(1); }
int dkt_teardown_pool_restore(void **state) {
  (void)state;
  if (pool_saved >= 0) dk_option_set(DK_OPTION_POOL, pool_saved);
  pool_saved = -1;
  return 0;
}

const char *dkt_check_physical_promise(const void *va, size_t len, uint64_t alignment, uint64_t limit,
                                       bool contiguous) {
  static char why[256];
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &n);
  if (!pfn || n == 0) {
    free(pfn);
    snprintf(why, sizeof why, "pagemap could not be read for %p +%zu", va, len);
    return why;
  }
  size_t ps = dkt_page_size();
  const char *bad = NULL;
  for (size_t i = 0; i < n && !bad; i++) {
    if (pfn[i] == 0) {
      snprintf(why, sizeof why, "page %zu of %zu is not present", i, n);
      bad = why;
    } else if (contiguous && i > 0 && pfn[i] != pfn[i - 1] + 1) {
      snprintf(why, sizeof why, "page %zu at frame 0x%llx does not follow frame 0x%llx: not contiguous", i,
               (unsigned long long)pfn[i], (unsigned long long)pfn[i - 1]);
      bad = why;
    }
  }
  uint64_t start = pfn[0] * ps + (uint64_t)((uintptr_t)va % ps);
  uint64_t a = 1;
  while (a < alignment) a <<= 1;
  if (!bad && start % a != 0) {
    snprintf(why, sizeof why, "physical start 0x%llx is not a multiple of 0x%llx", (unsigned long long)start,
             (unsigned long long)a);
    bad = why;
  }
  if (!bad && limit) {
    uintptr_t last = (uintptr_t)va + len - 1;
    for (size_t i = 0; i < n && !bad; i++) {
      uint64_t end = (i == n - 1) ? pfn[i] * ps + last % ps : (pfn[i] + 1) * ps - 1;
      if (end > limit) {
        snprintf(why, sizeof why, "page %zu (frame 0x%llx) reaches 0x%llx, above the limit 0x%llx", i,
                 (unsigned long long)pfn[i], (unsigned long long)end, (unsigned long long)limit);
        bad = why;
      }
    }
  }
  free(pfn);
  return bad;
}

/* The /proc/self/maps line covering addr: 1 and its path in `path` (may be empty), 0 when
 * nothing is mapped there. */
static int maps_line(const void *addr, char *path, size_t cap)
{
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  char line[1024];
  int found = 0;
  uintptr_t a = (uintptr_t)addr;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    int off = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) < 2) continue;
    if (a >= lo && a < hi) {
      found = 1;
      snprintf(path, cap, "%s", off ? line + off : "");
      break;
    }
  }
  fclose(f);
  return found;
}

bool dkt_is_mapped(const void *addr)
{
  char path[512];
  return maps_line(addr, path, sizeof path) == 1;
}

bool dkt_maps_dmakit(const void *addr)
{
  char path[512];
  return maps_line(addr, path, sizeof path) == 1 && strstr(path, "memfd:dmakit") != NULL;
}

const char *dkt_failure_text(void)
{
  const dk_failure *f = dk_last_failure();
  static char buf[512];
  snprintf(buf, sizeof buf, "code %s (0x%x), constraint %s, \"%s\"", dk_ioreturn_name(f->code),
           (unsigned)f->code, dk_constraint_name(f->constraint), f->text);
  return buf;
}

uint64_t dkt_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int dkt_text_fd(const char *text)
{
  int fd = memfd_create("dkt-text", MFD_CLOEXEC);
  size_t n = strlen(text);
  if (fd < 0) return -1;
  if (write(fd, text, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) != 0) {
    close(fd);
    errno = EIO;
    return -1;
  }
  return fd;
}
