/*
 * e2e/budget.c: memory the guest does not have ends in a refusal, never in the OOM killer.
 *
 * Runs as /init's child (root) in a small QEMU guest (scripts/e2e.sh variant m, 1 GiB), where
 * exhausting memory harms nobody. In order:
 *   1. a wired buffer of 1.5x RAM, from the pool and from 4K pages: refused with
 *      kIOReturnNoMemory, constraint resource, the figures, and never "contiguous";
 *   2. a wired buffer of 0.7x RAM after it: given (zeroed at both ends) or refused, never killed;
 *   3. 64 KiB pool buffers created one after another until one is refused: the refusal is
 *      kIOReturnNoMemory with the figures; everything released, the pool gives back every page;
 *   4. the same with 4 MiB buffers of 4K pages (DMAKIT_POOL=0), and with pageable 4 MiB buffers
 *      wired by prepare();
 *   5. the kernel's oom_kill count is what it was at the start, and this process is alive.
 * Prints "E2E-BUDGET: PASS" or "E2E-BUDGET: FAIL (n failures)".
 */
#define _GNU_SOURCE
#include <dmakit/dmakit.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  printf("%s: ", ok ? "ok" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (!ok) failures++;
}

static unsigned long long meminfo_kb(const char *key)
{
  FILE *f = fopen("/proc/meminfo", "r");
  char line[160];
  unsigned long long v = 0;
  size_t klen = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, klen) && line[klen] == ':') { v = strtoull(line + klen + 1, NULL, 10); break; }
  if (f) fclose(f);
  return v;
}

static long oom_kills(void)
{
  FILE *f = fopen("/proc/vmstat", "r");
  char line[128];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "oom_kill %ld", &v) == 1) break;
  if (f) fclose(f);
  return v;
}

static const char *failure(void)
{
  static char text[512];
  const dk_failure *f = dk_last_failure();
  snprintf(text, sizeof text, "%s (constraint %s): %s", dk_ioreturn_name(f->code), dk_constraint_name(f->constraint),
           f->text);
  return text;
}

/* A refusal for want of memory: kIOReturnNoMemory, a reason with the figures, and not one that
 * blames a constraint nobody asked for. */
static void check_refusal(const char *what)
{
  const dk_failure *f = dk_last_failure();
  printf("  %s: %s\n", what, failure());
  check(f->code == kIOReturnNoMemory, "%s: refused with kIOReturnNoMemory", what);
  check(strstr(f->text, "MemAvailable") && strstr(f->text, "asked"), "%s: the reason gives the figures", what);
  check(!strstr(f->text, "contiguous"), "%s: the reason does not speak of contiguity (none was asked)", what);
}

static void pause_ms(long ms)
{
  struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&t, NULL);
}

/* Memory given back reaches the kernel a moment later on some kernels (io_uring frees
 * unregistered buffers from delayed work, a second later on 6.1): wait until MemAvailable has
 * stopped rising, and at least 1.5 s. */
static void settle(void)
{
  unsigned long long last = 0;
  for (int i = 0; i < 40; i++) {
    unsigned long long now = meminfo_kb("MemAvailable");
    if (i >= 6 && now <= last + 1024) break;
    last = now;
    pause_ms(250);
  }
  printf("  MemAvailable %llu MiB\n", meminfo_kb("MemAvailable") >> 10);
}

static void check_pool_empty(const char *what)
{
  dk_pool_trim();
  dk_pool_stats st = { .size = sizeof st };
  dk_pool_get_stats(&st);
  check(st.bytes_pool_2m == 0 && st.bytes_pool_1g == 0 && st.hugepages_raised_2m == 0 && st.bytes_4k == 0,
        "%s: everything given back (pool %llu bytes, 4K %llu bytes, limits raised %llu)", what,
        (unsigned long long)(st.bytes_pool_2m + st.bytes_pool_1g), (unsigned long long)st.bytes_4k,
        (unsigned long long)st.hugepages_raised_2m);
}

/* Create buffers of `size` until one is refused; release them all. */
static void until_refused(const char *what, uint64_t size, IOOptionBits options, bool prepare)
{
  size_t cap = 1 << 16, n = 0;
  IOBufferMemoryDescriptor **all = calloc(cap, sizeof *all);
  unsigned long long start = meminfo_kb("MemAvailable");
  for (;;) {
    if (n == cap) {
      printf("  %s: %zu buffers without a refusal\n", what, n);
      break;
    }
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, options, size, 4096);
    if (b && prepare && IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone) != kIOReturnSuccess) {
      check_refusal("prepare");
      OSSafeReleaseNULL(b);
    }
    if (!b) break;
    all[n++] = b;
  }
  printf("  %s: %zu buffers (%llu MiB) before the refusal; MemAvailable %llu -> %llu MiB\n", what, n,
         (unsigned long long)(n * size >> 20), start >> 10, meminfo_kb("MemAvailable") >> 10);
  if (!prepare) check_refusal(what);
  check(n > 0 && n < cap, "%s: some buffers were given, then one was refused", what);
  for (size_t i = 0; i < n; i++) {
    if (prepare) IOMemoryDescriptor_complete((IOMemoryDescriptor *)all[i], kIODirectionNone);
    OSSafeReleaseNULL(all[i]);
  }
  free(all);
  check_pool_empty(what);
  settle();
}

int main(void)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  unsigned long long total = meminfo_kb("MemTotal") << 10;
  long ooms = oom_kills();
  printf("E2E-BUDGET: MemTotal %llu MiB, MemAvailable %llu MiB, oom_kill %ld, pool usable %d\n", total >> 20,
         meminfo_kb("MemAvailable") >> 10, ooms, dk_capabilities()->pool_usable);

  /* ---- 1. 1.5x RAM -------------------------------------------------------------------- */
  printf("--- 1. a wired buffer of 1.5x RAM\n");
  uint64_t big = total / 2 * 3;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, big, 4096);
  check(b == NULL, "1.5x RAM from the pool is refused");
  if (!b) check_refusal("1.5x RAM (pool)");
  OSSafeReleaseNULL(b);
  dk_option_set(DK_OPTION_POOL, 0);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, big, 4096);
  dk_option_set(DK_OPTION_POOL, 1);
  check(b == NULL, "1.5x RAM of 4K pages is refused");
  if (!b) check_refusal("1.5x RAM (4K pages)");
  OSSafeReleaseNULL(b);

  /* ---- 2. 0.7x RAM -------------------------------------------------------------------- */
  printf("--- 2. a wired buffer of 0.7x RAM after it\n");
  uint64_t most = total / 10 * 7;
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, most, 4096);
  if (b) {
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    int zero = 1;
    for (size_t i = 0; i < 4096; i++) zero &= !p[i] && !p[most - 1 - i];
    dk_buffer_info info;
    dk_buffer_get_info(b, &info);
    check(zero && info.wired, "0.7x RAM given: wired (provider %s), zeroed", dk_provider_name(info.provider));
  } else {
    check_refusal("0.7x RAM");
  }
  OSSafeReleaseNULL(b);
  check_pool_empty("0.7x RAM");
  settle();

  /* ---- 3. 64 KiB pool buffers until refused ------------------------------------------- */
  printf("--- 3. 64 KiB buffers until one is refused (hugepage pool)\n");
  until_refused("64 KiB pool buffers", 64 << 10, kIODirectionInOut, false);

  /* ---- 4. 4K pages, wired and pageable ------------------------------------------------- */
  printf("--- 4. 4 MiB buffers of 4K pages until one is refused\n");
  dk_option_set(DK_OPTION_POOL, 0);
  until_refused("4 MiB 4K-page buffers", 4 << 20, kIODirectionInOut, false);
  printf("--- 4b. pageable 4 MiB buffers, each prepared, until prepare is refused\n");
  until_refused("pageable 4 MiB buffers", 4 << 20, kIODirectionInOut | kIOMemoryPageable, true);
  dk_option_set(DK_OPTION_POOL, 1);

  /* ---- 5. nobody was killed ------------------------------------------------------------- */
  long after = oom_kills();
  check(ooms < 0 || after == ooms, "the kernel's oom_kill count is unchanged (%ld -> %ld)", ooms, after);
  printf("E2E-BUDGET: %s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
