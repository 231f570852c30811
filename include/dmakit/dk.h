/* dmakit/dk.h: what dmakit adds to IOKit, with the dk_ prefix: why the last call failed
 * (dk_last_failure), what this machine can do (dk_capabilities), tunable options with
 * DMAKIT_<NAME> environment overrides, and constraints as one value (dk_constraints). */
#ifndef DMAKIT_DK_H
#define DMAKIT_DK_H

#include <dmakit/IOBufferMemoryDescriptor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- failures --------------------------------------------------------------------- */
/* Which rule or resource a failure is about. */
typedef enum dk_constraint_kind {
  DK_CONSTRAINT_NONE = 0,
  DK_CONSTRAINT_ARGUMENT,     /* an argument is out of its domain (capacity 0, NULL, overflow) */
  DK_CONSTRAINT_TASK,         /* the task rule: wired memory needs kernel_task (or NULL) */
  DK_CONSTRAINT_MASK,         /* the physical address limit (mask / window) */
  DK_CONSTRAINT_ALIGNMENT,    /* physical or virtual alignment */
  DK_CONSTRAINT_CONTIGUITY,   /* physically contiguous memory */
  DK_CONSTRAINT_BOUNDARY,     /* a segment would cross a boundary line */
  DK_CONSTRAINT_SEGMENTS,     /* maximum segment size or count */
  DK_CONSTRAINT_CACHE,        /* a cache mode that cannot be honoured (strict mode) */
  DK_CONSTRAINT_PRIVILEGE,    /* frame numbers need CAP_SYS_ADMIN */
  DK_CONSTRAINT_PIN,          /* frames could not be pinned against migration */
  DK_CONSTRAINT_RESOURCE,     /* the system refused memory, a descriptor or a lock */
  DK_CONSTRAINT_STATE,        /* the object is in the wrong state (unprepared, read-only) */
  DK_CONSTRAINT_RANGE,        /* offset/length outside the descriptor */
  DK_CONSTRAINT_PEER,         /* another process's credentials or access rights (sharing) */
  DK_CONSTRAINT_CONNECTION,   /* the other process is gone, unresponsive or sent a bad message */
} dk_constraint_kind;

typedef struct dk_failure {
  IOReturn           code;        /* kIOReturnSuccess when nothing failed */
  dk_constraint_kind constraint;
  const char        *function;    /* the public call that failed, e.g. "inTaskWithPhysicalMask" */
  char               text[320];   /* one readable sentence */
} dk_failure;

/* The calling thread's last failure. Each public call that can fail clears it on entry, so
 * after a call that returned NULL, 0, false or an error it describes that call. Never NULL. */
DK_API const dk_failure *dk_last_failure(void);
DK_API void              dk_clear_failure(void);
DK_API const char       *dk_constraint_name(dk_constraint_kind kind);

/* ---- capabilities -------------------------------------------------------------------- */
typedef enum dk_pin_method {
  DK_PIN_NONE = 0,        /* frames may migrate: physical addresses are not handed out */
  DK_PIN_IO_URING,        /* long-term pin through io_uring buffer registration (as VFIO pins) */
  DK_PIN_NO_COMPACTION,   /* mlock while vm.compact_unevictable_allowed = 0 */
} dk_pin_method;

typedef struct dk_caps {
  uint32_t      page_size;            /* sysconf(_SC_PAGESIZE) */
  uint32_t      page_shift;
  bool          root;                 /* effective uid 0 */
  bool          pagemap_frames;       /* /proc/self/pagemap shows frame numbers (CAP_SYS_ADMIN) */
  dk_pin_method pin_method;
  int           compact_unevictable_allowed;  /* the sysctl, -1 if unreadable */
  uint64_t      ram_top;              /* highest physical RAM address + 1 (from /proc/zoneinfo) */
  uint64_t      memlock_limit;        /* RLIMIT_MEMLOCK soft limit in bytes, UINT64_MAX = none */
  char          pin_detail[256];      /* why this pin method was chosen */
  uint64_t      hugepage_sizes[4];    /* hugepage sizes the kernel offers, ascending */
  uint32_t      hugepage_size_count;
  bool          pool_usable;          /* the hugepage pool can serve wired buffers here: frames
                                         visible, hugetlb present (DK_OPTION_POOL decides use) */
  uint64_t      mmap_min_addr;        /* lowest address a placed mapping may use: vm.mmap_min_addr,
                                         at least 64 KiB */
} dk_caps;

/* Probed once, on first use; the same pointer every time. */
DK_API const dk_caps *dk_capabilities(void);
DK_API const char    *dk_pin_method_name(dk_pin_method method);

/* ---- options ----------------------------------------------------------------------- */
typedef enum dk_option {
  /* 1: a cache mode that Linux user space cannot honour (anything but default/copyback) makes
   * creation fail with kIOReturnUnsupported. 0 (default): the mode is stored and reported. */
  DK_OPTION_STRICT_CACHE_MODE = 0,
  /* 1: refuse to hand out physical addresses unless frames are pinned (default 1). */
  DK_OPTION_REQUIRE_PIN,
  /* 1 (default): root processes take wired memory from the hugepage pool; 0: 4K pages only. */
  DK_OPTION_POOL,
  /* The most hugepage memory, in MiB, the pool may hold and dmakit may reserve (default 4096). */
  DK_OPTION_POOL_MAX_MB,
  /* The least the pool grows by, in MiB (default 32). */
  DK_OPTION_POOL_GROW_MB,
  /* The low-memory search for a mask below everything held: at most this many MiB held while
   * searching (default 2048) and this many milliseconds (default 3000). */
  DK_OPTION_LOWMEM_SEARCH_MB,
  DK_OPTION_LOWMEM_SEARCH_MS,
  /* How long sharing calls wait for the other process's answer (ms; default 5000). */
  DK_OPTION_SHARE_TIMEOUT_MS,
  /* 1: dk_mapper_close also prints what it reports (leaked IOVA mappings) on stderr (default 0). */
  DK_OPTION_MAPPER_DEBUG,
  /* Memory kept free when dmakit populates memory, in MiB; -1 (default): automatic, 1/32 of RAM
   * (and of a memory cgroup's limit) but no less than 16 MiB or an eighth of it. Requests the
   * machine cannot hold past the margin are refused with kIOReturnNoMemory (docs/physical.md). */
  DK_OPTION_MEMORY_MARGIN_MB,
  DK_OPTION__COUNT
} dk_option;

/* Options start from DMAKIT_<NAME> in the environment (DMAKIT_STRICT_CACHE_MODE=1), else
 * their defaults. */
DK_API long        dk_option_get(dk_option option);
DK_API void        dk_option_set(dk_option option, long value);
DK_API const char *dk_option_name(dk_option option);

/* ---- constraints ---------------------------------------------------------------------- */
/* Device constraints as one value. Zero means "no constraint" for every field. Every segment
 * of a buffer lies in [low, high], starts at a multiple of `alignment` (the first) and
 * crosses no multiple of `boundary`; there are at most max_segments segments of at most
 * max_segment_size bytes; `contiguous` asks for one segment. */
typedef struct dk_constraints {
  uint64_t low;               /* lowest physical address allowed */
  uint64_t high;              /* highest physical address allowed (0 = no limit) */
  uint64_t alignment;         /* physical and virtual alignment of the start, power of two */
  uint64_t boundary;          /* segments never cross a multiple of this (power of two) */
  uint64_t max_segment_size;
  uint32_t max_segments;
  bool     contiguous;
  int      numa_node;         /* -1 = any (recorded; placement by node comes with the pool) */
} dk_constraints;

#define DK_CONSTRAINTS_NONE ((dk_constraints){ 0, 0, 0, 0, 0, 0, false, -1 })

/* A wired buffer in kernel_task (or NULL) meeting every constraint, verified through pagemap
 * before it is returned. `options` takes directions, cache modes and kIOMemoryThreadSafe.
 * Under a system mapper (IOMapper.h) the constraints bind the IOVA range the device is given
 * (checked on it the same way), and the RAM keeps only alignment and contiguity. */
DK_API IOBufferMemoryDescriptor *IOBufferMemoryDescriptor_inTaskWithConstraints(
    task_t inTask, IOOptionBits options, mach_vm_size_t capacity, const dk_constraints *c);


/* ---- introspection ------------------------------------------------------------------ */
typedef enum dk_provider {
  DK_PROVIDER_NONE = 0,       /* not allocated (alloc'ed object, or pageable not yet touched) */
  DK_PROVIDER_MEMFD_4K,       /* pinned 4K pages of a memfd */
  DK_PROVIDER_POOL,           /* a contiguous range of the hugepage pool */
  DK_PROVIDER_POOL_SLAB,      /* a slot of a small-buffer slab in the hugepage pool */
  DK_PROVIDER_USER,           /* memory the caller already had (IOMemoryDescriptor_withAddressRange) */
  DK_PROVIDER_HUGEFD,         /* a hugepage with a file of its own: shared memory 4K pages cannot serve */
} dk_provider;

/* What §2 derived for a buffer and where its memory came from. */
typedef struct dk_buffer_info {
  IOOptionBits   options;          /* the caller's raw options (XNU's _options) */
  uint64_t       alignment;        /* final alignment (§2 steps 6-10) */
  uint64_t       allocation_size;  /* bytes really allocated (page-rounded where §2 says so) */
  uint64_t       physical_limit;   /* highest allowed physical address, 0 = none */
  uint8_t        numAddressBits;   /* the DMA map specification's address bits */
  bool           contiguous;       /* physical contiguity was required */
  bool           pageable;
  bool           wired;            /* pages populated and locked now */
  bool           pinned;           /* frames cannot move now (see dk_caps.pin_method) */
  uint32_t       prepare_count;    /* the counted prepare()s, auto-prepare included */
  uint32_t       cache_mode;       /* the requested cache mode index (kIO*Cache) */
  task_t         task;
  dk_provider    provider;
  IOMapper      *mapper;           /* the translating mapper (VFIO) it is mapped by, or NULL */
  uint64_t       iova;             /* its first byte's I/O virtual address while mapped, else 0 */
} dk_buffer_info;

/* ---- the hugepage pool ---------------------------------------------------------------- */
typedef struct dk_pool_stats {
  uint32_t size;                  /* sizeof(dk_pool_stats) */
  uint32_t version;               /* 1 */
  uint64_t bytes_4k;              /* live bytes of 4K-page buffers */
  uint64_t bytes_pool_2m;         /* hugepage memory the pool holds, by page size */
  uint64_t bytes_pool_1g;
  uint64_t bytes_pool_used;       /* of which in live buffers */
  uint64_t bytes_pool_free;       /* in free extents (slab space is not counted as free) */
  uint64_t runs;                  /* physically contiguous runs held */
  uint64_t largest_run;
  uint64_t largest_free;          /* the largest free extent */
  double   fragmentation;         /* 1 - largest_free / bytes_pool_free; 0 when nothing is free */
  uint64_t requests_4k;           /* buffers met by each path since start */
  uint64_t requests_pool;
  uint64_t requests_slab;
  uint64_t grows;
  uint64_t lowmem_searches;
  uint64_t trims;
  uint64_t hugepages_raised_2m;   /* kernel limits dmakit raised and still holds */
  uint64_t hugepages_raised_1g;
  uint64_t lowest_frame;          /* the lowest physical address the pool holds (0 when empty) */
  uint64_t failures[DK_CONSTRAINT_RANGE + 1];   /* failed requests by dk_constraint_kind */
} dk_pool_stats;

DK_API IOReturn dk_pool_get_stats(dk_pool_stats *stats);

/* One physically contiguous run of hugepages the pool holds. */
typedef struct dk_pool_run {
  uint64_t physical;      /* first byte */
  uint64_t length;
  uint64_t page_size;     /* the hugepage size it is made of */
  uint64_t bytes_free;    /* in its free extents */
} dk_pool_run;

/* The runs the pool holds, lowest address first: at most `capacity` into `runs` (which may be
 * NULL when capacity is 0); *count receives how many there are. */
DK_API IOReturn dk_pool_get_runs(dk_pool_run *runs, size_t capacity, size_t *count);
/* Grow the pool now by at least `bytes` of `page_size` hugepages (0 = 2 MiB): start-up work
 * done ahead of the first buffer. */
DK_API IOReturn dk_pool_reserve(uint64_t bytes, uint64_t page_size);
/* Give back every hugepage chunk nobody uses and the kernel limits dmakit raised for them. */
DK_API IOReturn dk_pool_trim(void);

DK_API IOReturn    dk_buffer_get_info(IOBufferMemoryDescriptor *buffer, dk_buffer_info *info);
DK_API const char *dk_provider_name(dk_provider provider);

#ifdef __cplusplus
}
#endif
#endif
