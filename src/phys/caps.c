/* src/phys/caps.c: what this machine allows, probed once into dk_caps: page size, privilege,
 * whether pagemap shows frames, which pin holds frames in place, the top of RAM. Nothing else
 * in dmakit asks the system these questions. */
#include "phys/huge.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static dk_caps g_caps;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Highest (start_pfn + spanned) over all zones; /proc/zoneinfo is readable by everyone. */
static uint64_t probe_ram_top(uint32_t page_size)
{
  size_t cap = 1 << 20;
  char *buf = dk__malloc(cap);
  if (!buf) return 0;
  uint64_t top = 0, spanned = 0;
  if (dk__read_text("/proc/zoneinfo", buf, cap) > 0) {
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
      unsigned long long v;
      while (*line == ' ') line++;
      if (sscanf(line, "spanned %llu", &v) == 1) spanned = v;
      else if (sscanf(line, "start_pfn: %llu", &v) == 1 && spanned) {
        uint64_t end = ((uint64_t)v + spanned) * page_size;
        if (end > top) top = end;
        spanned = 0;
      }
    }
  }
  dk__free(buf);
  return top;
}

static void probe(void)
{
  dk_caps *c = &g_caps;
  long ps = sysconf(_SC_PAGESIZE);
  c->page_size = ps > 0 ? (uint32_t)ps : 4096;
  c->page_shift = (uint32_t)__builtin_ctz(c->page_size);
  c->root = geteuid() == 0;

  /* A page we know is present: this variable's own page. */
  static volatile uint64_t probe_page[1];
  probe_page[0] = 1;
  uint64_t pfn = 0;
  uintptr_t va = (uintptr_t)probe_page & ~(uintptr_t)(c->page_size - 1);
  c->pagemap_frames = dk__pagemap_frames(va, 1, &pfn) == 0 && pfn != 0;

  char txt[32];
  c->compact_unevictable_allowed = -1;
  if (dk__read_text("/proc/sys/vm/compact_unevictable_allowed", txt, sizeof txt) > 0)
    c->compact_unevictable_allowed = atoi(txt);
  c->ram_top = probe_ram_top(c->page_size);
  /* the lowest address a mapping may take (vm.mmap_min_addr), never below 64 KiB: placed
   * mappings under it are refused as XNU refuses addresses outside the kernel map */
  c->mmap_min_addr = 64 * 1024;
  if (dk__read_text("/proc/sys/vm/mmap_min_addr", txt, sizeof txt) > 0) {
    uint64_t v = strtoull(txt, NULL, 10);
    if (v > c->mmap_min_addr) c->mmap_min_addr = v;
  }

  struct rlimit rl;
  c->memlock_limit = UINT64_MAX;
  if (dk__getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    c->memlock_limit = rl.rlim_cur;

  int nsizes = dk__huge_sizes(c->hugepage_sizes, 4);
  c->hugepage_size_count = nsizes > 0 ? (uint32_t)nsizes : 0;
  c->pool_usable = c->pagemap_frames && c->hugepage_size_count > 0;

  char detail[120];
  c->pin_method = dk__pin_probe(detail, sizeof detail);
  if (c->pin_method == DK_PIN_NONE && c->compact_unevictable_allowed == 0) {
    c->pin_method = DK_PIN_NO_COMPACTION;
    snprintf(c->pin_detail, sizeof c->pin_detail,
             "%s; locked pages stay put because vm.compact_unevictable_allowed = 0", detail);
  } else if (c->pin_method == DK_PIN_NONE) {
    snprintf(c->pin_detail, sizeof c->pin_detail,
             "%s, and vm.compact_unevictable_allowed = %d lets compaction move locked pages",
             detail, c->compact_unevictable_allowed);
  } else {
    snprintf(c->pin_detail, sizeof c->pin_detail, "%s", detail);
  }
}

static const dk_caps *_Atomic g_ready;

const dk_caps *dk__caps(void)
{
  const dk_caps *c = atomic_load_explicit(&g_ready, memory_order_acquire);
  if (__builtin_expect(c != NULL, 1)) return c;
  pthread_once(&g_once, probe);
  atomic_store_explicit(&g_ready, &g_caps, memory_order_release);
  return &g_caps;
}

const dk_caps *dk_capabilities(void) { return dk__caps(); }

const char *dk_pin_method_name(dk_pin_method m)
{
  switch (m) {
  case DK_PIN_IO_URING:      return "io_uring";
  case DK_PIN_NO_COMPACTION: return "no-compaction";
  default:                   return "none";
  }
}
