/* src/phys/reserve.h: reservations inside the library (public side: dmakit/reserve.h).
 * reserve.c owns the records under <run>/reserve, the hugetlbfs mount <run>/hugetlbfs-2M, the
 * search that fills them and their release; claim.c owns how a process draws pages from them
 * (open-file-description locks, one byte per page) and hands them to the pool as a chunk. <run> is
 * $DMAKIT_RESERVE_DIR, else /run/dmakit (tmpfs: a reservation lasts until release or reboot). */
#ifndef DK_RESERVE_INTERNAL_H
#define DK_RESERVE_INTERNAL_H

#include "phys/huge.h"

#define DK_RESERVE_PAGE   (2ull << 20)
#define DK_RESERVE_MAX    16            /* reservations (masks) on one machine */

typedef struct dk_rpage { uint32_t gen; uint64_t off, frame; } dk_rpage;

typedef struct dk_rsv {
  uint64_t  mask;
  int64_t   created;
  uint32_t  next_gen;      /* files are <name>.<gen>.pages, gen < next_gen */
  uint32_t  npages;
  dk_rpage *pages;         /* index = the claim byte in <name>.claims */
} dk_rsv;

typedef struct dk_rtable { uint32_t n; dk_rsv r[DK_RESERVE_MAX]; } dk_rtable;

/* ---- reserve.c: paths, records, locks (shared with claim.c) ------------------------------ */
/* <run>/reserve/<file> and <run>/hugetlbfs-2M/<file>; false when it does not fit. */
bool dk__rsv_path(char *buf, size_t cap, const char *file);
bool dk__rsv_mount_path(char *buf, size_t cap, const char *file);
/* "mask-0xfffffff" */
void dk__rsv_name(char *buf, size_t cap, uint64_t mask);
/* The table of reservations; an absent table is an empty one. 0, or -1 (failure recorded). */
int  dk__rsv_read(dk_rtable *t);
void dk__rsv_free(dk_rtable *t);
/* The global lock file (created on demand, never removed), and one byte of it:
 * DK_RSV_LOCK_ADMIN is held by a search or release for its whole length; DK_RSV_LOCK_TABLE is
 * held shared while a process claims pages and exclusively while the table changes. */
enum { DK_RSV_LOCK_ADMIN = 0, DK_RSV_LOCK_TABLE = 1 };
int  dk__rsv_lock_open(void);
/* F_OFD_SETLK(W) of one byte range: type F_RDLCK, F_WRLCK or F_UNLCK. 0, or -1 with errno. */
int  dk__rsv_lock(int fd, short type, uint64_t at, uint64_t len, bool wait);
/* Whether another open file holds a lock on byte `at`; -1 with errno when unknown. */
int  dk__rsv_locked(int fd, uint64_t at);

/* Pages of nr_hugepages this process failed to give back and will retry (tests). */
long dk__reserve_owed(void);

/* ---- claim.c ---------------------------------------------------------------------------- */
/* For a pool request under c->high: claim reservation pages that can hold it (len bytes at
 * `align`, one contiguous run) and build them into *out, mapped, pinned, frames read again and
 * checked against c, zeroed. 1 claimed; 0 no reservation applies (nothing recorded); -1 one
 * applies but cannot serve (failure recorded: what it holds, what is claimed, how to grow it). */
int  dk__reserve_claim(const dk_constraints *c, uint64_t len, uint64_t align, dk_hchunk *out);

#endif
