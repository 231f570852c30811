/*
 * e2e/edu_vfio.c: dmakit end-to-end DMA test through an IOMMU (variant B). Runs in a q35 guest
 * with QEMU's intel-iommu, edu bound to vfio-pci. Every bus address the device sees comes from
 * dmakit's VFIO type1 mapper; edu's engine still drops address bits above its mask (28 by
 * default, E2E_DMA_MASK), now of the IOVA.
 *
 *   1. dk_mapper_open_vfio(edu): the IOVA apertures and mapping limit the kernel reports; BAR0
 *      and config space through the VFIO device descriptor; memory + bus master on
 *   2. the mapper as system mapper; two 4 KiB buffers with edu's mask 0x0FFFFFFF: their IOVAs
 *      lie below the mask (one segment each) although the RAM behind them may not (printed);
 *      RAM -> device -> RAM round trip exact, checked first (a dead engine would pass step 5)
 *   3. IOVA contiguity from scattered RAM: a 64 KiB buffer of 4K pages (DMAKIT_POOL off for it),
 *      physically discontiguous (checked through pagemap), one IOVA range: a transfer across
 *      its page boundary round-trips exactly
 *   4. a buffer above the device's reach (no mask, 4K pages: its IOVA is placed high, highest
 *      first): IODMACommand with the mask's address bits maps it again below it, and the device
 *      round-trips data through it exactly
 *   5. negative control: the same buffer's own high IOVA given to the device is clamped; the
 *      device does not read that buffer (so the limit is real)
 *   6. refusal: an IODMACommand whose address space is too small for the buffer fails cleanly
 *   7. teardown: no mapping left live, dk_mapper_close reports no leak
 *   0. first, fault sweeps (the library's fault injector, src/prim): every system call of
 *      dk_mapper_open_vfio, then of creating a masked buffer mapped through the mapper, made to
 *      fail in turn (the Nth call, once and for ever, with each call's typical errno and with
 *      EINTR, EBUSY and ENOENT): each failure is an IOReturn with a reason, nothing is left
 *      behind (descriptors, mapped and locked bytes, heap blocks, live IOMMU mappings), and
 *      the operation works again unfaulted. Only a guest with a VFIO device reaches these paths.
 *
 * Usage: edu_vfio. Prints "E2E-VFIO: PASS (0 failures)" or "E2E-VFIO: FAIL (n failures)".
 */
#define _GNU_SOURCE
#include "edu.h"
#include "prim/prim.h"          /* the fault injector and the live-resource counters */

#include <fcntl.h>
#include <inttypes.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

static int device_fd = -1;

static void open_edu_vfio(const char *bdf, IOMapper **mapper)
{
  IOReturn rc = dk_mapper_open_vfio(bdf, mapper);
  if (rc != kIOReturnSuccess) {
    print_failure("dk_mapper_open_vfio");
    DIE("cannot open %s through VFIO", bdf);
  }
  dk_mapper_info info;
  dk_mapper_get_info(*mapper, &info);
  printf("VFIO type1 mapper: %u IOVA range(s), mapping limit %u, IOMMU page sizes 0x%" PRIx64 "\n",
         info.iova_range_count, info.dma_limit, info.page_sizes);
  for (uint32_t i = 0; i < info.iova_range_count; i++)
    printf("  IOVA range [0x%" PRIx64 ", 0x%" PRIx64 "]\n", info.iova_ranges[i].start, info.iova_ranges[i].end);
  CHECK(info.kind == DK_MAPPER_VFIO_TYPE1 && info.iova_range_count > 0, "the kernel reported IOVA ranges");
  device_fd = dk_mapper_vfio_device_fd(*mapper);
  CHECK(device_fd >= 0, "the mapper holds the VFIO device descriptor");

  struct vfio_region_info cfg = { .argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX };
  if (ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0) DIE("config region info");
  uint16_t cmd;
  if (pread(device_fd, &cmd, 2, (off_t)cfg.offset + 4) != 2) DIE("read PCI command");
  cmd |= 0x6;                                     /* memory space + bus master */
  if (pwrite(device_fd, &cmd, 2, (off_t)cfg.offset + 4) != 2) DIE("write PCI command");
  if (pread(device_fd, &cmd, 2, (off_t)cfg.offset + 4) != 2) DIE("read PCI command");
  CHECK((cmd & 0x6) == 0x6, "memory decoding and bus mastering enabled through VFIO");

  struct vfio_region_info bar0 = { .argsz = sizeof bar0, .index = VFIO_PCI_BAR0_REGION_INDEX };
  if (ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &bar0) < 0) DIE("BAR0 region info");
  bar = mmap(NULL, (size_t)bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, device_fd, (off_t)bar0.offset);
  if (bar == MAP_FAILED) DIE("mmap BAR0 through VFIO");
  uint32_t id = rd32(REG_ID);
  printf("edu id register = 0x%08x\n", id);
  CHECK((id & 0xffff) == 0x00ed, "id register low half is 0x00ed");
  wr32(REG_LIVE, 0x12345678);
  CHECK(rd32(REG_LIVE) == ~0x12345678u, "liveness register inverts");
}

/* ---- 0. fault sweeps ------------------------------------------------------------------ */
typedef struct sweep { unsigned runs, failed, harmless, bad; } sweep;

static bool counters_equal(dk_prim_counters a, dk_prim_counters b)
{
  return a.fds == b.fds && a.map_bytes == b.map_bytes && a.lock_bytes == b.lock_bytes && a.heap_blocks == b.heap_blocks;
}

/* One faulted run of `op`; true while faults still fire (the sweep goes on). */
static bool sweep_step(sweep *w, const char *name, unsigned long n, int forever, int err,
                       IOReturn (*op)(void *), void *arg, uint32_t (*live)(void *))
{
  dk_prim_counters c0 = dk__prim_counters();
  uint32_t l0 = live(arg);
  dk__fault_arm(n, forever, 0, err);
  IOReturn rc = op(arg);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  w->runs++;
  if (rc == kIOReturnSuccess) w->harmless += fired != 0;
  else w->failed++;
  if (rc != kIOReturnSuccess && (!fired || !dk_last_failure()->text[0])) {
    w->bad++;
    printf("  %s, call %lu%s errno %d: %s without %s\n", name, n, forever ? "+" : "", err, dk_ioreturn_name(rc),
           fired ? "a reason" : "a fault");
  }
  dk_prim_counters c1 = dk__prim_counters();
  uint32_t l1 = live(arg);
  if (!counters_equal(c0, c1) || l0 != l1) {
    w->bad++;
    printf("  %s, call %lu%s errno %d (%s): left fds %+ld, mapped %+ld, locked %+ld, heap %+ld, IOMMU mappings %+d\n",
           name, n, forever ? "+" : "", err, dk_ioreturn_name(rc), c1.fds - c0.fds, c1.map_bytes - c0.map_bytes,
           c1.lock_bytes - c0.lock_bytes, c1.heap_blocks - c0.heap_blocks, (int)(l1 - l0));
  }
  return fired != 0;
}

static void sweep_all(sweep *w, const char *name, IOReturn (*op)(void *), void *arg, uint32_t (*live)(void *))
{
  static const int errs[] = { 0, EINTR, EBUSY, ENOENT };
  for (size_t e = 0; e < sizeof errs / sizeof errs[0]; e++)
    for (int forever = 0; forever < 2; forever++)
      for (unsigned long n = 1; n < 1000 && sweep_step(w, name, n, forever, errs[e], op, arg, live); n++) {}
}

static uint32_t no_mappings(void *arg) { (void)arg; return 0; }

static IOReturn open_close(void *bdf)
{
  IOMapper *m = NULL;
  IOReturn rc = dk_mapper_open_vfio(bdf, &m);
  if (rc == kIOReturnSuccess && m == NULL) return kIOReturnInternalError;
  if (rc != kIOReturnSuccess && m != NULL) return kIOReturnInternalError;
  if (m) dk_mapper_close(m, NULL, 0);
  return rc;
}

static uint32_t live_mappings(void *mapper)
{
  dk_mapper_info info;
  dk_mapper_get_info(mapper, &info);
  return info.mappings_live;
}

static IOReturn masked_buffer(void *mapper)
{
  (void)mapper;
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, PG, dma_mask);
  if (!b) return dk_last_failure()->code ? dk_last_failure()->code : kIOReturnNoMemory;
  uint64_t len = 0;
  uint64_t iova = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &len, 0);
  OSObject_release(b);
  return iova && iova + PG - 1 <= dma_mask ? kIOReturnSuccess : kIOReturnInternalError;
}

static void fault_sweeps(const char *bdf)
{
  sweep w = { 0 };
  CHECK(open_close((void *)bdf) == kIOReturnSuccess, "warm-up: the VFIO mapper opens and closes");
  sweep_all(&w, "dk_mapper_open_vfio", open_close, (void *)bdf, no_mappings);
  printf("open sweep: %u faulted runs, %u failed cleanly, %u succeeded despite the fault\n", w.runs, w.failed, w.harmless);
  CHECK(w.bad == 0 && w.failed > 0, "every failure of dk_mapper_open_vfio is clean (%u not)", w.bad);

  IOMapper *m = NULL;
  if (dk_mapper_open_vfio(bdf, &m) != kIOReturnSuccess) DIE("open after the sweep");
  dk_mapper_set_system(m);
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);            /* a new buffer each time (no kept pool buffers) */
  sweep b = { 0 };
  CHECK(masked_buffer(m) == kIOReturnSuccess, "warm-up: a masked buffer through the mapper");
  sweep_all(&b, "masked buffer through the mapper", masked_buffer, m, live_mappings);
  printf("buffer sweep: %u faulted runs, %u failed cleanly, %u succeeded despite the fault\n", b.runs, b.failed, b.harmless);
  CHECK(b.bad == 0 && b.failed > 0, "every failure of a masked buffer through the mapper is clean (%u not)", b.bad);
  dk_option_set(DK_OPTION_POOL, pool);
  dk_mapper_set_system(NULL);
  CHECK(dk_mapper_close(m, NULL, 0) == 0, "after the sweeps the mapper closes with no mapping left");
}

static IOBufferMemoryDescriptor *masked(size_t size, const char *what)
{
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, size, dma_mask);
  if (!b) print_failure(what);
  CHECK(b != NULL, "%s: %zu bytes with mask 0x%llx", what, size, (unsigned long long)dma_mask);
  return b;
}

static uint64_t bus_of(IOBufferMemoryDescriptor *b, uint64_t *len)
{
  return IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, len, 0);
}

int main(void)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  read_mask();
  pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
  char *bdf = find_edu();
  if (!bdf) DIE("no edu device");
  printf("edu device at %s\n", bdf);
  fault_sweeps(bdf);
  IOMapper *m = NULL;
  open_edu_vfio(bdf, &m);
  dk_mapper_set_system(m);

  /* 2. the mask limits the IOVA, the RAM may be anywhere */
  IOBufferMemoryDescriptor *src = masked(PG, "source"), *dst = masked(PG, "destination");
  if (!src || !dst) DIE("masked buffers through the mapper");
  uint64_t sl, dl;
  uint64_t s_iova = bus_of(src, &sl), d_iova = bus_of(dst, &dl);
  uint8_t *s = IOBufferMemoryDescriptor_getBytesNoCopy(src), *d = IOBufferMemoryDescriptor_getBytesNoCopy(dst);
  printf("source IOVA 0x%" PRIx64 " (RAM 0x%" PRIx64 "), destination IOVA 0x%" PRIx64 " (RAM 0x%" PRIx64 ")\n",
         s_iova, pagemap_phys(s), d_iova, pagemap_phys(d));
  CHECK(s_iova && s_iova + PG - 1 <= dma_mask && d_iova && d_iova + PG - 1 <= dma_mask, "both IOVAs lie below 2^%u", mask_bits);
  CHECK(sl == PG && dl == PG, "one IOVA segment per buffer");
  uint64_t pa_len;
  uint64_t s_pa = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)src, 0, &pa_len, kIOMemoryMapperNone);
  CHECK(s_pa == pagemap_phys(s), "kIOMemoryMapperNone gives the RAM address (0x%" PRIx64 ")", s_pa);
  CHECK(all_zero(s, PG) && all_zero(d, PG), "buffers come zeroed");
  fill(s, XFER, 1);
  double t0 = now();
  round_trip(s_iova, d_iova);
  printf("round trip took %.3f s\n", now() - t0);
  CHECK(memcmp(s, d, XFER) == 0, "RAM -> device -> RAM through IOVAs 0x%" PRIx64 " -> 0x%" PRIx64 " exact",
        s_iova, d_iova);

  /* 3. scattered pages, one IOVA range */
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *sc = masked(16 * PG, "scattered 64 KiB (4K pages)");
  dk_option_set(DK_OPTION_POOL, 1);
  if (sc) {
    uint8_t *v = IOBufferMemoryDescriptor_getBytesNoCopy(sc);
    unsigned breaks = 0;
    for (int i = 1; i < 16; i++)
      if (pagemap_phys(v + i * PG) != pagemap_phys(v + (i - 1) * PG) + PG) breaks++;
    uint64_t len, iova = bus_of(sc, &len);
    printf("64 KiB of 4K pages: %u physical discontinuities, IOVA 0x%" PRIx64 " + 0x%" PRIx64 "\n", breaks, iova, len);
    CHECK(len == 16 * PG && iova + len - 1 <= dma_mask, "one IOVA segment below 2^%u for all 64 KiB", mask_bits);
    uint64_t at = 5 * PG - XFER / 2;            /* across the page boundary 5 * 4K */
    memset(d, 0, PG);
    fill(v + at, XFER, 3);
    round_trip(iova + at, d_iova);
    CHECK(memcmp(v + at, d, XFER) == 0, "a transfer across a page boundary (%s) reads exactly",
          pagemap_phys(v + 5 * PG) != pagemap_phys(v + 4 * PG) + PG ? "physically discontiguous" : "contiguous");
    memset(v, 0, 16 * PG);
    round_trip(s_iova, iova + at);
    CHECK(memcmp(v + at, s, XFER) == 0, "and the device writes across it exactly");
  }

  /* 4. above the device's reach: IODMACommand maps it below */
  /* 4K pages: a pool buffer would share the hugepage mapping the masked buffers made, and
   * with it their low IOVAs (the mapper reuses a mapping whose IOVAs meet the request) */
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *hi = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, PG, PG);
  dk_option_set(DK_OPTION_POOL, 1);
  if (!hi) { print_failure("unconstrained buffer"); DIE("unconstrained buffer"); }
  uint64_t hl, hi_iova = bus_of(hi, &hl);
  uint8_t *h = IOBufferMemoryDescriptor_getBytesNoCopy(hi);
  printf("unconstrained buffer: IOVA 0x%" PRIx64 " (above 2^%u: %s)\n", hi_iova, mask_bits, hi_iova > dma_mask ? "yes" : "no");
  CHECK(hi_iova > dma_mask, "an unconstrained buffer's IOVA is placed above the device's reach");
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)mask_bits, 0, kIODMAMapOptionMapped, 0, 1, m, NULL);
  CHECK(cmd != NULL, "IODMACommand for %u address bits", mask_bits);
  if (cmd) {
    IOReturn rc = IODMACommand_setMemoryDescriptor(cmd, (IOMemoryDescriptor *)hi, true);
    if (rc) print_failure("setMemoryDescriptor");
    IODMACommandSegment64 seg[4];
    UInt32 nseg = 4;
    UInt64 off = 0;
    rc = rc ? rc : IODMACommand_gen64IOVMSegments(cmd, &off, seg, &nseg);
    if (rc) print_failure("gen64IOVMSegments");
    CHECK(rc == kIOReturnSuccess && nseg == 1 && seg[0].fIOVMAddr + seg[0].fLength - 1 <= dma_mask &&
              seg[0].fLength == PG,
          "the command's segment 0x%" PRIx64 "+0x%" PRIx64 " lies below 2^%u", nseg ? seg[0].fIOVMAddr : 0,
          nseg ? seg[0].fLength : 0, mask_bits);
    if (rc == kIOReturnSuccess && nseg == 1) {
      fill(h, XFER, 4);
      memset(d, 0, PG);
      round_trip(seg[0].fIOVMAddr, d_iova);
      CHECK(memcmp(h, d, XFER) == 0, "the device reads the buffer exactly through the command's IOVA");
      memset(h, 0, PG);
      round_trip(s_iova, seg[0].fIOVMAddr);
      CHECK(memcmp(h, s, XFER) == 0, "and writes it exactly");
    }
    IODMACommand_clearMemoryDescriptor(cmd, true);
    OSObject_release(cmd);
  }

  /* 5. negative control: the buffer's own high IOVA is clamped by the device */
  fill(h, XFER, 5);
  memset(d, 0, PG);
  round_trip(hi_iova, d_iova);
  CHECK(memcmp(h, d, XFER) != 0, "given the unreachable IOVA 0x%" PRIx64 " directly, the device does not read "
        "the buffer (it reads 0x%" PRIx64 ")", hi_iova, (uint64_t)(hi_iova & dma_mask));

  /* 6. refusal, never corruption: 16 address bits cannot hold 128 KiB */
  IOBufferMemoryDescriptor *big = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 32 * PG, PG);
  IODMACommand *small = IODMACommand_withSpecification(IODMACommand_OutputHost64, 16, 0, kIODMAMapOptionMapped, 0, 1, m, NULL);
  if (big && small) {
    IOReturn rc = IODMACommand_setMemoryDescriptor(small, (IOMemoryDescriptor *)big, true);
    if (rc) print_failure("16-bit command on 128 KiB");
    CHECK(rc != kIOReturnSuccess, "a 16-bit command refuses a 128 KiB buffer (%s)", dk_ioreturn_name(rc));
    IODMACommand_clearMemoryDescriptor(small, true);
  }
  OSObject_release(small);
  OSObject_release(big);

  /* 7. teardown */
  OSObject_release(hi);
  OSObject_release(sc);
  OSObject_release(src);
  OSObject_release(dst);
  dk_mapper_info info;
  dk_mapper_get_info(m, &info);
  printf("mapper: %u mappings live (peak %u), %" PRIu64 " double unmaps\n", info.mappings_live, info.mappings_peak,
         info.double_unmaps);
  CHECK(info.mappings_live == 0 && info.double_unmaps == 0, "every IOVA mapping was given back once");
  dk_mapper_set_system(NULL);
  char report[512];
  unsigned leaks = dk_mapper_close(m, report, sizeof report);
  CHECK(leaks == 0, "dk_mapper_close reports no leak%s%s", leaks ? ": " : "", leaks ? report : "");
  printf("E2E-VFIO: %s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
