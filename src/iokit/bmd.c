/* src/iokit/bmd.c: IOBufferMemoryDescriptor: the factories of REFERENCE.md §3, init (§2) on
 * top of the plan, the request to the memory layer (src/mem: which provider, and the
 * verification of every physical promise through the frames, happen there), the buffer
 * methods of §4, free; and the per-thread caches that keep malloc off the create path. */
#include "alloc/geom.h"
#include "base/fork.h"
#include "base/tld.h"
#include "iokit/internal.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void bmd_free(OSObject *o);
const dk_class dk__bmd_class = { 0x1b3d0001u, "IOBufferMemoryDescriptor", bmd_free, false, NULL };

static IOBufferMemoryDescriptor *as_bmd(const void *p) { return dk__object_cast(p, &dk__bmd_class); }

/* ---- descriptor objects: a small per-thread cache keeps malloc off the create path ------ */
#define OBJ_CACHE 32
static _Thread_local IOBufferMemoryDescriptor *tl_objs[OBJ_CACHE];
static _Thread_local int tl_nobjs;

static void objs_flush(void)
{
  while (tl_nobjs > 0) dk__obj_free(tl_objs[--tl_nobjs]);
}

static void register_fork(void);
static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;

static IOBufferMemoryDescriptor *bmd_new(void)
{
  pthread_once(&g_fork_once, register_fork);
  IOBufferMemoryDescriptor *b = tl_nobjs > 0 ? tl_objs[--tl_nobjs] : dk__obj_alloc(sizeof *b);
  if (!b) return NULL;
  /* twelve 16-byte stores, not memset (nor a loop, which GCC turns back into one): a memset of
   * this size compiles to `rep stos`, whose start-up cost was a tenth of the create path */
  _Static_assert(sizeof *b == 192, "the descriptor is zeroed as twelve 16-byte stores");
  typedef uint64_t zero16 __attribute__((vector_size(16), aligned(8), may_alias));
  zero16 *z = (zero16 *)(void *)b;
  const zero16 o = { 0, 0 };
  z[0] = o, z[1] = o, z[2] = o, z[3] = o, z[4] = o, z[5] = o;
  z[6] = o, z[7] = o, z[8] = o, z[9] = o, z[10] = o, z[11] = o;
  dk__object_init(&b->md.obj, &dk__bmd_class);
  return b;
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_alloc(void)
{
  dk__enter("alloc");
  return bmd_new();
}

/* ---- interned constraints ----------------------------------------------------------------- *
 * A buffer made by inTaskWithConstraints remembers its constraints for the ready descriptors
 * below: one copy per distinct set, kept for the life of the process (drivers use a handful);
 * past DK_INTERN_MAX sets, buffers are simply not kept built. */
#define DK_INTERN_MAX 1024
typedef struct interned { dk_constraints c; struct interned *next; } interned;
static interned *_Atomic g_interned;
static _Atomic int g_ninterned;
static pthread_mutex_t g_intern_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local const dk_constraints *tl_last_interned;

static bool constraints_equal(const dk_constraints *a, const dk_constraints *b)
{
  return a->high == b->high && a->alignment == b->alignment && a->low == b->low &&
         a->boundary == b->boundary && a->max_segment_size == b->max_segment_size &&
         a->max_segments == b->max_segments && a->contiguous == b->contiguous && a->numa_node == b->numa_node;
}

static const dk_constraints *intern(const dk_constraints *c)
{
  const dk_constraints *last = tl_last_interned;
  if (last && constraints_equal(last, c)) return last;
  for (interned *i = atomic_load_explicit(&g_interned, memory_order_acquire); i; i = i->next)
    if (constraints_equal(&i->c, c)) return tl_last_interned = &i->c;
  if (atomic_load_explicit(&g_ninterned, memory_order_relaxed) >= DK_INTERN_MAX) return NULL;
  pthread_mutex_lock(&g_intern_lock);
  interned *i;
  for (i = atomic_load_explicit(&g_interned, memory_order_acquire); i; i = i->next)
    if (constraints_equal(&i->c, c)) break;
  if (!i && (i = dk__alloc_persistent(8, sizeof *i))) {
    i->c = *c;
    i->next = atomic_load_explicit(&g_interned, memory_order_relaxed);
    atomic_store_explicit(&g_interned, i, memory_order_release);
    atomic_fetch_add_explicit(&g_ninterned, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_intern_lock);
  return i ? (tl_last_interned = &i->c) : NULL;
}

/* ---- ready descriptors: released small pool buffers kept built ------------------------ *
 * A driver asks for the same kind of buffer again and again. A released descriptor whose
 * memory is a pool slab slot, in kernel_task or no task, without a mapper, mapping or
 * outstanding prepare, is kept built by its thread (at most READY_MAX of them, so at most
 * READY_MAX x 4 KiB): its memory is zeroed at release exactly as a freed slot is, and the next
 * request equal in every argument gets it back with its slot and its verified frames (pinned:
 * they are still the frames), as a slab allocator keeps constructed objects. Anything that
 * changes how a buffer is built (an option, the system mapper), and a trim, bump
 * dk__config_gen and what was kept is freed at the thread's next call; dk_pool_trim frees the
 * calling thread's at once, and the thread's exit its own. */
#define READY_MAX 32
static _Thread_local IOBufferMemoryDescriptor *tl_ready[READY_MAX];
static _Thread_local int tl_nready;
static _Thread_local uint64_t tl_ready_gen;
/* Only a thread that builds buffers keeps them: one that only releases what others made (a
 * consumer) would hold slots nobody asks it for. */
static _Thread_local bool tl_ready_creator;

/* Free a kept descriptor for good: its slot counted used again, then the ordinary teardown. */
static void ready_destroy(IOBufferMemoryDescriptor *b)
{
  dk__pool_unpark(dk__ctr_self(), &b->md.mem.u.pool, false);
  dk__md_teardown(&b->md);
  dk__obj_free(b);
}

static void ready_flush(void)
{
  while (tl_nready > 0) ready_destroy(tl_ready[--tl_nready]);
}

/* A kept descriptor built for exactly this request, revived; NULL if none. */
static inline __attribute__((always_inline)) IOBufferMemoryDescriptor *ready_take(task_t task, IOOptionBits options, uint64_t capacity,
                                            uint64_t alignment, uint64_t mask, const dk_constraints *extra)
{
  if (!tl_nready) return NULL;
  if (__builtin_expect(tl_ready_gen != dk__config_gen(), 0)) {
    ready_flush();
    return NULL;
  }
  for (int i = tl_nready; i-- > 0;) {          /* newest first: warm in the cache */
    IOBufferMemoryDescriptor *b = tl_ready[i];
    if (b->capacity != capacity || b->options != options || b->md.task != task || b->mask != mask ||
        b->alignment != alignment || (b->extra != extra && (!b->extra || !extra || !constraints_equal(b->extra, extra))))
      continue;
    tl_ready[i] = tl_ready[--tl_nready];
    IOMemoryDescriptor *md = &b->md;
    md->obj.cls = &dk__bmd_class;
    atomic_init(&md->obj.refcount, 1);
    md->flags = b->init_flags;
    md->tag = 0;
    md->length = b->capacity;
    atomic_store_explicit(&md->wire_count, 1, memory_order_relaxed);   /* auto-prepared */
    dk_tctr *t = dk__ctr_self();
    dk__ctr_bump(t, DK_CTR_OBJECTS_LIVE, 1);
    dk__pool_unpark(t, &md->mem.u.pool, true);
    return b;
  }
  return NULL;
}

/* Whether b may be kept built when released: a slab slot in this process (or no task), no
 * mapper, wired; constraints interned. */
static void ready_key_set(IOBufferMemoryDescriptor *b)
{
  const IOMemoryDescriptor *md = &b->md;
  if (md->mem.kind != DK_PROVIDER_POOL_SLAB || md->has_mapper || md->pageable ||
      (md->task && md->task != kernel_task) || dk__md_ext_peek(md))
    return;
  if (b->extra && !(b->extra = intern(b->extra))) return;   /* too many distinct sets */
  b->init_flags = md->flags;
  b->md.keyed = true;
}

/* Keep b built if it is as init left it (but for what a caller may change and revival resets:
 * length, direction, tag); false to free it. */
static bool ready_park(IOBufferMemoryDescriptor *b)
{
  IOMemoryDescriptor *md = &b->md;
  if (!b->md.keyed || !tl_ready_creator || dk__md_ext_peek(md) ||
      atomic_load_explicit(&md->wire_count, memory_order_relaxed) != 1)
    return false;
  uint64_t gen = dk__config_gen();
  if (b->md.gen != gen) return false;
  if (tl_ready_gen != gen) {
    ready_flush();
    tl_ready_gen = gen;
  }
  if (tl_nready >= READY_MAX) return false;
  if (!(dk__tl_armed & (1u << DK_TLD_READY))) {
    dk__pool_set_trim_hook(ready_flush);    /* dk_pool_trim frees the calling thread's */
    dk__tld_arm(DK_TLD_READY, ready_flush); /* the thread's exit frees them */
  }
  dk__pool_park(&md->mem.u.pool);  /* zeroed: freed memory never shows its contents */
  md->obj.cls = NULL;              /* a stale pointer to it is no longer a descriptor */
  tl_ready[tl_nready++] = b;
  return true;
}

/* In a forked child: buffers kept built and objects cached are the parent's (their slots may
 * be handed out again there): forgotten, never handed out here. */
static void iokit_in_child(void)
{
  tl_nobjs = 0;
  tl_nready = 0;
  pthread_mutex_init(&g_intern_lock, NULL);
  dk__map_in_child();
}
static void register_fork(void) { dk__fork_register(DK_FORK_IOKIT, iokit_in_child); }

void dk__objects_cache_flush(void)
{
  ready_flush();
  objs_flush();
}

static void bmd_free(OSObject *o)
{
  IOBufferMemoryDescriptor *b = (IOBufferMemoryDescriptor *)o;
  if (ready_park(b)) return;
  dk__md_teardown(&b->md);      /* completes every prepare, unwires, frees the memory */
  b->md.obj.cls = NULL;          /* a stale pointer to it is no longer a descriptor */
  if (tl_nobjs < OBJ_CACHE) {
    dk__tld_arm(DK_TLD_OBJECTS, objs_flush);   /* so the thread's exit empties the cache */
    tl_objs[tl_nobjs++] = b;
    return;
  }
  dk__obj_free(b);
}

/* ---- init (§2) ------------------------------------------------------------------------ */

/* Constraints no memory can meet, refused before anything is allocated: a contiguous buffer
 * longer than its boundary, or more segments than allowed however the memory is laid out
 * (the fewest segments any layout gives is the count for one contiguous run). */
static bool satisfiable(const dk_constraints *c, uint64_t len)
{
  if (c->contiguous && c->boundary && len > c->boundary) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_BOUNDARY,
             "%llu contiguous bytes cannot fit between boundary lines 0x%llx apart",
             (unsigned long long)len, (unsigned long long)c->boundary);
    return false;
  }
  if (c->contiguous && c->max_segment_size && len > c->max_segment_size) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_SEGMENTS,
             "%llu contiguous bytes are one segment, longer than the maximum segment size 0x%llx",
             (unsigned long long)len, (unsigned long long)c->max_segment_size);
    return false;
  }
  if (c->max_segments) {
    dk_run best = { 0, len };                         /* one run starting on a boundary line */
    uint64_t fewest = dk__segments_count(c, &best, 1);
    if (fewest > c->max_segments) {
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_SEGMENTS,
               "%llu bytes make at least %llu segments under these limits, at most %u allowed",
               (unsigned long long)len, (unsigned long long)fewest, c->max_segments);
      return false;
    }
  }
  return true;
}

/* The constraints §2 promises the caller, for the wired path. */
static dk_constraints plan_constraints(const dk_plan *p, uint64_t ram_top, uint64_t page)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  /* "A limit at or beyond the top of RAM is dropped" (IOKernelAllocateWithPhysicalRestrict) */
  if (p->limit && (ram_top == 0 || p->limit < ram_top - 1)) c.high = p->limit;
  /* Alignment is honoured as the next power of two (XNU's IOMallocAligned rounds; its
   * physical path uses alignment-1 as a mask, which the power of two also satisfies). */
  uint64_t a = dk__next_pow2(p->alignment ? p->alignment : 1);
  if (a > page) c.alignment = a;
  c.contiguous = p->contig;
  return c;
}

static bool strict_cache_ok(uint32_t mode)
{
  if (!dk__option(DK_OPTION_STRICT_CACHE_MODE)) return true;
  if (mode == kIODefaultCache || mode == kIOCopybackCache || mode == kIOCopybackInnerCache) return true;
  dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_CACHE,
           "cache mode %u cannot be honoured: Linux user space maps RAM write-back only "
           "(DK_OPTION_STRICT_CACHE_MODE is set)", mode);
  return false;
}

/* §2 is a pure function of its arguments: a thread asking for the same kind of buffer again
 * (the common case in a driver) reuses the last successful plan. */
typedef struct plan_key {
  dk_task_kind task;
  bool         mapped;
  IOOptionBits options;
  uint64_t capacity, alignment, mask, page;
} plan_key;
static _Thread_local plan_key tl_plan_key;
static _Thread_local dk_plan tl_plan;
static _Thread_local bool tl_plan_valid;

/* The plan for these arguments: this thread's memo of its last one (no copy: GCC turns a copy
 * of a plan into `rep movs`, whose start-up cost was the largest single item of the create
 * path). Valid until this thread's next plan_memo; NULL with the failure recorded. */
static const dk_plan *plan_memo(dk_task_kind tk, bool mapped, IOOptionBits options, uint64_t capacity,
                                uint64_t alignment, uint64_t mask, uint64_t page)
{
  /* compared field by field: a byte compare of a key just built from narrow stores stalls on
   * store forwarding, which cost more than the whole comparison */
  const plan_key *o = &tl_plan_key;
  if (tl_plan_valid && o->capacity == capacity && o->options == options && o->mask == mask &&
      o->alignment == alignment && o->task == tk && o->mapped == mapped && o->page == page)
    return &tl_plan;
  tl_plan_valid = false;
  dk_constraint_kind kind;
  char why[200];
  IOReturn rc = dk__plan(&tl_plan, tk, options, capacity, alignment, mask, page, mapped, &kind, why, sizeof why);
  if (rc != kIOReturnSuccess) {
    dk__fail(rc, kind, "%s", why);
    return NULL;
  }
  tl_plan_key = (plan_key){ .task = tk, .mapped = mapped, .options = options, .capacity = capacity,
                            .alignment = alignment, .mask = mask, .page = page };
  tl_plan_valid = true;
  return &tl_plan;
}

/* What §2 promised for the buffer's I/O addresses with a mapper: the mask's address bits and
 * the alignment. */
static dk_iova_spec iova_spec_of(const dk_plan *p)
{
  dk_iova_spec s = { 0, 0, 0, 0 };
  if (p->num_address_bits < 64) s.limit = (1ull << p->num_address_bits) - 1;
  uint64_t a = dk__next_pow2(p->alignment ? p->alignment : 1);
  s.alignment = a > 1 ? a : 0;
  return s;
}

/* With a mapper, the caller's constraints are promises about the IOVA range: check them on
 * it as the physical ones are checked on frames (the segment limits, which the IOVA
 * allocator does not place by, especially). The mapping is left for teardown. */
static bool iova_verified(const IOMemoryDescriptor *md, const dk_constraints *c, uint64_t len)
{
  dk_constraints ic = *c;
  ic.contiguous = false;               /* one IOVA range: contiguous by construction */
  ic.numa_node = -1;
  uint64_t iova = dk__md_ext_peek(md)->iova_use.iova;
  dk_run run = { iova, len };
  char why[200];
  dk_constraint_kind k = dk__runs_check(&ic, &run, 1, why, sizeof why);
  if (k == DK_CONSTRAINT_NONE) return true;
  dk__fail(kIOReturnNoMemory, k, "the IOVA range 0x%llx+0x%llx cannot keep the promise: %s",
           (unsigned long long)iova, (unsigned long long)len, why);
  return false;
}

/* A buffer in a client task is mapped there whole (XNU: a fresh VM object mapped anywhere in
 * the user task), read-write unless the client has read-only access. */
static bool map_into_task(IOMemoryDescriptor *md, task_t task, uint64_t capacity)
{
  dk_access access = DK_ACCESS_NONE;
  dk_task_get_peer(task, NULL, &access);
  uint64_t file_off, span, in_page;
  int fd = dk__mem_share(&md->mem, 0, capacity, &file_off, &span, &in_page);
  if (fd < 0) return false;
  dk_share_req r = {
    .memfd = fd,
    .file_offset = file_off,
    .span = span,
    .in_page = in_page,
    .length = capacity,
    .writable = access == DK_ACCESS_READ_WRITE,
    .tag = md->tag,
    .obj = md,
    .kind = DK_SHARE_BUFFER,
  };
  uint64_t id, address;
  /* user_id and user_address are stored by the sharing hooks */
  return dk__share_map(task, &r, &id, &address) == kIOReturnSuccess;
}

/* initWithPhysicalMask with the public entry's failure bookkeeping already done. */
static bool init_buffer(IOBufferMemoryDescriptor *b, task_t task, IOOptionBits options,
                        uint64_t capacity, uint64_t alignment, uint64_t mask,
                        const dk_constraints *extra)
{
  if (!b || b->initialized) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             b ? "the descriptor is already initialized" : "not an IOBufferMemoryDescriptor");
    return false;
  }
  const dk_caps *caps = dk__caps();
  dk_task_kind tk = dk__task_kind(task);
  if (tk == DK_TASK_OTHER && !dk__task_is_client(task)) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_TASK,
             "unknown task: kernel_task (this process), NULL and connected clients are the tasks here");
    return false;
  }
  IOMemoryDescriptor *md = &b->md;
  /* §2 step 5: the system mapper, unless kIOMemoryMapperNone */
  IOMapper *mapper = (options & kIOMemoryMapperNone) || !dk__mapper_system_set() ? NULL : dk__mapper_system_retain();
  if (mapper && !dk__mapper_translates(mapper)) {
    dk__mapper_release(mapper);
    mapper = NULL;
  }
  dk_md_ext *x = NULL;
  if (mapper) {
    if (!(x = dk__md_ext(md))) {
      dk__mapper_release(mapper);
      return false;
    }
    x->mapper = mapper;                 /* released with the descriptor, even on failure */
    md->has_mapper = true;
  }
  const dk_plan *p = plan_memo(tk, mapper != NULL, options, capacity, alignment, mask, caps->page_size);
  if (!p) return false;
  if (!strict_cache_ok(p->cache_mode)) return false;
  if (!p->pageable && dk__next_pow2(p->alignment ? p->alignment : 1) == 0) {
    /* XNU's physical allocator could not satisfy an alignment mask this wide either */
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_ALIGNMENT, "alignment 0x%llx is beyond any address",
             (unsigned long long)p->alignment);
    return false;
  }
  b->options = options;
  b->capacity = p->capacity;
  b->alignment = alignment;
  b->mask = mask;
  b->extra = extra;
  b->purgeable = p->purgeable;
  md->flags = p->flags;
  md->thread_safe = (p->flags & kIOMemoryThreadSafe) != 0;
  if ((md->thread_safe || tk == DK_TASK_OTHER || p->purgeable) && !(x = dk__md_ext(md))) return false;
  md->task = task;
  if (tk == DK_TASK_OTHER) dk__task_retain(task);   /* a client's task lives as long as its buffers */
  md->pageable = p->pageable;
  dk_constraints c = extra ? *extra : plan_constraints(p, caps->ram_top, caps->page_size);
  if (mapper) {
    x->iova_spec = iova_spec_of(p);
    if (extra) {
      /* with a mapper the device sees IOVAs: the window, the alignment, the boundary and the
       * segment limits bind them (checked on the IOVA range once it is mapped); the RAM keeps
       * only alignment and contiguity */
      x->iova_spec.limit = extra->high;
      x->iova_spec.low = extra->low;
      x->iova_spec.boundary = extra->boundary;
      uint64_t a = dk__next_pow2(extra->alignment ? extra->alignment : 1);
      /* a range longer than the boundary makes fewest segments when it starts on a line */
      if (extra->boundary && extra->max_segments && p->capacity > extra->boundary && a < extra->boundary)
        a = extra->boundary;
      if (a > 1) x->iova_spec.alignment = a;
      c.low = c.high = c.boundary = c.max_segment_size = 0;
      c.max_segments = 0;
    }
  }
  if (c.high && caps->ram_top && c.high >= caps->ram_top - 1) c.high = 0;  /* above all RAM */
  if (!p->pageable && !satisfiable(&c, p->capacity)) return false;
  if (p->pageable) c = DK_CONSTRAINTS_NONE;   /* §2 step 14: ignored for pageable memory */
  b->physical_limit = c.high;
  uint64_t valign = dk__next_pow2(p->alignment ? p->alignment : 1);
  if (p->pageable && valign > caps->page_size) valign = caps->page_size;
  /* memory for other tasks (kIOMemoryKernelUserShared, DriverKit's buffers) keeps
   * page-granular mappings: the memory layer gives it pages of its own where it can */
  dk_mem_req rq = { .size = p->alloc_size, .len = p->capacity, .valign = valign, .c = &c,
                    .wire = !p->pageable, .shared = (options & kIOMemorySharingTypeMask) != 0 };
  if (!dk__mem_alloc(&md->mem, &rq)) return false;
  md->buffer = dk__mem_va(&md->mem);
  md->phys_fixed = (md->mem.flags & DK_MEM_FRAMES_FIXED) && !mapper;
  if (!p->pageable) {
    /* auto-prepared (§2 step 17); nobody else sees the object yet: no fence needed */
    atomic_store_explicit(&md->wire_count, 1, memory_order_relaxed);
    if ((p->flags & kIOMemoryDirectionMask & kIODirectionOutIn) == kIODirectionOut)
      md->flags |= kIOMemoryPreparedReadOnly;
  }
  if (p->purgeable) x->purgeable_state = kIOMemoryPurgeableNonVolatile;
  md->length = p->capacity;
  if (tk == DK_TASK_OTHER && !map_into_task(md, task, p->capacity)) return false;
  if (mapper) {
    x->iova_len = p->capacity;
    if (!p->pageable) {
      if (dk__md_iova_map(md) != kIOReturnSuccess) return false;
      if (extra && !iova_verified(md, extra, p->capacity)) return false;
    }
  }
  b->initialized = true;
  return true;
}

bool IOBufferMemoryDescriptor_initWithPhysicalMask(IOBufferMemoryDescriptor *self, task_t inTask,
                                                   IOOptionBits options, mach_vm_size_t capacity,
                                                   mach_vm_address_t alignment,
                                                   mach_vm_address_t physicalMask)
{
  dk__enter("initWithPhysicalMask");
  bool ok = init_buffer(as_bmd(self), inTask, options, capacity, alignment, physicalMask, NULL);
  if (ok) dk__enter("initWithPhysicalMask");
  else dk__pool_note_failure(dk_last_failure()->constraint);
  return ok;
}

/* A descriptor built from scratch. */
static __attribute__((noinline)) IOBufferMemoryDescriptor *build(const char *fn, task_t task, IOOptionBits options,
                                                                 uint64_t capacity, uint64_t alignment, uint64_t mask,
                                                                 const dk_constraints *extra)
{
  /* the generation before anything is read: a change made while this buffer is built makes
   * it stale at once */
  uint64_t gen = dk__config_gen();
  tl_ready_creator = true;
  IOBufferMemoryDescriptor *b = bmd_new();
  if (!b) return NULL;
  if (!init_buffer(b, task, options, capacity, alignment, mask, extra)) {
    dk__pool_note_failure(dk_last_failure()->constraint);
    OSObject_release(b);
    return NULL;
  }
  b->md.gen = gen;
  ready_key_set(b);
  dk__enter(fn);       /* success: a provider that was tried and passed over is not a failure */
  return b;
}

/* alloc + init, releasing the half-built object on failure (as IOKit's factories do). Inlined
 * into each factory, so a request met by a ready descriptor costs one call. */
static inline __attribute__((always_inline)) IOBufferMemoryDescriptor *create(const char *fn, task_t task, IOOptionBits options,
                                        uint64_t capacity, uint64_t alignment, uint64_t mask,
                                        const dk_constraints *extra)
{
  dk__enter(fn);
  IOBufferMemoryDescriptor *b = ready_take(task, options, capacity, alignment, mask, extra);
  if (b) return b;
  return build(fn, task, options, capacity, alignment, mask, extra);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithOptions(task_t inTask, IOOptionBits options,
                                                                     vm_size_t capacity, vm_offset_t alignment)
{
  return create("inTaskWithOptions", inTask, options, capacity, alignment, 0, NULL);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithOptionsTagged(
    task_t inTask, IOOptionBits options, vm_size_t capacity, vm_offset_t alignment,
    uint32_t kernTag, uint32_t userTag)
{
  /* VM accounting tags: Linux has nothing to charge them to; they do not touch getTag(). */
  (void)kernTag;
  (void)userTag;
  return create("inTaskWithOptionsTagged", inTask, options, capacity, alignment, 0, NULL);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithPhysicalMask(task_t inTask, IOOptionBits options,
                                                                          mach_vm_size_t capacity,
                                                                          mach_vm_address_t physicalMask)
{
  return create("inTaskWithPhysicalMask", inTask, options, capacity, 1, physicalMask, NULL);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withOptions(IOOptionBits options, vm_size_t capacity,
                                                               vm_offset_t alignment)
{
  return create("withOptions", kernel_task, options, capacity, alignment, 0, NULL);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withCapacity(vm_size_t capacity, IODirection dir,
                                                                bool contiguous)
{
  return create("withCapacity", kernel_task,
                dir | kIOMemoryUnshared | (contiguous ? kIOMemoryPhysicallyContiguous : 0), capacity,
                contiguous ? capacity : 1, 0, NULL);
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withBytes(const void *bytes, vm_size_t length,
                                                             IODirection dir, bool contiguous)
{
  uint64_t page = dk__caps()->page_size;
  IOBufferMemoryDescriptor *b =
      create("withBytes", kernel_task,
             dir | kIOMemoryUnshared | (contiguous ? kIOMemoryPhysicallyContiguous : 0), length,
             length < page ? length : page, 0, NULL);
  if (!b) return NULL;
  IOBufferMemoryDescriptor_setLength(b, 0);
  IOBufferMemoryDescriptor_appendBytes(b, bytes, length);
  return b;
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_withCopy(task_t inTask, IOOptionBits options,
                                                            vm_map_t sourceMap, mach_vm_address_t source,
                                                            mach_vm_size_t size)
{
  dk__enter("withCopy");
  /* copy mode (§2 step 3): a source, kIOMemoryPageable and a task are required */
  if (!source || !(options & kIOMemoryPageable) || !inTask || sourceMap != kernel_map) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "withCopy needs a source address in kernel_map, kIOMemoryPageable and a task");
    return NULL;
  }
  /* pageable (required above), so never met by a kept descriptor, none of which is: built */
  IOBufferMemoryDescriptor *b = build("withCopy", inTask, options, size, dk__caps()->page_size, 0, NULL);
  if (!b) return NULL;
  /* The copy is taken with a checked read: an unmapped source fails like vm_map_copyin. */
  if (dk__copy_checked(b->md.buffer, (const void *)(uintptr_t)source, (size_t)size) != (ssize_t)size) {
    dk__fail(kIOReturnVMError, DK_CONSTRAINT_ARGUMENT, "the source range 0x%llx+0x%llx cannot be read: %s",
             (unsigned long long)source, (unsigned long long)size, strerror(errno));
    OSObject_release(b);
    return NULL;
  }
  return b;
}

IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithConstraints(task_t inTask, IOOptionBits options,
                                                                         mach_vm_size_t capacity,
                                                                         const dk_constraints *c)
{
  dk__enter("inTaskWithConstraints");
  char why[160];
  if (!c) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "constraints are NULL");
    return NULL;
  }
  if (!dk__constraints_ok(c) && !dk__constraints_valid(c, why, sizeof why)) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "%s", why);
    return NULL;
  }
  if (options & (kIOMemoryPageable | kIOMemoryPurgeable)) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "constrained buffers are wired: kIOMemoryPageable does not apply");
    return NULL;
  }
  /* A contiguous request gets the physically contiguous option, so XNU's rules see it. */
  IOOptionBits o = options | (c->contiguous ? kIOMemoryHostPhysicallyContiguous : 0);
  uint64_t align = c->alignment > 1 ? c->alignment : 1;
  return create("inTaskWithConstraints", inTask, o, capacity, align, 0, c);
}

/* ---- buffer methods (§4) ---------------------------------------------------------- */

/* The buffer in its task: this process's pointer, or for a client task the client's address
 * (as XNU gives a user task's address, which the kernel cannot dereference). */
static uint8_t *task_bytes(const IOBufferMemoryDescriptor *b)
{
  if (b->md.task == kernel_task) return b->md.buffer;
  const dk_md_ext *x = dk__md_ext_peek(&b->md);      /* a client task's buffer always has one */
  return x ? (uint8_t *)(uintptr_t)__atomic_load_n(&x->user_address, __ATOMIC_ACQUIRE) : NULL;
}

void *IOBufferMemoryDescriptor_getBytesNoCopy(IOBufferMemoryDescriptor *self)
{
  IOBufferMemoryDescriptor *b = as_bmd(self);
  if (!b || !b->initialized || !b->md.task) return NULL;
  return task_bytes(b);
}

void *IOBufferMemoryDescriptor_getBytesNoCopyRange(IOBufferMemoryDescriptor *self, vm_size_t start,
                                                   vm_size_t withLength)
{
  IOBufferMemoryDescriptor *b = as_bmd(self);
  if (!b || !b->initialized || !b->md.task) return NULL;
  if (start + withLength < start) return NULL;
  uint8_t *base = task_bytes(b);
  if (base && start < b->md.length && start + withLength <= b->md.length) return base + start;
  return NULL;
}

vm_size_t IOBufferMemoryDescriptor_getCapacity(IOBufferMemoryDescriptor *self)
{
  IOBufferMemoryDescriptor *b = as_bmd(self);
  return b && b->initialized ? (vm_size_t)b->capacity : 0;
}

void IOBufferMemoryDescriptor_setLength(IOBufferMemoryDescriptor *self, vm_size_t length)
{
  IOBufferMemoryDescriptor *b = as_bmd(self);
  if (!b || !b->initialized || length > b->capacity) return;   /* XNU: silently nothing */
  b->md.length = length;
}

bool IOBufferMemoryDescriptor_appendBytes(IOBufferMemoryDescriptor *self, const void *bytes,
                                          vm_size_t withLength)
{
  IOBufferMemoryDescriptor *b = as_bmd(self);
  if (!b || !b->initialized) return false;
  uint64_t room = b->capacity - b->md.length;
  uint64_t n = withLength < room ? withLength : room;     /* silent truncation */
  uint8_t *at = b->md.buffer + b->md.length;
  b->md.length += n;
  /* every task's buffer is mapped in this process too: a plain copy into that mapping */
  if (n) {
    if (bytes) memcpy(at, bytes, (size_t)n);
    else memset(at, 0, (size_t)n);
  }
  return true;
}

/* ---- introspection ---------------------------------------------------------------- */

IOReturn dk_buffer_get_info(IOBufferMemoryDescriptor *buffer, dk_buffer_info *info)
{
  dk__enter("dk_buffer_get_info");
  IOBufferMemoryDescriptor *b = as_bmd(buffer);
  if (!b || !b->initialized || !info)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an initialized buffer");
  /* §2 again from the arguments the buffer was made with: a pure function, the same plan */
  const IOMemoryDescriptor *md = &b->md;
  dk_plan p;
  dk_constraint_kind kind;
  char why[200];
  IOReturn rc = dk__plan(&p, dk__task_kind(md->task), b->options, b->capacity, b->alignment, b->mask,
                         dk__caps()->page_size, md->has_mapper, &kind, why, sizeof why);
  if (rc != kIOReturnSuccess) return dk__fail(kIOReturnInternalError, kind, "the buffer's plan: %s", why);
  memset(info, 0, sizeof *info);
  info->options = p.options;
  info->alignment = p.alignment;
  info->allocation_size = p.alloc_size;
  info->physical_limit = b->physical_limit;
  info->numAddressBits = p.num_address_bits;
  info->contiguous = p.contig;
  info->pageable = p.pageable;
  info->wired = (md->mem.flags & DK_MEM_WIRED) != 0;
  info->pinned = (md->mem.flags & DK_MEM_PINNED) != 0;
  info->prepare_count = md->wire_count;
  info->cache_mode = p.cache_mode;
  info->task = md->task;
  info->provider = (dk_provider)md->mem.kind;
  const dk_md_ext *x = dk__md_ext_peek(md);
  info->mapper = x ? x->mapper : NULL;
  info->iova = x && dk__mapping_live(&x->iova_use) ? x->iova_use.iova : 0;
  return kIOReturnSuccess;
}

const char *dk_provider_name(dk_provider p)
{
  switch (p) {
  case DK_PROVIDER_MEMFD_4K:  return "memfd-4k";
  case DK_PROVIDER_POOL:      return "hugepage-pool";
  case DK_PROVIDER_POOL_SLAB: return "hugepage-pool-slab";
  case DK_PROVIDER_USER:      return "user-range";
  case DK_PROVIDER_HUGEFD:    return "hugepage-own";
  default:                   return "none";
  }
}
