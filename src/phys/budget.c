/* src/phys/budget.c: the memory budget (see budget.h). The first half is pure: parsing the
 * kernel's text and the arithmetic, table-tested in tests/test_budget.c. The second half reads
 * /proc and the cgroup files through src/prim and makes the check providers call. */
#include "phys/budget.h"
#include "phys/huge.h"
#include "prim/prim.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MIB (1ull << 20)

/* ---- pure: arithmetic ------------------------------------------------------------------ */

uint64_t dk__budget_margin(uint64_t total)
{
  uint64_t floor = total / 8 < 16 * MIB ? total / 8 : 16 * MIB;
  return total / 32 > floor ? total / 32 : floor;
}

uint64_t dk__budget_cost(uint64_t bytes, unsigned what)
{
  if (what & DK_BUDGET_HUGETLB) return bytes;
  uint64_t extra = bytes / 64;
  return bytes + extra < bytes ? UINT64_MAX : bytes + extra;
}

static uint64_t sub0(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

void dk__budget_compute(const dk_budget_facts *f, unsigned what, dk_budget *out)
{
  memset(out, 0, sizeof *out);
  out->margin = f->margin_option >= 0 ? (uint64_t)f->margin_option : dk__budget_margin(f->mem_total);
  out->machine = sub0(f->mem_available, out->margin);
  out->room = out->machine;
  out->bind = DK_BUDGET_BY_MACHINE;
  out->cgroup = DK_BUDGET_NONE;
  out->memlock = DK_BUDGET_NONE;
  bool cg_applies = f->cg_limit != DK_BUDGET_NONE && (!(what & DK_BUDGET_HUGETLB) || f->cg_hugetlb);
  if (cg_applies) {
    out->cg_margin = f->margin_option >= 0 ? (uint64_t)f->margin_option : dk__budget_margin(f->cg_limit);
    /* half the cgroup's page cache counts as reclaimable, as MemAvailable counts the machine's */
    uint64_t used = sub0(f->cg_usage, f->cg_file / 2);
    out->cgroup = sub0(sub0(f->cg_limit, used), out->cg_margin);
    if (out->cgroup < out->room) {
      out->room = out->cgroup;
      out->bind = DK_BUDGET_BY_CGROUP;
    }
  }
  if ((what & DK_BUDGET_LOCKED) && f->lock_limited && f->memlock_limit != DK_BUDGET_NONE) {
    out->memlock = sub0(f->memlock_limit, f->locked);
    if (out->memlock < out->room) {
      out->room = out->memlock;
      out->bind = DK_BUDGET_BY_MEMLOCK;
    }
  }
}

const char *dk__budget_size(uint64_t bytes, char *buf, size_t cap)
{
  if (bytes == DK_BUDGET_NONE) snprintf(buf, cap, "unlimited");
  else if (bytes >= (1ull << 30)) snprintf(buf, cap, "%.1f GiB", (double)bytes / (double)(1ull << 30));
  else if (bytes >= MIB) snprintf(buf, cap, "%.1f MiB", (double)bytes / (double)MIB);
  else snprintf(buf, cap, "%.1f KiB", (double)bytes / 1024.0);
  return buf;
}

void dk__budget_describe(const dk_budget_facts *f, const dk_budget *b, char *buf, size_t cap)
{
  char s[6][24];
  int n = snprintf(buf, cap, "the machine can give %s (MemAvailable %s less a %s margin)",
                   dk__budget_size(b->machine, s[0], sizeof s[0]), dk__budget_size(f->mem_available, s[1], sizeof s[1]),
                   dk__budget_size(b->margin, s[2], sizeof s[2]));
  if (n < 0 || (size_t)n >= cap) return;
  if (b->cgroup != DK_BUDGET_NONE) {
    int m = snprintf(buf + n, cap - (size_t)n, "; memory cgroup %.60s: room %s (limit %s, in use %s, %s margin)",
                     f->cg_path, dk__budget_size(b->cgroup, s[0], sizeof s[0]),
                     dk__budget_size(f->cg_limit, s[1], sizeof s[1]), dk__budget_size(f->cg_usage, s[2], sizeof s[2]),
                     dk__budget_size(b->cg_margin, s[3], sizeof s[3]));
    if (m < 0 || (size_t)m >= cap - (size_t)n) return;
    n += m;
  }
  if (b->memlock != DK_BUDGET_NONE)
    snprintf(buf + n, cap - (size_t)n, "; RLIMIT_MEMLOCK %s, %s locked",
             dk__budget_size(f->memlock_limit, s[0], sizeof s[0]), dk__budget_size(f->locked, s[1], sizeof s[1]));
}

/* ---- pure: parsing ------------------------------------------------------------------- */

/* The number after `key` at the start of a line (key includes its ':' where the file has one). */
static int line_value(const char *text, const char *key, uint64_t *out)
{
  size_t klen = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, key, klen) != 0 || (p[klen] != ' ' && p[klen] != '\t')) continue;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p + klen, &end, 10);
    if (end == p + klen || errno) return -1;
    *out = (uint64_t)v;
    return 0;
  }
  return -1;
}

int dk__budget_parse_meminfo(const char *text, uint64_t *total, uint64_t *available)
{
  uint64_t t, a;
  if (line_value(text, "MemTotal:", &t) < 0 || line_value(text, "MemAvailable:", &a) < 0) return -1;
  *total = t << 10;
  *available = a << 10;
  return 0;
}

int dk__budget_stat_value(const char *text, const char *key, uint64_t *out)
{
  return line_value(text, key, out);
}

uint64_t dk__budget_parse_limit(const char *text)
{
  while (*text == ' ') text++;
  if (!strncmp(text, "max", 3)) return DK_BUDGET_NONE;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  /* v1 writes "unlimited" as the page counter's maximum, about 2^63 */
  if (end == text || errno || v >= (1ull << 62)) return DK_BUDGET_NONE;
  return (uint64_t)v;
}

int dk__budget_cgroup_path(const char *text, int version, char *out, size_t cap)
{
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    const char *c1 = strchr(p, ':');
    const char *nl = strchr(p, '\n');
    if (!c1 || (nl && c1 > nl)) continue;
    const char *c2 = strchr(c1 + 1, ':');
    if (!c2 || (nl && c2 > nl)) continue;
    bool match;
    if (version == 2) {
      match = c1 - p == 1 && p[0] == '0' && c2 == c1 + 1;
    } else {
      match = false;               /* a comma-separated controller list naming "memory" */
      for (const char *s = c1 + 1; s < c2;) {
        const char *e = memchr(s, ',', (size_t)(c2 - s));
        if (!e) e = c2;
        if (e - s == 6 && !strncmp(s, "memory", 6)) match = true;
        s = e + 1;
      }
    }
    if (!match) continue;
    size_t len = nl ? (size_t)(nl - (c2 + 1)) : strlen(c2 + 1);
    if (len == 0 || len >= cap) return -1;
    memcpy(out, c2 + 1, len);
    out[len] = '\0';
    return 0;
  }
  return -1;
}

/* The n-th space-separated field of a line (0-based), copied; false if missing. */
static bool field(const char *line, const char *end, int n, char *out, size_t cap)
{
  const char *s = line;
  for (int i = 0; i < n; i++) {
    s = memchr(s, ' ', (size_t)(end - s));
    if (!s) return false;
    s++;
  }
  const char *e = memchr(s, ' ', (size_t)(end - s));
  if (!e) e = end;
  size_t len = (size_t)(e - s);
  if (len == 0 || len >= cap) return false;
  memcpy(out, s, len);
  out[len] = '\0';
  return true;
}

int dk__budget_cgroup_mount(const char *text, int version, char *point, size_t pcap, char *root, size_t rcap,
                            bool *hugetlb)
{
  if (hugetlb) *hugetlb = false;
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    const char *end = strchr(p, '\n');
    if (!end) end = p + strlen(p);
    /* "id parent major:minor root point options [optional...] - fstype source superoptions" */
    const char *dash = strstr(p, " - ");
    if (!dash || dash > end) continue;
    char fstype[16], super[256];
    if (!field(dash + 3, end, 0, fstype, sizeof fstype) || !field(dash + 3, end, 2, super, sizeof super)) continue;
    bool match;
    if (version == 2) {
      match = !strcmp(fstype, "cgroup2");
    } else {
      match = false;
      if (!strcmp(fstype, "cgroup"))
        for (char *save = NULL, *t = strtok_r(super, ",", &save); t; t = strtok_r(NULL, ",", &save))
          if (!strcmp(t, "memory")) match = true;
    }
    if (!match || !field(p, dash, 3, root, rcap) || !field(p, dash, 4, point, pcap)) continue;
    if (version == 2 && hugetlb) *hugetlb = strstr(super, "memory_hugetlb_accounting") != NULL;
    return 0;
  }
  return -1;
}

/* ---- reads ----------------------------------------------------------------------------- */

typedef struct mounts { bool v1, v2, v2_hugetlb; char v1_point[128], v1_root[128], v2_point[128], v2_root[128]; } mounts;
static mounts g_mounts;
static pthread_once_t g_mounts_once = PTHREAD_ONCE_INIT;

static void atfork_child(void);
static void read_mounts(void)
{
  pthread_atfork(NULL, NULL, atfork_child);
  size_t cap = 64 * 1024;
  char *text = dk__malloc(cap);
  if (!text) return;
  if (dk__read_text("/proc/self/mountinfo", text, cap) > 0) {
    mounts *m = &g_mounts;
    m->v2 = dk__budget_cgroup_mount(text, 2, m->v2_point, sizeof m->v2_point, m->v2_root, sizeof m->v2_root,
                                    &m->v2_hugetlb) == 0;
    m->v1 = dk__budget_cgroup_mount(text, 1, m->v1_point, sizeof m->v1_point, m->v1_root, sizeof m->v1_root,
                                    NULL) == 0;
  }
  dk__free(text);
}

static bool read_file(const char *dir, const char *name, char *buf, size_t cap)
{
  char path[512];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return false;
  return dk__read_text(path, buf, cap) > 0;
}

/* Walk from the process's cgroup up to the mount's root, keeping the level with least room. */
static void walk_cgroups(dk_budget_facts *f, int version, const char *point, const char *root, const char *path,
                         bool hugetlb)
{
  char dir[512], txt[4096];
  const char *rel = path;
  size_t rlen = strlen(root);
  /* a namespace's view: the path lies under the mount's root (/ns/a under /ns, not /nsa) */
  if (strcmp(root, "/") != 0 && !strncmp(path, root, rlen) && (path[rlen] == '/' || !path[rlen])) rel = path + rlen;
  if ((size_t)snprintf(dir, sizeof dir, "%s%s", point, rel) >= sizeof dir) return;
  size_t plen = strlen(point);
  for (;;) {
    size_t n = strlen(dir);
    while (n > plen && dir[n - 1] == '/') dir[--n] = '\0';
    uint64_t limit = DK_BUDGET_NONE, usage = 0, file = 0, v;
    if (version == 2) {
      if (read_file(dir, "memory.max", txt, sizeof txt)) limit = dk__budget_parse_limit(txt);
      if (read_file(dir, "memory.high", txt, sizeof txt)) {
        uint64_t high = dk__budget_parse_limit(txt);
        if (high < limit) limit = high;
      }
    } else if (read_file(dir, "memory.limit_in_bytes", txt, sizeof txt)) {
      limit = dk__budget_parse_limit(txt);
    }
    if (limit != DK_BUDGET_NONE &&
        read_file(dir, version == 2 ? "memory.current" : "memory.usage_in_bytes", txt, sizeof txt)) {
      usage = strtoull(txt, NULL, 10);
      if (read_file(dir, "memory.stat", txt, sizeof txt)) {
        const char *act = version == 2 ? "active_file" : "total_active_file";
        const char *inact = version == 2 ? "inactive_file" : "total_inactive_file";
        if (dk__budget_stat_value(txt, act, &v) == 0) file += v;
        if (dk__budget_stat_value(txt, inact, &v) == 0) file += v;
      }
      dk_budget_facts cand = *f;
      cand.cg_limit = limit;
      cand.cg_usage = usage;
      cand.cg_file = file;
      cand.cg_hugetlb = hugetlb;
      dk_budget now, then;
      dk__budget_compute(&cand, 0, &now);
      dk__budget_compute(f, 0, &then);
      if (f->cg_limit == DK_BUDGET_NONE || now.cgroup < then.cgroup) {
        *f = cand;
        f->cg_version = version;
        snprintf(f->cg_path, sizeof f->cg_path, "%s", n > plen ? dir + plen : "/");
      }
    }
    if (n <= plen) break;
    char *slash = strrchr(dir + plen, '/');
    if (!slash) break;
    *slash = '\0';
  }
}

int dk__budget_read(dk_budget_facts *f)
{
  memset(f, 0, sizeof *f);
  f->cg_limit = DK_BUDGET_NONE;
  f->memlock_limit = DK_BUDGET_NONE;
  long mb = dk__option(DK_OPTION_MEMORY_MARGIN_MB);
  f->margin_option = mb >= 0 ? (int64_t)mb << 20 : -1;
  char txt[8192];
  if (dk__read_text("/proc/meminfo", txt, sizeof txt) < 0) return -1;
  if (dk__budget_parse_meminfo(txt, &f->mem_total, &f->mem_available) < 0) {
    errno = EINVAL;
    return -1;
  }
  /* locked memory: CAP_IPC_LOCK (bit 14 of CapEff) lifts RLIMIT_MEMLOCK */
  if (dk__read_text("/proc/self/status", txt, sizeof txt) > 0) {
    const char *cap = strstr(txt, "CapEff:");
    unsigned long long eff = cap ? strtoull(cap + 7, NULL, 16) : 0;
    f->lock_limited = !(eff & (1ull << 14));
    uint64_t kb;
    const char *lck = strstr(txt, "\nVmLck:");
    if (lck && dk__budget_stat_value(lck + 1, "VmLck:", &kb) == 0) f->locked = kb << 10;
  }
  struct rlimit rl;
  if (f->lock_limited && dk__getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    f->memlock_limit = rl.rlim_cur;
  /* the memory cgroup, v2 then v1 (a hybrid machine has the controller in one of them) */
  pthread_once(&g_mounts_once, read_mounts);
  if ((g_mounts.v1 || g_mounts.v2) && dk__read_text("/proc/self/cgroup", txt, sizeof txt) > 0) {
    char path[256];
    if (g_mounts.v2 && dk__budget_cgroup_path(txt, 2, path, sizeof path) == 0)
      walk_cgroups(f, 2, g_mounts.v2_point, g_mounts.v2_root, path, g_mounts.v2_hugetlb);
    if (g_mounts.v1 && dk__budget_cgroup_path(txt, 1, path, sizeof path) == 0)
      walk_cgroups(f, 1, g_mounts.v1_point, g_mounts.v1_root, path, false);
  }
  return 0;
}

/* ---- the check ------------------------------------------------------------------------- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dk_budget_facts g_facts;        /* the last read */
static bool     g_valid;
static uint64_t g_read_ms, g_spent;    /* when, and what was admitted on it since */
static uint64_t g_released, g_released_ms;
static _Atomic uint64_t g_step;

#define CACHE_MS   100
/* Memory given back through an io_uring unpin returns to the kernel late on some kernels (6.1
 * frees unregistered buffers from delayed work, a second later): a request refused for want
 * of memory released that recently waits for it, this long at most. */
#define RELEASE_MS 2000

static void atfork_child(void) { g_valid = false; }

void dk__budget_forget(void)
{
  pthread_mutex_lock(&g_lock);
  g_valid = false;
  g_released = 0;
  pthread_mutex_unlock(&g_lock);
}

static uint64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

void dk__budget_note_release(uint64_t bytes)
{
  pthread_mutex_lock(&g_lock);
  uint64_t t = now_ms();
  if (t - g_released_ms > RELEASE_MS) g_released = 0;
  g_released += bytes;
  g_released_ms = t;
  pthread_mutex_unlock(&g_lock);
}

/* Read now into the cache; false (failure recorded) if the figures cannot be read. */
static bool refresh_locked(const char *purpose)
{
  if (dk__budget_read(&g_facts) < 0) {
    g_valid = false;
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
             "%s: the memory budget cannot be read (/proc/meminfo: %s), so nothing is populated", purpose,
             strerror(errno));
    return false;
  }
  g_valid = true;
  g_read_ms = now_ms();
  g_spent = 0;
  return true;
}

/* Memory unpinned moments ago may still be on its way back to the kernel: when it could cover
 * `shortfall`, wait a little (the lock released meanwhile) and say so; the caller reads again. */
static bool wait_for_release_locked(uint64_t shortfall)
{
  if (now_ms() - g_released_ms > RELEASE_MS || g_released < shortfall) return false;
  pthread_mutex_unlock(&g_lock);
  dk__sleep_ms(20);
  pthread_mutex_lock(&g_lock);
  return true;
}

bool dk__budget_check(uint64_t bytes, unsigned what, bool fresh, const char *purpose)
{
  uint64_t cost = dk__budget_cost(bytes, what);
  dk_budget b;
  pthread_mutex_lock(&g_lock);
  if (!fresh && g_valid && now_ms() - g_read_ms < CACHE_MS) {
    dk__budget_compute(&g_facts, what, &b);
    if (g_spent + cost <= b.room / 16) {
      g_spent += cost;
      pthread_mutex_unlock(&g_lock);
      return true;
    }
  }
  for (;;) {
    if (!refresh_locked(purpose)) {
      pthread_mutex_unlock(&g_lock);
      return false;
    }
    dk__budget_compute(&g_facts, what, &b);
    if (cost <= b.room) {
      g_spent = cost;
      pthread_mutex_unlock(&g_lock);
      return true;
    }
    if (b.bind != DK_BUDGET_BY_MACHINE || !wait_for_release_locked(cost - b.room)) break;
  }
  char fig[260], asked[24];
  dk__budget_describe(&g_facts, &b, fig, sizeof fig);
  pthread_mutex_unlock(&g_lock);
  dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "%s: %s asked; %s", purpose,
           dk__budget_size(bytes, asked, sizeof asked), fig);
  return false;
}

/* Hugepages the pool can take without new memory: free persistent ones not yet promised. */
static uint64_t free_hugepages(uint64_t page)
{
  dk_huge_counts k;
  if (dk__huge_counts(page, &k) < 0 || k.free - k.resv <= 0) return 0;
  return (uint64_t)(k.free - k.resv);
}

bool dk__budget_admit(uint64_t bytes, uint64_t pool_free)
{
  if (bytes < DK_BUDGET_ADMIT_MIN) return true;
  const dk_caps *caps = dk__caps();
  unsigned what = caps->pagemap_frames ? DK_BUDGET_LOCKED : 0;
  dk_budget b4, bh;
  dk_budget_facts f;
  bool pool = caps->pool_usable && dk__option(DK_OPTION_POOL);
  uint64_t spare = 0;                  /* free persistent hugepages: no new memory */
  for (uint32_t i = 0; pool && i < caps->hugepage_size_count; i++)
    spare += free_hugepages(caps->hugepage_sizes[i]) * caps->hugepage_sizes[i];
  uint64_t cost = dk__budget_cost(bytes, what), huge = 0;
  pthread_mutex_lock(&g_lock);
  bool cached = g_valid && now_ms() - g_read_ms < CACHE_MS, fits = false, readable = true;
  for (int round = 0;; round++) {
    if ((round > 0 || !cached) && !(readable = refresh_locked("admitting a buffer"))) break;
    dk__budget_compute(&g_facts, what, &b4);
    dk__budget_compute(&g_facts, DK_BUDGET_HUGETLB, &bh);
    /* the most any provider could give: 4K pages, or hugepages (new, free persistent ones,
     * and what the pool holds free) */
    huge = pool ? pool_free + spare + bh.room : 0;
    if (cost <= b4.room || bytes <= huge) {
      fits = true;
      break;
    }
    if (round == 0 && cached) continue;          /* read now before refusing */
    if (!wait_for_release_locked(cost - (huge > b4.room ? huge : b4.room))) break;
  }
  f = g_facts;
  pthread_mutex_unlock(&g_lock);
  if (fits) return true;
  if (!readable) return false;
  char fig[260], asked[24], held[24];
  dk__budget_describe(&f, &b4, fig, sizeof fig);
  dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "%s asked, more than can be had: %s%s%s",
           dk__budget_size(bytes, asked, sizeof asked), fig,
           pool ? "; hugepages, free and held by the pool: " : "",
           pool ? dk__budget_size(huge - bh.room, held, sizeof held) : "");
  return false;
}

uint32_t dk__budget_huge_fit(uint64_t page, uint32_t need, uint32_t want)
{
  uint64_t spare = free_hugepages(page);
  dk_budget_facts f;
  if (dk__budget_read(&f) < 0) return 0;
  dk_budget b;
  dk__budget_compute(&f, DK_BUDGET_HUGETLB, &b);
  uint64_t can = spare + b.room / page;
  if (can >= want) return want;
  return can >= need ? (uint32_t)can : 0;
}

bool dk__budget_huge_check(uint64_t page, uint32_t n, const char *purpose)
{
  uint64_t spare = free_hugepages(page);
  if (spare >= n) return true;
  return dk__budget_check((n - spare) * page, DK_BUDGET_HUGETLB, true, purpose);
}

void dk__budget_describe_now(unsigned what, char *buf, size_t cap)
{
  dk_budget_facts f;
  dk_budget b;
  if (dk__budget_read(&f) < 0) {
    snprintf(buf, cap, "the memory budget cannot be read");
    return;
  }
  dk__budget_compute(&f, what, &b);
  dk__budget_describe(&f, &b, buf, cap);
}

#define STEP_DEFAULT (64ull * MIB)
uint64_t dk__budget_step(void)
{
  uint64_t s = g_step;
  return s ? s : STEP_DEFAULT;
}
void dk__budget_set_step(uint64_t bytes) { g_step = bytes; }
