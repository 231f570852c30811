/* src/mem/prov_hugefd.c: one hugepage with a file of its own, for memory meant for other
 * processes (kIOMemoryKernelUserShared, DriverKit's buffers) whose constraints 4K pages cannot
 * keep (alignment above a page, contiguity beyond one). The hugepage pool cannot serve them:
 * its hugepages hold other buffers and are mapped whole, so a view of one would show a client
 * other buffers' bytes. An MFD_HUGETLB memfd of one page (2 MiB) is contiguous and aligned to
 * its size by construction, zeroed by the kernel, long-term pinned for life, its frame read
 * once; a client maps the whole page and sees only this buffer. It costs a hugepage per buffer. */
#include "mem/mem.h"
#include "phys/huge.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <linux/memfd.h>
#include <sys/mman.h>

/* The smallest hugepage size, the unit of this provider. */
static uint64_t hp_size(void)
{
  const dk_caps *caps = dk__caps();
  return caps->hugepage_size_count ? caps->hugepage_sizes[0] : 0;
}

static bool hugefd_can(const dk_mem_req *rq, bool report)
{
  const dk_caps *caps = dk__caps();
  uint64_t hp = hp_size();
  const char *why = NULL;
  char text[200];
  if (!caps->pagemap_frames) why = "needs root (frame numbers in /proc/self/pagemap)";
  else if (!hp) why = "needs hugetlb support in the kernel";
  else if (!dk__option(DK_OPTION_POOL)) why = "uses hugepages, which are turned off (DMAKIT_POOL=0)";
  else if (rq->size > hp || (rq->c->alignment > hp) || rq->valign > hp) {
    snprintf(text, sizeof text, "covers one %llu KiB hugepage, and %llu bytes aligned to 0x%llx do not fit one",
             (unsigned long long)(hp >> 10), (unsigned long long)rq->size,
             (unsigned long long)(rq->c->alignment > rq->valign ? rq->c->alignment : rq->valign));
    why = text;
  } else if (caps->pin_method != DK_PIN_IO_URING && dk__option(DK_OPTION_REQUIRE_PIN)) {
    why = "needs the long-term pin (io_uring), which this kernel refused";
  }
  if (!why) return true;
  /* named after the constraint 4K pages could not keep, as their own refusal is */
  dk_constraint_kind k = dk__pages_can_keep(rq->c, rq->size, caps->page_size);
  if (k == DK_CONSTRAINT_NONE) k = DK_CONSTRAINT_RESOURCE;
  if (report)
    dk__fail(caps->pagemap_frames ? kIOReturnNoMemory : kIOReturnNotPrivileged,
             caps->pagemap_frames ? k : DK_CONSTRAINT_PRIVILEGE,
             "memory shared with other processes (kIOMemoryKernelUserShared) under a constraint 4K pages cannot "
             "keep gets a hugepage of its own; that %s", why);
  return false;
}

static bool hugefd_alloc(dk_mem *m, const dk_mem_req *rq)
{
  uint64_t hp = hp_size();
  dk_hugefd *h = dk__calloc(1, sizeof *h);
  if (!h) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a hugepage record");
    return false;
  }
  h->fd = -1;
  h->pin = DK_PIN_INIT;
  h->size = hp;
  if (!dk__huge_make_room(hp, 1, (long)(((uint64_t)dk__option(DK_OPTION_POOL_MAX_MB) << 20) / hp), &h->raised))
    goto fail;
  unsigned flag = hp >= (1ull << 30) ? MFD_HUGE_1GB : MFD_HUGE_2MB;
  if ((h->fd = dk__memfd_create("dmakit-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | flag)) < 0) {
    dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "creating a hugetlb memfd");
    goto fail;
  }
  if (dk__ftruncate(h->fd, (off_t)hp) < 0) {
    dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "sizing a hugetlb memfd to one hugepage");
    goto fail;
  }
  uint8_t *p = dk__reserve_aligned((size_t)hp, hp, 0);
  if (!p) {
    dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "reserving address space for a hugepage");
    goto fail;
  }
  if (dk__mmap(p, (size_t)hp, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, h->fd, 0) == MAP_FAILED) {
    dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "mapping a hugepage");
    dk__munmap(p, (size_t)hp);
    goto fail;
  }
  h->base = p;
  /* present (a hugetlb fault that finds no page is SIGBUS: populate says ENOMEM instead) */
  if (dk__madvise(p, (size_t)hp, MADV_POPULATE_WRITE) < 0 && errno != EINVAL) {
    dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "allocating a hugepage");
    goto fail;
  }
  if (dk__caps()->pin_method == DK_PIN_IO_URING && dk__pin(p, (size_t)hp, &h->pin) < 0) {
    dk__fail_errno(errno, DK_CONSTRAINT_PIN, "pinning a hugepage");
    goto fail;
  }
  uint64_t pfn = 0;
  if (dk__pagemap_frames((uintptr_t)p, 1, &pfn) < 0 || !pfn) {
    dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_RESOURCE, "reading the hugepage's frame failed");
    goto fail;
  }
  h->pa = pfn << dk__caps()->page_shift;
  (void)rq;
  m->kind = DK_PROVIDER_HUGEFD;
  m->u.hugefd = h;
  m->flags = DK_MEM_WIRED | DK_MEM_ZEROED | DK_MEM_PINNED;   /* FRAMES_FIXED means pool memory (md.c fast path) */
  return true;
fail:;
  dk_mem tmp = { .u.hugefd = h };
  dk__prov_hugefd.free(&tmp);
  return false;
}

static void hugefd_free(dk_mem *m)
{
  dk_hugefd *h = m->u.hugefd;
  dk__unpin(&h->pin);
  if (h->base) dk__munmap(h->base, (size_t)h->size);
  if (h->fd >= 0) dk__close(h->fd);
  dk__huge_give_back(h->size, h->raised);
  dk__free(h);
}

static uint64_t hugefd_phys(const dk_mem *m, uint64_t off, uint64_t *run)
{
  if (run) *run = m->u.hugefd->size - off;
  return m->u.hugefd->pa + off;
}

/* The hugepage again (a mapping of a hugetlb file is whole pages); byte `off` at `at` when set. */
static void *hugefd_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *at,
                        bool overwrite, bool populate, void **base, size_t *span)
{
  (void)len; (void)populate;
  const dk_hugefd *h = m->u.hugefd;
  uint64_t hp = h->size;
  size_t g = guard ? (size_t)((guard + hp - 1) / hp * hp) : 0;
  size_t total = (size_t)hp + 2 * g;
  uint8_t *res;
  if (at) {
    uint8_t *page = (uint8_t *)at - off;
    if ((uintptr_t)page & (hp - 1)) {
      dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT,
               "a hugepage maps whole: byte 0x%llx cannot be placed at %p", (unsigned long long)off, at);
      errno = EINVAL;
      return NULL;
    }
    if (g) { errno = EINVAL; return NULL; }     /* guards need kIOMapAnywhere (checked above) */
    res = dk__mmap(page, (size_t)hp, prot, MAP_SHARED | (overwrite ? MAP_FIXED : MAP_FIXED_NOREPLACE), h->fd, 0);
    if (res == MAP_FAILED) return NULL;
    if (res != page) {
      dk__munmap(res, (size_t)hp);
      errno = EEXIST;
      return NULL;
    }
    if (overwrite) dk__prim_count_adopted((size_t)hp);
    *base = res;
    *span = (size_t)hp;
    return res + off;
  }
  res = dk__reserve_aligned(total, hp, (uint64_t)(-(int64_t)g) & (hp - 1));
  if (!res) return NULL;
  if (dk__mmap(res + g, (size_t)hp, prot, MAP_SHARED | MAP_FIXED, h->fd, 0) == MAP_FAILED) {
    int e = errno;
    dk__munmap(res, total);
    errno = e;
    return NULL;
  }
  *base = res;
  *span = total;
  return res + g + off;
}

static uint64_t hugefd_granule(const dk_mem *m) { return m->u.hugefd->size; }

static int hugefd_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                        uint64_t *in_page)
{
  (void)len;
  *file_off = 0;
  *span = m->u.hugefd->size;
  *in_page = off;
  return m->u.hugefd->fd;
}

const dk_provider_ops dk__prov_hugefd = {
  DK_PROVIDER_HUGEFD, "hugepage-own", hugefd_can, hugefd_alloc, hugefd_free, dk__mem_wired_for_life, dk__mem_keep_wired,
  hugefd_phys, hugefd_map, hugefd_granule, hugefd_share, dk__mem_discard_busy,
};
