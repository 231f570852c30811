/* bench/common.h: what the benchmark programs share (bench.c, the single-buffer cases; scale.c
 * and scale_report.c, the live-count cases): the clock, medians and quantiles, the one-line
 * reasons a subject could not run, the physical mask every dmakit request carries, time
 * formatting, and DPDK's EAL set-up and clean-up (only where DKB_HAVE_DPDK is defined). */
#ifndef DKB_COMMON_H
#define DKB_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024)
#define GiB (1024ull * 1024 * 1024)

#define WHY_LEN 300               /* a reason: one tab-free, pipe-free line */

uint64_t dkb_now_ns(void);
extern volatile uint64_t dkb_sink;   /* keeps results of timed loops alive */

int    dkb_cmp_double(const void *a, const void *b);
/* Linear-interpolated quantile of a sorted array of n > 0 values. */
double dkb_quantile(const double *v, int n, double q);

/* Reasons go into one tab-separated field and later into a markdown cell. */
void dkb_clean_reason(char *s);
/* Fill `why` (WHY_LEN bytes) and return -1. */
int  dkb_fail(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The calling thread's dk_last_failure() as a reason; -1. */
int  dkb_dk_fail(char *why);

/* The smallest 2^k - 1 covering all of this machine's RAM: a mask every request can meet. */
uint64_t dkb_ram_mask(void);

/* "17.52 ns", "1.77 us", "n/a" for a negative value. */
const char *dkb_fmt_ns(double ns, char *buf, size_t len);

#ifdef DKB_HAVE_DPDK
/* rte_errno's text as a reason; -1. */
int dkb_rte_fail(char *why, const char *call);
/* rte_malloc and rte_zmalloc do not set rte_errno: what the heap had free instead; -1. */
int dkb_rte_malloc_fail(char *why, const char *call);
/* rte_eal_init in PA mode on core 0, no PCI, hugepage files named `prefix`; legacy memory of
 * `legacy_mb` MiB when it is nonzero, else dynamic memory. 0, or -1 with `why`. */
int dkb_eal_init(const char *prefix, unsigned legacy_mb, char *why);
/* Hugepage files the EAL left behind hold their pages until unlinked: remove every file whose
 * name starts with `prefix` on every hugetlbfs mount. */
void dkb_remove_eal_files(const char *prefix);
#endif

#endif
