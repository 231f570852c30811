/* bench/scale.c: dmakit at the load real drivers put on it, against DPDK (rte_zmalloc /
 * rte_free with the same alignment) and glibc (the natural floor), in the same process and
 * the same run. Not a test: scripts/bench.sh runs it and docs/benchmarks.md describes the
 * method. The cases:
 *   rss      resident bytes per live 64-byte buffer (dmakit and glibc each in a fresh process)
 *   sweep    N live buffers of each slab size class and two large sizes: create N, translate
 *            each, release in shuffled order; ns per operation against N; and the release's
 *            memory floor (the same buffers, only the memory a release must touch)
 *   churn    a steady live count, random sizes and alignments, random release order
 *   threads  two threads creating and releasing against one
 *   handoff  one thread creates, hands each buffer through a lock-free ring, the other releases
 *   mapper   N buffers under the software IOMapper: release cost against N
 *
 *   dkscale run [--quick | --smoke] [--no-dpdk] [--cases LIST]   result lines (scale.h) on stdout
 *   dkscale report FILE [--json OUT] [--svg OUT]                  tables on stdout, JSON, SVG */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dmakit/dmakit.h>

#include "common.h"
#include "scale.h"

#include "mapper/mapper_impl.h"   /* dk__mapper_create_soft: no public call makes one */

#ifdef DKB_HAVE_DPDK
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_version.h>
#endif

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- configuration ---------------------------------------------------------------------- */
typedef struct config {
  const char *mode;             /* full | quick | smoke */
  long   sweep_n[6];            /* live counts of the sweep, ascending, 0-terminated */
  long   large_n[6];            /* the same for the sizes above 4 KiB */
  long   churn_live[4], churn_steps;
  long   mapper_n[4];
  long   rss_n;
  long   handoff_n;
  double thread_ms;             /* length of one threads trial */
  int    rounds;                /* interleaved trials per point, below 1e5 live */
  int    rounds_big;            /* from 1e5 live on */
  uint64_t max_bytes;           /* a point holds at most this many bytes per subject */
  double budget_ns;             /* one trial of one subject stops creating after this */
  unsigned eal_mb;              /* DPDK legacy memory */
} config;

static config C;
static uint64_t g_mask;
static const char *g_cases = "rss,sweep,churn,threads,handoff,mapper";

static void config_set(const char *mode)
{
  memset(&C, 0, sizeof C);
  C.mode = mode;
  const char *mb = getenv("DK_SCALE_MAX_MB"), *bs = getenv("DK_SCALE_BUDGET_S"), *em = getenv("DK_SCALE_EAL_MB");
  if (strcmp(mode, "smoke") == 0) {
    long s[] = { 100, 1000, 0 }, l[] = { 10, 100, 0 }, cl[] = { 100, 1000, 0 }, mp[] = { 200, 2000, 0 };
    memcpy(C.sweep_n, s, sizeof s), memcpy(C.large_n, l, sizeof l);
    memcpy(C.churn_live, cl, sizeof cl), memcpy(C.mapper_n, mp, sizeof mp);
    C.churn_steps = 2000, C.rss_n = 10000, C.handoff_n = 2000, C.thread_ms = 5;
    C.rounds = 3, C.rounds_big = 1, C.max_bytes = 64 * MiB, C.budget_ns = 5e9, C.eal_mb = 256;
  } else if (strcmp(mode, "quick") == 0) {
    long s[] = { 1000, 10000, 100000, 0 }, l[] = { 10, 100, 1000, 0 }, cl[] = { 1000, 10000, 0 };
    long mp[] = { 2000, 32000, 0 };
    memcpy(C.sweep_n, s, sizeof s), memcpy(C.large_n, l, sizeof l);
    memcpy(C.churn_live, cl, sizeof cl), memcpy(C.mapper_n, mp, sizeof mp);
    C.churn_steps = 50000, C.rss_n = 100000, C.handoff_n = 50000, C.thread_ms = 50;
    C.rounds = 3, C.rounds_big = 3, C.max_bytes = 256 * MiB, C.budget_ns = 5e9, C.eal_mb = 1024;
  } else {
    long s[] = { 1000, 10000, 100000, 1000000, 0 }, l[] = { 10, 100, 1000, 10000, 0 };
    long cl[] = { 1000, 10000, 100000, 0 }, mp[] = { 2000, 32000, 100000, 0 };
    memcpy(C.sweep_n, s, sizeof s), memcpy(C.large_n, l, sizeof l);
    memcpy(C.churn_live, cl, sizeof cl), memcpy(C.mapper_n, mp, sizeof mp);
    C.churn_steps = 200000, C.rss_n = 1000000, C.handoff_n = 200000, C.thread_ms = 200;
    C.rounds = 7, C.rounds_big = 3, C.max_bytes = 512 * MiB, C.budget_ns = 20e9, C.eal_mb = 1536;
  }
  if (mb && atol(mb) > 0) C.max_bytes = (uint64_t)atol(mb) * MiB;
  if (bs && atof(bs) > 0) C.budget_ns = atof(bs) * 1e9;
  if (em && atol(em) > 0) C.eal_mb = (unsigned)atol(em);
}

static bool case_on(const char *name)
{
  size_t n = strlen(name);
  for (const char *p = g_cases; (p = strstr(p, name)) != NULL; p += n)
    if ((p == g_cases || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
  return false;
}

/* ---- result lines ------------------------------------------------------------------------ */
typedef struct series {        /* the trials of one subject at one point */
  double v[16];
  int    n;
  long   reached;              /* the smallest live count a trial reached */
  bool   failed;
  char   why[WHY_LEN];
} series;

static void emit(const char *case_id, const char *param, const char *subj, long live, const char *metric,
                 const series *s)
{
  char note[WHY_LEN + 96] = "";
  if (s->failed || s->n == 0) {
    printf("P\t%s\t%s\t%s\t%ld\t%ld\t%s\t-1\t-1\t-1\t0\t%s\t\n", case_id, param, subj, live, s->reached, metric,
           s->why[0] ? s->why : "did not run");
    fflush(stdout);
    return;
  }
  double sorted[16];
  memcpy(sorted, s->v, (size_t)s->n * sizeof(double));
  qsort(sorted, (size_t)s->n, sizeof(double), dkb_cmp_double);
  if (s->reached < live)
    snprintf(note, sizeof note, "stopped at %ld of %ld live: the trial passed its %.0f s budget%s%s", s->reached,
             live, C.budget_ns / 1e9, s->why[0] ? "; " : "", s->why);
  else
    snprintf(note, sizeof note, "%s", s->why);
  printf("P\t%s\t%s\t%s\t%ld\t%ld\t%s\t%.3f\t%.3f\t%.3f\t%d\t%s\t", case_id, param, subj, live, s->reached, metric,
         dkb_quantile(sorted, s->n, 0.5), dkb_quantile(sorted, s->n, 0.25), dkb_quantile(sorted, s->n, 0.75), s->n,
         note);
  for (int i = 0; i < s->n; i++) printf("%s%.3f", i ? "," : "", s->v[i]);
  printf("\n");
  fflush(stdout);
}

/* A point a subject could not measure, and why. */
static void emit_fail(const char *case_id, const char *param, const char *subj, long live, const char *metric,
                      const char *why)
{
  series f = { .failed = true };
  snprintf(f.why, WHY_LEN, "%s", why);
  emit(case_id, param, subj, live, metric, &f);
}

static void add(series *s, double v)
{
  if (s->n < 16) s->v[s->n++] = v;
}

/* ---- the subjects: one buffer made, translated, released -------------------------------- */
typedef struct subject {
  const char *id;
  void    *(*create)(uint64_t size, uint64_t align, char *why);
  uint64_t (*translate)(void *h);    /* NULL: nothing to translate */
  void     (*release)(void *h);
  void     (*begin)(void);        /* before a create phase (may be NULL) */
  void     (*end)(void);          /* after it */
  void     (*reap)(void **v, long n);   /* after the timed release (may be NULL) */
  bool     release_only;          /* its create and translate are another subject's: not reported */
} subject;

static void *dk_create(uint64_t size, uint64_t align, char *why)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = g_mask;
  c.alignment = align;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, size, &c);
  if (!b) dkb_dk_fail(why);
  return b;
}
static uint64_t dk_translate(void *h)
{
  IOByteCount len;
  return IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)h, 0, &len, 0) + len;
}
static void dk_release(void *h) { OSObject_release(h); }

/* glibc, zeroed as the others are: calloc, or posix_memalign + memset above malloc's 16 */
static void *libc_create(uint64_t size, uint64_t align, char *why)
{
  void *p = NULL;
  if (align <= 16) p = calloc(1, size);
  else if (posix_memalign(&p, align, size) == 0) memset(p, 0, size);
  else p = NULL;
  if (!p) dkb_fail(why, "glibc: out of memory");
  return p;
}
static void libc_release(void *h) { free(h); }

static const subject S_DMAKIT = { .id = "dmakit", .create = dk_create, .translate = dk_translate, .release = dk_release };

/* The memory floor of a release: dmakit's own buffers (the same layout in memory), and for each
 * release only what any release must touch, with no allocator work: the descriptor read
 * through three getters and the buffer's bytes zeroed. The buffers are released after the
 * timed loop. Its growth from 1,000 live is what memory latency alone costs a shuffled release
 * on this machine, whatever the allocator does. */
static void floor_release(void *h)
{
  IOBufferMemoryDescriptor *b = h;
  dkb_sink += (uint64_t)OSObject_getRetainCount(b);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b), 0, IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b));
}
static void floor_reap(void **v, long n)
{
  for (long i = 0; i < n; i++) OSObject_release(v[i]);
}
static const subject S_FLOOR = { .id = "floor", .create = dk_create, .release = floor_release, .reap = floor_reap,
                                 .release_only = true };
/* plain calloc whatever the alignment asked (16 bytes is what it gives): the floor the
 * threads, producer/consumer and resident-memory cases compare with */
static void *calloc_create(uint64_t size, uint64_t align, char *why)
{
  (void)align;
  void *p = calloc(1, size);
  if (!p) dkb_fail(why, "glibc: out of memory");
  return p;
}
static const subject S_GLIBC = { .id = "glibc", .create = libc_create, .release = libc_release };
static const subject S_CALLOC = { .id = "glibc", .create = calloc_create, .release = libc_release };

#ifdef DKB_HAVE_DPDK
static bool g_eal;
static bool dpdk_subject(const subject *s) { return strcmp(s->id, "dpdk") == 0; }
static void *rte_create(uint64_t size, uint64_t align, char *why)
{
  void *p = rte_zmalloc(NULL, size, (unsigned)align);
  if (!p) dkb_rte_malloc_fail(why, "rte_zmalloc");
  return p;
}
static uint64_t rte_translate(void *h) { return rte_malloc_virt2iova(h); }
static void rte_release(void *h) { rte_free(h); }
static const subject S_DPDK = { .id = "dpdk", .create = rte_create, .translate = rte_translate, .release = rte_release };
#endif

/* The subjects of a case: dmakit, DPDK when its EAL is up, then the floor (glibc). */
static int subjects(const subject **out, const subject *floor)
{
  int k = 0;
  out[k++] = &S_DMAKIT;
#ifdef DKB_HAVE_DPDK
  if (g_eal) out[k++] = &S_DPDK;
#endif
  if (floor) out[k++] = floor;
  return k;
}

/* ---- helpers ------------------------------------------------------------------------------ */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
  g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
  return g_rng;
}

static void shuffle(void **v, long n, uint64_t seed)
{
  g_rng = seed | 1;
  for (long i = n - 1; i > 0; i--) {
    long j = (long)(rnd() % (uint64_t)(i + 1));
    void *t = v[i];
    v[i] = v[j], v[j] = t;
  }
}

static void **g_v;             /* the live handles, room for the largest point */
static long   g_vcap;

static bool room_for(long n)
{
  if (n <= g_vcap) return true;
  void **v = realloc(g_v, (size_t)n * sizeof *v);
  if (!v) return false;
  memset(v, 0, (size_t)n * sizeof *v);   /* resident before anything is measured */
  g_v = v, g_vcap = n;
  return true;
}

static void trim(void)
{
  dk_pool_trim();
}

/* Keeps the order of subjects alternating: A B C on even rounds, C B A on odd ones. */
static int order(int round, int q, int k) { return (round & 1) ? k - 1 - q : q; }

/* ---- sweep --------------------------------------------------------------------------------- */
typedef struct phase3 {
  series create, translate, release;
  bool   capped;            /* a trial stopped creating at its budget: no more trials */
  double slow_s;            /* a whole trial took longer than the budget (s): no more trials */
} phase3;

/* A trial that took longer than the budget is the only one: say so next to its value. */
static void note_slow(phase3 *r, int rounds)
{
  if (r->slow_s == 0 || r->capped || rounds < 2 || r->create.n != 1) return;
  series *all[3] = { &r->create, &r->translate, &r->release };
  for (int i = 0; i < 3; i++)
    if (!all[i]->failed && !all[i]->why[0])
      snprintf(all[i]->why, WHY_LEN, "one trial: it took %.0f s, over the %.0f s budget", r->slow_s, C.budget_ns / 1e9);
}

/* One trial: create n (stopping at the budget), translate each, release in shuffled order. */
static void sweep_trial(const subject *s, uint64_t size, uint64_t align, long n, uint64_t seed, phase3 *out)
{
  char why[WHY_LEN] = "";
  uint64_t deadline = dkb_now_ns() + (uint64_t)C.budget_ns;
  if (s->begin) s->begin();
  uint64_t t0 = dkb_now_ns();
  long k = 0;
  for (; k < n; k++) {
    if (!(g_v[k] = s->create(size, align, why))) break;
    if ((k & 255) == 255 && dkb_now_ns() > deadline) {
      k++;
      break;
    }
  }
  uint64_t t1 = dkb_now_ns();
  if (s->end) s->end();
  if (k < n && !why[0]) out->capped = true;
  if (why[0]) {        /* a refusal: the point failed for this subject */
    out->create.failed = true;
    snprintf(out->create.why, WHY_LEN, "create %ld failed: %.240s", k + 1, why);
  }
  uint64_t acc = 0;
  if (s->translate)
    for (long i = 0; i < k; i++) acc += s->translate(g_v[i]);
  uint64_t t2 = dkb_now_ns();
  dkb_sink += acc;
  shuffle(g_v, k, seed);
  uint64_t t3 = dkb_now_ns();
  for (long i = 0; i < k; i++) s->release(g_v[i]);
  uint64_t t4 = dkb_now_ns();
  if (s->reap) s->reap(g_v, k);
  if (t4 - t0 > (uint64_t)C.budget_ns) out->slow_s = (double)(t4 - t0) / 1e9;
  if (out->create.failed || k == 0) return;
  if (out->create.reached == 0 || k < out->create.reached) out->create.reached = k;
  add(&out->create, (double)(t1 - t0) / (double)k);
  if (s->translate) add(&out->translate, (double)(t2 - t1) / (double)k);
  add(&out->release, (double)(t4 - t3) / (double)k);
}

static void sweep_size(uint64_t size, uint64_t align)
{
  const subject *subs[4];
  int k = subjects(subs, &S_GLIBC);
  int kc = k;                       /* the subjects compared, in alternating order */
  subs[k++] = &S_FLOOR;             /* then the floor's trials, apart: it does not change what they find */
  bool stop[4] = { false, false, false, false };
  char param[24];
  snprintf(param, sizeof param, "%llu", (unsigned long long)size);
  const long *ns = size > 4096 ? C.large_n : C.sweep_n;
  for (int p = 0; ns[p]; p++) {
    long n = ns[p];
    if ((uint64_t)n * (size > align ? size : align) > C.max_bytes) break;
    if (!room_for(n)) {
      for (int j = 0; j < k; j++) emit_fail("sweep", param, subs[j]->id, n, "create", "no memory for the handles");
      break;
    }
    int rounds = n >= 100000 ? C.rounds_big : C.rounds;
    phase3 r[4];
    memset(r, 0, sizeof r);
    for (int round = 0; round < rounds; round++)
      for (int q = 0; q < kc; q++) {
        int j = order(round, q, kc);
        if (stop[j] || r[j].create.failed || r[j].capped || r[j].slow_s > 0) continue;
        sweep_trial(subs[j], size, align, n, 0x5eed0000ull + (uint64_t)round, &r[j]);
      }
    for (int round = 0; round < rounds; round++)
      for (int j = kc; j < k; j++)
        if (!stop[j] && !r[j].create.failed && !r[j].capped && r[j].slow_s == 0)
          sweep_trial(subs[j], size, align, n, 0x5eed0000ull + (uint64_t)round, &r[j]);
    for (int j = 0; j < k; j++) {
      if (stop[j]) {
        emit_fail("sweep", param, subs[j]->id, n, "create", "not run: a smaller live count already failed or passed the budget");
        continue;
      }
      r[j].translate.reached = r[j].release.reached = r[j].create.reached;
      note_slow(&r[j], rounds);
      if (!subs[j]->release_only || r[j].create.failed) emit("sweep", param, subs[j]->id, n, "create", &r[j].create);
      if (subs[j]->translate) emit("sweep", param, subs[j]->id, n, "translate", &r[j].translate);
      if (!r[j].create.failed) emit("sweep", param, subs[j]->id, n, "release", &r[j].release);
      if (r[j].create.failed || r[j].capped) stop[j] = true;
    }
  }
  trim();
}

/* ---- churn: a steady live count, random sizes and alignments ---------------------------- */
typedef struct req { uint32_t size, align; } req;

static void churn_requests(req *q, long n, uint32_t *victim, long live, long steps, uint64_t seed)
{
  static const uint32_t sizes[] = { 64, 128, 256, 512, 1024, 2048, 4096 };
  g_rng = seed | 1;
  for (long i = 0; i < n; i++) {
    uint64_t x = rnd();
    uint32_t size = (x & 31) == 0 ? 65536 : sizes[(x >> 5) % 7];
    switch ((x >> 12) & 3) {
    case 0: q[i].align = 0; break;                           /* none */
    case 1: q[i].align = 64; break;                          /* a cache line */
    case 2: q[i].align = size < 4096 ? size : 4096; break;   /* natural */
    default: q[i].align = 4096; break;                       /* a page */
    }
    q[i].size = size;
  }
  for (long s = 0; s < steps; s++) victim[s] = (uint32_t)(rnd() % (uint64_t)live);
}

static void churn_trial(const subject *s, const req *q, const uint32_t *victim, long live, long steps, series *out,
                        bool *capped)
{
  char why[WHY_LEN] = "";
  uint64_t deadline = dkb_now_ns() + (uint64_t)C.budget_ns;
  long k = 0;
  for (; k < live; k++)
    if (!(g_v[k] = s->create(q[k].size, q[k].align ? q[k].align : 1, why))) break;
  if (k < live) {
    out->failed = true;
    snprintf(out->why, WHY_LEN, "filling to %ld live: %.240s", live, why);
  }
  uint64_t t0 = dkb_now_ns();
  long st = 0;
  for (; st < steps && !out->failed; st++) {
    uint32_t j = victim[st];
    s->release(g_v[j]);
    if (!(g_v[j] = s->create(q[live + st].size, q[live + st].align ? q[live + st].align : 1, why))) {
      out->failed = true;
      snprintf(out->why, WHY_LEN, "step %ld: %.240s", st, why);
      g_v[j] = g_v[--k];     /* keep the live ones packed for the release below */
      break;
    }
    if ((st & 255) == 255 && dkb_now_ns() > deadline) {
      st++;
      *capped = true;
      break;
    }
  }
  uint64_t t1 = dkb_now_ns();
  for (long i = 0; i < k; i++) s->release(g_v[i]);
  if (out->failed || st == 0) return;
  add(out, (double)(t1 - t0) / (double)st);
  out->reached = live;
  if (*capped) snprintf(out->why, WHY_LEN, "stopped after %ld of %ld steps (the %.0f s budget)", st, steps,
                        C.budget_ns / 1e9);
}

static void case_churn(void)
{
  const subject *subs[3];
  int k = subjects(subs, &S_GLIBC);
  for (int p = 0; C.churn_live[p]; p++) {
    long live = C.churn_live[p], steps = C.churn_steps, total = live + steps;
    req *q = malloc((size_t)total * sizeof *q);
    uint32_t *victim = malloc((size_t)steps * sizeof *victim);
    if (!q || !victim || !room_for(live)) {
      free(q), free(victim);
      break;
    }
    series r[3];
    bool capped[3] = { false, false, false };
    memset(r, 0, sizeof r);
    int rounds = live >= 100000 ? C.rounds_big : C.rounds;
    for (int round = 0; round < rounds; round++) {
      churn_requests(q, total, victim, live, steps, 0xc4c4ull + (uint64_t)round);  /* the same for every subject */
      for (int qq = 0; qq < k; qq++) {
        int j = order(round, qq, k);
        if (!r[j].failed && !capped[j]) churn_trial(subs[j], q, victim, live, steps, &r[j], &capped[j]);
      }
    }
    for (int j = 0; j < k; j++) emit("churn", "mixed", subs[j]->id, live, "step", &r[j]);
    free(q), free(victim);
    trim();
  }
}

/* ---- threads: one against two, each creating and releasing ------------------------------ */
#define BATCH 32               /* buffers each thread holds at once */

typedef struct worker {
  const subject *s;
  int         cpu;
  double      ms;
  _Atomic int *go;
  uint64_t    ops, ns;
  char        why[WHY_LEN];
  bool        failed;
} worker;

static void pin_to(int cpu)
{
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void thread_enter(const subject *s, int cpu)
{
  pin_to(cpu);
#ifdef DKB_HAVE_DPDK
  if (dpdk_subject(s)) rte_thread_register();
#else
  (void)s;
#endif
}

static void thread_leave(const subject *s)
{
#ifdef DKB_HAVE_DPDK
  if (dpdk_subject(s)) rte_thread_unregister();
#else
  (void)s;
#endif
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  void *h[BATCH];
  thread_enter(w->s, w->cpu);
  while (!atomic_load(w->go)) sched_yield();
  uint64_t t0 = dkb_now_ns(), end = t0 + (uint64_t)(w->ms * 1e6), t = t0;
  while (t < end && !w->failed) {
    int b = 0;
    for (; b < BATCH; b++)
      if (!(h[b] = w->s->create(64, 64, w->why))) {
        w->failed = true;
        break;
      }
    for (int i = 0; i < b; i++) w->s->release(h[i]);
    w->ops += (uint64_t)b;
    t = dkb_now_ns();
  }
  w->ns = t - t0;
  thread_leave(w->s);
  return NULL;
}

/* ns per create+release pair over all threads together (1e9 / throughput), or -1. */
static double threads_trial(const subject *s, int nthreads, char *why)
{
  worker w[2];
  pthread_t th[2];
  _Atomic int go = 0;
  int started = 0;
  for (int i = 0; i < nthreads; i++) {
    w[i] = (worker){ .s = s, .cpu = i, .ms = C.thread_ms, .go = &go };
    if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) break;
    started++;
  }
  atomic_store(&go, 1);
  double per_s = 0;
  bool ok = started == nthreads;
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    if (w[i].failed) {
      ok = false;
      snprintf(why, WHY_LEN, "%s", w[i].why);
    }
    if (w[i].ns) per_s += (double)w[i].ops / ((double)w[i].ns / 1e9);
  }
  if (started < nthreads) snprintf(why, WHY_LEN, "pthread_create failed");
  return ok && per_s > 0 ? 1e9 / per_s : -1;
}

static void case_threads(void)
{
  const subject *subs[3];
  int k = subjects(subs, &S_CALLOC);
  series r[3][2];
  memset(r, 0, sizeof r);
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    for (int j = 0; j < k; j++) emit_fail("threads", "64", subs[j]->id, 2, "pair", "one CPU online: no second thread");
    return;
  }
  for (int round = 0; round < C.rounds; round++)
    for (int q = 0; q < 2 * k; q++) {
      int x = order(round, q, 2 * k), j = x / 2, t = x % 2;
      if (r[j][t].failed) continue;
      double v = threads_trial(subs[j], t + 1, r[j][t].why);
      if (v < 0) r[j][t].failed = true;
      else add(&r[j][t], v), r[j][t].reached = t + 1;
    }
  for (int j = 0; j < k; j++) {
    emit("threads", "64", subs[j]->id, 1, "pair", &r[j][0]);
    emit("threads", "64", subs[j]->id, 2, "pair", &r[j][1]);
  }
  trim();
}

/* ---- handoff: create on one thread, release on the other, through an SPSC ring --------- */
#define RING 1024

typedef struct ring {
  _Alignas(64) _Atomic uint64_t head;     /* written by the producer */
  _Alignas(64) _Atomic uint64_t tail;     /* written by the consumer */
  _Alignas(64) _Atomic long produced;     /* the producer's final count, -1 while it runs */
  void *slot[RING];
} ring;

typedef struct handoff {
  const subject *s;
  ring  *r;
  long   n;
  _Atomic int *go;
  char   why[WHY_LEN];
  bool   failed;
  uint64_t end_ns;
} handoff;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void *producer_main(void *arg)
{
  handoff *h = arg;
  ring *r = h->r;
  thread_enter(h->s, 0);
  while (!atomic_load(h->go)) sched_yield();
  uint64_t head = 0, tail = 0;
  long i = 0;
  for (; i < h->n; i++) {
    void *b = h->s->create(64, 64, h->why);
    if (!b) {
      h->failed = true;
      break;
    }
    while (head - tail == RING) {
      tail = atomic_load_explicit(&r->tail, memory_order_acquire);
      if (head - tail == RING) cpu_relax();
    }
    r->slot[head & (RING - 1)] = b;
    atomic_store_explicit(&r->head, ++head, memory_order_release);
  }
  atomic_store_explicit(&r->produced, i, memory_order_release);
  thread_leave(h->s);
  return NULL;
}

static void *consumer_main(void *arg)
{
  handoff *h = arg;
  ring *r = h->r;
  thread_enter(h->s, 1);
  while (!atomic_load(h->go)) sched_yield();
  uint64_t tail = 0, head = 0;
  for (;;) {
    if (tail == head) {
      head = atomic_load_explicit(&r->head, memory_order_acquire);
      if (tail == head) {
        long done = atomic_load_explicit(&r->produced, memory_order_acquire);
        if (done >= 0 && (uint64_t)done == tail &&
            atomic_load_explicit(&r->head, memory_order_acquire) == tail) break;
        cpu_relax();
        continue;
      }
    }
    void *b = r->slot[tail & (RING - 1)];
    atomic_store_explicit(&r->tail, ++tail, memory_order_release);
    h->s->release(b);
  }
  h->end_ns = dkb_now_ns();
  thread_leave(h->s);
  return NULL;
}

static double handoff_trial(const subject *s, long n, char *why)
{
  ring *r = aligned_alloc(64, sizeof *r);
  if (!r) return dkb_fail(why, "out of memory for the ring");
  memset(r, 0, sizeof *r);
  atomic_store(&r->produced, -1);
  _Atomic int go = 0;
  handoff h = { .s = s, .r = r, .n = n, .go = &go };
  pthread_t p, c;
  if (pthread_create(&p, NULL, producer_main, &h) != 0) {
    free(r);
    return dkb_fail(why, "pthread_create failed");
  }
  if (pthread_create(&c, NULL, consumer_main, &h) != 0) {
    h.n = 0;
    atomic_store(&go, 1);
    pthread_join(p, NULL);
    free(r);
    return dkb_fail(why, "pthread_create failed");
  }
  usleep(1000);            /* both threads pinned and waiting */
  uint64_t t0 = dkb_now_ns();
  atomic_store(&go, 1);
  pthread_join(p, NULL);
  pthread_join(c, NULL);
  long done = atomic_load(&r->produced);
  free(r);
  if (h.failed) return dkb_fail(why, "%s", h.why);
  return (double)(h.end_ns - t0) / (double)done;
}

static void case_handoff(void)
{
  const subject *subs[3];
  int k = subjects(subs, &S_CALLOC);
  series r[3];
  memset(r, 0, sizeof r);
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    for (int j = 0; j < k; j++)
      emit_fail("handoff", "64", subs[j]->id, RING, "buffer", "one CPU online: producer and consumer would share it");
    return;
  }
  for (int round = 0; round < C.rounds; round++)
    for (int q = 0; q < k; q++) {
      int j = order(round, q, k);
      if (r[j].failed) continue;
      double v = handoff_trial(subs[j], C.handoff_n, r[j].why);
      if (v < 0) r[j].failed = true;
      else add(&r[j], v), r[j].reached = RING;
    }
  for (int j = 0; j < k; j++) emit("handoff", "64", subs[j]->id, RING, "buffer", &r[j]);
  trim();
}

/* ---- mapper: release cost with N buffers mapped through the software IOMapper ------------ */
/* VT-d's aperture as VFIO reports it: 39 address bits less the MSI window. */
static const uint64_t g_vtd[2][2] = { { 0, 0xfedfffffull }, { 0xfef00000ull, (1ull << 39) - 1 } };
static IOMapper *g_soft;

static void *dk_create_mapped(uint64_t size, uint64_t align, char *why)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = 0xFFFFFFFFull;     /* a 32-bit device: under the mapper the limit binds the IOVA */
  c.alignment = align;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, size, &c);
  if (!b) dkb_dk_fail(why);
  return b;
}
/* buffers created meanwhile are mapped by it, and keep it */
static void soft_on(void) { dk_mapper_set_system(g_soft); }
static void soft_off(void) { dk_mapper_set_system(NULL); }

static const subject S_MAPPED = { .id = "dmakit_soft_mapper", .create = dk_create_mapped, .translate = dk_translate,
                                   .release = dk_release, .begin = soft_on, .end = soft_off };
static const subject S_UNMAPPED = { .id = "dmakit_no_mapper", .create = dk_create, .translate = dk_translate,
                                     .release = dk_release };

static void case_mapper(void)
{
  g_soft = dk__mapper_create_soft(g_vtd, 2, 0);
  if (!g_soft) {
    char why[WHY_LEN];
    dkb_dk_fail(why);
    emit_fail("mapper", "4096", S_MAPPED.id, C.mapper_n[0], "release", why);
    return;
  }
  const subject *subs[2] = { &S_MAPPED, &S_UNMAPPED };
  bool stop[2] = { false, false };
  for (int p = 0; C.mapper_n[p]; p++) {
    long n = C.mapper_n[p];
    if (!room_for(n) || (uint64_t)n * 4096 > C.max_bytes) break;
    phase3 r[2];
    memset(r, 0, sizeof r);
    for (int round = 0; round < C.rounds_big; round++)
      for (int q = 0; q < 2; q++) {
        int j = order(round, q, 2);
        if (!stop[j] && !r[j].create.failed && !r[j].capped && r[j].slow_s == 0)
          sweep_trial(subs[j], 4096, 4096, n, 0x3a9ull + (uint64_t)round, &r[j]);
      }
    for (int j = 0; j < 2; j++) {
      if (stop[j]) continue;
      r[j].translate.reached = r[j].release.reached = r[j].create.reached;
      note_slow(&r[j], C.rounds_big);
      emit("mapper", "4096", subs[j]->id, n, "create", &r[j].create);
      emit("mapper", "4096", subs[j]->id, n, "translate", &r[j].translate);
      if (!r[j].create.failed) emit("mapper", "4096", subs[j]->id, n, "release", &r[j].release);
      if (r[j].create.failed || r[j].capped) stop[j] = true;
    }
  }
  dk_mapper_info mi;
  memset(&mi, 0, sizeof mi);
  dk_mapper_get_info(g_soft, &mi);
  printf("I\tmapper\tpeak %u mappings; %u live and %llu buffer ranges at the end\n", mi.mappings_peak,
         mi.mappings_live, (unsigned long long)mi.buffers_mapped);
  unsigned leaks = dk_mapper_close(g_soft, NULL, 0);
  if (leaks) printf("I\tmapper_leaks\t%u\n", leaks);
  g_soft = NULL;
  trim();
}

/* ---- rss: resident bytes per live buffer ------------------------------------------------ */
typedef struct mem_now { long rss_kb, hugetlb_kb; } mem_now;

static mem_now mem_read(void)
{
  mem_now m = { -1, -1 };
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmRSS:", 6) == 0) m.rss_kb = atol(line + 6);
    else if (strncmp(line, "HugetlbPages:", 13) == 0) m.hugetlb_kb = atol(line + 13);
  }
  fclose(f);
  return m;
}

#ifdef DKB_HAVE_DPDK
static long dpdk_heap_bytes(void)
{
  struct rte_malloc_socket_stats st;
  if (rte_malloc_get_socket_stats(0, &st) != 0) return -1;
  return (long)st.heap_allocsz_bytes;
}
#endif

static void rss_one(const subject *s, long n)
{
  series rss = { 0 }, huge = { 0 }, heap = { 0 };
  char why[WHY_LEN] = "";
  long heap0 = -1;
#ifdef DKB_HAVE_DPDK
  if (dpdk_subject(s)) heap0 = dpdk_heap_bytes();
#endif
  mem_now a = mem_read();
  long k = 0;
  for (; k < n; k++)
    if (!(g_v[k] = s->create(64, 64, why))) break;
  mem_now b = mem_read();
  long heap1 = -1;
#ifdef DKB_HAVE_DPDK
  if (dpdk_subject(s)) heap1 = dpdk_heap_bytes();
#endif
  for (long i = 0; i < k; i++) s->release(g_v[i]);
  if (k < n) {
    rss.failed = true;
    snprintf(rss.why, WHY_LEN, "create %ld failed: %.240s", k + 1, why);
    emit("rss", "64", s->id, n, "rss", &rss);
    return;
  }
  rss.reached = huge.reached = heap.reached = n;
  if (a.rss_kb >= 0 && b.rss_kb >= 0) add(&rss, (double)(b.rss_kb - a.rss_kb) * 1024.0 / (double)n);
  else rss.failed = true, snprintf(rss.why, WHY_LEN, "/proc/self/status has no VmRSS");
  if (a.hugetlb_kb >= 0 && b.hugetlb_kb >= 0) add(&huge, (double)(b.hugetlb_kb - a.hugetlb_kb) * 1024.0 / (double)n);
  else huge.failed = true, snprintf(huge.why, WHY_LEN, "/proc/self/status has no HugetlbPages");
  emit("rss", "64", s->id, n, "rss", &rss);
  emit("rss", "64", s->id, n, "hugetlb", &huge);
  if (heap0 >= 0 && heap1 >= 0) {
    add(&heap, (double)(heap1 - heap0) / (double)n);
    emit("rss", "64", s->id, n, "heap", &heap);
  }
}

/* dmakit and glibc each in a fresh child process, forked before this process has used either
 * (or DPDK's EAL), so that nothing freed earlier is reused: the growth is theirs alone. */
static void rss_child(const subject *s)
{
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    g_mask = dkb_ram_mask();
    char why[WHY_LEN];
    if (s == &S_DMAKIT) {        /* its start-up (capabilities, the pool's first chunk) is not per buffer */
      void *w = dk_create(64, 64, why);
      if (w) dk_release(w);
    }
    if (room_for(C.rss_n)) rss_one(s, C.rss_n);
    free(g_v);
    trim();
    fflush(stdout);
    exit(0);                     /* exit, not _exit: dmakit gives back the kernel limits it raised */
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char why[WHY_LEN];
    snprintf(why, sizeof why, "the measuring child process failed (status 0x%x)", st);
    emit_fail("rss", "64", s->id, C.rss_n, "rss", why);
  }
}

/* ---- run ----------------------------------------------------------------------------------- */
static void pool_info(const char *when)
{
  dk_pool_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (dk_pool_get_stats(&st) != kIOReturnSuccess) return;
  printf("I\tpool\t%s: %llu MiB of 2 MiB pages and %llu MiB of 1 GiB pages held, %llu grows; requests: %llu pool, "
         "%llu slab, %llu 4K\n", when, (unsigned long long)(st.bytes_pool_2m >> 20),
         (unsigned long long)(st.bytes_pool_1g >> 20), (unsigned long long)st.grows,
         (unsigned long long)st.requests_pool, (unsigned long long)st.requests_slab,
         (unsigned long long)st.requests_4k);
}

static int cmd_run(int argc, char **argv)
{
  const char *mode = "full";
  bool dpdk = true;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) mode = "quick";
    else if (strcmp(argv[i], "--smoke") == 0) mode = "smoke";
    else if (strcmp(argv[i], "--no-dpdk") == 0) dpdk = false;
    else if (strcmp(argv[i], "--cases") == 0 && i + 1 < argc) g_cases = argv[++i];
    else {
      fprintf(stderr, "dkscale run: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  config_set(mode);
  uint64_t t_start = dkb_now_ns();
  if (case_on("rss")) {          /* before dmakit or the EAL has run in this process */
    rss_child(&S_DMAKIT);
    rss_child(&S_CALLOC);
  }
  double rss_s = (double)(dkb_now_ns() - t_start) / 1e9;
  printf("I\tmode\t%s\n", mode);
  printf("I\tcpus\t%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
  printf("I\tmax_bytes\t%llu\n", (unsigned long long)C.max_bytes);
  printf("I\tbudget_s\t%.0f\n", C.budget_ns / 1e9);
#ifdef DKB_HAVE_DPDK
  if (dpdk) {
    char why[WHY_LEN];
    dkb_remove_eal_files("dkbench-scale");
    if (dkb_eal_init("dkbench-scale", C.eal_mb, why) == 0) {
      g_eal = true;
      printf("I\tdpdk\t%s, EAL --legacy-mem -m %u, iova-mode pa\n", rte_version(), C.eal_mb);
    } else {
      printf("I\tdpdk\tnot measured: %s\n", why);
    }
  } else {
    printf("I\tdpdk\tnot measured: --no-dpdk\n");
  }
#else
  (void)dpdk;
  printf("I\tdpdk\tnot measured: built without DPDK\n");
#endif
  g_mask = dkb_ram_mask();
  printf("I\tmask\t0x%llx\n", (unsigned long long)g_mask);
  if (!dk_capabilities()->root) printf("I\twarning\tnot root: no physical addresses, buffers from 4K pages\n");
#ifdef DKB_HAVE_DPDK
  uint64_t t_dpdk_rss = dkb_now_ns();
  if (g_eal && case_on("rss") && room_for(C.rss_n)) rss_one(&S_DPDK, C.rss_n);   /* the heap's first use */
  rss_s += (double)(dkb_now_ns() - t_dpdk_rss) / 1e9;
#endif
  printf("I\tseconds_rss\t%.1f\n", rss_s);

  /* dmakit's first use (capability probe, pool start-up) is not part of any case */
  char why[WHY_LEN];
  void *w = dk_create(64, 64, why);
  if (!w) {
    fprintf(stderr, "dkscale: dmakit cannot create a 64-byte buffer: %s\n", why);
    printf("I\terror\tdmakit cannot create a 64-byte buffer: %s\n", why);
    return 1;
  }
  dk_release(w);
  pool_info("after warm-up");

  uint64_t t_sweep = dkb_now_ns();
  if (case_on("sweep")) {
    static const uint64_t sizes[][2] = { { 64, 64 }, { 128, 128 }, { 256, 256 }, { 512, 512 }, { 1024, 1024 },
                                          { 2048, 2048 }, { 4096, 4096 }, { 65536, 4096 }, { 1048576, 4096 } };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      if (strcmp(C.mode, "full") != 0 && sizes[i][0] != 64 && sizes[i][0] != 4096 && sizes[i][0] != 65536)
        continue;     /* quick and smoke: one small, the page, one large */
      sweep_size(sizes[i][0], sizes[i][1]);
    }
  }
  printf("I\tseconds_sweep\t%.1f\n", (double)(dkb_now_ns() - t_sweep) / 1e9);
  uint64_t t = dkb_now_ns();
  if (case_on("churn")) case_churn();
  printf("I\tseconds_churn\t%.1f\n", (double)(dkb_now_ns() - t) / 1e9), t = dkb_now_ns();
  if (case_on("threads")) case_threads();
  if (case_on("handoff")) case_handoff();
  printf("I\tseconds_threads\t%.1f\n", (double)(dkb_now_ns() - t) / 1e9), t = dkb_now_ns();
  if (case_on("mapper")) case_mapper();
  printf("I\tseconds_mapper\t%.1f\n", (double)(dkb_now_ns() - t) / 1e9);
  pool_info("at the end");
  printf("I\tseconds_total\t%.1f\n", (double)(dkb_now_ns() - t_start) / 1e9);
  free(g_v);
  trim();
#ifdef DKB_HAVE_DPDK
  if (g_eal) {
    rte_eal_cleanup();
    dkb_remove_eal_files("dkbench-scale");
  }
#endif
  return 0;
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return cmd_run(argc - 2, argv + 2);
  if (argc >= 3 && strcmp(argv[1], "report") == 0) return scale_report(argc - 2, argv + 2);
  fprintf(stderr, "usage: dkscale run [--quick | --smoke] [--no-dpdk] [--cases LIST]\n"
                  "       dkscale report FILE [--json OUT] [--svg OUT]\n");
  return 2;
}
