/* src/alloc/xtree.h: an ordered set of disjoint address ranges [start, end) with the largest
 * range length kept for every subtree, so that "the highest range that can hold a request
 * under an address limit" is found in O(log n): the pool's free extents, the mapper's IOVA
 * mappings. A treap (priorities from a hash of the start), intrusive (the caller owns the
 * nodes and never allocates here), pure: no system calls, no global state. */
#ifndef DK_XTREE_H
#define DK_XTREE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dk_xnode {
  struct dk_xnode *l, *r;
  uint64_t start, end;        /* [start, end) */
  uint64_t max_len;           /* largest end - start in this subtree */
  uint64_t max_end;           /* largest end in this subtree (interval queries) */
  uint32_t prio;
  void    *owner;             /* the caller's: the region a free extent belongs to */
} dk_xnode;

typedef struct dk_xtree {
  dk_xnode *root;
  uint64_t  count;
} dk_xtree;

/* Insert n (start/end/owner set by the caller; ranges may overlap only if the caller's
 * queries allow it: free extents never do). */
void dk__xtree_insert(dk_xtree *t, dk_xnode *n);
/* Remove n (which is in t). */
void dk__xtree_remove(dk_xtree *t, dk_xnode *n);
/* After the caller changed n->start/end without changing its order among the others. */
void dk__xtree_update(dk_xtree *t, dk_xnode *n);
/* The node with the greatest start <= x, or NULL. */
dk_xnode *dk__xtree_le(const dk_xtree *t, uint64_t x);
/* The node with the smallest start >= x, or NULL. */
dk_xnode *dk__xtree_ge(const dk_xtree *t, uint64_t x);
/* The greatest-start node of length >= need whose start <= hi and end > lo, and for which
 * accept(node, arg) holds; NULL when there is none. Subtrees whose longest range is shorter
 * than `need` are never entered, so with an accept that holds for every node long enough the
 * cost is O(log n). */
dk_xnode *dk__xtree_find_highest(const dk_xtree *t, uint64_t need, uint64_t lo, uint64_t hi,
                                 bool (*accept)(const dk_xnode *n, void *arg), void *arg);
/* The node whose start is greatest among those with start <= x and end >= x + len, for which
 * accept holds (a range containing [x, x+len); ranges may overlap), or NULL. */
dk_xnode *dk__xtree_find_cover(const dk_xtree *t, uint64_t x, uint64_t len,
                               bool (*accept)(const dk_xnode *n, void *arg), void *arg);
/* In-order walk; stops when fn returns false. */
void dk__xtree_walk(const dk_xtree *t, bool (*fn)(dk_xnode *n, void *arg), void *arg);
/* Structural check (order, heap property, augmented fields); 0 or -1. */
int dk__xtree_check(const dk_xtree *t);

#endif
