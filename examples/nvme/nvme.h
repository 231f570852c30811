/* examples/nvme/nvme.h: a small NVMe driver on dmakit alone, written as the worked example of
 * porting a driver (docs/porting.md). One controller, polled: reset and enable, the admin
 * queue pair, Identify Controller and Namespace, one I/O queue pair, Read, Write and Flush with
 * PRP1/PRP2 and PRP lists built from IODMACommand segments, transfers above the controller's
 * MDTS split, command status decoded. Every piece of memory the controller reads or writes is
 * a dmakit buffer; every address it is given comes from dmakit (a physical address without an
 * IOMMU, an IOVA from the VFIO mapper with one).
 *
 * The register window (BAR0) and bus mastering are the caller's: nvme_open_sysfs (no IOMMU:
 * /sys/bus/pci/devices/BDF/resource0 and the config space file) or nvme_open_vfio (the device
 * on vfio-pci: its IOService's mapper and VFIO regions). */
#ifndef DK_EXAMPLE_NVME_H
#define DK_EXAMPLE_NVME_H

#include <dmakit/dmakit.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NVME_VENDOR_QEMU 0x1b36
#define NVME_DEVICE_QEMU 0x0010
#define NVME_CLASS       0x010802   /* mass storage, non-volatile memory, NVMe */

/* How the driver reaches one PCI function. */
typedef struct nvme_pci {
  char               address[32];   /* 0000:00:04.0 */
  volatile uint8_t  *bar;           /* BAR0, mapped */
  size_t             bar_len;
  IOService         *service;       /* the provider (dk_service_open), retained */
  IOMapper          *mapper;        /* its mapper (copyMapperForDevice), NULL without an IOMMU */
  int                vfio_fd;       /* the VFIO device (owned by the mapper), -1 */
  int                config_fd;     /* sysfs config space, -1 with VFIO */
} nvme_pci;

/* One submission/completion queue pair. */
typedef struct nvme_queue {
  uint16_t                  qid, entries;
  IOBufferMemoryDescriptor *sq_mem, *cq_mem;   /* contiguous, page-aligned, under the mask */
  uint64_t                  sq_bus, cq_bus;    /* what the controller is given */
  volatile uint8_t         *sq, *cq;
  uint16_t                  sq_tail, cq_head, cid;
  uint8_t                   phase;             /* the phase bit a new completion carries */
  volatile uint32_t        *sq_doorbell, *cq_doorbell;
} nvme_queue;

typedef struct nvme_ctrl {
  nvme_pci                 *pci;
  uint64_t                  dma_mask;          /* what the device addresses (2^n - 1) */
  unsigned                  mask_bits;
  uint64_t                  cap;               /* CAP register */
  uint32_t                  page;              /* the memory page size set in CC.MPS */
  uint32_t                  doorbell_stride;
  double                    timeout_s;         /* CAP.TO */
  nvme_queue                admin, io;
  IOBufferMemoryDescriptor *identify;          /* 4 KiB for Identify data */
  IOBufferMemoryDescriptor *prp_list;          /* one PRP list page (I/O is one command at a time) */
  uint64_t                  prp_list_bus;
  IODMACommand             *dma;               /* the data buffers' view for this device */
  /* from Identify */
  char                      model[41], serial[21], firmware[9];
  uint32_t                  mdts_bytes;        /* 0: no limit reported */
  uint32_t                  max_transfer;      /* what one command moves here (MDTS, at most a list page) */
  uint32_t                  nsid, lba_size;
  uint64_t                  ns_blocks;
  /* counters */
  uint64_t                  commands, split_commands, prp_lists, double_buffered;
} nvme_ctrl;

/* The completion of one command. */
typedef struct nvme_status {
  uint16_t sct, sc;        /* status code type and status code (0/0: success) */
  bool     dnr, more;
  uint32_t dw0;
} nvme_status;

/* A readable name for a status ("Invalid Namespace or Format", "LBA Out of Range", ...). */
const char *nvme_status_name(nvme_status st);
static inline bool nvme_ok(nvme_status st) { return st.sct == 0 && st.sc == 0; }

/* No IOMMU: map BAR0 through sysfs and turn on memory decoding and bus mastering in the
 * command register (config space offset 4), or DMA silently does nothing. */
IOReturn nvme_open_sysfs(const char *address, nvme_pci *pci);
/* The function bound to vfio-pci: its IOService, whose mapper is its VFIO container; BAR0 and
 * the command register through the VFIO device's regions. The mapper becomes the system
 * mapper, so buffers created from now on get IOVAs from it. */
IOReturn nvme_open_vfio(const char *address, nvme_pci *pci);
void nvme_close_pci(nvme_pci *pci);
/* The first function of the given vendor:device in sysfs (NULL if none). */
const char *nvme_find(uint16_t vendor, uint16_t device);

/* Reset and enable the controller, create the admin and one I/O queue pair, identify it and
 * namespace `nsid`. Every buffer lies under `dma_mask` (its IOVA with a mapper). */
IOReturn nvme_init(nvme_ctrl *c, nvme_pci *pci, uint64_t dma_mask, uint32_t nsid);
/* Flush, shut the controller down (CC.SHN, wait for CSTS.SHST) and free everything. */
void nvme_shutdown(nvme_ctrl *c);

/* Read or write `blocks` blocks at `lba` from/to `buffer` starting at `offset` (any dmakit
 * descriptor: contiguous, scattered 4K pages, pageable and prepared). Split at max_transfer;
 * each part is one command with PRPs from c->dma's segments. A failed command stops the
 * transfer: *st says how (st may be NULL). kIOReturnIOError when the device refused a
 * command, other codes from dmakit. */
IOReturn nvme_rw(nvme_ctrl *c, bool write, uint64_t lba, uint32_t blocks, IOMemoryDescriptor *buffer,
                 uint64_t offset, nvme_status *st);
/* The same through DriverKit's IODMACommand (Create + PrepareForDMA + CompleteDMA): segments
 * of any length, cut into PRP pages here. At most max_transfer bytes. */
IOReturn nvme_rw_driverkit(nvme_ctrl *c, bool write, uint64_t lba, uint32_t blocks, IOMemoryDescriptor *buffer,
                           nvme_status *st);
IOReturn nvme_flush(nvme_ctrl *c, nvme_status *st);

/* One raw I/O command with PRP1 as given (PRP2 0), for error paths: NVM `opcode` (1 write,
 * 2 read) of one block at `lba` in namespace `nsid`. */
IOReturn nvme_raw_io(nvme_ctrl *c, uint8_t opcode, uint32_t nsid, uint64_t lba, uint64_t prp1, nvme_status *st);

/* Build the PRP entries of a transfer from bus segments (any lengths; NVMe's rules: only the
 * first may start inside a page, every boundary between two is a page boundary): *prp1, *prp2
 * and, when more than two pages, the list in `list` (room for `room` entries) whose bus address
 * is list_bus. kIOReturnNotAligned when the segments break the rules, kIOReturnNoSpace when the
 * list is too small. Exposed for tests. */
IOReturn nvme_build_prps(const IOAddressSegment *segs, uint32_t nsegs, uint32_t page, uint64_t *prp1, uint64_t *prp2,
                         uint64_t *list, uint32_t room, uint64_t list_bus, uint32_t *entries);

#endif
