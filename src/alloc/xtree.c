/* src/alloc/xtree.c: the augmented treap of address ranges (see xtree.h). Nodes are ordered
 * by (start, node address), so equal starts are allowed; every node carries the longest range
 * and the highest end of its subtree, recomputed on the way back up from each change. */
#include "alloc/xtree.h"

#include <stddef.h>

static inline bool before(const dk_xnode *a, const dk_xnode *b)
{
  return a->start < b->start || (a->start == b->start && (uintptr_t)a < (uintptr_t)b);
}

/* The subtree summary n should carry: its longest extent and its highest end, from its own
 * extent and its children's summaries. */
static inline void summary(const dk_xnode *n, uint64_t *max_len, uint64_t *max_end)
{
  uint64_t len = n->end - n->start, end = n->end;
  if (n->l) {
    if (n->l->max_len > len) len = n->l->max_len;
    if (n->l->max_end > end) end = n->l->max_end;
  }
  if (n->r) {
    if (n->r->max_len > len) len = n->r->max_len;
    if (n->r->max_end > end) end = n->r->max_end;
  }
  *max_len = len;
  *max_end = end;
}

static inline void pull(dk_xnode *n) { summary(n, &n->max_len, &n->max_end); }

/* A priority from the start (and the node, for equal starts): a fixed mix, so the shape is a
 * function of the contents, and different runs of a test build the same tree. */
static uint32_t prio_of(const dk_xnode *n)
{
  uint64_t x = n->start ^ ((uint64_t)(uintptr_t)n << 17);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return (uint32_t)x;
}

/* Split t into the nodes before `key` (*l) and the rest (*r). */
static void split(dk_xnode *t, const dk_xnode *key, dk_xnode **l, dk_xnode **r)
{
  if (!t) {
    *l = *r = NULL;
    return;
  }
  if (before(t, key)) {
    split(t->r, key, &t->r, r);
    *l = t;
  } else {
    split(t->l, key, l, &t->l);
    *r = t;
  }
  pull(t);
}

/* Join a and b, every node of a before every node of b. */
static dk_xnode *merge(dk_xnode *a, dk_xnode *b)
{
  if (!a) return b;
  if (!b) return a;
  if (a->prio >= b->prio) {
    a->r = merge(a->r, b);
    pull(a);
    return a;
  }
  b->l = merge(a, b->l);
  pull(b);
  return b;
}

static dk_xnode *insert_at(dk_xnode *t, dk_xnode *n)
{
  if (!t) return n;
  if (n->prio > t->prio) {
    split(t, n, &n->l, &n->r);
    pull(n);
    return n;
  }
  if (before(n, t)) t->l = insert_at(t->l, n);
  else t->r = insert_at(t->r, n);
  pull(t);
  return t;
}

void dk__xtree_insert(dk_xtree *t, dk_xnode *n)
{
  n->l = n->r = NULL;
  n->prio = prio_of(n);
  pull(n);
  t->root = insert_at(t->root, n);
  t->count++;
}

static dk_xnode *remove_at(dk_xnode *t, dk_xnode *n)
{
  if (!t) return NULL;
  if (t == n) return merge(t->l, t->r);
  if (before(n, t)) t->l = remove_at(t->l, n);
  else t->r = remove_at(t->r, n);
  pull(t);
  return t;
}

void dk__xtree_remove(dk_xtree *t, dk_xnode *n)
{
  t->root = remove_at(t->root, n);
  n->l = n->r = NULL;
  t->count--;
}

static void update_at(dk_xnode *t, dk_xnode *n)
{
  if (!t) return;
  if (t != n) update_at(before(n, t) ? t->l : t->r, n);
  pull(t);
}

void dk__xtree_update(dk_xtree *t, dk_xnode *n) { update_at(t->root, n); }

dk_xnode *dk__xtree_le(const dk_xtree *t, uint64_t x)
{
  dk_xnode *best = NULL;
  for (dk_xnode *n = t->root; n;) {
    if (n->start <= x) {
      best = n;
      n = n->r;
    } else {
      n = n->l;
    }
  }
  return best;
}

dk_xnode *dk__xtree_ge(const dk_xtree *t, uint64_t x)
{
  dk_xnode *best = NULL;
  for (dk_xnode *n = t->root; n;) {
    if (n->start >= x) {
      best = n;
      n = n->l;
    } else {
      n = n->r;
    }
  }
  return best;
}

typedef struct query {
  uint64_t need, lo, hi;
  bool (*accept)(const dk_xnode *n, void *arg);
  void *arg;
} query;

static dk_xnode *highest(dk_xnode *n, const query *q)
{
  while (n && n->max_len >= q->need && n->max_end > q->lo) {
    if (n->start <= q->hi) {
      dk_xnode *r = highest(n->r, q);
      if (r) return r;
      if (n->end - n->start >= q->need && n->end > q->lo && (!q->accept || q->accept(n, q->arg))) return n;
    }
    n = n->l;                 /* every start there is lower: the next candidates */
  }
  return NULL;
}

dk_xnode *dk__xtree_find_highest(const dk_xtree *t, uint64_t need, uint64_t lo, uint64_t hi,
                                 bool (*accept)(const dk_xnode *n, void *arg), void *arg)
{
  query q = { need ? need : 1, lo, hi, accept, arg };
  return highest(t->root, &q);
}

static dk_xnode *cover(dk_xnode *n, uint64_t x, uint64_t last, const query *q)
{
  while (n && n->max_end > last) {
    if (n->start <= x) {
      dk_xnode *r = cover(n->r, x, last, q);
      if (r) return r;
      if (n->end > last && (!q->accept || q->accept(n, q->arg))) return n;
    }
    n = n->l;
  }
  return NULL;
}

dk_xnode *dk__xtree_find_cover(const dk_xtree *t, uint64_t x, uint64_t len,
                               bool (*accept)(const dk_xnode *n, void *arg), void *arg)
{
  query q = { 0, 0, 0, accept, arg };
  if (!len || x + len - 1 < x) return NULL;
  return cover(t->root, x, x + len - 1, &q);
}

static bool walk(dk_xnode *n, bool (*fn)(dk_xnode *n, void *arg), void *arg)
{
  if (!n) return true;
  if (!walk(n->l, fn, arg)) return false;
  dk_xnode *r = n->r;           /* fn may reuse n */
  if (!fn(n, arg)) return false;
  return walk(r, fn, arg);
}

void dk__xtree_walk(const dk_xtree *t, bool (*fn)(dk_xnode *n, void *arg), void *arg) { walk(t->root, fn, arg); }

static int check(const dk_xnode *n, const dk_xnode *lo, const dk_xnode *hi, uint64_t *count)
{
  if (!n) return 0;
  if (n->end < n->start) return -1;
  if ((lo && !before(lo, n)) || (hi && !before(n, hi))) return -1;
  if ((n->l && n->l->prio > n->prio) || (n->r && n->r->prio > n->prio)) return -1;
  uint64_t len, end;
  summary(n, &len, &end);
  if (len != n->max_len || end != n->max_end) return -1;
  (*count)++;
  if (check(n->l, lo, n, count) < 0) return -1;
  return check(n->r, n, hi, count);
}

int dk__xtree_check(const dk_xtree *t)
{
  uint64_t count = 0;
  if (check(t->root, NULL, NULL, &count) < 0) return -1;
  return count == t->count ? 0 : -1;
}
