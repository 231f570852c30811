/* src/mapper/iova.h: the IOVA allocator, pure (no system calls; its nodes live on the library
 * heap). The space is the apertures the IOMMU reports, minus what is allocated; a request is
 * placed highest-first under its limit, aligned, crossing no boundary, by the same placement
 * arithmetic as physical memory (dk__place), over free extents kept in the range tree
 * (alloc/xtree.h): O(log n) to allocate and to free. Freed ranges coalesce. */
#ifndef DK_IOVA_H
#define DK_IOVA_H

#include "alloc/geom.h"
#include "alloc/xtree.h"

typedef struct dk_iova_space {
  dk_xtree  free;     /* free extents, none adjacent */
  dk_xnode *spare;    /* nodes kept for frees (linked by ->r) */
  size_t    nspare;
  dk_run   *apertures;/* the usable space as given (page-rounded), sorted */
  size_t    napertures;
  uint64_t  total;    /* bytes in the apertures */
  uint64_t  used;
  size_t    allocs;   /* ranges handed out and not freed: extents <= allocs + apertures, and
                         nodes are kept for that many, so a free never needs memory */
} dk_iova_space;

/* Start with the apertures [start, end] (inclusive ends; page 0 is never handed out). false
 * when out of memory. */
bool dk__iova_init(dk_iova_space *s, const uint64_t (*ranges)[2], size_t nranges, uint64_t page);
void dk__iova_fini(dk_iova_space *s);
/* Place `len` bytes: aligned to `align` (power of two), at or below `limit` (the last byte;
 * 0 = none), not crossing a multiple of `boundary` (0 = none). true and *iova, or false with
 * errno ENOSPC (no room so) or ENOMEM (no memory for the bookkeeping). */
bool dk__iova_alloc(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t limit, uint64_t boundary,
                    uint64_t *iova);
/* The same, at or above `low` too. */
bool dk__iova_alloc_window(dk_iova_space *s, uint64_t len, uint64_t align, uint64_t low, uint64_t limit,
                           uint64_t boundary, uint64_t *iova);
/* Give [iova, iova+len) back; false (nothing changed) if any of it is not allocated (outside
 * the apertures, or free already). Freeing whole ranges as they were allocated never needs
 * memory; freeing part of one may (false with nothing changed when there is none). */
bool dk__iova_free(dk_iova_space *s, uint64_t iova, uint64_t len);
/* [iova, iova+len), allocated, will never be freed (the IOMMU would not unmap it): it stays
 * out of the space for good, and the nodes kept for its free are given back. */
void dk__iova_retire(dk_iova_space *s, uint64_t iova, uint64_t len);
/* The free extents in address order: at most cap into out; returns how many there are. */
size_t dk__iova_extents(const dk_iova_space *s, dk_run *out, size_t cap);

#endif
