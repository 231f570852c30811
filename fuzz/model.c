/* fuzz/model.c: see model.h. Written from REFERENCE.md §2 (init), §3 (factories), §4
 * (methods) and docs/departures.md; deliberately shares no code with src/. */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* Option and flag bits, spelled out here from REFERENCE §1 rather than taken from the
 * library's headers' derived macros, so a wrong header value also shows up. */
#define M_DIR_MASK        0x7u
#define M_AUTO_PREPARE    0x8u
#define M_TYPE_VIRTUAL    0x10u
#define M_PHYS_CONTIG     0x10u
#define M_PAGEABLE        0x20u
#define M_PURGEABLE       0x40u
#define M_HOST_CONTIG     0x80u
#define M_AS_REFERENCE    0x100u
#define M_BUF_PAGEABLE    0x400u
#define M_PREPARED_RO     0x8000u
#define M_PERSISTENT      0x10000u
#define M_SHARING_MASK    0x000f0000u
#define M_CLEAR_ENCRYPT   0x200000u
#define M_BUF_PURGEABLE   0x400000u
#define M_BUF_FLAGS       0x00B0080Fu
#define M_CACHE_MASK      0xf00u

static void fail_with(model_create *o, model_verdict v, const char *why, int n, ...);

#include <stdarg.h>
static void fail_with(model_create *o, model_verdict v, const char *why, int n, ...)
{
  o->verdict = v;
  o->why = why;
  o->ncodes = n;
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n && i < 4; i++) o->codes[i] = va_arg(ap, IOReturn);
  va_end(ap);
}

/* smallest power of two >= x; UINT64_MAX when it does not fit (x > 2^63) */
static uint64_t pow2_up(uint64_t x)
{
  uint64_t p = 1;
  if (x > (1ull << 63)) return UINT64_MAX;
  while (p < x) p <<= 1;
  return p;
}

static bool round_page(uint64_t x, uint64_t page, uint64_t *out)
{
  if (x > UINT64_MAX - (page - 1)) return false;
  *out = (x + page - 1) & ~(page - 1);
  return true;
}

/* initWithPhysicalMask (REFERENCE §2) with dmakit's provider limits. `extra` is the
 * inTaskWithConstraints value (it replaces the derived physical promises). */
static void predict_init(bool null_task, uint32_t options, uint64_t capacity, uint64_t alignment,
                         uint64_t mask, const dk_constraints *extra, const model_env *env,
                         model_create *o)
{
  const uint64_t page = env->page;
  memset(o, 0, sizeof *o);
  o->verdict = MV_MUST_SUCCEED;
  o->null_task = null_task;
  /* 1 */
  if (capacity == 0) { fail_with(o, MV_MUST_FAIL, "capacity 0", 1, kIOReturnBadArgument); return; }
  o->capacity = capacity;
  /* 4: _flags */
  uint32_t flags = M_TYPE_VIRTUAL | M_AS_REFERENCE | (options & M_BUF_FLAGS);
  /* 6: mask -> alignment and limit, only when alignment <= 1 */
  uint64_t limit = 0;
  if (mask && alignment <= 1) {
    uint64_t tz = ~mask & (mask - 1);
    limit = mask | tz;
    alignment = tz + 1;
    if (alignment < page) alignment = page;
  }
  /* 7 */
  if ((options & (M_SHARING_MASK | M_CACHE_MASK | M_CLEAR_ENCRYPT)) && alignment < page)
    alignment = page;
  /* 8 */
  uint64_t size = capacity;
  if (alignment >= page && !round_page(capacity, page, &size)) {
    fail_with(o, MV_MUST_FAIL, "page rounding overflows", 1, kIOReturnBadArgument);
    return;
  }
  /* 9 */
  if (alignment > page) options |= M_PHYS_CONTIG;
  /* 10 */
  if (size + alignment < size) {
    fail_with(o, MV_MUST_FAIL, "capacity + alignment wraps", 1, kIOReturnBadArgument);
    return;
  }
  /* 11: NULL task without Pageable is allowed (seed page wins, docs/departures.md) */
  bool pageable = (options & M_PAGEABLE) != 0;
  /* 13: cache mode, unmasked */
  uint32_t cache = (options & M_CACHE_MASK) >> 8;
  flags |= cache << 28;
  if (pageable) {
    flags |= M_BUF_PAGEABLE;
    if (options & M_PURGEABLE) { flags |= M_BUF_PURGEABLE; o->purgeable = true; }
    if (!round_page(capacity, page, &size)) {
      fail_with(o, MV_MUST_FAIL, "pageable page rounding overflows", 1, kIOReturnBadArgument);
      return;
    }
    limit = 0;
  } else {
    flags |= M_AUTO_PREPARE;
    if (limit && !round_page(size, page, &size)) {
      fail_with(o, MV_MUST_FAIL, "limit page rounding overflows", 1, kIOReturnBadArgument);
      return;
    }
  }
  /* 16 */
  if (pageable || (options & M_CACHE_MASK)) flags |= M_PERSISTENT;
  /* 17: auto-prepared wired buffers; Out-only is prepared read-only */
  if (!pageable && (options & 3) == kIODirectionOut) flags |= M_PREPARED_RO;
  o->flags = flags;
  o->pageable = pageable;
  o->prepare_count = pageable ? 0 : 1;

  /* The physical promises of a wired buffer (none for pageable memory: §2 step 14). */
  bool promise = false;
  if (!pageable) {
    bool contig = (options & (M_HOST_CONTIG | M_PHYS_CONTIG)) != 0;   /* no mapper */
    if (extra) {
      o->limit = extra->high;
      o->low = extra->low;
      o->phys_align = extra->alignment > 1 ? extra->alignment : 0;
      o->contig = extra->contiguous;
      o->boundary = extra->boundary;
      o->max_segment_size = extra->max_segment_size;
      o->max_segments = extra->max_segments;
    } else {
      o->limit = limit;
      o->phys_align = alignment > page ? pow2_up(alignment) : 0;
      o->contig = contig;
    }
    /* a limit at or above the top of RAM is dropped (as XNU drops it) */
    if (o->limit && env->ram_top && o->limit >= env->ram_top - 1) o->limit = 0;
    promise = o->limit || o->low || o->phys_align > page || (o->contig && size > page) ||
              o->boundary || o->max_segments || o->max_segment_size;
  }

  /* A capacity no process can map must fail, whichever rule catches it: without frame numbers
   * a physical promise may be refused for privilege before the size is looked at. */
  if (capacity > (1ull << 46) || size > (1ull << 46)) {
    if (promise && !env->frames)
      fail_with(o, MV_MUST_FAIL, "too large to map (or not privileged)", 3, kIOReturnNoMemory,
                kIOReturnBadArgument, kIOReturnNotPrivileged);
    else
      fail_with(o, MV_MUST_FAIL, "too large to map", 2, kIOReturnNoMemory, kIOReturnBadArgument);
    return;
  }
  if (pageable) return;   /* §2 step 14: contiguity, limit, big alignment ignored */

  if (o->phys_align == UINT64_MAX) {
    fail_with(o, MV_MUST_FAIL, "alignment above 2^63 cannot be met", 0);
    return;
  }
  if (promise)
    fail_with(o, MV_MAY_FAIL, "physical promise (4K provider / privilege / mask)", 3,
              kIOReturnNoMemory, kIOReturnNotPrivileged, kIOReturnCannotWire);
}

void model_predict_create(const model_request *rq, const model_env *env, model_create *o)
{
  uint32_t dir = rq->options;
  switch (rq->factory) {
  case MF_IN_TASK_WITH_OPTIONS:
    predict_init(rq->null_task, rq->options, rq->capacity, rq->alignment, 0, NULL, env, o);
    break;
  case MF_IN_TASK_WITH_PHYSICAL_MASK:
    predict_init(rq->null_task, rq->options, rq->capacity, 1, rq->mask, NULL, env, o);
    break;
  case MF_WITH_OPTIONS:
    predict_init(false, rq->options, rq->capacity, rq->alignment, 0, NULL, env, o);
    break;
  case MF_WITH_CAPACITY:
    predict_init(false, dir | (rq->contiguous ? M_PHYS_CONTIG : 0), rq->capacity,
                 rq->contiguous ? rq->capacity : 1, 0, NULL, env, o);
    break;
  case MF_WITH_BYTES:
    predict_init(false, dir | (rq->contiguous ? M_PHYS_CONTIG : 0), rq->capacity,
                 rq->capacity < env->page ? rq->capacity : env->page, 0, NULL, env, o);
    break;
  case MF_ALLOC_INIT:
    predict_init(rq->null_task, rq->options, rq->capacity, rq->alignment, rq->mask, NULL, env, o);
    break;
  case MF_IN_TASK_WITH_CONSTRAINTS: {
    const dk_constraints *c = &rq->c;
    memset(o, 0, sizeof *o);
    if (rq->options & (M_PAGEABLE | M_PURGEABLE)) {
      fail_with(o, MV_MUST_FAIL, "constraints with pageable", 1, kIOReturnBadArgument);
      return;
    }
    bool p2a = c->alignment <= 1 || (c->alignment & (c->alignment - 1)) == 0;
    bool p2b = c->boundary == 0 || (c->boundary & (c->boundary - 1)) == 0;
    if (!p2a || !p2b || (c->high && c->low > c->high)) {
      fail_with(o, MV_MUST_FAIL, "invalid constraints", 1, kIOReturnBadArgument);
      return;
    }
    predict_init(rq->null_task, rq->options | (c->contiguous ? M_HOST_CONTIG : 0), rq->capacity,
                 c->alignment > 1 ? c->alignment : 1, 0, c, env, o);
    break;
  }
  default:
    memset(o, 0, sizeof *o);
    fail_with(o, MV_MUST_FAIL, "bad factory", 0);
    break;
  }
}

/* ---- a live buffer ---------------------------------------------------------------------- */

void model_buf_init(model_buf *m, const model_create *c)
{
  memset(m, 0, sizeof *m);
  m->capacity = c->capacity;
  m->length = c->capacity;
  m->flags = c->flags;
  m->wire_count = c->prepare_count;
  m->pageable = c->pageable;
  m->purgeable = c->purgeable;
  m->null_task = c->null_task;
  m->shadow = calloc(1, (size_t)c->capacity);   /* zero fill (§9 row 6) */
}

void model_buf_free(model_buf *m)
{
  free(m->shadow);
  m->shadow = NULL;
}

void model_setLength(model_buf *m, uint64_t len)
{
  if (len <= m->capacity) m->length = len;   /* beyond capacity: silently nothing */
}

bool model_appendBytes(model_buf *m, const uint8_t *bytes, uint64_t n)
{
  uint64_t room = m->capacity - m->length;
  uint64_t k = n < room ? n : room;           /* silent truncation */
  if (k) {
    if (bytes) memcpy(m->shadow + m->length, bytes, (size_t)k);
    else memset(m->shadow + m->length, 0, (size_t)k);
  }
  m->length += k;
  return true;                                /* always */
}

bool model_range_ptr_ok(const model_buf *m, uint64_t start, uint64_t n)
{
  if (m->null_task) return false;
  if (start + n < start) return false;
  return start < m->length && start + n <= m->length;
}

static bool rw_range_ok(const model_buf *m, uint64_t off, uint64_t n)
{
  if (off > m->length || off + n < off || off + n > m->length) return false;
  if (m->pageable && m->wire_count == 0) return false;   /* XNU panics; dmakit returns 0 */
  return true;
}

uint64_t model_readBytes(const model_buf *m, uint64_t off, uint64_t n)
{
  return rw_range_ok(m, off, n) ? n : 0;
}

uint64_t model_writeBytes(model_buf *m, uint64_t off, const uint8_t *src, uint64_t n)
{
  if (!rw_range_ok(m, off, n) || (m->flags & M_PREPARED_RO)) return 0;
  if (n) {
    if (src) memcpy(m->shadow + off, src, (size_t)n);
    else memset(m->shadow + off, 0, (size_t)n);
  }
  return n;
}

IOReturn model_prepare(model_buf *m, uint32_t dir)
{
  uint32_t d = dir == kIODirectionNone ? (m->flags & M_DIR_MASK) : dir;
  bool out_only = (d & 3) == kIODirectionOut;
  if (m->wire_count && (m->flags & M_PREPARED_RO) && !out_only) return kIOReturnNotWritable;
  if (m->wire_count == 0 && out_only) m->flags |= M_PREPARED_RO;
  m->wire_count++;
  return kIOReturnSuccess;
}

IOReturn model_complete(model_buf *m, uint32_t dir)
{
  (void)dir;
  if (m->wire_count && --m->wire_count == 0) m->flags &= ~M_PREPARED_RO;
  return kIOReturnSuccess;   /* always, even unbalanced */
}

IOReturn model_performOperation(const model_buf *m, uint32_t op, uint64_t off, uint64_t len,
                                IOReturn *alt)
{
  if (op != 1 && op != 2 && op != 50 && op != 51) { *alt = kIOReturnUnsupported; return kIOReturnUnsupported; }
  uint64_t rest = m->length - off;            /* unsigned wrap when off > length, as XNU */
  uint64_t remaining = len < rest ? len : rest;
  IOReturn r = kIOReturnSuccess;
  if (remaining && off >= m->length) r = kIOReturnUnderrun;
  *alt = r;
  /* XNU walks physical segments, which an unprepared pageable buffer does not have yet;
   * dmakit flushes through its mapping. Either answer is acceptable there. */
  if (r == kIOReturnSuccess && remaining && m->pageable && m->wire_count == 0) *alt = kIOReturnNotReady;
  return r;
}

IOReturn model_setPurgeable(model_buf *m, uint32_t state, uint32_t *old, bool *old_set)
{
  uint32_t cur = m->purgeable_state ? m->purgeable_state : kIOMemoryPurgeableNonVolatile;
  uint32_t op = state & 0xf;
  *old_set = false;
  if (op < 1 || op > 4) { *old = cur; *old_set = true; return kIOReturnBadArgument; }
  if (!m->purgeable) return kIOReturnUnsupported;
  if (op == kIOMemoryPurgeableEmpty && m->wire_count == 0)
    memset(m->shadow, 0, (size_t)m->capacity);   /* discarded: reads back zero */
  if (op != kIOMemoryPurgeableKeepCurrent) m->purgeable_state = op;
  *old = cur;
  *old_set = true;
  return kIOReturnSuccess;
}

void model_setDirection(model_buf *m, uint32_t dir)
{
  m->flags = (m->flags & ~M_DIR_MASK) | dir;   /* unmasked, as XNU */
}

bool model_phys_ok(const model_buf *m, const model_env *env, uint64_t off)
{
  if (off >= m->length) return false;
  if (m->pageable && m->wire_count == 0) return false;
  return env->frames;
}
