/* IOKit/IOMapper.h (dmakit C++ layer): IOMapper, the I/O address space a device sees (dmakit's
 * identity or VFIO mapper, include/dmakit/IOMapper.h). Mappers are opened, made the system
 * mapper and closed with the dk_mapper_* calls; this class gives IOKit's members over them.
 * It is no OSObject here: dmakit's mappers are counted by dk_mapper_close, not by
 * OSObject_retain/release (copyMapperForDevice comes with dmakit's IOService). */
#ifndef DMAKIT_COMPAT_IOKIT_IOMAPPER_H
#define DMAKIT_COMPAT_IOKIT_IOMAPPER_H

#include <dmakit/IOMapper.h>
#include <dmakit/dk.h>
#include <dmakit/compat/IOKit/IODMACommand.h>
#include <dmakit/compat/IOKit/IOMemoryDescriptor.h>

class IOMapper {
public:
  /* XNU waits here for the boot-time decision whether a system mapper exists; in dmakit the
   * program decides (dk_mapper_set_system), so there is nothing to wait for. */
  static void checkForSystemMapper() {}

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

  IOMapper() = delete;
  IOMapper(const IOMapper &) = delete;
  IOMapper &operator=(const IOMapper &) = delete;

protected:
  ~IOMapper() = default;
};

#endif
