/* src/mem/prov_pool.c: the hugepage-pool provider (alloc/pool.c): one physically contiguous
 * range, placed by the constraints, wired and pinned for life, zero when handed out. Hugetlb
 * memory maps only in whole hugepages, and shares its file with other buffers, so it cannot
 * leave the process. */
#include "mem/mem.h"
#include "prim/prim.h"

#include <errno.h>

static bool pool_can(const dk_mem_req *rq, bool report)
{
  if (rq->wire && dk__pool_usable()) return true;
  if (report)
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "the hugepage pool %s",
             rq->wire ? dk__mem_pool_why() : "serves wired memory only");
  return false;
}

static bool pool_alloc(dk_mem *m, const dk_mem_req *rq)
{
  uint64_t align = rq->valign > rq->c->alignment ? rq->valign : rq->c->alignment;
  if (!dk__pool_alloc(rq->c, rq->size, align ? align : 1, &m->u.pool)) return false;
  const dk_caps *caps = dk__caps();
  m->kind = m->u.pool.slab ? DK_PROVIDER_POOL_SLAB : DK_PROVIDER_POOL;
  m->flags = DK_MEM_WIRED | DK_MEM_ZEROED;
  if (caps->pin_method != DK_PIN_NONE) m->flags |= DK_MEM_PINNED;
  if (caps->pin_method == DK_PIN_IO_URING) m->flags |= DK_MEM_FRAMES_FIXED;
  return true;
}

static void pool_free(dk_mem *m) { dk__pool_free(&m->u.pool); }

static uint64_t pool_phys(const dk_mem *m, uint64_t off, uint64_t *run)
{
  if (run) *run = m->u.pool.len - off;
  return m->u.pool.pa + off;
}

/* The hugepages that hold the range, mapped again; a placed mapping puts byte `off` at `at`. */
static void *pool_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *at,
                      bool overwrite, bool populate, void **base, size_t *span)
{
  (void)populate;                      /* hugetlb pages are always present */
  uint64_t hp = dk__pool_page(&m->u.pool);
  uint64_t in_page = (m->u.pool.pa + off) & (hp - 1);
  void *fixed = at ? (uint8_t *)at - in_page : NULL;
  if (fixed && overwrite && (in_page || (in_page + len) % hp)) {
    /* hugetlb mappings are whole pages: overwriting may replace only [at, at+len) */
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
             "kIOMapOverwrite of hugepage-pool memory must cover whole %llu KiB pages; "
             "[%p, +0x%llx) would replace memory around it", (unsigned long long)(hp >> 10), at,
             (unsigned long long)len);
    errno = ENOTSUP;
    return NULL;
  }
  return dk__pool_map(&m->u.pool, off, len, prot, guard, fixed, overwrite, base, span);
}

static uint64_t pool_granule(const dk_mem *m) { return dk__pool_page(&m->u.pool); }

static int pool_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                      uint64_t *in_page)
{
  (void)m; (void)off; (void)len; (void)file_off; (void)span; (void)in_page;
  dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
           "this buffer lives in the hugepage pool, whose memory it shares with other buffers: only "
           "buffers with their own pages can be mapped into a client (create it with "
           "kIOMemoryKernelUserShared, or in the client's task)");
  errno = ENOTSUP;
  return -1;
}

const dk_provider_ops dk__prov_pool = {
  DK_PROVIDER_POOL, "hugepage-pool", pool_can, pool_alloc, pool_free, dk__mem_wired_for_life, dk__mem_keep_wired,
  pool_phys, pool_map, pool_granule, pool_share, dk__mem_discard_busy,
};
