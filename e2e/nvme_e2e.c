/*
 * e2e/nvme_e2e.c: the NVMe end-to-end test (scripts/e2e.sh variants c and d). Runs in a QEMU
 * guest whose nvme device is backed by a raw image the host filled with e2e/nvme_pattern.h's
 * pattern, and drives it with examples/nvme (dmakit only).
 *
 *   nvme_e2e sysfs   no IOMMU: BAR0 through sysfs, bus addresses are physical (dmakit's)
 *   nvme_e2e vfio    intel-iommu, the device on vfio-pci: bus addresses are IOVAs from dmakit's
 *                    VFIO mapper (the device's IOService mapper, made the system mapper)
 *
 * Three passes, the controller reset between them: with a 64-bit DMA mask, then a 32-bit and a
 * 28-bit one (E2E_NVME_MASK2 and E2E_NVME_MASK3 override; every queue, PRP list and data address
 * must lie below it; without an IOMMU, 4K-page data above it goes through a double buffer). In each:
 *   1. Identify: model, MDTS, the namespace's size agrees with the image;
 *   2. reads checked byte for byte against the pattern: a contiguous pool buffer, a buffer of
 *      scattered 4K pages larger than MDTS (split, PRP lists), a DriverKit buffer through
 *      IODMACommand_Create/PrepareForDMA;
 *   3. writes of the second pattern from the same three kinds of buffer, read back in the guest
 *      and reported ("E2E-NVME-WROTE offset bytes") for the host to find in the image;
 *   4. a failed command decoded: a read of namespace 0xffff (Invalid Namespace or Format) and
 *      one past the namespace's end (LBA Out of Range);
 *   5. (vfio) a read into an IOVA that was mapped and is no longer: the command fails and the
 *      memory that was behind it keeps its canary.
 * Prints "E2E-NVME <mode>: PASS (0 failures)" when every check held.
 */
#define _GNU_SOURCE
#include "nvme.h"
#include "nvme_pattern.h"

#include <fcntl.h>
#include <sys/klog.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; }               \
    else { printf("ok: " __VA_ARGS__); printf("\n"); }                                     \
  } while (0)

static int pagemap_fd = -1;
static uint64_t frame_of(const void *va)
{
  uint64_t e, ps = (uint64_t)sysconf(_SC_PAGESIZE);
  if (pread(pagemap_fd, &e, 8, (off_t)((uintptr_t)va / ps * 8)) != 8 || !(e & (1ull << 63))) return 0;
  return (e & ((1ull << 55) - 1)) * ps;
}

/* The highest physical byte of a buffer's pages (independent of dmakit: pagemap). */
static uint64_t highest_frame(IOBufferMemoryDescriptor *b)
{
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint64_t len = IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b), ps = (uint64_t)sysconf(_SC_PAGESIZE), hi = 0;
  for (uint64_t o = 0; o < len; o += ps) {
    uint64_t f = frame_of(p + o);
    if (f + ps - 1 > hi) hi = f + ps - 1;
  }
  return hi;
}

typedef enum kind { CONTIG, SCATTERED, DRIVERKIT } kind;
static const char *kind_name[] = { "contiguous pool buffer", "scattered 4K pages", "DriverKit buffer" };

static IOBufferMemoryDescriptor *make_buffer(nvme_ctrl *c, kind k, uint64_t len)
{
  IOBufferMemoryDescriptor *b = NULL;
  if (k == CONTIG) {
    /* inTaskWithPhysicalMask with kIOMemoryPhysicallyContiguous: one run under the mask */
    b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous,
                                                        len, c->dma_mask & ~(uint64_t)(c->page - 1));
  } else if (k == SCATTERED) {
    /* any wired pages (4K pages: DMAKIT_POOL off while it is made): IODMACommand copes */
    long pool = dk_option_get(DK_OPTION_POOL);
    dk_option_set(DK_OPTION_POOL, 0);
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, len, c->page);
    dk_option_set(DK_OPTION_POOL, pool);
  } else {
    IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, len, 0, &b);
  }
  if (!b) {
    const dk_failure *f = dk_last_failure();
    printf("  %s of %" PRIu64 " bytes: %s (%s)\n", kind_name[k], len, f->text, dk_ioreturn_name(f->code));
  }
  return b;
}

static IOReturn transfer(nvme_ctrl *c, kind k, bool write, uint64_t at, uint64_t len, IOBufferMemoryDescriptor *b,
                         nvme_status *st)
{
  uint32_t blocks = (uint32_t)(len / c->lba_size);
  if (k == DRIVERKIT) return nvme_rw_driverkit(c, write, at / c->lba_size, blocks, (IOMemoryDescriptor *)b, st);
  return nvme_rw(c, write, at / c->lba_size, blocks, (IOMemoryDescriptor *)b, 0, st);
}

static uint64_t length_of(nvme_ctrl *c, kind k, uint64_t slot_bytes)
{
  if (k == CONTIG) return 64 * 1024;
  if (k == DRIVERKIT) return c->max_transfer < 32 * 1024 ? c->max_transfer : 32 * 1024;
  /* more than MDTS: at least two full commands and a part */
  uint64_t len = 2 * (uint64_t)c->max_transfer + 16 * 1024;
  if (len < 256 * 1024) len = 256 * 1024;
  if (len > slot_bytes - 8192) len = (slot_bytes - 8192) / 4096 * 4096;
  return len;
}

/* Without a mapper, a 4K-page buffer with RAM above the device's mask shows the double buffer
 * at work: take up to 8 buffers until one has such a page (held meanwhile, then given back). */
static IOBufferMemoryDescriptor *above_mask(nvme_ctrl *c, kind k, uint64_t len)
{
  IOBufferMemoryDescriptor *held[8] = { 0 }, *b = NULL;
  int n = 0;
  while (n < 8 && (b = make_buffer(c, k, len)) && highest_frame(b) <= c->dma_mask) held[n++] = b, b = NULL;
  for (int i = 0; i < n; i++) {
    if (!b && i == n - 1) b = held[i];             /* none above: use the last, say so */
    else OSObject_release(held[i]);
  }
  return b;
}

static void one_kind(nvme_ctrl *c, kind k, uint64_t image_bytes, unsigned pass)
{
  uint64_t slot = nvme_slot(image_bytes, 1), len = length_of(c, k, slot);
  /* reads: slots 0-2 of the pass's six, writes 3-5; the scattered ones start off a page */
  uint64_t rat = nvme_slot(image_bytes, pass * 6 + k) + (k == SCATTERED ? 7ull * c->lba_size : 0);
  uint64_t wat = nvme_slot(image_bytes, pass * 6 + 3 + k) + (k == SCATTERED ? 3ull * c->lba_size : 0);
  bool want_high = k != CONTIG && !c->pci->mapper && c->dma_mask != UINT64_MAX;
  IOBufferMemoryDescriptor *b = want_high ? above_mask(c, k, len) : make_buffer(c, k, len);
  CHECK(b != NULL, "pass %u: %s of %" PRIu64 " KiB", pass, kind_name[k], len / 1024);
  if (!b) return;
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint64_t hi = highest_frame(b);
  uint64_t cmds0 = c->commands, db0 = c->double_buffered, lists0 = c->prp_lists;
  nvme_status st;
  memset(p, 0xee, len);
  IOReturn rc = transfer(c, k, false, rat, len, b, &st);
  uint64_t bad = rc ? 0 : nvme_pattern_check(p, rat, len, NVME_E2E_SEED);
  CHECK(rc == kIOReturnSuccess && bad == 0,
        "pass %u: read %" PRIu64 " bytes at byte %" PRIu64 " into the %s (RAM up to 0x%" PRIx64 "): %" PRIu64
        " command(s), %" PRIu64 " with a PRP list, %" PRIu64 " double-buffered; pattern %s",
        pass, len, rat, kind_name[k], hi, c->commands - cmds0, c->prp_lists - lists0, c->double_buffered - db0,
        rc ? nvme_status_name(st) : bad ? "differs" : "matches byte for byte");
  if (bad) printf("  first difference at byte %" PRIu64 "\n", bad - 1);
  if (len > c->max_transfer) CHECK(c->commands - cmds0 > 1, "pass %u: the transfer above MDTS was split", pass);
  if (hi > c->dma_mask && k != CONTIG && !c->pci->mapper)
    CHECK(c->double_buffered > db0, "pass %u: RAM above the mask went through a double buffer below it", pass);
  else if (want_high)
    printf("  note: no %s with RAM above the mask could be had here; the double buffer was not needed\n", kind_name[k]);
  /* write the second pattern, read it back into a cleared buffer */
  nvme_pattern_fill(p, wat, len, NVME_E2E_WRITE_SEED);
  rc = transfer(c, k, true, wat, len, b, &st);
  CHECK(rc == kIOReturnSuccess, "pass %u: wrote %" PRIu64 " bytes at byte %" PRIu64 " from the %s%s%s", pass, len, wat,
        kind_name[k], rc ? ": " : "", rc ? nvme_status_name(st) : "");
  if (rc == kIOReturnSuccess) printf("E2E-NVME-WROTE %" PRIu64 " %" PRIu64 "\n", wat, len);
  memset(p, 0, len);
  rc = transfer(c, k, false, wat, len, b, &st);
  bad = rc ? 0 : nvme_pattern_check(p, wat, len, NVME_E2E_WRITE_SEED);
  CHECK(rc == kIOReturnSuccess && bad == 0, "pass %u: read back what was written (%s)", pass,
        rc ? nvme_status_name(st) : bad ? "differs" : "matches");
  OSObject_release(b);
}

static void error_paths(nvme_ctrl *c, unsigned pass)
{
  uint64_t bus;
  IOByteCount l;
  bus = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)c->identify, 0, &l, 0);
  nvme_status st;
  IOReturn rc = nvme_raw_io(c, 0x02, 0xffff, 0, bus, &st);
  printf("  read of namespace 0xffff: %s, SCT %u SC 0x%02x (%s)%s\n", dk_ioreturn_name(rc), st.sct, st.sc,
         nvme_status_name(st), st.dnr ? ", do not retry" : "");
  CHECK(rc == kIOReturnIOError && st.sct == 0 && st.sc == 0x0b, "pass %u: a bad namespace is Invalid Namespace or Format",
        pass);
  rc = nvme_raw_io(c, 0x02, c->nsid, c->ns_blocks, bus, &st);
  printf("  read of block %" PRIu64 " (one past the end): SCT %u SC 0x%02x (%s)\n", c->ns_blocks, st.sct, st.sc,
         nvme_status_name(st));
  CHECK(rc == kIOReturnIOError && st.sct == 0 && st.sc == 0x80, "pass %u: past the end is LBA Out of Range", pass);
}

/* With the IOMMU: an IOVA that was mapped for a buffer and given back must not reach it. */
static void unmapped_iova(nvme_ctrl *c)
{
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);                /* its own pages: a mapping of its own */
  IOBufferMemoryDescriptor *r =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryMapperNone, c->page, c->page);
  dk_option_set(DK_OPTION_POOL, pool);
  CHECK(r != NULL, "a page with no IOVA of its own");
  if (!r) return;
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(r);
  memset(p, 0x5a, c->page);
  IODMACommand *cmd = IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)c->mask_bits, 0,
                                                     kIODMAMapOptionMapped, 0, c->page, c->pci->mapper, NULL);
  IODMACommandSegment64 seg = { 0, 0 };
  UInt32 n = 1;
  UInt64 off = 0;
  dk_mapper_info before, after;
  dk_mapper_get_info(c->pci->mapper, &before);
  IOReturn rc = cmd ? IODMACommand_setMemoryDescriptor(cmd, (IOMemoryDescriptor *)r, true) : kIOReturnNoMemory;
  if (rc == kIOReturnSuccess) rc = IODMACommand_gen64IOVMSegments(cmd, &off, &seg, &n);
  CHECK(rc == kIOReturnSuccess && n == 1, "IODMACommand mapped the page at IOVA 0x%" PRIx64, seg.fIOVMAddr);
  if (cmd) IODMACommand_clearMemoryDescriptor(cmd, true);     /* the IOVA is unmapped now */
  OSSafeReleaseNULL(cmd);
  dk_mapper_get_info(c->pci->mapper, &after);
  CHECK(after.mappings_live == before.mappings_live, "and gave it back (%u mappings live, as before)", after.mappings_live);
  nvme_status st;
  rc = nvme_raw_io(c, 0x02, c->nsid, 0, seg.fIOVMAddr, &st);
  printf("  read into the unmapped IOVA 0x%" PRIx64 ": %s, SCT %u SC 0x%02x (%s)\n", seg.fIOVMAddr, dk_ioreturn_name(rc),
         st.sct, st.sc, nvme_status_name(st));
  /* QEMU 7.2's nvme completes such a read successfully after the IOMMU refused its write; the
   * refusal itself is the IOMMU's fault record, which the kernel logs for that address */
  char want[64], *log = malloc(1 << 20);
  snprintf(want, sizeof want, "fault addr 0x%" PRIx64, seg.fIOVMAddr);
  bool faulted = false;
  for (int i = 0; i < 200 && log && !faulted; i++) {
    int got = klogctl(3, log, (1 << 20) - 1);        /* SYSLOG_ACTION_READ_ALL */
    if (got > 0) {
      log[got] = '\0';
      faulted = strstr(log, want) != NULL;
    }
    if (!faulted) usleep(10000);
  }
  free(log);
  CHECK(rc == kIOReturnIOError || faulted, "a command pointing at an unmapped IOVA fails: %s%s", rc ? "the device reports " : "",
        rc ? nvme_status_name(st) : faulted ? "the IOMMU refused the device's write (kernel: DMAR fault at that address)"
                                            : "neither the device nor the IOMMU reported it");
  bool canary = true;
  for (uint32_t i = 0; i < c->page; i++) canary &= p[i] == 0x5a;
  CHECK(canary, "the memory that was behind that IOVA keeps its canary");
  OSObject_release(r);
}

static unsigned bits_of(uint64_t m)
{
  unsigned b = 0;
  while (b < 64 && (m >> b)) b++;
  return b;
}

int main(int argc, char **argv)
{
  setvbuf(stdout, NULL, _IONBF, 0);
  const char *mode = argc > 1 ? argv[1] : "sysfs";
  bool vfio = !strcmp(mode, "vfio");
  pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
  const char *bdf = nvme_find(NVME_VENDOR_QEMU, NVME_DEVICE_QEMU);
  if (!bdf) {
    printf("FATAL: no NVMe device 1b36:0010\nE2E-NVME %s: FAIL (no device)\n", mode);
    return 2;
  }
  printf("NVMe device at %s, mode %s\n", bdf, mode);
  nvme_pci pci;
  IOReturn rc = vfio ? nvme_open_vfio(bdf, &pci) : nvme_open_sysfs(bdf, &pci);
  CHECK(rc == kIOReturnSuccess, "opened %s (%s)", bdf, vfio ? "IOService on vfio-pci: its VFIO mapper" : "sysfs BAR0, no mapper");
  if (rc != kIOReturnSuccess) {
    printf("E2E-NVME %s: FAIL (cannot open)\n", mode);
    return 2;
  }
  const char *m2 = getenv("E2E_NVME_MASK2"), *m3 = getenv("E2E_NVME_MASK3");
  uint64_t masks[3] = { UINT64_MAX, m2 && *m2 ? strtoull(m2, NULL, 0) : 0xffffffffull,
                        m3 && *m3 ? strtoull(m3, NULL, 0) : 0x0fffffffull };
  uint64_t image_bytes = 0;
  for (unsigned pass = 0; pass < 3; pass++) {
    nvme_ctrl c;
    printf("=== pass %u: DMA mask 0x%" PRIx64 " (%u bits)\n", pass, masks[pass], bits_of(masks[pass]));
    rc = nvme_init(&c, &pci, masks[pass], 1);
    CHECK(rc == kIOReturnSuccess, "pass %u: controller reset, enabled, admin and I/O queues created", pass);
    if (rc != kIOReturnSuccess) {
      nvme_shutdown(&c);
      break;
    }
    printf("  model \"%s\" serial \"%s\" firmware \"%s\"; MDTS %u bytes, one command moves at most %u bytes\n", c.model,
           c.serial, c.firmware, c.mdts_bytes, c.max_transfer);
    printf("  namespace %u: %" PRIu64 " blocks of %u bytes; admin SQ 0x%" PRIx64 " CQ 0x%" PRIx64 ", I/O SQ 0x%" PRIx64
           " CQ 0x%" PRIx64 ", PRP list 0x%" PRIx64 "\n", c.nsid, c.ns_blocks, c.lba_size, c.admin.sq_bus, c.admin.cq_bus,
           c.io.sq_bus, c.io.cq_bus, c.prp_list_bus);
    image_bytes = c.ns_blocks * c.lba_size;
    uint64_t top = c.admin.sq_bus | c.admin.cq_bus | c.io.sq_bus | c.io.cq_bus | c.prp_list_bus;
    CHECK(c.admin.sq_bus + c.page - 1 <= c.dma_mask && c.admin.cq_bus + c.page - 1 <= c.dma_mask &&
              c.io.sq_bus + c.page - 1 <= c.dma_mask && c.io.cq_bus + c.page - 1 <= c.dma_mask &&
              c.prp_list_bus + c.page - 1 <= c.dma_mask && !(top & (c.page - 1)),
          "pass %u: every queue and the PRP list are page-aligned and below the mask", pass);
    CHECK(nvme_slot(image_bytes, 1) >= 256 * 1024 + 8192, "the %" PRIu64 " MiB image has room for the test",
          image_bytes >> 20);
    for (kind k = CONTIG; k <= DRIVERKIT; k++) one_kind(&c, k, image_bytes, pass);
    error_paths(&c, pass);
    if (vfio && pass == 0) unmapped_iova(&c);
    nvme_status st;
    rc = nvme_flush(&c, &st);
    CHECK(rc == kIOReturnSuccess, "pass %u: flush", pass);
    printf("  %" PRIu64 " commands, %" PRIu64 " parts of split transfers, %" PRIu64 " PRP lists, %" PRIu64
           " double-buffered preparations\n", c.commands, c.split_commands, c.prp_lists, c.double_buffered);
    nvme_shutdown(&c);
  }
  if (vfio) {
    dk_mapper_info mi;
    dk_mapper_get_info(pci.mapper, &mi);
    CHECK(mi.mappings_live == 0 && mi.double_unmaps == 0, "every IOVA mapping was given back once (peak %u)",
          mi.mappings_peak);
  }
  nvme_close_pci(&pci);
  printf("E2E-NVME %s: %s (%d failures)\n", mode, failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
