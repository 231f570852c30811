/* IOKit/IOMapper.h (dmakit C++ layer): IOMapper, the I/O address space a device sees (dmakit's
 * identity, software or VFIO mapper, include/dmakit/IOMapper.h), in IOKit's class tree
 * (IOMapper -> IOService -> OSObject): counted with retain()/release() as any object (the C
 * library's OSObject_retain/release reach a mapper's own count), found with OSDynamicCast. The
 * static copyMapperForDevice gives a device's own mapper, +1, as XNU does; gSystem reads the
 * system mapper (set with dk_mapper_set_system; assigning to it is not supported). Mappers are
 * opened and closed with the dk_mapper_* calls. */
#ifndef DMAKIT_COMPAT_IOKIT_IOMAPPER_H
#define DMAKIT_COMPAT_IOKIT_IOMAPPER_H

#include <dmakit/IOMapper.h>
#include <dmakit/dk.h>
#include <dmakit/compat/IOKit/IODMACommand.h>
#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>
#include <dmakit/compat/IOKit/IOService.h>

namespace dk_cxx {
/* IOMapper::gSystem: reads as the system mapper now (dk_mapper_get_system, not retained). */
struct system_mapper {
  operator IOMapper *() const noexcept { return dk_mapper_get_system(); }
  IOMapper *operator->() const noexcept { return dk_mapper_get_system(); }
};
} // namespace dk_cxx

class IOMapper : public IOService {
public:
  static constexpr const char dk_class_name[] = "IOMapper";

  /* XNU's IOMapper::gSystem, read-only: `if (IOMapper::gSystem)`, `IOMapper *m = IOMapper::gSystem;`. */
  static constexpr dk_cxx::system_mapper gSystem{};

  /* XNU waits here for the boot-time decision whether a system mapper exists; in dmakit the
   * program decides (dk_mapper_set_system), so there is nothing to wait for. */
  static void checkForSystemMapper() {}

  /* The device's own mapper (its VFIO mapper when it is bound to vfio-pci), +1 for the caller,
   * or NULL when it has none: then bus addresses are physical, or the system mapper's. */
  static DK_OSPTR_ABI OSPtr<IOMapper> copyMapperForDevice(IOService *device)
  {
    return dk_cxx::osptr(IOMapper_copyMapperForDevice(device));
  }
  /* XNU picks entry `index` of the device's "iommu-parent" list; a dmakit device has one mapper,
   * index 0, and NULL for any other index. */
  static DK_OSPTR_ABI OSPtr<IOMapper> copyMapperForDeviceWithIndex(IOService *device, unsigned int index)
  {
    return dk_cxx::osptr(index == 0 ? IOMapper_copyMapperForDevice(device) : nullptr);
  }

  /* The smallest unit the mapper maps: the IOMMU's smallest page, never less than the CPU page
   * (dmakit maps whole CPU pages); the CPU page for the identity mapper. */
  uint64_t getPageSize() const
  {
    uint64_t cpu = dk_capabilities()->page_size;
    dk_mapper_info info;
    if (dk_mapper_get_info(dk_cxx::mut(this), &info) != kIOReturnSuccess || !info.page_sizes) return cpu;
    uint64_t smallest = info.page_sizes & (~info.page_sizes + 1);
    return smallest > cpu ? smallest : cpu;
  }

protected:
  ~IOMapper() = default;
};

static_assert(__is_standard_layout(IOMapper), "an object pointer must convert to its base classes unchanged");

#endif
