/* src/iokit/internal.h: the objects behind the public handles. OSObject is the header of
 * every object (class pointer, atomic count); IOMemoryDescriptor holds what every descriptor
 * has (flags, length, task, wiring count, the set of its mappings, its backing memory);
 * IOBufferMemoryDescriptor adds what §2 derived; IOMemoryMap is one view of a descriptor.
 * Grouped by the file that defines each function. */
#ifndef DK_IOKIT_INTERNAL_H
#define DK_IOKIT_INTERNAL_H

#include "alloc/pool.h"
#include "base/base.h"
#include "base/counters.h"
#include "iokit/plan.h"
#include "mem/mem.h"
#include "phys/phys.h"
#include "mapper/mapper.h"
#include "share/share.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- object.c --------------------------------------------------------------------- */
#define DK_CLASS_MAGIC 0x1b3d0000u   /* the high half of every class's magic */
typedef struct dk_md_ops dk_md_ops;
typedef struct dk_class {
  uint32_t    magic;
  const char *name;
  void      (*free)(OSObject *self);
  /* Objects of the class can be found without a reference and revived (dk__object_try_retain):
   * then the last release must be an atomic decrement. Otherwise a count of 1 seen by the
   * holder means nobody else can touch the count, and the release needs no atomic RMW. */
  bool        revivable;
  /* A memory descriptor class other than IOBufferMemoryDescriptor: what its kind does where
   * kinds differ (descriptors below). NULL for every other class. */
  const dk_md_ops *md;
} dk_class;

struct OSObject {
  const dk_class *cls;
  _Atomic int     refcount;
};


extern const dk_class dk__bmd_class;
extern const dk_class dk__map_class;

static inline void dk__object_init(OSObject *o, const dk_class *cls)
{
  o->cls = cls;
  atomic_init(&o->refcount, 1);
  dk__ctr_add(DK_CTR_OBJECTS_LIVE, 1);
}
/* Retain unless the count already reached 0 (an object being freed); true if retained. */
bool dk__object_try_retain(OSObject *o);
/* `p` as an object of class `cls`, or NULL (wrong type, NULL, freed). */
void *dk__object_cast(const void *p, const dk_class *cls);
dk_task_kind dk__task_kind(task_t t);
/* Free this thread's cached descriptor objects and pool slots (tests: every allocation then
 * reaches the heap, where faults are injected). */
void dk__objects_cache_flush(void);
void dk__thread_caches_flush(void);
/* Objects created and not yet freed (leak checks). */
long dk__objects_live(void);
/* Internal consistency: every invariant that can be checked from global state. 0 when all
 * hold, else -1 with a description in why. */
int dk__debug_validate(char *why, size_t cap);

/* ---- descriptors ------------------------------------------------------------------ */
/* What a descriptor needs only from its creation on, and only sometimes: the lock of a
 * kIOMemoryThreadSafe buffer, the mapper and the IOVA range, its place in a client task, the
 * purgeable state. Allocated at init when one of them applies (dk__md_ext), freed with the
 * descriptor, so a plain small buffer carries none of it. */
typedef struct dk_md_ext {
  pthread_mutex_t lock;
  IOMapper       *mapper;       /* retained; a translating mapper (VFIO), else NULL */
  dk_mapping      iova_use;     /* the buffer's IOVA range while mapped (iova_use.region set) */
  dk_iova_spec    iova_spec;    /* what §2 promised for the IOVA (numAddressBits, alignment) */
  uint64_t        iova_len;     /* bytes the IOVA range covers: the capacity */
  uint64_t        user_address; /* in a client task: the buffer's address there (getBytesNoCopy) */
  uint64_t        user_id;      /* in a client task: that mapping's id */
  uint32_t        purgeable_state;
  void *_Atomic   context;      /* setContext's object (retained when a dmakit object) */
} dk_md_ext;

/* Laid out for release: everything a small buffer's release reads or writes lies in the first
 * two cache lines (the object, the state, the memory record and the buffer pointer). */
struct IOMemoryDescriptor {
  OSObject         obj;
  uint32_t         flags;        /* _flags (REFERENCE.md §1.4) */
  uint32_t         tag;
  _Atomic uint32_t wire_count;   /* counted prepare()s; changed under the lock with ThreadSafe */
  uint8_t          pageable:1;   /* wired only while wire_count > 0 */
  uint8_t          thread_safe:1;/* kIOMemoryThreadSafe, fixed at init (flags change later) */
  uint8_t          phys_fixed:1; /* frames pinned for life and no mapper: physical queries need
                                    no state check (set once at init) */
  uint8_t          has_mapper:1; /* ext->mapper is set (fixed at init) */
  uint8_t          keyed:1;      /* a buffer that may be kept built when released (bmd.c) */
  task_t           task;         /* kernel_task, NULL (mapped nowhere) or a client (retained) */
  dk_md_ext *_Atomic ext;
  uint64_t         gen;          /* dk__config_gen() when it was built (bmd.c) */
  dk_mem           mem;          /* where the memory comes from (src/mem) */
  uint8_t         *buffer;       /* the memory in this process */
  IOByteCount      length;
  IOMemoryMap     *maps;         /* the shareable mapping set (under dk__md_set_lock); maps
                                    unlink themselves */
};

/* The lock of a descriptor's set of mappings: one of a fixed table, by address (map.c), so a
 * descriptor that is never mapped pays nothing for it. Never held with another. */
pthread_mutex_t *dk__md_set_lock(const IOMemoryDescriptor *md);
/* In a forked child: the map-set locks as new (one may have been held by another thread). */
void dk__map_in_child(void);
/* The descriptor's ext, allocated on first need; NULL with the failure recorded. */
dk_md_ext *dk__md_ext(IOMemoryDescriptor *md);
static inline dk_md_ext *dk__md_ext_peek(const IOMemoryDescriptor *md)
{
  return atomic_load_explicit(&((IOMemoryDescriptor *)(uintptr_t)md)->ext, memory_order_acquire);
}
static inline IOMapper *dk__md_mapper(const IOMemoryDescriptor *md)
{
  return md->has_mapper ? dk__md_ext_peek(md)->mapper : NULL;
}

/* The request a buffer was built for (§2's arguments): what revives a kept buffer (bmd.c,
 * ready descriptors) and what its plan is recomputed from. Constraints are interned: one
 * pointer per distinct set. */
struct IOBufferMemoryDescriptor {
  IOMemoryDescriptor    md;
  uint64_t              capacity;     /* requested (getCapacity) */
  uint64_t              alignment;    /* the argument */
  uint64_t              mask;         /* the argument */
  const dk_constraints *extra;        /* inTaskWithConstraints' (interned), else NULL */
  uint64_t              physical_limit;  /* the RAM limit in force */
  IOOptionBits          options;      /* the caller's raw options (_options) */
  uint32_t              init_flags;   /* md.flags as init left them */
  bool                  initialized;
  bool                  purgeable;    /* the plan's */
};
/* Three cache lines: descriptors of other kinds keep what they need in their own objects or
 * their provider's record, never here. */
_Static_assert(sizeof(IOBufferMemoryDescriptor) == 192, "IOBufferMemoryDescriptor is laid out in 192 bytes");

struct IOMemoryMap {
  OSObject            obj;
  IOMemoryDescriptor *md;          /* retained */
  IOMemoryMap        *super;       /* retained; a sub-range of an existing mapping */
  IOMemoryMap        *next;        /* in md->maps */
  bool                in_set;
  task_t              task;        /* retained when a client */
  mach_vm_address_t   address;     /* 0 after unmap; atomic (a client's side can revoke it) */
  uint64_t            share_id;    /* the mapping in a client task, 0 when none */
  bool                server_owned;/* made for a client's request: the server's, never shared */
  mach_vm_size_t      length;
  mach_vm_size_t      offset;
  IOOptionBits        options;
  void               *vm_base;     /* our own mapping (guards included), NULL if static/sub-map */
  size_t              vm_len;
};

/* Where descriptor kinds differ (gmd.c: memory the caller owns, physical ranges, guard pages;
 * composite.c: sub-ranges and concatenations). IOBufferMemoryDescriptor has no table: md.c
 * and map.c serve it directly, its fast paths untouched. Offsets are checked against the
 * length by the caller. */
struct dk_md_ops {
  /* The bus address of byte `off` (a mapper's IOVA; the CPU physical address with
   * kIOMemoryMapperNone or without a mapper) and in *run the bytes from there that are
   * contiguous in it; 0 with the failure recorded. */
  addr64_t (*segment)(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, IOOptionBits options);
  /* The address of byte `off` where the memory is (this process's virtual address, or the
   * caller's bus address for physical ranges) and the run of such addresses; *virt says which.
   * 0 when the memory has no address (guard pages). */
  uint64_t (*source)(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt);
  IOReturn (*prepare)(IOMemoryDescriptor *md, IODirection forDirection);
  IOReturn (*complete)(IOMemoryDescriptor *md, IODirection forDirection);
  /* Copy [off, off+len) into `buf` (to_md false) or from it (NULL: zeros); the bytes copied,
   * the failure recorded when short. */
  uint64_t (*copy)(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md);
  /* Map [off, off+len) with `prot` so that byte off lands at `at`, replacing what is there
   * (the caller's reservation); the pages around the range's ends come along. */
  IOReturn (*map_at)(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at);
};

extern const dk_class dk__gmd_class;      /* gmd.c: IOGeneralMemoryDescriptor */
extern const dk_class dk__guard_class;    /* gmd.c: IOGuardPageMemoryDescriptor */
extern const dk_class dk__sub_class;      /* composite.c: IOSubMemoryDescriptor */
extern const dk_class dk__multi_class;    /* composite.c: IOMultiMemoryDescriptor */
/* The descriptor a window (of windows) shows, and `*off` moved to where it lies in it. */
IOMemoryDescriptor *dk__sub_innermost(IOMemoryDescriptor *md, uint64_t *off);

/* md.c */
IOMemoryDescriptor *dk__md_other(const void *p);
/* p as an initialized descriptor of any kind, or NULL (wrong type, NULL, freed). */
static inline IOMemoryDescriptor *dk__md(const void *p)
{
  const IOBufferMemoryDescriptor *b = p;
  if (__builtin_expect(b && b->md.obj.cls == &dk__bmd_class, 1))
    return b->initialized ? (IOMemoryDescriptor *)(uintptr_t)&b->md : NULL;
  return dk__md_other(p);
}
static inline const dk_md_ops *dk__md_ops(const IOMemoryDescriptor *md) { return md->obj.cls->md; }
/* The address of byte `off` where the memory is, whatever the kind (dk_md_ops.source). */
uint64_t dk__md_source(IOMemoryDescriptor *md, uint64_t off, uint64_t *run, bool *virt);
/* The kinds' copy and placed mapping, whatever the kind (dk_md_ops.copy, map_at). */
uint64_t dk__md_copy(IOMemoryDescriptor *md, uint64_t off, void *buf, uint64_t len, bool to_md);
IOReturn dk__md_map_at(IOMemoryDescriptor *md, uint64_t off, uint64_t len, int prot, uint8_t *at);
/* IOKit's counted prepare and complete around a kind's own wiring: `wire` runs on the first
 * prepare (NULL: nothing to wire), `unwire` when the count returns to zero. */
IOReturn dk__md_prepare_counted(IOMemoryDescriptor *md, IODirection forDirection,
                                IOReturn (*wire)(IOMemoryDescriptor *md, IODirection dir));
IOReturn dk__md_complete_counted(IOMemoryDescriptor *md, void (*unwire)(IOMemoryDescriptor *md));
/* A descriptor object of `size` bytes of class `cls`, zeroed, counted live; NULL recorded. */
void *dk__md_new(const dk_class *cls, size_t size);
/* Let go of what every kind may hold (the context object, the ext); then free the object. */
void dk__md_destroy(IOMemoryDescriptor *md);
void dk__md_lock(IOMemoryDescriptor *md);      /* the lock, only with kIOMemoryThreadSafe */
void dk__md_unlock(IOMemoryDescriptor *md);
/* Why physical addresses cannot be given for [offset, ...) now; kIOReturnSuccess if they can. */
IOReturn dk__md_phys_ready(IOMemoryDescriptor *md);
IOReturn dk__md_wire(IOMemoryDescriptor *md);
/* The buffer's IOVA range in its mapper (wired: at init; pageable: while prepared). */
IOReturn dk__md_iova_map(IOMemoryDescriptor *md);
void     dk__md_iova_unmap(IOMemoryDescriptor *md);
void     dk__md_unwire(IOMemoryDescriptor *md);
void     dk__md_teardown(IOMemoryDescriptor *md);

/* gmd.c: the address of the one virtual range a general descriptor describes (XNU's identity
 * mapping applies to it), else 0. */
uint64_t dk__gmd_identity(IOMemoryDescriptor *md);

/* map.c */
static inline mach_vm_address_t dk__map_address(const IOMemoryMap *m)
{
  return __atomic_load_n(&m->address, __ATOMIC_ACQUIRE);
}
IOMemoryMap *dk__create_mapping(IOMemoryDescriptor *md, task_t task, mach_vm_address_t at,
                                IOOptionBits options, mach_vm_size_t offset, mach_vm_size_t length);


#endif
