/* src/mem/mem.h: where a descriptor's memory comes from, as one record (mimalloc's memid): the
 * provider that gave it, the provider's handle, and what holds for it (wired, pinned, frames
 * that never change, known zero). dk__mem_alloc runs the ladder for a request — the hugepage
 * pool (which draws from a reservation or the kernel's hugepages) for wired memory where it is
 * usable, 4K pages otherwise or when only they fit — and verifies every physical promise
 * through the frames before it returns. The other calls map, unmap, wire, translate, share
 * and free a record, whatever its provider. Each provider is one file (mem/prov_NAME.c) behind
 * dk_provider_ops; iokit above keeps IOKit's semantics and never asks which one it has. */
#ifndef DK_MEM_H
#define DK_MEM_H

#include "alloc/pool.h"
#include "phys/phys.h"

/* What a record's memory is now. */
enum {
  DK_MEM_WIRED        = 1u << 0,   /* present and locked */
  DK_MEM_PINNED       = 1u << 1,   /* its frames cannot move (a long-term pin, or no compaction) */
  DK_MEM_FRAMES_FIXED = 1u << 2,   /* wired and pinned for life: physical queries need no check */
  DK_MEM_ZEROED       = 1u << 3,   /* known to read zero when handed out */
};

/* Memory the caller owns (prov_user.c): its ranges in descriptor order, and while wired the
 * pins and frames of each range's pages. */
typedef struct dk_urange {
  uint64_t addr;                   /* the caller's address: virtual, or a bus address */
  uint64_t len;
  uint64_t off;                    /* the descriptor offset of its first byte */
  uint64_t page0;                  /* its first page's index in pfn[] / run[] (virtual) */
} dk_urange;
typedef struct dk_user {
  uint8_t   *va;                   /* range 0's address when the ranges are virtual (else NULL) */
  uint64_t   len;                  /* the bytes of all ranges */
  uint32_t   count;
  bool       virt;                 /* ranges of this process (else bus addresses, wired as given) */
  bool       frames_known;
  dk_urange *r;
  uint64_t   pages;                /* pages the ranges' page spans cover */
  dk_pin    *pins;                 /* one per range while pinned */
  uint64_t  *pfn;                  /* frame of each page, while wired (privileged) */
  uint32_t  *run;                  /* pages from each to the end of its contiguous run */
} dk_user;

/* One hugepage with a file of its own (prov_hugefd.c): shareable memory under a constraint 4K
 * pages cannot keep. */
typedef struct dk_hugefd {
  int       fd;
  uint8_t  *base;
  uint64_t  size;                  /* the hugepage size */
  uint64_t  pa;
  long      raised;                /* hugepages this record raised the kernel's limit by */
  dk_pin    pin;
} dk_hugefd;

typedef struct dk_mem {
  uint8_t     kind;                /* dk_provider */
  uint8_t     flags;               /* DK_MEM_* */
  union {
    dk_block    pool;              /* DK_PROVIDER_POOL, DK_PROVIDER_POOL_SLAB */
    dk_backing *memfd;             /* DK_PROVIDER_MEMFD_4K */
    dk_user    *user;              /* DK_PROVIDER_USER */
    dk_hugefd  *hugefd;            /* DK_PROVIDER_HUGEFD */
  } u;
} dk_mem;

/* The memory in this process (the internal view), and the bytes it spans. */
static inline uint8_t *dk__mem_va(const dk_mem *m)
{
  switch (m->kind) {
  case DK_PROVIDER_MEMFD_4K: return m->u.memfd->base;
  case DK_PROVIDER_USER:     return m->u.user->va;
  case DK_PROVIDER_HUGEFD:   return m->u.hugefd->base;
  default:                   return m->u.pool.va;      /* the pool, and NONE (a zeroed union) */
  }
}
static inline uint64_t dk__mem_len(const dk_mem *m)
{
  switch (m->kind) {
  case DK_PROVIDER_MEMFD_4K: return m->u.memfd->size;
  case DK_PROVIDER_USER:     return m->u.user->len;
  case DK_PROVIDER_HUGEFD:   return m->u.hugefd->size;
  default:                   return m->u.pool.len;
  }
}

#define DK_MEM_NONE_INIT ((dk_mem){ .kind = DK_PROVIDER_NONE })

/* What is asked of the memory. */
typedef struct dk_mem_req {
  uint64_t              size;      /* bytes to allocate (page-rounded where §2 says so) */
  uint64_t              len;       /* bytes the caller will use (what is verified) */
  uint64_t              valign;    /* virtual alignment (a power of two) */
  const dk_constraints *c;         /* the physical promises (window, alignment, boundary, ...) */
  bool                  wire;      /* wired now (else pageable: wired at prepare) */
  bool                  shared;    /* may be mapped into other processes: page-granular memory */
} dk_mem_req;

/* One provider (a file mem/prov_NAME.c). */
typedef struct dk_provider_ops {
  dk_provider kind;
  const char *name;
  /* Whether it can keep c's promises for `size` bytes before trying; with `report`, why not
   * is recorded. */
  bool     (*can)(const dk_mem_req *rq, bool report);
  bool     (*alloc)(dk_mem *m, const dk_mem_req *rq);
  void     (*free)(dk_mem *m);
  bool     (*wire)(dk_mem *m);
  void     (*unwire)(dk_mem *m);
  /* Physical address of byte `off`, and the bytes from there to the end of its contiguous
   * run; needs the frames known (wired, privileged). */
  uint64_t (*phys)(const dk_mem *m, uint64_t off, uint64_t *run);
  /* Map [off, off+len) again in this process (byte off at `fixed` when it is set); returns
   * the address of byte off, with (base, span) what to unmap. */
  void    *(*map)(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                  bool overwrite, bool populate, void **base, size_t *span);
  /* The unit a mapping of this memory covers (its page). */
  uint64_t (*granule)(const dk_mem *m);
  /* The file that holds [off, off+len), for another process: fd, page-aligned file offset and
   * span; -1 with the failure recorded when the memory cannot leave the process. */
  int      (*share)(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                    uint64_t *in_page);
  /* Drop the contents (they read zero after); only while not wired. */
  int      (*discard)(dk_mem *m);
} dk_provider_ops;

extern const dk_provider_ops dk__prov_pool;
extern const dk_provider_ops dk__prov_memfd;
extern const dk_provider_ops dk__prov_user;
extern const dk_provider_ops dk__prov_hugefd;

/* A record of `count` ranges ({address, length}) the caller owns: virtual ranges of this
 * process, or bus addresses (physical, remote) that are wired as given. Nothing is touched
 * until it is wired. false with the failure recorded. */
bool dk__user_create(dk_mem *m, const uint64_t (*ranges)[2], uint32_t count, bool virt);
/* Wire a virtual record: pin every range (frames read) where frames can be handed out, else
 * fault the pages in; `device_writes` words the refusal of read-only memory. */
bool dk__user_wire(dk_mem *m, bool device_writes);
/* The mapping of this process that holds `va` (/proc/self/maps): its end and permissions
 * ("rw-s"); false when nothing is mapped there. */
bool dk__vma_find(uint64_t va, uint64_t *end, char perms[5]);
/* The range holding descriptor offset `off`, or NULL past the end. */
const dk_urange *dk__user_range_at(const dk_user *u, uint64_t off);

const dk_provider_ops *dk__mem_ops(const dk_mem *m);
/* The operations of memory wired for life (the pool, a hugepage of its own): wiring succeeds,
 * unwiring does nothing, discarding is refused (EBUSY). */
bool dk__mem_wired_for_life(dk_mem *m);
void dk__mem_keep_wired(dk_mem *m);
int  dk__mem_discard_busy(dk_mem *m);

/* The ladder: memory for rq, every physical promise verified through the frames. false with
 * the failure recorded (the first provider's reason when none could). */
bool dk__mem_alloc(dk_mem *m, const dk_mem_req *rq);
void dk__mem_free(dk_mem *m);
bool dk__mem_wire(dk_mem *m);
void dk__mem_unwire(dk_mem *m);
void *dk__mem_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                  bool overwrite, bool populate, void **base, size_t *span);
int  dk__mem_unmap(void *base, size_t span);
uint64_t dk__mem_granule(const dk_mem *m);
int  dk__mem_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                   uint64_t *in_page);
int  dk__mem_discard(dk_mem *m);

/* Physical address of byte `off` (frames known), and its contiguous run. */
static inline uint64_t dk__mem_phys(const dk_mem *m, uint64_t off, uint64_t *run)
{
  if (m->kind == DK_PROVIDER_POOL || m->kind == DK_PROVIDER_POOL_SLAB) {
    if (run) *run = m->u.pool.len - off;
    return m->u.pool.pa + off;
  }
  return dk__mem_ops(m)->phys(m, off, run);
}
/* Whether physical addresses can be read now: frames visible and held in place. */
static inline bool dk__mem_frames_known(const dk_mem *m)
{
  if (m->kind == DK_PROVIDER_MEMFD_4K) return m->u.memfd->frames_known;
  if (m->kind == DK_PROVIDER_USER) return !m->u.user->virt || m->u.user->frames_known;
  return m->kind != DK_PROVIDER_NONE;
}

/* Why a wired pool request could not be met from the pool, for the 4K provider's refusal. */
const char *dk__mem_pool_why(void);
/* Frames stay put (a pin, or the caller waived it with DK_OPTION_REQUIRE_PIN=0); records a
 * DK_CONSTRAINT_PIN failure when not. */
bool dk__pins_ok(void);

#endif
