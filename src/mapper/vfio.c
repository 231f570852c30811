/* src/mapper/vfio.c: the VFIO type1 backend of IOMapper. Opening follows the kernel's VFIO
 * document: the device's IOMMU group from sysfs, a container, the group put in it, the type1v2
 * IOMMU set, then what the kernel reports: its IOVA apertures and how many mappings it allows
 * (VFIO_IOMMU_GET_INFO capabilities), and the device descriptor the driver programs. Mapping
 * is VFIO_IOMMU_MAP_DMA (which also pins the pages for the device), unmapping the exact
 * range mapped. Every failure names the step and what to do. */
#include "mapper/mapper_impl.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <string.h>

static int xioctl(int fd, unsigned long req, void *arg)
{
  int r, tries = 0;
  do r = dk__ioctl(fd, req, arg); while (r < 0 && errno == EINTR && ++tries < DK_EINTR_RETRIES);
  return r;
}

static int vfio_map(IOMapper *m, uint64_t va, uint64_t iova, uint64_t len)
{
  struct vfio_iommu_type1_dma_map map = {
    .argsz = sizeof map,
    .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
    .vaddr = va,
    .iova = iova,
    .size = len,
  };
  return xioctl(m->container_fd, VFIO_IOMMU_MAP_DMA, &map) < 0 ? -1 : 0;
}

static int vfio_unmap(IOMapper *m, uint64_t iova, uint64_t len)
{
  struct vfio_iommu_type1_dma_unmap un = { .argsz = sizeof un, .iova = iova, .size = len };
  return xioctl(m->container_fd, VFIO_IOMMU_UNMAP_DMA, &un) < 0 ? -1 : 0;
}

static void vfio_close(IOMapper *m)
{
  if (m->device_fd >= 0) dk__close(m->device_fd);
  if (m->group_fd >= 0) dk__close(m->group_fd);
  if (m->container_fd >= 0) dk__close(m->container_fd);
  m->device_fd = m->group_fd = m->container_fd = -1;
}

static const dk_mapper_ops vfio_ops = { vfio_map, vfio_unmap, vfio_close };

/* The IOVA apertures and the mapping limit from VFIO_IOMMU_GET_INFO's capability chain. */
static IOReturn read_info(int container, uint64_t (*ranges)[2], size_t *nranges, uint32_t *avail, uint64_t *pgsizes)
{
  struct vfio_iommu_type1_info probe = { .argsz = sizeof probe };
  if (xioctl(container, VFIO_IOMMU_GET_INFO, &probe) < 0)
    return dk__fail(kIOReturnIOError, DK_CONSTRAINT_RESOURCE, "VFIO_IOMMU_GET_INFO: %s", strerror(errno));
  *pgsizes = (probe.flags & VFIO_IOMMU_INFO_PGSIZES) ? probe.iova_pgsizes : 0;
  *nranges = 0;
  *avail = 0;
  bool have_avail = false;
  size_t size = probe.argsz > sizeof probe ? probe.argsz : sizeof probe;
  struct vfio_iommu_type1_info *info = dk__calloc(1, size);
  if (!info) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the IOMMU information");
  info->argsz = (uint32_t)size;
  if (xioctl(container, VFIO_IOMMU_GET_INFO, info) < 0) {
    dk__free(info);
    return dk__fail(kIOReturnIOError, DK_CONSTRAINT_RESOURCE, "VFIO_IOMMU_GET_INFO: %s", strerror(errno));
  }
  if ((info->flags & VFIO_IOMMU_INFO_CAPS) && info->cap_offset) {
    uint32_t off = info->cap_offset;
    for (int guard = 0; off && off + sizeof(struct vfio_info_cap_header) <= size && guard < 64; guard++) {
      struct vfio_info_cap_header *h = (void *)((char *)info + off);
      if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE &&
          off + sizeof(struct vfio_iommu_type1_info_cap_iova_range) <= size) {
        struct vfio_iommu_type1_info_cap_iova_range *c = (void *)h;
        for (uint32_t i = 0; i < c->nr_iovas && *nranges < 8; i++) {
          if ((char *)&c->iova_ranges[i + 1] > (char *)info + size) break;
          ranges[*nranges][0] = c->iova_ranges[i].start;
          ranges[*nranges][1] = c->iova_ranges[i].end;
          (*nranges)++;
        }
      } else if (h->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL &&
                 off + sizeof(struct vfio_iommu_type1_info_dma_avail) <= size) {
        *avail = ((struct vfio_iommu_type1_info_dma_avail *)(void *)h)->avail;
        have_avail = true;
      }
      if (h->next <= off) break;
      off = h->next;
    }
  }
  dk__free(info);
  if (*nranges == 0) {                  /* a kernel without the capability: 39 bits, as VT-d's 3-level */
    ranges[0][0] = 0;
    ranges[0][1] = (1ull << 39) - 1;
    *nranges = 1;
  }
  if (!have_avail) *avail = 65535;      /* an older kernel: the type1 default of dma_entry_limit */
  return kIOReturnSuccess;
}

IOReturn dk_mapper_open_vfio(const char *bdf, IOMapper **out)
{
  dk__enter("dk_mapper_open_vfio");
  if (out) *out = NULL;
  if (!bdf || !out || !dk__pci_address_ok(bdf))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "a PCI address such as 0000:00:02.0 and an out pointer are needed");
  char path[128], link[256];
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
  if (dk__readlink(path, link, sizeof link) < 0) {
    int e = errno;
    char dev[96];
    snprintf(dev, sizeof dev, "/sys/bus/pci/devices/%s", bdf);
    if (dk__readlink(dev, link, sizeof link) < 0)
      return dk__fail(kIOReturnNoDevice, DK_CONSTRAINT_ARGUMENT, "no PCI device %s (%s)", bdf, strerror(errno));
    return dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_RESOURCE,
                    "PCI device %s has no IOMMU group (%s): the kernel runs without an IOMMU, or it is off "
                    "(intel_iommu=on / amd_iommu=on); VFIO type1 needs one", bdf, strerror(e));
  }
  const char *group = strrchr(link, '/');
  group = group ? group + 1 : link;
  IOReturn rc;
  int container = -1, grp = -1, device = -1;
  container = dk__open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) {
    rc = dk__fail(errno == ENOENT ? kIOReturnNoDevice : kIOReturnNotPermitted, DK_CONSTRAINT_RESOURCE,
                  "/dev/vfio/vfio: %s (load the vfio and vfio_iommu_type1 modules; root or the vfio group)",
                  strerror(errno));
    goto fail;
  }
  if (xioctl(container, VFIO_GET_API_VERSION, NULL) != VFIO_API_VERSION) {
    rc = dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_RESOURCE, "the kernel's VFIO API version is not %d", VFIO_API_VERSION);
    goto fail;
  }
  if (xioctl(container, VFIO_CHECK_EXTENSION, (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU) != 1) {
    rc = dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_RESOURCE,
                  "VFIO has no type1v2 IOMMU here (load vfio_iommu_type1)");
    goto fail;
  }
  if (strlen(group) > 16) {
    rc = dk__fail(kIOReturnNoDevice, DK_CONSTRAINT_RESOURCE, "odd IOMMU group link %s", link);
    goto fail;
  }
  snprintf(path, sizeof path, "/dev/vfio/%.16s", group);
  grp = dk__open(path, O_RDWR);
  if (grp < 0) {
    rc = dk__fail(errno == EBUSY ? kIOReturnExclusiveAccess : errno == ENOENT ? kIOReturnNoDevice : kIOReturnNotPermitted,
                  DK_CONSTRAINT_RESOURCE, "%s: %s (%s)", path, strerror(errno),
                  errno == ENOENT ? "bind the device to vfio-pci first" :
                  errno == EBUSY ? "another process holds the group" : "root, or a vfio group permission");
    goto fail;
  }
  struct vfio_group_status st = { .argsz = sizeof st };
  if (xioctl(grp, VFIO_GROUP_GET_STATUS, &st) < 0 || !(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    rc = dk__fail(kIOReturnNotReady, DK_CONSTRAINT_RESOURCE,
                  "IOMMU group %s is not viable: every device in it must be bound to vfio-pci (or no driver)", group);
    goto fail;
  }
  if (xioctl(grp, VFIO_GROUP_SET_CONTAINER, &container) < 0) {
    rc = dk__fail(kIOReturnIOError, DK_CONSTRAINT_RESOURCE, "VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
    goto fail;
  }
  if (xioctl(container, VFIO_SET_IOMMU, (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU) < 0) {
    rc = dk__fail(kIOReturnIOError, DK_CONSTRAINT_RESOURCE, "VFIO_SET_IOMMU(type1v2): %s", strerror(errno));
    goto fail;
  }
  uint64_t ranges[8][2];
  size_t n = 0;
  uint32_t avail = 0;
  uint64_t pgsizes = 0;
  if ((rc = read_info(container, ranges, &n, &avail, &pgsizes)) != kIOReturnSuccess) goto fail;
  device = xioctl(grp, VFIO_GROUP_GET_DEVICE_FD, (void *)(uintptr_t)bdf);
  if (device < 0) {
    rc = dk__fail(kIOReturnNoDevice, DK_CONSTRAINT_RESOURCE, "VFIO_GROUP_GET_DEVICE_FD(%s): %s", bdf, strerror(errno));
    goto fail;
  }
  dk__prim_count_received(1);            /* a descriptor dk__close will count back */
  IOMapper *m = dk__mapper_new(DK_MAPPER_VFIO_TYPE1, &vfio_ops, (const uint64_t (*)[2])ranges, n);
  if (!m) {
    rc = dk_last_failure()->code;
    goto fail;
  }
  m->container_fd = container;
  m->group_fd = grp;
  m->device_fd = device;
  m->info.dma_limit = avail;
  m->info.page_sizes = pgsizes;
  if ((rc = dk__mapper_register_device(m, bdf)) != kIOReturnSuccess) {
    dk__mapper_release(m);               /* closes the descriptors it now owns */
    return rc;
  }
  dk__mapper_note_page_sizes(pgsizes);
  *out = m;
  return kIOReturnSuccess;
fail:
  if (device >= 0) dk__close(device);
  if (grp >= 0) dk__close(grp);
  if (container >= 0) dk__close(container);
  return rc;
}
