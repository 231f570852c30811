/* src/iokit/gmd.c: IOGeneralMemoryDescriptor, descriptors over memory the caller already has
 * (XNU IOMemoryDescriptor.cpp: withAddressRange(s), withOptions, withAddress,
 * withPhysicalAddress), and IOGuardPageMemoryDescriptor. Virtual ranges of this process are
 * pinned and translated at prepare (mem/prov_user.c) and, under a mapper, given one IOVA
 * range each; physical (and kIOMemoryRemote) ranges are bus addresses, wired as given. A
 * mapping shows the caller's pages again (shared memory) or a copy of them
 * (kIOMemoryMapCopyOnWrite). docs/departures.md lists where this departs from XNU. */
#include "iokit/internal.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { GMD_VIRTUAL, GMD_PHYSICAL, GMD_GUARD };

typedef struct dk_gmd {
  IOMemoryDescriptor md;
  uint8_t     variant;
  dk_mapping *iova;          /* one use per range while prepared under a mapper */
} dk_gmd;

static void gmd_free(OSObject *o);
extern const dk_md_ops dk__gmd_ops;
const dk_class dk__gmd_class = { 0x1b3d0008u, "IOGeneralMemoryDescriptor", gmd_free, false, &dk__gmd_ops };
const dk_class dk__guard_class = { 0x1b3d0009u, "IOGuardPageMemoryDescriptor", gmd_free, false, &dk__gmd_ops };

static dk_gmd *as_gmd(IOMemoryDescriptor *md) { return (dk_gmd *)md; }
static const dk_user *user_of(const IOMemoryDescriptor *md) { return md->mem.u.user; }
static uint64_t page_size(void) { return dk__caps()->page_size; }

/* ---- wiring (prepare / complete) ------------------------------------------------------------ */

static void iova_unmap(IOMemoryDescriptor *md)
{
  dk_gmd *g = as_gmd(md);
  if (!g->iova) return;
  IOMapper *mapper = dk__md_mapper(md);
  for (uint32_t i = 0; i < user_of(md)->count; i++)
    if (dk__mapping_live(&g->iova[i])) dk__mapper_unmap(mapper, &g->iova[i]);
}

/* The first prepare: pin and translate every range, then map each in the mapper. */
static IOReturn gmd_wire(IOMemoryDescriptor *md, IODirection dir)
{
  bool device_writes = (dir & kIODirectionIn) || !(dir & kIODirectionOutIn);
  if (!dk__user_wire(&md->mem, device_writes)) return dk__failed() ? dk__failure_code() : kIOReturnCannotWire;
  IOMapper *mapper = dk__md_mapper(md);
  if (!mapper) return kIOReturnSuccess;
  dk_gmd *g = as_gmd(md);
  const dk_user *u = user_of(md);
  IOReturn rc = kIOReturnSuccess;
  if (!g->iova && u->count && !(g->iova = dk__calloc(u->count, sizeof *g->iova)))
    rc = dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for %u IOVA records", u->count);
  for (uint32_t i = 0; rc == kIOReturnSuccess && i < u->count; i++) {
    if (!u->r[i].len) continue;
    dk_iova_spec spec = { 0, 0, 0, 0 };
    rc = dk__mapper_map(mapper, (const void *)(uintptr_t)u->r[i].addr, u->r[i].len, page_size(), &spec, &g->iova[i]);
  }
  if (rc != kIOReturnSuccess) {
    iova_unmap(md);
    dk__mem_unwire(&md->mem);
  }
  return rc;
}

static void gmd_unwire(IOMemoryDescriptor *md)
{
  iova_unmap(md);
  dk__mem_unwire(&md->mem);
}

static IOReturn gmd_prepare(IOMemoryDescriptor *md, IODirection dir)
{
  /* physical ranges are wired by definition (XNU counts nothing); guard pages have nothing */
  if (as_gmd(md)->variant != GMD_VIRTUAL) return kIOReturnSuccess;
  return dk__md_prepare_counted(md, dir, gmd_wire);
}

static IOReturn gmd_complete(IOMemoryDescriptor *md, IODirection dir)
{
  (void)dir;
  if (as_gmd(md)->variant != GMD_VIRTUAL) return kIOReturnSuccess;
  return dk__md_complete_counted(md, gmd_unwire);
}

/* ---- addresses ------------------------------------------------------------------------------- */

static addr64_t gmd_segment(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, IOOptionBits options)
{
  dk_gmd *g = as_gmd(md);
  if (g->variant == GMD_GUARD) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT, "guard pages have no memory a device could reach");
    return 0;
  }
  if (g->variant == GMD_PHYSICAL) return dk__mem_phys(&md->mem, off, run);
  dk__md_lock(md);                      /* prepare/complete change what is read here */
  addr64_t a = 0;
  if (md->wire_count == 0) {
    dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
             "the memory is not prepared: prepare() pins it and reads its frames (XNU panics here)");
  } else if (md->has_mapper && !(options & kIOMemoryMapperNone)) {
    const dk_urange *r = dk__user_range_at(user_of(md), off);
    const dk_mapping *use = &g->iova[r - user_of(md)->r];
    *run = r->len - (off - r->off);
    a = use->iova + (off - r->off);
  } else if (dk__md_phys_ready(md) == kIOReturnSuccess) {
    a = dk__mem_phys(&md->mem, off, run);
  }
  dk__md_unlock(md);
  return a;
}

static uint64_t gmd_source(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt)
{
  dk_gmd *g = as_gmd(md);
  if (virt) *virt = g->variant == GMD_VIRTUAL;
  if (g->variant == GMD_GUARD) {
    if (run) *run = md->length - off;
    return 0;
  }
  const dk_urange *r = dk__user_range_at(user_of(md), off);
  if (!r) {
    if (run) *run = 0;
    return 0;
  }
  if (run) *run = r->len - (off - r->off);
  return r->addr + (off - r->off);
}

/* ---- copies ---------------------------------------------------------------------------------- */

static uint64_t gmd_copy(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md)
{
  if (as_gmd(md)->variant != GMD_VIRTUAL) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
             "%s: the CPU reaches them through no mapping here (dmakit does not use /dev/mem)",
             as_gmd(md)->variant == GMD_GUARD ? "guard pages hold no bytes" : "physical ranges cannot be copied");
    return 0;
  }
  static const uint8_t zeros[4096];
  uint64_t done = 0;
  while (done < len) {
    uint64_t run = 0;
    uint8_t *a = (uint8_t *)(uintptr_t)gmd_source(md, off + done, &run, NULL);
    uint64_t n = len - done < run ? len - done : run;
    if (to_md && !buf && n > sizeof zeros) n = sizeof zeros;
    /* checked: a range unmapped (or made read-only) since it was described is refused, not a crash */
    const void *from = to_md ? (buf ? (const uint8_t *)buf + done : zeros) : a;
    void *into = to_md ? (void *)a : (uint8_t *)buf + done;
    ssize_t got = dk__copy_checked(into, from, (size_t)n);
    if (got != (ssize_t)n) {
      dk__fail(kIOReturnVMError, DK_CONSTRAINT_STATE,
               "bytes 0x%llx+0x%llx (address %p) are no longer mapped %s in this process: %s",
               (unsigned long long)(off + done), (unsigned long long)n, (void *)a, to_md ? "writable" : "readable",
               got < 0 ? strerror(errno) : "short copy");
      return done + (got > 0 ? (uint64_t)got : 0);
    }
    done += n;
  }
  return done;
}

/* ---- mappings --------------------------------------------------------------------------------- */

/* Show the caller's pages [va, va+n) (page-aligned) again at `at`: each mapping of this
 * process they lie in, as a second mapping of its shared pages. */
static IOReturn alias(uint64_t va, uint64_t n, uint8_t *at, int prot)
{
  while (n) {
    uint64_t end = 0;
    char perms[5];
    if (!dk__vma_find(va, &end, perms))
      return dk__fail(kIOReturnVMError, DK_CONSTRAINT_ARGUMENT, "address 0x%llx is not mapped in this process",
                      (unsigned long long)va);
    if (perms[3] != 's')
      return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
                      "address 0x%llx is private memory (malloc, MAP_PRIVATE): Linux cannot show private pages at a "
                      "second address; describe shared memory (memfd, MAP_SHARED), or add kIOMemoryMapCopyOnWrite "
                      "for a copy", (unsigned long long)va);
    uint64_t k = end - va < n ? end - va : n;
    if (dk__mremap((void *)(uintptr_t)va, 0, (size_t)k, MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "showing 0x%llx bytes at 0x%llx again (mremap)",
                            (unsigned long long)k, (unsigned long long)va);
    if (!(prot & PROT_WRITE) && dk__mprotect(at, (size_t)k, prot) < 0)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "making a view read-only");
    va += k;
    at += k;
    n -= k;
  }
  return kIOReturnSuccess;
}

static IOReturn gmd_map_at(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at)
{
  dk_gmd *g = as_gmd(md);
  uint64_t page = page_size(), mask = page - 1;
  uint64_t first = (uint64_t)(uintptr_t)at & ~mask, last = ((uint64_t)(uintptr_t)at + len + mask) & ~mask;
  if (g->variant == GMD_GUARD) {
    if (dk__mmap((void *)(uintptr_t)first, (size_t)(last - first), PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "mapping guard pages");
    return kIOReturnSuccess;
  }
  if (g->variant == GMD_PHYSICAL)
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
                    "physical ranges cannot be mapped from user space here (dmakit does not use /dev/mem)");
  if (md->flags & kIOMemoryMapCopyOnWrite) {
    /* a copy of the bytes as they are now, in memory of the mapping's own */
    if (dk__mmap((void *)(uintptr_t)first, (size_t)(last - first), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "mapping a copy of 0x%llx bytes", (unsigned long long)len);
    if (gmd_copy(md, off, at, len, false) != len) return dk__failure_code();
    if (!(prot & PROT_WRITE) && dk__mprotect((void *)(uintptr_t)first, (size_t)(last - first), prot) < 0)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "making a copy read-only");
    return kIOReturnSuccess;
  }
  /* each range's pages at their place in the view; two ranges may meet inside a page of the
   * view only where they meet in memory too */
  uint64_t end = off + len, prev_va_end = 0, prev_t_end = 0;
  for (uint64_t o = off; o < end;) {
    uint64_t run = 0;
    uint64_t va = gmd_source(md, o, &run, NULL);
    if (run > end - o) run = end - o;
    uint64_t t = (uint64_t)(uintptr_t)at + (o - off);
    if ((t - va) & mask)
      return dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT,
                      "range at 0x%llx starts at offset 0x%llx in its page but would appear at offset 0x%llx of a "
                      "page of the view: a mapping shows whole pages", (unsigned long long)va,
                      (unsigned long long)(va & mask), (unsigned long long)(t & mask));
    if (o > off && (prev_t_end & mask) && va != prev_va_end)
      return dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT,
                      "ranges meeting at descriptor offset 0x%llx share a page of the view but not of memory",
                      (unsigned long long)o);
    uint64_t vfirst = va & ~mask, vlast = (va + run + mask) & ~mask;
    IOReturn rc = alias(vfirst, vlast - vfirst, (uint8_t *)(uintptr_t)(t & ~mask), prot);
    if (rc != kIOReturnSuccess) return rc;
    prev_va_end = va + run;
    prev_t_end = t + run;
    o += run;
  }
  return kIOReturnSuccess;
}

const dk_md_ops dk__gmd_ops = { gmd_segment, gmd_source, gmd_prepare, gmd_complete, gmd_copy, gmd_map_at };

uint64_t dk__gmd_identity(IOMemoryDescriptor *md)
{
  /* a copy-on-write descriptor's mappings are copies: never the range itself */
  if (md->obj.cls != &dk__gmd_class || as_gmd(md)->variant != GMD_VIRTUAL || user_of(md)->count != 1 ||
      (md->flags & kIOMemoryMapCopyOnWrite))
    return 0;
  return user_of(md)->r[0].addr;
}

static void gmd_free(OSObject *o)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)o;
  dk_gmd *g = as_gmd(md);
  if (md->mem.kind == DK_PROVIDER_USER) gmd_unwire(md);   /* everything outstanding, completed */
  dk__free(g->iova);
  dk__md_destroy(md);
}

/* ---- factories --------------------------------------------------------------------------------- */

static IOMemoryDescriptor *gmd_init(const char *fn, const IOAddressRange *ranges, UInt32 count, UInt32 offset,
                                    task_t task, IOOptionBits options, IOMapper *mapper)
{
  IOOptionBits type = options & kIOMemoryTypeMask;
  bool virt = type == kIOMemoryTypeVirtual;
  if (type != kIOMemoryTypeVirtual && type != kIOMemoryTypePhysical) {
    dk__fail(type == kIOMemoryTypeUIO || type == kIOMemoryTypeUPL || type == kIOMemoryTypePersistentMD
                 ? kIOReturnUnsupported : kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "memory type 0x%x: dmakit describes virtual ranges (kIOMemoryTypeVirtual64, with a task) and "
             "physical ones (kIOMemoryTypePhysical64, NULL task)", type);
    return NULL;
  }
  if (virt && task != kernel_task) {
    dk__fail(task ? kIOReturnUnsupported : kIOReturnBadArgument, DK_CONSTRAINT_TASK,
             task ? "only this process's memory (kernel_task) can be described and pinned; another process's "
                    "pages cannot be pinned from here"
                  : "virtual ranges need a task: kernel_task for this process's memory");
    return NULL;
  }
  if (!virt && task) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_TASK, "physical ranges belong to no task: pass NULL");
    return NULL;
  }
  if (!ranges || !count) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "no ranges (%s)", ranges ? "count 0" : "NULL");
    return NULL;
  }
  if (offset) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "offset %u applies to UPLs only", offset);
    return NULL;
  }
  uint64_t total = 0, (*rs)[2] = dk__calloc(count, sizeof *rs);
  if (!rs) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for %u ranges", count);
    return NULL;
  }
  for (UInt32 i = 0; i < count; i++) {
    uint64_t a = ranges[i].address, l = ranges[i].length;
    if (a + l < a || total + l < total || (virt && a + l + page_size() < a)) {
      dk__free(rs);
      dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "range %u (0x%llx+0x%llx) wraps around, or the total does",
               i, (unsigned long long)a, (unsigned long long)l);
      return NULL;
    }
    rs[i][0] = a;
    rs[i][1] = l;
    total += l;
  }
  dk_gmd *g = dk__md_new(&dk__gmd_class, sizeof *g);
  IOMemoryDescriptor *md = g ? &g->md : NULL;
  bool ok = md && dk__user_create(&md->mem, (const uint64_t (*)[2])rs, count, virt);
  dk__free(rs);
  if (!ok) {
    OSObject_release(md);
    return NULL;
  }
  g->variant = virt ? GMD_VIRTUAL : GMD_PHYSICAL;
  if (options & kIOMemoryRemote) options |= kIOMemoryMapperNone;
  md->flags = options & ~kIOMemoryPreparedReadOnly;
  md->length = total;
  md->task = task;
  md->buffer = dk__mem_va(&md->mem);
  md->pageable = virt;
  md->thread_safe = (options & kIOMemoryThreadSafe) != 0;
  if (md->thread_safe && !dk__md_ext(md)) goto fail;
  if (!virt) {
    atomic_store(&md->wire_count, 1);     /* physical memory is wired by definition */
  } else if (!(options & kIOMemoryMapperNone)) {
    /* the given mapper, or the system mapper; only a translating one changes addresses */
    IOMapper *m = NULL;
    if (mapper) {
      if (dk__mapper_translates(mapper)) dk__mapper_retain(m = mapper);
    } else if ((m = dk__mapper_system_retain()) && !dk__mapper_translates(m)) {
      dk__mapper_release(m);
      m = NULL;
    }
    if (m) {
      dk_md_ext *x = dk__md_ext(md);
      if (!x) {
        dk__mapper_release(m);
        goto fail;
      }
      x->mapper = m;
      md->has_mapper = true;
    }
  }
  if (virt && (options & kIOMemoryAutoPrepare) && IOMemoryDescriptor_prepare(md, kIODirectionNone) != kIOReturnSuccess)
    goto fail;
  dk__enter(fn);
  return md;
fail:
  dk__fail_recode(fn, dk__failed() ? dk__failure_code() : kIOReturnNoMemory);
  OSObject_release(md);
  return NULL;
}

/* XNU: the type follows the task */
static IOOptionBits typed(IOOptionBits options, task_t task)
{
  return (options & ~kIOMemoryTypeMask) | (task ? kIOMemoryTypeVirtual64 : kIOMemoryTypePhysical64);
}

IOMemoryDescriptor *IOMemoryDescriptor_withAddressRanges(IOAddressRange *ranges, UInt32 rangeCount, IOOptionBits options,
                                                         task_t task)
{
  dk__enter("withAddressRanges");
  return gmd_init("withAddressRanges", ranges, rangeCount, 0, task, typed(options, task), NULL);
}

IOMemoryDescriptor *IOMemoryDescriptor_withAddressRange(mach_vm_address_t address, mach_vm_size_t length,
                                                        IOOptionBits options, task_t task)
{
  dk__enter("withAddressRange");
  IOAddressRange r = { address, length };
  return gmd_init("withAddressRange", &r, 1, 0, task, typed(options, task), NULL);
}

IOMemoryDescriptor *IOMemoryDescriptor_withOptions(void *buffers, UInt32 count, UInt32 offset, task_t task,
                                                   IOOptionBits options, IOMapper *mapper)
{
  dk__enter("withOptions");
  return gmd_init("withOptions", buffers, count, offset, task, options, mapper);
}

IOMemoryDescriptor *IOMemoryDescriptor_withAddress(void *address, IOByteCount length, IODirection direction)
{
  dk__enter("withAddress");
  IOAddressRange r = { (IOVirtualAddress)(uintptr_t)address, length };
  return gmd_init("withAddress", &r, 1, 0, kernel_task,
                  (direction & ~kIOMemoryTypeMask) | kIOMemoryTypeVirtual64 | kIOMemoryAutoPrepare, NULL);
}

IOMemoryDescriptor *IOMemoryDescriptor_withPhysicalAddress(IOPhysicalAddress address, IOByteCount length,
                                                           IODirection direction)
{
  dk__enter("withPhysicalAddress");
  IOAddressRange r = { address, length };
  return gmd_init("withPhysicalAddress", &r, 1, 0, NULL,
                  (direction & ~kIOMemoryTypeMask) | kIOMemoryTypePhysical64, NULL);
}

IOGuardPageMemoryDescriptor *IOGuardPageMemoryDescriptor_withSize(vm_size_t size)
{
  dk__enter("IOGuardPageMemoryDescriptor::withSize");
  uint64_t bytes;
  if (!size || !dk__round_up(size, page_size(), &bytes)) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "size 0x%llx: guard pages need a size that rounds to pages",
             (unsigned long long)size);
    return NULL;
  }
  dk_gmd *g = dk__md_new(&dk__guard_class, sizeof *g);
  if (!g) return NULL;
  g->variant = GMD_GUARD;
  g->md.flags = kIOMemoryTypeVirtual64 | kIOMemoryAsReference | kIODirectionOutIn;
  g->md.length = bytes;
  g->md.task = kernel_task;
  return (IOGuardPageMemoryDescriptor *)g;
}
