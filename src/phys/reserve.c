/* src/phys/reserve.c: reservations (dmakit/reserve.h): the search that finds 2 MiB hugepages
 * below a mask and keeps exactly those in a hugetlbfs file past the process, the table that
 * records them, the estimate of what a search must hold, recovery after a search that died, and
 * release. How processes draw pages from a reservation is claim.c.
 *
 * The search raises nr_hugepages in steps, maps each step's new pages into a search file on
 * dmakit's hugetlbfs mount, reads their frames and keeps those below the mask; at the end it
 * punches out the rest and lowers nr_hugepages by them, so that the kernel's count is what it
 * was plus the pages kept. A journal (<run>/reserve/search) says what a running search raised,
 * so the next search or release undoes a search that was killed. */
#include "phys/reserve.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define P2 DK_RESERVE_PAGE
#define NR_PATH   "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
#define STEP_MAX  64u                 /* pages per nr_hugepages step (128 MiB) */

/* ---- paths ---------------------------------------------------------------------------------- */
static const char *run_dir(void)
{
  const char *e = getenv("DMAKIT_RESERVE_DIR");
  return e && *e ? e : "/run/dmakit";
}

static bool join(char *buf, size_t cap, const char *sub, const char *file)
{
  int n = snprintf(buf, cap, "%s/%s%s%s", run_dir(), sub, file ? "/" : "", file ? file : "");
  return n > 0 && (size_t)n < cap;
}
bool dk__rsv_path(char *buf, size_t cap, const char *file) { return join(buf, cap, "reserve", file); }
bool dk__rsv_mount_path(char *buf, size_t cap, const char *file) { return join(buf, cap, "hugetlbfs-2M", file); }
void dk__rsv_name(char *buf, size_t cap, uint64_t mask) { snprintf(buf, cap, "mask-0x%llx", (unsigned long long)mask); }

static void pages_file(char *buf, size_t cap, uint64_t mask, uint32_t gen)
{
  char name[40], file[64];
  dk__rsv_name(name, sizeof name, mask);
  snprintf(file, sizeof file, "%s.%u.pages", name, gen);
  dk__rsv_mount_path(buf, cap, file);
}

static int make_dirs(void)
{
  char p[512];
  if (dk__mkdir(run_dir(), 0755) < 0 && errno != EEXIST) return -1;
  if (!dk__rsv_path(p, sizeof p, NULL) || (dk__mkdir(p, 0700) < 0 && errno != EEXIST)) return -1;
  if (!dk__rsv_mount_path(p, sizeof p, NULL) || (dk__mkdir(p, 0700) < 0 && errno != EEXIST)) return -1;
  return 0;
}

/* dmakit's own hugetlbfs mount for 2 MiB pages, mounted when missing. */
static bool ensure_mount(void)
{
  char p[512];
  struct statfs fs;
  if (make_dirs() < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "cannot make %s/{reserve,hugetlbfs-2M}: %s", run_dir(),
             strerror(errno));
    return false;
  }
  dk__rsv_mount_path(p, sizeof p, NULL);
  if (dk__statfs(p, &fs) == 0 && (unsigned long)fs.f_type == (unsigned long)HUGETLBFS_MAGIC) return true;
  if (dk__mount("dmakit", p, "hugetlbfs", 0, "pagesize=2M,mode=0700") < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "mounting hugetlbfs (pagesize=2M) on %s failed: %s", p,
             strerror(errno));
    return false;
  }
  return true;
}

/* ---- the table ------------------------------------------------------------------------------- */
void dk__rsv_free(dk_rtable *t)
{
  for (uint32_t i = 0; i < t->n; i++) dk__free(t->r[i].pages);
  memset(t, 0, sizeof *t);
}

int dk__rsv_read(dk_rtable *t)
{
  memset(t, 0, sizeof *t);
  char path[512];
  struct stat st;
  dk__rsv_path(path, sizeof path, "table");
  if (dk__lstat(path, &st) < 0) {
    if (errno == ENOENT) return 0;
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  size_t cap = (size_t)st.st_size + 64;
  char *buf = dk__malloc(cap);
  if (!buf) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory to read %s", path);
    return -1;
  }
  if (dk__read_text(path, buf, cap) < 0) {
    int e = errno;
    dk__free(buf);
    if (e == ENOENT) return 0;                   /* released meanwhile */
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "cannot read %s: %s", path, strerror(e));
    return -1;
  }
  int rc = 0;
  dk_rsv *cur = NULL;
  uint32_t filled = 0;
  for (char *line = buf, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    unsigned long long a, b, c, d;
    if (sscanf(line, "R %llx %lld %llu %llu", &a, (long long *)&b, &c, &d) == 4) {
      if (t->n == DK_RESERVE_MAX || (cur && filled != cur->npages) || d > (1u << 24)) { rc = -1; break; }
      cur = &t->r[t->n++];
      cur->mask = a;
      cur->created = (int64_t)b;
      cur->next_gen = (uint32_t)c;
      cur->npages = (uint32_t)d;
      filled = 0;
      if (d && !(cur->pages = dk__calloc(d, sizeof *cur->pages))) {
        dk__free(buf);
        dk__rsv_free(t);
        dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for %llu reserved pages", d);
        return -1;
      }
    } else if (sscanf(line, "P %llu %llx %llx", &a, &b, &c) == 3) {
      if (!cur || filled == cur->npages) { rc = -1; break; }
      cur->pages[filled++] = (dk_rpage){ (uint32_t)a, b, c };
    } else if (strncmp(line, "dmakit-reservations 1", 21) != 0) {
      rc = -1;
      break;
    }
  }
  if (!rc && cur && filled != cur->npages) rc = -1;
  dk__free(buf);
  if (rc) {
    dk__rsv_free(t);
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "%s is not a dmakit reservation table", path);
  }
  return rc;
}

/* Replace the table (atomically: a new file renamed over the old); an empty table removes it. */
static int table_write(const dk_rtable *t)
{
  char path[512], tmp[520];
  dk__rsv_path(path, sizeof path, "table");
  if (t->n == 0) return dk__unlink(path) < 0 && errno != ENOENT ? -1 : 0;
  size_t cap = 64;
  for (uint32_t i = 0; i < t->n; i++) cap += 96 + (size_t)t->r[i].npages * 56;
  char *buf = dk__malloc(cap);
  if (!buf) return -1;
  size_t len = (size_t)snprintf(buf, cap, "dmakit-reservations 1\n");
  for (uint32_t i = 0; i < t->n; i++) {
    const dk_rsv *r = &t->r[i];
    len += (size_t)snprintf(buf + len, cap - len, "R %llx %lld %u %u\n", (unsigned long long)r->mask,
                            (long long)r->created, r->next_gen, r->npages);
    for (uint32_t k = 0; k < r->npages; k++)
      len += (size_t)snprintf(buf + len, cap - len, "P %u %llx %llx\n", r->pages[k].gen,
                              (unsigned long long)r->pages[k].off, (unsigned long long)r->pages[k].frame);
  }
  snprintf(tmp, sizeof tmp, "%s.new", path);
  int fd = dk__open_mode(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ssize_t w = fd < 0 ? -1 : dk__write(fd, buf, len);
  int e = errno;
  if (fd >= 0) dk__close(fd);
  dk__free(buf);
  if (w != (ssize_t)len || dk__rename(tmp, path) < 0) {
    if (w == (ssize_t)len) e = errno;
    dk__unlink(tmp);
    errno = w >= 0 && w != (ssize_t)len ? EIO : e;
    return -1;
  }
  return 0;
}

static dk_rsv *table_find(dk_rtable *t, uint64_t mask)
{
  for (uint32_t i = 0; i < t->n; i++)
    if (t->r[i].mask == mask) return &t->r[i];
  return NULL;
}

/* ---- locks ------------------------------------------------------------------------------------ */
int dk__rsv_lock_open(void)
{
  char p[512];
  if (make_dirs() < 0 || !dk__rsv_path(p, sizeof p, "lock")) return -1;
  return dk__open_mode(p, O_RDWR | O_CREAT, 0600);
}

int dk__rsv_lock(int fd, short type, uint64_t at, uint64_t len, bool wait)
{
  struct flock l;
  memset(&l, 0, sizeof l);
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = (off_t)at;
  l.l_len = (off_t)len;
  for (int i = 0;; i++) {
    int r = dk__fcntl_lock(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &l);
    if (r == 0 || errno != EINTR || i >= DK_EINTR_RETRIES) return r;
  }
}

int dk__rsv_locked(int fd, uint64_t at)
{
  struct flock l;
  memset(&l, 0, sizeof l);
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_start = (off_t)at;
  l.l_len = 1;
  if (dk__fcntl_lock(fd, F_OFD_GETLK, &l) < 0) return -1;
  return l.l_type != F_UNLCK;
}

/* Pages of reservation r that live processes hold now; -1 when it cannot be told. */
static long claimed_pages(const dk_rsv *r)
{
  char name[40], file[64], p[512];
  dk__rsv_name(name, sizeof name, r->mask);
  snprintf(file, sizeof file, "%s.claims", name);
  dk__rsv_path(p, sizeof p, file);
  int fd = dk__open(p, O_RDWR);
  if (fd < 0) return errno == ENOENT ? 0 : -1;
  long n = 0;
  for (uint32_t i = 0; i < r->npages && n >= 0; i++) {
    int k = dk__rsv_locked(fd, i);
    n = k < 0 ? -1 : n + k;
  }
  dk__close(fd);
  return n;
}

/* ---- the kernel's hugepage count -------------------------------------------------------------- */
/* Persistent 2 MiB pages: nr_hugepages reads back persistent + surplus pages, and writing it sets
 * the persistent count. Raising it while surplus pages exist (another process's pool) first makes
 * those persistent; lowering it below the pages in use makes in-use pages surplus again. So every
 * count here is persistent, and what a search raised is given back as such. */
static long persistent(const dk_huge_counts *k) { return k->nr - (k->surplus > 0 ? k->surplus : 0); }

static long nr_now(void)
{
  dk_huge_counts k;
  return dk__huge_counts_settled(P2, &k) < 0 ? -1 : persistent(&k);
}

static int nr_set(long nr)
{
  char txt[32];
  snprintf(txt, sizeof txt, "%ld\n", nr > 0 ? nr : 0);
  return dk__write_text(NR_PATH, txt);
}

/* Lower nr_hugepages by n (never below zero): pages dmakit raised and no longer keeps. What the
 * kernel's count could not be lowered by (a failed write) is owed, and paid at this process's
 * next reservation call or at its exit. */
static pthread_mutex_t g_owed_lock = PTHREAD_MUTEX_INITIALIZER;
static long g_owed;
/* A raise whose result could not be read back: the persistent count before it, and the most it
 * raised. Settled (from the count read later) with what is owed. */
static long g_pending_p0 = -1, g_pending_step;

static void nr_lower_pending(long n, long p0, long step)
{
  pthread_mutex_lock(&g_owed_lock);
  if (p0 >= 0) {
    g_pending_p0 = p0;
    g_pending_step = step;
  }
  n += g_owed;
  g_owed = 0;
  long nr = nr_now();
  if (nr >= 0 && g_pending_p0 >= 0) {
    long r = nr - g_pending_p0;
    n += r < 0 ? 0 : r > g_pending_step ? g_pending_step : r;
    g_pending_p0 = -1;
  }
  if (n > 0 && (nr < 0 || nr_set(nr - n) < 0)) g_owed = n;
  pthread_mutex_unlock(&g_owed_lock);
}

static void nr_lower(long n) { nr_lower_pending(n, -1, 0); }

static void pay_owed(void) { nr_lower(0); }
/* What is still owed is paid when the library goes (the process exits, or the library is
 * unloaded). A destructor, not atexit: an atexit handler of an unloaded library would be called
 * after its code is gone. Nothing owed, nothing read. */
__attribute__((destructor)) static void pay_owed_at_exit(void)
{
  pthread_mutex_lock(&g_owed_lock);
  bool owed = g_owed > 0 || g_pending_p0 >= 0;
  pthread_mutex_unlock(&g_owed_lock);
  if (owed) pay_owed();
}

/* Pages of nr_hugepages this process still owes the kernel (tests). */
long dk__reserve_owed(void)
{
  pthread_mutex_lock(&g_owed_lock);
  long n = g_owed + (g_pending_p0 >= 0 ? 1 : 0);
  pthread_mutex_unlock(&g_owed_lock);
  return n;
}

/* ---- the journal of a running search ---------------------------------------------------------- */
static int journal_write(long raised, uint64_t mask, uint32_t gen)
{
  char p[512], txt[96];
  dk__rsv_path(p, sizeof p, "search");
  int fd = dk__open_mode(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  int n = snprintf(txt, sizeof txt, "%d %ld %llx %u\n", (int)getpid(), raised, (unsigned long long)mask, gen);
  ssize_t w = dk__write(fd, txt, (size_t)n);
  dk__close(fd);
  return w == n ? 0 : -1;
}

static void journal_remove(void)
{
  char p[512];
  dk__rsv_path(p, sizeof p, "search");
  dk__unlink(p);
}

static void search_file(char *buf, size_t cap, int pid)
{
  char file[48];
  snprintf(file, sizeof file, "search.%d.pages", pid);
  dk__rsv_mount_path(buf, cap, file);
}

/* Undo a search that died (called with the admin lock, so none is running): its files go and
 * nr_hugepages comes down by what it had raised, unless its result reached the table. */
static void recover(void)
{
  char p[512], txt[96];
  dk__rsv_path(p, sizeof p, "search");
  if (dk__read_text(p, txt, sizeof txt) <= 0) return;
  int pid;
  long raised;
  unsigned long long mask;
  unsigned gen;
  if (sscanf(txt, "%d %ld %llx %u", &pid, &raised, &mask, &gen) == 4) {
    dk_rtable t;
    bool committed = false;
    if (dk__rsv_read(&t) == 0) {
      dk_rsv *r = table_find(&t, mask);
      for (uint32_t i = 0; r && i < r->npages; i++) committed |= r->pages[i].gen == gen;
      dk__rsv_free(&t);
    }
    if (!committed) {
      char f[512];
      search_file(f, sizeof f, pid);
      dk__unlink(f);
      pages_file(f, sizeof f, mask, gen);
      dk__unlink(f);
      nr_lower(raised);
    }
  }
  journal_remove();
}

/* ---- the estimate ---------------------------------------------------------------------------- */
typedef struct zone {
  char     name[16];
  int      index;                    /* in its node: DMA 0, DMA32 1, Normal 2, ... */
  uint64_t start, end;               /* bytes */
  long     free, low;
  long     prot[8];
} zone;

static int read_zones(zone *z, int max)
{
  size_t cap = 1 << 20;
  char *buf = dk__malloc(cap);
  if (!buf) return -1;
  int n = 0, idx = -1, cur_node = -1;
  zone *cur = NULL;
  uint64_t spanned = 0, page = dk__caps()->page_size;
  if (dk__read_text("/proc/zoneinfo", buf, cap) <= 0) { dk__free(buf); return -1; }
  for (char *line = buf, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    int node;
    char name[16];
    unsigned long long v;
    while (*line == ' ') line++;
    if (sscanf(line, "Node %d, zone %15s", &node, name) == 2) {
      idx = node == cur_node ? idx + 1 : 0;          /* each node's zones are numbered from 0 */
      cur_node = node;
      cur = n < max ? &z[n++] : NULL;
      if (cur) {
        memset(cur, 0, sizeof *cur);
        snprintf(cur->name, sizeof cur->name, "%s", name);
        cur->index = idx;
      }
      spanned = 0;
    } else if (!cur) {
      continue;
    } else if (sscanf(line, "pages free %llu", &v) == 1) {
      cur->free = (long)v;
    } else if (sscanf(line, "low %llu", &v) == 1) {
      cur->low = (long)v;
    } else if (sscanf(line, "spanned %llu", &v) == 1) {
      spanned = v;
    } else if (!strncmp(line, "protection: (", 13)) {
      char *s = line + 13;
      for (int k = 0; k < 8 && *s && *s != ')'; k++) {
        cur->prot[k] = strtol(s, &s, 10);
        while (*s == ',' || *s == ' ') s++;
      }
    } else if (sscanf(line, "start_pfn: %llu", &v) == 1) {
      cur->start = v * page;
      cur->end = (v + spanned) * page;
    }
  }
  dk__free(buf);
  return n;
}

static long long meminfo_kb(const char *key)
{
  char buf[4096];
  if (dk__read_text("/proc/meminfo", buf, sizeof buf) <= 0) return -1;
  char *p = strstr(buf, key);
  return p ? strtoll(p + strlen(key) + 1, NULL, 10) : -1;
}

static void fill_bounds(const dk_reserve_bounds *b, dk_reserve_cost *e)
{
  long long total = meminfo_kb("MemTotal"), avail = meminfo_kb("MemAvailable");
  e->available = avail > 0 ? (uint64_t)avail << 10 : 0;
  uint64_t kf = total > 0 ? ((uint64_t)total << 10) / 16 : 0;
  e->keep_free = b && b->keep_free ? b->keep_free : (kf > (128ull << 20) ? kf : 128ull << 20);
  e->max_hold = b && b->max_hold ? b->max_hold : (e->available > e->keep_free ? e->available - e->keep_free : 0);
  e->max_seconds = b && b->max_seconds ? b->max_seconds : 300;
}

static const char *mib(char buf[24], uint64_t bytes)
{
  snprintf(buf, 24, "%llu MiB", (unsigned long long)(bytes >> 20));
  return buf;
}

/* Fill e for growing to `bytes` when `have` is held; 0, or -1 (failure recorded). */
static int estimate(uint64_t mask, uint64_t bytes, uint64_t have, const dk_reserve_bounds *b, dk_reserve_cost *e)
{
  memset(e, 0, sizeof *e);
  e->mask = mask;
  e->bytes = bytes;
  e->have = have;
  uint64_t want = (bytes + P2 - 1) / P2 * P2;
  e->need = want > have ? want - have : 0;
  fill_bounds(b, e);
  zone z[16];
  int nz = read_zones(z, 16);
  if (nz <= 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "/proc/zoneinfo cannot be read");
    return -1;
  }
  /* hugepages are GFP_HIGHUSER: served from the highest of DMA, DMA32, Normal first; a lower
   * zone gives only what lies above its low watermark plus its protection for that class */
  int top = 0;
  for (int i = 0; i < nz; i++)
    if ((!strcmp(z[i].name, "DMA") || !strcmp(z[i].name, "DMA32") || !strcmp(z[i].name, "Normal")) &&
        z[i].end > z[i].start && z[i].index > top)
      top = z[i].index;
  const uint64_t page = dk__caps()->page_size, limit = mask + 1;
  double above = 0, cut = 0, below = 0;
  for (int i = 0; i < nz; i++) {
    const zone *w = &z[i];
    if (w->end <= w->start || w->index > top || !strcmp(w->name, "Movable") || !strcmp(w->name, "Device")) continue;
    long usable = w->free - w->low - (w->index < top ? w->prot[top] : 0);
    if (usable <= 0) continue;
    double bytes_usable = (double)usable * (double)page;
    if (w->start >= limit) above += bytes_usable;
    else if (w->end <= limit) below += bytes_usable;
    else {
      double f = (double)(limit - w->start) / (double)(w->end - w->start);
      below += bytes_usable * f;
      cut += bytes_usable * (1 - f);
    }
  }
  e->free_above = (uint64_t)above / P2 * P2;
  e->free_cut = (uint64_t)cut / P2 * P2;
  e->free_below = (uint64_t)below / P2 * P2;
  e->hold = e->need ? e->free_above + e->need : 0;
  e->hold_max = e->need ? e->free_above + e->free_cut + e->need : 0;
  char a[24], c[24], d[24], f[24], g[24], h[24];
  int n = snprintf(e->text, sizeof e->text,
                   "below mask 0x%llx: %s reserved, %s to find, %s free below it; the search holds at least %s "
                   "(free above the mask) and up to %s (%s more in the zone the mask cuts)",
                   (unsigned long long)mask, mib(a, have), mib(c, e->need), mib(f, e->free_below), mib(g, e->hold),
                   mib(h, e->hold_max), mib(d, e->free_cut));
  e->fits = true;
  if (e->need == 0) return 0;
  if (e->free_below < e->need) {
    e->fits = false;
    snprintf(e->text + n, sizeof e->text - (size_t)n, "; too little free below the mask (%s of %s)",
             mib(a, e->free_below), mib(c, e->need));
  } else if (e->hold + e->keep_free > e->available) {
    e->fits = false;
    snprintf(e->text + n, sizeof e->text - (size_t)n, "; that would leave less than %s of %s available",
             mib(a, e->keep_free), mib(c, e->available));
  } else if (e->hold > e->max_hold) {
    e->fits = false;
    snprintf(e->text + n, sizeof e->text - (size_t)n, "; more than the bound on what it may hold (%s)",
             mib(a, e->max_hold));
  }
  return 0;
}

static bool mask_ok(uint64_t mask) { return mask >= (1ull << 22) - 1 && dk__is_pow2(mask + 1); }

static IOReturn check_args(uint64_t mask, uint64_t bytes)
{
  if (!mask_ok(mask))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "mask 0x%llx is not 2^n - 1 with n >= 22 (a reservation is of 2 MiB pages below a limit)",
                    (unsigned long long)mask);
  if (bytes == 0 || bytes > (1ull << 46))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "size %llu is 0 or too large",
                    (unsigned long long)bytes);
  return kIOReturnSuccess;
}

IOReturn dk_reserve_estimate(uint64_t mask, uint64_t bytes, const dk_reserve_bounds *bounds, dk_reserve_cost *out)
{
  dk__enter("dk_reserve_estimate");
  if (!out) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "estimate is NULL");
  IOReturn rc = check_args(mask, bytes);
  if (rc) return rc;
  dk_rtable t;
  if (dk__rsv_read(&t) < 0) return dk__failure_code();
  dk_rsv *r = table_find(&t, mask);
  uint64_t have = r ? (uint64_t)r->npages * P2 : 0;
  dk__rsv_free(&t);
  return estimate(mask, bytes, have, bounds, out) < 0 ? dk__failure_code() : kIOReturnSuccess;
}

/* ---- the search --------------------------------------------------------------------------------- */
typedef struct search {
  uint64_t mask, need_pages;
  dk_reserve_cost est;
  dk_reserve_progress_fn fn;
  void *arg;
  int fd;                       /* the search file */
  uint32_t n;                   /* pages in it */
  long raised;                  /* what nr_hugepages was raised by */
  long step_raised;             /* ... in the last step (surplus pages made persistent count) */
  long pend_p0, pend_step;      /* a step whose raise could not be read back (pend_p0 >= 0) */
  uint32_t gen;
  uint64_t *keep_off, *keep_frame;
  uint32_t nkeep;
  uint64_t lowest;
  double t0;
} search;

static double now_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One step: up to `step` new pages into the search file, their frames read, the low ones kept.
 * Returns the pages added (0: the kernel had none), -1 on an error (failure recorded). */
static long search_step(search *s, uint32_t step)
{
  dk_huge_counts k0, k1;
  if (dk__huge_counts_settled(P2, &k0) < 0 || nr_set(persistent(&k0) + step) < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "raising %s failed: %s", NR_PATH, strerror(errno));
    return -1;
  }
  if (dk__huge_counts_settled(P2, &k1) < 0) {   /* raised by up to `step`: settled when it can be read */
    s->pend_p0 = persistent(&k0);
    s->pend_step = step;
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "reading %s back failed: %s", NR_PATH, strerror(errno));
    return -1;
  }
  /* surplus pages made persistent count as raised: lowering gives them back as surplus */
  s->step_raised = persistent(&k1) > persistent(&k0) ? persistent(&k1) - persistent(&k0) : 0;
  s->raised += s->step_raised;
  if (journal_write(s->raised, s->mask, s->gen) < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "writing the search journal failed: %s", strerror(errno));
    return -1;
  }
  long got = (k1.free - k1.resv) - (k0.free - k0.resv);
  if (got <= 0) return 0;
  if ((uint64_t)got > step) got = step;
  /* Another process may take some of the new free pages before they are mapped (the mapping
   * reserves its pages, or fails with ENOMEM): then fewer are mapped, down to none (an empty
   * step, as if the kernel had had none). */
  uint64_t off = (uint64_t)s->n * P2, len;
  uint8_t *va;
  for (;; got--) {
    len = (uint64_t)got * P2;
    if (dk__ftruncate(s->fd, (off_t)(off + len)) < 0) {
      dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "growing the search file failed: %s", strerror(errno));
      return -1;
    }
    va = dk__mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, (off_t)off);
    if (va != MAP_FAILED || errno != ENOMEM || got == 1) break;
  }
  if (va == MAP_FAILED && errno == ENOMEM) return 0;
  if (va == MAP_FAILED) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "mapping %ld new hugepages failed: %s", got, strerror(errno));
    return -1;
  }
  uint64_t *pfn = dk__calloc((size_t)got, sizeof *pfn);
  int rc = pfn ? dk__madvise(va, (size_t)len, MADV_POPULATE_WRITE) : -1;
  for (long i = 0; rc == 0 && i < got; i++) {
    rc = dk__pagemap_frames((uintptr_t)(va + (uint64_t)i * P2), 1, &pfn[i]);
    if (rc == 0 && pfn[i] == 0) { rc = -1; errno = EPERM; }
  }
  int e = errno;
  dk__munmap(va, (size_t)len);
  if (rc < 0) {
    dk__free(pfn);
    dk__fail(pfn ? kIOReturnNoMemory : kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
             "populating or reading the frames of %ld new hugepages failed: %s", got, strerror(e));
    return -1;
  }
  for (long i = 0; i < got; i++) {
    uint64_t pa = pfn[i] << dk__caps()->page_shift;
    if (!s->lowest || pa < s->lowest) s->lowest = pa;
    if (pa + P2 - 1 <= s->mask && s->nkeep < s->need_pages) {
      s->keep_off[s->nkeep] = off + (uint64_t)i * P2;
      s->keep_frame[s->nkeep++] = pa;
    }
  }
  dk__free(pfn);
  s->n += (uint32_t)got;
  return got;
}

/* Punch every page of the search file but the kept ones; returns how many went. */
static long punch_rest(search *s)
{
  long gone = 0;
  for (uint32_t i = 0; i < s->n; i++) {
    uint64_t off = (uint64_t)i * P2;
    bool kept = false;
    for (uint32_t k = 0; k < s->nkeep && !kept; k++) kept = s->keep_off[k] == off;
    if (!kept && dk__fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)P2) == 0) gone++;
  }
  return gone;
}

static bool report(search *s, uint64_t hold_limit)
{
  if (!s->fn) return true;
  dk_reserve_progress p = { (uint64_t)s->n * P2, (uint64_t)s->nkeep * P2, s->need_pages * P2, hold_limit, s->lowest,
                            now_s() - s->t0 };
  return s->fn(&p, s->arg);
}

/* Add the kept pages to the table (under the table lock). */
static int commit(search *s, int lockfd)
{
  char from[512], to[512];
  search_file(from, sizeof from, (int)getpid());
  pages_file(to, sizeof to, s->mask, s->gen);
  if (dk__rename(from, to) < 0) return -1;
  if (dk__rsv_lock(lockfd, F_WRLCK, DK_RSV_LOCK_TABLE, 1, true) < 0) return -1;
  dk_rtable t;
  int rc = -1;
  if (dk__rsv_read(&t) == 0) {
    dk_rsv *r = table_find(&t, s->mask);
    if (!r && t.n < DK_RESERVE_MAX) {
      r = &t.r[t.n++];
      memset(r, 0, sizeof *r);
      r->mask = s->mask;
      r->created = (int64_t)time(NULL);
    }
    dk_rpage *pages = r ? dk__calloc((size_t)r->npages + s->nkeep, sizeof *pages) : NULL;
    if (pages) {
      if (r->npages) memcpy(pages, r->pages, r->npages * sizeof *pages);
      for (uint32_t k = 0; k < s->nkeep; k++) pages[r->npages + k] = (dk_rpage){ s->gen, s->keep_off[k], s->keep_frame[k] };
      dk__free(r->pages);
      r->pages = pages;
      r->npages += s->nkeep;
      r->next_gen = s->gen + 1;
      rc = table_write(&t);
    }
    dk__rsv_free(&t);
  }
  int e = errno;
  dk__rsv_lock(lockfd, F_UNLCK, DK_RSV_LOCK_TABLE, 1, false);
  if (rc < 0) dk__rename(to, from);
  errno = e;
  return rc;
}

static IOReturn run_search(search *s, int lockfd)
{
  char path[512];
  search_file(path, sizeof path, (int)getpid());
  s->fd = dk__open_mode(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (s->fd < 0)
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "creating %s failed: %s", path, strerror(errno));
  IOReturn rc = kIOReturnSuccess;
  const uint64_t hold_limit = s->est.max_hold;
  int empty = 0;
  const char *why = NULL;
  s->t0 = now_s();
  while (s->nkeep < s->need_pages) {
    if (!report(s, hold_limit)) { rc = kIOReturnAborted; break; }
    uint64_t held = (uint64_t)s->n * P2;
    long long avail = meminfo_kb("MemAvailable");
    uint64_t room = held < hold_limit ? (hold_limit - held) / P2 : 0;
    if (avail >= 0 && (uint64_t)avail << 10 > s->est.keep_free) {
      uint64_t spare = (((uint64_t)avail << 10) - s->est.keep_free) / P2;
      if (spare < room) room = spare;
    } else {
      room = 0;
    }
    if (room == 0) { why = "it reached its bound on memory held (--max-hold / --keep-free)"; break; }
    if (now_s() - s->t0 >= s->est.max_seconds) { why = "it ran out of time (--max-seconds)"; break; }
    /* big steps where memory must be drained, small ones where a few pages may do */
    uint64_t left = s->need_pages - s->nkeep, step = left < 8 ? 8 : left > STEP_MAX ? STEP_MAX : left;
    if (s->est.free_above > (uint64_t)s->n * P2) step = STEP_MAX;
    if (step > room) step = room;
    long got = search_step(s, (uint32_t)step);
    if (got < 0) { rc = dk__failure_code(); break; }
    /* a step that only made other processes' surplus pages persistent is no sign of the end */
    empty = got == 0 && s->step_raised == 0 ? empty + 1 : 0;
    if (empty >= 3) { why = "the kernel had no more 2 MiB pages to give"; break; }
  }
  report(s, hold_limit);
  /* everything not kept goes back now: punched out of the file, then off nr_hugepages */
  punch_rest(s);
  if (rc == kIOReturnSuccess && !why && s->nkeep >= s->need_pages) {
    long extra = s->raised - (long)s->nkeep;
    nr_lower(extra > 0 ? extra : 0);
    s->raised = s->raised < (long)s->nkeep ? s->raised : (long)s->nkeep;
    journal_write(s->raised, s->mask, s->gen);
    dk__close(s->fd);
    s->fd = -1;
    if (commit(s, lockfd) < 0)
      rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "recording the reservation failed: %s", strerror(errno));
  } else if (rc == kIOReturnSuccess) {
    char a[24], b[24], c[24];
    rc = dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK,
                  "the search for %s below mask 0x%llx found %s after holding %s for %.1f s (lowest frame seen 0x%llx): "
                  "%s; everything is given back",
                  mib(a, s->need_pages * P2), (unsigned long long)s->mask, mib(b, (uint64_t)s->nkeep * P2),
                  mib(c, (uint64_t)s->n * P2), now_s() - s->t0, (unsigned long long)s->lowest, why ? why : "stopped");
  } else if (rc == kIOReturnAborted) {
    dk__fail(kIOReturnAborted, DK_CONSTRAINT_RESOURCE, "the search was stopped after holding %llu MiB; everything is given back",
             (unsigned long long)((uint64_t)s->n * P2 >> 20));
  }
  if (rc != kIOReturnSuccess) {            /* the whole file goes, and all that was raised */
    char f[512];
    if (s->fd >= 0) dk__close(s->fd);
    s->fd = -1;
    dk__unlink(path);
    pages_file(f, sizeof f, s->mask, s->gen);
    dk__unlink(f);
    nr_lower_pending(s->raised, s->pend_p0, s->pend_step);
  }
  journal_remove();
  return rc;
}

IOReturn dk_reserve_create(uint64_t mask, uint64_t bytes, const dk_reserve_bounds *bounds, dk_reserve_progress_fn fn,
                           void *arg)
{
  dk__enter("dk_reserve_create");
  pay_owed();
  IOReturn rc = check_args(mask, bytes);
  if (rc) return rc;
  if (!dk__caps()->root || !dk__caps()->pagemap_frames)
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE, "a reservation needs root (frame numbers, nr_hugepages)");
  dk_huge_counts k;
  if (dk__huge_counts(P2, &k) < 0)
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the kernel has no 2 MiB hugepages");
  int lockfd = dk__rsv_lock_open();
  if (lockfd < 0)
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "cannot open the reservation lock under %s: %s",
                    run_dir(), strerror(errno));
  if (dk__rsv_lock(lockfd, F_WRLCK, DK_RSV_LOCK_ADMIN, 1, false) < 0) {
    int e = errno;
    dk__close(lockfd);
    if (e == EAGAIN || e == EACCES)
      return dk__fail(kIOReturnBusy, DK_CONSTRAINT_RESOURCE, "another reservation search or release is running");
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "locking the reservations failed: %s", strerror(e));
  }
  recover();
  search s;
  memset(&s, 0, sizeof s);
  s.fd = -1;
  s.pend_p0 = -1;
  dk_rtable t;
  if (!ensure_mount() || dk__rsv_read(&t) < 0) {
    rc = dk__failure_code();
    goto out;
  }
  dk_rsv *r = table_find(&t, mask);
  uint64_t have = r ? (uint64_t)r->npages * P2 : 0;
  s.gen = r ? r->next_gen : 0;
  bool full = !r && t.n == DK_RESERVE_MAX;
  dk__rsv_free(&t);
  if (full) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "there are already %d reservations", DK_RESERVE_MAX);
    goto out;
  }
  if (estimate(mask, bytes, have, bounds, &s.est) < 0) {
    rc = dk__failure_code();
    goto out;
  }
  if (s.est.need == 0) goto out;
  if (!s.est.fits) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_MASK, "not searched: %s", s.est.text);
    goto out;
  }
  s.mask = mask;
  s.need_pages = s.est.need / P2;
  s.fn = fn;
  s.arg = arg;
  s.keep_off = dk__calloc(s.need_pages, sizeof *s.keep_off);
  s.keep_frame = dk__calloc(s.need_pages, sizeof *s.keep_frame);
  if (!s.keep_off || !s.keep_frame) {
    rc = dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the search's page lists");
    goto out;
  }
  rc = run_search(&s, lockfd);
out:
  dk__free(s.keep_off);
  dk__free(s.keep_frame);
  dk__close(lockfd);
  return rc;
}

/* ---- list, pages, release --------------------------------------------------------------------------- */
static void sort_table(dk_rtable *t)
{
  for (uint32_t i = 1; i < t->n; i++)
    for (uint32_t j = i; j > 0 && t->r[j - 1].mask > t->r[j].mask; j--) {
      dk_rsv x = t->r[j];
      t->r[j] = t->r[j - 1];
      t->r[j - 1] = x;
    }
}

/* The start of list and pages: the arguments, then the table, narrowest mask first. */
static IOReturn read_for(const char *function, const void *out, size_t capacity, size_t *count, dk_rtable *t)
{
  dk__enter(function);
  if (!count || (capacity && !out))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "count is NULL, or out is NULL with a capacity");
  if (dk__rsv_read(t) < 0) return dk__failure_code();
  sort_table(t);
  return kIOReturnSuccess;
}

IOReturn dk_reserve_list(dk_reserve_info *out, size_t capacity, size_t *count)
{
  dk_rtable t;
  IOReturn rc = read_for("dk_reserve_list", out, capacity, count, &t);
  if (rc) return rc;
  *count = t.n;
  for (uint32_t i = 0; i < t.n && i < capacity; i++) {
    const dk_rsv *r = &t.r[i];
    dk_reserve_info *o = &out[i];
    memset(o, 0, sizeof *o);
    o->mask = r->mask;
    o->page_size = P2;
    o->pages = r->npages;
    long c = claimed_pages(r);
    o->pages_claimed = c > 0 ? (uint32_t)c : 0;
    o->created = r->created;
    for (uint32_t k = 0; k < r->npages; k++) {
      if (!o->lowest || r->pages[k].frame < o->lowest) o->lowest = r->pages[k].frame;
      if (r->pages[k].frame > o->highest) o->highest = r->pages[k].frame;
    }
  }
  dk__rsv_free(&t);
  return kIOReturnSuccess;
}

static int by_frame(const void *a, const void *b)
{
  const dk_reserve_page *x = a, *y = b;
  if (x->mask != y->mask) return x->mask < y->mask ? -1 : 1;
  return x->frame < y->frame ? -1 : x->frame > y->frame;
}

IOReturn dk_reserve_pages(dk_reserve_page *out, size_t capacity, size_t *count)
{
  dk_rtable t;
  IOReturn rc = read_for("dk_reserve_pages", out, capacity, count, &t);
  if (rc) return rc;
  size_t n = 0;
  for (uint32_t i = 0; i < t.n; i++) {
    const dk_rsv *r = &t.r[i];
    char name[40], file[64], p[512];
    dk__rsv_name(name, sizeof name, r->mask);
    snprintf(file, sizeof file, "%s.claims", name);
    dk__rsv_path(p, sizeof p, file);
    int fd = dk__open(p, O_RDWR);
    for (uint32_t k = 0; k < r->npages; k++, n++)
      if (n < capacity) out[n] = (dk_reserve_page){ r->mask, r->pages[k].frame, fd >= 0 && dk__rsv_locked(fd, k) > 0 };
    if (fd >= 0) dk__close(fd);
  }
  dk__rsv_free(&t);
  *count = n;
  if (out && capacity) qsort(out, n < capacity ? n : capacity, sizeof *out, by_frame);
  return kIOReturnSuccess;
}

IOReturn dk_reserve_release(uint64_t mask)
{
  dk__enter("dk_reserve_release");
  pay_owed();
  if (mask && !mask_ok(mask))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "mask 0x%llx is not 2^n - 1 with n >= 22",
                    (unsigned long long)mask);
  if (!dk__caps()->root)
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE, "releasing a reservation needs root");
  int lockfd = dk__rsv_lock_open();
  if (lockfd < 0)
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "cannot open the reservation lock under %s: %s",
                    run_dir(), strerror(errno));
  IOReturn rc = kIOReturnSuccess;
  if (dk__rsv_lock(lockfd, F_WRLCK, DK_RSV_LOCK_ADMIN, 1, false) < 0) {
    rc = dk__fail(kIOReturnBusy, DK_CONSTRAINT_RESOURCE, "a reservation search is running");
    goto out;
  }
  recover();
  if (dk__rsv_lock(lockfd, F_WRLCK, DK_RSV_LOCK_TABLE, 1, true) < 0) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "locking the reservation table failed: %s", strerror(errno));
    goto out;
  }
  dk_rtable t;
  if (dk__rsv_read(&t) < 0) {
    rc = dk__failure_code();
    goto out;
  }
  bool found = false;
  for (uint32_t i = 0; i < t.n && rc == kIOReturnSuccess; i++) {
    if (mask && t.r[i].mask != mask) continue;
    found = true;
    long c = claimed_pages(&t.r[i]);
    if (c < 0)
      rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                    "the claims on the reservation below mask 0x%llx cannot be read: %s",
                    (unsigned long long)t.r[i].mask, strerror(errno));
    else if (c > 0)
      rc = dk__fail(kIOReturnBusy, DK_CONSTRAINT_RESOURCE,
                    "%ld of the %u pages reserved below mask 0x%llx are held by running processes", c,
                    t.r[i].npages, (unsigned long long)t.r[i].mask);
  }
  if (rc == kIOReturnSuccess && !found) {
    if (mask) rc = dk__fail(kIOReturnNotFound, DK_CONSTRAINT_ARGUMENT, "there is no reservation below mask 0x%llx",
                            (unsigned long long)mask);
    else rc = dk__fail(kIOReturnNotFound, DK_CONSTRAINT_ARGUMENT, "there are no reservations");
  }
  if (rc == kIOReturnSuccess) {
    dk_rtable keep;
    memset(&keep, 0, sizeof keep);
    long pages = 0;
    for (uint32_t i = 0; i < t.n; i++)
      if (mask && t.r[i].mask != mask) keep.r[keep.n++] = t.r[i];
    /* the table first: if it cannot be rewritten, nothing is gone */
    if (table_write(&keep) < 0) {
      rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "rewriting the reservation table failed: %s",
                    strerror(errno));
    } else {
      for (uint32_t i = 0; i < t.n; i++) {
        if (mask && t.r[i].mask != mask) continue;
        for (uint32_t g = 0; g < t.r[i].next_gen; g++) {
          char f[512];
          pages_file(f, sizeof f, t.r[i].mask, g);
          dk__unlink(f);
        }
        pages += t.r[i].npages;
      }
      nr_lower(pages);
      if (keep.n == 0) {
        char p[512];
        dk__rsv_mount_path(p, sizeof p, NULL);
        dk__umount(p);
      }
    }
  }
  dk__rsv_free(&t);
out:
  dk__close(lockfd);
  return rc;
}
