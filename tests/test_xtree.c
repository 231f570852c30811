/* tests/test_xtree.c: the augmented range tree (src/alloc/xtree.c) against a brute-force model:
 * random inserts, removals and in-place updates of disjoint ranges (the pool's free extents),
 * every query compared with a scan of the model, the structure checked after every step; and
 * overlapping ranges for the cover query (the mapper's mappings). Pure: no privileges. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "alloc/xtree.h"

#define N 600

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

typedef struct model { dk_xnode node[N]; bool in[N]; } model;

/* Slot i owns the address window [i * 1000, i * 1000 + 1000): ranges never overlap. */
static void random_range(int i, dk_xnode *n)
{
  uint64_t base = (uint64_t)i * 1000, a = rnd() % 900, len = 1 + rnd() % (1000 - a - 1);
  n->start = base + a;
  n->end = base + a + len;
}

static dk_xnode *brute_highest(model *m, uint64_t need, uint64_t lo, uint64_t hi, uint64_t odd_only)
{
  dk_xnode *best = NULL;
  for (int i = 0; i < N; i++) {
    dk_xnode *n = &m->node[i];
    if (!m->in[i] || n->end - n->start < need || n->start > hi || n->end <= lo) continue;
    if (odd_only && !(n->start & 1)) continue;
    if (!best || n->start > best->start) best = n;
  }
  return best;
}

static bool accept_odd(const dk_xnode *n, void *arg)
{
  (void)arg;
  return n->start & 1;
}

static void xtree_matches_model(void **state)
{
  (void)state;
  static model m;
  memset(&m, 0, sizeof m);
  dk_xtree t = { 0 };
  for (int step = 0; step < 20000; step++) {
    int i = (int)(rnd() % N);
    unsigned op = (unsigned)(rnd() % 3);
    if (!m.in[i]) {
      random_range(i, &m.node[i]);
      dk__xtree_insert(&t, &m.node[i]);
      m.in[i] = true;
    } else if (op == 0) {
      dk__xtree_remove(&t, &m.node[i]);
      m.in[i] = false;
    } else {                                   /* grow or shrink within its window */
      dk_xnode *n = &m.node[i];
      uint64_t base = (uint64_t)i * 1000;
      uint64_t s = base + rnd() % 500, e = s + 1 + rnd() % (base + 1000 - s - 1);
      n->start = s;
      n->end = e;
      dk__xtree_update(&t, n);
    }
    assert_int_equal(dk__xtree_check(&t), 0);
    uint64_t need = 1 + rnd() % 700, lo = rnd() % (N * 1000), hi = lo + rnd() % (N * 1000);
    dk_xnode *want = brute_highest(&m, need, lo, hi, 0);
    assert_ptr_equal(dk__xtree_find_highest(&t, need, lo, hi, NULL, NULL), want);
    want = brute_highest(&m, need, lo, hi, 1);
    assert_ptr_equal(dk__xtree_find_highest(&t, need, lo, hi, accept_odd, NULL), want);
    uint64_t x = rnd() % (N * 1000);
    dk_xnode *le = NULL, *ge = NULL;
    for (int k = 0; k < N; k++) {
      if (!m.in[k]) continue;
      if (m.node[k].start <= x && (!le || m.node[k].start > le->start)) le = &m.node[k];
      if (m.node[k].start >= x && (!ge || m.node[k].start < ge->start)) ge = &m.node[k];
    }
    assert_ptr_equal(dk__xtree_le(&t, x), le);
    assert_ptr_equal(dk__xtree_ge(&t, x), ge);
  }
}

static void xtree_cover_with_overlaps(void **state)
{
  (void)state;
  static dk_xnode nodes[N];
  static bool in[N];
  memset(in, 0, sizeof in);
  dk_xtree t = { 0 };
  for (int step = 0; step < 20000; step++) {
    int i = (int)(rnd() % N);
    if (!in[i]) {
      nodes[i].start = rnd() % 100000;                 /* overlapping, some equal starts */
      if (rnd() % 4 == 0) nodes[i].start &= ~1023ull;
      nodes[i].end = nodes[i].start + 1 + rnd() % 5000;
      dk__xtree_insert(&t, &nodes[i]);
      in[i] = true;
    } else {
      dk__xtree_remove(&t, &nodes[i]);
      in[i] = false;
    }
    assert_int_equal(dk__xtree_check(&t), 0);
    uint64_t x = rnd() % 100000, len = 1 + rnd() % 3000;
    dk_xnode *got = dk__xtree_find_cover(&t, x, len, NULL, NULL);
    bool exists = false;
    for (int k = 0; k < N; k++)
      if (in[k] && nodes[k].start <= x && nodes[k].end >= x + len) exists = true;
    if (!exists) {
      assert_null(got);
    } else {
      assert_non_null(got);
      assert_true(got->start <= x && got->end >= x + len);
    }
  }
}

static bool count_fn(dk_xnode *n, void *arg)
{
  uint64_t *c = arg;
  static uint64_t last;
  if (*c && n->start < last) return false;
  last = n->start;
  (*c)++;
  return true;
}

static void xtree_walk_in_order(void **state)
{
  (void)state;
  static dk_xnode nodes[1000];
  dk_xtree t = { 0 };
  for (int i = 0; i < 1000; i++) {
    nodes[i].start = (uint64_t)((i * 7919) % 1000) * 10;
    nodes[i].end = nodes[i].start + 5;
    dk__xtree_insert(&t, &nodes[i]);
  }
  uint64_t c = 0;
  dk__xtree_walk(&t, count_fn, &c);
  assert_int_equal(c, 1000);
  assert_int_equal(t.root->max_len, 5);
  assert_int_equal(t.root->max_end, 9995);
}

/* Queries at their edges: need 0 is need 1, empty and wrapping cover queries find nothing,
 * and an accept function that turns nodes away makes the cover query go on to lower starts. */
static bool accept_not_first(const dk_xnode *n, void *arg) { return n != arg; }

static void xtree_query_edges(void **state)
{
  (void)state;
  static dk_xnode nodes[64];
  dk_xtree t = { 0 };
  for (int i = 0; i < 64; i++) {               /* [i*100, i*100 + 50 + i) */
    nodes[i].start = (uint64_t)i * 100;
    nodes[i].end = nodes[i].start + 50 + (uint64_t)i;
    dk__xtree_insert(&t, &nodes[i]);
  }
  assert_ptr_equal(dk__xtree_find_highest(&t, 0, 0, UINT64_MAX, NULL, NULL), &nodes[63]);
  assert_ptr_equal(dk__xtree_find_highest(&t, 0, 0, 6399, NULL, NULL), &nodes[63]);
  assert_ptr_equal(dk__xtree_find_highest(&t, 0, 0, 6299, NULL, NULL), &nodes[62]);
  assert_null(dk__xtree_find_highest(&t, 114, 0, UINT64_MAX, NULL, NULL));   /* longest is 113 */
  assert_null(dk__xtree_find_cover(&t, 1000, 0, NULL, NULL));                /* nothing to cover */
  assert_null(dk__xtree_find_cover(&t, UINT64_MAX - 10, 20, NULL, NULL));    /* wraps */
  assert_ptr_equal(dk__xtree_find_cover(&t, 1000, 10, NULL, NULL), &nodes[10]);
  assert_null(dk__xtree_find_cover(&t, 1000, 61, NULL, NULL));               /* past its end */
  assert_null(dk__xtree_find_cover(&t, 1000, 10, accept_not_first, &nodes[10]));
  /* an overlapping range below: turned away, the cover query finds the one under it */
  static dk_xnode wide = { .start = 900, .end = 1200 };
  dk__xtree_insert(&t, &wide);
  assert_int_equal(dk__xtree_check(&t), 0);
  assert_ptr_equal(dk__xtree_find_cover(&t, 1000, 10, NULL, NULL), &nodes[10]);
  assert_ptr_equal(dk__xtree_find_cover(&t, 1000, 10, accept_not_first, &nodes[10]), &wide);
  assert_ptr_equal(dk__xtree_find_cover(&t, 1000, 150, NULL, NULL), &wide);
}

/* A walk stops where its function says, wherever that node lies in the tree. */
typedef struct stop_arg { uint64_t seen, stop_after, last; bool ordered; } stop_arg;
static bool stop_fn(dk_xnode *n, void *arg)
{
  stop_arg *a = arg;
  if (a->seen && n->start <= a->last) a->ordered = false;
  a->last = n->start;
  return ++a->seen < a->stop_after;
}

static void xtree_walk_stops(void **state)
{
  (void)state;
  static dk_xnode nodes[200];
  dk_xtree t = { 0 };
  for (int i = 0; i < 200; i++) {
    nodes[i].start = (uint64_t)((i * 37) % 200) * 10;
    nodes[i].end = nodes[i].start + 5;
    dk__xtree_insert(&t, &nodes[i]);
  }
  for (uint64_t k = 1; k <= 200; k++) {
    stop_arg a = { 0, k, 0, true };
    dk__xtree_walk(&t, stop_fn, &a);
    assert_int_equal(a.seen, k);
    assert_true(a.ordered);
    assert_int_equal(a.last, (k - 1) * 10);     /* the k-th lowest start */
  }
}

/* The structural check catches each kind of damage: a range ending before it starts, nodes
 * out of order, a child with a higher priority, a stale summary, a wrong count; repaired, the
 * tree checks clean again. */
static void xtree_check_catches_damage(void **state)
{
  (void)state;
  static dk_xnode nodes[100];
  dk_xtree t = { 0 };
  for (int i = 0; i < 100; i++) {
    nodes[i].start = (uint64_t)i * 100;
    nodes[i].end = nodes[i].start + 10;
    dk__xtree_insert(&t, &nodes[i]);
  }
  assert_int_equal(dk__xtree_check(&t), 0);
  /* the shape follows the nodes' addresses: find a parent with a left child and one with a
   * right child wherever they are */
  dk_xnode *root = t.root, *pl = NULL, *pr = NULL;
  for (int i = 0; i < 100; i++) {
    if (nodes[i].l && !pl) pl = &nodes[i];
    if (nodes[i].r && nodes[i].start && !pr) pr = &nodes[i];
  }
  assert_non_null(pl);
  assert_non_null(pr);
  dk_xnode *l = pl->l, *r = pr->r;

  uint64_t e = pr->end;
  pr->end = pr->start - 1;                     /* ends before it starts */
  assert_int_equal(dk__xtree_check(&t), -1);
  pr->end = e;
  assert_int_equal(dk__xtree_check(&t), 0);

  uint64_t s = l->start;                       /* a left child above its parent */
  l->start += pl->start + 1 - s;
  l->end += pl->start + 1 - s;
  assert_int_equal(dk__xtree_check(&t), -1);
  l->end -= l->start - s;
  l->start = s;
  s = r->start;                                /* a right child below its parent */
  r->start -= s - (pr->start - 1);
  r->end -= s - (pr->start - 1);
  assert_int_equal(dk__xtree_check(&t), -1);
  r->end += s - r->start;
  r->start = s;
  assert_int_equal(dk__xtree_check(&t), 0);

  uint32_t p = l->prio;                        /* children above their parent in the heap */
  l->prio = pl->prio + 1;
  assert_true(l->prio > pl->prio);
  assert_int_equal(dk__xtree_check(&t), -1);
  l->prio = p;
  p = r->prio;
  r->prio = pr->prio + 1;
  assert_true(r->prio > pr->prio);
  assert_int_equal(dk__xtree_check(&t), -1);
  r->prio = p;
  assert_int_equal(dk__xtree_check(&t), 0);

  root->max_len++;                             /* stale summaries */
  assert_int_equal(dk__xtree_check(&t), -1);
  root->max_len--;
  root->max_end++;
  assert_int_equal(dk__xtree_check(&t), -1);
  root->max_end--;
  l->max_len++;                                /* damage below the root is found too */
  assert_int_equal(dk__xtree_check(&t), -1);
  l->max_len--;
  assert_int_equal(dk__xtree_check(&t), 0);

  t.count++;                                   /* a count that disagrees with the nodes */
  assert_int_equal(dk__xtree_check(&t), -1);
  t.count--;
  assert_int_equal(dk__xtree_check(&t), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(xtree_matches_model),
    cmocka_unit_test(xtree_cover_with_overlaps),
    cmocka_unit_test(xtree_walk_in_order),
    cmocka_unit_test(xtree_query_edges),
    cmocka_unit_test(xtree_walk_stops),
    cmocka_unit_test(xtree_check_catches_damage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
