/* src/phys/budget.h: how much memory this machine can still give, and the one check every
 * provider makes before it populates memory, so that exhaustion ends in a refusal and never in
 * the kernel's OOM killer. The figures are MemAvailable less a margin, the room left in the
 * process's memory cgroup (v2 memory.max / memory.high, v1 memory.limit_in_bytes, every
 * ancestor) less its margin, RLIMIT_MEMLOCK where locking counts against it, and for hugepages
 * the free persistent pages. Parsing and arithmetic are pure functions (table-tested); the
 * reads go through src/prim. A refusal is kIOReturnNoMemory, constraint resource, with the
 * figures in the text. */
#ifndef DK_BUDGET_H
#define DK_BUDGET_H

#include "base/base.h"
#include "phys/phys.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_BUDGET_NONE UINT64_MAX          /* no limit of that kind */

/* What was read. Byte counts; DK_BUDGET_NONE where there is no such limit. */
typedef struct dk_budget_facts {
  uint64_t mem_total;          /* MemTotal */
  uint64_t mem_available;      /* MemAvailable: the kernel's estimate, watermarks already out */
  int64_t  margin_option;      /* DK_OPTION_MEMORY_MARGIN_MB in bytes; < 0 automatic */
  /* the memory cgroup whose room is smallest (cg_limit DK_BUDGET_NONE when none limits) */
  int      cg_version;         /* 1 or 2; 0 when no memory cgroup was found */
  uint64_t cg_limit;           /* the lower of memory.max and memory.high (v1 limit_in_bytes) */
  uint64_t cg_usage;           /* memory.current (v1 usage_in_bytes) */
  uint64_t cg_file;            /* its page cache on the file LRUs (active_file + inactive_file) */
  bool     cg_hugetlb;         /* hugetlb pages are charged to it (v2 memory_hugetlb_accounting) */
  char     cg_path[160];
  /* locked memory */
  bool     lock_limited;       /* no CAP_IPC_LOCK: mlock and pins count against RLIMIT_MEMLOCK */
  uint64_t memlock_limit;      /* RLIMIT_MEMLOCK (DK_BUDGET_NONE: unlimited) */
  uint64_t locked;             /* VmLck now */
} dk_budget_facts;

/* What the memory is, which decides which limits apply to it. */
enum {
  DK_BUDGET_LOCKED  = 1u << 0, /* it will be locked: RLIMIT_MEMLOCK applies when lock_limited */
  DK_BUDGET_HUGETLB = 1u << 1, /* hugetlb pages: the memory cgroup applies only if it charges them */
};

typedef enum dk_budget_bind { DK_BUDGET_BY_MACHINE, DK_BUDGET_BY_CGROUP, DK_BUDGET_BY_MEMLOCK } dk_budget_bind;

/* What may still be populated. */
typedef struct dk_budget {
  uint64_t margin;             /* kept free on the machine */
  uint64_t machine;            /* MemAvailable - margin, 0 when below */
  uint64_t cg_margin;          /* kept free in the cgroup */
  uint64_t cgroup;             /* limit - usage + file/2 - cg_margin, 0 when below; NONE if none */
  uint64_t memlock;            /* memlock_limit - locked; NONE when it does not apply */
  uint64_t room;               /* the smallest of the three */
  dk_budget_bind bind;         /* which one it is */
} dk_budget;

/* ---- pure ---------------------------------------------------------------------------- */
/* The margin kept free out of `total` bytes (RAM, or a cgroup's limit): 1/32 of it, and no
 * less than 64 MiB or an eighth of it, whichever is smaller. */
uint64_t dk__budget_margin(uint64_t total);
/* The room for memory of kind `what` (DK_BUDGET_* bits). */
void dk__budget_compute(const dk_budget_facts *f, unsigned what, dk_budget *out);
/* A request's cost: 4K pages carry page tables, the frame table and pin records, counted as
 * 1/64 of the bytes (about 40 bytes per page are needed); hugepages carry nothing worth it. */
uint64_t dk__budget_cost(uint64_t bytes, unsigned what);
/* "N MiB" style rendering of a byte count into buf (KiB, MiB or GiB, one decimal). */
const char *dk__budget_size(uint64_t bytes, char *buf, size_t cap);
/* The figures as one clause: "the machine can give 1.2 GiB (MemAvailable 1.3 GiB less a
 * margin of 64 MiB); the memory cgroup /x has room for ... (limit ..., in use ...)". */
void dk__budget_describe(const dk_budget_facts *f, const dk_budget *b, char *buf, size_t cap);

/* Parsers of the kernel's text (0, or -1 when the text lacks what is needed). */
int dk__budget_parse_meminfo(const char *text, uint64_t *total, uint64_t *available);
/* A "key value" line's value in memory.stat-style text; -1 when absent. */
int dk__budget_stat_value(const char *text, const char *key, uint64_t *out);
/* A cgroup limit file: "max" or a byte count (v1's huge "unlimited" values are NONE). */
uint64_t dk__budget_parse_limit(const char *text);
/* From /proc/self/cgroup text: the path of the v2 entry ("0::/a/b") when version is 2, or of
 * the v1 line listing the memory controller when 1. 0, or -1 when there is none. */
int dk__budget_cgroup_path(const char *text, int version, char *out, size_t cap);
/* From /proc/self/mountinfo text: the mount point and mount root of the cgroup2 file system
 * (version 2) or of the v1 hierarchy holding the memory controller (version 1); for v2 also
 * whether it charges hugetlb pages. 0, or -1 when not mounted. */
int dk__budget_cgroup_mount(const char *text, int version, char *point, size_t pcap, char *root, size_t rcap,
                            bool *hugetlb);

/* ---- the reads and the check ------------------------------------------------------------ */
/* Read every figure now. 0, or -1 with errno when /proc/meminfo cannot be read (a cgroup whose
 * files cannot be read limits nothing). */
int dk__budget_read(dk_budget_facts *f);

/* A wired request of `bytes` (DK_BUDGET_ADMIT_MIN or more; smaller ones cannot exceed the machine
 * by themselves and are checked where their memory is populated) that no provider could meet:
 * more than 4K pages may take and more than hugepages (free persistent ones, `pool_free` held by
 * the pool, and new ones) could give. Refused before anything is populated, with the figures. */
#define DK_BUDGET_ADMIT_MIN (2ull << 20)
bool dk__budget_admit(uint64_t bytes, uint64_t pool_free);
/* May `bytes` of memory of kind `what` be populated now? Small requests may use figures read
 * in the last 100 ms while what was admitted since is under 1/16 of the room then; `fresh`
 * reads now. On refusal records kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "<what for>: <size>
 * asked; <figures>" and returns false. */
bool dk__budget_check(uint64_t bytes, unsigned what, bool fresh, const char *purpose);
/* How many hugepages of `page` bytes the pool may grow by: `want` when the machine can give
 * them, else as many as it can (free persistent pages need no new memory), at least `need`;
 * 0 when not even `need` fit. Records nothing. */
uint32_t dk__budget_huge_fit(uint64_t page, uint32_t need, uint32_t want);
/* Check n hugepages of `page` bytes before the pool reserves them (dk__budget_check with the
 * free persistent pages, which need no new memory, taken off). */
bool dk__budget_huge_check(uint64_t page, uint32_t n, const char *purpose);
/* Memory unpinned just now (io_uring may hand it back to the kernel a moment later). */
void dk__budget_note_release(uint64_t bytes);
/* The figures now as text (for a failure that the budget ended: a search it stopped). */
void dk__budget_describe_now(unsigned what, char *buf, size_t cap);

/* Drop the figures kept from the last read (tests, or a caller that knows memory changed). */
void dk__budget_forget(void);

/* The 4K provider populates in steps of at most this many bytes, re-checking between them. */
uint64_t dk__budget_step(void);
void     dk__budget_set_step(uint64_t bytes);   /* tests: 0 restores the default (64 MiB) */

#endif
