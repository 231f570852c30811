/* examples/nvme/nvme_tool.c: the NVMe driver of nvme.[ch] as a command.
 *   nvme_tool [--vfio] [BDF] [LBA [BLOCKS]]
 * Opens the controller (the first QEMU NVMe function when no BDF is given; sysfs BAR0 without an
 * IOMMU, --vfio for a function bound to vfio-pci), identifies it and namespace 1, reads BLOCKS
 * blocks (default 8) at LBA (default 0) into a dmakit buffer and prints their first bytes, then
 * shuts the controller down. Root; the device must not be bound to the kernel's nvme driver. */
#include "nvme.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
  bool vfio = false;
  const char *bdf = NULL;
  uint64_t lba = 0, blocks = 8;
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--vfio")) vfio = true;
    else if (strchr(argv[i], ':')) bdf = argv[i];
    else if (pos++ == 0) lba = strtoull(argv[i], NULL, 0);
    else blocks = strtoull(argv[i], NULL, 0);
  }
  if (!bdf && !(bdf = nvme_find(NVME_VENDOR_QEMU, NVME_DEVICE_QEMU))) {
    fprintf(stderr, "nvme_tool: no NVMe function given and no QEMU NVMe device found\n");
    return 2;
  }
  nvme_pci pci;
  if ((vfio ? nvme_open_vfio(bdf, &pci) : nvme_open_sysfs(bdf, &pci)) != kIOReturnSuccess) return 1;
  nvme_ctrl c;
  IOReturn rc = nvme_init(&c, &pci, UINT64_MAX, 1);
  if (rc == kIOReturnSuccess) {
    printf("%s: \"%s\" serial \"%s\" firmware \"%s\", MDTS %u bytes\n", bdf, c.model, c.serial, c.firmware,
           c.mdts_bytes);
    printf("namespace 1: %" PRIu64 " blocks of %u bytes\n", c.ns_blocks, c.lba_size);
    IOBufferMemoryDescriptor *b =
        IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, blocks * c.lba_size, c.page);
    nvme_status st;
    rc = b ? nvme_rw(&c, false, lba, (uint32_t)blocks, (IOMemoryDescriptor *)b, 0, &st) : kIOReturnNoMemory;
    if (rc == kIOReturnSuccess) {
      const uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
      for (uint64_t blk = 0; blk < blocks; blk++) {
        printf("block %" PRIu64 ":", lba + blk);
        for (int i = 0; i < 16; i++) printf(" %02x", p[blk * c.lba_size + (uint64_t)i]);
        printf(" ...\n");
      }
    } else {
      printf("read failed: %s (%s)\n", dk_ioreturn_name(rc), nvme_status_name(st));
    }
    OSSafeReleaseNULL(b);
  }
  nvme_shutdown(&c);
  nvme_close_pci(&pci);
  return rc == kIOReturnSuccess ? 0 : 1;
}
