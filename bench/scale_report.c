/* bench/scale_report.c: `dkscale report`: the result lines of `dkscale run` (scale.h) as
 * markdown (the targets, met or not, then one table per case), as JSON (every point with
 * every trial, and the targets), and as an SVG plot of cost against live count (log x, log
 * y), one panel per case, dmakit and DPDK side by side. Reads nothing but the lines. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"
#include "scale.h"

#include "canvas.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the lines ------------------------------------------------------------------------------ */
typedef struct point {
  char   case_id[16], param[16], subj[24], metric[16];
  long   live, reached;
  double med, q1, q3;
  int    trials;
  char   note[WHY_LEN + 96];
  char   values[512];
} point;

static point *g_pt;
static int    g_npt, g_cap;
static char   g_info[32][2][400];
static int    g_ninfo;

static int load(const char *path)
{
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "dkscale report: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[2048];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *fld[SCALE_FIELDS] = { 0 }, *p = line;
    int nf = 0;
    while (nf < SCALE_FIELDS) {      /* empty fields count (strtok would skip them) */
      fld[nf++] = p;
      char *tab = strchr(p, '\t');
      if (!tab) break;
      *tab = 0;
      p = tab + 1;
    }
    if (nf == 3 && strcmp(fld[0], "I") == 0 && g_ninfo < 32) {
      snprintf(g_info[g_ninfo][0], sizeof g_info[0][0], "%s", fld[1]);
      snprintf(g_info[g_ninfo++][1], sizeof g_info[0][1], "%s", fld[2]);
      continue;
    }
    if (nf != SCALE_FIELDS || strcmp(fld[0], "P") != 0) continue;
    if (g_npt == g_cap) {
      int cap = g_cap ? 2 * g_cap : 256;
      point *v = realloc(g_pt, (size_t)cap * sizeof *v);
      if (!v) break;
      g_pt = v, g_cap = cap;
    }
    point *q = &g_pt[g_npt++];
    snprintf(q->case_id, sizeof q->case_id, "%s", fld[1]);
    snprintf(q->param, sizeof q->param, "%s", fld[2]);
    snprintf(q->subj, sizeof q->subj, "%s", fld[3]);
    q->live = strtol(fld[4], NULL, 10);
    q->reached = strtol(fld[5], NULL, 10);
    snprintf(q->metric, sizeof q->metric, "%s", fld[6]);
    q->med = strtod(fld[7], NULL);
    q->q1 = strtod(fld[8], NULL);
    q->q3 = strtod(fld[9], NULL);
    q->trials = (int)strtol(fld[10], NULL, 10);
    snprintf(q->note, sizeof q->note, "%s", fld[11]);
    snprintf(q->values, sizeof q->values, "%s", fld[12]);
  }
  fclose(f);
  return 0;
}

static const char *info(const char *key)
{
  for (int i = 0; i < g_ninfo; i++)
    if (strcmp(g_info[i][0], key) == 0) return g_info[i][1];
  return NULL;
}

static const point *find(const char *case_id, const char *param, const char *subj, long live, const char *metric)
{
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    if (strcmp(q->case_id, case_id) == 0 && strcmp(q->param, param) == 0 && strcmp(q->subj, subj) == 0 &&
        q->live == live && strcmp(q->metric, metric) == 0)
      return q;
  }
  return NULL;
}

static bool ok(const point *q) { return q && q->med >= 0; }
/* A trial stopped by its budget: the cost per operation at the full count is at least this. */
static bool partial(const point *q) { return q && q->reached < q->live; }

/* The distinct live counts of a case and param, ascending. */
static int lives(const char *case_id, const char *param, long *out, int cap)
{
  int n = 0;
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    if (strcmp(q->case_id, case_id) != 0 || (param && strcmp(q->param, param) != 0)) continue;
    bool seen = false;
    for (int j = 0; j < n; j++) seen |= out[j] == q->live;
    if (!seen && n < cap) out[n++] = q->live;
  }
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
      long t = out[j];
      out[j] = out[j - 1], out[j - 1] = t;
    }
  return n;
}

static int params(const char *case_id, char (*out)[16], int cap)
{
  int n = 0;
  for (int i = 0; i < g_npt; i++) {
    if (strcmp(g_pt[i].case_id, case_id) != 0) continue;
    bool seen = false;
    for (int j = 0; j < n; j++) seen |= strcmp(out[j], g_pt[i].param) == 0;
    if (!seen && n < cap) snprintf(out[n++], 16, "%s", g_pt[i].param);
  }
  return n;
}

static const char *count_text(long n, char *buf, size_t len)
{
  if (n >= 1000000 && n % 1000000 == 0) snprintf(buf, len, "%ldM", n / 1000000);
  else if (n >= 1000 && n % 1000 == 0) snprintf(buf, len, "%ldk", n / 1000);
  else snprintf(buf, len, "%ld", n);
  return buf;
}

static const char *size_text(const char *param, char *buf, size_t len)
{
  long b = strtol(param, NULL, 10);
  if (b >= 1048576 && b % 1048576 == 0) snprintf(buf, len, "%ld MiB", b / 1048576);
  else if (b >= 1024 && b % 1024 == 0) snprintf(buf, len, "%ld KiB", b / 1024);
  else if (b > 0) snprintf(buf, len, "%ld B", b);
  else snprintf(buf, len, "%s", param);
  return buf;
}

static const char *subj_name(const char *id)
{
  if (strcmp(id, "dmakit") == 0) return "dmakit";
  if (strcmp(id, "dpdk") == 0) return "DPDK";
  if (strcmp(id, "glibc") == 0) return "glibc";
  if (strcmp(id, "dmakit_soft_mapper") == 0) return "dmakit, software mapper";
  if (strcmp(id, "dmakit_no_mapper") == 0) return "dmakit, no mapper";
  if (strcmp(id, "floor") == 0) return "memory floor";
  return id;
}

static const char *call_name(const char *subj, const char *metric)
{
  bool d = strcmp(subj, "dpdk") == 0, g = strcmp(subj, "glibc") == 0;
  if (strcmp(subj, "floor") == 0 && strcmp(metric, "release") == 0)
    return "of a release (dmakit's buffers: descriptor read, bytes zeroed, no allocator)";
  if (strcmp(metric, "create") == 0) return d ? "rte_zmalloc" : g ? "posix_memalign+memset" : "create";
  if (strcmp(metric, "release") == 0) return d ? "rte_free" : g ? "free" : "release";
  if (strcmp(metric, "translate") == 0) return d ? "rte_malloc_virt2iova" : "getPhysicalSegment";
  return metric;
}

/* A median cell: "> x" and a mark when a trial ran out of its budget. */
static const char *cell(const point *q, char *buf, size_t len)
{
  char t[32];
  if (!q) snprintf(buf, len, " ");
  else if (!ok(q)) snprintf(buf, len, "n/a");
  else if (partial(q)) snprintf(buf, len, ">= %s (at %ld live)", dkb_fmt_ns(q->med, t, sizeof t), q->reached);
  else snprintf(buf, len, "%s", dkb_fmt_ns(q->med, t, sizeof t));
  return buf;
}

/* ---- targets ----------------------------------------------------------------------------- */
typedef struct target {
  char id[24], text[160], status[16], detail[400];
  double value, limit;
} target;

static target g_tg[16];
static int    g_ntg;

static target *target_new(const char *id, const char *text, double limit)
{
  target *t = &g_tg[g_ntg++];
  memset(t, 0, sizeof *t);
  snprintf(t->id, sizeof t->id, "%s", id);
  snprintf(t->text, sizeof t->text, "%s", text);
  snprintf(t->status, sizeof t->status, "not measured");
  t->value = -1;
  t->limit = limit;
  return t;
}

static void missing(target *t, const point *a, const point *b, const char *what)
{
  const point *bad = !ok(a) ? a : b;
  if (bad && bad->note[0]) snprintf(t->detail, sizeof t->detail, "%s: %s", what, bad->note);
  else snprintf(t->detail, sizeof t->detail, "%s was not run (%s mode)", what, info("mode") ? info("mode") : "?");
}

/* dmakit's time over the other's at the most, `limit`. With a stopped trial only one side of
 * the comparison is known: a stopped dmakit that is already slower fails it, a stopped other
 * that dmakit already beats passes it; anything else stays unmeasured. */
static void target_ratio(target *t, const point *d, const point *o, const char *what)
{
  if (!ok(d) || !ok(o) || d->reached == 0 || o->reached == 0) {
    missing(t, d, o, what);
    return;
  }
  char a[32], b[32];
  t->value = d->med / o->med;
  snprintf(t->detail, sizeof t->detail, "%s %s vs %s = %.3g", what, dkb_fmt_ns(d->med, a, sizeof a),
           dkb_fmt_ns(o->med, b, sizeof b), t->value);
  bool met = t->value <= t->limit;
  if (partial(d) && partial(o)) return;
  if (partial(d) && met) return;
  if (partial(o) && !met) return;
  if (partial(d) || partial(o))
    snprintf(t->detail + strlen(t->detail), sizeof t->detail - strlen(t->detail), " (%s stopped at %ld live: a bound)",
             partial(d) ? "dmakit" : "the other", partial(d) ? d->reached : o->reached);
  snprintf(t->status, sizeof t->status, "%s", met ? "met" : "not met");
}

/* The growth of dmakit's cost per operation from `lo` to `hi` live below `limit`. */
static void target_growth(target *t, const char *param, const char *metric, long lo, long hi)
{
  const point *a = find("sweep", param, "dmakit", lo, metric), *b = find("sweep", param, "dmakit", hi, metric);
  char what[96], x[32], y[32];
  snprintf(what, sizeof what, "%s at %ld live", metric, hi);
  if (!ok(a) || !ok(b)) {
    missing(t, a, b, what);
    return;
  }
  t->value = b->med / a->med;
  snprintf(t->detail, sizeof t->detail, "%s per op at %ld live, %s at %ld: x%.2f", dkb_fmt_ns(a->med, x, sizeof x), lo,
           dkb_fmt_ns(b->med, y, sizeof y), b->reached, t->value);
  /* beside a release: the growth of its memory floor over the same counts */
  const point *fa = find("sweep", param, "floor", lo, metric), *fb = find("sweep", param, "floor", hi, metric);
  if (ok(fa) && ok(fb) && !partial(fa) && !partial(fb))
    snprintf(t->detail + strlen(t->detail), sizeof t->detail - strlen(t->detail),
             "; its memory floor (no allocator work) %s -> %s: x%.2f", dkb_fmt_ns(fa->med, x, sizeof x),
             dkb_fmt_ns(fb->med, y, sizeof y), fb->med / fa->med);
  if (partial(a)) return;
  if (partial(b) && t->value < t->limit) return;
  snprintf(t->status, sizeof t->status, "%s", t->value < t->limit ? "met" : "not met");
}

static void targets(void)
{
  g_ntg = 0;
  target *t;
  t = target_new("create_1m_vs_dpdk", "1,000,000 live 64 B: dmakit create no slower than rte_zmalloc", 1.0);
  target_ratio(t, find("sweep", "64", "dmakit", 1000000, "create"), find("sweep", "64", "dpdk", 1000000, "create"),
               "create at 1M live:");
  t = target_new("release_1m_vs_dpdk", "1,000,000 live 64 B: dmakit release no slower than rte_free", 1.0);
  target_ratio(t, find("sweep", "64", "dmakit", 1000000, "release"), find("sweep", "64", "dpdk", 1000000, "release"),
               "release at 1M live:");
  t = target_new("growth_64_create", "64 B create: cost per op from 1,000 to 1,000,000 live grows < 2x", 2.0);
  target_growth(t, "64", "create", 1000, 1000000);
  t = target_new("growth_64_release", "64 B release: cost per op from 1,000 to 1,000,000 live grows < 2x", 2.0);
  target_growth(t, "64", "release", 1000, 1000000);
  t = target_new("growth_4k_create", "4 KiB create: cost per op from 1,000 to 100,000 live grows < 2x", 2.0);
  target_growth(t, "4096", "create", 1000, 100000);
  t = target_new("growth_4k_release", "4 KiB release: cost per op from 1,000 to 100,000 live grows < 2x", 2.0);
  target_growth(t, "4096", "release", 1000, 100000);

  t = target_new("mapper_release_100k", "100,000 buffers under the software mapper: a release < 1 us", 1000);
  const point *m = find("mapper", "4096", "dmakit_soft_mapper", 100000, "release");
  if (!ok(m)) missing(t, m, m, "release at 100k mapped");
  else {
    char a[32];
    t->value = m->med;
    snprintf(t->detail, sizeof t->detail, "release %s%s", dkb_fmt_ns(m->med, a, sizeof a),
             partial(m) ? " (creation stopped early: the count is lower)" : "");
    if (!partial(m) || m->med >= 1000) snprintf(t->status, sizeof t->status, "%s", m->med < 1000 ? "met" : "not met");
  }

  t = target_new("rss_per_buffer", "resident bytes per live 64 B buffer (descriptor included) <= 256, 1M live", 256);
  const point *r = find("rss", "64", "dmakit", 1000000, "rss");
  if (!ok(r)) missing(t, r, r, "resident growth over 1M buffers");
  else {
    t->value = r->med;
    const point *h = find("rss", "64", "dmakit", 1000000, "hugetlb");
    snprintf(t->detail, sizeof t->detail, "%.0f B per buffer resident (hugepage bytes, counted apart: %.0f B)", r->med,
             ok(h) ? h->med : -1.0);
    snprintf(t->status, sizeof t->status, "%s", r->med <= 256 ? "met" : "not met");
  }

  t = target_new("two_threads", "two threads creating and releasing: >= 1.9x one thread's throughput", 1.9);
  const point *t1 = find("threads", "64", "dmakit", 1, "pair"), *t2 = find("threads", "64", "dmakit", 2, "pair");
  if (!ok(t1) || !ok(t2)) missing(t, t1, t2, "the threads case");
  else {
    char a[32], b[32];
    t->value = t1->med / t2->med;
    snprintf(t->detail, sizeof t->detail, "%s per create+release with one thread, %s with two: %.2fx the throughput",
             dkb_fmt_ns(t1->med, a, sizeof a), dkb_fmt_ns(t2->med, b, sizeof b), t->value);
    snprintf(t->status, sizeof t->status, "%s", t->value >= 1.9 ? "met" : "not met");
  }

  t = target_new("handoff_vs_glibc", "producer/consumer: dmakit within 2x of glibc calloc/free", 2.0);
  target_ratio(t, find("handoff", "64", "dmakit", 1024, "buffer"), find("handoff", "64", "glibc", 1024, "buffer"),
               "per buffer handed over:");
}

/* ---- markdown ------------------------------------------------------------------------------ */
static void md_targets(void)
{
  printf("### Targets\n\n| target | measured | met |\n|---|---|---|\n");
  for (int i = 0; i < g_ntg; i++)
    printf("| %s | %s | %s |\n", g_tg[i].text, g_tg[i].detail[0] ? g_tg[i].detail : "n/a",
           strcmp(g_tg[i].status, "met") == 0 ? "met" : strcmp(g_tg[i].status, "not met") == 0 ? "**not met**"
                                                                                               : "not measured");
  printf("\n");
}

static const char *const g_subjs[] = { "dmakit", "dpdk", "glibc", "floor", "dmakit_soft_mapper", "dmakit_no_mapper" };
#define NSUBJ (int)(sizeof g_subjs / sizeof g_subjs[0])

/* One table: a row per subject and metric, a column per live count, then the growth from the
 * first column to the last, and dmakit / DPDK rows for each metric. */
static void md_case(const char *case_id, const char *param, const char *title, const char *const *metrics, int nm)
{
  long lv[16];
  int nl = lives(case_id, param, lv, 16);
  if (!nl) return;
  char a[64], b[64];
  printf("| %s |", title);
  for (int i = 0; i < nl; i++) printf(" %s live |", count_text(lv[i], a, sizeof a));
  printf(" growth %s -> %s |\n|---|", count_text(lv[0], a, sizeof a), count_text(lv[nl - 1], b, sizeof b));
  for (int i = 0; i <= nl; i++) printf("---:|");
  printf("\n");
  for (int m = 0; m < nm; m++) {
    for (int s = 0; s < NSUBJ; s++) {
      bool any = false;
      for (int i = 0; i < nl; i++) any |= find(case_id, param, g_subjs[s], lv[i], metrics[m]) != NULL;
      if (!any) continue;
      printf("| %s %s |", subj_name(g_subjs[s]), call_name(g_subjs[s], metrics[m]));
      const point *first = NULL, *last = NULL;
      for (int i = 0; i < nl; i++) {
        const point *q = find(case_id, param, g_subjs[s], lv[i], metrics[m]);
        printf(" %s |", cell(q, a, sizeof a));
        if (ok(q)) {
          if (!first) first = q;
          last = q;
        }
      }
      if (first && last && first != last) printf(" %s%.2fx |\n", partial(last) ? ">= " : "", last->med / first->med);
      else printf(" |\n");
    }
    bool any = false;
    for (int i = 0; i < nl; i++)
      any |= ok(find(case_id, param, "dmakit", lv[i], metrics[m])) && ok(find(case_id, param, "dpdk", lv[i], metrics[m]));
    if (!any) continue;
    printf("| %s: dmakit / DPDK |", metrics[m]);
    for (int i = 0; i < nl; i++) {
      const point *d = find(case_id, param, "dmakit", lv[i], metrics[m]), *o = find(case_id, param, "dpdk", lv[i], metrics[m]);
      if (ok(d) && ok(o)) printf(" %.3g%s |", d->med / o->med, partial(d) || partial(o) ? " (bound)" : "");
      else printf(" |");
    }
    printf(" |\n");
  }
  printf("\n");
}

static void md_notes(const char *case_id)
{
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    if (strcmp(q->case_id, case_id) != 0 || !q->note[0]) continue;
    bool dup = false;      /* one note per subject, point and reason */
    for (int j = 0; j < i && !dup; j++)
      dup = strcmp(g_pt[j].case_id, case_id) == 0 && strcmp(g_pt[j].param, q->param) == 0 &&
            strcmp(g_pt[j].subj, q->subj) == 0 && g_pt[j].live == q->live && strcmp(g_pt[j].note, q->note) == 0;
    if (!dup) printf("- %s %s, %ld live: %s\n", subj_name(q->subj), q->param, q->live, q->note);
  }
  /* a first trial (a fresh fill) much cheaper than the median: filling again after a shuffled
   * release costs more than the first time, which one trial alone would have hidden */
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    double first = strtod(q->values, NULL);
    if (strcmp(q->case_id, case_id) != 0 || !ok(q) || q->trials < 3 || strcmp(q->metric, "translate") == 0 ||
        first >= q->med / 2)
      continue;
    char t[32];
    printf("- %s %s %s, %ld live: the first trial (a fresh fill) took %s per operation, %.2gx the median: filling "
           "again after a shuffled release costs more (trials in order: ",
           subj_name(q->subj), q->param, call_name(q->subj, q->metric), q->live, dkb_fmt_ns(first, t, sizeof t),
           first / q->med);
    const char *p = q->values;
    for (int k = 0; *p; k++) {
      char *end;
      double v = strtod(p, &end);
      if (end == p) break;
      printf("%s%s", k ? ", " : "", dkb_fmt_ns(v, t, sizeof t));
      p = *end == ',' ? end + 1 : end;
    }
    printf(")\n");
  }
}

static void markdown(void)
{
  md_targets();
  static const char *const m3[] = { "create", "translate", "release" };
  char ps[16][16], t[64], title[128];
  int np = params("sweep", ps, 16);
  if (np) printf("### Live-count sweep: create N, translate each, release all in shuffled order (ns per operation)\n\n");
  for (int i = 0; i < np; i++) {
    long sz = strtol(ps[i], NULL, 10);
    snprintf(title, sizeof title, "%s, align %s", size_text(ps[i], t, sizeof t), sz > 4096 ? "4 KiB" : "= size");
    md_case("sweep", ps[i], title, m3, 3);
  }
  md_notes("sweep");
  static const char *const step[] = { "step" };
  if (params("churn", ps, 16)) {
    printf("\n### Mixed-size churn at a steady live count (ns per release + create)\n\n");
    md_case("churn", "mixed", "random size and alignment", step, 1);
    md_notes("churn");
  }
  if (params("threads", ps, 16)) {
    printf("\n### Two threads against one (64 B, align 64; glibc: calloc; ns per create+release, all threads together)\n\n");
    printf("| subject | 1 thread | 2 threads | throughput 2 / 1 |\n|---|---:|---:|---:|\n");
    for (int s = 0; s < 3; s++) {
      const point *a = find("threads", "64", g_subjs[s], 1, "pair"), *b = find("threads", "64", g_subjs[s], 2, "pair");
      char x[64], y[64];
      if (!a && !b) continue;
      printf("| %s | %s | %s |", subj_name(g_subjs[s]), cell(a, x, sizeof x), cell(b, y, sizeof y));
      if (ok(a) && ok(b)) printf(" %.2fx |\n", a->med / b->med);
      else printf(" |\n");
    }
    md_notes("threads");
  }
  if (params("handoff", ps, 16)) {
    printf("\n### Producer/consumer: one thread creates, the other releases, through a lock-free ring of 1024 (64 B, align 64; glibc: calloc)\n\n");
    printf("| subject | ns per buffer | p25 - p75 | / glibc |\n|---|---:|---:|---:|\n");
    const point *g = find("handoff", "64", "glibc", 1024, "buffer");
    for (int s = 0; s < 3; s++) {
      const point *q = find("handoff", "64", g_subjs[s], 1024, "buffer");
      char x[64], y[32], z[32];
      if (!q) continue;
      printf("| %s | %s | %s - %s |", subj_name(g_subjs[s]), cell(q, x, sizeof x), dkb_fmt_ns(q->q1, y, sizeof y),
             dkb_fmt_ns(q->q3, z, sizeof z));
      if (ok(q) && ok(g)) printf(" %.2f |\n", q->med / g->med);
      else printf(" |\n");
    }
    md_notes("handoff");
  }
  if (params("mapper", ps, 16)) {
    printf("\n### Under the software IOMapper: 4 KiB buffers, a 32-bit IOVA limit (ns per operation)\n\n");
    md_case("mapper", "4096", "4 KiB, align 4 KiB", m3, 3);
    md_notes("mapper");
    if (info("mapper")) printf("Mapper: %s.\n", info("mapper"));
  }
  if (params("rss", ps, 16)) {
    long lv[4];
    lives("rss", "64", lv, 4);
    printf("\n### Resident memory per live 64-byte buffer (%ld live; align 64, glibc: calloc)\n\n", lv[0]);
    printf("| subject | resident (VmRSS) growth per buffer | hugepage growth per buffer | heap bytes per buffer | "
           "all memory per buffer |\n");
    printf("|---|---:|---:|---:|---:|\n");
    for (int s = 0; s < 3; s++) {
      const point *a = find("rss", "64", g_subjs[s], lv[0], "rss"), *b = find("rss", "64", g_subjs[s], lv[0], "hugetlb"),
                  *c = find("rss", "64", g_subjs[s], lv[0], "heap");
      if (!a) continue;
      printf("| %s |", subj_name(g_subjs[s]));
      const point *v[3] = { a, b, c };
      double all = 0;
      for (int i = 0; i < 3; i++)
        if (ok(v[i])) printf(" %.1f B |", v[i]->med), all += v[i]->med;
        else printf(" %s |", v[i] ? "n/a" : "");
      printf(" %.1f B |\n", all);     /* DPDK's heap lies in hugepages mapped before: no growth counted twice */
    }
    md_notes("rss");
  }
  printf("\n");
  for (int i = 0; i < g_ninfo; i++)
    if (strcmp(g_info[i][0], "pool") == 0 || strcmp(g_info[i][0], "dpdk") == 0 || strcmp(g_info[i][0], "warning") == 0 ||
        strcmp(g_info[i][0], "mapper_leaks") == 0)
      printf("%s: %s.  \n", g_info[i][0], g_info[i][1]);
  bool any = false;
  for (int i = 0; i < g_ninfo; i++)
    if (strncmp(g_info[i][0], "seconds_", 8) == 0)
      printf("%s%s %s s", any ? ", " : "seconds per case: ", g_info[i][0] + 8, g_info[i][1]), any = true;
  if (any) printf(".\n");
}

/* ---- JSON --------------------------------------------------------------------------------- */
static void json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v)
{
  if (v < 0 || !isfinite(v)) fputs("null", f);
  else fprintf(f, "%.6g", v);
}

/* `, "key": value` */
static void json_kv_str(FILE *f, const char *key, const char *v)
{
  fprintf(f, ", \"%s\": ", key);
  json_str(f, v);
}

static void json_kv_num(FILE *f, const char *key, double v)
{
  fprintf(f, ", \"%s\": ", key);
  json_num(f, v);
}

static int write_json(const char *path)
{
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "dkscale report: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fprintf(f, "{\n  \"info\": {");
  for (int i = 0; i < g_ninfo; i++) {
    fprintf(f, "%s\n    ", i ? "," : "");
    json_str(f, g_info[i][0]);
    fputs(": ", f);
    json_str(f, g_info[i][1]);
  }
  fprintf(f, "\n  },\n  \"points\": [");
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    fprintf(f, "%s\n    {\"case\": ", i ? "," : "");
    json_str(f, q->case_id);
    json_kv_str(f, "param", q->param);
    json_kv_str(f, "subject", q->subj);
    fprintf(f, ", \"live\": %ld, \"reached\": %ld", q->live, q->reached);
    json_kv_str(f, "metric", q->metric);
    json_kv_num(f, "median", q->med);
    json_kv_num(f, "p25", q->q1);
    json_kv_num(f, "p75", q->q3);
    json_kv_str(f, "unit", strcmp(q->case_id, "rss") == 0 ? "bytes" : "ns");
    fputs(", \"trials\": [", f);
    const char *p = q->values;
    for (int k = 0; *p; k++) {
      char *end;
      double v = strtod(p, &end);
      if (end == p) break;
      fprintf(f, "%s", k ? ", " : "");
      json_num(f, v);
      p = *end == ',' ? end + 1 : end;
    }
    fputc(']', f);
    json_kv_str(f, "note", q->note);
    fputc('}', f);
  }
  fprintf(f, "\n  ],\n  \"targets\": [");
  for (int i = 0; i < g_ntg; i++) {
    const target *t = &g_tg[i];
    fprintf(f, "%s\n    {\"id\": ", i ? "," : "");
    json_str(f, t->id);
    json_kv_str(f, "target", t->text);
    json_kv_str(f, "status", t->status);
    json_kv_num(f, "value", t->value);
    json_kv_num(f, "limit", t->limit);
    json_kv_str(f, "detail", t->detail);
    fputc('}', f);
  }
  fprintf(f, "\n  ]\n}\n");
  int rc = ferror(f) ? -1 : 0;
  if (fclose(f) != 0) rc = -1;
  return rc;
}

/* ---- SVG: cost against live count, one panel per case ----------------------------------- */
#define PW 330.0               /* panel size */
#define PH 230.0
#define ML 58.0                /* plot margins inside a panel */
#define MR 12.0
#define MT 28.0
#define MB 36.0
#define COLS 3

typedef struct panel { const char *case_id; char param[16]; char title[96]; } panel;

static uint32_t subj_color(const char *s)
{
  if (strcmp(s, "dmakit") == 0 || strcmp(s, "dmakit_soft_mapper") == 0) return 0x1f5fbf;
  if (strcmp(s, "dpdk") == 0) return 0xe0701a;
  if (strcmp(s, "dmakit_no_mapper") == 0) return 0x2ca02c;
  if (strcmp(s, "floor") == 0) return 0x8e44ad;
  return 0x888888;
}

/* A decade as an axis label: 1 ns, 10 ns, 100 ns, 1 us ... */
static const char *decade_text(double e, char *buf, size_t len)
{
  static const char *const unit[] = { "ns", "us", "ms", "s" };
  int k = (int)llround(e), u = k / 3 < 3 ? k / 3 : 3;
  if (k < 0) snprintf(buf, len, "1e%d ns", k);
  else snprintf(buf, len, "%.0f %s", pow(10, k - 3 * u), unit[u]);
  return buf;
}

static bool plotted(const point *q)
{
  return ok(q) && q->med > 0 && strcmp(q->case_id, "rss") != 0 && strcmp(q->case_id, "threads") != 0 &&
         strcmp(q->case_id, "handoff") != 0 && strcmp(q->metric, "translate") != 0;
}

static void draw_panel(canvas *c, const panel *p, double ox, double oy)
{
  double x0 = ox + ML, x1 = ox + PW - MR, y0 = oy + MT, y1 = oy + PH - MB;
  canvas_rect(c, ox + 2, oy + 2, PW - 4, PH - 4, 0xffffff, 0xdddddd);
  canvas_text(c, ox + PW / 2, oy + 18, 12, 0x222222, ANCHOR_MIDDLE, "%s", p->title)->bold = true;
  double lx0 = 1e18, lx1 = 0, ly0 = 1e18, ly1 = 0;
  for (int i = 0; i < g_npt; i++) {
    const point *q = &g_pt[i];
    if (strcmp(q->case_id, p->case_id) != 0 || strcmp(q->param, p->param) != 0 || !plotted(q)) continue;
    lx0 = fmin(lx0, (double)q->live), lx1 = fmax(lx1, (double)q->live);
    ly0 = fmin(ly0, q->med), ly1 = fmax(ly1, q->med);
  }
  if (lx1 == 0) {
    canvas_text(c, ox + PW / 2, oy + PH / 2, 11, 0x888888, ANCHOR_MIDDLE, "no data");
    return;
  }
  double ax0 = floor(log10(lx0)), ax1 = ceil(log10(lx1)), ay0 = floor(log10(ly0)), ay1 = ceil(log10(ly1));
  if (ax1 <= ax0) ax1 = ax0 + 1;
  if (ay1 <= ay0) ay1 = ay0 + 1;
#define PX(v) (x0 + (log10(v) - ax0) / (ax1 - ax0) * (x1 - x0))
#define PY(v) (y1 - (log10(v) - ay0) / (ay1 - ay0) * (y1 - y0))
  char t[32];
  for (double e = ax0; e <= ax1 + 1e-9; e++) {
    double x = PX(pow(10, e));
    canvas_line(c, x, y0, x, y1, 0xeeeeee, false);
    canvas_text(c, x, y1 + 14, 10, 0x444444, ANCHOR_MIDDLE, "%s", count_text((long)llround(pow(10, e)), t, sizeof t));
  }
  for (double e = ay0; e <= ay1 + 1e-9; e++) {
    double y = PY(pow(10, e));
    canvas_line(c, x0, y, x1, y, 0xeeeeee, false);
    canvas_text(c, x0 - 4, y + 3, 10, 0x444444, ANCHOR_END, "%s", decade_text(e, t, sizeof t));
  }
  canvas_rect(c, x0, y0, x1 - x0, y1 - y0, NO_COLOR, 0x999999);
  canvas_text(c, (x0 + x1) / 2, oy + PH - 6, 10, 0x444444, ANCHOR_MIDDLE, "live buffers");
  /* one polyline per subject and metric: create solid, release and steps dashed */
  for (int s = 0; s < NSUBJ; s++) {
    static const char *const ms[] = { "create", "release", "step" };
    for (int m = 0; m < 3; m++) {
      const point *prev = NULL;
      for (int i = 0; i < g_npt; i++) {
        const point *q = &g_pt[i];
        if (strcmp(q->case_id, p->case_id) != 0 || strcmp(q->param, p->param) != 0 || strcmp(q->subj, g_subjs[s]) != 0 ||
            strcmp(q->metric, ms[m]) != 0 || !plotted(q))
          continue;
        uint32_t col = subj_color(q->subj);
        if (prev) {
          shape *l = canvas_line(c, PX((double)prev->live), PY(prev->med), PX((double)q->live), PY(q->med), col, m == 1);
          l->stroke_width = 2;
          snprintf(l->cls, sizeof l->cls, "%s", m == 0 ? "create" : m == 1 ? "release" : "step");
        }
        shape *r = canvas_rect(c, PX((double)q->live) - 3, PY(q->med) - 3, 6, 6, partial(q) ? 0xffffff : col, col);
        snprintf(r->cls, sizeof r->cls, "point");
        snprintf(r->text, sizeof r->text, "%s %s, %ld live: %s%s", subj_name(q->subj), call_name(q->subj, q->metric),
                 q->live, dkb_fmt_ns(q->med, t, sizeof t), partial(q) ? " (trial stopped early: a lower bound)" : "");
        prev = q;
      }
    }
  }
#undef PX
#undef PY
}

static int write_svg(const char *path)
{
  panel pn[24];
  int n = 0;
  char ps[16][16], t[32];
  int np = params("sweep", ps, 16);
  for (int i = 0; i < np && n < 24; i++) {
    pn[n] = (panel){ .case_id = "sweep" };
    memcpy(pn[n].param, ps[i], sizeof pn[n].param);
    snprintf(pn[n].title, sizeof pn[n].title, "%s buffers", size_text(ps[i], t, sizeof t));
    n++;
  }
  if (params("churn", ps, 16)) {
    pn[n] = (panel){ .case_id = "churn", .param = "mixed" };
    snprintf(pn[n++].title, sizeof pn[0].title, "mixed-size churn (release+create)");
  }
  if (params("mapper", ps, 16)) {
    pn[n] = (panel){ .case_id = "mapper", .param = "4096" };
    snprintf(pn[n++].title, sizeof pn[0].title, "4 KiB under the software mapper");
  }
  int rows = (n + COLS - 1) / COLS;
  canvas c;
  canvas_init(&c, COLS * PW, 86 + rows * PH);   /* the title, two legend rows, the panels */
  canvas_rect(&c, 0, 0, c.width, c.height, 0xffffff, NO_COLOR);
  canvas_text(&c, 10, 20, 15, 0x111111, ANCHOR_START, "Cost per operation (ns) against live buffers, log-log")->bold = true;
  const char *dp = info("dpdk");
  canvas_text(&c, 10, 38, 10, 0x444444, ANCHOR_START, "%.100s; a hollow mark: the trial stopped at its time budget "
              "(a lower bound)", dp ? dp : "");
  struct { const char *s, *label; bool dashed; } legend[] = {
    { "dmakit", "dmakit create", false }, { "dmakit", "dmakit release", true },
    { "dpdk", "DPDK rte_zmalloc", false }, { "dpdk", "DPDK rte_free", true },
    { "glibc", "glibc aligned+zeroed", false }, { "glibc", "glibc free", true },
    { "dmakit_no_mapper", "dmakit, no mapper", false },
    { "floor", "memory floor of a release (no allocator work)", true },
  };
  double x = 10, y = 56;
  for (size_t i = 0; i < sizeof legend / sizeof legend[0]; i++) {
    double w = 30 + 6.2 * (double)strlen(legend[i].label) + 16;
    if (x + w > c.width && x > 10) x = 10, y += 16;   /* the next row */
    shape *l = canvas_line(&c, x, y, x + 26, y, subj_color(legend[i].s), legend[i].dashed);
    l->stroke_width = 2;
    canvas_text(&c, x + 30, y + 4, 10, 0x222222, ANCHOR_START, "%s", legend[i].label);
    x += w;
  }
  for (int i = 0; i < n; i++) draw_panel(&c, &pn[i], (i % COLS) * PW, 86 + (i / COLS) * PH);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "dkscale report: %s: %s\n", path, strerror(errno));
    canvas_free(&c);
    return -1;
  }
  int rc = canvas_write_svg(&c, f);
  if (fclose(f) != 0) rc = -1;
  canvas_free(&c);
  return rc;
}

/* ---- the command ----------------------------------------------------------------------------- */
int scale_report(int argc, char **argv)
{
  const char *json = NULL, *svg = NULL, *in = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
    else if (strcmp(argv[i], "--svg") == 0 && i + 1 < argc) svg = argv[++i];
    else if (!in) in = argv[i];
    else {
      fprintf(stderr, "dkscale report: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!in || load(in) != 0) return 1;
  if (g_npt == 0) {
    fprintf(stderr, "dkscale report: %s has no result lines\n", in);
    return 1;
  }
  targets();
  markdown();
  int rc = 0;
  if (json && write_json(json) != 0) rc = 1;
  if (svg && write_svg(svg) != 0) rc = 1;
  free(g_pt);
  return rc;
}
