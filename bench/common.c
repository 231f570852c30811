/* bench/common.c: the helpers the benchmark programs share (see common.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <dmakit/dmakit.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef DKB_HAVE_DPDK
#include <dirent.h>
#include <mntent.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#endif

volatile uint64_t dkb_sink;

uint64_t dkb_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int dkb_cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double dkb_quantile(const double *v, int n, double q)
{
  double pos = q * (n - 1);
  int i = (int)pos;
  if (i >= n - 1) return v[n - 1];
  return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

void dkb_clean_reason(char *s)
{
  for (; *s; s++)
    if (*s == '\t' || *s == '\n' || *s == '\r') *s = ' ';
    else if (*s == '|') *s = '/';
}

int dkb_fail(char *why, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, WHY_LEN, fmt, ap);
  va_end(ap);
  dkb_clean_reason(why);
  return -1;
}

int dkb_dk_fail(char *why)
{
  const dk_failure *f = dk_last_failure();
  return dkb_fail(why, "%s: %s", dk_ioreturn_name(f->code), f->text);
}

uint64_t dkb_ram_mask(void)
{
  uint64_t top = dk_capabilities()->ram_top;
  if (top == 0) return UINT64_MAX;
  uint64_t m = 1;
  while (m < top && m < (1ull << 63)) m <<= 1;
  return m - 1;
}

const char *dkb_fmt_ns(double ns, char *buf, size_t len)
{
  if (ns < 0) snprintf(buf, len, "n/a");
  else if (ns < 100) snprintf(buf, len, "%.2f ns", ns);
  else if (ns < 1e3) snprintf(buf, len, "%.0f ns", ns);
  else if (ns < 1e6) snprintf(buf, len, "%.2f us", ns / 1e3);
  else if (ns < 1e9) snprintf(buf, len, "%.2f ms", ns / 1e6);
  else snprintf(buf, len, "%.2f s", ns / 1e9);
  return buf;
}

#ifdef DKB_HAVE_DPDK
int dkb_rte_fail(char *why, const char *call)
{
  int e = rte_errno;
  return dkb_fail(why, "%s: %s", call, rte_strerror(e));
}

int dkb_rte_malloc_fail(char *why, const char *call)
{
  struct rte_malloc_socket_stats st;
  if (rte_malloc_get_socket_stats(0, &st) == 0)
    return dkb_fail(why, "%s returned NULL; heap had %zu MiB free, largest free element %zu MiB", call,
                    st.heap_freesz_bytes >> 20, st.greatest_free_size >> 20);
  return dkb_fail(why, "%s returned NULL", call);
}

int dkb_eal_init(const char *prefix, unsigned legacy_mb, char *why)
{
  char mb[16], *argv[16];
  int argc = 0;
  argv[argc++] = "dkbench";
  argv[argc++] = "--no-pci";
  argv[argc++] = "--iova-mode=pa";
  argv[argc++] = "-l";
  argv[argc++] = "0";
  argv[argc++] = "--file-prefix";
  argv[argc++] = (char *)prefix;
  if (legacy_mb) {
    snprintf(mb, sizeof mb, "%u", legacy_mb);
    argv[argc++] = "--legacy-mem";
    argv[argc++] = "-m";
    argv[argc++] = mb;
  }
  argv[argc] = NULL;
  if (rte_eal_init(argc, argv) < 0) return dkb_rte_fail(why, "rte_eal_init");
  return 0;
}

void dkb_remove_eal_files(const char *prefix)
{
  FILE *m = setmntent("/proc/mounts", "r");
  if (!m) return;
  struct mntent *e;
  size_t plen = strlen(prefix);
  while ((e = getmntent(m)) != NULL) {
    if (strcmp(e->mnt_type, "hugetlbfs") != 0) continue;
    DIR *d = opendir(e->mnt_dir);
    if (!d) continue;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (strncmp(de->d_name, prefix, plen) != 0) continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", e->mnt_dir, de->d_name);
      unlink(path);
    }
    closedir(d);
  }
  endmntent(m);
}
#endif
