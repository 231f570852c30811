/* src/iokit/dmacommand.c: IODMACommand (XNU iokit/Kernel/IODMACommand.cpp): a device's view of
 * a memory descriptor. withSpecification checks and keeps what the device can address;
 * prepare() chooses how the prepared range is presented: one range of a translating mapper's
 * I/O virtual addresses, the CPU physical runs as they are, or a bounce buffer the device can
 * reach (double buffering); gen*IOVMSegments splits that at the device's limits;
 * synchronize() and the prepare/complete copies move data through the bounce buffer;
 * complete() undoes prepare. One thread at a time per command, as in XNU. docs/dmacommand.md
 * lists where this departs from XNU. */
#include "iokit/dmacommand.h"
#include "prim/prim.h"

#include <endian.h>
#include <stdio.h>
#include <string.h>

struct IODMACommand {
  OSObject obj;
  /* the specification (XNU setSpecification) */
  IODMACommandSegmentFunction out_seg;
  uint64_t max_phys;            /* the last bus address the device reaches (2^bits - 1) */
  uint64_t max_segment_size;    /* UINT64_MAX: none */
  uint64_t max_transfer_size;   /* UINT64_MAX: none */
  uint64_t align_mask;          /* alignment - 1, for every segment's bus address */
  uint32_t mapping_options;
  uint8_t  num_address_bits;    /* as given (XNU getNumAddressBits; 32 for a 32-bit function's 0) */
  IOMapper *mapper;             /* a translating mapper (retained), else NULL */
  void     *refcon;
  /* the memory descriptor (setMemoryDescriptor) */
  IOMemoryDescriptor *md;       /* retained */
  IODirection md_direction;     /* XNU's fMDSummary, taken when the descriptor is set */
  uint64_t    md_length;
  bool        check_addressing; /* RAM above max_phys exists and no mapper hides it */
  /* the preparation */
  uint32_t active;              /* counted prepare()s (XNU's fActive) */
  uint64_t prep_offset, prep_length;
  bool     cursor;              /* the range was not walked at prepare (XNU's fCursor) */
  bool     force_double_buffer; /* kIODMACommandForceDoubleBuffer waiting for a first prepare */
  uint64_t source_align_mask;   /* for the first segment (only the in-page bits with a mapper) */
  IOBufferMemoryDescriptor *bounce;
  dk_mapping iova_use;          /* with a mapper: the range's IOVA use (iova: its first byte) */
  bool       dext_prepared;     /* DriverKit's PrepareForDMA prepared the descriptor too */
};

static void dmacommand_free(OSObject *o);
const dk_class dk__dmacommand_class = { 0x1b3d0003u, "IODMACommand", dmacommand_free, false, NULL };

static IODMACommand *as_cmd(const void *p) { return dk__object_cast(p, &dk__dmacommand_class); }

static IODMACommand *enter_cmd(const char *fn, IODMACommand *p)
{
  dk__enter(fn);
  IODMACommand *c = as_cmd(p);
  if (!c) dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an IODMACommand");
  return c;
}

/* Leave a public call. Inner public calls (getPhysicalSegment, readBytes, a bounce buffer's
 * factory) name themselves in the failure record: success clears what they left, failure keeps
 * the reason and names this call. */
static IOReturn leave(const char *fn, IOReturn rc)
{
  if (rc == kIOReturnSuccess) {
    dk__enter(fn);
    return rc;
  }
  if (!dk__failed()) dk__fail(rc, DK_CONSTRAINT_STATE, "%s failed", fn);
  dk__fail_recode(fn, rc);
  return rc;
}

static bool is_output32(IODMACommandSegmentFunction f)
{
  return f == IODMACommand_OutputHost32 || f == IODMACommand_OutputBig32 || f == IODMACommand_OutputLittle32;
}

static bool is_noncoherent(const IODMACommand *c)
{
  return (c->mapping_options & kIODMAMapOptionTypeMask) == kIODMAMapOptionNonCoherent;
}

/* XNU's SHOULD_COPY_DIR for the automatic copies: a descriptor without a direction copies both
 * ways; otherwise In (bounce -> memory) needs kIODirectionIn, Out needs kIODirectionOut. */
static bool should_copy(const IODMACommand *c, bool in)
{
  return c->md_direction == kIODirectionNone || (c->md_direction & (in ? kIODirectionIn : kIODirectionOut));
}

/* ---- output functions (XNU IODMACommand::Output*) --------------------------------------- */
/* XNU's 32-bit functions truncate silently; these refuse what does not fit (false, which
 * genIOVMSegments reports as kIOReturnMessageTooLarge). */

static bool fits32(IODMACommandSegment64 s) { return s.fIOVMAddr <= UINT32_MAX && s.fLength <= UINT32_MAX; }

static void put32(void *base, size_t at, uint32_t v) { memcpy((uint8_t *)base + at, &v, sizeof v); }
static void put64(void *base, size_t at, uint64_t v) { memcpy((uint8_t *)base + at, &v, sizeof v); }

bool IODMACommand_OutputHost32(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs || !fits32(s)) return false;
  IODMACommandSegment32 *b = segs;
  b[i].fIOVMAddr = (UInt32)s.fIOVMAddr;
  b[i].fLength = (UInt32)s.fLength;
  return true;
}

bool IODMACommand_OutputBig32(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs || !fits32(s)) return false;
  size_t at = (size_t)i * sizeof(IODMACommandSegment32);
  put32(segs, at, htobe32((uint32_t)s.fIOVMAddr));
  put32(segs, at + sizeof(uint32_t), htobe32((uint32_t)s.fLength));
  return true;
}

bool IODMACommand_OutputLittle32(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs || !fits32(s)) return false;
  size_t at = (size_t)i * sizeof(IODMACommandSegment32);
  put32(segs, at, htole32((uint32_t)s.fIOVMAddr));
  put32(segs, at + sizeof(uint32_t), htole32((uint32_t)s.fLength));
  return true;
}

bool IODMACommand_OutputHost64(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs) return false;
  ((IODMACommandSegment64 *)segs)[i] = s;
  return true;
}

bool IODMACommand_OutputBig64(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs) return false;
  size_t at = (size_t)i * sizeof(IODMACommandSegment64);
  put64(segs, at, htobe64(s.fIOVMAddr));
  put64(segs, at + sizeof(uint64_t), htobe64(s.fLength));
  return true;
}

bool IODMACommand_OutputLittle64(IODMACommand *target, IODMACommandSegment64 s, void *segs, UInt32 i)
{
  (void)target;
  if (!segs) return false;
  size_t at = (size_t)i * sizeof(IODMACommandSegment64);
  put64(segs, at, htole64(s.fIOVMAddr));
  put64(segs, at + sizeof(uint64_t), htole64(s.fLength));
  return true;
}

/* ---- creation (XNU withSpecification -> setSpecification) --------------------------------- */

static IODMACommand *create(IODMACommandSegmentFunction outSegFunc, UInt8 numAddressBits, UInt64 maxSegmentSize,
                            UInt32 mappingOptions, UInt64 maxTransferSize, UInt32 alignment, IOMapper *mapper,
                            void *refCon)
{
  if (!outSegFunc) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "outSegFunc is NULL: pass an output function (IODMACommand_OutputHost64 for host-order 64-bit segments)");
    return NULL;
  }
  if (is_output32(outSegFunc)) {
    if (!numAddressBits) numAddressBits = 32;
    else if (numAddressBits > 32) {
      dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
               "a 32-bit output function cannot carry %u address bits", numAddressBits);
      return NULL;
    }
  }
  unsigned shift = dk__caps()->page_shift;
  if (numAddressBits && numAddressBits < shift) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "numAddressBits %u is below the page shift %u: the device could not reach one page",
             numAddressBits, shift);
    return NULL;
  }
  if (!alignment) alignment = 1;
  if (!dk__is_pow2(alignment)) {
    /* XNU takes alignment - 1 as a mask without checking; a mask of a non-power of two
     * does not express an alignment */
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ALIGNMENT, "alignment %u is not a power of two", alignment);
    return NULL;
  }
  uint32_t type = mappingOptions & kIODMAMapOptionTypeMask;
  if (type > kIODMAMapOptionUnmapped) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "mapping type %u is none of Mapped (0), Bypassed (1), NonCoherent (2), Unmapped (3)", type);
    return NULL;
  }
  /* The mapper: the one given, else the system mapper unless Unmapped. Only a translating
   * mapper matters: with the identity mapper bus addresses are physical, as with none. */
  IOMapper *m = NULL;
  if (mapper) {
    if (dk__mapper_translates(mapper)) {
      m = mapper;
      dk__mapper_retain(m);
    }
  } else if (type != kIODMAMapOptionUnmapped) {
    m = dk__mapper_system_retain();
    if (m && !dk__mapper_translates(m)) {
      dk__mapper_release(m);
      m = NULL;
    }
  }
  if (type == kIODMAMapOptionBypassed && m) {
    dk__mapper_release(m);
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "kIODMAMapOptionBypassed with a translating mapper%s: the device sees only I/O virtual addresses",
             mapper ? "" : " (the system mapper)");
    return NULL;
  }
  IODMACommand *c = dk__calloc(1, sizeof *c);
  if (!c) {
    dk__mapper_release(m);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the command object");
    return NULL;
  }
  dk__object_init(&c->obj, &dk__dmacommand_class);
  c->out_seg = outSegFunc;
  c->max_phys = numAddressBits && numAddressBits < 64 ? (1ull << numAddressBits) - 1 : UINT64_MAX;
  c->max_segment_size = maxSegmentSize ? maxSegmentSize : UINT64_MAX;
  c->max_transfer_size = maxTransferSize ? maxTransferSize : UINT64_MAX;
  c->align_mask = (uint64_t)alignment - 1;
  c->mapping_options = mappingOptions;
  c->num_address_bits = numAddressBits;
  c->mapper = m;
  c->refcon = refCon;
  return c;
}

IODMACommand *IODMACommand_withSpecification(IODMACommandSegmentFunction outSegFunc, UInt8 numAddressBits,
                                             UInt64 maxSegmentSize, UInt32 mappingOptions,
                                             UInt64 maxTransferSize, UInt32 alignment, IOMapper *mapper,
                                             void *refCon)
{
  dk__enter("withSpecification");
  return create(outSegFunc, numAddressBits, maxSegmentSize, mappingOptions, maxTransferSize, alignment, mapper,
                refCon);
}

/* XNU's SegmentOptions form. One alignment applies to every segment start here, and lengths
 * are not aligned: fAlignmentLength above 1, or fAlignmentInternalSegments other than 0 or
 * fAlignment, is refused (kIOReturnUnsupported) rather than not honoured. */
IODMACommand *IODMACommand_withSpecificationOptions(IODMACommandSegmentFunction outSegFunc,
                                                    const IODMACommandSegmentOptions *segmentOptions,
                                                    UInt32 mappingOptions, IOMapper *mapper, void *refCon)
{
  dk__enter("withSpecification");
  const IODMACommandSegmentOptions *o = segmentOptions;
  if (!o) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "segmentOptions is NULL");
    return NULL;
  }
  if (o->fAlignmentLength > 1) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ALIGNMENT,
             "fAlignmentLength %u: segment lengths are not aligned by dmakit (only 0 or 1)", o->fAlignmentLength);
    return NULL;
  }
  if (o->fAlignmentInternalSegments && o->fAlignmentInternalSegments != (o->fAlignment ? o->fAlignment : 1)) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ALIGNMENT,
             "fAlignmentInternalSegments %u differs from fAlignment %u: dmakit aligns every segment alike",
             o->fAlignmentInternalSegments, o->fAlignment);
    return NULL;
  }
  return create(outSegFunc, o->fNumAddressBits, o->fMaxSegmentSize, mappingOptions, o->fMaxTransferSize,
                o->fAlignment, mapper, refCon);
}

void *IODMACommand_getRefCon(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c ? c->refcon : NULL;
}

UInt8 IODMACommand_getNumAddressBits(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c ? c->num_address_bits : 0;
}

UInt32 IODMACommand_getAlignment(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c ? (UInt32)(c->align_mask + 1) : 0;
}

/* ---- segments ------------------------------------------------------------------------------ */

/* The CPU physical run of `md` at `off` (clipped to its length). */
static IOReturn phys_run(IOMemoryDescriptor *md, uint64_t off, uint64_t *addr, uint64_t *len)
{
  IOByteCount l = 0;
  addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, off, &l, kIOMemoryMapperNone);
  if (!l) {
    if (!dk__failed())
      dk__fail(kIOReturnInternalError, DK_CONSTRAINT_STATE, "no physical segment at offset 0x%llx",
               (unsigned long long)off);
    return dk__failure_code();
  }
  *addr = a;
  *len = l;
  return kIOReturnSuccess;
}

/* The segment at descriptor offset `off` of the prepared range: its bus address (an IOVA, a
 * bounce buffer's or the memory's physical address) and length. A run longer than the maximum
 * segment size is cut there, shortened so that the next segment starts aligned (XNU
 * genIOVMSegments: "fMaxSegmentSize", "alignment next address"). */
static IOReturn segment_at(IODMACommand *c, uint64_t off, uint64_t *addr, uint64_t *len)
{
  uint64_t end = c->prep_offset + c->prep_length, rel = off - c->prep_offset, a = 0, run = 0;
  if (dk__mapping_live(&c->iova_use)) {
    a = c->iova_use.iova + rel;
    run = end - off;
  } else {
    IOReturn rc = c->bounce ? phys_run(&c->bounce->md, rel, &a, &run) : phys_run(c->md, off, &a, &run);
    if (rc != kIOReturnSuccess) return rc;
    if (run > end - off) run = end - off;
  }
  if (run > c->max_segment_size) {
    run = c->max_segment_size;
    uint64_t reduce = (a + run) & c->align_mask;
    if (reduce && run > reduce) run -= reduce;
  }
  *addr = a;
  *len = run;
  return kIOReturnSuccess;
}

/* Walk the prepared range as gen would and say whether the device can take it as it is: every
 * segment ends at or below max_phys, the first starts aligned to source_align_mask and the
 * others to the alignment (XNU segmentOp under kWalkPreflight), and with `max_segments` (0:
 * any number) there are no more segments than that. `why` tells the first problem. */
static IOReturn walk_check(IODMACommand *c, uint32_t max_segments, bool *reachable, char *why, size_t cap)
{
  uint64_t off = c->prep_offset, end = c->prep_offset + c->prep_length;
  *reachable = true;
  for (uint32_t i = 0; off < end; i++) {
    if (max_segments && i == max_segments) {
      snprintf(why, cap, "the range is more than %u physical segment%s (the room given for segments)", max_segments,
               max_segments == 1 ? "" : "s");
      *reachable = false;
      return kIOReturnSuccess;
    }
    uint64_t a, l;
    IOReturn rc = segment_at(c, off, &a, &l);
    if (rc != kIOReturnSuccess) return rc;
    /* the device's limit for every segment, its alignment (the source's for the first) */
    dk_constraints dc = DK_CONSTRAINTS_NONE;
    dc.high = c->max_phys == UINT64_MAX ? 0 : c->max_phys;
    dc.alignment = (i ? c->align_mask : c->source_align_mask) + 1;
    char segwhy[160];
    dk_constraint_kind k = dk__segment_check(&dc, a, l, true, segwhy, sizeof segwhy);
    if (k != DK_CONSTRAINT_NONE) {
      snprintf(why, cap, "bytes 0x%llx-0x%llx of the range (segment %u, bus address 0x%llx) do not suit the device: %s",
               (unsigned long long)(off - c->prep_offset), (unsigned long long)(off - c->prep_offset + l - 1), i,
               (unsigned long long)a, segwhy);
      *reachable = false;
      return kIOReturnSuccess;
    }
    off += l;
  }
  return kIOReturnSuccess;
}

/* ---- the bounce buffer ------------------------------------------------------------------- */

static void drop_bounce(IODMACommand *c)
{
  OSSafeReleaseNULL(c->bounce);
}

static bool is_device_constraint(dk_constraint_kind k)
{
  return k == DK_CONSTRAINT_MASK || k == DK_CONSTRAINT_ALIGNMENT || k == DK_CONSTRAINT_CONTIGUITY ||
         k == DK_CONSTRAINT_BOUNDARY || k == DK_CONSTRAINT_SEGMENTS;
}

/* A bounce buffer for the prepared range that the device reaches (XNU createCopyBuffer, which
 * asks for 32-bit page-aligned memory whatever the device; here the command's own limit and
 * alignment). Without a mapper its segments are checked before it is used. Failure: nothing
 * below the device's limit, or meeting its alignment, could be had (whatever the allocator's
 * reason: a low-memory search also fails for want of hugepages), kIOReturnMessageTooLarge;
 * memory without such a constraint could not be had, kIOReturnNoResources (XNU's code). */
static IOReturn make_bounce(IODMACommand *c, const char *why, bool contiguous)
{
  uint64_t len = c->prep_length, page = dk__caps()->page_size;
  IOBufferMemoryDescriptor *b;
  if (c->mapper) {
    /* the mapper places the IOVA; the memory only has to start on a page */
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryMapperNone, len, page);
  } else {
    if (c->max_phys != UINT64_MAX && len - 1 > c->max_phys)
      return dk__fail(kIOReturnMessageTooLarge, DK_CONSTRAINT_MASK,
                      "%s; a bounce buffer of 0x%llx bytes cannot lie below the device's limit 0x%llx", why,
                      (unsigned long long)len, (unsigned long long)c->max_phys);
    dk_constraints k = DK_CONSTRAINTS_NONE;
    k.high = c->max_phys == UINT64_MAX ? 0 : c->max_phys;
    k.alignment = c->align_mask + 1;
    k.contiguous = contiguous;
    b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut | kIOMemoryMapperNone, len, &k);
  }
  if (!b) {
    const dk_failure *f = dk_last_failure();
    dk_constraint_kind kind = f->constraint;
    char inner[sizeof f->text + 64];
    snprintf(inner, sizeof inner, "%s (%s)", f->text, dk_ioreturn_name(f->code));
    dk__enter("");
    bool limited = !c->mapper && c->max_phys != UINT64_MAX;
    /* contiguity asked for only to fit the caller's segments is memory, not the device's reach */
    bool device = is_device_constraint(kind) && !(contiguous && kind == DK_CONSTRAINT_CONTIGUITY);
    return dk__fail(limited || device ? kIOReturnMessageTooLarge : kIOReturnNoResources, kind,
                    "%s; no bounce buffer of 0x%llx bytes the device reaches: %s", why, (unsigned long long)len,
                    inner);
  }
  c->bounce = b;
  if (!c->mapper && (c->max_phys != UINT64_MAX || c->align_mask)) {
    bool ok;
    char bwhy[200];
    IOReturn rc = walk_check(c, 0, &ok, bwhy, sizeof bwhy);
    if (rc == kIOReturnSuccess && !ok)
      rc = dk__fail(kIOReturnMessageTooLarge, DK_CONSTRAINT_MASK, "%s, and the bounce buffer does not meet it either: %s",
                    why, bwhy);
    if (rc != kIOReturnSuccess) {
      drop_bounce(c);
      return rc;
    }
  }
  return kIOReturnSuccess;
}

/* Copy between the memory and the bounce buffer: `in` is bounce -> memory (kIODirectionIn,
 * what the device wrote), else memory -> bounce. Through readBytes/writeBytes as XNU, so a
 * descriptor prepared read-only refuses the In copy: kIOReturnUnderrun. */
static IOReturn bounce_copy(IODMACommand *c, bool in)
{
  uint8_t *bytes = c->bounce->md.buffer;
  IOByteCount n = in ? IOMemoryDescriptor_writeBytes(c->md, c->prep_offset, bytes, c->prep_length)
                     : IOMemoryDescriptor_readBytes(c->md, c->prep_offset, bytes, c->prep_length);
  if (n == c->prep_length) return kIOReturnSuccess;
  if (!dk__failed())
    dk__fail(kIOReturnUnderrun, DK_CONSTRAINT_STATE, "%s copied 0x%llx of 0x%llx bytes", in ? "writeBytes" : "readBytes",
             (unsigned long long)n, (unsigned long long)c->prep_length);
  return kIOReturnUnderrun;
}

/* kIODMAMapOptionNonCoherent: write back (prepare) or flush (complete) the range's cache lines. */
static void cache_op(IODMACommand *c, IOOptionBits op)
{
  if (!c->prep_length) return;
  if (c->bounce) IOMemoryDescriptor_performOperation(&c->bounce->md, op, 0, c->prep_length);
  else IOMemoryDescriptor_performOperation(c->md, op, c->prep_offset, c->prep_length);
}

/* With a mapper: the range (or its bounce buffer) as one IOVA range under the command's limit
 * and alignment. The mapper shares a mapping that already covers it with compatible IOVAs
 * (the buffer's own, made when it was created with this mapper as the system mapper), so then
 * nothing new is mapped; the counted use keeps it while the command is prepared. */
static IOReturn map_range(IODMACommand *c)
{
  IOMemoryDescriptor *src = c->bounce ? &c->bounce->md : c->md;
  uint64_t off = c->bounce ? 0 : c->prep_offset;
  dk_iova_spec spec = { c->max_phys == UINT64_MAX ? 0 : c->max_phys, c->align_mask ? c->align_mask + 1 : 0, 0, 0 };
  /* one virtual run of this process (do_prepare bounced anything else); a buffer's own
   * granule, so that buffers in one hugepage share a mapping */
  const void *va = (const void *)(uintptr_t)dk__md_source(src, off, NULL, NULL);
  uint64_t granule = src->obj.cls->md ? dk__caps()->page_size : dk__mem_granule(&src->mem);
  return dk__mapper_map(c->mapper, va, c->prep_length, granule, &spec, &c->iova_use);
}

/* ---- prepare / complete (XNU IODMACommand::prepare, complete, walkAll) --------------------- */

/* `max_segments` (0: any number): without a mapper the range must come out in at most that
 * many segments, else it is double-buffered, into physically contiguous memory when fewer
 * segments than its pages are allowed (DriverKit's PrepareForDMA). */
static IOReturn do_prepare(IODMACommand *c, uint64_t offset, uint64_t length, bool flush, bool sync,
                           uint32_t max_segments)
{
  if (!c->md)
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "no memory descriptor: call setMemoryDescriptor() first");
  if (!length) length = c->md_length;       /* XNU: the descriptor's length, whatever the offset */
  if (length > c->max_transfer_size)
    return dk__fail(kIOReturnNoSpace, DK_CONSTRAINT_SEGMENTS, "0x%llx bytes are more than the maximum transfer size 0x%llx",
                    (unsigned long long)length, (unsigned long long)c->max_transfer_size);
  if (c->active) {
    if (offset != c->prep_offset || length != c->prep_length)
      return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
                      "already prepared for 0x%llx+0x%llx: a nested prepare must name the same range",
                      (unsigned long long)c->prep_offset, (unsigned long long)c->prep_length);
    if (c->active == UINT32_MAX)
      return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_STATE, "prepare count overflow");
    c->active++;
    return kIOReturnSuccess;
  }
  IOMemoryDescriptor *md = c->md;
  if (offset + length < offset || offset + length > md->length)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE, "range 0x%llx+0x%llx is outside the length 0x%llx",
                    (unsigned long long)offset, (unsigned long long)length, (unsigned long long)md->length);
  if (md->pageable && atomic_load_explicit(&md->wire_count, memory_order_acquire) == 0)
    return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
                    "the memory is pageable and not prepared: call IOMemoryDescriptor_prepare() first (XNU panics)");

  uint64_t page = dk__caps()->page_size;
  c->prep_offset = offset;
  c->prep_length = length;
  c->source_align_mask = c->mapper ? c->align_mask & (page - 1) : c->align_mask;
  bool force = c->force_double_buffer;
  c->force_double_buffer = false;
  /* a start aligned within its page keeps every later segment aligned up to a page */
  uint64_t source_run = 0;
  bool source_virt = false;
  uintptr_t start_va = (uintptr_t)dk__md_source(md, offset, &source_run, &source_virt);
  bool start_ok = !(start_va & c->source_align_mask);
  bool iterate_only = (c->mapping_options & kIODMAMapOptionIterateOnly) != 0;
  /* the mapper maps one virtual run of this process: other memory goes through a copy */
  bool unmappable = c->mapper && length && (!source_virt || source_run < length);
  c->cursor = iterate_only || (!force && !max_segments && !c->check_addressing && !unmappable &&
                               (!c->source_align_mask || (c->source_align_mask < page && start_ok)));

  IOReturn rc;
  char why[240] = "kIODMACommandForceDoubleBuffer";
  bool bounce = force && !iterate_only && length;
  if (!c->cursor && !bounce && length) {
    if (c->mapper) {
      bounce = !start_ok;
      if (bounce)
        snprintf(why, sizeof why, "the range starts at 0x%llx within its page, not aligned to 0x%llx",
                 (unsigned long long)(start_va & (page - 1)), (unsigned long long)c->source_align_mask + 1);
      if (!bounce && unmappable) {
        bounce = true;
        snprintf(why, sizeof why, "the range is %s, and the mapper maps one virtual range of this process",
                 source_virt ? "several virtual ranges" : "not mapped in this process (physical ranges)");
      }
    } else {
      bool reachable;
      if ((rc = walk_check(c, max_segments, &reachable, why, sizeof why)) != kIOReturnSuccess) return rc;
      bounce = !reachable;
    }
  }
  if (bounce) {
    uint64_t pages = (length + page - 1) / page + 1;     /* the most a page-aligned copy can take */
    bool contiguous = !c->mapper && max_segments && max_segments < pages;
    if ((rc = make_bounce(c, why, contiguous)) != kIOReturnSuccess) return rc;
    if (sync && should_copy(c, false) && (rc = bounce_copy(c, false)) != kIOReturnSuccess) goto fail;
  }
  if (is_noncoherent(c) && flush) cache_op(c, kIOMemoryIncoherentIOStore);
  if (c->mapper && length && (rc = map_range(c)) != kIOReturnSuccess) goto fail;
  c->active = 1;
  return kIOReturnSuccess;
fail:
  drop_bounce(c);
  return rc;
}

static IOReturn do_complete(IODMACommand *c, bool invalidate, bool sync)
{
  if (!c->active) return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared");
  if (--c->active) return kIOReturnSuccess;
  c->dext_prepared = false;
  IOReturn rc = kIOReturnSuccess;
  if (is_noncoherent(c) && invalidate) cache_op(c, kIOMemoryIncoherentIOFlush);
  if (c->bounce && sync && should_copy(c, true)) rc = bounce_copy(c, true);
  /* the IOVA mapping goes before the bounce's memory: a mapping is found by virtual address,
   * and a buffer created meanwhile at the freed address must not share it */
  if (dk__mapping_live(&c->iova_use)) dk__mapper_unmap(c->mapper, &c->iova_use);
  if (c->bounce) drop_bounce(c);
  return rc;
}

/* Complete everything and let go of the descriptor. */
static void clear_md(IODMACommand *c)
{
  while (c->active) do_complete(c, true, true);
  OSSafeReleaseNULL(c->md);
}

static void dmacommand_free(OSObject *o)
{
  IODMACommand *c = (IODMACommand *)o;
  /* A release is not a call that reports failures: keep the thread's record as it was. */
  bool had = dk__failed();
  dk_failure saved = *dk_last_failure();
  clear_md(c);           /* XNU leaks a descriptor still set; completing it is kinder */
  dk__mapper_release(c->mapper);
  c->mapper = NULL;
  c->obj.cls = NULL;     /* a stale pointer to it is no longer a command */
  dk__free(c);
  dk__enter(saved.function);
  if (had) dk__fail(saved.code, saved.constraint, "%s", saved.text);
}

/* ---- public: the descriptor --------------------------------------------------------------- */

IOReturn IODMACommand_setMemoryDescriptor(IODMACommand *p, const IOMemoryDescriptor *mem, bool autoPrepare)
{
  static const char fn[] = "setMemoryDescriptor";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  IOMemoryDescriptor *md = NULL;
  if (mem && !(md = dk__md(mem)))
    return leave(fn, dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an initialized memory descriptor"));
  if (md == c->md) {
    if (!autoPrepare)
      while (c->active) do_complete(c, true, true);
    return leave(fn, kIOReturnSuccess);
  }
  if (c->md) {
    if (c->active)
      return leave(fn, dk__fail(kIOReturnBusy, DK_CONSTRAINT_STATE,
                                "the command is prepared (%u): complete() it before changing the descriptor", c->active));
    clear_md(c);
  }
  if (md) {
    OSObject_retain(md);
    c->md = md;
    c->md_direction = md->flags & kIOMemoryDirectionMask;
    c->md_length = md->length;
    /* XNU: checked unless the device sees a mapper's addresses; no RAM above the limit, no check */
    uint64_t ram_top = dk__caps()->ram_top;
    c->check_addressing = !c->mapper && c->max_phys != UINT64_MAX && (ram_top == 0 || ram_top - 1 > c->max_phys);
    if (autoPrepare) {
      IOReturn rc = do_prepare(c, 0, 0, true, true, 0);
      if (rc != kIOReturnSuccess) {
        clear_md(c);
        return leave(fn, rc);
      }
    }
  }
  return leave(fn, kIOReturnSuccess);
}

IOReturn IODMACommand_clearMemoryDescriptor(IODMACommand *p, bool autoComplete)
{
  static const char fn[] = "clearMemoryDescriptor";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if (c->active && !autoComplete)
    return leave(fn, dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE,
                              "the command is prepared (%u): complete() it first, or pass autoComplete", c->active));
  clear_md(c);
  return leave(fn, kIOReturnSuccess);
}

const IOMemoryDescriptor *IODMACommand_getMemoryDescriptor(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c ? c->md : NULL;
}

/* ---- public: prepare / complete / synchronize ------------------------------------------------ */

IOReturn IODMACommand_prepare(IODMACommand *p, UInt64 offset, UInt64 length, bool flushCache, bool synchronize)
{
  static const char fn[] = "prepare";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  return leave(fn, do_prepare(c, offset, length, flushCache, synchronize, 0));
}

IOReturn IODMACommand_complete(IODMACommand *p, bool invalidateCache, bool synchronize)
{
  static const char fn[] = "complete";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  return leave(fn, do_complete(c, invalidateCache, synchronize));
}

IOReturn IODMACommand_synchronize(IODMACommand *p, IOOptionBits options)
{
  static const char fn[] = "synchronize";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if ((options & kIODirectionOutIn) == kIODirectionOutIn)
    return leave(fn, dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                              "synchronize copies one way: kIODirectionIn or kIODirectionOut, not both"));
  if (!c->active) return leave(fn, dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared"));
  if (options & kIODMACommandForceDoubleBuffer) {
    if (c->bounce) return leave(fn, kIOReturnSuccess);
    /* XNU: complete and prepare again. Nested, that only moves the count: the flag then waits
     * for the next first prepare. */
    uint64_t off = c->prep_offset, len = c->prep_length;
    do_complete(c, false, true);
    c->force_double_buffer = true;
    return leave(fn, do_prepare(c, off, len, false, true, 0));
  }
  if (c->cursor || !c->bounce) return leave(fn, kIOReturnSuccess);
  IOReturn rc = kIOReturnSuccess;
  if (options & kIODirectionIn) rc = bounce_copy(c, true);        /* kWalkSyncAlways: any direction */
  else if (options & kIODirectionOut) rc = bounce_copy(c, false);
  return leave(fn, rc);
}

/* ---- public: segments (XNU genIOVMSegments with kWalkClient) ----------------------------------- */

static IOReturn gen(IODMACommand *c, IODMACommandSegmentFunction out, UInt64 *offsetP, void *segments,
                    UInt32 *numSegmentsP)
{
  if (!c->active) return dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared");
  if (!offsetP || !segments || !numSegmentsP || !*numSegmentsP)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "offset, segments and numSegments are required, and room for one segment at least");
  if (*offsetP >= c->prep_length)
    return dk__fail(kIOReturnOverrun, DK_CONSTRAINT_RANGE, "offset 0x%llx is at or past the prepared length 0x%llx",
                    (unsigned long long)*offsetP, (unsigned long long)c->prep_length);
  uint64_t off = c->prep_offset + *offsetP, end = c->prep_offset + c->prep_length;
  uint32_t n = 0, max = *numSegmentsP;
  while (off < end && n < max) {
    uint64_t a, l;
    IOReturn rc = segment_at(c, off, &a, &l);
    if (rc != kIOReturnSuccess) return rc;
    if (a + l - 1 > c->max_phys)   /* a cursor (IterateOnly, or nothing walked) does not bounce */
      return dk__fail(kIOReturnMessageTooLarge, DK_CONSTRAINT_MASK,
                      "segment 0x%llx+0x%llx ends above the device's limit 0x%llx%s", (unsigned long long)a,
                      (unsigned long long)l, (unsigned long long)c->max_phys,
                      c->cursor ? " (kIODMAMapOptionIterateOnly never double-buffers)" : "");
    uint64_t mask = n ? c->align_mask : c->source_align_mask;
    if (c->cursor && (a & mask))
      return dk__fail(kIOReturnNotAligned, DK_CONSTRAINT_ALIGNMENT, "segment 0x%llx+0x%llx is not aligned to 0x%llx",
                      (unsigned long long)a, (unsigned long long)l, (unsigned long long)mask + 1);
    IODMACommandSegment64 s = { a, l };
    if (!out(c, s, segments, n))
      return dk__fail(kIOReturnMessageTooLarge, DK_CONSTRAINT_SEGMENTS,
                      "the output function refused segment %u (0x%llx+0x%llx): it does not fit its format", n,
                      (unsigned long long)a, (unsigned long long)l);
    n++;
    off += l;
  }
  *offsetP = off - c->prep_offset;
  *numSegmentsP = n;
  return kIOReturnSuccess;
}

IOReturn IODMACommand_genIOVMSegments(IODMACommand *p, UInt64 *offset, void *segments, UInt32 *numSegments)
{
  static const char fn[] = "genIOVMSegments";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  return leave(fn, gen(c, c->out_seg, offset, segments, numSegments));
}

IOReturn IODMACommand_genIOVMSegmentsWithFunction(IODMACommand *p, IODMACommandSegmentFunction segmentFunction,
                                                  UInt64 *offset, void *segments, UInt32 *numSegments)
{
  static const char fn[] = "genIOVMSegments";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if (!segmentFunction)
    return leave(fn, dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "segmentFunction is NULL"));
  return leave(fn, gen(c, segmentFunction, offset, segments, numSegments));
}

IOReturn IODMACommand_gen64IOVMSegments(IODMACommand *p, UInt64 *offset, IODMACommandSegment64 *segments,
                                        UInt32 *numSegments)
{
  static const char fn[] = "gen64IOVMSegments";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if (is_output32(c->out_seg))   /* XNU: "results will be incorrect" */
    return leave(fn, dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                              "the command's output function writes 32-bit segments: use genIOVMSegments"));
  return leave(fn, gen(c, c->out_seg, offset, segments, numSegments));
}

IOReturn IODMACommand_gen32IOVMSegments(IODMACommand *p, UInt64 *offset, IODMACommandSegment32 *segments,
                                        UInt32 *numSegments)
{
  static const char fn[] = "gen32IOVMSegments";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if (!is_output32(c->out_seg))   /* XNU writes 16-byte records into the 8-byte array */
    return leave(fn, dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                              "the command's output function does not write 32-bit segments: use gen64IOVMSegments"));
  return leave(fn, gen(c, c->out_seg, offset, segments, numSegments));
}

/* ---- the prepared range (XNU getPreparedOffsetAndLength, readBytes, writeBytes) ------------- */

IOReturn IODMACommand_getPreparedOffsetAndLength(IODMACommand *p, UInt64 *offset, UInt64 *length)
{
  static const char fn[] = "getPreparedOffsetAndLength";
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return kIOReturnBadArgument;
  if (!c->active) return leave(fn, dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared"));
  if (offset) *offset = c->prep_offset;
  if (length) *length = c->prep_length;
  return leave(fn, kIOReturnSuccess);
}

/* XNU transfer(): copy between `buffer` and what the device sees at `offset` of the prepared
 * range (the bounce buffer when it is double-buffered, else the memory), clipped to the range;
 * no direction or read-only check, as XNU copies through physical addresses. */
static UInt64 transfer(IODMACommand *p, const char *fn, bool read, UInt64 offset, void *buffer, UInt64 length)
{
  IODMACommand *c = enter_cmd(fn, p);
  if (!c) return 0;
  if (!c->active) {
    dk__fail(kIOReturnNotReady, DK_CONSTRAINT_STATE, "the command is not prepared");
    return 0;
  }
  if (offset >= c->prep_length) {
    dk__fail(kIOReturnOverrun, DK_CONSTRAINT_RANGE, "offset 0x%llx is at or past the prepared length 0x%llx",
             (unsigned long long)offset, (unsigned long long)c->prep_length);
    return 0;
  }
  if (length > c->prep_length - offset) length = c->prep_length - offset;
  if (length && !buffer) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "bytes is NULL");
    return 0;
  }
  if (!length) return 0;
  /* through the descriptor's kind: memory of several ranges, sub-ranges or concatenations is
   * not one virtual run */
  return dk__dmacommand_transfer(c, !read, offset, buffer, length);
}

UInt64 IODMACommand_readBytes(IODMACommand *p, UInt64 offset, void *bytes, UInt64 length)
{
  return transfer(p, "IODMACommand::readBytes", true, offset, bytes, length);
}

UInt64 IODMACommand_writeBytes(IODMACommand *p, UInt64 offset, const void *bytes, UInt64 length)
{
  return transfer(p, "IODMACommand::writeBytes", false, offset, (void *)(uintptr_t)bytes, length);
}

/* ---- introspection ------------------------------------------------------------------------- */

bool dk_dmacommand_is_double_buffered(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c && c->active && c->bounce;
}

IOBufferMemoryDescriptor *dk__dmacommand_bounce(IODMACommand *p)
{
  IODMACommand *c = as_cmd(p);
  return c && c->active ? c->bounce : NULL;
}

uint8_t *dk__dmacommand_bounce_bytes(IODMACommand *p, uint64_t *length)
{
  IODMACommand *c = as_cmd(p);
  if (length) *length = c && c->active && c->bounce ? c->prep_length : 0;
  return c && c->active && c->bounce ? c->bounce->md.buffer : NULL;
}

/* ---- for DriverKit's calls (driverkit_dma.c) --------------------------------------------- */

IOReturn dk__dmacommand_prepare_fit(IODMACommand *c, uint64_t offset, uint64_t length, uint32_t max_segments)
{
  return do_prepare(c, offset, length, true, true, max_segments);
}

void dk__dmacommand_set_dext_prepared(IODMACommand *c, bool prepared) { c->dext_prepared = prepared; }
bool dk__dmacommand_dext_prepared(const IODMACommand *c) { return c->active && c->dext_prepared; }

bool dk__dmacommand_preparation(IODMACommand *c, uint64_t *offset, uint64_t *length, IOMemoryDescriptor **md)
{
  if (!c->active) return false;
  if (offset) *offset = c->prep_offset;
  if (length) *length = c->prep_length;
  if (md) *md = c->md;
  return true;
}

uint64_t dk__dmacommand_transfer(IODMACommand *c, bool to_dma, uint64_t offset, void *bytes, uint64_t length)
{
  if (!c->active || offset >= c->prep_length) return 0;
  if (length > c->prep_length - offset) length = c->prep_length - offset;
  if (c->bounce) return dk__md_copy(&c->bounce->md, offset, bytes, length, to_dma);
  return dk__md_copy(c->md, c->prep_offset + offset, bytes, length, to_dma);
}
