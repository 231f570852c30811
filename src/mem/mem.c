/* src/mem/mem.c: the provider ladder and the verification of physical promises (see mem.h);
 * every other call dispatches on the record's provider. */
#include "mem/mem.h"
#include "phys/budget.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>

const dk_provider_ops *dk__mem_ops(const dk_mem *m)
{
  switch (m->kind) {
  case DK_PROVIDER_MEMFD_4K: return &dk__prov_memfd;
  case DK_PROVIDER_USER:     return &dk__prov_user;
  case DK_PROVIDER_HUGEFD:   return &dk__prov_hugefd;
  default:                   return &dk__prov_pool;
  }
}

bool dk__mem_wired_for_life(dk_mem *m)
{
  (void)m;
  return true;
}
void dk__mem_keep_wired(dk_mem *m) { (void)m; }
int dk__mem_discard_busy(dk_mem *m)
{
  (void)m;
  errno = EBUSY;
  return -1;
}

/* Whether the frames must be read to keep the promise. A buffer of at most one page starts
 * on a page and so is contiguous and page-aligned by construction. */
static bool has_physical_promise(const dk_constraints *c, uint64_t size, uint64_t page)
{
  return c->high || c->low || c->alignment > page || c->boundary || (c->contiguous && size > page) ||
         c->max_segments || c->max_segment_size;
}

bool dk__pins_ok(void)
{
  const dk_caps *caps = dk__caps();
  if (caps->pin_method != DK_PIN_NONE || !dk__option(DK_OPTION_REQUIRE_PIN)) return true;
  dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PIN,
           "frames could move, so no physical address is handed out: %s", caps->pin_detail);
  return false;
}

const char *dk__mem_pool_why(void)
{
  const dk_caps *caps = dk__caps();
  if (!caps->pagemap_frames) return "needs root (frame numbers in /proc/self/pagemap)";
  if (!caps->hugepage_size_count) return "needs hugetlb support in the kernel";
  if (!dk__option(DK_OPTION_POOL)) return "is turned off (DMAKIT_POOL=0)";
  return "could not meet it either";
}

/* The record's physical runs over its first `len` bytes, merged, checked against c. A
 * provider that places memory by the constraints (the pool) breaking one is an internal
 * error; pages that merely happen not to meet it (4K pages) are a refusal. */
static bool verify(const dk_mem *m, const dk_constraints *c, uint64_t len)
{
  uint64_t page = dk__caps()->page_size;
  size_t max = (size_t)((len + page - 1) / page) + 1;
  dk_run one, *runs = &one;
  if (m->kind == DK_PROVIDER_MEMFD_4K && !(runs = dk__calloc(max, sizeof *runs))) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory to verify %zu pages", max);
    return false;
  }
  size_t n = 0;
  uint64_t done = 0, lowest = UINT64_MAX;
  while (done < len && n < max) {
    uint64_t run;
    uint64_t pa = dk__mem_phys(m, done, &run);
    if (run > len - done) run = len - done;
    runs[n++] = (dk_run){ pa, run };
    if (pa < lowest) lowest = pa;
    done += run;
  }
  char why[200];
  dk_constraint_kind k = dk__runs_check(c, runs, n, why, sizeof why);
  if (runs != &one) dk__free(runs);
  if (k == DK_CONSTRAINT_NONE) return true;
  if (m->kind == DK_PROVIDER_POOL || m->kind == DK_PROVIDER_POOL_SLAB)
    dk__fail(kIOReturnInternalError, k, "the pool returned memory that breaks a constraint: %s", why);
  else if (m->kind == DK_PROVIDER_HUGEFD)
    dk__fail(kIOReturnNoMemory, k, "the hugepage the kernel gave this shared buffer does not meet the constraint: %s "
             "(frame 0x%llx)", why, (unsigned long long)lowest);
  else if (k == DK_CONSTRAINT_MASK)
    dk__fail(kIOReturnNoMemory, k,
             "physical mask 0x%llx cannot be met by 4K pages: %s; the lowest frame handed out "
             "was 0x%llx (the kernel gives user space its high frames first)",
             (unsigned long long)c->high, why, (unsigned long long)lowest);
  else
    dk__fail(kIOReturnNoMemory, k, "4K pages do not meet the constraint: %s", why);
  return false;
}

/* One rung: the provider's memory for rq, verified when a physical promise was made. */
static bool rung(const dk_provider_ops *p, dk_mem *m, const dk_mem_req *rq, bool physical)
{
  if (physical && !p->can(rq, true)) return false;
  if (!p->alloc(m, rq)) return false;
  if (physical && rq->wire && !verify(m, rq->c, rq->len)) {
    p->free(m);
    *m = DK_MEM_NONE_INIT;
    return false;
  }
  return true;
}

bool dk__mem_alloc(dk_mem *m, const dk_mem_req *rq)
{
  *m = DK_MEM_NONE_INIT;
  uint64_t page = dk__caps()->page_size;
  bool physical = has_physical_promise(rq->c, rq->size, page);
  bool fits_4k = !physical || dk__prov_memfd.can(rq, false);
  bool pool = rq->wire && dk__prov_pool.can(rq, false);
  /* more than the machine could hold: refused before anything is populated (phys/budget.c) */
  if (rq->wire && rq->size >= DK_BUDGET_ADMIT_MIN && !dk__budget_admit(rq->size, pool ? dk__pool_free_bytes() : 0))
    return false;
  /* memory meant for other processes has a file of its own: 4K pages where they can keep the
   * promise, else a hugepage of its own; never the pool, whose hugepages hold other buffers */
  if (rq->shared && fits_4k) return rung(&dk__prov_memfd, m, rq, physical);
  if (rq->shared) return rung(&dk__prov_hugefd, m, rq, true);
  if (pool) {
    if (rung(&dk__prov_pool, m, rq, physical)) return true;
    /* what 4K pages can promise they may still give (a mask they happen to meet); the pool's
     * reason stays the one reported if they cannot, unless the request needed nothing of the
     * pool: then the 4K pages' answer is the answer */
    if (fits_4k && !physical) dk__fail_forget();
    return fits_4k && rung(&dk__prov_memfd, m, rq, physical);
  }
  return rung(&dk__prov_memfd, m, rq, physical);
}

void dk__mem_free(dk_mem *m)
{
  if (m->kind == DK_PROVIDER_NONE) return;
  dk__mem_ops(m)->free(m);
  *m = DK_MEM_NONE_INIT;
}

bool dk__mem_wire(dk_mem *m) { return dk__mem_ops(m)->wire(m); }
void dk__mem_unwire(dk_mem *m) { dk__mem_ops(m)->unwire(m); }

void *dk__mem_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                  bool overwrite, bool populate, void **base, size_t *span)
{
  return dk__mem_ops(m)->map(m, off, len, prot, guard, fixed, overwrite, populate, base, span);
}

int dk__mem_unmap(void *base, size_t span) { return dk__munmap(base, span); }

uint64_t dk__mem_granule(const dk_mem *m) { return dk__mem_ops(m)->granule(m); }

int dk__mem_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                  uint64_t *in_page)
{
  return dk__mem_ops(m)->share(m, off, len, file_off, span, in_page);
}

int dk__mem_discard(dk_mem *m) { return dk__mem_ops(m)->discard(m); }
