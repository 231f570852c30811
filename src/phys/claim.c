/* src/phys/claim.c: drawing pages from a reservation (see reserve.h). A process claims a page by
 * taking a write lock on byte i of <run>/reserve/<name>.claims with its own open file description
 * (F_OFD_SETLK): two processes never hold the same page, and the locks go with the descriptor,
 * so the pages of a process that exits or is killed return to the reservation by themselves.
 * The claimed pages are mapped from the reservation's hugetlbfs file, long-term pinned, their
 * frames read again after the pin (the kernel may have migrated a page at rest, e.g. to make a
 * 1 GiB page) and checked against the request, and zeroed (a killed process leaves its data). */
#include "phys/reserve.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define P2 DK_RESERVE_PAGE

/* Pages found moved out of their mask in this process: never claimed again by it. */
#define MAX_BAD 64
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { uint64_t mask; uint32_t gen; uint64_t off; } g_bad[MAX_BAD];
static int g_nbad;

static bool is_bad(uint64_t mask, const dk_rpage *p)
{
  pthread_mutex_lock(&g_lock);
  bool bad = false;
  for (int i = 0; i < g_nbad && !bad; i++) bad = g_bad[i].mask == mask && g_bad[i].gen == p->gen && g_bad[i].off == p->off;
  pthread_mutex_unlock(&g_lock);
  return bad;
}

static void mark_bad(uint64_t mask, const dk_rpage *p)
{
  pthread_mutex_lock(&g_lock);
  if (g_nbad < MAX_BAD) {
    g_bad[g_nbad].mask = mask;
    g_bad[g_nbad].gen = p->gen;
    g_bad[g_nbad++].off = p->off;
  }
  pthread_mutex_unlock(&g_lock);
}

typedef struct pick {
  const dk_rsv *r;
  int           claims_fd;
  uint32_t     *idx;          /* the pages taken, by index in r->pages */
  uint32_t      k;
} pick;

static const dk_rpage *g_sort_pages;      /* qsort has no context argument; under g_sort_lock */
static pthread_mutex_t g_sort_lock = PTHREAD_MUTEX_INITIALIZER;
static int by_frame(const void *a, const void *b)
{
  uint64_t x = g_sort_pages[*(const uint32_t *)a].frame, y = g_sort_pages[*(const uint32_t *)b].frame;
  return x < y ? -1 : x > y;
}

/* Take k pages of r, adjacent by recorded frame, in one file, the first aligned to `align`,
 * all within [c->low, c->high]. true with p->idx filled and the locks held. */
static bool take_window(const dk_rsv *r, const dk_constraints *c, uint64_t align, pick *p)
{
  uint32_t *order = dk__calloc(r->npages, sizeof *order);
  if (!order) return false;
  for (uint32_t i = 0; i < r->npages; i++) order[i] = i;
  pthread_mutex_lock(&g_sort_lock);
  g_sort_pages = r->pages;
  qsort(order, r->npages, sizeof *order, by_frame);
  pthread_mutex_unlock(&g_sort_lock);
  bool ok = false;
  for (uint32_t s = 0; !ok && s + p->k <= r->npages; s++) {
    const dk_rpage *first = &r->pages[order[s]];
    if (first->frame % align || first->frame < c->low) continue;
    bool fit = true;
    for (uint32_t j = 0; fit && j < p->k; j++) {
      const dk_rpage *q = &r->pages[order[s + j]];
      fit = q->gen == first->gen && q->frame == first->frame + (uint64_t)j * P2 && q->frame + P2 - 1 <= c->high &&
            !is_bad(r->mask, q);
    }
    if (!fit) continue;
    uint32_t got = 0;
    while (got < p->k && dk__rsv_lock(p->claims_fd, F_WRLCK, order[s + got], 1, false) == 0) got++;
    if (got == p->k) {
      for (uint32_t j = 0; j < p->k; j++) p->idx[j] = order[s + j];
      ok = true;
    } else {
      while (got-- > 0) dk__rsv_lock(p->claims_fd, F_UNLCK, order[s + got], 1, false);
    }
  }
  dk__free(order);
  return ok;
}

/* Build the chunk from the picked pages; false (failure recorded) if it cannot be made or a
 * frame no longer meets c. On success the chunk owns p->claims_fd. */
static bool build(pick *p, const dk_constraints *c, dk_hchunk *out)
{
  const dk_rsv *r = p->r;
  char name[40], file[64], path[512];
  dk__rsv_name(name, sizeof name, r->mask);
  snprintf(file, sizeof file, "%s.%u.pages", name, r->pages[p->idx[0]].gen);
  dk__rsv_mount_path(path, sizeof path, file);
  uint64_t *offs = dk__calloc(p->k, sizeof *offs);
  int fd = offs ? dk__open(path, O_RDWR) : -1;
  if (fd < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "opening the reserved pages %s failed: %s", path,
             offs ? strerror(errno) : "no memory");
    dk__free(offs);
    return false;
  }
  for (uint32_t j = 0; j < p->k; j++) offs[j] = r->pages[p->idx[j]].off;
  bool ok = dk__hchunk_adopt(out, fd, P2, p->k, offs);
  dk__free(offs);
  if (!ok) return false;
  out->claim_fd = p->claims_fd;
  p->claims_fd = -1;
  /* the frames again, now that the pages are pinned: what the device will be given */
  for (uint32_t i = 0; i < out->nruns && ok; i++) {
    const dk_hrun *run = &out->runs[i];
    for (uint64_t at = 0; at < run->len && ok; at += P2) {
      uint64_t pfn = 0, pa = out->pa[run->first + at / P2];
      if (dk__pagemap_frames((uintptr_t)(run->va + at), 1, &pfn) < 0) {
        dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "reading the frame of a claimed page failed: %s",
                 strerror(errno));
        ok = false;
        break;
      }
      uint64_t now = pfn << dk__caps()->page_shift;
      ok = now == pa && now >= c->low && now + P2 - 1 <= c->high;
      if (!ok) {
        for (uint32_t j = 0; j < p->k; j++)
          if (r->pages[p->idx[j]].off == out->off[run->first + at / P2]) mark_bad(r->mask, &r->pages[p->idx[j]]);
        dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK,
                 "a page reserved below mask 0x%llx now lies at 0x%llx (the kernel migrated it), outside 0x%llx-0x%llx: "
                 "it is not handed out",
                 (unsigned long long)r->mask, (unsigned long long)now, (unsigned long long)c->low,
                 (unsigned long long)c->high);
      }
    }
  }
  if (!ok) {
    dk__hchunk_destroy(out);
    return false;
  }
  for (uint32_t i = 0; i < out->nruns; i++) memset(out->runs[i].va, 0, (size_t)out->runs[i].len);
  return true;
}

/* A reservation serves a request when its mask lies within the request's limit, or when some of
 * its pages were found within it (every page is checked against the request when claimed). */
static bool applies(const dk_rsv *r, const dk_constraints *c)
{
  if (r->mask <= c->high) return true;
  for (uint32_t i = 0; i < r->npages; i++)
    if (r->pages[i].frame + P2 - 1 <= c->high && r->pages[i].frame >= c->low) return true;
  return false;
}

static int claim_once(const dk_constraints *c, uint64_t len, uint64_t align, dk_hchunk *out)
{
  int lockfd = dk__rsv_lock_open();
  if (lockfd < 0) return 0;
  if (dk__rsv_lock(lockfd, F_RDLCK, DK_RSV_LOCK_TABLE, 1, true) < 0) {
    dk__close(lockfd);
    return 0;
  }
  dk_rtable t;
  if (dk__rsv_read(&t) < 0) {
    dk__close(lockfd);
    return -1;
  }
  pick p = { NULL, -1, NULL, (uint32_t)((len + P2 - 1) / P2) };
  if (p.k == 0) p.k = 1;
  uint64_t step = align > P2 ? align : P2;
  int result = 0;
  const dk_rsv *best = NULL;
  long held = 0, claimed = 0;
  /* the widest reservation under the limit first: narrower ones stay for narrower devices */
  for (;;) {
    const dk_rsv *r = NULL;
    for (uint32_t i = 0; i < t.n; i++)
      if (applies(&t.r[i], c) && (!best || t.r[i].mask < best->mask) && (!r || t.r[i].mask > r->mask)) r = &t.r[i];
    if (!r) break;
    best = r;
    result = -1;
    char name[40], file[64], path[512];
    dk__rsv_name(name, sizeof name, r->mask);
    snprintf(file, sizeof file, "%s.claims", name);
    dk__rsv_path(path, sizeof path, file);
    p.r = r;
    p.idx = dk__calloc(p.k, sizeof *p.idx);
    p.claims_fd = p.idx ? dk__open_mode(path, O_RDWR | O_CREAT, 0600) : -1;
    if (p.claims_fd >= 0 && take_window(r, c, step, &p)) {
      result = 1;
      break;
    }
    for (uint32_t i = 0; p.claims_fd >= 0 && i < r->npages; i++) claimed += dk__rsv_locked(p.claims_fd, i) > 0;
    held += r->npages;
    if (p.claims_fd >= 0) dk__close(p.claims_fd);
    dk__free(p.idx);
    p.idx = NULL;
    p.claims_fd = -1;
  }
  /* the pages are locked: a release now sees them held, so the table lock can go */
  dk__rsv_lock(lockfd, F_UNLCK, DK_RSV_LOCK_TABLE, 1, false);
  dk__close(lockfd);
  if (result == 1 && !build(&p, c, out)) result = -2;
  if (result == -1) {
    uint64_t grow = ((uint64_t)best->npages + p.k) * P2;
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK,
             "the reservations under limit 0x%llx hold %ld pages of 2 MiB, %ld of them held by running processes, and "
             "none has %u free adjacent pages that meet this request; grow it: dmakit reserve --mask 0x%llx %lluM",
             (unsigned long long)c->high, held, claimed, p.k, (unsigned long long)best->mask,
             (unsigned long long)(grow >> 20));
  }
  if (p.claims_fd >= 0) dk__close(p.claims_fd);
  dk__free(p.idx);
  dk__rsv_free(&t);
  return result;
}

int dk__reserve_claim(const dk_constraints *c, uint64_t len, uint64_t align, dk_hchunk *out)
{
  char path[512];
  struct stat st;
  if (!c->high || !dk__caps()->root || !dk__caps()->pagemap_frames) return 0;
  if (!dk__rsv_path(path, sizeof path, "table") || dk__lstat(path, &st) < 0) return 0;
  int r = claim_once(c, len, align, out);
  if (r == -2) r = claim_once(c, len, align, out);      /* once more, past a page that moved */
  return r == -2 ? -1 : r;
}
