/* dmakit/reserve.h: reservations. Without an IOMMU a device with a 28- or 32-bit mask needs RAM
 * below that mask, and the kernel hands user space its highest frames first. A reservation finds
 * 2 MiB hugepages below a mask once, with a bounded search, and keeps exactly those pages in a
 * hugetlbfs file that outlives the process (until dk_reserve_release or reboot). Later processes'
 * buffers under that mask are carved from it first, with no search; several processes draw at
 * once without sharing a page, and a process that dies gives its pages back. Reservations are
 * made by root. See docs/reserve.md for how much memory the search may hold, and why. */
#ifndef DMAKIT_RESERVE_H
#define DMAKIT_RESERVE_H

#include <dmakit/dk.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bounds on the search. Zero in a field means its default. */
typedef struct dk_reserve_bounds {
  uint64_t max_hold;      /* the most hugepage memory the search may hold at once (default: all
                             that keep_free leaves of MemAvailable) */
  uint64_t keep_free;     /* the search stops before MemAvailable would fall below this
                             (default: 1/16 of RAM, at least 128 MiB) */
  uint32_t max_seconds;   /* the search stops after this long (default 300) */
} dk_reserve_bounds;

/* What a search for `bytes` below `mask` is expected to cost, from /proc/zoneinfo and
 * /proc/meminfo: the kernel serves hugepages from its highest zone first and falls back to a
 * lower zone only once the higher one is down to its low watermark, so the search must hold
 * the free memory of every zone above the mask before it sees a page below it. */
typedef struct dk_reserve_cost {
  uint64_t mask;
  uint64_t bytes;         /* what the reservation under this mask is to hold (asked) */
  uint64_t have;          /* what it holds now */
  uint64_t need;          /* to find: bytes - have in whole 2 MiB pages (0: nothing to do) */
  uint64_t free_above;    /* free memory in zones wholly above the mask: the kernel hands all of it
                             out (down to each zone's low watermark) before any page below the mask */
  uint64_t free_cut;      /* free memory above the mask in the zone the mask cuts: the kernel hands
                             out that zone's pages in no address order, so some or all of it comes
                             before enough pages below the mask (pro rata of the zone's span) */
  uint64_t free_below;    /* free memory below the mask the search may get (watermarks and
                             lowmem protection taken off; the cut zone counted pro rata) */
  uint64_t hold;          /* what the search must hold at least: free_above + need */
  uint64_t hold_max;      /* what it may hold at most: free_above + free_cut + need (the bounds
                             stop it earlier) */
  uint64_t available;     /* MemAvailable now */
  uint64_t max_hold;      /* the bounds in force (defaults filled in) */
  uint64_t keep_free;
  uint32_t max_seconds;
  bool     fits;          /* need == 0, or enough below the mask and `hold` within the bounds */
  char     text[512];     /* the estimate in words, and why it does not fit when it does not */
} dk_reserve_cost;

/* Reported after every step of a search; return false to stop it (everything is given back). */
typedef struct dk_reserve_progress {
  uint64_t held;          /* hugepage memory the search holds now */
  uint64_t found;         /* of which below the mask */
  uint64_t need;
  uint64_t hold_limit;    /* the bound on held */
  uint64_t lowest;        /* the lowest frame seen so far (0: none yet) */
  double   seconds;
} dk_reserve_progress;
typedef bool (*dk_reserve_progress_fn)(const dk_reserve_progress *progress, void *arg);

/* One reservation. */
typedef struct dk_reserve_info {
  uint64_t mask;          /* every page lay below it when found (and is checked again at claim) */
  uint64_t page_size;     /* 2 MiB */
  uint32_t pages;
  uint32_t pages_claimed; /* by processes alive now */
  uint64_t lowest;        /* lowest and highest frame, as recorded when found */
  uint64_t highest;
  int64_t  created;       /* seconds since the epoch */
} dk_reserve_info;

/* One reserved page, for pictures and checks. */
typedef struct dk_reserve_page {
  uint64_t mask;          /* its reservation's */
  uint64_t frame;         /* physical address recorded when found */
  bool     claimed;       /* a live process holds it now */
} dk_reserve_page;

/* The estimate for growing the reservation below `mask` to `bytes` (bounds NULL: defaults).
 * kIOReturnBadArgument for a mask that is not 2^n - 1 (n >= 22) or bytes 0. */
DK_API IOReturn dk_reserve_estimate(uint64_t mask, uint64_t bytes, const dk_reserve_bounds *bounds,
                                    dk_reserve_cost *cost);
/* Make the reservation below `mask` hold at least `bytes` (rounded up to 2 MiB pages), searching
 * for the pages it lacks within `bounds`; everything the search held beyond them is given back
 * before this returns, and so is everything when it fails. Needs root. One search at a time on a
 * machine. Errors: kIOReturnNotPrivileged (not root), kIOReturnNoResources (no 2 MiB hugepages,
 * hugetlbfs cannot be mounted, or the estimate does not fit the bounds: nothing was tried),
 * kIOReturnNoMemory (constraint mask: the search ended before it found enough, with what it held
 * and the lowest frame seen), kIOReturnBusy (another search or release is running),
 * kIOReturnAborted (the progress callback stopped it). */
DK_API IOReturn dk_reserve_create(uint64_t mask, uint64_t bytes, const dk_reserve_bounds *bounds,
                                  dk_reserve_progress_fn progress, void *arg);
/* The reservations, narrowest mask first: at most `capacity` into `out` (NULL when 0);
 * *count receives how many there are. */
DK_API IOReturn dk_reserve_list(dk_reserve_info *out, size_t capacity, size_t *count);
/* Every reserved page, by reservation and then by frame, as dk_reserve_list. */
DK_API IOReturn dk_reserve_pages(dk_reserve_page *out, size_t capacity, size_t *count);
/* Give the reservation below `mask` (0: every reservation) back to the kernel and lower
 * nr_hugepages by its pages. kIOReturnBusy while a live process holds any of its pages,
 * kIOReturnNotFound when there is none. */
DK_API IOReturn dk_reserve_release(uint64_t mask);

#ifdef __cplusplus
}
#endif
#endif
