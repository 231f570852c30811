/* examples/nvme/nvme.c: the NVMe driver of nvme.h (NVM Express Base Specification 2.0: the
 * controller registers of section 3.1, the queue model of 3.3, PRPs of 4.1, the admin and NVM
 * commands used below). Each step names the IOKit call it makes and why; docs/porting.md reads
 * it as the worked example of porting a driver. Polled: no interrupts are enabled. */
#define _GNU_SOURCE
#include "nvme.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- registers (BAR0) ------------------------------------------------------------------- */
#define REG_CAP  0x00
#define REG_VS   0x08
#define REG_CC   0x14
#define REG_CSTS 0x1c
#define REG_AQA  0x24
#define REG_ASQ  0x28
#define REG_ACQ  0x30
#define CC_EN        (1u << 0)
#define CC_SHN_NORMAL (1u << 14)
#define CSTS_RDY     (1u << 0)
#define CSTS_CFS     (1u << 1)
#define CSTS_SHST(v) (((v) >> 2) & 3u)

/* ---- commands -------------------------------------------------------------------------- */
#define ADM_CREATE_SQ 0x01
#define ADM_CREATE_CQ 0x05
#define ADM_IDENTIFY  0x06
#define NVM_FLUSH     0x00
#define NVM_WRITE     0x01
#define NVM_READ      0x02
#define QUEUE_ENTRIES 64u
#define SQE_SIZE      64u
#define CQE_SIZE      16u

typedef struct sqe {
  uint32_t cdw0, nsid, cdw2, cdw3;
  uint64_t mptr, prp1, prp2;
  uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
} sqe;
_Static_assert(sizeof(sqe) == SQE_SIZE, "a submission queue entry is 64 bytes");

/* Register access: MMIO through the mapped BAR. A user-space driver's writeReg32() is a volatile
 * store; 64-bit registers are written as two halves, low first (NVMe allows both). */
static uint32_t rd32(nvme_ctrl *c, uint32_t off) { return le32toh(*(volatile uint32_t *)(c->pci->bar + off)); }
static void wr32(nvme_ctrl *c, uint32_t off, uint32_t v) { *(volatile uint32_t *)(c->pci->bar + off) = htole32(v); }
static uint64_t rd64(nvme_ctrl *c, uint32_t off) { return rd32(c, off) | (uint64_t)rd32(c, off + 4) << 32; }
static void wr64(nvme_ctrl *c, uint32_t off, uint64_t v)
{
  wr32(c, off, (uint32_t)v);
  wr32(c, off + 4, (uint32_t)(v >> 32));
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static IOReturn fail(IOReturn rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static IOReturn fail(IOReturn rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "nvme: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return rc;
}

static IOReturn dmakit_fail(const char *what)
{
  const dk_failure *f = dk_last_failure();
  return fail(f->code ? f->code : kIOReturnError, "%s: %s (%s, constraint %s)", what, f->text,
              dk_ioreturn_name(f->code), dk_constraint_name(f->constraint));
}

const char *nvme_status_name(nvme_status st)
{
  if (st.sct == 0) {
    switch (st.sc) {
    case 0x00: return "Successful Completion";
    case 0x01: return "Invalid Command Opcode";
    case 0x02: return "Invalid Field in Command";
    case 0x03: return "Command ID Conflict";
    case 0x04: return "Data Transfer Error";
    case 0x06: return "Internal Error";
    case 0x07: return "Command Abort Requested";
    case 0x08: return "Command Aborted due to SQ Deletion";
    case 0x0b: return "Invalid Namespace or Format";
    case 0x0f: return "Invalid PRP Offset";
    case 0x80: return "LBA Out of Range";
    case 0x81: return "Capacity Exceeded";
    case 0x82: return "Namespace Not Ready";
    default: return "generic status (other)";
    }
  }
  if (st.sct == 1) {
    switch (st.sc) {
    case 0x00: return "Completion Queue Invalid";
    case 0x01: return "Invalid Queue Identifier";
    case 0x02: return "Invalid Queue Size";
    default: return "command specific status (other)";
    }
  }
  if (st.sct == 2) {
    switch (st.sc) {
    case 0x80: return "Write Fault";
    case 0x81: return "Unrecovered Read Error";
    case 0x86: return "Access Denied";
    default: return "media and data integrity error (other)";
    }
  }
  if (st.sct == 3) return "path related status";
  if (st.sct == 7) return "vendor specific status";
  return "unknown status code type";
}

/* ---- memory the controller uses whole: queues, Identify data, the PRP list ---------------- */

/* IOBufferMemoryDescriptor::inTaskWithPhysicalMask(kernel_task, dir | kIOMemoryPhysicallyContiguous,
 * len, mask & ~(page - 1)): wired (the controller may touch it at any time), zeroed (a new
 * completion queue must hold no valid phase bits), one contiguous run (a queue is given as one
 * base address), page-aligned through the mask's low zero bits (IOKit's way: a mask's trailing
 * zeros are the alignment), under the device's reach. getPhysicalSegment(0) is its bus address:
 * the physical address, or the IOVA when a mapper is the system mapper. */
static IOBufferMemoryDescriptor *dma_buffer(nvme_ctrl *c, size_t len, IODirection dir, uint64_t *bus,
                                            volatile uint8_t **cpu)
{
  uint64_t mask = c->dma_mask & ~(uint64_t)(c->page - 1);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(
      kernel_task, dir | kIOMemoryPhysicallyContiguous, len, mask);
  if (!b) {
    dmakit_fail("inTaskWithPhysicalMask");
    return NULL;
  }
  IOByteCount seg = 0;
  *bus = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)b, 0, &seg, 0);
  if (!*bus || seg < len || *bus + len - 1 > c->dma_mask || (*bus & (c->page - 1))) {
    fail(kIOReturnInternalError, "buffer of %zu bytes: bus 0x%llx+0x%llx breaks its promise", len,
         (unsigned long long)*bus, (unsigned long long)seg);
    OSObject_release(b);
    return NULL;
  }
  *cpu = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  return b;
}

static IOReturn queue_create_memory(nvme_ctrl *c, nvme_queue *q, uint16_t qid, uint16_t entries)
{
  q->qid = qid;
  q->entries = entries;
  size_t sq_len = (size_t)entries * SQE_SIZE, cq_len = (size_t)entries * CQE_SIZE;
  if (!(q->sq_mem = dma_buffer(c, sq_len < c->page ? c->page : sq_len, kIODirectionOut, &q->sq_bus, &q->sq)))
    return kIOReturnNoMemory;
  if (!(q->cq_mem = dma_buffer(c, cq_len < c->page ? c->page : cq_len, kIODirectionIn, &q->cq_bus, &q->cq)))
    return kIOReturnNoMemory;
  q->sq_tail = q->cq_head = 0;
  q->phase = 1;
  q->sq_doorbell = (volatile uint32_t *)(c->pci->bar + 0x1000 + (2u * qid) * c->doorbell_stride);
  q->cq_doorbell = (volatile uint32_t *)(c->pci->bar + 0x1000 + (2u * qid + 1) * c->doorbell_stride);
  return kIOReturnSuccess;
}

static void queue_free(nvme_queue *q)
{
  OSSafeReleaseNULL(q->sq_mem);
  OSSafeReleaseNULL(q->cq_mem);
}

/* ---- submission and completion ------------------------------------------------------------ */

/* Submit one command and poll its completion: the entry is written, then (release fence) the
 * tail doorbell; a completion is new when its phase bit equals the queue's current phase, which
 * flips each time the head wraps. IOKit drivers do the same with an interrupt; here the driver
 * polls (an interrupt would be a VFIO eventfd, see docs/porting.md). */
static IOReturn command(nvme_ctrl *c, nvme_queue *q, sqe *e, nvme_status *st)
{
  uint16_t cid = q->cid++;
  e->cdw0 |= (uint32_t)cid << 16;
  memcpy((void *)(q->sq + (size_t)q->sq_tail * SQE_SIZE), e, SQE_SIZE);
  q->sq_tail = (uint16_t)((q->sq_tail + 1) % q->entries);
  atomic_thread_fence(memory_order_release);
  *q->sq_doorbell = htole32(q->sq_tail);
  c->commands++;
  double t0 = now();
  for (;;) {
    volatile uint8_t *cqe = q->cq + (size_t)q->cq_head * CQE_SIZE;
    uint32_t dw3 = le32toh(*(volatile uint32_t *)(cqe + 12));
    if (((dw3 >> 16) & 1u) == q->phase) {
      atomic_thread_fence(memory_order_acquire);
      uint32_t dw0 = le32toh(*(volatile uint32_t *)cqe);
      if (++q->cq_head == q->entries) {
        q->cq_head = 0;
        q->phase ^= 1;
      }
      *q->cq_doorbell = htole32(q->cq_head);
      if ((dw3 & 0xffff) != cid) return fail(kIOReturnIOError, "completion for command %u, expected %u", dw3 & 0xffff, cid);
      nvme_status s = { (uint16_t)((dw3 >> 25) & 7u), (uint16_t)((dw3 >> 17) & 0xffu), (dw3 >> 31) & 1u,
                        (dw3 >> 30) & 1u, dw0 };
      if (st) *st = s;
      return nvme_ok(s) ? kIOReturnSuccess : kIOReturnIOError;
    }
    if (now() - t0 > c->timeout_s) return fail(kIOReturnTimeout, "queue %u: no completion for command %u", q->qid, cid);
  }
}

static IOReturn wait_ready(nvme_ctrl *c, bool ready)
{
  double t0 = now();
  for (;;) {
    uint32_t csts = rd32(c, REG_CSTS);
    if (csts == 0xffffffffu) return fail(kIOReturnNotResponding, "CSTS reads all ones: the BAR is not decoded");
    if (ready && (csts & CSTS_CFS)) return fail(kIOReturnIOError, "controller fatal status (CSTS 0x%x)", csts);
    if (!!(csts & CSTS_RDY) == ready) return kIOReturnSuccess;
    if (now() - t0 > c->timeout_s) return fail(kIOReturnTimeout, "CSTS.RDY did not become %d", ready);
    usleep(1000);
  }
}

static void copy_string(char *dst, const volatile uint8_t *src, size_t n)
{
  for (size_t i = 0; i < n; i++) dst[i] = (char)src[i];
  dst[n] = '\0';
  while (n && dst[n - 1] == ' ') dst[--n] = '\0';
}

static IOReturn identify(nvme_ctrl *c, uint32_t cns, uint32_t nsid, nvme_status *st)
{
  sqe e = { .cdw0 = ADM_IDENTIFY, .nsid = htole32(nsid), .cdw10 = htole32(cns) };
  uint64_t bus;
  IOByteCount len;
  bus = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)c->identify, 0, &len, 0);
  e.prp1 = htole64(bus);             /* 4 KiB, page-aligned: one page, no PRP2 */
  return command(c, &c->admin, &e, st);
}

/* ---- PRPs from segments ---------------------------------------------------------------------- */

IOReturn nvme_build_prps(const IOAddressSegment *segs, uint32_t nsegs, uint32_t page, uint64_t *prp1, uint64_t *prp2,
                         uint64_t *list, uint32_t room, uint64_t list_bus, uint32_t *entries)
{
  uint64_t pm = page - 1, second = 0;
  uint32_t k = 0;
  *prp1 = *prp2 = 0;
  for (uint32_t i = 0; i < nsegs; i++) {
    uint64_t a = segs[i].address, l = segs[i].length;
    if (!l) continue;
    if (k && (a & pm)) return kIOReturnNotAligned;                   /* only the first may start mid-page */
    if (i + 1 < nsegs && ((a + l) & pm)) return kIOReturnNotAligned;  /* every seam on a page boundary */
    for (uint64_t p = a; p < a + l; p = (p & ~pm) + page) {
      if (k == 0) *prp1 = p;
      else if (k == 1) second = p;
      if (k >= 1) {
        if (k - 1 >= room) return kIOReturnNoSpace;
        list[k - 1] = htole64(p);
      }
      k++;
    }
  }
  if (k == 2) *prp2 = second;
  else if (k > 2) *prp2 = list_bus;
  if (entries) *entries = k;
  return k ? kIOReturnSuccess : kIOReturnBadArgument;
}

/* One NVM Read or Write of `len` bytes whose bus segments are `segs`. */
static IOReturn rw_command(nvme_ctrl *c, bool write, uint64_t lba, uint64_t len, const IOAddressSegment *segs,
                           uint32_t n, nvme_status *st)
{
  uint64_t prp1, prp2;
  uint32_t entries;
  uint32_t room = c->page / sizeof(uint64_t);
  uint64_t *list = IOBufferMemoryDescriptor_getBytesNoCopy(c->prp_list);
  IOReturn rc = nvme_build_prps(segs, n, c->page, &prp1, &prp2, list, room, c->prp_list_bus, &entries);
  if (rc != kIOReturnSuccess) return fail(rc, "segments do not make PRPs (%s)", dk_ioreturn_name(rc));
  if (entries > 2) c->prp_lists++;
  /* never give the device an address it cannot reach (dmakit promised it; a driver checks) */
  for (uint32_t i = 0; i < entries; i++) {
    uint64_t a = i == 0 ? prp1 : entries == 2 ? prp2 : le64toh(list[i - 1]);
    if (a + c->page - (a & (c->page - 1)) - 1 > c->dma_mask)
      return fail(kIOReturnInternalError, "PRP entry %u (0x%llx) is above the device's mask", i, (unsigned long long)a);
  }
  sqe e = { .cdw0 = write ? NVM_WRITE : NVM_READ, .nsid = htole32(c->nsid), .prp1 = htole64(prp1),
            .prp2 = htole64(prp2), .cdw10 = htole32((uint32_t)lba), .cdw11 = htole32((uint32_t)(lba >> 32)),
            .cdw12 = htole32((uint32_t)(len / c->lba_size - 1)) };
  return command(c, &c->io, &e, st);
}

/* ---- the PCI function --------------------------------------------------------------------- */

const char *nvme_find(uint16_t vendor, uint16_t device)
{
  static char name[64];
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) return NULL;
  struct dirent *de;
  const char *found = NULL;
  while (!found && (de = readdir(d))) {
    if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof name) continue;
    unsigned v = 0, dv = 0;
    char p[320], buf[32];
    FILE *f;
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", de->d_name);
    if ((f = fopen(p, "r"))) { if (fgets(buf, sizeof buf, f)) v = (unsigned)strtoul(buf, 0, 16); fclose(f); }
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/device", de->d_name);
    if ((f = fopen(p, "r"))) { if (fgets(buf, sizeof buf, f)) dv = (unsigned)strtoul(buf, 0, 16); fclose(f); }
    if (v == vendor && dv == device) {
      strcpy(name, de->d_name);
      found = name;
    }
  }
  closedir(d);
  return found;
}

/* The provider: dk_service_open is what IOKit hands a driver in start(provider); its mapper
 * (IOMapper::copyMapperForDevice) says whether bus addresses are IOVAs. */
static IOReturn open_service(const char *address, nvme_pci *pci)
{
  memset(pci, 0, sizeof *pci);
  pci->vfio_fd = pci->config_fd = -1;
  snprintf(pci->address, sizeof pci->address, "%s", address);
  if (dk_service_open(address, &pci->service) != kIOReturnSuccess) return dmakit_fail("dk_service_open");
  pci->mapper = IOMapper_copyMapperForDevice(pci->service);
  return kIOReturnSuccess;
}

IOReturn nvme_open_sysfs(const char *address, nvme_pci *pci)
{
  IOReturn rc = open_service(address, pci);
  if (rc != kIOReturnSuccess) return rc;
  if (pci->mapper) return fail(kIOReturnBadArgument, "%s has an IOMMU mapper: use nvme_open_vfio", address);
  char path[128];
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/config", address);
  if ((pci->config_fd = open(path, O_RDWR)) < 0) return fail(kIOReturnNotPermitted, "%s: %s", path, strerror(errno));
  /* the command register: memory space (bit 1) and bus master (bit 2); without bus mastering the
   * controller's DMA silently goes nowhere */
  uint16_t cmd = 0;
  if (pread(pci->config_fd, &cmd, 2, 4) != 2) return fail(kIOReturnIOError, "read the PCI command register");
  cmd |= 0x6;
  if (pwrite(pci->config_fd, &cmd, 2, 4) != 2) return fail(kIOReturnIOError, "write the PCI command register");
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource0", address);
  int fd = open(path, O_RDWR | O_SYNC);
  if (fd < 0) return fail(kIOReturnNotPermitted, "%s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) < 0 || sb.st_size < 0x2000) {
    close(fd);
    return fail(kIOReturnIOError, "%s: too small for NVMe registers", path);
  }
  pci->bar_len = (size_t)sb.st_size;
  void *bar = mmap(NULL, pci->bar_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (bar == MAP_FAILED) return fail(kIOReturnVMError, "mmap %s: %s", path, strerror(errno));
  pci->bar = bar;
  return kIOReturnSuccess;
}

IOReturn nvme_open_vfio(const char *address, nvme_pci *pci)
{
  IOReturn rc = open_service(address, pci);
  if (rc != kIOReturnSuccess) return rc;
  if (!pci->mapper) return fail(kIOReturnNoDevice, "%s has no VFIO mapper: bind it to vfio-pci", address);
  pci->vfio_fd = dk_mapper_vfio_device_fd(pci->mapper);
  struct vfio_region_info cfg = { .argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX };
  struct vfio_region_info bar0 = { .argsz = sizeof bar0, .index = VFIO_PCI_BAR0_REGION_INDEX };
  if (ioctl(pci->vfio_fd, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0 ||
      ioctl(pci->vfio_fd, VFIO_DEVICE_GET_REGION_INFO, &bar0) < 0)
    return fail(kIOReturnIOError, "VFIO region info: %s", strerror(errno));
  uint16_t cmd = 0;
  if (pread(pci->vfio_fd, &cmd, 2, (off_t)cfg.offset + 4) != 2) return fail(kIOReturnIOError, "read PCI command");
  cmd |= 0x6;
  if (pwrite(pci->vfio_fd, &cmd, 2, (off_t)cfg.offset + 4) != 2) return fail(kIOReturnIOError, "write PCI command");
  void *bar = mmap(NULL, (size_t)bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, pci->vfio_fd, (off_t)bar0.offset);
  if (bar == MAP_FAILED) return fail(kIOReturnVMError, "mmap BAR0 through VFIO: %s", strerror(errno));
  pci->bar = bar;
  pci->bar_len = (size_t)bar0.size;
  /* IOMapper::gSystem: buffers made from now on are mapped for this device */
  dk_mapper_set_system(pci->mapper);
  return kIOReturnSuccess;
}

void nvme_close_pci(nvme_pci *pci)
{
  if (pci->bar) munmap((void *)pci->bar, pci->bar_len);
  pci->bar = NULL;
  if (pci->config_fd >= 0) close(pci->config_fd);
  pci->config_fd = -1;
  if (pci->mapper && dk_mapper_get_system() == pci->mapper) dk_mapper_set_system(NULL);
  OSSafeReleaseNULL(pci->mapper);
  OSSafeReleaseNULL(pci->service);
}

/* ---- bring-up --------------------------------------------------------------------------------- */

IOReturn nvme_init(nvme_ctrl *c, nvme_pci *pci, uint64_t dma_mask, uint32_t nsid)
{
  memset(c, 0, sizeof *c);
  c->pci = pci;
  c->dma_mask = dma_mask;
  while (c->mask_bits < 64 && (dma_mask >> c->mask_bits)) c->mask_bits++;
  c->nsid = nsid;
  c->cap = rd64(c, REG_CAP);
  c->timeout_s = ((c->cap >> 24) & 0xff) * 0.5 + 5.0;      /* CAP.TO, in 500 ms units, plus TCG slack */
  c->doorbell_stride = 4u << ((c->cap >> 32) & 0xf);
  uint32_t mps_min = 12 + ((c->cap >> 48) & 0xf), mps_max = 12 + ((c->cap >> 52) & 0xf);
  /* the controller's memory page = the host page (IOVMPageSize), if the controller takes it */
  c->page = (uint32_t)IOVMPageSize;
  unsigned shift = (unsigned)__builtin_ctz(c->page);
  if (shift < mps_min || shift > mps_max)
    return fail(kIOReturnUnsupported, "page size %u outside the controller's 2^%u..2^%u", c->page, mps_min, mps_max);
  uint16_t mqes = (uint16_t)((c->cap & 0xffff) + 1);
  uint16_t entries = mqes < QUEUE_ENTRIES ? mqes : QUEUE_ENTRIES;

  /* 1. reset: CC.EN = 0 and wait until CSTS.RDY = 0 (the controller stops touching memory) */
  uint32_t cc = rd32(c, REG_CC);
  if (cc & CC_EN) wr32(c, REG_CC, cc & ~CC_EN);
  IOReturn rc = wait_ready(c, false);
  if (rc != kIOReturnSuccess) return rc;

  /* 2. the admin queue pair: contiguous, page-aligned, under the mask (dma_buffer) */
  if ((rc = queue_create_memory(c, &c->admin, 0, entries)) != kIOReturnSuccess) return rc;
  wr32(c, REG_AQA, (uint32_t)(entries - 1) << 16 | (uint32_t)(entries - 1));
  wr64(c, REG_ASQ, c->admin.sq_bus);
  wr64(c, REG_ACQ, c->admin.cq_bus);

  /* 3. enable: NVM command set, the memory page size, 64-byte SQ and 16-byte CQ entries */
  wr32(c, REG_CC, CC_EN | (shift - 12) << 7 | 6u << 16 | 4u << 20);
  if ((rc = wait_ready(c, true)) != kIOReturnSuccess) return rc;

  /* 4. Identify Controller and Namespace into one page the controller writes */
  volatile uint8_t *id;
  uint64_t id_bus;
  if (!(c->identify = dma_buffer(c, 4096, kIODirectionIn, &id_bus, &id))) return kIOReturnNoMemory;
  nvme_status st;
  if ((rc = identify(c, 1, 0, &st)) != kIOReturnSuccess)
    return fail(rc, "Identify Controller: %s", nvme_status_name(st));
  copy_string(c->serial, id + 4, 20);
  copy_string(c->model, id + 24, 40);
  copy_string(c->firmware, id + 64, 8);
  uint8_t mdts = id[77];
  c->mdts_bytes = mdts ? (1u << mdts) << mps_min : 0;
  uint32_t list_max = (c->page / 8) * c->page;             /* one PRP list page: 512 pages of 4 KiB */
  c->max_transfer = c->mdts_bytes && c->mdts_bytes < list_max ? c->mdts_bytes : list_max;
  if ((rc = identify(c, 0, nsid, &st)) != kIOReturnSuccess)
    return fail(rc, "Identify Namespace %u: %s", nsid, nvme_status_name(st));
  uint64_t nsze = 0;
  for (int i = 7; i >= 0; i--) nsze = nsze << 8 | id[i];
  uint8_t flbas = id[26] & 0xf;
  uint32_t lbaf = (uint32_t)id[128 + 4 * flbas] | (uint32_t)id[129 + 4 * flbas] << 8 |
                  (uint32_t)id[130 + 4 * flbas] << 16 | (uint32_t)id[131 + 4 * flbas] << 24;
  c->ns_blocks = nsze;
  c->lba_size = 1u << ((lbaf >> 16) & 0xff);
  if (!nsze || c->lba_size < 512 || c->lba_size > c->page)
    return fail(kIOReturnUnsupported, "namespace %u: %llu blocks of %u bytes", nsid, (unsigned long long)nsze,
                c->lba_size);

  /* 5. one I/O queue pair: Create I/O Completion Queue, then Submission Queue (physically
   * contiguous, PC = 1; no interrupt: IEN = 0) */
  if ((rc = queue_create_memory(c, &c->io, 1, entries)) != kIOReturnSuccess) return rc;
  sqe cq = { .cdw0 = ADM_CREATE_CQ, .prp1 = htole64(c->io.cq_bus),
             .cdw10 = htole32(1u | (uint32_t)(entries - 1) << 16), .cdw11 = htole32(1u) };
  if ((rc = command(c, &c->admin, &cq, &st)) != kIOReturnSuccess)
    return fail(rc, "Create I/O Completion Queue: %s", nvme_status_name(st));
  sqe sq = { .cdw0 = ADM_CREATE_SQ, .prp1 = htole64(c->io.sq_bus),
             .cdw10 = htole32(1u | (uint32_t)(entries - 1) << 16), .cdw11 = htole32(1u | 1u << 16) };
  if ((rc = command(c, &c->admin, &sq, &st)) != kIOReturnSuccess)
    return fail(rc, "Create I/O Submission Queue: %s", nvme_status_name(st));

  /* 6. the data path: a PRP list page (the controller reads it), and IODMACommand for the data
   * buffers: 64-bit segments of at most a page (PRP entries), every one page-aligned, at most
   * max_transfer per preparation, the device's address bits; the device's own mapper (NULL
   * without an IOMMU: then a buffer the device cannot reach is double-buffered) */
  volatile uint8_t *list;
  if (!(c->prp_list = dma_buffer(c, c->page, kIODirectionOut, &c->prp_list_bus, &list))) return kIOReturnNoMemory;
  c->dma = IODMACommand_withSpecification(IODMACommand_OutputHost64, (UInt8)c->mask_bits, c->page,
                                          kIODMAMapOptionMapped, c->max_transfer, c->page, pci->mapper, NULL);
  if (!c->dma) return dmakit_fail("IODMACommand::withSpecification");
  return kIOReturnSuccess;
}

IOReturn nvme_flush(nvme_ctrl *c, nvme_status *st)
{
  sqe e = { .cdw0 = NVM_FLUSH, .nsid = htole32(c->nsid) };
  return command(c, &c->io, &e, st);
}

void nvme_shutdown(nvme_ctrl *c)
{
  if (c->pci && c->pci->bar && c->io.sq_mem) nvme_flush(c, NULL);
  if (c->pci && c->pci->bar) {
    /* normal shutdown, then disable: after CSTS.RDY = 0 the controller touches no memory, and
     * only then are the queues given back */
    uint32_t cc = rd32(c, REG_CC);
    if (cc & CC_EN) {
      wr32(c, REG_CC, (cc & ~(3u << 14)) | CC_SHN_NORMAL);
      double t0 = now();
      while (CSTS_SHST(rd32(c, REG_CSTS)) != 2 && now() - t0 < c->timeout_s) usleep(1000);
      wr32(c, REG_CC, rd32(c, REG_CC) & ~CC_EN);
      wait_ready(c, false);
    }
  }
  OSSafeReleaseNULL(c->dma);
  OSSafeReleaseNULL(c->prp_list);
  OSSafeReleaseNULL(c->identify);
  queue_free(&c->io);
  queue_free(&c->admin);
}

/* ---- data transfers --------------------------------------------------------------------------- */

IOReturn nvme_rw(nvme_ctrl *c, bool write, uint64_t lba, uint32_t blocks, IOMemoryDescriptor *buffer,
                 uint64_t offset, nvme_status *st)
{
  nvme_status local;
  if (!st) st = &local;
  memset(st, 0, sizeof *st);
  uint64_t total = (uint64_t)blocks * c->lba_size;
  if (!blocks || offset + total > IOMemoryDescriptor_getLength(buffer))
    return fail(kIOReturnBadArgument, "%u blocks at offset 0x%llx do not fit the buffer", blocks,
                (unsigned long long)offset);
  /* IODMACommand::setMemoryDescriptor: this command now describes the buffer for the device */
  if (IODMACommand_setMemoryDescriptor(c->dma, buffer, false) != kIOReturnSuccess)
    return dmakit_fail("IODMACommand::setMemoryDescriptor");
  uint32_t max_segs = c->max_transfer / c->page + 2;
  IODMACommandSegment64 *segs = calloc(max_segs, sizeof *segs);
  IOReturn rc = segs ? kIOReturnSuccess : kIOReturnNoMemory;
  for (uint64_t done = 0; rc == kIOReturnSuccess && done < total;) {
    uint64_t len = total - done < c->max_transfer ? total - done : c->max_transfer;
    if (len < total) c->split_commands++;
    /* IODMACommand::prepare(offset, length): the part one command moves. With a mapper it gets
     * one IOVA range under the mask; without one, memory the device cannot reach (or not
     * page-aligned) is double-buffered, and synchronize copies the data out now */
    if ((rc = IODMACommand_prepare(c->dma, offset + done, len, true, true)) != kIOReturnSuccess) {
      rc = dmakit_fail("IODMACommand::prepare");
      break;
    }
    if (dk_dmacommand_is_double_buffered(c->dma)) c->double_buffered++;
    /* gen64IOVMSegments: page-sized, page-aligned bus segments, exactly the PRP entries */
    UInt64 at = 0;
    UInt32 n = 0;
    while (rc == kIOReturnSuccess && at < len) {
      UInt32 room = max_segs - n;
      if ((rc = IODMACommand_gen64IOVMSegments(c->dma, &at, segs + n, &room)) != kIOReturnSuccess)
        rc = dmakit_fail("IODMACommand::gen64IOVMSegments");
      n += room;
    }
    if (rc == kIOReturnSuccess) {
      _Static_assert(sizeof(IODMACommandSegment64) == sizeof(IOAddressSegment), "same layout");
      rc = rw_command(c, write, lba + done / c->lba_size, len, (const IOAddressSegment *)(void *)segs, n, st);
    }
    /* IODMACommand::complete: copies what the device wrote back from a double buffer */
    IODMACommand_complete(c->dma, true, true);
    done += len;
  }
  free(segs);
  IODMACommand_clearMemoryDescriptor(c->dma, true);
  return rc;
}

IOReturn nvme_rw_driverkit(nvme_ctrl *c, bool write, uint64_t lba, uint32_t blocks, IOMemoryDescriptor *buffer,
                           nvme_status *st)
{
  nvme_status local;
  if (!st) st = &local;
  memset(st, 0, sizeof *st);
  uint64_t total = (uint64_t)blocks * c->lba_size;
  if (!blocks || total > c->max_transfer) return fail(kIOReturnBadArgument, "%u blocks: more than one command", blocks);
  /* IODMACommand::Create(provider, kIODMACommandCreateNoOptions, {maxAddressBits}): the device's
   * mapper (its VFIO container) or, without one, physical addresses */
  IODMACommandSpecification spec = { kIODMACommandSpecificationNoOptions, c->mask_bits, { 0 } };
  IODMACommand *cmd = NULL;
  if (IODMACommand_Create(c->pci->service, kIODMACommandCreateNoOptions, &spec, &cmd) != kIOReturnSuccess)
    return dmakit_fail("IODMACommand::Create");
  /* PrepareForDMA: as many segments as fit in 32 (DriverKit's array); dmakit double-buffers a
   * range of more physical runs than that, so the whole range is always covered */
  IOAddressSegment segs[32];
  uint32_t n = 32;
  uint64_t flags = 0;
  IOReturn rc = IODMACommand_PrepareForDMA(cmd, kIODMACommandPrepareForDMANoOptions, buffer, 0, total, &flags, &n, segs);
  if (rc != kIOReturnSuccess) {
    rc = dmakit_fail("IODMACommand::PrepareForDMA");
  } else {
    if (dk_dmacommand_is_double_buffered(cmd)) c->double_buffered++;
    rc = rw_command(c, write, lba, total, segs, n, st);
    IODMACommand_CompleteDMA(cmd, kIODMACommandCompleteDMANoOptions);
  }
  OSObject_release(cmd);
  return rc;
}

IOReturn nvme_raw_io(nvme_ctrl *c, uint8_t opcode, uint32_t nsid, uint64_t lba, uint64_t prp1, nvme_status *st)
{
  sqe e = { .cdw0 = opcode, .nsid = htole32(nsid), .prp1 = htole64(prp1), .cdw10 = htole32((uint32_t)lba),
            .cdw11 = htole32((uint32_t)(lba >> 32)) };
  return command(c, &c->io, &e, st);
}
