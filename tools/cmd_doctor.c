/* tools/cmd_doctor.c: `dmakit doctor`: what this machine can do for DMA buffers (privileges,
 * pagemap, hugepages, the physical layout, the lowest frames the kernel hands out, which masks
 * each path meets, IOMMU and VFIO, locked memory, pinning) and, for each problem, the line that
 * fixes it. Exit 0 all good, 1 warnings, 2 usage, 3 no physical DMA buffers possible here. */
#include "util.h"

#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum severity { SEV_NOTE, SEV_WARNING, SEV_FATAL } severity;
static const char *const sev_name[] = { "note", "warning", "fatal" };

/* Every fix line is a command that works as written; its kind says which (the guest test in
 * e2e/doctor.sh applies each kind and checks the result):
 *   root                 run as root: sudo dmakit doctor
 *   compact-unevictable  echo 0 > /proc/sys/vm/compact_unevictable_allowed (no io_uring pin)
 *   reserve              dmakit reserve --mask M --yes SIZE (low memory that stays)
 * Problems no command fixes (no hugetlb, no IOMMU, ...) say so in their text and have no fix. */
typedef struct problem { severity sev; char text[960]; char fix[200]; const char *kind; } problem;
static problem g_probs[24];
static int g_nprobs;

__attribute__((format(printf, 4, 5))) static void problem_add(severity sev, const char *kind, const char *fix,
                                                              const char *fmt, ...)
{
  if (g_nprobs >= (int)(sizeof g_probs / sizeof *g_probs)) return;
  problem *p = &g_probs[g_nprobs++];
  p->sev = sev;
  p->kind = fix ? kind : NULL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->text, sizeof p->text, fmt, ap);
  va_end(ap);
  snprintf(p->fix, sizeof p->fix, "%s", fix ? fix : "");
}

/* ---- probes ------------------------------------------------------------------------------ */
typedef struct path_result { int ok; char why[400]; } path_result;   /* ok -1: not tried */

/* What the next process gets for a mask: all RAM lies below it; a reservation holds memory below
 * it; memory was found below it now but is not held (the next process may not find it); no. */
typedef enum next_state { NEXT_ALL_RAM, NEXT_RESERVED, NEXT_FOUND_NOW, NEXT_NO, NEXT_UNKNOWN } next_state;
static const char *const next_name[] = { "all-ram", "reserved", "found-now", "no", "unknown" };

typedef struct mask_row {
  unsigned bits;
  uint64_t mask;
  path_result pages, pool, iommu;
  next_state next;
  uint64_t reserved, reserved_free;            /* bytes in reservations that serve this mask */
  bool pool_from_reserve;                      /* the pool probe drew from a reservation */
} mask_row;

typedef struct findings {
  const dk_caps *caps;
  huge_info huge[4];
  size_t nhuge;
  mem_range mem[64];
  size_t nmem;
  const char *mem_source;
  uint64_t low_4k, low_pool, pool_reserved;    /* 0 = unknown */
  unsigned frames_4k;
  char low_4k_why[400], low_pool_why[400];
  mask_row masks[4];
  dk_reserve_info rsv[16];
  size_t nrsv;
  int iommu_groups;                            /* -1: no /sys/kernel/iommu_groups */
  bool dev_vfio, vfio_container, iommufd, vfio_pci;
  int exit_code;
} findings;

static uint64_t lowest_segment(IOBufferMemoryDescriptor *b, unsigned *frames)
{
  seg s[64];
  size_t n = segments(b, s, 64, NULL);
  uint64_t low = 0;
  for (size_t i = 0; i < n; i++) {
    if (!low || s[i].cpu < low) low = s[i].cpu;
    if (frames) *frames += (unsigned)(s[i].len / 4096);
  }
  return low;
}

/* A few 4K buffers with the pool off: the lowest frame the kernel gives user space. */
static void probe_4k(findings *F)
{
  long saved = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b[8] = { 0 };
  for (int i = 0; i < 8; i++) {
    b[i] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 4096);
    if (!b[i]) { snprintf(F->low_4k_why, sizeof F->low_4k_why, "%s", dk_last_failure()->text); break; }
    uint64_t l = lowest_segment(b[i], &F->frames_4k);
    if (!l) { snprintf(F->low_4k_why, sizeof F->low_4k_why, "%s", dk_last_failure()->text); break; }
    if (!F->low_4k || l < F->low_4k) F->low_4k = l;
  }
  for (int i = 0; i < 8; i++) OSSafeReleaseNULL(b[i]);
  dk_option_set(DK_OPTION_POOL, saved);
}

static void probe_pool(findings *F)
{
  if (!F->caps->pool_usable) {
    snprintf(F->low_pool_why, sizeof F->low_pool_why, "%s",
             !F->caps->pagemap_frames ? "the pool needs root (frame numbers)" : "no hugetlb support in this kernel");
    return;
  }
  long saved = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 1);
  IOReturn rc = dk_pool_reserve(2u << 20, 0);
  if (rc != kIOReturnSuccess) {
    snprintf(F->low_pool_why, sizeof F->low_pool_why, "dk_pool_reserve(2 MiB): %s: %s", dk_ioreturn_name(rc),
             dk_last_failure()->text);
  } else {
    dk_pool_stats st = { .size = sizeof st };
    dk_pool_get_stats(&st);
    F->low_pool = st.lowest_frame;
    F->pool_reserved = st.bytes_pool_2m + st.bytes_pool_1g;
  }
  dk_option_set(DK_OPTION_POOL, saved);
}

/* One path for one mask: a buffer with that mask, checked from its segments. */
/* Whether [pa, pa+len) lies in a reserved page. */
static bool in_reservation(uint64_t pa, uint64_t len)
{
  dk_reserve_page pages[512];
  size_t n = 0;
  if (dk_reserve_pages(pages, 512, &n) != kIOReturnSuccess) return false;
  for (size_t i = 0; i < n && i < 512; i++)
    if (pa >= pages[i].frame && pa + len <= pages[i].frame + (2u << 20)) return true;
  return false;
}

static void try_mask(path_result *r, uint64_t mask, int pool, bool *from_reserve)
{
  long saved = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, pool);
  IOOptionBits opts = kIODirectionInOut | (pool ? kIOMemoryPhysicallyContiguous : 0);
  uint64_t size = pool ? 64 * 1024 : 16 * 1024;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, opts, size, mask);
  if (!b) {
    const dk_failure *f = dk_last_failure();
    r->ok = 0;
    snprintf(r->why, sizeof r->why, "%s: %s", dk_constraint_name(f->constraint), f->text);
  } else {
    dk_buffer_info info;
    dk_buffer_get_info(b, &info);
    seg s[16];
    size_t n = segments(b, s, 16, NULL);
    r->ok = n > 0;
    for (size_t i = 0; i < n; i++) if (s[i].cpu + s[i].len - 1 > mask) r->ok = 0;
    bool from_pool = info.provider == DK_PROVIDER_POOL || info.provider == DK_PROVIDER_POOL_SLAB;
    if (!n) snprintf(r->why, sizeof r->why, "no segments: %s", dk_last_failure()->text);
    else if (pool && !from_pool) { r->ok = 0; snprintf(r->why, sizeof r->why, "served by %s, not the pool", dk_provider_name(info.provider)); }
    else snprintf(r->why, sizeof r->why, "%s at 0x%" PRIx64 "%s", r->ok ? "met" : "BROKEN", s[0].cpu,
                  r->ok ? "" : " (above the mask)");
    if (from_reserve && n) *from_reserve = in_reservation(s[0].cpu, s[0].len);
    OSSafeReleaseNULL(b);
  }
  dk_option_set(DK_OPTION_POOL, saved);
}

static void probe_iommu(findings *F)
{
  DIR *d = opendir("/sys/kernel/iommu_groups");
  F->iommu_groups = -1;
  if (d) {
    F->iommu_groups = 0;
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') F->iommu_groups++;
    closedir(d);
  }
  struct stat st;
  F->dev_vfio = stat("/dev/vfio", &st) == 0;
  F->vfio_container = stat("/dev/vfio/vfio", &st) == 0;
  F->iommufd = stat("/dev/iommu", &st) == 0;
  F->vfio_pci = stat("/sys/bus/pci/drivers/vfio-pci", &st) == 0 || stat("/sys/module/vfio_pci", &st) == 0;
}

static void probe(findings *F, bool run_probes)
{
  memset(F, 0, sizeof *F);
  F->caps = dk_capabilities();
  const dk_caps *c = F->caps;
  F->nhuge = hugepage_info(F->huge, 4);
  F->nmem = memory_layout(F->mem, 64, &F->mem_source);
  if (dk_reserve_list(F->rsv, 16, &F->nrsv) != kIOReturnSuccess) F->nrsv = 0;
  if (F->nrsv > 16) F->nrsv = 16;
  probe_iommu(F);
  static const unsigned bits[4] = { 28, 32, 36, 40 };
  for (int i = 0; i < 4; i++) {
    mask_row *m = &F->masks[i];
    m->bits = bits[i];
    m->mask = (1ull << bits[i]) - 1;
    m->pages.ok = m->pool.ok = -1;
    m->iommu.ok = 0;
    m->next = NEXT_UNKNOWN;
    for (size_t k = 0; k < F->nrsv; k++) {
      if (F->rsv[k].mask > m->mask) continue;
      m->reserved += (uint64_t)F->rsv[k].pages * F->rsv[k].page_size;
      m->reserved_free += (uint64_t)(F->rsv[k].pages - F->rsv[k].pages_claimed) * F->rsv[k].page_size;
    }
    if (F->iommu_groups > 0)
      snprintf(m->iommu.why, sizeof m->iommu.why, "an IOMMU is present (%d groups): through VFIO a device can be "
               "given any IOVA; dmakit does not map through VFIO yet", F->iommu_groups);
    else
      snprintf(m->iommu.why, sizeof m->iommu.why, "none on this machine");
  }
  if (!c->pagemap_frames) {
    snprintf(F->low_4k_why, sizeof F->low_4k_why, "frame numbers are hidden (needs root)");
    snprintf(F->low_pool_why, sizeof F->low_pool_why, "frame numbers are hidden (needs root)");
    for (int i = 0; i < 4; i++) {
      snprintf(F->masks[i].pages.why, sizeof F->masks[i].pages.why, "cannot be verified without root");
      snprintf(F->masks[i].pool.why, sizeof F->masks[i].pool.why, "the pool needs root");
    }
    return;
  }
  if (!run_probes) {
    snprintf(F->low_4k_why, sizeof F->low_4k_why, "not probed (--no-probe)");
    snprintf(F->low_pool_why, sizeof F->low_pool_why, "not probed (--no-probe)");
    for (int i = 0; i < 4; i++) {
      snprintf(F->masks[i].pages.why, sizeof F->masks[i].pages.why, "not probed (--no-probe)");
      snprintf(F->masks[i].pool.why, sizeof F->masks[i].pool.why, "not probed (--no-probe)");
    }
    return;
  }
  probe_4k(F);
  probe_pool(F);
  for (int i = 3; i >= 0; i--) {               /* widest first: cheap successes before searches */
    mask_row *m = &F->masks[i];
    try_mask(&m->pages, m->mask, 0, NULL);
    if (c->pool_usable) try_mask(&m->pool, m->mask, 1, &m->pool_from_reserve);
    else { m->pool.ok = 0; snprintf(m->pool.why, sizeof m->pool.why, "%s", F->low_pool_why); }
  }
  dk_pool_trim();
}

/* ---- judgement ---------------------------------------------------------------------------- */
static void judge(findings *F)
{
  const dk_caps *c = F->caps;
  char a[32];
  if (!c->pagemap_frames)
    problem_add(SEV_FATAL, "root", c->root ? NULL : "sudo dmakit doctor",
                "frame numbers in /proc/self/pagemap are hidden: no physical address can be read or "
                "verified, so physical DMA buffers are impossible%s", c->root ? " (root without CAP_SYS_ADMIN)" : "");
  if (c->pin_method == DK_PIN_NONE && dk_option_get(DK_OPTION_REQUIRE_PIN))
    problem_add(c->pagemap_frames ? SEV_FATAL : SEV_WARNING, "compact-unevictable",
                c->root ? "echo 0 > /proc/sys/vm/compact_unevictable_allowed" : NULL,
                "frames cannot be pinned (%s): physical addresses are refused", c->pin_detail);
  else if (c->pin_method == DK_PIN_NO_COMPACTION)
    problem_add(SEV_NOTE, NULL, NULL, "pinning relies on compaction being off for locked pages (io_uring "
                "registration is unavailable): keep vm.compact_unevictable_allowed at 0");
  if (!F->nhuge)
    problem_add(SEV_WARNING, NULL, NULL, "no hugepage sizes: the pool (contiguity and alignment beyond 4 KiB, low "
                "masks) cannot work; it needs a kernel built with CONFIG_HUGETLBFS=y");
  if (!c->root && c->memlock_limit != UINT64_MAX && c->memlock_limit < (64ull << 20))
    problem_add(SEV_WARNING, NULL, NULL, "the locked-memory limit is %s: buffers beyond it are populated but not locked "
                "(a memlock line in /etc/security/limits.conf raises it)", fmt_size(a, c->memlock_limit));
  if (c->pagemap_frames && c->pool_usable && !F->low_pool && F->low_pool_why[0] && !strstr(F->low_pool_why, "--no-probe"))
    problem_add(SEV_WARNING, NULL, NULL, "the pool could not reserve 2 MiB: %s (free memory is short or too "
                "fragmented for 2 MiB pages)", F->low_pool_why);
  for (int i = 0; i < 4; i++) {
    mask_row *m = &F->masks[i];
    if (c->ram_top && m->mask + 1 >= c->ram_top) m->next = NEXT_ALL_RAM;
    else if (m->reserved) m->next = NEXT_RESERVED;
    else if (m->pages.ok > 0 || m->pool.ok > 0) m->next = NEXT_FOUND_NOW;
    else if (m->pages.ok == 0 || m->pool.ok == 0) m->next = NEXT_NO;
    if (m->next != NEXT_NO && m->next != NEXT_FOUND_NOW) continue;
    /* the fix: a reservation, offered only when its search fits this machine now */
    char fix[200] = "", why[640] = "";
    dk_reserve_cost e;
    const uint64_t want = 64ull << 20;
    if (!c->root) snprintf(why, sizeof why, " (a reservation needs root)");
    else if (dk_reserve_estimate(m->mask, want, NULL, &e) != kIOReturnSuccess)
      snprintf(why, sizeof why, " (no reservation can be made: %s)", dk_last_failure()->text);
    else if (!e.fits) snprintf(why, sizeof why, " (a reservation cannot be made here now: %s)", e.text);
    else snprintf(fix, sizeof fix, "dmakit reserve --mask 0x%" PRIx64 " --yes 64M", m->mask);
    if (m->next == NEXT_NO)
      problem_add(m->bits >= 32 ? SEV_WARNING : SEV_NOTE, "reserve", fix[0] ? fix : NULL,
                  "a %u-bit device (mask 0x%" PRIx64 ") cannot get buffers here: no path found memory below its "
                  "limit%s%s", m->bits, m->mask, why,
                  F->iommu_groups > 0 ? "; behind the IOMMU (VFIO, docs/vfio.md) its mask limits only the IOVA" : "");
    else if (m->pages.ok <= 0)
      problem_add(SEV_NOTE, "reserve", fix[0] ? fix : NULL,
                  "a %u-bit device (mask 0x%" PRIx64 ") got memory below its limit now, by a search in this process; it "
                  "is not held, so the next process may not find it%s", m->bits, m->mask, why);
  }
  if (F->iommu_groups <= 0)
    problem_add(SEV_NOTE, NULL, NULL, "no IOMMU: devices see CPU physical addresses, so every buffer must meet the "
                "device's mask in RAM itself (an IOMMU is enabled in firmware and with intel_iommu=on or amd_iommu=on "
                "on the kernel command line, then a reboot)");
  else if (!F->dev_vfio || !F->vfio_pci)
    problem_add(SEV_WARNING, NULL, NULL, "an IOMMU is present but VFIO is not loaded (%s%s): docs/vfio.md says how to "
                "bind a device to vfio-pci", F->dev_vfio ? "" : "/dev/vfio missing",
                F->vfio_pci ? "" : (F->dev_vfio ? "vfio-pci not loaded" : ", vfio-pci not loaded"));
  F->exit_code = EXIT_OK;
  for (int i = 0; i < g_nprobs; i++) {
    if (g_probs[i].sev == SEV_FATAL) F->exit_code = EXIT_NO_DMA;
    else if (g_probs[i].sev == SEV_WARNING && F->exit_code == EXIT_OK) F->exit_code = EXIT_FAIL;
  }
}

static const char *status_name(int code)
{
  return code == EXIT_OK ? "ok" : code == EXIT_FAIL ? "warnings" : "no-physical-dma";
}

static long long reservable(const huge_info *h)
{
  long long now = h->free - h->resv, room = h->overcommit - h->surplus;
  return (now > 0 ? now : 0) + (room > 0 ? room : 0);
}

/* ---- output ------------------------------------------------------------------------------ */
static void put_path(jw *w, const char *key, const path_result *r)
{
  jw_obj(w, key);
  if (r->ok < 0) jw_null(w, "ok");
  else jw_bool(w, "ok", r->ok);
  jw_str(w, "reason", r->why);
  jw_end_obj(w);
}

static void print_json(const findings *F)
{
  const dk_caps *c = F->caps;
  jw w;
  jw_init(&w, stdout);
  jw_obj(&w, NULL);
  jw_str(&w, "status", status_name(F->exit_code));
  jw_i64(&w, "exit_code", F->exit_code);
  jw_bool(&w, "root", c->root);
  jw_bool(&w, "pagemap_frames", c->pagemap_frames);
  jw_u64(&w, "page_size", c->page_size);
  jw_arr(&w, "hugepages");
  for (size_t i = 0; i < F->nhuge; i++) {
    const huge_info *h = &F->huge[i];
    jw_obj(&w, NULL);
    jw_u64(&w, "size", h->size);
    jw_i64(&w, "nr", h->nr);
    jw_i64(&w, "free", h->free);
    jw_i64(&w, "reserved", h->resv);
    jw_i64(&w, "surplus", h->surplus);
    jw_i64(&w, "overcommit", h->overcommit);
    jw_i64(&w, "reservable", reservable(h));
    jw_end_obj(&w);
  }
  jw_end_arr(&w);
  jw_obj(&w, "memory");
  jw_str(&w, "source", F->mem_source);
  jw_u64(&w, "ram_top", c->ram_top);
  jw_arr(&w, "ranges");
  for (size_t i = 0; i < F->nmem; i++) {
    jw_obj(&w, NULL);
    jw_u64(&w, "start", F->mem[i].start);
    jw_u64(&w, "end", F->mem[i].end);
    jw_str(&w, "name", F->mem[i].name);
    jw_end_obj(&w);
  }
  jw_end_arr(&w);
  jw_end_obj(&w);
  jw_obj(&w, "lowest_frame");
  if (F->low_4k) jw_u64(&w, "pages_4k", F->low_4k); else jw_null(&w, "pages_4k");
  jw_str(&w, "pages_4k_reason", F->low_4k ? NULL : F->low_4k_why);
  if (F->low_pool) jw_u64(&w, "pool", F->low_pool); else jw_null(&w, "pool");
  jw_str(&w, "pool_reason", F->low_pool ? NULL : F->low_pool_why);
  jw_end_obj(&w);
  jw_arr(&w, "masks");
  for (int i = 0; i < 4; i++) {
    const mask_row *m = &F->masks[i];
    jw_obj(&w, NULL);
    jw_u64(&w, "bits", m->bits);
    jw_u64(&w, "mask", m->mask);
    put_path(&w, "pages_4k", &m->pages);
    put_path(&w, "pool", &m->pool);
    put_path(&w, "iommu", &m->iommu);
    jw_obj(&w, "next_process");
    jw_str(&w, "state", next_name[m->next]);
    jw_u64(&w, "reserved", m->reserved);
    jw_u64(&w, "reserved_free", m->reserved_free);
    jw_end_obj(&w);
    jw_end_obj(&w);
  }
  jw_end_arr(&w);
  jw_arr(&w, "reservations");
  for (size_t i = 0; i < F->nrsv; i++) {
    jw_obj(&w, NULL);
    jw_u64(&w, "mask", F->rsv[i].mask);
    jw_u64(&w, "bytes", (uint64_t)F->rsv[i].pages * F->rsv[i].page_size);
    jw_u64(&w, "pages", F->rsv[i].pages);
    jw_u64(&w, "pages_claimed", F->rsv[i].pages_claimed);
    jw_end_obj(&w);
  }
  jw_end_arr(&w);
  jw_obj(&w, "iommu");
  jw_bool(&w, "present", F->iommu_groups > 0);
  jw_i64(&w, "groups", F->iommu_groups < 0 ? 0 : F->iommu_groups);
  jw_bool(&w, "iommufd", F->iommufd);
  jw_end_obj(&w);
  jw_obj(&w, "vfio");
  jw_bool(&w, "dev_vfio", F->dev_vfio);
  jw_bool(&w, "container", F->vfio_container);
  jw_bool(&w, "vfio_pci", F->vfio_pci);
  jw_end_obj(&w);
  if (c->memlock_limit == UINT64_MAX) jw_null(&w, "memlock_limit");
  else jw_u64(&w, "memlock_limit", c->memlock_limit);
  jw_obj(&w, "pin");
  jw_str(&w, "method", dk_pin_method_name(c->pin_method));
  jw_str(&w, "detail", c->pin_detail);
  jw_i64(&w, "compact_unevictable_allowed", c->compact_unevictable_allowed);
  jw_end_obj(&w);
  jw_arr(&w, "problems");
  for (int i = 0; i < g_nprobs; i++) {
    jw_obj(&w, NULL);
    jw_str(&w, "severity", sev_name[g_probs[i].sev]);
    jw_str(&w, "text", g_probs[i].text);
    jw_str(&w, "fix", g_probs[i].fix[0] ? g_probs[i].fix : NULL);
    jw_str(&w, "fix_kind", g_probs[i].kind);
    jw_end_obj(&w);
  }
  jw_end_arr(&w);
  jw_end_obj(&w);
  jw_done(&w);
}

static const char *yes_no(int ok) { return ok < 0 ? "?" : ok ? "yes" : "no"; }

static void print_text(const findings *F)
{
  const dk_caps *c = F->caps;
  char a[32], b[32];
  printf("dmakit doctor: what this machine can do for DMA buffers\n\n");
  printf("privileges      %s; frame numbers %s\n", c->root ? "root" : "not root",
         c->pagemap_frames ? "visible in /proc/self/pagemap" : "hidden in /proc/self/pagemap");
  printf("page size       %u\n", c->page_size);
  if (!F->nhuge) printf("hugepages       none (no hugetlb)\n");
  for (size_t i = 0; i < F->nhuge; i++) {
    const huge_info *h = &F->huge[i];
    printf("%s%-7s %lld total, %lld free, %lld reserved, %lld surplus, overcommit %lld: %lld reservable now\n",
           i ? "                " : "hugepages       ", fmt_size(a, h->size), h->nr, h->free, h->resv, h->surplus,
           h->overcommit, reservable(h));
  }
  printf("memory          %s (top of RAM 0x%" PRIx64 ", %s)\n",
         !strcmp(F->mem_source, "/proc/iomem") ? "System RAM from /proc/iomem" : "zones from /proc/zoneinfo",
         c->ram_top, fmt_size(a, c->ram_top));
  for (size_t i = 0; i < F->nmem; i++)
    printf("                  0x%010" PRIx64 " - 0x%010" PRIx64 "  %-10s %s\n", F->mem[i].start, F->mem[i].end,
           fmt_size(a, F->mem[i].end - F->mem[i].start + 1), F->mem[i].name);
  printf("lowest frame    4K pages: ");
  if (F->low_4k) printf("0x%" PRIx64 " (of %u frames from 8 buffers, pool off)\n", F->low_4k, F->frames_4k);
  else printf("unknown: %s\n", F->low_4k_why);
  printf("                pool:     ");
  if (F->low_pool) printf("0x%" PRIx64 " (after reserving 2 MiB; %s held)\n", F->low_pool, fmt_size(b, F->pool_reserved));
  else printf("unknown: %s\n", F->low_pool_why);
  printf("reservations    ");
  if (!F->nrsv) printf("none (dmakit reserve keeps memory below a mask for every later process)\n");
  for (size_t i = 0; i < F->nrsv; i++)
    printf("%smask 0x%" PRIx64 ": %s, %u of %u pages held by running processes\n", i ? "                " : "",
           F->rsv[i].mask, fmt_size(a, (uint64_t)F->rsv[i].pages * F->rsv[i].page_size), F->rsv[i].pages_claimed,
           F->rsv[i].pages);
  printf("masks           bits  mask          4K pages  pool  IOMMU    the next process\n");
  for (int i = 0; i < 4; i++) {
    const mask_row *m = &F->masks[i];
    char next[96];
    switch (m->next) {
    case NEXT_ALL_RAM:   snprintf(next, sizeof next, "yes: all RAM lies below the mask"); break;
    case NEXT_RESERVED:  snprintf(next, sizeof next, "reserved (%s, %s free)", fmt_size(a, m->reserved),
                                  fmt_size(b, m->reserved_free)); break;
    case NEXT_FOUND_NOW: snprintf(next, sizeof next, "found now, not held"); break;
    case NEXT_NO:        snprintf(next, sizeof next, "no"); break;
    default:             snprintf(next, sizeof next, "?"); break;
    }
    printf("                %-4u  0x%-10" PRIx64 "  %-8s  %-4s  %-7s  %s\n", m->bits, m->mask, yes_no(m->pages.ok),
           yes_no(m->pool.ok), F->iommu_groups > 0 ? "present" : "none", next);
  }
  for (int i = 0; i < 4; i++) {
    const mask_row *m = &F->masks[i];
    if (m->pages.ok == 0) printf("                %u-bit, 4K pages: %s\n", m->bits, m->pages.why);
    if (m->pool.ok == 0) printf("                %u-bit, pool: %s\n", m->bits, m->pool.why);
  }
  printf("IOMMU           %s\n", F->iommu_groups > 0 ? "present" : "none (no groups in /sys/kernel/iommu_groups)");
  if (F->iommu_groups > 0) printf("                %d IOMMU groups%s\n", F->iommu_groups, F->iommufd ? ", /dev/iommu (iommufd)" : "");
  printf("VFIO            /dev/vfio %s, vfio-pci %s\n", F->dev_vfio ? "present" : "absent",
         F->vfio_pci ? "loaded" : "not loaded");
  if (c->memlock_limit == UINT64_MAX) printf("locked memory   unlimited\n");
  else printf("locked memory   %s%s\n", fmt_size(a, c->memlock_limit), c->root ? " (root is not bound by it)" : "");
  printf("pinning         %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  printf("\n");
  if (!g_nprobs) printf("no problems found\n");
  for (int i = 0; i < g_nprobs; i++) {
    printf("%s: %s\n", sev_name[g_probs[i].sev], g_probs[i].text);
    if (g_probs[i].fix[0]) printf("  fix: %s\n", g_probs[i].fix);
  }
  printf("\nresult: %s (exit %d)\n", F->exit_code == EXIT_OK ? "all good" : F->exit_code == EXIT_FAIL
         ? "physical DMA buffers work, with warnings" : "physical DMA buffers cannot be made here", F->exit_code);
}

int cmd_doctor(int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, 0, 'j' }, { "no-probe", no_argument, 0, 'n' },
    { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
  };
  int json = 0, run_probes = 1, ch;
  optind = 1;
  while ((ch = getopt_cli("doctor", argc, argv, opts)) != -1) {
    if (ch == 'j') json = 1;
    else if (ch == 'n') run_probes = 0;
    else if (ch == 'h') {
      printf("usage: %s doctor [--json] [--no-probe]\n\n"
             "Checks privileges, pagemap, hugepages, the physical memory layout, the lowest frame the\n"
             "kernel gives user space (4K pages and the hugepage pool), which address masks (28, 32,\n"
             "36, 40 bits) each path meets, IOMMU and VFIO, the locked-memory limit and the pin\n"
             "method, and prints each problem with the line that fixes it.\n\n"
             "  --json       one JSON object on stdout\n"
             "  --no-probe   skip the probes that allocate buffers (and the low-memory searches;\n"
             "               DMAKIT_LOWMEM_SEARCH_MS bounds each search, default 3000)\n\n"
             "Exit: 0 all good, 1 warnings, 2 bad usage, 3 physical DMA buffers impossible here.\n", prog);
      return EXIT_OK;
    }
  }
  if (optind < argc) usage_error("doctor", "unexpected argument '%s'", argv[optind]);
  findings F;
  probe(&F, run_probes);
  judge(&F);
  if (json) print_json(&F);
  else print_text(&F);
  return F.exit_code;
}
