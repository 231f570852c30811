/* src/iokit/md.c: the IOMemoryDescriptor methods a buffer inherits (REFERENCE.md §4): length,
 * direction, tag, flags, counted prepare/complete, physical segments from the cached frames,
 * readBytes/writeBytes with XNU's all-or-nothing range rule, cache-line operations and the
 * purgeable state. Where XNU panics (unprepared pageable memory) these return 0 or an error
 * and record why. */
#include "iokit/internal.h"
#include "prim/prim.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>


dk_md_ext *dk__md_ext(IOMemoryDescriptor *md)
{
  dk_md_ext *x = dk__md_ext_peek(md);
  if (x) return x;
  x = dk__calloc(1, sizeof *x);
  if (!x) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the descriptor's mapping state");
    return NULL;
  }
  pthread_mutex_init(&x->lock, NULL);
  dk_md_ext *none = NULL;
  if (!atomic_compare_exchange_strong_explicit(&md->ext, &none, x, memory_order_acq_rel, memory_order_acquire)) {
    pthread_mutex_destroy(&x->lock);       /* another thread installed one first */
    dk__free(x);
    return none;
  }
  return x;
}

IOMemoryDescriptor *dk__md_other(const void *p)
{
  const OSObject *o = p;
  if (!o) return NULL;
  const dk_class *c = o->cls;
  if (c == &dk__gmd_class || c == &dk__guard_class || c == &dk__sub_class || c == &dk__multi_class)
    return (IOMemoryDescriptor *)(uintptr_t)p;
  return NULL;
}

void *dk__md_new(const dk_class *cls, size_t size)
{
  IOMemoryDescriptor *md = dk__calloc(1, size);
  if (!md) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the %s object", cls->name);
    return NULL;
  }
  dk__object_init(&md->obj, cls);
  md->mem = DK_MEM_NONE_INIT;
  return md;
}

void dk__md_destroy(IOMemoryDescriptor *md)
{
  dk__md_teardown(md);
  md->obj.cls = NULL;          /* a stale pointer to it is no longer a descriptor */
  dk__free(md);
}

uint64_t dk__md_source(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt)
{
  if (md->obj.cls->md) return md->obj.cls->md->source(md, off, run, virt);
  if (run) *run = md->length - off;
  if (virt) *virt = true;
  return (uint64_t)(uintptr_t)(md->buffer + off);
}

uint64_t dk__md_copy(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md)
{
  if (md->obj.cls->md) return md->obj.cls->md->copy(md, off, buf, len, to_md);
  if (!to_md) memcpy(buf, md->buffer + off, (size_t)len);
  else if (buf) memcpy(md->buffer + off, buf, (size_t)len);
  else memset(md->buffer + off, 0, (size_t)len);
  return len;
}

IOReturn dk__md_map_at(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at)
{
  if (md->obj.cls->md) return md->obj.cls->md->map_at(md, off, len, prot, at);
  /* a buffer: its provider's pages again, byte `off` at `at` (whole hugepages for the pool) */
  uint64_t src = (uint64_t)(md->buffer - dk__mem_va(&md->mem)) + off, g = dk__mem_granule(&md->mem);
  if (((uint64_t)(uintptr_t)at - src) & (g - 1))
    return dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT,
                    "a buffer's 0x%llx-byte pages cannot be mapped at 0x%llx: the address must have the same "
                    "offset within a page as the byte it shows", (unsigned long long)g,
                    (unsigned long long)(uintptr_t)at);
  void *base = NULL;
  size_t span = 0;
  if (!dk__mem_map(&md->mem, src, len, prot, 0, at, true, false, &base, &span)) {
    if (!dk__failed()) dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "mapping 0x%llx bytes of a buffer", (unsigned long long)len);
    return dk__failure_code();
  }
  dk__prim_count_within(span);   /* over the caller's reservation, already counted */
  return kIOReturnSuccess;
}

void dk__md_lock(IOMemoryDescriptor *md)
{
  if (md->thread_safe) pthread_mutex_lock(&dk__md_ext_peek(md)->lock);
}
void dk__md_unlock(IOMemoryDescriptor *md)
{
  if (md->thread_safe) pthread_mutex_unlock(&dk__md_ext_peek(md)->lock);
}

static IOMemoryDescriptor *enter_md(const char *fn, void *p)
{
  dk__enter(fn);
  IOMemoryDescriptor *md = dk__md(p);
  if (!md) dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an initialized memory descriptor");
  return md;
}

IOReturn dk__md_phys_ready(IOMemoryDescriptor *md)
{
  if (md->pageable && md->wire_count == 0)
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
                    "pageable memory is not prepared: call prepare() first (XNU panics here)");
  const dk_caps *caps = dk__caps();
  if (!caps->pagemap_frames)
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE,
                    "physical addresses need root: /proc/self/pagemap hides frame numbers without CAP_SYS_ADMIN");
  if (!(md->mem.flags & DK_MEM_PINNED) && !dk__pins_ok()) return kIOReturnCannotWire;
  if (!dk__mem_frames_known(&md->mem))
    return dk__fail(kIOReturnInternalError, DK_CONSTRAINT_STATE, "frames of wired memory are unknown");
  return kIOReturnSuccess;
}

IOReturn dk__md_wire(IOMemoryDescriptor *md)
{
  if (md->mem.flags & DK_MEM_WIRED) return kIOReturnSuccess;
  if (!dk__mem_wire(&md->mem)) return dk__failed() ? dk__failure_code() : kIOReturnCannotWire;
  if (md->has_mapper) {
    IOReturn rc = dk__md_iova_map(md);
    if (rc != kIOReturnSuccess) {
      dk__mem_unwire(&md->mem);
      return rc;
    }
  }
  return kIOReturnSuccess;
}

void dk__md_unwire(IOMemoryDescriptor *md)
{
  dk__md_iova_unmap(md);
  dk__mem_unwire(&md->mem);
}

IOReturn dk__md_iova_map(IOMemoryDescriptor *md)
{
  dk_md_ext *x = dk__md_ext_peek(md);
  if (!md->has_mapper || dk__mapping_live(&x->iova_use)) return kIOReturnSuccess;
  return dk__mapper_map(x->mapper, md->buffer, x->iova_len, dk__mem_granule(&md->mem), &x->iova_spec, &x->iova_use);
}

void dk__md_iova_unmap(IOMemoryDescriptor *md)
{
  dk_md_ext *x = dk__md_ext_peek(md);
  if (x && dk__mapping_live(&x->iova_use)) dk__mapper_unmap(x->mapper, &x->iova_use);
}

void dk__md_teardown(IOMemoryDescriptor *md)
{
  dk_md_ext *x = dk__md_ext_peek(md);
  if (x) OSObject_release(atomic_exchange(&x->context, NULL));
  if (__builtin_expect(md->task != kernel_task && md->task, 0)) {   /* a client's buffer */
    if (x && x->user_id) dk__share_unmap(md->task, x->user_id);     /* gone from the client too */
    dk__task_release(md->task);
  }
  md->task = NULL;
  if (__builtin_expect(x != NULL, 0)) {
    dk__md_iova_unmap(md);
    dk__mapper_release(x->mapper);
  }
  atomic_store_explicit(&md->wire_count, 0, memory_order_relaxed);   /* not a fence: the object is ours */
  dk__mem_free(&md->mem);               /* zeroes pool memory: freed memory never shows its contents */
  md->buffer = NULL;
  if (x) {
    pthread_mutex_destroy(&x->lock);
    dk__free(x);
    atomic_store_explicit(&md->ext, NULL, memory_order_relaxed);
  }
  md->has_mapper = false;
}

/* ---- plain accessors ---------------------------------------------------------------- */

IOByteCount IOMemoryDescriptor_getLength(IOMemoryDescriptor *p)
{
  IOMemoryDescriptor *md = dk__md(p);
  return md ? md->length : 0;
}

IODirection IOMemoryDescriptor_getDirection(IOMemoryDescriptor *p)
{
  IOMemoryDescriptor *md = dk__md(p);
  return md ? (md->flags & kIOMemoryDirectionMask) : kIODirectionNone;
}

void IOMemoryDescriptor_setDirection(IOMemoryDescriptor *p, IODirection direction)
{
  IOMemoryDescriptor *md = dk__md(p);
  if (md) md->flags = (md->flags & ~kIOMemoryDirectionMask) | direction;   /* unmasked, as XNU */
}

IOOptionBits IOMemoryDescriptor_getTag(IOMemoryDescriptor *p)
{
  IOMemoryDescriptor *md = dk__md(p);
  return md ? md->tag : 0;
}

void IOMemoryDescriptor_setTag(IOMemoryDescriptor *p, IOOptionBits tag)
{
  IOMemoryDescriptor *md = dk__md(p);
  if (md) md->tag = tag;
}

uint64_t IOMemoryDescriptor_getFlags(IOMemoryDescriptor *p)
{
  IOMemoryDescriptor *md = dk__md(p);
  return md ? md->flags : 0;
}

/* ---- physical segments -------------------------------------------------------------- */

static __attribute__((noinline)) addr64_t physical_segment(IOMemoryDescriptor *p, IOByteCount offset,
                                                             IOByteCount *length, IOOptionBits options);

addr64_t IOMemoryDescriptor_getPhysicalSegment(IOMemoryDescriptor *p, IOByteCount offset,
                                               IOByteCount *length, IOOptionBits options)
{
  /* fast path (a leaf: the rest is out of line): pinned pool memory is one contiguous range
   * whose frames never change */
  IOMemoryDescriptor *fast = dk__md(p);
  if (__builtin_expect(fast && fast->phys_fixed && offset < fast->length, 1)) {
    dk__enter("getPhysicalSegment");
    if (length) *length = fast->length - offset;
    return fast->mem.u.pool.pa + offset;
  }
  return physical_segment(p, offset, length, options);
}

static addr64_t physical_segment(IOMemoryDescriptor *p, IOByteCount offset, IOByteCount *length,
                                 IOOptionBits options)
{
  if (length) *length = 0;
  IOMemoryDescriptor *md = enter_md("getPhysicalSegment", p);
  if (!md) return 0;
  if (offset >= md->length) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "offset 0x%llx is at or past the length 0x%llx",
             (unsigned long long)offset, (unsigned long long)md->length);
    return 0;
  }
  size_t run;
  addr64_t pa;
  IOByteCount rest = md->length - offset;
  if (md->obj.cls->md) {                 /* another kind: its own walk */
    uint64_t r = 0;
    pa = md->obj.cls->md->segment(md, offset, &r, options);
    if (length) *length = pa ? (r < rest ? r : rest) : 0;
    return pa;
  }
  if (md->has_mapper && !(options & kIOMemoryMapperNone)) {
    /* the bus address: one IOVA range for the whole buffer (§4) */
    const dk_md_ext *x = dk__md_ext_peek(md);
    if (md->pageable) dk__md_lock(md);
    uint64_t iova = dk__mapping_live(&x->iova_use) ? x->iova_use.iova + offset : 0;
    if (md->pageable) dk__md_unlock(md);
    if (!iova) {
      dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
               "pageable memory has no I/O address until prepare() maps it");
      return 0;
    }
    if (length) *length = rest;
    return iova;
  }
  /* pageable memory changes state under prepare/complete: with ThreadSafe, read it locked */
  bool lock = md->pageable;
  if (lock) dk__md_lock(md);
  if (dk__md_phys_ready(md) != kIOReturnSuccess) {
    if (lock) dk__md_unlock(md);
    return 0;
  }
  uint64_t r;
  pa = dk__mem_phys(&md->mem, offset, &r);
  run = (size_t)r;
  if (lock) dk__md_unlock(md);
  if (length) *length = run < rest ? run : rest;
  return pa;
}

IOPhysicalAddress IOMemoryDescriptor_getPhysicalAddress(IOMemoryDescriptor *md)
{
  return IOMemoryDescriptor_getPhysicalSegment(md, 0, NULL, 0);
}

/* ---- prepare / complete --------------------------------------------------------------- */

/* A buffer's first prepare wires it when it is pageable (wired buffers are wired for life). */
static IOReturn buffer_wire(IOMemoryDescriptor *md, IODirection dir)
{
  (void)dir;
  return md->pageable ? dk__md_wire(md) : kIOReturnSuccess;
}
static void buffer_unwire(IOMemoryDescriptor *md)
{
  /* Wired buffers keep their pin for life (XNU's wired kernel memory never moves); only
   * pageable memory is unwired here. */
  if (md->pageable) dk__md_unwire(md);
}

IOReturn dk__md_prepare_counted(IOMemoryDescriptor *md, IODirection forDirection,
                                IOReturn (*wire)(IOMemoryDescriptor *md, IODirection dir))
{
  IOReturn rc = kIOReturnSuccess;
  dk__md_lock(md);
  /* XNU (wireVirtual): only kIODirectionNone itself means "the descriptor's direction"; a
   * direction of prepare-only bits (PrepareNoFault ...) has no Out bit, so it prepares for
   * both ways, and a descriptor prepared read-only refuses it */
  IODirection dir = forDirection == kIODirectionNone ? (md->flags & kIOMemoryDirectionMask) : forDirection;
  bool out_only = (dir & kIODirectionOutIn) == kIODirectionOut;
  if (md->wire_count && (md->flags & kIOMemoryPreparedReadOnly) && !out_only) {
    rc = dk__fail(kIOReturnNotWritable, DK_CONSTRAINT_STATE,
                  "the memory is prepared read-only (direction Out); a prepare for writing is refused");
    goto out;
  }
  if (md->wire_count == UINT32_MAX) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_STATE, "prepare count overflow");
    goto out;
  }
  if (md->wire_count == 0) {
    if (wire && (rc = wire(md, dir)) != kIOReturnSuccess) goto out;
    if (out_only) md->flags |= kIOMemoryPreparedReadOnly;
  }
  md->wire_count++;
out:
  dk__md_unlock(md);
  return rc;
}

IOReturn dk__md_complete_counted(IOMemoryDescriptor *md, void (*unwire)(IOMemoryDescriptor *md))
{
  dk__md_lock(md);
  if (md->wire_count && --md->wire_count == 0) {
    md->flags &= ~kIOMemoryPreparedReadOnly;
    if (unwire) unwire(md);
  }
  dk__md_unlock(md);
  return kIOReturnSuccess;    /* always, even unbalanced (XNU only asserts) */
}

IOReturn IOMemoryDescriptor_prepare(IOMemoryDescriptor *p, IODirection forDirection)
{
  IOMemoryDescriptor *md = enter_md("prepare", p);
  if (!md) return kIOReturnBadArgument;
  if (md->obj.cls->md) return md->obj.cls->md->prepare(md, forDirection);
  return dk__md_prepare_counted(md, forDirection, buffer_wire);
}

IOReturn IOMemoryDescriptor_complete(IOMemoryDescriptor *p, IODirection forDirection)
{
  IOMemoryDescriptor *md = enter_md("complete", p);
  if (!md) return kIOReturnBadArgument;
  if (md->obj.cls->md) return md->obj.cls->md->complete(md, forDirection);
  return dk__md_complete_counted(md, buffer_unwire);
}

/* ---- copies ----------------------------------------------------------------------------- */

/* XNU's all-or-nothing range rule; records why not. */
static bool range_ok(IOMemoryDescriptor *md, IOByteCount off, IOByteCount len)
{
  if (off > md->length || off + len < off || off + len > md->length) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE,
             "range 0x%llx+0x%llx is outside the length 0x%llx: nothing copied",
             (unsigned long long)off, (unsigned long long)len, (unsigned long long)md->length);
    return false;
  }
  if (md->pageable && md->wire_count == 0) {
    dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
             "pageable memory is not prepared: call prepare() first (XNU panics here)");
    return false;
  }
  return true;
}

IOByteCount IOMemoryDescriptor_readBytes(IOMemoryDescriptor *p, IOByteCount offset, void *bytes,
                                         IOByteCount withLength)
{
  IOMemoryDescriptor *md = enter_md("readBytes", p);
  if (!md) return 0;
  if (!bytes) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "destination is NULL");
    return 0;
  }
  IOByteCount done = 0;
  dk__md_lock(md);                      /* with ThreadSafe, the checks see a settled state */
  if (range_ok(md, offset, withLength)) done = dk__md_copy(md, offset, bytes, withLength, false);
  dk__md_unlock(md);
  return done;
}

IOByteCount IOMemoryDescriptor_writeBytes(IOMemoryDescriptor *p, IOByteCount offset, const void *bytes,
                                          IOByteCount withLength)
{
  IOMemoryDescriptor *md = enter_md("writeBytes", p);
  if (!md) return 0;
  IOByteCount done = 0;
  dk__md_lock(md);
  if (!range_ok(md, offset, withLength)) {
    /* nothing copied; the reason is recorded */
  } else if (md->flags & kIOMemoryPreparedReadOnly) {
    dk__fail(kIOReturnNotWritable, DK_CONSTRAINT_STATE,
             "the memory is prepared read-only (direction Out): writeBytes copies nothing");
  } else {
    done = dk__md_copy(md, offset, (void *)(uintptr_t)bytes, withLength, true);   /* NULL zero-fills */
  }
  dk__md_unlock(md);
  return done;
}

/* ---- cache operations ---------------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static int g_clflushopt, g_clwb;
static unsigned g_line;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static void cpu_probe(void)
{
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    g_clflushopt = (b >> 23) & 1;
    g_clwb = (b >> 24) & 1;
  }
  if (__get_cpuid(1, &a, &b, &c, &d)) g_line = ((b >> 8) & 0xff) * 8;
  if (!g_line) g_line = 64;
}
/* Write back and invalidate (flush) or write back only (store) every line of the range. */
static void cache_lines(uint8_t *p, size_t len, int store_only)
{
  pthread_once(&g_cpu_once, cpu_probe);
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)(g_line - 1), end = (uintptr_t)p + len;
  if (!g_clflushopt && !g_clwb) __asm__ volatile("mfence" ::: "memory");
  for (; a < end; a += g_line) {
    volatile char *line = (volatile char *)a;
    if (store_only && g_clwb)   __asm__ volatile("clwb %0" : "+m"(*line));
    else if (g_clflushopt)      __asm__ volatile("clflushopt %0" : "+m"(*line));
    else                        __asm__ volatile("clflush %0" : "+m"(*line));
  }
  if (g_clflushopt || g_clwb) __asm__ volatile("sfence" ::: "memory");
  else                        __asm__ volatile("mfence" ::: "memory");
}
#elif defined(__aarch64__)
static void cache_lines(uint8_t *p, size_t len, int store_only)
{
  uint64_t ctr;
  __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
  size_t line = 4u << ((ctr >> 16) & 0xf);
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)(line - 1), end = (uintptr_t)p + len;
  for (; a < end; a += line) {
    if (store_only) __asm__ volatile("dc cvac, %0" ::"r"(a) : "memory");
    else            __asm__ volatile("dc civac, %0" ::"r"(a) : "memory");
  }
  __asm__ volatile("dsb sy" ::: "memory");
}
#else
#error "dmakit: cache-line operations are written for x86-64 and arm64"
#endif

/* The cache lines of another kind's memory, run by run through this process's view of it; a
 * run no longer mapped readable (unmapped while prepared) is reported, never touched. */
static IOReturn other_cache_lines(IOMemoryDescriptor *md, uint64_t off, uint64_t len, bool store)
{
  uint64_t page = dk__caps()->page_size, end = off + len;
  while (off < end) {
    uint64_t run = 0;
    bool virt = false;
    uint64_t a = dk__md_source(md, off, &run, &virt);
    if (!a || !virt)
      return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
                      "bytes from 0x%llx have no mapping in this process (physical ranges or guard pages): "
                      "their cache lines cannot be reached", (unsigned long long)off);
    if (run > end - off) run = end - off;
    uint64_t first = a & ~(page - 1), last = (a + run + page - 1) & ~(page - 1);
    if (dk__madvise((void *)(uintptr_t)first, (size_t)(last - first), MADV_POPULATE_READ) < 0 && errno != EINVAL)
      return dk__fail(kIOReturnVMError, DK_CONSTRAINT_STATE,
                      "bytes 0x%llx+0x%llx (address 0x%llx) are no longer mapped readable in this process",
                      (unsigned long long)off, (unsigned long long)run, (unsigned long long)a);
    cache_lines((uint8_t *)(uintptr_t)a, (size_t)run, store);
    off += run;
  }
  return kIOReturnSuccess;
}

IOReturn IOMemoryDescriptor_performOperation(IOMemoryDescriptor *p, IOOptionBits options,
                                             IOByteCount offset, IOByteCount length)
{
  IOMemoryDescriptor *md = enter_md("performOperation", p);
  if (!md) return kIOReturnBadArgument;
  if (options != kIOMemoryIncoherentIOFlush && options != kIOMemoryIncoherentIOStore &&
      options != kIOMemoryClearEncrypted && options != kIOMemorySetEncrypted)
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT, "operation %u is not one of 1, 2, 50, 51",
                    options);
  /* XNU: remaining = min(length, getLength() - offset), unsigned, so past the end the
   * walk finds no segment and reports an underrun; offset == length has nothing to do. */
  IOByteCount remaining = length < md->length - offset ? length : md->length - offset;
  if (remaining == 0) return kIOReturnSuccess;
  if (offset >= md->length)
    return dk__fail(kIOReturnUnderrun, DK_CONSTRAINT_RANGE, "offset 0x%llx is past the length 0x%llx",
                    (unsigned long long)offset, (unsigned long long)md->length);
  if (options != kIOMemoryIncoherentIOFlush && options != kIOMemoryIncoherentIOStore)
    return kIOReturnSuccess;   /* ClearEncrypted / SetEncrypted: Linux has no per-page encryption control */
  bool store = options == kIOMemoryIncoherentIOStore;
  if (!md->obj.cls->md) {
    dk__md_lock(md);
    cache_lines(md->buffer + offset, (size_t)remaining, store);
    dk__md_unlock(md);
    return kIOReturnSuccess;
  }
  return other_cache_lines(md, offset, remaining, store);
}

/* ---- purgeable state ------------------------------------------------------------------ */

IOReturn IOMemoryDescriptor_setPurgeable(IOMemoryDescriptor *p, IOOptionBits newState, IOOptionBits *oldState)
{
  IOMemoryDescriptor *md = enter_md("setPurgeable", p);
  if (!md) return kIOReturnBadArgument;
  if (md->obj.cls->md)
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_STATE,
                    "only a pageable, purgeable IOBufferMemoryDescriptor has a purgeable state");
  IOBufferMemoryDescriptor *b = (IOBufferMemoryDescriptor *)md;
  dk_md_ext *x = dk__md_ext_peek(md);                 /* purgeable buffers always have one */
  IOOptionBits current = x && x->purgeable_state ? x->purgeable_state : kIOMemoryPurgeableNonVolatile;
  IOOptionBits op = newState & 0xf;
  if (op < kIOMemoryPurgeableKeepCurrent || op > kIOMemoryPurgeableEmpty) {
    if (oldState) *oldState = current;
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "purgeable state %u is not 1-4", op);
  }
  if (!b->purgeable)
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_STATE,
                    "the memory is not purgeable (kIOMemoryPageable | kIOMemoryPurgeable)");
  IOReturn rc = kIOReturnSuccess;
  dk__md_lock(md);
  if (op == kIOMemoryPurgeableEmpty && !(md->mem.flags & DK_MEM_WIRED)) {
    if (dk__mem_discard(&md->mem) < 0)
      rc = dk__fail(kIOReturnVMError, DK_CONSTRAINT_RESOURCE, "discarding the contents failed");
  }
  if (rc == kIOReturnSuccess) {
    if (op != kIOMemoryPurgeableKeepCurrent) x->purgeable_state = op;
    if (oldState) *oldState = current;
  }
  dk__md_unlock(md);
  return rc;
}

/* ---- getDMAMapLength, context ----------------------------------------------------------- */

uint64_t IOMemoryDescriptor_getDMAMapLength(IOMemoryDescriptor *p, uint64_t *offset)
{
  IOMemoryDescriptor *md = enter_md("getDMAMapLength", p);
  if (offset) *offset = 0;
  if (!md) return 0;
  /* XNU: the pages the memory's source runs touch, each run rounded out to pages; the first
   * run's offset within its page; the length when there is no source address at all */
  uint64_t page = dk__caps()->page_size, total = 0, off = 0;
  dk__md_lock(md);
  while (off < md->length) {
    uint64_t run = 0;
    uint64_t a = dk__md_source(md, off, &run, NULL);
    if (!a || !run) break;
    if (run > md->length - off) run = md->length - off;
    if (offset && !off) *offset = a & (page - 1);
    total += ((a + run + page - 1) & ~(page - 1)) - (a & ~(page - 1));
    off += run;
  }
  dk__md_unlock(md);
  if (!off) {
    total = md->length;
    if (offset) *offset = 0;
  }
  return total;
}

void IOMemoryDescriptor_setContext(IOMemoryDescriptor *p, void *object)
{
  IOMemoryDescriptor *md = enter_md("setContext", p);
  if (!md || (!object && !dk__md_ext_peek(md))) return;   /* nothing set, nothing to set */
  dk_md_ext *x = dk__md_ext(md);
  if (!x) return;
  OSObject_retain(object);
  pthread_mutex_t *lk = dk__md_set_lock(md);   /* copyContext retains under it */
  pthread_mutex_lock(lk);
  void *old = atomic_exchange(&x->context, object);
  pthread_mutex_unlock(lk);
  OSObject_release(old);
}

void *IOMemoryDescriptor_copyContext(IOMemoryDescriptor *p)
{
  IOMemoryDescriptor *md = dk__md(p);
  dk_md_ext *x = md ? dk__md_ext_peek(md) : NULL;
  if (!x) return NULL;
  /* retained under the set lock, which setContext's exchange takes: the old object it releases
   * after is never the one retained here */
  pthread_mutex_t *lk = dk__md_set_lock(md);
  pthread_mutex_lock(lk);
  void *o = atomic_load(&x->context);
  OSObject_retain(o);
  pthread_mutex_unlock(lk);
  return o;
}
