/* bench/bench.c: dmakit against DPDK (rte_malloc, rte_zmalloc, rte_memzone_reserve_bounded,
 * rte_malloc_virt2iova, rte_mem_virt2iova, rte_eal_init) and against plain
 * mmap+mlock+pagemap, in the same process and the same run. Not a test: scripts/bench.sh runs
 * it and docs/benchmarks.md describes the method.
 *
 *   dkbench run legacy|dynamic   EAL with --legacy-mem -m 1024, or dynamic memory, then every
 *                                case, dmakit and the others in interleaved trials
 *   dkbench startup              fresh forked processes: dmakit's first pool-backed buffer
 *                                against rte_eal_init (legacy -m 1024, and dynamic)
 *   dkbench report FILE...       the markdown tables from the result lines of the above
 *
 * Result lines on stdout are tab-separated:
 *   R <mode> <case> <subject> <median ns> <q1 ns> <q3 ns> <iterations per trial> <note>
 * with median -1 when the subject could not run (the note says why). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dmakit/dmakit.h>

#include "common.h"

#include <rte_eal.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_memzone.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TRIALS 11                 /* medians of this many trials per subject */
#define TRIAL_NS 10e6             /* target length of one trial (a loop of many iterations) */
/* ---- what a case measures ------------------------------------------------------------ */
typedef struct params {
  uint64_t size;
  uint64_t align;
  bool     contiguous;
} params;

static params   P;            /* the running case */
static uint64_t g_mask;       /* physical mask every dmakit request carries */
static int      g_pagemap = -1;
static uint64_t *g_frames;    /* pagemap entries for the mmap baseline */
static size_t   g_page;

/* One subject runs `n` iterations of what it measures; 0, or -1 with `why` filled in. */
typedef int (*op_fn)(long n, char *why);

typedef struct subject {
  const char *id;
  op_fn       op;
  long        max_n;          /* iterations per trial never exceed this (1 for 1 GiB) */
} subject;

/* ---- dmakit --------------------------------------------------------------------------- */
static dk_constraints case_constraints(void) {
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = g_mask;
  c.alignment = P.align;
  c.contiguous = P.contiguous;
  return c;
}

static int op_dmakit_create(long n, char *why) {
  dk_constraints c = case_constraints();
  for (long i = 0; i < n; i++) {
    IOBufferMemoryDescriptor *b =
        IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, P.size, &c);
    if (!b) return dkb_dk_fail(why);
    OSObject_release(b);
  }
  return 0;
}

/* The IOKit call: the mask's low zero bits are the alignment (REFERENCE.md §2). */
static int op_dmakit_physmask(long n, char *why) {
  mach_vm_address_t mask = g_mask & ~(mach_vm_address_t)(P.align - 1);
  for (long i = 0; i < n; i++) {
    IOBufferMemoryDescriptor *b =
        IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, P.size, mask);
    if (!b) return dkb_dk_fail(why);
    OSObject_release(b);
  }
  return 0;
}

/* The zeroing every release of this size pays (dmakit zeroes a buffer's memory when it is
 * released, DPDK's rte_free zeroes what it frees): memset of a warm buffer of the case's size,
 * a reference for what is left of each create+release once the allocator's work is gone. */
static uint8_t *g_zero_ref;
static int op_memset_ref(long n, char *why) {
  if (!g_zero_ref && !(g_zero_ref = aligned_alloc(4096, 2 * MiB))) return dkb_fail(why, "no memory for the reference buffer");
  if (P.size > 2 * MiB) return dkb_fail(why, "reference buffer is 2 MiB");
  for (long i = 0; i < n; i++) {
    memset(g_zero_ref, 0, P.size);
    __asm__ volatile("" : : "r"(g_zero_ref) : "memory");
  }
  return 0;
}

/* ---- DPDK ----------------------------------------------------------------------------- */
static int op_rte_zmalloc(long n, char *why) {
  for (long i = 0; i < n; i++) {
    void *p = rte_zmalloc(NULL, P.size, (unsigned)P.align);
    if (!p) return dkb_rte_malloc_fail(why, "rte_zmalloc");
    rte_free(p);
  }
  return 0;
}

static int op_rte_malloc(long n, char *why) {
  for (long i = 0; i < n; i++) {
    void *p = rte_malloc(NULL, P.size, (unsigned)P.align);
    if (!p) return dkb_rte_malloc_fail(why, "rte_malloc");
    rte_free(p);
  }
  return 0;
}

static int op_rte_memzone(long n, char *why) {
  unsigned flags = P.contiguous ? RTE_MEMZONE_IOVA_CONTIG : 0;
  for (long i = 0; i < n; i++) {
    const struct rte_memzone *mz = rte_memzone_reserve_bounded(
        "dkbench_mz", P.size, SOCKET_ID_ANY, flags, (unsigned)P.align, 0);
    if (!mz) return dkb_rte_fail(why, "rte_memzone_reserve_bounded");
    rte_memzone_free(mz);
  }
  return 0;
}

/* ---- mmap + mlock + pagemap ------------------------------------------------------------ */
static void *mmap_locked(uint64_t len, char *why) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
  if (p == MAP_FAILED) {
    dkb_fail(why, "mmap: %s", strerror(errno));
    return NULL;
  }
  if (mlock(p, len) != 0) {
    dkb_fail(why, "mlock: %s", strerror(errno));
    munmap(p, len);
    return NULL;
  }
  size_t pages = (len + g_page - 1) / g_page;
  ssize_t want = (ssize_t)(pages * sizeof(uint64_t));
  if (pread(g_pagemap, g_frames, (size_t)want, (off_t)((uintptr_t)p / g_page * 8)) != want) {
    dkb_fail(why, "pread /proc/self/pagemap: %s", strerror(errno));
    munmap(p, len);
    return NULL;
  }
  dkb_sink += g_frames[0] & ((1ull << 55) - 1);
  return p;
}

static int op_mmap(long n, char *why) {
  uint64_t len = (P.size + g_page - 1) / g_page * g_page;
  for (long i = 0; i < n; i++) {
    void *p = mmap_locked(len, why);
    if (!p) return -1;
    munmap(p, len);
  }
  return 0;
}

/* ---- segment translation -------------------------------------------------------------- */
#define SEG_LEN (64 * KiB)
static IOBufferMemoryDescriptor *g_seg_md;
static void *g_seg_rte;       /* rte_malloc'ed */
static void *g_seg_mmap;      /* mmap'ed, locked */

/* Offsets walk the buffer in steps of a page plus a cache line, wrapping. */
#define SEG_OFF(i) (((uint64_t)(i) * 4160u) & (SEG_LEN - 1))

static int op_seg_dmakit(long n, char *why) {
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)g_seg_md;
  uint64_t acc = 0;
  for (long i = 0; i < n; i++) {
    IOByteCount len;
    acc += IOMemoryDescriptor_getPhysicalSegment(md, SEG_OFF(i), &len, 0) + len;
  }
  if (acc == 0) return dkb_fail(why, "getPhysicalSegment returned 0");
  dkb_sink += acc;
  return 0;
}

/* rte_malloc_virt2iova takes the start of an rte_malloc element; a caller adds the offset. */
static int op_seg_malloc_virt2iova(long n, char *why) {
  uint64_t acc = 0;
  for (long i = 0; i < n; i++) {
    rte_iova_t iova = rte_malloc_virt2iova(g_seg_rte);
    if (iova == RTE_BAD_IOVA) return dkb_fail(why, "rte_malloc_virt2iova: RTE_BAD_IOVA");
    acc += iova + SEG_OFF(i);
  }
  dkb_sink += acc;
  return 0;
}

static int op_seg_mem_virt2iova(long n, char *why) {
  uint64_t acc = 0;
  for (long i = 0; i < n; i++) {
    rte_iova_t iova = rte_mem_virt2iova((char *)g_seg_rte + SEG_OFF(i));
    if (iova == RTE_BAD_IOVA) return dkb_fail(why, "rte_mem_virt2iova: RTE_BAD_IOVA");
    acc += iova;
  }
  dkb_sink += acc;
  return 0;
}

static int op_seg_pagemap(long n, char *why) {
  uint64_t acc = 0;
  for (long i = 0; i < n; i++) {
    uintptr_t va = (uintptr_t)g_seg_mmap + SEG_OFF(i);
    uint64_t e;
    if (pread(g_pagemap, &e, 8, (off_t)(va / g_page * 8)) != 8)
      return dkb_fail(why, "pread /proc/self/pagemap: %s", strerror(errno));
    acc += (e & ((1ull << 55) - 1)) * g_page + (va & (g_page - 1));
  }
  dkb_sink += acc;
  return 0;
}

/* ---- 1 GiB zeroed ---------------------------------------------------------------------- */
#define ZERO_LEN (1 * GiB)
static void *g_memset_buf;    /* already faulted, for the memset bandwidth */

static void touch_pages(volatile char *p, uint64_t len) {
  for (uint64_t off = 0; off < len; off += 4096) p[off] = 1;
}

static int op_zero_dmakit(long n, char *why) {
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = g_mask;
  c.alignment = 4096;
  for (long i = 0; i < n; i++) {
    IOBufferMemoryDescriptor *b =
        IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, ZERO_LEN, &c);
    if (!b) return dkb_dk_fail(why);
    char *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    if (!p) {
      OSObject_release(b);
      return dkb_fail(why, "getBytesNoCopy returned NULL");
    }
    touch_pages(p, ZERO_LEN);
    OSObject_release(b);
  }
  return 0;
}

static int op_zero_memset(long n, char *why) {
  (void)why;
  for (long i = 0; i < n; i++) {
    memset(g_memset_buf, 0, ZERO_LEN);
    __asm__ volatile("" ::: "memory");
  }
  return 0;
}

static int op_zero_rte_zmalloc(long n, char *why) {
  for (long i = 0; i < n; i++) {
    char *p = rte_zmalloc(NULL, ZERO_LEN, 4096);
    if (!p) return dkb_rte_malloc_fail(why, "rte_zmalloc(1 GiB)");
    touch_pages(p, ZERO_LEN);
    rte_free(p);
  }
  return 0;
}

static int op_zero_mmap(long n, char *why) {
  for (long i = 0; i < n; i++) {
    char *p = mmap_locked(ZERO_LEN, why);
    if (!p) return -1;
    touch_pages(p, ZERO_LEN);
    munmap(p, ZERO_LEN);
  }
  return 0;
}

/* ---- the measuring loop ---------------------------------------------------------------- */
static const char *g_mode = "?";

static void emit(const char *case_id, const char *subj, double med, double q1, double q3, long n,
                 const char *note) {
  printf("R\t%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%ld\t%s\n", g_mode, case_id, subj, med, q1, q3, n,
         note ? note : "");
  fflush(stdout);
}

/* Time n iterations of one subject: ns per iteration, or -1. */
static double time_op(const subject *s, long n, char *why) {
  uint64_t t0 = dkb_now_ns();
  if (s->op(n, why) != 0) return -1;
  return (double)(dkb_now_ns() - t0) / (double)n;
}

/* Every subject gets a warm-up (which also tells whether it can run at all) and an iteration
 * count that makes one trial last about TRIAL_NS. Then TRIALS rounds: each round runs every
 * subject once, in order A B C ... on even rounds and ... C B A on odd ones, so that drift
 * over the run falls on every subject alike. */
static void measure(const char *case_id, const subject *subs, int k) {
  long n[16];
  double t[16][TRIALS];
  char why[16][WHY_LEN];
  bool ok[16];
  for (int j = 0; j < k; j++) {
    why[j][0] = 0;
    ok[j] = time_op(&subs[j], 1, why[j]) >= 0;
    n[j] = 1;
    if (!ok[j]) continue;
    /* grow n until a run is long enough to extrapolate from */
    for (;;) {
      double per = time_op(&subs[j], n[j], why[j]);
      if (per < 0) { ok[j] = false; break; }
      double total = per * (double)n[j];
      if (total >= TRIAL_NS / 8 || n[j] >= subs[j].max_n) {
        double want = TRIAL_NS / per;
        n[j] = want < 1 ? 1 : want > (double)subs[j].max_n ? subs[j].max_n : (long)want;
        break;
      }
      n[j] *= 4;
      if (n[j] > subs[j].max_n) n[j] = subs[j].max_n;
    }
  }
  for (int r = 0; r < TRIALS; r++) {
    for (int q = 0; q < k; q++) {
      int j = (r & 1) ? k - 1 - q : q;
      if (!ok[j]) continue;
      t[j][r] = time_op(&subs[j], n[j], why[j]);
      if (t[j][r] < 0) ok[j] = false;
    }
  }
  for (int j = 0; j < k; j++) {
    if (!ok[j]) {
      emit(case_id, subs[j].id, -1, -1, -1, 0, why[j][0] ? why[j] : "failed");
      continue;
    }
    qsort(t[j], TRIALS, sizeof(double), dkb_cmp_double);
    emit(case_id, subs[j].id, dkb_quantile(t[j], TRIALS, 0.5), dkb_quantile(t[j], TRIALS, 0.25),
         dkb_quantile(t[j], TRIALS, 0.75), n[j], NULL);
  }
}

/* ---- set-up and the cases ------------------------------------------------------------- */
static int setup_common(void) {
  g_page = (size_t)sysconf(_SC_PAGESIZE);
  g_pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (g_pagemap < 0) {
    fprintf(stderr, "dkbench: /proc/self/pagemap: %s\n", strerror(errno));
    return -1;
  }
  g_frames = malloc(ZERO_LEN / 4096 * sizeof(uint64_t));
  if (!g_frames) return -1;
  g_mask = dkb_ram_mask();
  return 0;
}

static void case_create(const char *case_id, uint64_t size, uint64_t align) {
  P = (params){ size, align, false };
  const subject subs[] = {
    { "dmakit", op_dmakit_create, 1 << 22 },
    { "dmakit_physmask", op_dmakit_physmask, 1 << 22 },
    { "rte_zmalloc", op_rte_zmalloc, 1 << 22 },
    { "rte_malloc", op_rte_malloc, 1 << 22 },
    { "rte_memzone", op_rte_memzone, 1 << 22 },
    { "mmap", op_mmap, 1 << 22 },
    { "memset_ref", op_memset_ref, 1 << 22 },
  };
  measure(case_id, subs, (int)(sizeof subs / sizeof subs[0]));
}

static void case_contig16m(void) {
  P = (params){ 16 * MiB, 4096, true };
  const subject subs[] = {
    { "dmakit", op_dmakit_create, 1 << 16 },
    { "rte_memzone", op_rte_memzone, 1 << 16 },
    { "mmap", op_mmap, 1 << 16 },
  };
  measure("contig16m", subs, 3);
}

static void case_segment(void) {
  char why[WHY_LEN];
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = g_mask;
  c.alignment = 4096;
  g_seg_md = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut,
                                                           SEG_LEN, &c);
  if (!g_seg_md) dkb_dk_fail(why);
  g_seg_rte = rte_malloc(NULL, SEG_LEN, 4096);
  g_seg_mmap = mmap_locked(SEG_LEN, why);
  subject subs[4];
  int k = 0;
  if (g_seg_md) subs[k++] = (subject){ "dmakit", op_seg_dmakit, 1l << 30 };
  else emit("seg", "dmakit", -1, -1, -1, 0, why);
  if (g_seg_rte) {
    subs[k++] = (subject){ "rte_malloc_virt2iova", op_seg_malloc_virt2iova, 1l << 30 };
    subs[k++] = (subject){ "rte_mem_virt2iova", op_seg_mem_virt2iova, 1l << 30 };
  } else {
    dkb_rte_malloc_fail(why, "rte_malloc(64 KiB)");
    emit("seg", "rte_malloc_virt2iova", -1, -1, -1, 0, why);
    emit("seg", "rte_mem_virt2iova", -1, -1, -1, 0, why);
  }
  if (g_seg_mmap) subs[k++] = (subject){ "pagemap", op_seg_pagemap, 1l << 30 };
  measure("seg", subs, k);
  OSSafeReleaseNULL(g_seg_md);
  rte_free(g_seg_rte);
  if (g_seg_mmap) munmap(g_seg_mmap, SEG_LEN);
}

static void case_zero1g(void) {
  g_memset_buf = mmap(NULL, ZERO_LEN, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (g_memset_buf == MAP_FAILED) {
    emit("zero1g", "memset", -1, -1, -1, 0, "mmap of the memset buffer failed");
    g_memset_buf = NULL;
  }
  subject subs[4];
  int k = 0;
  subs[k++] = (subject){ "dmakit", op_zero_dmakit, 1 };
  if (g_memset_buf) subs[k++] = (subject){ "memset", op_zero_memset, 1 };
  subs[k++] = (subject){ "rte_zmalloc", op_zero_rte_zmalloc, 1 };
  subs[k++] = (subject){ "mmap", op_zero_mmap, 1 };
  measure("zero1g", subs, k);
  if (g_memset_buf) munmap(g_memset_buf, ZERO_LEN);
}

/* What the pool held, as an I line for the report. */
static void pool_info(const char *when) {
#ifdef DKB_HAVE_POOL
  dk_pool_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (dk_pool_get_stats(&st) != kIOReturnSuccess) return;
  printf("I\t%s\tpool\t%s: pool holds %llu MiB of 2 MiB pages and %llu MiB of 1 GiB pages in %llu "
         "runs (largest %llu MiB), %llu grows; requests: %llu pool, %llu slab, %llu 4K\n",
         g_mode, when, (unsigned long long)(st.bytes_pool_2m >> 20),
         (unsigned long long)(st.bytes_pool_1g >> 20), (unsigned long long)st.runs,
         (unsigned long long)(st.largest_run >> 20), (unsigned long long)st.grows,
         (unsigned long long)st.requests_pool, (unsigned long long)st.requests_slab,
         (unsigned long long)st.requests_4k);
#else
  printf("I\t%s\tpool\t%s: this dmakit has no hugepage pool (4K provider only)\n", g_mode, when);
#endif
}

static int cmd_run(const char *mode) {
  bool legacy;
  if (strcmp(mode, "legacy") == 0) legacy = true;
  else if (strcmp(mode, "dynamic") == 0) legacy = false;
  else {
    fprintf(stderr, "dkbench run: mode is legacy or dynamic\n");
    return 2;
  }
  g_mode = mode;
  char why[WHY_LEN];
  dkb_remove_eal_files("dkbench");
  uint64_t t0 = dkb_now_ns();
  if (dkb_eal_init("dkbench", legacy ? 1024 : 0, why) != 0) {
    fprintf(stderr, "dkbench: %s\n", why);
    emit("eal", "rte_eal_init", -1, -1, -1, 0, why);
    return 1;
  }
  double eal_ns = (double)(dkb_now_ns() - t0);
  emit("eal", "rte_eal_init", eal_ns, eal_ns, eal_ns, 1, "in the measuring process, once");
  if (setup_common() != 0) return 1;
  printf("I\t%s\tmask\t0x%llx\n", mode, (unsigned long long)g_mask);

  /* dmakit's own first use (capability probe, pool) is the start-up case, not these. */
  P = (params){ 4096, 4096, false };
  if (op_dmakit_create(1, why) != 0) fprintf(stderr, "dkbench: dmakit warm-up: %s\n", why);
  P = (params){ 2 * MiB, 4096, true };
  if (op_dmakit_create(1, why) != 0) fprintf(stderr, "dkbench: dmakit 2 MiB contiguous: %s\n", why);

  pool_info("after warm-up");
  case_create("c64", 64, 64);
  case_create("c4k", 4 * KiB, 4096);
  case_create("c64k", 64 * KiB, 4096);
  case_create("c2m", 2 * MiB, 4096);
  case_contig16m();
  case_segment();
  case_zero1g();
  pool_info("at the end");
#ifdef DKB_HAVE_POOL
  dk_pool_trim();
#endif
  rte_eal_cleanup();
  dkb_remove_eal_files("dkbench");
  return 0;
}

/* ---- start-up, each in a fresh forked process -------------------------------------------- */
enum { ST_DMAKIT_POOL, ST_DMAKIT_FIRST2M, ST_DMAKIT_FIRST4K, ST_EAL_LEGACY, ST_EAL_DYNAMIC,
       ST__COUNT };
static const char *const st_id[ST__COUNT] = { "dmakit_pool", "dmakit_first2m", "dmakit_first4k",
                                              "eal_legacy", "eal_dynamic" };

/* The hugepage counts as the run found them: every start-up trial begins from these (dmakit's
 * pool raises the kernel's limits and gives them back at exit; DPDK's legacy init maps every
 * free hugepage, so its time depends on how many there are). */
#define HP_FILES 4
static const char *const hp_file[HP_FILES] = {
  "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
  "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages",
  "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
  "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_overcommit_hugepages",
};
static long g_hp_saved[HP_FILES];

static long hp_read(const char *path) {
  FILE *f = fopen(path, "r");
  long v = -1;
  if (!f) return -1;
  if (fscanf(f, "%ld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

static void hp_save(void) {
  for (int i = 0; i < HP_FILES; i++) g_hp_saved[i] = hp_read(hp_file[i]);
}

static void hp_restore(void) {
  for (int i = 0; i < HP_FILES; i++) {
    if (g_hp_saved[i] < 0 || hp_read(hp_file[i]) == g_hp_saved[i]) continue;
    FILE *f = fopen(hp_file[i], "w");
    if (!f) continue;
    fprintf(f, "%ld\n", g_hp_saved[i]);
    fclose(f);
  }
}

static IOBufferMemoryDescriptor *first_buffer(uint64_t size, bool contiguous) {
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.contiguous = contiguous;
  c.alignment = 4096;
  return IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, size, &c);
}

/* In the child: the measured step, its ns (or -1) and a reason written to fd. */
static void startup_child(int which, int fd) {
  char why[WHY_LEN] = "";
  double ns = -1;
  uint64_t t0 = dkb_now_ns();
  switch (which) {
  case ST_DMAKIT_POOL:
#ifdef DKB_HAVE_POOL
    /* The pool's own start-up call: 1 GiB of 2 MiB pages, ready before the first buffer. */
    if (dk_pool_reserve(1 * GiB, 2 * MiB) == kIOReturnSuccess) ns = (double)(dkb_now_ns() - t0);
    else dkb_dk_fail(why);
    break;
#endif
    /* FALLTHROUGH: no dk_pool_reserve in this dmakit; its first pool buffer stands in */
  case ST_DMAKIT_FIRST2M:
  case ST_DMAKIT_FIRST4K: {
    IOBufferMemoryDescriptor *b = which == ST_DMAKIT_FIRST4K ? first_buffer(4096, false)
                                                             : first_buffer(2 * MiB, true);
    if (b) {
      ns = (double)(dkb_now_ns() - t0);
      OSObject_release(b);
    } else {
      dkb_dk_fail(why);
    }
    break;
  }
  case ST_EAL_LEGACY:
  case ST_EAL_DYNAMIC:
    if (dkb_eal_init("dkbench", which == ST_EAL_LEGACY ? 1024 : 0, why) == 0) {
      ns = (double)(dkb_now_ns() - t0);
      rte_eal_cleanup();
    }
    break;
  }
  char msg[WHY_LEN + 64];
  int len = snprintf(msg, sizeof msg, "%.0f\t%s", ns, why);
  if (write(fd, msg, (size_t)len) != len) _exit(3);
  if (which == ST_EAL_LEGACY || which == ST_EAL_DYNAMIC) _exit(0);
#ifdef DKB_HAVE_POOL
  dk_pool_trim();
#endif
  exit(0);   /* dmakit gives back the hugepage limits it raised at exit */
}

static double startup_once(int which, char *why) {
  int pfd[2];
  if (pipe(pfd) != 0) return dkb_fail(why, "pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return dkb_fail(why, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(pfd[0]);
    startup_child(which, pfd[1]);
  }
  close(pfd[1]);
  char msg[WHY_LEN + 64];
  ssize_t got = 0, r;
  while ((r = read(pfd[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0) got += r;
  close(pfd[0]);
  msg[got < 0 ? 0 : got] = 0;
  int st = 0;
  waitpid(pid, &st, 0);
  dkb_remove_eal_files("dkbench");
  hp_restore();
  if (got <= 0) return dkb_fail(why, "child died (status 0x%x)", st);
  char *tab = strchr(msg, '\t');
  double ns = strtod(msg, NULL);
  if (ns < 0) {
    snprintf(why, WHY_LEN, "%s", tab ? tab + 1 : "failed");
    dkb_clean_reason(why);
    return -1;
  }
  return ns;
}

static int cmd_startup(void) {
  g_mode = "startup";
  double t[ST__COUNT][TRIALS];
  char why[ST__COUNT][WHY_LEN];
  bool ok[ST__COUNT];
  dkb_remove_eal_files("dkbench");
  hp_save();
  for (int j = 0; j < ST__COUNT; j++) ok[j] = true, why[j][0] = 0;
#ifndef DKB_HAVE_POOL
  ok[ST_DMAKIT_FIRST2M] = false;   /* the same thing as dmakit_pool then */
  snprintf(why[ST_DMAKIT_FIRST2M], WHY_LEN, "same as the pool start-up row (no dk_pool_reserve)");
#endif
  for (int r = 0; r < TRIALS; r++) {
    for (int q = 0; q < ST__COUNT; q++) {
      int j = (r & 1) ? ST__COUNT - 1 - q : q;
      if (!ok[j]) continue;
      t[j][r] = startup_once(j, why[j]);
      if (t[j][r] < 0) ok[j] = false;
    }
  }
  for (int j = 0; j < ST__COUNT; j++) {
    if (!ok[j]) {
      emit("startup", st_id[j], -1, -1, -1, 0, why[j]);
      continue;
    }
    qsort(t[j], TRIALS, sizeof(double), dkb_cmp_double);
    emit("startup", st_id[j], dkb_quantile(t[j], TRIALS, 0.5), dkb_quantile(t[j], TRIALS, 0.25),
         dkb_quantile(t[j], TRIALS, 0.75), 1, "fresh process per trial");
  }
  return 0;
}

/* ---- report ------------------------------------------------------------------------------ */
typedef struct row {
  char mode[16], case_id[16], subj[32], note[WHY_LEN];
  double med, q1, q3;
  long n;
} row;

static row g_rows[256];
static int g_nrows;
static char g_mask_text[64];
static char g_info[8][400];
static int g_ninfo;

static void load(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "dkbench report: %s: %s\n", path, strerror(errno));
    return;
  }
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *fld[9] = { 0 };
    int nf = 0;
    char *save = NULL;
    for (char *s = strtok_r(line, "\t", &save); s && nf < 9; s = strtok_r(NULL, "\t", &save))
      fld[nf++] = s;
    if (nf >= 4 && strcmp(fld[0], "I") == 0 && strcmp(fld[2], "mask") == 0)
      snprintf(g_mask_text, sizeof g_mask_text, "%s", fld[3]);
    if (nf >= 4 && strcmp(fld[0], "I") == 0 && strcmp(fld[2], "pool") == 0 && g_ninfo < 8)
      snprintf(g_info[g_ninfo++], sizeof g_info[0], "%s: %s", fld[1], fld[3]);
    if (nf < 8 || strcmp(fld[0], "R") != 0 || g_nrows == 256) continue;
    row *r = &g_rows[g_nrows++];
    snprintf(r->mode, sizeof r->mode, "%s", fld[1]);
    snprintf(r->case_id, sizeof r->case_id, "%s", fld[2]);
    snprintf(r->subj, sizeof r->subj, "%s", fld[3]);
    r->med = strtod(fld[4], NULL);
    r->q1 = strtod(fld[5], NULL);
    r->q3 = strtod(fld[6], NULL);
    r->n = strtol(fld[7], NULL, 10);
    snprintf(r->note, sizeof r->note, "%s", nf > 8 ? fld[8] : "");
  }
  fclose(f);
}

static const row *find(const char *mode, const char *case_id, const char *subj) {
  for (int i = 0; i < g_nrows; i++)
    if (strcmp(g_rows[i].mode, mode) == 0 && strcmp(g_rows[i].case_id, case_id) == 0 &&
        strcmp(g_rows[i].subj, subj) == 0)
      return &g_rows[i];
  return NULL;
}

static const char *case_title(const char *id) {
  static const struct { const char *id, *title; } t[] = {
    { "c64", "create+release 64 B, align 64, mask" },
    { "c4k", "create+release 4 KiB, align 4 KiB, mask" },
    { "c64k", "create+release 64 KiB, align 4 KiB, mask" },
    { "c2m", "create+release 2 MiB, align 4 KiB, mask" },
    { "contig16m", "create+release 16 MiB physically contiguous" },
    { "seg", "physical address of one offset (64 KiB buffer)" },
    { "zero1g", "1 GiB zeroed: create, touch every 4 KiB page, release" },
    { "startup", "start-up (fresh process each trial)" },
    { "eal", "EAL init in the measuring process (once)" },
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(t[i].id, id) == 0) return t[i].title;
  return id;
}

static const char *subj_title(const char *case_id, const char *id) {
  bool zero = strcmp(case_id, "zero1g") == 0;
  static const struct { const char *id, *title; } t[] = {
    { "dmakit_physmask", "dmakit inTaskWithPhysicalMask (mask's low zero bits = alignment)" },
    { "rte_zmalloc", "DPDK rte_zmalloc + rte_free" },
    { "rte_malloc", "DPDK rte_malloc + rte_free" },
    { "rte_memzone", "DPDK rte_memzone_reserve_bounded + rte_memzone_free" },
    { "rte_malloc_virt2iova", "DPDK rte_malloc_virt2iova(start) + offset" },
    { "rte_mem_virt2iova", "DPDK rte_mem_virt2iova" },
    { "pagemap", "pread of /proc/self/pagemap (fd kept open)" },
    { "memset", "memset of an already-faulted 1 GiB buffer" },
    { "memset_ref", "reference: memset of this size in a warm buffer (the zeroing any release pays)" },
#ifdef DKB_HAVE_POOL
    { "dmakit_pool", "dmakit: dk_pool_reserve(1 GiB, 2 MiB) (pool start-up)" },
#else
    { "dmakit_pool", "dmakit: first 2 MiB contiguous buffer (pool start-up)" },
#endif
    { "dmakit_first2m", "dmakit: first 2 MiB contiguous buffer" },
    { "dmakit_first4k", "dmakit: first 4 KiB buffer (capability probe + 4K provider)" },
    { "eal_legacy", "DPDK rte_eal_init --legacy-mem -m 1024" },
    { "eal_dynamic", "DPDK rte_eal_init, dynamic memory" },
    { "rte_eal_init", "DPDK rte_eal_init" },
  };
  if (strcmp(id, "dmakit") == 0)
    return strcmp(case_id, "seg") == 0 ? "dmakit getPhysicalSegment"
           : zero ? "dmakit inTaskWithConstraints + touch + release"
                  : "dmakit inTaskWithConstraints";
  if (strcmp(id, "mmap") == 0)
    return zero ? "mmap(MAP_POPULATE) + mlock + pagemap + touch + munmap"
                : "mmap(MAP_POPULATE) + mlock + pagemap + munmap";
  if (zero && strcmp(id, "rte_zmalloc") == 0) return "DPDK rte_zmalloc + touch + rte_free";
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strcmp(t[i].id, id) == 0) return t[i].title;
  return id;
}

static void print_case(const char *mode, const char *case_id) {
  bool startup = strcmp(case_id, "startup") == 0;
  const row *base = find(mode, case_id, startup ? "dmakit_pool" : "dmakit");
  const char *base_name = "dmakit";
  if (startup && (!base || base->med < 0)) {  /* no pool yet: compare the first 4 KiB buffer */
    base = find(mode, case_id, "dmakit_first4k");
    base_name = "dmakit first 4 KiB buffer";
  }
  bool any = false;
  for (int i = 0; i < g_nrows; i++) {
    const row *r = &g_rows[i];
    if (strcmp(r->mode, mode) != 0 || strcmp(r->case_id, case_id) != 0) continue;
    char a[32], b[32], c[32], ratio[48] = "", gbs[32] = "";
    if (!any) {
      printf("| %s | median | p25 - p75 | %s / this |\n", case_title(case_id), base_name);
      printf("|---|---:|---:|---:|\n");
      any = true;
    }
    if (r->med < 0) {
      printf("| %s | n/a (%s) | | |\n", subj_title(case_id, r->subj), r->note);
      continue;
    }
    if (base && base->med > 0 && r != base) snprintf(ratio, sizeof ratio, "%.3g", base->med / r->med);
    if (strcmp(case_id, "zero1g") == 0)
      snprintf(gbs, sizeof gbs, " (%.1f GB/s)", (double)ZERO_LEN / r->med);
    printf("| %s | %s%s | %s - %s | %s |\n", subj_title(case_id, r->subj),
           dkb_fmt_ns(r->med, a, sizeof a), gbs, dkb_fmt_ns(r->q1, b, sizeof b), dkb_fmt_ns(r->q3, c, sizeof c),
           ratio);
  }
  if (any) printf("\n");
}

/* One target line: measured value and whether it is met. */
static void target(const char *what, const char *mode, const row *d, const row *o, double limit,
                   bool ratio_of_time, const char *unit_note) {
  char a[32], b[32];
  if (!d || !o || d->med < 0 || o->med < 0) {
    const row *bad = (!d || d->med < 0) ? d : o;
    printf("| %s | %s | n/a%s%s%s | not measured |\n", what, mode, bad ? " (" : "",
           bad ? bad->note : "", bad ? ")" : "");
    return;
  }
  double v = ratio_of_time ? d->med / o->med : o->med / d->med;
  printf("| %s | %s | %s vs %s = **%.3g**%s | %s |\n", what, mode, dkb_fmt_ns(d->med, a, sizeof a),
         dkb_fmt_ns(o->med, b, sizeof b), v, unit_note,
         (ratio_of_time ? v <= limit : v >= limit) ? "yes" : "**no**");
}

static int cmd_report(int argc, char **argv) {
  for (int i = 0; i < argc; i++) load(argv[i]);
  static const char *const modes[] = { "legacy", "dynamic" };
  printf("### Targets\n\n");
  printf("| target | EAL mode | measured (dmakit vs other = ratio) | met |\n|---|---|---|---|\n");
  for (int m = 0; m < 2; m++) {
    const char *mo = modes[m];
    if (m == 0) {
      target("create+release 64 B: dmakit <= 0.5 x rte_zmalloc+free", mo, find(mo, "c64", "dmakit"),
             find(mo, "c64", "rte_zmalloc"), 0.5, true, "");
      target("create+release 4 KiB: dmakit <= 0.5 x rte_zmalloc+free", mo, find(mo, "c4k", "dmakit"),
             find(mo, "c4k", "rte_zmalloc"), 0.5, true, "");
    }
    target("create+release 64 B: dmakit <= 0.1 x memzone reserve+free", mo,
           find(mo, "c64", "dmakit"), find(mo, "c64", "rte_memzone"), 0.1, true, "");
    target("create+release 4 KiB: dmakit <= 0.1 x memzone reserve+free", mo,
           find(mo, "c4k", "dmakit"), find(mo, "c4k", "rte_memzone"), 0.1, true, "");
    const row *seg = find(mo, "seg", "dmakit");
    if (seg && seg->med >= 0)
      printf("| getPhysicalSegment < 5 ns | %s | **%.2f ns** | %s |\n", mo, seg->med,
             seg->med < 5 ? "yes" : "**no**");
    else
      printf("| getPhysicalSegment < 5 ns | %s | n/a (%s) | not measured |\n", mo,
             seg ? seg->note : "missing");
    target("1 GiB zeroed: dmakit bandwidth >= 0.7 x memset", mo, find(mo, "zero1g", "dmakit"),
           find(mo, "zero1g", "memset"), 0.7, false, " of memset bandwidth");
    target("1 GiB zeroed: dmakit no slower than rte_zmalloc", mo, find(mo, "zero1g", "dmakit"),
           find(mo, "zero1g", "rte_zmalloc"), 1.0, true, "");
    target("16 MiB contiguous: dmakit no slower than memzone", mo, find(mo, "contig16m", "dmakit"),
           find(mo, "contig16m", "rte_memzone"), 1.0, true, "");
  }
  target("pool start-up: dmakit <= 0.2 x EAL init --legacy-mem -m 1024", "own process",
         find("startup", "startup", "dmakit_pool"), find("startup", "startup", "eal_legacy"), 0.2,
         true, "");
  printf("\nRatios are dmakit's median time over the other's (below 1: dmakit is faster), except "
         "the memset line, which is dmakit's bandwidth over memset's.\n");
  /* the floor under a zeroing create+release: what zeroing the bytes alone costs */
  for (int m = 0; m < 2; m++) {
    const row *z = find(modes[m], "c4k", "memset_ref"), *mz = find(modes[m], "c4k", "rte_memzone");
    const row *d = find(modes[m], "c4k", "dmakit");
    char a[32], b[32], c[32];
    if (z && mz && d && z->med > 0 && mz->med > 0 && d->med > 0)
      printf("EAL %s: zeroing 4 KiB alone (memset of a warm buffer) took %s, %.3g of a memzone reserve+free "
             "(%s); dmakit's 4 KiB create+release (%s) is that zeroing plus %.3g of a memzone.\n",
             modes[m], dkb_fmt_ns(z->med, a, sizeof a), z->med / mz->med, dkb_fmt_ns(mz->med, b, sizeof b),
             dkb_fmt_ns(d->med, c, sizeof c), (d->med - z->med) / mz->med);
  }
  if (g_mask_text[0])
    printf("Every dmakit request carries the physical mask %s (all of this machine's RAM).\n",
           g_mask_text);
  for (int i = 0; i < g_ninfo; i++) printf("%sdmakit pool, EAL %s.\n", i ? "" : "\n", g_info[i]);
  printf("\n");
  for (int m = 0; m < 2; m++) {
    printf("### EAL %s memory (%s)\n\n", modes[m],
           m == 0 ? "`--legacy-mem -m 1024`" : "dynamic, the default");
    static const char *const cases[] = { "c64", "c4k", "c64k", "c2m", "contig16m", "seg", "zero1g" };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) print_case(modes[m], cases[c]);
  }
  printf("### Start-up\n\n");
  print_case("startup", "startup");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && strcmp(argv[1], "run") == 0) return cmd_run(argv[2]);
  /* no dmakit call in the parent: each child's first call is the one measured */
  if (argc >= 2 && strcmp(argv[1], "startup") == 0) return cmd_startup();
  if (argc >= 3 && strcmp(argv[1], "report") == 0) return cmd_report(argc - 2, argv + 2);
  fprintf(stderr, "usage: dkbench run legacy|dynamic | dkbench startup | dkbench report FILE...\n");
  return 2;
}
