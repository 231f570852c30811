/*
 * e2e/edu_reserve.c: a reservation end to end with QEMU's edu device (no IOMMU: bus address =
 * guest-physical address). Run by e2e/init after `dmakit reserve` made a reservation below edu's
 * DMA mask in another process:
 *
 *   edu_reserve dma NAME   allocates under edu's mask (two 4 KiB buffers and a 1 MiB contiguous
 *                          one), proves through its own pagemap reader that every page lies below
 *                          the mask and inside a reserved page, and that the pool made no
 *                          low-memory search; waits until the other "dma" process has allocated
 *                          too (both hold their pages at once), then, holding /tmp/e2e-edu.lock
 *                          (edu has one DMA engine), round-trips data through edu both ways.
 *   edu_reserve hold       takes one 2 MiB buffer under the mask, fills it with 0xA5, prints
 *                          READY and sleeps until killed.
 *   edu_reserve zero       takes every free reserved page under the mask as 2 MiB buffers and
 *                          checks each reads zero (what a killed holder wrote is gone).
 *   edu_reserve check      one 64 KiB buffer under the mask: reserved, below it, no search.
 *   edu_reserve applies    exit 0 when the mask lies below the top of RAM, else 3 (dmakit drops a
 *                          mask that covers all RAM: nothing then draws from a reservation).
 *
 * Prints "E2E-RESERVE [mode]: PASS (0 failures)" or "... FAIL (n failures)"; exit 0 on PASS.
 */
#define _GNU_SOURCE
#include <dmakit/dmakit.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "edu.h"

#define RESERVED_PAGE TWO_MB

static dk_reserve_page g_pages[1024];
static size_t g_npages;

static void load_reserved(void)
{
  if (dk_reserve_pages(g_pages, 1024, &g_npages) != kIOReturnSuccess) DIE("dk_reserve_pages");
  if (g_npages > 1024) g_npages = 1024;
  printf("  %zu reserved pages\n", g_npages);
}

static bool reserved(uint64_t pa)
{
  for (size_t i = 0; i < g_npages; i++)
    if (pa >= g_pages[i].frame && pa < g_pages[i].frame + RESERVED_PAGE) return true;
  return false;
}

/* A mask at or above the top of RAM is no limit (dmakit drops it, as XNU does). */
static bool mask_covers_ram(void)
{
  uint64_t top = dk_capabilities()->ram_top;
  return top && dma_mask >= top - 1;
}

/* Every page of the buffer, read through our own pagemap reader: below the mask, reserved. */
static uint64_t prove(const char *name, IOBufferMemoryDescriptor *b, size_t len)
{
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  bool below = true, in = true;
  uint64_t first = 0;
  for (size_t off = 0; off < len; off += PG) {
    uint64_t pa = pagemap_phys(va + off);
    if (!off) first = pa;
    if (!pa || pa + PG - 1 > dma_mask) below = false;
    if (!reserved(pa)) in = false;
  }
  IOByteCount seg = 0;
  uint64_t bus = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &seg, 0);
  printf("  %s: bus 0x%" PRIx64 ", pagemap 0x%" PRIx64 ", %zu bytes\n", name, bus, first, len);
  CHECK(bus == first, "%s: getPhysicalSegment agrees with pagemap", name);
  CHECK(below, "%s: every page below the mask 0x%llx", name, (unsigned long long)dma_mask);
  CHECK(in, "%s: every page inside a reserved page", name);
  return first;
}

static IOBufferMemoryDescriptor *take(const char *name, size_t len, bool contiguous)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
      kernel_task, kIODirectionInOut | (contiguous ? kIOMemoryPhysicallyContiguous : 0), len, dma_mask);
  if (!b) {
    print_failure(name);
    failures++;
  }
  return b;
}

static void no_search(void)
{
  dk_pool_stats st = { .size = sizeof st };
  dk_pool_get_stats(&st);
  printf("  pool: lowmem_searches=%llu grows=%llu bytes_pool_2m=%llu\n", (unsigned long long)st.lowmem_searches,
         (unsigned long long)st.grows, (unsigned long long)st.bytes_pool_2m);
  CHECK(st.lowmem_searches == 0, "no low-memory search in this process");
}

static uint32_t claimed_now(void)
{
  dk_reserve_info r[16];
  size_t n = 0;
  uint32_t c = 0;
  if (dk_reserve_list(r, 16, &n) != kIOReturnSuccess) return 0;
  for (size_t i = 0; i < n && i < 16; i++) c += r[i].pages_claimed;
  return c;
}

static int count_ready(void)
{
  DIR *d = opendir("/tmp");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) n += !strncmp(e->d_name, "e2e-ready.", 10);
  if (d) closedir(d);
  return n;
}

static void mode_dma(const char *name)
{
  char *bdf = find_edu();
  if (!bdf) DIE("no edu device");
  open_edu(bdf);
  load_reserved();
  IOBufferMemoryDescriptor *src = take("source 4 KiB", PG, false), *dst = take("destination 4 KiB", PG, false);
  IOBufferMemoryDescriptor *big = take("1 MiB contiguous", 1u << 20, true);
  if (!src || !dst || !big) return;
  uint64_t ps = prove("source", src, PG), pd = prove("destination", dst, PG), pb = prove("1 MiB", big, 1u << 20);
  no_search();
  /* both processes hold their buffers at once */
  char ready[64];
  snprintf(ready, sizeof ready, "/tmp/e2e-ready.%s", name);
  close(open(ready, O_CREAT | O_WRONLY, 0644));
  double t0 = now();
  while (count_ready() < 2 && now() - t0 < 120) usleep(20000);
  CHECK(count_ready() >= 2, "[%s] the other process allocated while this one holds its buffers", name);
  uint32_t c = claimed_now();
  printf("  [%s] reserved pages held by running processes now: %u\n", name, c);
  CHECK(c >= 2, "[%s] at least two reserved pages are held at once (one per process)", name);
  /* one DMA engine: take turns */
  int lk = open("/tmp/e2e-edu.lock", O_CREAT | O_RDWR, 0644);
  if (lk < 0 || flock(lk, LOCK_EX) < 0) DIE("flock /tmp/e2e-edu.lock");
  uint8_t *s = IOBufferMemoryDescriptor_getBytesNoCopy(src), *d = IOBufferMemoryDescriptor_getBytesNoCopy(dst);
  uint8_t *g = IOBufferMemoryDescriptor_getBytesNoCopy(big);
  fill(s, PG, (uint32_t)(name[0] * 7919));
  memset(d, 0, PG);
  double t1 = now();
  round_trip(ps, pd);
  printf("  [%s] round trip 4 KiB -> edu -> 4 KiB in %.2f s\n", name, now() - t1);
  CHECK(memcmp(s, d, XFER) == 0, "[%s] data round-tripped through edu between reserved buffers", name);
  /* into and out of the last 2048 bytes of the contiguous buffer */
  fill(g + (1u << 20) - XFER, XFER, (uint32_t)(name[0] * 104729));
  memset(d, 0, PG);
  round_trip(pb + (1u << 20) - XFER, pd);
  CHECK(memcmp(g + (1u << 20) - XFER, d, XFER) == 0, "[%s] edu read the end of the 1 MiB buffer", name);
  fill(s, PG, 0xC0FFEEu);
  round_trip(ps, pb);
  CHECK(memcmp(s, g, XFER) == 0, "[%s] edu wrote the start of the 1 MiB buffer", name);
  flock(lk, LOCK_UN);
  close(lk);
  OSObject_release(big);
  OSObject_release(dst);
  OSObject_release(src);
}

static void mode_hold(void)
{
  load_reserved();
  IOBufferMemoryDescriptor *b = take("2 MiB", TWO_MB, true);
  if (!b) return;
  prove("2 MiB held", b, TWO_MB);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b), 0xA5, TWO_MB);
  printf("READY\n");
  for (;;) pause();
}

static void mode_zero(void)
{
  load_reserved();
  dk_reserve_info r[16];
  size_t n = 0;
  uint32_t free_pages = 0;
  if (dk_reserve_list(r, 16, &n) == kIOReturnSuccess)
    for (size_t i = 0; i < n && i < 16; i++) free_pages += r[i].pages - r[i].pages_claimed;
  CHECK(claimed_now() == 0, "no reserved page is held (the killed holder's came back)");
  IOBufferMemoryDescriptor *b[64] = { 0 };
  uint32_t k = free_pages < 64 ? free_pages : 64;
  printf("  taking all %u free reserved pages\n", k);
  bool zero = true;
  for (uint32_t i = 0; i < k; i++) {
    char name[32];
    snprintf(name, sizeof name, "page %u", i);
    if (!(b[i] = take(name, TWO_MB, true))) break;
    prove(name, b[i], TWO_MB);
    zero &= all_zero(IOBufferMemoryDescriptor_getBytesNoCopy(b[i]), TWO_MB) != 0;
  }
  CHECK(zero, "every reserved page reads zero when claimed (the killed holder's 0xA5 is gone)");
  no_search();
  for (uint32_t i = 0; i < k; i++) if (b[i]) OSObject_release(b[i]);
}

static void mode_check(void)
{
  load_reserved();
  IOBufferMemoryDescriptor *b = take("64 KiB", 64 * 1024, false);
  if (!b) return;
  prove("64 KiB", b, 64 * 1024);
  no_search();
  OSObject_release(b);
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  read_mask();
  const char *mode = argc > 1 ? argv[1] : "check";
  pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
  if (pagemap_fd < 0) DIE("open pagemap");
  if (!strcmp(mode, "dma")) mode_dma(argc > 2 ? argv[2] : "A");
  else if (!strcmp(mode, "hold")) mode_hold();
  else if (!strcmp(mode, "zero")) mode_zero();
  else if (!strcmp(mode, "check")) mode_check();
  else if (!strcmp(mode, "applies")) {
    /* a mask at or above the top of RAM is dropped (as XNU): no buffer ever needs a reservation */
    if (!mask_covers_ram()) return 0;
    printf("the mask 0x%llx covers all RAM (top 0x%llx): dmakit drops it, nothing needs a reservation\n",
           (unsigned long long)dma_mask, (unsigned long long)dk_capabilities()->ram_top);
    return 3;
  }
  else DIE("unknown mode %s", mode);
  printf("E2E-RESERVE [%s%s%s]: %s (%d failures)\n", mode, argc > 2 ? " " : "", argc > 2 ? argv[2] : "",
         failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
