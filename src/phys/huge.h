/* src/phys/huge.h: the hugepage provider. Pages of 2 MiB (and 1 GiB where the kernel has
 * them) come from an MFD_HUGETLB memfd; their frames are read once, sorted, and the pages
 * mapped again so that virtual order equals physical order: physically adjacent pages form
 * one contiguous run, mapped so that va == pa (mod 1 GiB), which makes every alignment up
 * to 1 GiB the same virtually and physically. Runs are long-term pinned like 4K pages.
 * Reservations leave the system as found: 2 MiB pages come from the free pool, then from
 * surplus pages (nr_overcommit_hugepages, which the kernel frees when the process dies);
 * 1 GiB pages are reserved through nr_hugepages and recorded under /run/dmakit so that a run
 * after a killed process gives them back. */
#ifndef DK_HUGE_H
#define DK_HUGE_H

#include "phys/phys.h"

#define DK_HUGE_ALIGN (1ull << 30)     /* va == pa modulo this */

typedef struct dk_huge_counts { long nr, free, resv, surplus, overcommit; } dk_huge_counts;

/* Page sizes the kernel offers, ascending; returns how many (at most max). */
int  dk__huge_sizes(uint64_t *sizes, int max);
/* The counts, read whole (until two readings in a row agree); _settled: held still over a few
 * milliseconds, for a count that is written back (huge.c says why). -1: no such page size. */
int  dk__huge_counts(uint64_t page, dk_huge_counts *out);
int  dk__huge_counts_settled(uint64_t page, dk_huge_counts *out);
/* Make n pages of `page` bytes allocatable, raising the kernel's limits as root up to
 * cap_pages in all; *raised receives how many pages' worth this call raised (give exactly that
 * back). false (failure recorded) if they cannot be had. */
bool dk__huge_make_room(uint64_t page, long n, long cap_pages, long *raised);
/* Give back what dmakit raised and no longer uses. */
void dk__huge_give_back(uint64_t page, long n);
/* Reclaim reservations recorded by dmakit processes that died. */
void dk__huge_reclaim_dead(void);
/* Pages of `page` size raised by this process now. */
long dk__huge_raised(uint64_t page);

typedef struct dk_hrun {
  uint8_t  *va;
  uint64_t  pa;
  uint64_t  len;
  uint32_t  first;      /* index of its first page in the chunk's sorted page list */
  dk_pin    pin;
} dk_hrun;

typedef struct dk_hchunk {
  int       fd;
  int       claim_fd;   /* >= 0: the pages are claimed from a reservation (phys/reserve.h);
                           destroying the chunk closes it, which returns them, and leaves the
                           pages in the reservation instead of giving them to the kernel */
  uint64_t  page;       /* page size */
  uint32_t  npages;
  uint64_t *pa;         /* page i in physical order: its frame address ... */
  uint64_t *off;        /* ... and its offset in the memfd */
  dk_hrun  *runs;
  uint32_t  nruns;
} dk_hchunk;

/* npages pages of `page` bytes, populated (zeroed by the kernel), sorted, mapped, pinned. */
bool dk__hchunk_create(dk_hchunk *c, uint64_t page, uint32_t npages);
/* The same for pages that already exist in a hugetlb file: `fd` (which the chunk takes over,
 * closed on failure too) at byte `offsets[i]`, i < npages. */
bool dk__hchunk_adopt(dk_hchunk *c, int fd, uint64_t page, uint32_t npages, const uint64_t *offsets);
void dk__hchunk_destroy(dk_hchunk *c);
/* Map [pa, pa+len) of run r again in this process (whole pages: a mapping of a hugetlb file
 * is page-granular), `guard` bytes of no access on each side, at `fixed` when non-NULL.
 * Returns the address of pa in the new mapping; *base and *span describe what to unmap. */
void *dk__hchunk_map(const dk_hchunk *c, const dk_hrun *r, uint64_t pa, uint64_t len, int prot,
                     size_t guard, void *fixed, bool overwrite, void **base, size_t *span);

#endif
