/* src/iokit/composite.c: descriptors made of other descriptors (XNU IOSubMemoryDescriptor.cpp,
 * IOMultiMemoryDescriptor.cpp): a window of one parent, and several descriptors end to end.
 * They own no memory: prepare, complete, segments, copies and mappings go to the descriptors
 * they are made of, each asked for its own part. */
#include "iokit/internal.h"
#include "prim/prim.h"

#include <string.h>

typedef struct dk_sub {
  IOMemoryDescriptor  md;
  IOMemoryDescriptor *parent;    /* retained */
  uint64_t            start;
} dk_sub;

typedef struct dk_multi {
  IOMemoryDescriptor   md;
  uint32_t             count;
  IOMemoryDescriptor **mds;      /* each retained */
} dk_multi;

static void sub_free(OSObject *o);
static void multi_free(OSObject *o);
extern const dk_md_ops dk__sub_ops, dk__multi_ops;
const dk_class dk__sub_class = { 0x1b3d000au, "IOSubMemoryDescriptor", sub_free, false, &dk__sub_ops };
const dk_class dk__multi_class = { 0x1b3d000bu, "IOMultiMemoryDescriptor", multi_free, false, &dk__multi_ops };

/* ---- IOSubMemoryDescriptor ------------------------------------------------------------------ */

static dk_sub *as_sub(IOMemoryDescriptor *md) { return (dk_sub *)md; }

static addr64_t sub_segment(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, IOOptionBits options)
{
  dk_sub *s = as_sub(md);
  IOByteCount l = 0;
  addr64_t a = IOMemoryDescriptor_getPhysicalSegment(s->parent, s->start + off, &l, options);
  *run = l;
  return a;
}

static uint64_t sub_source(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt)
{
  dk_sub *s = as_sub(md);
  uint64_t a = dk__md_source(s->parent, s->start + off, run, virt);
  if (run && *run > md->length - off) *run = md->length - off;
  return a;
}

static IOReturn sub_prepare(IOMemoryDescriptor *md, IODirection dir)
{
  return IOMemoryDescriptor_prepare(as_sub(md)->parent, dir);
}

static IOReturn sub_complete(IOMemoryDescriptor *md, IODirection dir)
{
  return IOMemoryDescriptor_complete(as_sub(md)->parent, dir);
}

static uint64_t sub_copy(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md)
{
  return dk__md_copy(as_sub(md)->parent, as_sub(md)->start + off, buf, len, to_md);
}

static IOReturn sub_map_at(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at)
{
  return dk__md_map_at(as_sub(md)->parent, as_sub(md)->start + off, len, prot, at);
}

const dk_md_ops dk__sub_ops = { sub_segment, sub_source, sub_prepare, sub_complete, sub_copy, sub_map_at };

IOMemoryDescriptor *dk__sub_innermost(IOMemoryDescriptor *md, uint64_t *off)
{
  while (md->obj.cls == &dk__sub_class) {
    *off += as_sub(md)->start;
    md = as_sub(md)->parent;
  }
  return md;
}

static void sub_free(OSObject *o)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)o;
  OSObject_release(as_sub(md)->parent);
  dk__md_destroy(md);
}

IOSubMemoryDescriptor *IOSubMemoryDescriptor_withSubRange(IOMemoryDescriptor *of, IOByteCount offset,
                                                          IOByteCount length, IOOptionBits options)
{
  dk__enter("IOSubMemoryDescriptor::withSubRange");
  IOMemoryDescriptor *parent = dk__md(of);
  if (!parent) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "the parent is not an initialized memory descriptor");
    return NULL;
  }
  if (offset + length < offset || offset + length > parent->length) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "sub-range 0x%llx+0x%llx is outside the parent's length 0x%llx",
             (unsigned long long)offset, (unsigned long long)length, (unsigned long long)parent->length);
    return NULL;
  }
  dk_sub *s = dk__md_new(&dk__sub_class, sizeof *s);
  if (!s) return NULL;
  OSObject_retain(parent);
  s->parent = parent;
  s->start = offset;
  s->md.length = length;
  /* XNU: the direction as given, thread-safe (the parent locks what it holds), the parent's tag */
  s->md.flags = options | kIOMemoryThreadSafe;
  s->md.tag = parent->tag;
  return (IOSubMemoryDescriptor *)s;
}

/* ---- IOMultiMemoryDescriptor ---------------------------------------------------------------- */

static dk_multi *as_multi(IOMemoryDescriptor *md) { return (dk_multi *)md; }

/* The part holding byte `off`, and off within it; NULL past the end. */
static IOMemoryDescriptor *part_at(IOMemoryDescriptor *md, uint64_t *off)
{
  dk_multi *m = as_multi(md);
  for (uint32_t i = 0; i < m->count; i++) {
    if (*off < m->mds[i]->length) return m->mds[i];
    *off -= m->mds[i]->length;
  }
  return NULL;
}

static addr64_t multi_segment(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, IOOptionBits options)
{
  IOMemoryDescriptor *part = part_at(md, &off);
  IOByteCount l = 0;
  addr64_t a = part ? IOMemoryDescriptor_getPhysicalSegment(part, off, &l, options) : 0;
  *run = l;
  return a;
}

static uint64_t multi_source(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt)
{
  IOMemoryDescriptor *part = part_at(md, &off);
  if (!part) {
    if (run) *run = 0;
    return 0;
  }
  return dk__md_source(part, off, run, virt);
}

static IOReturn multi_prepare(IOMemoryDescriptor *md, IODirection dir)
{
  dk_multi *m = as_multi(md);
  if (dir == kIODirectionNone) dir = md->flags & kIODirectionOutIn;
  for (uint32_t i = 0; i < m->count; i++) {
    IOReturn rc = IOMemoryDescriptor_prepare(m->mds[i], dir);
    if (rc != kIOReturnSuccess) {
      while (i-- > 0) IOMemoryDescriptor_complete(m->mds[i], dir);   /* undo what was prepared */
      return dk__fail(rc, DK_CONSTRAINT_STATE, "preparing a part failed");
    }
  }
  dk__enter("prepare");
  return kIOReturnSuccess;
}

static IOReturn multi_complete(IOMemoryDescriptor *md, IODirection dir)
{
  dk_multi *m = as_multi(md);
  if (dir == kIODirectionNone) dir = md->flags & kIODirectionOutIn;
  IOReturn last = kIOReturnSuccess;
  for (uint32_t i = 0; i < m->count; i++) {
    IOReturn rc = IOMemoryDescriptor_complete(m->mds[i], dir);
    if (rc != kIOReturnSuccess) last = rc;
  }
  return last;
}

static uint64_t multi_copy(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md)
{
  uint64_t done = 0;
  while (done < len) {
    uint64_t in = off + done;
    IOMemoryDescriptor *part = part_at(md, &in);
    uint64_t n = part->length - in < len - done ? part->length - in : len - done;
    uint64_t got = dk__md_copy(part, in, buf ? (uint8_t *)buf + done : NULL, n, to_md);
    done += got;
    if (got != n) break;
  }
  return done;
}

/* XNU doMap: each part mapped in turn over the reservation, where the previous one ends. A part
 * starts on a page of the view unless it is where the view starts. */
static IOReturn multi_map_at(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at)
{
  uint64_t mask = dk__caps()->page_size - 1, done = 0;
  while (done < len) {
    uint64_t in = off + done;
    IOMemoryDescriptor *part = part_at(md, &in);
    uint64_t n = part->length - in < len - done ? part->length - in : len - done;
    if (done && ((uintptr_t)(at + done) & mask))
      return dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT,
                      "a part of the IOMultiMemoryDescriptor starts at offset 0x%llx of a page of the view: each "
                      "part after the first must start on a page", (unsigned long long)((uintptr_t)(at + done) & mask));
    IOReturn rc = dk__md_map_at(part, in, n, prot, at + done);
    if (rc != kIOReturnSuccess) return rc;
    done += n;
  }
  return kIOReturnSuccess;
}

const dk_md_ops dk__multi_ops = { multi_segment, multi_source, multi_prepare, multi_complete, multi_copy, multi_map_at };

static void multi_free(OSObject *o)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)o;
  dk_multi *m = as_multi(md);
  for (uint32_t i = 0; i < m->count; i++) OSObject_release(m->mds[i]);
  dk__free(m->mds);
  dk__md_destroy(md);
}

IOMultiMemoryDescriptor *IOMultiMemoryDescriptor_withDescriptors(IOMemoryDescriptor **descriptors, UInt32 withCount,
                                                                 IODirection withDirection, bool asReference)
{
  (void)asReference;     /* the array is always copied: the caller may reuse it at once */
  dk__enter("IOMultiMemoryDescriptor::withDescriptors");
  if (!descriptors || !withCount) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "no descriptors (%s)", descriptors ? "count 0" : "NULL");
    return NULL;
  }
  uint64_t total = 0;
  IOOptionBits pageable = 0;
  for (UInt32 i = 0; i < withCount; i++) {
    IOMemoryDescriptor *d = dk__md(descriptors[i]);
    if (!d) {
      dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "descriptor %u is not an initialized memory descriptor", i);
      return NULL;
    }
    if (total + d->length < total) {
      dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "the lengths add up past 2^64");
      return NULL;
    }
    total += d->length;
    /* XNU: the parts agree on being pageable buffers, or the descriptor is refused */
    IOOptionBits p = (IOOptionBits)(d->flags & kIOMemoryBufferPageable);
    if (i && p != pageable) {
      dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
               "descriptor %u is %spageable and descriptor 0 is %spageable: the parts must agree", i, p ? "" : "not ",
               pageable ? "" : "not ");
      return NULL;
    }
    pageable = p;
  }
  dk_multi *m = dk__md_new(&dk__multi_class, sizeof *m);
  if (!m) return NULL;
  if (!(m->mds = dk__calloc(withCount, sizeof *m->mds))) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for %u descriptors", withCount);
    OSObject_release(m);
    return NULL;
  }
  m->count = withCount;
  for (UInt32 i = 0; i < withCount; i++) {
    m->mds[i] = dk__md(descriptors[i]);
    OSObject_retain(m->mds[i]);
    if (!m->md.tag) m->md.tag = m->mds[i]->tag;
  }
  m->md.length = total;
  m->md.flags = withDirection | pageable;
  return (IOMultiMemoryDescriptor *)m;
}
