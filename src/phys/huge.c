/* src/phys/huge.c: hugepage reservations and chunks (see huge.h). */
#include "phys/huge.h"
#include "base/fork.h"
#include "prim/prim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RUN_DIR "/run/dmakit"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
/* What this process raised, by size: index 0 = 2 MiB (overcommit), 1 = 1 GiB (nr_hugepages). */
static long g_raised[2];

static int size_index(uint64_t page) { return page >= (1ull << 30) ? 1 : 0; }

static void sysfs_path(char *buf, size_t cap, uint64_t page, const char *file)
{
  snprintf(buf, cap, "/sys/kernel/mm/hugepages/hugepages-%llukB/%s", (unsigned long long)(page >> 10), file);
}

static long read_long(const char *path)
{
  char txt[32];
  if (dk__read_text(path, txt, sizeof txt) <= 0) return -1;
  return strtol(txt, NULL, 10);
}

static int write_long(const char *path, long v)
{
  int fd = dk__open(path, O_WRONLY);
  if (fd < 0) return -1;
  char txt[32];
  int n = snprintf(txt, sizeof txt, "%ld\n", v);
  ssize_t w = dk__write(fd, txt, (size_t)n);
  int e = errno;
  dk__close(fd);
  errno = e;
  return w == n ? 0 : -1;
}

int dk__huge_sizes(uint64_t *sizes, int max)
{
  static const uint64_t known[] = { 1ull << 21, 1ull << 30 };
  int n = 0;
  for (size_t i = 0; i < sizeof known / sizeof known[0] && n < max; i++) {
    char p[128];
    sysfs_path(p, sizeof p, known[i], "nr_hugepages");
    if (read_long(p) >= 0) sizes[n++] = known[i];
  }
  return n;
}

/* One reading of the five counts; -1 when nr_hugepages cannot be read. */
static int read_counts(uint64_t page, dk_huge_counts *o)
{
  char p[128];
  sysfs_path(p, sizeof p, page, "nr_hugepages");          o->nr = read_long(p);
  sysfs_path(p, sizeof p, page, "free_hugepages");        o->free = read_long(p);
  sysfs_path(p, sizeof p, page, "resv_hugepages");        o->resv = read_long(p);
  sysfs_path(p, sizeof p, page, "surplus_hugepages");     o->surplus = read_long(p);
  sysfs_path(p, sizeof p, page, "nr_overcommit_hugepages"); o->overcommit = read_long(p);
  return o->nr < 0 ? -1 : 0;
}

/* The counts are separate files, and the kernel changes them between any two reads: a surplus
 * page freed (unmapped, or a dead process's pages released from a workqueue after its exit)
 * lowers nr_hugepages and surplus_hugepages together, so nr and surplus read apart can disagree
 * by the pages freed between them, and nr - surplus (the persistent pages, which is what
 * writing nr_hugepages sets) is off by as much. So the counts are read until two readings in a
 * row agree; while they keep moving (COUNT_TRIES readings), the last is taken. */
#define COUNT_TRIES 200

static bool counts_equal(const dk_huge_counts *a, const dk_huge_counts *b)
{
  return a->nr == b->nr && a->free == b->free && a->resv == b->resv && a->surplus == b->surplus &&
         a->overcommit == b->overcommit;
}

int dk__huge_counts(uint64_t page, dk_huge_counts *o)
{
  dk_huge_counts prev;
  if (read_counts(page, &prev) < 0) return -1;
  for (int i = 0; i < COUNT_TRIES; i++) {
    if (read_counts(page, o) < 0) return -1;
    if (counts_equal(o, &prev)) return 0;
    prev = *o;
  }
  return 0;
}

/* The counts held still: three whole readings, a millisecond apart, that agree (within about
 * 60 ms; then the last). Whole readings still see states the kernel passes through where
 * nr_hugepages counts a page that is neither persistent nor surplus (a hugepage being migrated
 * is a temporary page counted in nr_hugepages), and a persistent count computed from one and
 * written back would keep that page. Used where a count is written back: reservations. */
int dk__huge_counts_settled(uint64_t page, dk_huge_counts *o)
{
  dk_huge_counts prev;
  if (dk__huge_counts(page, &prev) < 0) return -1;
  for (int i = 0, agree = 0; i < 60 && agree < 2; i++) {
    dk__sleep_ms(1);
    if (dk__huge_counts(page, o) < 0) return -1;
    agree = counts_equal(o, &prev) ? agree + 1 : 0;
    prev = *o;
  }
  *o = prev;
  return 0;
}

/* ---- records of raised limits, for processes that die before giving them back ---------------- */
/* A process killed holding hugepages cannot give back the limit it raised: nr_overcommit_hugepages
 * for 2 MiB pages (its surplus pages go back to the kernel at its death, but the limit stays),
 * nr_hugepages for 1 GiB pages (gigantic pages cannot be surplus pages). Each raise is recorded
 * in /run/dmakit under the process's pid, and the next dmakit process gives back the limits of
 * processes that died. */
static const char *const record_name[2] = { "overcommit", "gigantic" };
static const char *const record_limit[2] = { "nr_overcommit_hugepages", "nr_hugepages" };
static const uint64_t record_page[2] = { 1ull << 21, 1ull << 30 };

static void record_path(char *buf, size_t cap, int idx, pid_t pid)
{
  snprintf(buf, cap, RUN_DIR "/%s.%d", record_name[idx], (int)pid);
}

static void record_write(int idx, long pages)
{
  char path[64];
  record_path(path, sizeof path, idx, getpid());
  if (pages <= 0) { dk__unlink(path); return; }
  dk__mkdir(RUN_DIR, 0700);
  int fd = dk__open_mode(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  char txt[32];
  int n = snprintf(txt, sizeof txt, "%ld\n", pages);
  (void)dk__write(fd, txt, (size_t)n);
  dk__close(fd);
}

/* ---- the limits are every process's ---------------------------------------------------------- */
/* A raise or a give-back reads a limit and writes it back: two processes doing so at once would
 * lose one's change (both raise from the same value; one lowers what the other just raised).
 * So each is made under an exclusive lock on /run/dmakit/limits.lock, an open-file-description
 * lock the kernel drops when the process dies, taken as root only (only root changes limits).
 * Where it cannot be had, the change is made without it. */
static int limits_lock(void)
{
  dk__mkdir(RUN_DIR, 0700);
  int fd = dk__open_mode(RUN_DIR "/limits.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  struct flock l;
  memset(&l, 0, sizeof l);
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  for (int i = 0; i < 16; i++) {
    if (dk__fcntl_lock(fd, F_OFD_SETLKW, &l) == 0) return fd;
    if (errno != EINTR) break;
  }
  dk__close(fd);
  return -1;
}

static void limits_unlock(int fd)
{
  if (fd >= 0) dk__close(fd);
}

void dk__huge_reclaim_dead(void)
{
  if (geteuid() != 0) return;
  DIR *d = dk__opendir(RUN_DIR);
  if (!d) return;
  int lk = limits_lock();
  const char *name;
  while ((name = dk__readdir(d))) {
    int pid = 0, idx = -1;
    for (int i = 0; i < 2 && idx < 0; i++) {
      size_t len = strlen(record_name[i]);
      if (!strncmp(name, record_name[i], len) && sscanf(name + len, ".%d", &pid) == 1) idx = i;
    }
    if (idx < 0 || pid <= 0 || pid == (int)getpid()) continue;
    if (dk__kill(pid, 0) == 0 || errno != ESRCH) continue;   /* still alive */
    char path[64], p[128];
    record_path(path, sizeof path, idx, pid);
    long pages = read_long(path);
    /* whoever removes the record gives its pages back: two processes starting at once do not
     * both lower the limit */
    if (dk__unlink(path) < 0 || pages <= 0) continue;
    sysfs_path(p, sizeof p, record_page[idx], record_limit[idx]);
    long cur = read_long(p);
    if (cur >= 0) write_long(p, cur - pages > 0 ? cur - pages : 0);
  }
  limits_unlock(lk);
  dk__closedir(d);
}

/* When the library goes (the process exits, or the library is unloaded), give back every
 * limit this process raised. Pages still mapped then become surplus pages, which the kernel
 * frees as the process's mappings go. A destructor, not atexit: an atexit handler of an
 * unloaded library would be called after its code is gone. */
__attribute__((destructor)) static void give_back_at_exit(void)
{
  dk__huge_give_back(1ull << 21, dk__huge_raised(1ull << 21));
  dk__huge_give_back(1ull << 30, dk__huge_raised(1ull << 30));
}

static pthread_once_t g_reclaim_once = PTHREAD_ONCE_INIT;

/* In a forked child: the limits were raised by the parent, which gives them back. */
static void huge_in_child(void)
{
  pthread_mutex_init(&g_lock, NULL);
  g_raised[0] = g_raised[1] = 0;
}

static void first_use(void)
{
  dk__huge_reclaim_dead();
  dk__fork_register(DK_FORK_HUGE, huge_in_child);
}

bool dk__huge_make_room(uint64_t page, long n, long cap_pages, long *raised)
{
  *raised = 0;
  pthread_once(&g_reclaim_once, first_use);
  dk_huge_counts k;
  if (dk__huge_counts(page, &k) < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the kernel has no %llu KiB hugepages",
             (unsigned long long)(page >> 10));
    return false;
  }
  long avail = k.free - k.resv;
  int idx = size_index(page);
  if (avail >= n) return true;
  if (geteuid() != 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
             "%ld free %llu KiB hugepages, %ld needed; reserving more needs root", avail,
             (unsigned long long)(page >> 10), n);
    return false;
  }
  pthread_mutex_lock(&g_lock);
  int lk = limits_lock();
  bool ok = false;
  char p[128];
  /* read again under the lock: the limit written below is this reading's plus what is needed */
  if (dk__huge_counts(page, &k) < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the kernel has no %llu KiB hugepages",
             (unsigned long long)(page >> 10));
    goto out;
  }
  avail = k.free - k.resv;
  if (avail >= n) {
    ok = true;
    goto out;
  }
  long need = n - avail;
  if (g_raised[idx] + need > cap_pages) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
             "%ld more %llu KiB hugepages would pass dmakit's cap of %ld (DMAKIT_POOL_MAX_MB)", need,
             (unsigned long long)(page >> 10), cap_pages);
    goto out;
  }
  if (idx == 0) {
    /* surplus pages: allocated when mapped, returned to the kernel when freed or at death */
    sysfs_path(p, sizeof p, page, "nr_overcommit_hugepages");
    long want = k.surplus + need > k.overcommit ? k.surplus + need : k.overcommit;
    if (want > k.overcommit && write_long(p, want) < 0) {
      dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "raising %s failed: %s", p, strerror(errno));
      goto out;
    }
    g_raised[idx] += want - k.overcommit;
    *raised = want - k.overcommit;
    if (*raised) record_write(idx, g_raised[idx]);
    ok = true;
  } else {
    sysfs_path(p, sizeof p, page, "nr_hugepages");
    if (write_long(p, k.nr + need) < 0 && errno != ENOMEM) {
      dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "raising %s failed: %s", p, strerror(errno));
      goto out;
    }
    long got = read_long(p) - k.nr;          /* the kernel gives what it can find */
    if (got > 0) {
      g_raised[idx] += got;
      *raised = got;
      record_write(idx, g_raised[idx]);
    }
    if (got < need) {
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
               "the kernel found %ld of %ld more 1 GiB pages (memory too fragmented)", got > 0 ? got : 0, need);
      goto out;
    }
    ok = true;
  }
out:
  limits_unlock(lk);
  pthread_mutex_unlock(&g_lock);
  return ok;
}

void dk__huge_give_back(uint64_t page, long n)
{
  int idx = size_index(page);
  pthread_mutex_lock(&g_lock);
  if (n > g_raised[idx]) n = g_raised[idx];
  if (n > 0) {
    dk_huge_counts k;
    char p[128];
    int lk = limits_lock();
    if (dk__huge_counts(page, &k) == 0) {
      sysfs_path(p, sizeof p, page, idx == 0 ? "nr_overcommit_hugepages" : "nr_hugepages");
      long cur = idx == 0 ? k.overcommit : k.nr;
      if (write_long(p, cur - n > 0 ? cur - n : 0) == 0) {
        g_raised[idx] -= n;
        record_write(idx, g_raised[idx]);
      }
    }
    limits_unlock(lk);
  }
  pthread_mutex_unlock(&g_lock);
}

long dk__huge_raised(uint64_t page)
{
  pthread_mutex_lock(&g_lock);
  long n = g_raised[size_index(page)];
  pthread_mutex_unlock(&g_lock);
  return n;
}

/* ---- chunks -------------------------------------------------------------------------- */

typedef struct order { uint64_t pa, off; } order;

static int by_pa(const void *a, const void *b)
{
  uint64_t x = ((const order *)a)->pa, y = ((const order *)b)->pa;
  return x < y ? -1 : x > y;
}

static void chunk_free_arrays(dk_hchunk *c)
{
  dk__free(c->pa);
  dk__free(c->off);
  dk__free(c->runs);
  c->pa = c->off = NULL;
  c->runs = NULL;
}

void dk__hchunk_destroy(dk_hchunk *c)
{
  for (uint32_t i = 0; i < c->nruns; i++) {
    dk__unpin(&c->runs[i].pin);
    if (c->runs[i].va) dk__munmap(c->runs[i].va, (size_t)c->runs[i].len);
  }
  if (c->fd >= 0) dk__close(c->fd);
  if (c->claim_fd >= 0) dk__close(c->claim_fd);
  chunk_free_arrays(c);
  memset(c, 0, sizeof *c);
  c->fd = c->claim_fd = -1;
}

/* Populating is the kernel allocating and zeroing every page: most of a chunk's cost. Large
 * chunks are populated by two threads, each half of the range. */
typedef struct populate_job { uint8_t *va; size_t len; int err; } populate_job;

static void *populate_half(void *arg)
{
  populate_job *j = arg;
  j->err = dk__madvise(j->va, j->len, MADV_POPULATE_WRITE) < 0 ? errno : 0;
  return NULL;
}

static int populate(uint8_t *va, uint64_t page, uint32_t npages)
{
  size_t total = (size_t)(page * npages);
  pthread_t helper;
  uint32_t first = npages / 2;
  populate_job second = { va + (size_t)(page * first), total - (size_t)(page * first), 0 };
  if (total < (64u << 20) || dk__thread_create(&helper, populate_half, &second) != 0)
    return dk__madvise(va, total, MADV_POPULATE_WRITE);
  int rc = dk__madvise(va, (size_t)(page * first), MADV_POPULATE_WRITE), e = errno;
  dk__thread_join(helper);
  if (rc < 0) { errno = e; return -1; }
  if (second.err) { errno = second.err; return -1; }
  return 0;
}

bool dk__hchunk_create(dk_hchunk *c, uint64_t page, uint32_t npages)
{
  const uint64_t total = page * npages;
  unsigned flag = page >= (1ull << 30) ? MFD_HUGE_1GB : MFD_HUGE_2MB;
  int fd = dk__memfd_create("dmakit-pool", MFD_CLOEXEC | MFD_HUGETLB | flag);
  if (fd < 0) {
    memset(c, 0, sizeof *c);
    c->fd = c->claim_fd = -1;
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "hugetlb memfd_create failed: %s", strerror(errno)), false;
  }
  uint64_t *offs = dk__calloc(npages, sizeof *offs);
  if (!offs || dk__ftruncate(fd, (off_t)total) < 0) {
    if (offs) dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "sizing a hugetlb memfd to %llu bytes failed: %s",
                       (unsigned long long)total, strerror(errno));
    else dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the offsets of %u hugepages", npages);
    dk__free(offs);
    dk__close(fd);
    memset(c, 0, sizeof *c);
    c->fd = c->claim_fd = -1;
    return false;
  }
  for (uint32_t i = 0; i < npages; i++) offs[i] = (uint64_t)i * page;
  bool ok = dk__hchunk_adopt(c, fd, page, npages, offs);
  dk__free(offs);
  return ok;
}

/* Map pages of `fd` at offsets[0..n) one after another at a fresh address (pages whose offsets
 * follow each other with one call). A shared hugetlb mapping reserves its pages here, so a
 * shortage is ENOMEM now, never SIGBUS. MAP_FAILED with errno. */
static uint8_t *map_pages(int fd, uint64_t page, uint32_t n, const uint64_t *offsets)
{
  size_t total = (size_t)(page * n);
  uint8_t *va = dk__reserve_aligned(total, page, 0);
  if (!va) return MAP_FAILED;
  for (uint32_t k = 0; k < n;) {
    uint32_t m = k + 1;
    while (m < n && offsets[m] == offsets[m - 1] + page) m++;
    if (dk__mmap(va + (uint64_t)k * page, (size_t)((uint64_t)(m - k) * page), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED, fd, (off_t)offsets[k]) == MAP_FAILED) {
      int e = errno;
      dk__munmap(va, total);
      errno = e;
      return MAP_FAILED;
    }
    k = m;
  }
  return va;
}

bool dk__hchunk_adopt(dk_hchunk *c, int fd, uint64_t page, uint32_t npages, const uint64_t *offsets)
{
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->claim_fd = -1;
  c->page = page;
  c->npages = npages;
  const uint64_t total = page * npages;
  order *ord = NULL;
  uint8_t *tmp = map_pages(fd, page, npages, offsets);
  if (tmp == MAP_FAILED) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "%u hugepages of %llu KiB could not be reserved: %s",
             npages, (unsigned long long)(page >> 10), strerror(errno));
    goto fail;
  }
  if (populate(tmp, page, npages) < 0) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "populating %u hugepages failed: %s", npages,
             strerror(errno));
    goto fail;
  }
  /* one frame per hugepage: the pagemap entry of its first 4K */
  uint64_t *pfn = dk__calloc(npages, sizeof *pfn);
  ord = dk__calloc(npages, sizeof *ord);
  c->pa = dk__calloc(npages, sizeof *c->pa);
  c->off = dk__calloc(npages, sizeof *c->off);
  c->runs = dk__calloc(npages, sizeof *c->runs);
  if (!pfn || !ord || !c->pa || !c->off || !c->runs) {
    dk__free(pfn);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the frame table of %u hugepages", npages);
    goto fail;
  }
  for (uint32_t i = 0; i < npages; i++) {
    if (dk__pagemap_frames((uintptr_t)(tmp + (uint64_t)i * page), 1, &pfn[i]) < 0 || pfn[i] == 0) {
      dk__free(pfn);
      dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PRIVILEGE, "the frame of hugepage %u is unknown: %s", i,
               dk__caps()->pagemap_frames ? "not present" : "frame numbers need root");
      goto fail;
    }
    ord[i].pa = pfn[i] << dk__caps()->page_shift;
    ord[i].off = offsets[i];
  }
  dk__free(pfn);
  qsort(ord, npages, sizeof *ord, by_pa);
  for (uint32_t i = 0; i < npages; i++) {
    c->pa[i] = ord[i].pa;
    c->off[i] = ord[i].off;
  }
  dk__free(ord);
  ord = NULL;
  /* runs of physically adjacent pages, each mapped in physical order */
  for (uint32_t i = 0; i < npages;) {
    uint32_t j = i + 1;
    while (j < npages && c->pa[j] == c->pa[j - 1] + page) j++;
    dk_hrun *r = &c->runs[c->nruns];
    r->pin = DK_PIN_INIT;
    r->pa = c->pa[i];
    r->len = (uint64_t)(j - i) * page;
    r->first = i;
    /* placed so that va == pa (mod DK_HUGE_ALIGN) */
    uint8_t *va = dk__reserve_aligned((size_t)r->len, DK_HUGE_ALIGN, r->pa & (DK_HUGE_ALIGN - 1));
    if (!va) {
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no address space for a %llu-byte run: %s",
               (unsigned long long)r->len, strerror(errno));
      goto fail;
    }
    for (uint32_t k = i; k < j; k++) {
      /* pages whose file offsets follow each other are mapped with one call */
      uint32_t m = k + 1;
      while (m < j && c->off[m] == c->off[m - 1] + page) m++;
      if (dk__mmap(va + (uint64_t)(k - i) * page, (size_t)((uint64_t)(m - k) * page), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED, c->fd, (off_t)c->off[k]) == MAP_FAILED) {
        int e = errno;
        dk__munmap(va, (size_t)r->len);
        dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "mapping a hugepage run failed: %s", strerror(e));
        goto fail;
      }
      k = m - 1;
    }
    r->va = va;
    c->nruns++;
    if (dk__caps()->pin_method == DK_PIN_IO_URING && dk__pin(r->va, (size_t)r->len, &r->pin) < 0) {
      dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PIN, "pinning a %llu-byte hugepage run failed: %s",
               (unsigned long long)r->len, strerror(errno));
      goto fail;
    }
    i = j;
  }
  dk__munmap(tmp, (size_t)total);
  return true;
fail:
  if (tmp != MAP_FAILED) dk__munmap(tmp, (size_t)total);
  dk__free(ord);
  dk__hchunk_destroy(c);
  return false;
}

void *dk__hchunk_map(const dk_hchunk *c, const dk_hrun *r, uint64_t pa, uint64_t len, int prot,
                     size_t guard, void *fixed, bool overwrite, void **base, size_t *span)
{
  uint64_t page = c->page;
  uint64_t first = (pa - r->pa) / page, last = (pa + len - 1 - r->pa) / page;
  uint64_t bytes = (last - first + 1) * page;
  size_t g = guard ? (size_t)((guard + page - 1) / page * page) : 0;   /* guards in whole pages */
  size_t total = (size_t)bytes + 2 * g;
  uint8_t *res;
  if (fixed) {
    int how = overwrite ? MAP_FIXED : MAP_FIXED_NOREPLACE;
    res = dk__mmap((uint8_t *)fixed - g, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | how, -1, 0);
    if (res != MAP_FAILED && res != (uint8_t *)fixed - g) { dk__munmap(res, total); errno = EEXIST; return NULL; }
    if (res != MAP_FAILED && overwrite) dk__prim_count_adopted(total);
  } else {
    /* hugetlb mappings must be page-aligned: the pages start at res + g */
    res = dk__reserve_aligned(total, page, (uint64_t)(-(int64_t)g) & (page - 1));
    if (!res) return NULL;
  }
  if (res == MAP_FAILED) return NULL;
  for (uint64_t i = 0; i <= last - first; i++) {
    uint64_t k = r->first + first + i;
    if (dk__mmap(res + g + i * page, (size_t)page, prot, MAP_SHARED | MAP_FIXED, c->fd, (off_t)c->off[k]) == MAP_FAILED) {
      int e = errno;
      dk__munmap(res, total);
      errno = e;
      return NULL;
    }
  }
  *base = res;
  *span = total;
  return res + g + (pa - r->pa - first * page);
}
