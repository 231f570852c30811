/* dmakit/IOMapper.h: the I/O address space a device sees. Without an IOMMU a device's bus
 * address is the CPU physical address (the identity mapper, and the default: "none"). With
 * one, dmakit's VFIO type1 mapper gives each buffer one range of I/O virtual addresses
 * (IOVAs): a buffer's physical mask then limits its IOVA (XNU's "mapped" path, REFERENCE.md §2
 * steps 12 and 15), and the RAM may lie anywhere.
 *
 *   IOMapper *m;
 *   dk_mapper_open_vfio("0000:00:02.0", &m);   // the device is bound to vfio-pci
 *   dk_mapper_set_system(m);                   // buffers created from now on are mapped by it
 *   b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, 4096, 0x0FFFFFFF);
 *   iova = IOMemoryDescriptor_getPhysicalSegment(b, 0, &len, 0);             // < 2^28, len = whole buffer
 *   pa   = IOMemoryDescriptor_getPhysicalSegment(b, 0, &len, kIOMemoryMapperNone);  // the RAM
 *
 * The VFIO device's own descriptor (dk_mapper_vfio_device_fd) reaches its BARs and config
 * space; see docs/vfio.md. */
#ifndef DMAKIT_IOMAPPER_H
#define DMAKIT_IOMAPPER_H

#include <dmakit/IOMemoryDescriptor.h>
#include <dmakit/IOService.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dk_mapper_kind {
  DK_MAPPER_IDENTITY = 0,   /* bus address = CPU physical address (no IOMMU) */
  DK_MAPPER_VFIO_TYPE1 = 1, /* a VFIO type1 container: IOVAs chosen by dmakit */
  DK_MAPPER_SOFTWARE = 2,   /* IOVAs allocated and tracked, nothing programmed (dmakit's tests) */
} dk_mapper_kind;

typedef struct dk_mapper_info {
  dk_mapper_kind kind;
  uint32_t iova_range_count;        /* the apertures the kernel reports (VFIO_IOMMU_GET_INFO) */
  struct { uint64_t start, end; } iova_ranges[8];   /* inclusive ends */
  uint64_t page_sizes;              /* IOMMU page sizes, a bit per size */
  uint32_t dma_limit;               /* mappings the kernel allows (dma_entry_limit), 0 unknown */
  uint32_t mappings_live;           /* VFIO mappings made by dmakit and not yet unmapped */
  uint32_t mappings_peak;
  uint64_t bytes_mapped;
  uint64_t buffers_mapped;          /* buffer ranges using the mappings (several share one) */
  uint64_t leaks_reported;          /* debug tracker: mappings still live at dk_mapper_close */
  uint64_t double_unmaps;           /* debug tracker: unmaps of IOVAs not (or no longer) mapped */
} dk_mapper_info;

/* The identity mapper (one static object; closing it does nothing). */
DK_API IOMapper *dk_mapper_identity(void);
/* Open the VFIO group of PCI device `bdf` ("0000:00:02.0"; it must be bound to vfio-pci), a
 * type1 container for it, and the device. kIOReturnNoDevice / kIOReturnNotPermitted /
 * kIOReturnUnsupported with the reason in dk_last_failure(). */
DK_API IOReturn dk_mapper_open_vfio(const char *bdf, IOMapper **out);
/* The VFIO device and container descriptors (-1 for the identity mapper). The mapper owns them. */
DK_API int dk_mapper_vfio_device_fd(IOMapper *mapper);
DK_API int dk_mapper_vfio_container_fd(IOMapper *mapper);
DK_API IOReturn dk_mapper_get_info(IOMapper *mapper, dk_mapper_info *info);
/* The mapper buffers are created with from now on (XNU's IOMapper::gSystem). NULL: none, bus
 * addresses are physical. Buffers keep the mapper they were created with. */
DK_API void dk_mapper_set_system(IOMapper *mapper);
/* The system mapper now, not retained: valid only while it stays the system mapper (or the
 * caller holds its own reference, the one dk_mapper_open_vfio gave). */
DK_API IOMapper *dk_mapper_get_system(void);
/* Give up this reference. The debug tracker reports what is still mapped: the count is
 * returned (0 = clean), and each leaked range is written into `report` (may be NULL). The
 * mappings themselves go when the buffers holding them are freed; the container closes when
 * the last of them has. */
DK_API unsigned dk_mapper_close(IOMapper *mapper, char *report, size_t cap);

/* XNU's IOMapper::copyMapperForDevice: the device's own mapper (its VFIO mapper when it is bound
 * to vfio-pci), retained (OSObject_release), or NULL when it has none (then IODMACommand takes
 * the system mapper, as XNU's does). NULL for a NULL device. */
DK_API IOMapper *IOMapper_copyMapperForDevice(IOService *device);

/* DriverKit's IOVMPageSize: the unit of I/O mappings, the CPU page size
 * (sysconf(_SC_PAGESIZE)), raised to an IOMMU's smallest page when a VFIO mapper opened here
 * has a larger one. */
extern DK_API uint64_t IOVMPageSize;

#ifdef __cplusplus
}
#endif
#endif
