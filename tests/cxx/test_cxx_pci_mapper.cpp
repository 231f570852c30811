/* tests/cxx/test_cxx_pci_mapper.cpp: a PCI network kext's transmit ring as open-source IOKit
 * Ethernet drivers write it: start() asks IOMapper::copyMapperForDevice(pciDevice) for the
 * device's own mapper (a driver subclass of IOService as provider), the ring is
 * inTaskWithPhysicalMask + kIOMemoryPhysicallyContiguous, an IODMACommand made with
 * withSpecification(kIODMACommandOutputHost64, ..., kMapped, ..., mapper, NULL) and
 * gen64IOVMSegments gives its bus address, the descriptors are written with OSByteOrder's
 * OSSwapHostToLittleInt64, the per-slot bookkeeping comes from IONew/IODelete and the mapper is
 * given back with OSSafeReleaseNULL. Run with the device's own (software) mapper and with only a
 * system mapper as any user, and without a mapper as root, where the bus address is checked
 * against pagemap. */

/* ======== driver code (as an IOKit PCI driver writes it) ==================================== */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IODMACommand.h>
#include <IOKit/IOLib.h>
#include <IOKit/IOMapper.h>
#include <IOKit/IOService.h>
#include <libkern/OSByteOrder.h>

/* The provider: a PCI nub is an IOService (its registers and config space are not DMA memory). */
class IOPCIDevice : public IOService {};

#define kTxDescCount   256
#define kTxDescSize    (kTxDescCount * sizeof(struct ExampleTxDesc))
#define kTxDescMask    0xFFFFFFFFFFFFFF00ULL      /* 64-bit device, 256-byte aligned ring */
#define RELEASE(x)     do { if (x) { (x)->release(); (x) = NULL; } } while (0)

struct ExampleTxDesc {
  UInt64 addr;
  UInt32 opts1;
  UInt32 opts2;
};

struct ExampleTxBufferInfo {
  void *packet;
  UInt32 numDescs;
};

class ExamplePCINIC {
public:
  bool start(IOPCIDevice *provider);
  void stop();
  bool setupTxResources();
  void freeTxResources();
  void queueDescriptor(UInt32 index, UInt64 bufferAddress, UInt32 length);

  IOPCIDevice *pciDevice = NULL;
  IOMapper *mapper = NULL;
  bool useMapper = false;
  IOBufferMemoryDescriptor *txBufDesc = NULL;
  IODMACommand *txDescDmaCmd = NULL;
  IOPhysicalAddress64 txPhyAddr = 0;
  struct ExampleTxDesc *txDescArray = NULL;
  struct ExampleTxBufferInfo *txBufArray = NULL;
};

bool ExamplePCINIC::start(IOPCIDevice *provider)
{
  pciDevice = provider;
  mapper = IOMapper::copyMapperForDevice(pciDevice);
  useMapper = (mapper != NULL) || (IOMapper::gSystem != NULL);
  IOLog("ExamplePCINIC: %s\n", useMapper ? "bus addresses are I/O virtual" : "bus addresses are physical");
  return setupTxResources();
}

bool ExamplePCINIC::setupTxResources()
{
  IODMACommand::Segment64 seg;
  UInt64 offset = 0;
  UInt32 numSegs = 1;
  bool result = false;

  txBufArray = IONew(struct ExampleTxBufferInfo, kTxDescCount);
  if (!txBufArray) goto done;
  bzero(txBufArray, kTxDescCount * sizeof(struct ExampleTxBufferInfo));

  txBufDesc = IOBufferMemoryDescriptor::inTaskWithPhysicalMask(
      kernel_task, (kIODirectionInOut | kIOMemoryPhysicallyContiguous | kIOMapInhibitCache), kTxDescSize,
      kTxDescMask);
  if (!txBufDesc) {
    IOLog("ExamplePCINIC: couldn't alloc txBufDesc.\n");
    goto error_buff;
  }
  if (txBufDesc->prepare() != kIOReturnSuccess) {
    IOLog("ExamplePCINIC: txBufDesc->prepare() failed.\n");
    goto error_prep;
  }
  txDescArray = (struct ExampleTxDesc *)txBufDesc->getBytesNoCopy();

  txDescDmaCmd = IODMACommand::withSpecification(kIODMACommandOutputHost64, 64, 0, IODMACommand::kMapped, 0, 1,
                                                 mapper, NULL);
  if (!txDescDmaCmd) {
    IOLog("ExamplePCINIC: couldn't alloc txDescDmaCmd.\n");
    goto error_dma;
  }
  if (txDescDmaCmd->setMemoryDescriptor(txBufDesc) != kIOReturnSuccess) {
    IOLog("ExamplePCINIC: txDescDmaCmd->setMemoryDescriptor() failed.\n");
    goto error_set_desc;
  }
  if (txDescDmaCmd->gen64IOVMSegments(&offset, &seg, &numSegs) != kIOReturnSuccess) {
    IOLog("ExamplePCINIC: txDescDmaCmd->gen64IOVMSegments() failed.\n");
    goto error_segm;
  }
  txPhyAddr = seg.fIOVMAddr;
  bzero(txDescArray, kTxDescSize);
  txDescArray[kTxDescCount - 1].opts1 = OSSwapHostToLittleInt32(0x40000000);   /* ring end */
  result = true;

done:
  return result;

error_segm:
  txDescDmaCmd->clearMemoryDescriptor();
error_set_desc:
  RELEASE(txDescDmaCmd);
error_dma:
  txBufDesc->complete();
error_prep:
  RELEASE(txBufDesc);
error_buff:
  IODelete(txBufArray, struct ExampleTxBufferInfo, kTxDescCount);
  txBufArray = NULL;
  goto done;
}

void ExamplePCINIC::queueDescriptor(UInt32 index, UInt64 bufferAddress, UInt32 length)
{
  txDescArray[index].addr = OSSwapHostToLittleInt64(bufferAddress);
  txDescArray[index].opts2 = 0;
  txDescArray[index].opts1 = OSSwapHostToLittleInt32(length | 0x80000000 |
                                                     OSSwapLittleToHostInt32(txDescArray[index].opts1));
  txBufArray[index].numDescs = 1;
}

void ExamplePCINIC::freeTxResources()
{
  if (txDescDmaCmd) {
    txDescDmaCmd->clearMemoryDescriptor();
    txDescDmaCmd->release();
    txDescDmaCmd = NULL;
  }
  if (txBufDesc) {
    txBufDesc->complete();
    txBufDesc->release();
    txBufDesc = NULL;
    txPhyAddr = 0;
    txDescArray = NULL;
  }
  if (txBufArray) {
    IODelete(txBufArray, struct ExampleTxBufferInfo, kTxDescCount);
    txBufArray = NULL;
  }
}

void ExamplePCINIC::stop()
{
  freeTxResources();
  OSSafeReleaseNULL(mapper);
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

#include <dirent.h>
#include <cstring>
#include <unistd.h>

extern "C" {
IOReturn dk__mapper_register_device(IOMapper *m, const char *address);
int dk__mapper_refs(const IOMapper *m);
}

/* A PCI function of this machine not bound to vfio-pci (opening one that is would open its
 * VFIO container), or NULL. */
static const char *plain_pci_function()
{
  static char name[64];
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) return nullptr;
  const char *found = nullptr;
  while (struct dirent *e = readdir(d)) {
    if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof name) continue;
    char path[sizeof "/sys/bus/pci/devices//driver" + sizeof name], link[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%.63s/driver", e->d_name);
    ssize_t l = readlink(path, link, sizeof link - 1);
    if (l > 0 && (link[l] = '\0', strstr(link, "vfio-pci"))) continue;
    strcpy(name, e->d_name);
    found = name;
    break;
  }
  closedir(d);
  return found;
}

static IOPCIDevice *open_provider(const char *fn)
{
  IOService *svc = nullptr;
  OK(dk_service_open(fn, &svc));
  return static_cast<IOPCIDevice *>(svc);
}

/* The ring's bus address is the I/O address `m` gave it, under the ring's mask and aligned. */
static void check_mapped_ring(ExamplePCINIC &nic, IOMapper *m, uint64_t start, uint64_t end)
{
  assert_true(nic.useMapper);
  assert_true(nic.txPhyAddr >= start && nic.txPhyAddr + kTxDescSize - 1 <= end);
  assert_int_equal(nic.txPhyAddr & ~kTxDescMask, 0);
  dk_mapper_info info;
  OK(dk_mapper_get_info(m, &info));
  assert_true(info.mappings_live >= 1);                          /* the ring's own mapping */
  /* what the driver writes through its pointer is the ring the device reads */
  nic.queueDescriptor(3, 0x123456789000ull, 1514);
  uint8_t raw[sizeof(ExampleTxDesc)];
  assert_int_equal(nic.txBufDesc->readBytes(3 * sizeof(ExampleTxDesc), raw, sizeof raw), sizeof raw);
  assert_int_equal(OSReadLittleInt64(raw, 0), 0x123456789000ull);
  assert_int_equal(OSReadLittleInt32(raw, 8), 1514u | 0x80000000u);
  assert_int_equal(OSReadLittleInt32(nic.txDescArray, (kTxDescCount - 1) * sizeof(ExampleTxDesc) + 8),
                   0x40000000u);
}

/* The device's own mapper (as a VFIO device's is): start() gets it +1 from copyMapperForDevice,
 * the command maps through it although it is not the system mapper, stop() gives it back. */
static void device_mapper(void **state)
{
  (void)state;
  const char *fn = plain_pci_function();
  if (!fn) DKT_SKIP("no PCI function outside vfio-pci in /sys/bus/pci/devices");
  long live = dk__objects_live();
  const uint64_t ranges[1][2] = { { 0x200000, 0xFFFFFFFFFFull } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 0);
  assert_non_null(m);
  OK(dk__mapper_register_device(m, fn));
  IOPCIDevice *dev = open_provider(fn);
  assert_null(static_cast<IOMapper *>(IOMapper::gSystem));
  IOMapper *copy = IOMapper::copyMapperForDevice(dev);
  assert_ptr_equal(copy, m);
  assert_int_equal(copy->getRetainCount(), 3);                   /* ours, the service's, the copy's */
  OSSafeReleaseNULL(copy);

  ExamplePCINIC nic;
  assert_true(nic.start(dev));
  assert_ptr_equal(nic.mapper, m);
  assert_non_null(OSDynamicCast(IOMapper, nic.mapper));
  assert_non_null(OSDynamicCast(IOService, nic.mapper));         /* IOMapper -> IOService */
  assert_null(OSDynamicCast(IOMapper, nic.pciDevice));
  assert_int_equal(nic.mapper->getPageSize() % dk_capabilities()->page_size, 0);
  assert_null(IOMapper::copyMapperForDeviceWithIndex(dev, 1));   /* one mapper per device */
  IOMapper *again = IOMapper::copyMapperForDeviceWithIndex(dev, 0);
  assert_ptr_equal(again, m);
  OSSafeReleaseNULL(again);
  check_mapped_ring(nic, m, ranges[0][0], ranges[0][1]);

  nic.stop();
  assert_null(nic.mapper);
  assert_null(nic.txBufDesc);
  assert_int_equal(dk__mapper_refs(m), 2);                       /* ours and the service's */
  OSSafeReleaseNULL(dev);
  assert_int_equal(dk__mapper_refs(m), 1);
  char report[256];
  assert_int_equal(dk_mapper_close(m, report, sizeof report), 0);
  assert_int_equal(dk__objects_live(), live);
}

/* No mapper of its own (a function not on vfio-pci): copyMapperForDevice is NULL, the driver
 * sees IOMapper::gSystem and its command (mapper NULL) maps through the system mapper. */
static void system_mapper(void **state)
{
  (void)state;
  const char *fn = plain_pci_function();
  if (!fn) DKT_SKIP("no PCI function outside vfio-pci in /sys/bus/pci/devices");
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xFFFFFFFFull);
  IOPCIDevice *dev = open_provider(fn);
  ExamplePCINIC nic;
  assert_true(nic.start(dev));
  assert_null(nic.mapper);
  assert_ptr_equal(static_cast<IOMapper *>(IOMapper::gSystem), m);
  check_mapped_ring(nic, m, 0x100000, 0xFFFFFFFFull);
  nic.stop();
  OSSafeReleaseNULL(dev);
  dkt_soft_mapper_end(m);
  assert_int_equal(dk__objects_live(), live);
}

/* No mapper at all (root): the bus address the driver programs is the ring's physical address,
 * as pagemap shows it, and the ring is one run of frames. */
static void no_mapper(void **state)
{
  (void)state;
  dkt_require_physical();
  const char *fn = plain_pci_function();
  if (!fn) DKT_SKIP("no PCI function outside vfio-pci in /sys/bus/pci/devices");
  long live = dk__objects_live();
  IOPCIDevice *dev = open_provider(fn);
  ExamplePCINIC nic;
  if (!nic.start(dev)) fail_msg("the ring without a mapper: %s", dkt_failure_text());
  assert_false(nic.useMapper);
  const char *why = dkt_check_physical_promise(nic.txDescArray, kTxDescSize, 256, 0, true);
  if (why) fail_msg("the ring: %s", why);
  uint64_t pfn = 0;
  assert_int_equal(dkt_read_frames(nic.txDescArray, 1, &pfn), 1);
  uint64_t page = dkt_page_size();
  assert_int_equal(nic.txPhyAddr, pfn * page + ((uintptr_t)nic.txDescArray & (page - 1)));
  nic.stop();
  OSSafeReleaseNULL(dev);
  assert_int_equal(dk__objects_live(), live);
}

/* A driver that stops before its ring exists, or whose provider is NULL (no device, no mapper):
 * nothing to give back, nothing crashes. */
static void no_provider(void **state)
{
  (void)state;
  long live = dk__objects_live();
  assert_null(IOMapper::copyMapperForDevice(nullptr));
  assert_null(IOMapper::copyMapperForDeviceWithIndex(nullptr, 0));
  ExamplePCINIC nic;
  nic.stop();
  assert_null(nic.mapper);
  assert_int_equal(dk__objects_live(), live);
}

/* The kext helpers its bookkeeping uses: IONew / IONewZero (NULL when count * size overflows),
 * IOSafeDeleteNULL, and Mach's page macros, which are this machine's CPU page. */
static void kext_helpers(void **state)
{
  (void)state;
  struct ExampleTxBufferInfo *info = IONewZero(struct ExampleTxBufferInfo, kTxDescCount);
  assert_non_null(info);
  for (int i = 0; i < kTxDescCount; i++) assert_true(info[i].packet == NULL && info[i].numDescs == 0);
  IOSafeDeleteNULL(info, struct ExampleTxBufferInfo, kTxDescCount);
  assert_null(info);
  assert_null(IONew(struct ExampleTxBufferInfo, SIZE_MAX / 8));
  assert_int_equal(PAGE_SIZE, dkt_page_size());
  assert_int_equal(PAGE_MASK, PAGE_SIZE - 1);
  assert_int_equal(1ull << PAGE_SHIFT, PAGE_SIZE);
  assert_int_equal(round_page(1), PAGE_SIZE);
  assert_int_equal(round_page(PAGE_SIZE), PAGE_SIZE);
  assert_int_equal(trunc_page(2 * PAGE_SIZE + 5), 2 * PAGE_SIZE);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(device_mapper),
    cmocka_unit_test(system_mapper),
    cmocka_unit_test(no_mapper),
    cmocka_unit_test(no_provider),
    cmocka_unit_test(kext_helpers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
