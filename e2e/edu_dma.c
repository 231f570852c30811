/*
 * e2e/edu_dma.c: dmakit end-to-end DMA test against QEMU's "edu" PCI device.
 *
 * Runs as /init's child in a booted Linux guest (root, no IOMMU: bus address = guest-physical
 * address). edu's DMA engine has a 28-bit address mask (QEMU clamps any RAM address to
 * addr & 0x0fffffff and prints "EDU: clamping DMA"), so a buffer dmakit hands out for a
 * 28-bit request must lie below 0x10000000 or the device reads and writes the wrong memory.
 *
 *   1. find edu (1234:11e8) in sysfs, enable memory + bus master, mmap BAR0, id + liveness
 *   2. plain 4K pages (DMAKIT_POOL off) for the 28-bit mask: refused, or verified below it;
 *      an unconstrained 4K page lies above it (the kernel hands user space high frames first)
 *   3. the hugepage pool for the 28-bit mask: two 4 KiB buffers (source, destination) below
 *      the mask, cross-checked through /proc/self/pagemap, zeroed, real DMA round trip exact
 *   4. a 2 MiB physically contiguous buffer under the mask: one segment, DMA into and out of
 *      its last 2048 bytes exact
 *   5. negative control: a 4K page above the mask whose clamped alias lies inside the 2 MiB
 *      buffer: the device reads/writes the alias, not the page (so the mask really matters)
 *   6. IODMACommand (28 bits, no mapper) on a 4K page above the mask: bounce pages below it;
 *      the device reads the data through them (prepare copied it out) and what it writes comes
 *      back at complete()
 *
 * edu registers (QEMU docs/specs/edu.rst): 0x00 id, 0x04 liveness (~val), 0x80 dma src,
 * 0x88 dma dst, 0x90 dma count, 0x98 dma cmd (bit0 start, bit1 1 = device->RAM).
 * The device-side buffer is at 0x40000, 4 KiB; QEMU 7.2 rejects a transfer that ends exactly
 * at 0x41000 (off-by-one, hw_error + abort), so every transfer here is 2048 bytes.
 *
 * Usage: edu_dma [fresh|search]. Prints "E2E-DMA [mode]: PASS (0 failures)" or "... FAIL (n failures)".
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
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "edu.h"

/* Walk a buffer's segments: count them, check each lies below `mask` (0 = no check) and
 * agrees page by page with pagemap. Returns the number of segments, 0 on a broken walk. */
static unsigned check_segments(const char *name, IOBufferMemoryDescriptor *b, uint64_t mask,
                               uint64_t *first_pa)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  IOByteCount total = IOMemoryDescriptor_getLength(md), off = 0;
  unsigned nseg = 0, below = 1, agree = 1;
  while (off < total) {
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(md, off, &len, 0);
    if (!pa || !len) { print_failure("getPhysicalSegment"); return 0; }
    if (nseg == 0 && first_pa) *first_pa = pa;
    if (nseg < 4) printf("  %s segment %u: bus 0x%llx length 0x%llx\n", name, nseg,
                         (unsigned long long)pa, (unsigned long long)len);
    if (mask && pa + len - 1 > mask) below = 0;
    for (IOByteCount o = 0; o < len; o += PG)
      if (pagemap_phys(va + off + o) != pa + o) agree = 0;
    nseg++;
    off += len;
  }
  if (mask) CHECK(below, "%s: every byte of every segment is below 0x%llx", name,
                  (unsigned long long)mask + 1);
  CHECK(agree, "%s: segments agree page by page with /proc/self/pagemap", name);
  return nseg;
}

static void print_stats(const char *when)
{
  dk_pool_stats st = { .size = sizeof st };
  if (dk_pool_get_stats(&st) != kIOReturnSuccess) { print_failure("dk_pool_get_stats"); return; }
  printf("pool stats (%s): lowmem_searches=%llu lowest_frame=0x%llx bytes_pool_2m=%llu "
         "bytes_pool_used=%llu bytes_4k=%llu grows=%llu requests_pool=%llu requests_slab=%llu "
         "requests_4k=%llu hugepages_raised_2m=%llu\n", when,
         (unsigned long long)st.lowmem_searches, (unsigned long long)st.lowest_frame,
         (unsigned long long)st.bytes_pool_2m, (unsigned long long)st.bytes_pool_used,
         (unsigned long long)st.bytes_4k, (unsigned long long)st.grows,
         (unsigned long long)st.requests_pool, (unsigned long long)st.requests_slab,
         (unsigned long long)st.requests_4k, (unsigned long long)st.hugepages_raised_2m);
}

static void print_file(const char *path)
{
  char buf[256];
  FILE *f = fopen(path, "r");
  if (!f) { printf("  %s: unreadable\n", path); return; }
  while (fgets(buf, sizeof buf, f)) printf("  %s: %s", path, buf);
  fclose(f);
}

/* "search" mode set-up, before dmakit runs: take every free persistent 2 MiB hugepage, then
 * give them back lowest frame first. The hugetlb free list is last-in first-out, so the kernel
 * then offers its highest hugepages first, as on a host whose preallocated pool has been used
 * for a while, and the pool must search for memory below the mask. */
static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Order the free persistent hugepages so the kernel offers the highest first; returns that
 * frame's address (0 when there were none). */
static uint64_t order_hugepages_high_first(void)
{
  char txt[32] = "0";
  FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "r");
  if (f) { if (!fgets(txt, sizeof txt, f)) txt[0] = 0; fclose(f); }
  long n = strtol(txt, NULL, 10);
  if (n <= 0) { printf("  note: no free persistent hugepages to order\n"); return 0; }
  int fd = memfd_create("e2e-order", MFD_CLOEXEC | MFD_HUGETLB);
  if (fd < 0 || ftruncate(fd, (off_t)n * (off_t)TWO_MB)) DIE("hugetlb memfd of %ld pages", n);
  uint8_t *m = mmap(NULL, (size_t)n * TWO_MB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) DIE("mmap %ld hugepages", n);
  uint64_t *key = malloc((size_t)n * sizeof *key);        /* phys | index (index < 2 MiB) */
  for (long i = 0; i < n; i++) {
    m[(size_t)i * TWO_MB] = 1;
    key[i] = pagemap_phys(m + (size_t)i * TWO_MB) | (uint64_t)i;
  }
  qsort(key, (size_t)n, sizeof *key, cmp_u64);
  munmap(m, (size_t)n * TWO_MB);
  for (long i = 0; i < n; i++) {
    off_t idx = (off_t)(key[i] & (TWO_MB - 1));
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, idx * (off_t)TWO_MB, (off_t)TWO_MB))
      DIE("punch hugepage %ld", (long)idx);
  }
  close(fd);
  printf("  ordered %ld free hugepages high first: frames 0x%llx..0x%llx, the kernel offers "
         "0x%llx first\n", n, (unsigned long long)(key[0] & ~(TWO_MB - 1)),
         (unsigned long long)(key[n - 1] & ~(TWO_MB - 1)),
         (unsigned long long)(key[n - 1] & ~(TWO_MB - 1)));
  uint64_t first = key[n - 1] & ~(TWO_MB - 1);
  free(key);
  return first;
}

static const char *provider_of(IOBufferMemoryDescriptor *b)
{
  dk_buffer_info info;
  if (dk_buffer_get_info(b, &info) != kIOReturnSuccess) return "?";
  return dk_provider_name(info.provider);
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  read_mask();
  /* "fresh": whatever the kernel hands out; "search": the caller preallocated persistent
   * hugepages, whose free list gives the highest first, so the pool must search low memory */
  const char *mode = argc > 1 ? argv[1] : "fresh";
  int expect_search = !strcmp(mode, "search");
  double t_start = now();
  struct utsname u;
  uname(&u);
  printf("E2E-DMA [%s]: dmakit %d.%d.%d on %s %s\n", mode, DMAKIT_VERSION_MAJOR,
         DMAKIT_VERSION_MINOR, DMAKIT_VERSION_PATCH, u.sysname, u.release);
  print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
  print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    while (f && fgets(line, sizeof line, f))
      if (!strncmp(line, "MemTotal", 8) || !strncmp(line, "MemFree", 7)) printf("  %s", line);
    if (f) fclose(f);
  }
  for (dk_option o = DK_OPTION_POOL; o < DK_OPTION__COUNT; o++)
    printf("  option DMAKIT_%s = %ld\n", dk_option_name(o), dk_option_get(o));
  pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
  if (pagemap_fd < 0) DIE("open /proc/self/pagemap");

  uint64_t first_hugepage = expect_search ? order_hugepages_high_first() : 0;

  /* ---- 1. the device ----------------------------------------------------------------- */
  char *bdf = find_edu();
  if (!bdf) DIE("no edu device (1234:11e8) found");
  printf("edu device at %s\n", bdf);
  open_edu(bdf);

  const dk_caps *caps = dk_capabilities();
  printf("caps: root=%d pagemap_frames=%d pin=%s (%s) ram_top=0x%llx hugepage sizes:",
         caps->root, caps->pagemap_frames, dk_pin_method_name(caps->pin_method), caps->pin_detail,
         (unsigned long long)caps->ram_top);
  for (uint32_t i = 0; i < caps->hugepage_size_count; i++)
    printf(" %llu KiB", (unsigned long long)(caps->hugepage_sizes[i] >> 10));
  printf(" pool_usable=%d\n", caps->pool_usable);
  CHECK(caps->pagemap_frames, "pagemap shows frame numbers (root)");
  CHECK(caps->pin_method != DK_PIN_NONE, "frames can be pinned (%s)", dk_pin_method_name(caps->pin_method));
  CHECK(caps->pool_usable, "the hugepage pool is usable (hugetlb present)");
  /* with all RAM below the mask (a wide E2E_DMA_MASK, a small guest) there is nothing to
   * search for and nothing for edu to clamp: those checks are skipped, and said so */
  bool ram_above = caps->ram_top > dma_mask + 1;
  if (ram_above) {
    printf("ok: guest RAM (top 0x%llx) extends above the mask\n", (unsigned long long)caps->ram_top);
  } else {
    printf("note: all guest RAM (top 0x%llx) lies below the mask: no low-memory search, no clamping\n",
           (unsigned long long)caps->ram_top);
    printf("E2E-NO-CLAMP: the negative control needs RAM above the mask\n");
    expect_search = 0;
  }
  if (expect_search && first_hugepage + TWO_MB - 1 <= dma_mask) {
    printf("note: every preallocated hugepage lies below the mask (the first offered is 0x%llx): "
           "no search is needed\n", (unsigned long long)first_hugepage);
    expect_search = 0;
  }

  /* ---- 2. plain 4K pages, pool off ---------------------------------------------------- */
  printf("--- plain 4K pages (DK_OPTION_POOL=0)\n");
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *plain =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, PG, PG);
  uint64_t plain_pa = 0;
  if (!plain) { print_failure("unconstrained 4K page"); failures++; }
  else {
    check_segments("plain 4K page", plain, 0, &plain_pa);
    printf("  plain unconstrained 4K page at bus 0x%llx (provider %s)\n",
           (unsigned long long)plain_pa, provider_of(plain));
    /* where the kernel puts a 4K page is the kernel's business, not a dmakit promise: usually
     * above the mask (high frames first), now and then below it (as with m4 below) */
    if (plain_pa > dma_mask)
      printf("  an unconstrained 4K page lands above the mask (0x%llx): the kernel hands user space "
             "high frames first\n", (unsigned long long)plain_pa);
    else
      printf("  note: this boot's kernel handed out a low 4K page (0x%llx)\n", (unsigned long long)plain_pa);
  }
  OSSafeReleaseNULL(plain);
  IOBufferMemoryDescriptor *m4 =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, PG, dma_mask);
  if (!m4) {
    print_failure("4K pages for the mask");
    CHECK(dk_last_failure()->constraint == DK_CONSTRAINT_MASK,
          "4K pages refuse the mask, naming the mask constraint");
  } else {
    uint64_t pa = 0;
    check_segments("4K-page masked buffer", m4, dma_mask, &pa);
    printf("  note: 4K pages happened to meet the mask (bus 0x%llx, provider %s)\n",
           (unsigned long long)pa, provider_of(m4));
    OSSafeReleaseNULL(m4);
  }
  dk_option_set(DK_OPTION_POOL, 1);

  /* ---- 3. the pool: source and destination under the mask ---------------------------- */
  printf("--- hugepage pool, inTaskWithPhysicalMask(kernel_task, InOut, 4096, 0x%llx) x2\n",
         (unsigned long long)dma_mask);
  double t0 = now();
  IOBufferMemoryDescriptor *src =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, PG, dma_mask);
  if (!src) print_failure("source buffer");
  IOBufferMemoryDescriptor *dst =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, PG, dma_mask);
  if (!dst) print_failure("destination buffer");
  printf("  allocation took %.2f s\n", now() - t0);
  print_stats("after the two masked buffers");
  CHECK(src && dst, "dmakit gave two buffers for the mask");
  if (expect_search) {
    /* where the kernel's hugepages lie is the layout's business, not a promise: what dmakit
     * promises (every buffer below the mask, verified through pagemap; the data round-trips)
     * is checked below, and whether it took a search to keep it is only reported */
    dk_pool_stats st = { .size = sizeof st };
    dk_pool_get_stats(&st);
    printf("note: the kernel offered hugepages above the mask first; %s (%llu search(es), lowest frame 0x%llx)\n",
           st.lowmem_searches ? "the low-memory search ran" : "the pool met the mask without a search",
           (unsigned long long)st.lowmem_searches, (unsigned long long)st.lowest_frame);
  }
  if (!src || !dst) {
    print_file("/proc/sys/vm/nr_overcommit_hugepages");
    print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/surplus_hugepages");
    printf("E2E-DMA [%s]: FAIL (%d failures)\n", mode, failures);
    return 1;
  }
  uint64_t src_pa = 0, dst_pa = 0;
  uint8_t *S = IOBufferMemoryDescriptor_getBytesNoCopy(src), *D = IOBufferMemoryDescriptor_getBytesNoCopy(dst);
  check_segments("source", src, dma_mask, &src_pa);
  check_segments("destination", dst, dma_mask, &dst_pa);
  printf("  source bus 0x%llx (provider %s), destination bus 0x%llx (provider %s)\n",
         (unsigned long long)src_pa, provider_of(src), (unsigned long long)dst_pa, provider_of(dst));
  CHECK(src_pa + PG - 1 <= dma_mask && dst_pa + PG - 1 <= dma_mask,
        "both bus addresses + 4095 are at or below the mask 0x%llx", (unsigned long long)dma_mask);
  CHECK(all_zero(S, PG) && all_zero(D, PG), "both buffers are zeroed");

  fill(S, PG, 0xA11CE);
  t0 = now();
  round_trip(src_pa, dst_pa);
  printf("  round trip took %.3f s\n", now() - t0);
  CHECK(memcmp(S, D, XFER) == 0, "DMA round trip RAM(0x%llx)->edu->RAM(0x%llx): %llu bytes exact",
        (unsigned long long)src_pa, (unsigned long long)dst_pa, XFER);
  CHECK(all_zero(D + XFER, PG - XFER), "destination bytes past the transfer are untouched");

  /* ---- 4. 2 MiB physically contiguous under the mask --------------------------------- */
  printf("--- 2 MiB contiguous under the mask (dk_constraints high=0x0FFFFFFF contiguous)\n");
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = dma_mask;
  c.contiguous = true;
  t0 = now();
  IOBufferMemoryDescriptor *big =
      IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, TWO_MB, &c);
  printf("  allocation took %.2f s\n", now() - t0);
  uint64_t big_pa = 0;
  uint8_t *BIG = NULL;
  if (!big) { print_failure("2 MiB contiguous"); failures++; }
  else {
    BIG = IOBufferMemoryDescriptor_getBytesNoCopy(big);
    unsigned n = check_segments("2 MiB contiguous", big, dma_mask, &big_pa);
    printf("  2 MiB buffer at bus 0x%llx (provider %s)\n", (unsigned long long)big_pa, provider_of(big));
    CHECK(n == 1, "2 MiB buffer is one physical segment (%u)", n);
    CHECK(all_zero(BIG, TWO_MB), "2 MiB buffer is zeroed");
    uint64_t tail = big_pa + TWO_MB - XFER;
    fill(S, PG, 0xB16B00);
    round_trip(src_pa, tail);
    CHECK(memcmp(S, BIG + TWO_MB - XFER, XFER) == 0, "DMA into the last 2048 bytes (bus 0x%llx) exact",
          (unsigned long long)tail);
    CHECK(all_zero(BIG, TWO_MB - XFER), "the rest of the 2 MiB buffer is untouched");
    fill(BIG + TWO_MB - XFER, XFER, 0xC0FFEE);
    memset(D, 0, PG);
    round_trip(tail, dst_pa);
    CHECK(memcmp(BIG + TWO_MB - XFER, D, XFER) == 0, "DMA out of the last 2048 bytes exact");
  }
  print_stats("after the 2 MiB buffer");

  /* ---- 5. negative control: above the mask, edu clamps ------------------------------- */
  printf("--- negative control: a 4K page above the mask is clamped by edu\n");
  dk_option_set(DK_OPTION_POOL, 0);
  /* 256 MiB, or half of what the guest has available when that is less (a small guest with
   * preallocated hugepages): dmakit refuses what the machine cannot hold */
  uint64_t hsize = 256ull << 20;
  {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
      if (sscanf(line, "MemAvailable: %llu", &kb) == 1) break;
    if (f) fclose(f);
    if (kb && (kb << 10) / 2 < hsize) hsize = ((kb << 10) / 2) & ~((1ull << 20) - 1);
  }
  t0 = now();
  IOBufferMemoryDescriptor *hi =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, hsize, PG);
  dk_option_set(DK_OPTION_POOL, 1);
  if (!ram_above) printf("  skipped: no RAM above the mask\n");
  else if (!hi) { print_failure("plain 4K pages for the negative control"); failures++; }
  else if (big) {
    IOMemoryDescriptor *hmd = (IOMemoryDescriptor *)hi;
    uint8_t *H = IOBufferMemoryDescriptor_getBytesNoCopy(hi);
    /* every frame below the mask this process owns, by frame number: the low pages of this
     * 4K buffer and the 2 MiB buffer (but not source/destination, which are checked) */
    uint8_t **owned = calloc((dma_mask + 1) / PG, sizeof *owned);
    if (!owned) DIE("calloc");
    for (uint64_t o = 0; o + PG <= TWO_MB - PG; o += PG) owned[(big_pa + o) / PG] = BIG + o;
    uint64_t above = 0, lowest = UINT64_MAX, hit_off = UINT64_MAX, hit_pa = 0;
    for (uint64_t off = 0; off < hsize; off += PG) {
      IOByteCount len;
      uint64_t pa = IOMemoryDescriptor_getPhysicalSegment(hmd, off, &len, 0);
      if (pa < lowest) lowest = pa;
      if (pa + PG - 1 <= dma_mask) owned[pa / PG] = H + off;
      else above++;
    }
    for (uint64_t off = 0; off < hsize && hit_off == UINT64_MAX; off += PG) {
      IOByteCount len;
      uint64_t pa = IOMemoryDescriptor_getPhysicalSegment(hmd, off, &len, 0);
      if (pa > dma_mask && owned[(pa & dma_mask) / PG]) { hit_off = off; hit_pa = pa; }
    }
    printf("  %llu MiB of plain 4K pages in %.2f s: %llu of %llu pages above the mask, lowest 0x%llx\n",
           (unsigned long long)(hsize >> 20), now() - t0, (unsigned long long)above, (unsigned long long)(hsize / PG),
           (unsigned long long)lowest);
    if (hit_off == UINT64_MAX) {
      printf("  note: no high page's alias is memory of ours; read-direction check only\n");
      for (uint64_t off = 0; off < hsize; off += PG) {
        IOByteCount len;
        uint64_t pa = IOMemoryDescriptor_getPhysicalSegment(hmd, off, &len, 0);
        if (pa > dma_mask) { hit_off = off; hit_pa = pa; break; }
      }
    }
    /* the control needs a page above the mask, which the kernel may not hand out: a layout
     * fact, reported, not a failure */
    if (hit_off == UINT64_MAX)
      printf("note: none of the 256 MiB of 4K pages lies above the mask: no negative control this run\n"
             "E2E-NO-CLAMP: the kernel gave no page above the mask\n");
    else
      printf("ok: found a page above the mask\n");
    if (hit_off != UINT64_MAX) {
      uint8_t *HP = H + hit_off;
      uint64_t alias = hit_pa & dma_mask;
      uint8_t *AL = owned[alias / PG];
      int in_big = alias >= big_pa && alias < big_pa + TWO_MB;
      printf("  high page bus 0x%llx clamps to 0x%llx%s\n", (unsigned long long)hit_pa,
             (unsigned long long)alias,
             AL ? (in_big ? " (inside our 2 MiB buffer)" : " (one of our own low 4K pages)") : " (not ours)");
      fill(HP, PG, 0x5EED);
      if (AL) fill(AL, PG, 0xA1A5);
      memset(D, 0, PG);
      round_trip(hit_pa, dst_pa);                         /* device reads the high page */
      CHECK(memcmp(HP, D, XFER) != 0, "above-mask source 0x%llx is NOT copied faithfully (clamped)",
            (unsigned long long)hit_pa);
      if (AL) {
        CHECK(memcmp(AL, D, XFER) == 0, "the device read the alias 0x%llx instead",
              (unsigned long long)alias);
        uint8_t save[PG];
        memcpy(save, HP, PG);
        fill(S, PG, 0xD00D);
        round_trip(src_pa, hit_pa);                       /* device writes the high page */
        CHECK(memcmp(HP, save, PG) == 0, "above-mask destination page is left unchanged");
        CHECK(memcmp(AL, S, XFER) == 0, "the write landed on the alias 0x%llx instead",
              (unsigned long long)alias);
      }
    }
    free(owned);
  }
  OSSafeReleaseNULL(hi);

  /* ---- 6. IODMACommand: a buffer above the mask is double-buffered ------------------- */
  printf("--- IODMACommand(%u bits, no mapper) on a 4K-page buffer: bounce pages when it lies above the mask\n",
         mask_bits);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *far = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, PG, PG);
  dk_option_set(DK_OPTION_POOL, 1);
  uint8_t *F = far ? IOBufferMemoryDescriptor_getBytesNoCopy(far) : NULL;
  uint64_t far_pa = F ? pagemap_phys(F) : 0;
  printf("  buffer RAM 0x%llx (%s the mask)\n", (unsigned long long)far_pa, far_pa > dma_mask ? "above" : "below");
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)mask_bits, 0, kIODMAMapOptionMapped, 0, 1,
                                                     NULL, NULL);
  if (far && cmd) {
    fill(F, XFER, 0xB0B0);
    IOReturn rc = IODMACommand_setMemoryDescriptor(cmd, (IOMemoryDescriptor *)far, true);   /* prepare: copies out */
    if (rc) print_failure("IODMACommand prepare");
    IODMACommandSegment64 seg[4];
    UInt32 nseg = 4;
    UInt64 off = 0;
    if (rc == kIOReturnSuccess) rc = IODMACommand_gen64IOVMSegments(cmd, &off, seg, &nseg);
    CHECK(rc == kIOReturnSuccess && nseg >= 1 && seg[0].fIOVMAddr + seg[0].fLength - 1 <= dma_mask,
          "the command's first segment 0x%llx+0x%llx lies below the mask", nseg ? (unsigned long long)seg[0].fIOVMAddr : 0ull,
          nseg ? (unsigned long long)seg[0].fLength : 0ull);
    CHECK(far_pa <= dma_mask || dk_dmacommand_is_double_buffered(cmd), "a buffer above the mask is double-buffered");
    if (rc == kIOReturnSuccess && nseg >= 1 && seg[0].fLength >= XFER) {
      memset(D, 0, PG);
      round_trip(seg[0].fIOVMAddr, dst_pa);               /* the device reads the bounce page */
      CHECK(memcmp(F, D, XFER) == 0, "the device read the buffer's data through the bounce page");
      fill(S, XFER, 0xC0C0);
      round_trip(src_pa, seg[0].fIOVMAddr);               /* and writes into it */
      if (dk_dmacommand_is_double_buffered(cmd)) {
        CHECK(memcmp(F, S, XFER) != 0, "before complete() the device's data is in the bounce page only");
        IODMACommand_complete(cmd, true, true);           /* copies in */
        CHECK(memcmp(F, S, XFER) == 0, "complete() copied what the device wrote back into the buffer");
      } else {
        printf("  note: the page lies below the mask: no bounce, the device wrote it directly\n");
        CHECK(memcmp(F, S, XFER) == 0, "the device wrote the buffer directly");
        IODMACommand_complete(cmd, true, true);
      }
      IODMACommand_clearMemoryDescriptor(cmd, false);
    } else {
      IODMACommand_clearMemoryDescriptor(cmd, true);
    }
  } else {
    CHECK(far && cmd, "a 4K-page buffer and an IODMACommand for the mask");
  }
  OSSafeReleaseNULL(cmd);
  OSSafeReleaseNULL(far);

  /* ---- the records and the release --------------------------------------------------- */
  printf("--- bookkeeping\n");
  print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages");
  print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/surplus_hugepages");
  {
    DIR *d = opendir("/run/dmakit");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') { printf("  /run/dmakit/%s\n", e->d_name); n++; }
    if (d) closedir(d);
    printf("  %d record(s) under /run/dmakit\n", n);
  }
  printf("summary: source 0x%llx destination 0x%llx 2MiB 0x%llx (mask 0x%llx)\n",
         (unsigned long long)src_pa, (unsigned long long)dst_pa, (unsigned long long)big_pa,
         (unsigned long long)dma_mask);
  print_stats("final");
  OSSafeReleaseNULL(big);
  OSSafeReleaseNULL(src);
  OSSafeReleaseNULL(dst);
  dk_pool_trim();
  print_stats("after release and trim");
  print_file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages");

  printf("test took %.2f s\n", now() - t_start);
  printf("E2E-DMA [%s]: %s (%d failures)\n", mode, failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
