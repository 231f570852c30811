/* src/alloc/geom.h: constraint arithmetic, pure (no system calls, no state): does a physical
 * range satisfy dk_constraints, how many segments does a run list make once split at
 * boundaries and the maximum segment size. One predicate decides "acceptable" for the
 * providers, the verifier and (later) the bounce decision. Table-tested. */
#ifndef DK_GEOM_H
#define DK_GEOM_H

#include "base/base.h"

typedef struct dk_run { uint64_t addr, len; } dk_run;

/* Normalise constraints: 0 fields become their no-limit values; returns false (with a
 * reason) for contradictions: alignment or boundary not a power of two, low > high, a
 * boundary smaller than the alignment is fine, a capacity that cannot fit one boundary
 * window while contiguous is caught by dk__runs_check. */
bool dk__constraints_valid(const dk_constraints *c, char *why, size_t cap);
/* The same test without the reason (the create path's check; the reason only on failure). */
static inline bool dk__constraints_ok(const dk_constraints *c)
{
  return (c->alignment <= 1 || dk__is_pow2(c->alignment)) && (!c->boundary || dk__is_pow2(c->boundary)) &&
         (!c->high || c->low <= c->high);
}

/* The one predicate: may a device be given [addr, addr+len) as a segment under c? It lies in
 * [c->low, c->high] (no wrap), starts at a multiple of c->alignment when it is the `first`
 * segment, and crosses no multiple of c->boundary when it is no longer than one (a longer one
 * is cut at the lines by whoever makes segments). DK_CONSTRAINT_NONE, or the rule broken with
 * a sentence in why (may be NULL). Used by the pool's verification, the mapper's choice of a
 * mapping to share and IODMACommand's decision to bounce. */
dk_constraint_kind dk__segment_check(const dk_constraints *c, uint64_t addr, uint64_t len, bool first, char *why,
                                     size_t cap);
static inline bool dk__segment_ok(const dk_constraints *c, uint64_t addr, uint64_t len, bool first)
{
  return dk__segment_check(c, addr, len, first, NULL, 0) == DK_CONSTRAINT_NONE;
}

/* What 4K pages (any frames, each page-aligned) can promise for a buffer of `size` bytes:
 * alignment up to a page, contiguity and boundaries up to a page. DK_CONSTRAINT_NONE, or the
 * constraint they cannot keep. */
dk_constraint_kind dk__pages_can_keep(const dk_constraints *c, uint64_t size, uint64_t page);

/* Segments the run list makes when split at every multiple of c->boundary and at
 * c->max_segment_size. */
uint64_t dk__segments_count(const dk_constraints *c, const dk_run *runs, size_t n);

/* Check a buffer's physical runs (in order, adjacent runs already merged) against c.
 * DK_CONSTRAINT_NONE when every promise holds, else the first one broken, with a sentence. */
dk_constraint_kind dk__runs_check(const dk_constraints *c, const dk_run *runs, size_t n,
                                  char *why, size_t cap);

/* Placement: the highest start x in the free physical extent [start, end) such that
 * [x, x+len) lies in the extent and in [c->low, c->high], x is a multiple of `align`
 * (a power of two, >= 1), and [x, x+len) crosses no multiple of c->boundary. Highest-first
 * keeps low memory for the masks that need it. true and *out = x, or false. */
bool dk__place(const dk_constraints *c, uint64_t align, uint64_t start, uint64_t end, uint64_t len,
               uint64_t *out);

#endif
