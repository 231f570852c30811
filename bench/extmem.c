/* bench/extmem.c: registering memory the program already has, for DMA, in the same run:
 *   dmakit  IOMemoryDescriptor_withAddressRange + prepare (long-term pin of every page, the
 *           frames read in one batched pagemap read; physical segments ready), then complete +
 *           release (the pin given back);
 *   DPDK    rte_extmem_register of the same memory with the IOVA of every page, which in PA
 *           mode the application must find first (rte_mem_virt2iova per page, DPDK's own way),
 *           then rte_extmem_unregister; and rte_extmem_register alone without IOVAs (what
 *           registration costs when an IOMMU maps later). rte_dev_dma_map needs a device bound
 *           to VFIO, which this host does not have: it is reported as not measured.
 * Memory: `--size` MiB (default 1024) of anonymous memory, populated before any trial. Each
 * subject runs `--repeats` trials (default 7) in interleaved order; medians and quartiles of
 * the time to register (and prepare) and of the time to give it back are printed, with the
 * ratio DPDK / dmakit. Not a test: scripts/bench.sh runs it, docs/benchmarks.md describes it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dmakit/dmakit.h>

#include "common.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_memory.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *g_buf;
static size_t g_len, g_page;
static rte_iova_t *g_iova;

typedef struct sample { double reg, unreg; } sample;

static int run_dmakit(sample *s, char *why)
{
  uint64_t t0 = dkb_now_ns();
  IOMemoryDescriptor *md = IOMemoryDescriptor_withAddressRange((uintptr_t)g_buf, g_len, kIODirectionInOut, kernel_task);
  if (!md) return dkb_dk_fail(why);
  IOReturn rc = IOMemoryDescriptor_prepare(md, kIODirectionNone);
  uint64_t t1 = dkb_now_ns();
  if (rc != kIOReturnSuccess) {
    dkb_dk_fail(why);
    OSObject_release(md);
    return -1;
  }
  /* the bus address of the last byte: the registration is usable */
  IOByteCount l = 0;
  dkb_sink += IOMemoryDescriptor_getPhysicalSegment(md, g_len - 1, &l, 0);
  uint64_t t2 = dkb_now_ns();
  IOMemoryDescriptor_complete(md, kIODirectionNone);
  OSObject_release(md);
  uint64_t t3 = dkb_now_ns();
  s->reg = (double)(t1 - t0);
  s->unreg = (double)(t3 - t2);
  return 0;
}

/* rte_extmem_register of the memory with `iova` (NULL: none), then rte_extmem_unregister; the
 * time to register adds to what the caller spent since t0. */
static int dpdk_register(sample *s, uint64_t t0, rte_iova_t *iova, char *why)
{
  unsigned n = iova ? (unsigned)(g_len / g_page) : 0;
  if (rte_extmem_register(g_buf, g_len, iova, n, g_page) < 0) return dkb_rte_fail(why, "rte_extmem_register");
  uint64_t t1 = dkb_now_ns();
  if (rte_extmem_unregister(g_buf, g_len) < 0) return dkb_rte_fail(why, "rte_extmem_unregister");
  uint64_t t2 = dkb_now_ns();
  s->reg = (double)(t1 - t0);
  s->unreg = (double)(t2 - t1);
  return 0;
}

static int run_dpdk_iova(sample *s, char *why)
{
  size_t n = g_len / g_page;
  uint64_t t0 = dkb_now_ns();
  for (size_t i = 0; i < n; i++) {
    g_iova[i] = rte_mem_virt2iova(g_buf + i * g_page);
    if (g_iova[i] == RTE_BAD_IOVA) return dkb_fail(why, "rte_mem_virt2iova: no IOVA for page %zu", i);
  }
  return dpdk_register(s, t0, g_iova, why);
}

static int run_dpdk_plain(sample *s, char *why) { return dpdk_register(s, dkb_now_ns(), NULL, why); }

typedef struct subject {
  const char *id, *what;
  int (*run)(sample *, char *);
  double reg[64], unreg[64];
  int n;
  char why[WHY_LEN];
} subject;

static void quart(double *v, int n, double *q1, double *med, double *q3)
{
  qsort(v, (size_t)n, sizeof *v, dkb_cmp_double);
  *q1 = dkb_quantile(v, n, 0.25);
  *med = dkb_quantile(v, n, 0.5);
  *q3 = dkb_quantile(v, n, 0.75);
}

int main(int argc, char **argv)
{
  unsigned long mib = 1024;
  int repeats = 7;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--size") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: dkextmem [--size MiB] [--repeats N]\n");
      return 2;
    }
  }
  if (repeats < 1 || repeats > 64 || !mib) return 2;
  char why[WHY_LEN];
  if (dkb_eal_init("dkextmem", 0, why) < 0) {
    fprintf(stderr, "dkextmem: %s\n", why);
    return 1;
  }
  g_page = (size_t)sysconf(_SC_PAGESIZE);
  g_len = (size_t)mib << 20;
  g_buf = mmap(NULL, g_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  g_iova = calloc(g_len / g_page, sizeof *g_iova);
  if (g_buf == MAP_FAILED || !g_iova) {
    fprintf(stderr, "dkextmem: no memory for %lu MiB\n", mib);
    return 1;
  }
  memset(g_buf, 1, g_len);        /* ordinary, populated, written memory */
  subject subs[] = {
    { "dmakit", "withAddressRange + prepare (pinned, frames read) / complete + release", run_dmakit, {0}, {0}, 0, "" },
    { "dpdk_iova", "rte_mem_virt2iova per page + rte_extmem_register / rte_extmem_unregister", run_dpdk_iova, {0}, {0}, 0, "" },
    { "dpdk_plain", "rte_extmem_register without IOVAs / rte_extmem_unregister", run_dpdk_plain, {0}, {0}, 0, "" },
  };
  int k = (int)(sizeof subs / sizeof subs[0]);
  for (int r = 0; r < repeats; r++) {
    for (int i = 0; i < k; i++) {
      subject *s = &subs[(i + r) % k];          /* interleaved, rotating order */
      if (s->why[0]) continue;
      sample x;
      if (s->run(&x, s->why) < 0) continue;
      s->reg[s->n] = x.reg;
      s->unreg[s->n] = x.unreg;
      s->n++;
    }
  }
  printf("Registering %lu MiB of populated anonymous memory (%zu pages of %zu bytes), medians of %d trials\n\n", mib,
         g_len / g_page, g_page, repeats);
  printf("| subject | what | register median (q1-q3) | give back median (q1-q3) | register vs dmakit |\n");
  printf("|---|---|---|---|---|\n");
  double base = -1;
  for (int i = 0; i < k; i++) {
    subject *s = &subs[i];
    char a[32], b[32], c[32], d[32], e[32], f[32];
    if (!s->n) {
      printf("| %s | %s | n/a: %s | | |\n", s->id, s->what, s->why);
      continue;
    }
    double q1, med, q3, u1, umed, u3;
    quart(s->reg, s->n, &q1, &med, &q3);
    quart(s->unreg, s->n, &u1, &umed, &u3);
    if (i == 0) base = med;
    char ratio[48];
    if (i == 0) snprintf(ratio, sizeof ratio, "1 (reference)");
    else if (base > 0) snprintf(ratio, sizeof ratio, "%.2fx dmakit's time", med / base);
    else snprintf(ratio, sizeof ratio, "n/a");
    printf("| %s | %s | %s (%s-%s) | %s (%s-%s) | %s |\n", s->id, s->what, dkb_fmt_ns(med, a, sizeof a),
           dkb_fmt_ns(q1, b, sizeof b), dkb_fmt_ns(q3, c, sizeof c), dkb_fmt_ns(umed, d, sizeof d),
           dkb_fmt_ns(u1, e, sizeof e), dkb_fmt_ns(u3, f, sizeof f), ratio);
  }
  printf("| dpdk_dma_map | rte_dev_dma_map | n/a: needs a device bound to vfio-pci (none on this host) | | |\n");
  munmap(g_buf, g_len);
  free(g_iova);
  rte_eal_cleanup();
  dkb_remove_eal_files("dkextmem");
  return 0;
}
