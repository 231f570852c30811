/* src/mem/prov_memfd.c: the 4K-page provider: one memfd per buffer (phys/backing.c), mapped
 * in this process, wired (populated, locked, long-term pinned, frames read once) when asked.
 * It can promise what one page gives by construction (contiguity and alignment up to a page)
 * and, verified through the frames, whatever the kernel's pages happen to meet. Its memory has
 * a file of its own, so it can be mapped into other processes. */
#include "mem/mem.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A refusal for a promise only the pool could keep (one contiguous page and page alignment are
 * what 4K pages promise). The cause decides the answer, as for a physical mask: without
 * privilege (the pool reads frame numbers, which need root) kIOReturnNotPrivileged and the
 * privilege constraint; with the pool merely turned off (DMAKIT_POOL=0), without hugetlb, or
 * out of memory, kIOReturnNoMemory and the constraint that could not be met. */
static bool refuse(dk_constraint_kind kind, const char *what)
{
  const dk_caps *caps = dk__caps();
  bool off = !dk__option(DK_OPTION_POOL);
  if (!caps->pagemap_frames)
    dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE,
             "%s: 4K pages cannot promise it, and the hugepage pool that can needs root (frame numbers in "
             "/proc/self/pagemap need CAP_SYS_ADMIN)%s", what, off ? "; it is also turned off (DMAKIT_POOL=0)" : "");
  else
    dk__fail(kIOReturnNoMemory, kind, "%s: 4K pages cannot promise it, and the hugepage pool %s", what,
             dk__mem_pool_why());
  return false;
}

static bool memfd_can(const dk_mem_req *rq, bool report)
{
  const dk_caps *caps = dk__caps();
  const dk_constraints *c = rq->c;
  uint64_t page = caps->page_size;
  char what[160];
  dk_constraint_kind k = dk__pages_can_keep(c, rq->size, page);
  if (k == DK_CONSTRAINT_ALIGNMENT) {
    if (!report) return false;
    snprintf(what, sizeof what, "physical alignment 0x%llx is above the page size 0x%llx",
             (unsigned long long)c->alignment, (unsigned long long)page);
    return refuse(DK_CONSTRAINT_ALIGNMENT, what);
  }
  if (k == DK_CONSTRAINT_CONTIGUITY) {
    if (!report) return false;
    snprintf(what, sizeof what, "%llu physically contiguous bytes are more than one page",
             (unsigned long long)rq->size);
    return refuse(DK_CONSTRAINT_CONTIGUITY, what);
  }
  if (k == DK_CONSTRAINT_BOUNDARY) {
    if (report)
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_BOUNDARY,
               "boundary 0x%llx is below the page size and the buffer is larger than it",
               (unsigned long long)c->boundary);
    return false;
  }
  if (!caps->pagemap_frames) {
    if (report)
      dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE,
               "a physical constraint (limit 0x%llx) cannot be verified: frame numbers in "
               "/proc/self/pagemap need root (CAP_SYS_ADMIN)", (unsigned long long)c->high);
    return false;
  }
  if (caps->pin_method == DK_PIN_NONE && dk__option(DK_OPTION_REQUIRE_PIN)) {
    if (report) dk__pins_ok();
    return false;
  }
  return true;
}

static bool memfd_alloc(dk_mem *m, const dk_mem_req *rq)
{
  uint64_t page = dk__caps()->page_size, bytes;
  if (!dk__round_up(rq->size, page, &bytes) || bytes > SIZE_MAX / 2) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_ARGUMENT, "capacity 0x%llx is too large",
             (unsigned long long)rq->size);
    return false;
  }
  dk_backing *b = dk__malloc(sizeof *b);
  if (!b) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a page record");
    return false;
  }
  if (!dk__backing_create(b, (size_t)bytes, (size_t)rq->valign)) {
    dk__free(b);
    return false;
  }
  if (rq->wire && !dk__backing_wire(b)) {
    dk__backing_destroy(b);
    dk__free(b);
    return false;
  }
  m->kind = DK_PROVIDER_MEMFD_4K;
  m->u.memfd = b;
  m->flags = DK_MEM_ZEROED | (b->wired ? DK_MEM_WIRED : 0) | (b->pinned ? DK_MEM_PINNED : 0);
  dk__pool_note_4k(bytes, +1);
  return true;
}

static void memfd_free(dk_mem *m)
{
  dk__pool_note_4k(m->u.memfd->size, -1);
  dk__backing_destroy(m->u.memfd);
  dk__free(m->u.memfd);
}

static bool memfd_wire(dk_mem *m)
{
  if (!dk__backing_wire(m->u.memfd)) return false;
  m->flags |= DK_MEM_WIRED | (m->u.memfd->pinned ? DK_MEM_PINNED : 0);
  return true;
}

static void memfd_unwire(dk_mem *m)
{
  dk__backing_unwire(m->u.memfd);
  m->flags &= (uint8_t)~(DK_MEM_WIRED | DK_MEM_PINNED);
}

static uint64_t memfd_phys(const dk_mem *m, uint64_t off, uint64_t *run)
{
  size_t r;
  uint64_t pa = dk__backing_phys(m->u.memfd, (size_t)off, &r);
  if (run) *run = r;
  return pa;
}

/* A placed mapping goes to `at` minus its in-page offset (XNU); the result is the address of
 * byte `off`. */
static void *memfd_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *at,
                       bool overwrite, bool populate, void **base, size_t *span)
{
  size_t page = dk__caps()->page_size;
  size_t in_page = (size_t)off & (page - 1), map_off = (size_t)off - in_page;
  size_t bytes = (in_page + (size_t)len + page - 1) & ~(page - 1);
  void *fixed = at ? (void *)((uintptr_t)at & ~(uintptr_t)(page - 1)) : NULL;
  void *p = dk__backing_map(m->u.memfd, map_off, bytes, prot, guard, fixed, overwrite,
                            populate && m->u.memfd->wired);
  if (!p) return NULL;
  *base = (uint8_t *)p - guard;
  *span = bytes + 2 * guard;
  return (uint8_t *)p + in_page;
}

static uint64_t memfd_granule(const dk_mem *m)
{
  (void)m;
  return dk__caps()->page_size;
}

static int memfd_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                       uint64_t *in_page)
{
  uint64_t page = dk__caps()->page_size;
  *in_page = off & (page - 1);
  *file_off = off - *in_page;
  *span = (*in_page + len + page - 1) & ~(page - 1);
  return m->u.memfd->fd;
}

static int memfd_discard(dk_mem *m) { return dk__backing_discard(m->u.memfd); }

const dk_provider_ops dk__prov_memfd = {
  DK_PROVIDER_MEMFD_4K, "memfd-4k", memfd_can, memfd_alloc, memfd_free, memfd_wire, memfd_unwire,
  memfd_phys, memfd_map, memfd_granule, memfd_share, memfd_discard,
};
