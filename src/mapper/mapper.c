/* src/mapper/mapper.c: the IOMapper dispatcher (see mapper.h): the identity mapper, the
 * system-mapper choice, the table of mappings with their counted uses, sharing of a mapping
 * by every buffer range it covers under a compatible spec, the kernel's mapping limit, and
 * the debug tracker. Backends (vfio.c, and the software one tests use) only map and unmap. */
#include "mapper/mapper_impl.h"
#include "base/fork.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static IOMapper g_identity = { .magic = DK_MAPPER_MAGIC, .kind = DK_MAPPER_IDENTITY, .is_static = true,
                               .container_fd = -1, .group_fd = -1, .device_fd = -1 };

IOMapper *dk_mapper_identity(void) { return &g_identity; }

static IOMapper *as_mapper(IOMapper *m) { return m && m->magic == DK_MAPPER_MAGIC ? m : NULL; }

bool dk__mapper_translates(const IOMapper *m) { return m && m->magic == DK_MAPPER_MAGIC && m->ops; }

void dk__mapper_retain(IOMapper *m)
{
  if ((m = as_mapper(m)) && !m->is_static) atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

static bool inherited(const IOMapper *m) { return m->epoch != dk__fork_epoch(); }

static bool drop_region(dk_xnode *n, void *arg)
{
  IOMapper *m = arg;
  dk_iova_region *r = (dk_iova_region *)n;
  if (m->ops && !inherited(m)) m->ops->unmap(m, r->iova, n->end - n->start);
  dk__free(r);
  return true;
}

void dk__mapper_release(IOMapper *m)
{
  if (!(m = as_mapper(m)) || m->is_static) return;
  if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
  dk__mapper_unregister(m);                      /* registry.c: no device finds it any more */
  /* the last reference: every buffer that used it is gone, so nothing is mapped; a region
   * left (cannot happen) is unmapped defensively */
  dk__xtree_walk(&m->regions, drop_region, m);
  m->regions = (dk_xtree){ 0 };
  if (m->ops && m->ops->close) m->ops->close(m);
  dk__iova_fini(&m->space);
  pthread_mutex_destroy(&m->lock);
  m->magic = 0;
  dk__free(m);
}

IOMapper *dk__mapper_new(dk_mapper_kind kind, const dk_mapper_ops *ops, const uint64_t (*ranges)[2], size_t n)
{
  IOMapper *m = dk__calloc(1, sizeof *m);
  if (!m) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the mapper");
    return NULL;
  }
  m->magic = DK_MAPPER_MAGIC;
  m->epoch = dk__fork_epoch();
  m->kind = kind;
  m->ops = ops;
  atomic_init(&m->refs, 1);
  m->container_fd = m->group_fd = m->device_fd = -1;
  pthread_mutex_init(&m->lock, NULL);
  if (!dk__iova_init(&m->space, ranges, n, dk__caps()->page_size)) {
    pthread_mutex_destroy(&m->lock);
    dk__free(m);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the IOVA space");
    return NULL;
  }
  m->info.kind = kind;
  m->info.iova_range_count = n < 8 ? (uint32_t)n : 8;
  for (size_t i = 0; i < m->info.iova_range_count; i++) {
    m->info.iova_ranges[i].start = ranges[i][0];
    m->info.iova_ranges[i].end = ranges[i][1];
  }
  return m;
}

/* ---- the system mapper ----------------------------------------------------------------------- */

_Atomic(IOMapper *) dk__mapper_system_ptr;
#define g_system dk__mapper_system_ptr
static pthread_mutex_t g_system_lock = PTHREAD_MUTEX_INITIALIZER;

void dk_mapper_set_system(IOMapper *mapper)
{
  mapper = as_mapper(mapper);
  if (mapper == &g_identity) mapper = NULL;       /* identity is what "none" means */
  dk__mapper_retain(mapper);
  pthread_mutex_lock(&g_system_lock);
  IOMapper *old = atomic_exchange(&g_system, mapper);
  pthread_mutex_unlock(&g_system_lock);
  dk__config_bump();            /* buffers built without this mapper are not handed out again */
  dk__mapper_release(old);
}

IOMapper *dk_mapper_get_system(void) { return atomic_load(&g_system); }

IOMapper *dk__mapper_system_retain(void)
{
  if (!atomic_load_explicit(&g_system, memory_order_relaxed)) return NULL;   /* the common case */
  pthread_mutex_lock(&g_system_lock);
  IOMapper *m = atomic_load(&g_system);
  dk__mapper_retain(m);
  pthread_mutex_unlock(&g_system_lock);
  return m;
}

/* ---- mapping ------------------------------------------------------------------------------- */

/* Does [iova, iova+len) meet the spec? */
static bool meets(const dk_iova_spec *s, uint64_t iova, uint64_t len)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.low = s->low;
  c.high = s->limit;
  c.alignment = s->alignment;
  c.boundary = s->boundary;
  return dk__segment_ok(&c, iova, len, true);
}

static uint64_t pow2_at_least(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* A new region of `granule` units around [va, va+len) whose IOVA for va meets the spec; NULL
 * when the space has no room that way. Called locked. */
static dk_iova_region *new_region(IOMapper *m, uint64_t va, uint64_t len, uint64_t granule, const dk_iova_spec *s,
                             int *err)
{
  uint64_t start = va & ~(granule - 1);
  uint64_t end = (va + len + granule - 1) & ~(granule - 1);
  uint64_t off = va - start, rlen = end - start;
  uint64_t align = s->alignment > 1 ? s->alignment : 1;
  if (off & (align - 1)) return NULL;              /* the IOVA of va could never be aligned */
  uint64_t boundary = 0;
  if (s->boundary && s->boundary <= granule) {
    /* below the granule an IOVA's offset is the address's: the address alone decides */
    if (len <= s->boundary && va / s->boundary != (va + len - 1) / s->boundary) return NULL;
  } else if (s->boundary) {
    boundary = rlen <= s->boundary ? s->boundary : 0;
    if (!boundary && len <= s->boundary) return NULL;   /* try a finer granule */
  }
  uint64_t iova;
  if (!dk__iova_alloc_window(&m->space, rlen, pow2_at_least(granule, align), s->low, s->limit, boundary, &iova)) {
    if (errno == ENOMEM) *err = ENOMEM;          /* not "no room": no memory to record it */
    return NULL;
  }
  dk_iova_region *r = dk__calloc(1, sizeof *r);
  if (!r) {
    dk__iova_free(&m->space, iova, rlen);
    *err = ENOMEM;
    return NULL;
  }
  if (m->ops->map(m, start, iova, rlen) != 0) {
    *err = errno ? errno : EIO;
    dk__iova_free(&m->space, iova, rlen);
    dk__free(r);
    return NULL;
  }
  r->node.start = start;
  r->node.end = end;
  r->iova = iova;
  dk__xtree_insert(&m->regions, &r->node);
  m->info.mappings_live++;
  if (m->info.mappings_live > m->info.mappings_peak) m->info.mappings_peak = m->info.mappings_live;
  m->info.bytes_mapped += rlen;
  return r;
}

typedef struct cover_arg { const dk_iova_spec *spec; uint64_t va, len; } cover_arg;

/* A region covering the range whose IOVAs the request accepts. */
static bool covers(const dk_xnode *n, void *arg)
{
  const cover_arg *a = arg;
  const dk_iova_region *r = (const dk_iova_region *)n;
  return meets(a->spec, r->iova + (a->va - n->start), a->len);
}

IOReturn dk__mapper_map(IOMapper *m, const void *vp, uint64_t len, uint64_t granule, const dk_iova_spec *spec,
                        dk_mapping *use)
{
  if (!dk__mapper_translates(m))
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT, "this mapper does not translate addresses");
  if (!len) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a zero-length range has no IOVA");
  if (inherited(m))
    return dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_STATE,
                    "this mapper was opened by the parent process (its container is shared): a forked "
                    "child opens a mapper of its own");
  uint64_t va = (uint64_t)(uintptr_t)vp;
  uint64_t page = dk__caps()->page_size;
  if (granule < page) granule = page;
  pthread_mutex_lock(&m->lock);
  /* 1. a mapping that already covers the range, with IOVAs this request accepts */
  cover_arg ca = { spec, va, len };
  dk_iova_region *r = (dk_iova_region *)dk__xtree_find_cover(&m->regions, va, len, covers, &ca);
  int err = 0;
  bool at_limit = false;
  if (!r) {
    /* 2. a new one: within the kernel's mapping limit, in whole granules, else whole pages */
    at_limit = m->info.dma_limit && m->info.mappings_live >= m->info.dma_limit;
    if (!at_limit) r = new_region(m, va, len, granule, spec, &err);
    if (!r && !at_limit && !err && granule > page) r = new_region(m, va, len, page, spec, &err);
  }
  if (!r) {
    uint32_t live = m->info.mappings_live, limit = m->info.dma_limit;
    pthread_mutex_unlock(&m->lock);
    if (at_limit)
      return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                      "the IOMMU's limit of %u mappings is reached (%u live)", limit, live);
    if (err == ENOMEM)
      return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
                      "out of memory for a mapping of 0x%llx bytes (dmakit's records or the IOMMU's)",
                      (unsigned long long)len);
    if (err)
      return dk__fail(kIOReturnVMError, DK_CONSTRAINT_RESOURCE, "the IOMMU refused a mapping of 0x%llx bytes: %s",
                      (unsigned long long)len, strerror(err));
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_MASK,
                    "no free IOVA range of 0x%llx bytes in [0x%llx, 0x%llx] (alignment 0x%llx, boundary 0x%llx)",
                    (unsigned long long)len, (unsigned long long)spec->low,
                    (unsigned long long)(spec->limit ? spec->limit : UINT64_MAX),
                    (unsigned long long)spec->alignment, (unsigned long long)spec->boundary);
  }
  r->uses++;
  use->region = r;
  use->iova = r->iova + (va - r->node.start);
  use->len = len;
  m->info.buffers_mapped++;
  pthread_mutex_unlock(&m->lock);
  dk__mapper_retain(m);                            /* each use keeps the mapper */
  return kIOReturnSuccess;
}

void dk__mapper_unmap(IOMapper *m, dk_mapping *use)
{
  if (!dk__mapper_translates(m) || !use) return;
  if (inherited(m)) {                    /* the parent's mapping: it unmaps it, not this child */
    use->region = NULL;
    return;
  }
  pthread_mutex_lock(&m->lock);
  dk_iova_region *r = use->region;
  if (!r) {
    m->info.double_unmaps++;
    pthread_mutex_unlock(&m->lock);
    return;
  }
  use->region = NULL;
  use->iova = 0;
  m->info.buffers_mapped--;
  if (--r->uses == 0) {
    uint64_t rlen = r->node.end - r->node.start;
    dk__xtree_remove(&m->regions, &r->node);
    /* an IOVA the kernel would not unmap stays allocated: handing it out again would fail
     * (or alias) in the IOMMU */
    if (m->ops->unmap(m, r->iova, rlen) != 0) dk__iova_retire(&m->space, r->iova, rlen);
    else if (!dk__iova_free(&m->space, r->iova, rlen)) m->info.double_unmaps++;
    m->info.mappings_live--;
    m->info.bytes_mapped -= rlen;
    dk__free(r);
  }
  pthread_mutex_unlock(&m->lock);
  dk__mapper_release(m);
}

/* ---- public --------------------------------------------------------------------------------- */

int dk_mapper_vfio_device_fd(IOMapper *m) { return (m = as_mapper(m)) ? m->device_fd : -1; }
int dk_mapper_vfio_container_fd(IOMapper *m) { return (m = as_mapper(m)) ? m->container_fd : -1; }

IOReturn dk_mapper_get_info(IOMapper *m, dk_mapper_info *info)
{
  dk__enter("dk_mapper_get_info");
  if (!(m = as_mapper(m)) || !info) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not a mapper");
  pthread_mutex_lock(&m->lock);
  *info = m->info;
  pthread_mutex_unlock(&m->lock);
  return kIOReturnSuccess;
}

typedef struct leak_arg { char *report; size_t cap, used; unsigned leaks; } leak_arg;

static bool report_leak(dk_xnode *n, void *arg)
{
  leak_arg *a = arg;
  const dk_iova_region *r = (const dk_iova_region *)n;
  a->leaks++;
  if (a->report && a->used < a->cap) {
    int k = snprintf(a->report + a->used, a->cap - a->used, "leaked: IOVA 0x%llx+0x%llx (va 0x%llx, %u uses)\n",
                     (unsigned long long)r->iova, (unsigned long long)(n->end - n->start),
                     (unsigned long long)n->start, r->uses);
    if (k > 0) a->used += (size_t)k;
  }
  return true;
}

unsigned dk_mapper_close(IOMapper *m, char *report, size_t cap)
{
  if (report && cap) report[0] = '\0';
  if (!(m = as_mapper(m)) || m->is_static) return 0;
  leak_arg a = { report, cap, 0, 0 };
  pthread_mutex_lock(&m->lock);
  dk__xtree_walk(&m->regions, report_leak, &a);
  if (m->info.double_unmaps && report && a.used < cap)
    snprintf(report + a.used, cap - a.used, "double unmaps: %llu\n", (unsigned long long)m->info.double_unmaps);
  m->info.leaks_reported += a.leaks;
  pthread_mutex_unlock(&m->lock);
  if (a.leaks && dk__option(DK_OPTION_MAPPER_DEBUG))
    fprintf(stderr, "dmakit: IOMapper closed with %u mapping(s) still live (buffers not released)\n", a.leaks);
  dk__mapper_release(m);
  return a.leaks;
}

/* ---- the software backend: IOVAs without an IOMMU (tests of everything above) ------------- */

static int soft_map(IOMapper *m, uint64_t va, uint64_t iova, uint64_t len)
{
  (void)m; (void)va; (void)iova; (void)len;
  return 0;
}
static int soft_unmap(IOMapper *m, uint64_t iova, uint64_t len)
{
  (void)m; (void)iova; (void)len;
  return 0;
}
static const dk_mapper_ops soft_ops = { soft_map, soft_unmap, NULL };

IOMapper *dk__mapper_create_soft(const uint64_t (*ranges)[2], size_t n, uint32_t dma_limit)
{
  IOMapper *m = dk__mapper_new(DK_MAPPER_SOFTWARE, &soft_ops, ranges, n);
  if (m) m->info.dma_limit = dma_limit;
  return m;
}
