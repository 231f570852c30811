/* tests/cxx/test_cxx_ring.cpp: descriptor rings under a DMA mask, as an IOKit network driver
 * sets them up (Apple's IOBufferMemoryDescriptor documentation: inTaskWithPhysicalMask with
 * kIOMemoryPhysicallyContiguous, prepare(), getPhysicalSegment): a ring of receive descriptors
 * in one contiguous buffer, and receive buffers whose physical segments the driver walks into
 * the descriptors. Checked as root against pagemap (the frames really are below the mask,
 * aligned and contiguous as promised), and as any user through a software IOMapper (the mask
 * then limits the I/O virtual addresses, as on a Mac with an IOMMU). */

/* ======== driver code (as an IOKit kext writes it) ========================================== */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IOLib.h>
#include <libkern/OSTypes.h>

#include <string.h>

struct RxDescriptor {
  UInt64 bufferAddress;
  UInt32 bufferLength;
  UInt32 status;
};

#define kRxRingSize 64
#define kRxBufferSize (16 * 1024)
#define kMaxRxSegments 8

class ExampleNICRings {
public:
  bool allocate(mach_vm_address_t dmaMask);
  void release();

  IOBufferMemoryDescriptor *fRxRingMD = NULL;
  RxDescriptor *fRxRing = NULL;
  IOPhysicalAddress fRxRingPhys = 0;
  IOBufferMemoryDescriptor *fRxBufferMD[kRxRingSize] = {};
  UInt32 fRxSegments[kRxRingSize] = {};
};

bool ExampleNICRings::allocate(mach_vm_address_t dmaMask)
{
  IOByteCount ringBytes = kRxRingSize * sizeof(RxDescriptor);
  IOByteCount len;

  fRxRingMD = IOBufferMemoryDescriptor::inTaskWithPhysicalMask(
      kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous, ringBytes, dmaMask);
  if (!fRxRingMD) {
    IOLog("ExampleNIC: cannot allocate the receive ring\n");
    return false;
  }
  if (fRxRingMD->prepare() != kIOReturnSuccess) {
    IOLog("ExampleNIC: cannot prepare the receive ring\n");
    OSSafeReleaseNULL(fRxRingMD);
    return false;
  }
  fRxRing = (RxDescriptor *)fRxRingMD->getBytesNoCopy();
  bzero(fRxRing, ringBytes);
  fRxRingPhys = fRxRingMD->getPhysicalSegment(0, &len);
  if (!fRxRingPhys || len < ringBytes) {
    IOLog("ExampleNIC: receive ring is not one segment\n");
    release();
    return false;
  }

  for (int i = 0; i < kRxRingSize; i++) {
    fRxBufferMD[i] = IOBufferMemoryDescriptor::inTaskWithPhysicalMask(kernel_task, kIODirectionIn,
                                                                      kRxBufferSize, dmaMask);
    if (!fRxBufferMD[i] || fRxBufferMD[i]->prepare() != kIOReturnSuccess) {
      IOLog("ExampleNIC: cannot allocate receive buffer %d\n", i);
      OSSafeReleaseNULL(fRxBufferMD[i]);
      release();
      return false;
    }
    /* the device takes the first segment in the descriptor; the rest go to its
     * scatter list (here only counted) */
    IOByteCount offset = 0;
    UInt32 segments = 0;
    while (offset < fRxBufferMD[i]->getLength()) {
      addr64_t seg = fRxBufferMD[i]->getPhysicalSegment(offset, &len);
      if (!seg || segments == kMaxRxSegments) {
        IOLog("ExampleNIC: receive buffer %d has no DMA address at %llu\n", i, (unsigned long long)offset);
        release();
        return false;
      }
      if (segments == 0) {
        fRxRing[i].bufferAddress = seg;
        fRxRing[i].bufferLength = (UInt32)len;
      }
      segments++;
      offset += len;
    }
    fRxSegments[i] = segments;
  }
  return true;
}

void ExampleNICRings::release()
{
  for (int i = 0; i < kRxRingSize; i++) {
    if (fRxBufferMD[i]) {
      fRxBufferMD[i]->complete();
      OSSafeReleaseNULL(fRxBufferMD[i]);
    }
  }
  if (fRxRingMD) {
    fRxRingMD->complete();
    OSSafeReleaseNULL(fRxRingMD);
  }
  fRxRing = NULL;
  fRxRingPhys = 0;
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

static uint64_t limit_of(mach_vm_address_t mask)
{
  /* REFERENCE.md §2 step 6: the mask with its trailing zeros set */
  return mask | (mask ? (~mask & (mask - 1)) : 0);
}

static uint64_t align_of(mach_vm_address_t mask, uint64_t page)
{
  uint64_t a = (~mask & (mask - 1)) + 1;
  return a < page ? page : a;
}

/* Every segment the driver stored, and the ring, against this test's own pagemap reading. */
static void check_physical(ExampleNICRings &nic, mach_vm_address_t mask)
{
  uint64_t page = dk_capabilities()->page_size, limit = limit_of(mask);
  size_t ringBytes = kRxRingSize * sizeof(RxDescriptor);
  const char *broken = dkt_check_physical_promise(nic.fRxRing, ringBytes, align_of(mask, page), limit, true);
  if (broken) fail_msg("ring under mask 0x%llx: %s", (unsigned long long)mask, broken);
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(nic.fRxRing, ringBytes, &n);
  assert_non_null(pfn);
  uint64_t run = 0;
  assert_int_equal(nic.fRxRingPhys, dkt_expected_segment(nic.fRxRing, ringBytes, pfn, 0, &run));
  free(pfn);
  for (int i = 0; i < kRxRingSize; i++) {
    uint8_t *va = (uint8_t *)nic.fRxBufferMD[i]->getBytesNoCopy();
    broken = dkt_check_physical_promise(va, kRxBufferSize, page, limit, false);
    if (broken) fail_msg("receive buffer %d under mask 0x%llx: %s", i, (unsigned long long)mask, broken);
    pfn = dkt_read_frames_alloc(va, kRxBufferSize, &n);
    assert_non_null(pfn);
    uint64_t want = dkt_expected_segment(va, kRxBufferSize, pfn, 0, &run);
    assert_int_equal(nic.fRxRing[i].bufferAddress, want);
    assert_int_equal(nic.fRxRing[i].bufferLength, run);
    /* the driver's loop saw as many segments as the frames have runs */
    uint32_t runs = 0;
    for (uint64_t off = 0; off < kRxBufferSize; off += run, runs++) dkt_expected_segment(va, kRxBufferSize, pfn, off, &run);
    assert_int_equal(nic.fRxSegments[i], runs);
    free(pfn);
  }
}

static void ring_physical(void **state)
{
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  /* masks every machine of this kind meets: 64-bit with 4K alignment, 36-bit (all RAM lies
   * below 64 GiB here), and one whose trailing zeros ask for 64 KiB alignment (contiguous) */
  const mach_vm_address_t masks[] = { 0xFFFFFFFFFFFFF000ULL, 0x0000000FFFFFFFFFULL, 0x0000000FFFFF0000ULL };
  for (mach_vm_address_t mask : masks) {
    if (align_of(mask, dk_capabilities()->page_size) > dk_capabilities()->page_size && !dkt_pool_on()) {
      /* alignment beyond a page needs the hugepage pool (4K pages cannot promise it) */
      printf("note: mask 0x%llx skipped: the hugepage pool is off here\n", (unsigned long long)mask);
      continue;
    }
    ExampleNICRings nic;
    if (!nic.allocate(mask)) fail_msg("rings under mask 0x%llx: %s", (unsigned long long)mask, dkt_failure_text());
    check_physical(nic, mask);
    nic.release();
    assert_null(nic.fRxRingMD);
    assert_int_equal(dk__objects_live(), live);
  }
}

/* With an IOMMU (a software IOMapper here) the mask limits the bus address the device sees,
 * and each buffer is one I/O virtual range whatever the RAM: as any user. */
static void ring_mapped(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xFFFFFFFFull);
  const mach_vm_address_t mask = 0x00000000FFFFF000ULL;
  ExampleNICRings nic;
  if (!nic.allocate(mask)) fail_msg("rings through the mapper: %s", dkt_failure_text());
  uint64_t limit = limit_of(mask), page = dk_capabilities()->page_size;
  size_t ringBytes = kRxRingSize * sizeof(RxDescriptor);
  assert_true(nic.fRxRingPhys + ringBytes - 1 <= limit);
  assert_int_equal(nic.fRxRingPhys % page, 0);
  uint64_t seen[kRxRingSize];
  for (int i = 0; i < kRxRingSize; i++) {
    assert_int_equal(nic.fRxSegments[i], 1);                       /* one IOVA range */
    assert_int_equal(nic.fRxRing[i].bufferLength, kRxBufferSize);
    assert_true(nic.fRxRing[i].bufferAddress + kRxBufferSize - 1 <= limit);
    assert_int_equal(nic.fRxRing[i].bufferAddress % page, 0);
    seen[i] = nic.fRxRing[i].bufferAddress;
    for (int j = 0; j < i; j++)                                    /* no two buffers share IOVAs */
      assert_true(seen[j] + kRxBufferSize <= seen[i] || seen[i] + kRxBufferSize <= seen[j]);
    /* the CPU physical address is another thing (needs root); with kIOMemoryMapperNone */
  }
  nic.release();
  assert_int_equal(dk__objects_live(), live);
  dkt_soft_mapper_end(m);
}

/* Without frame numbers (an ordinary user, no IOMMU) the driver's getPhysicalSegment gets 0
 * (dk_last_failure() says why, see test_nonroot): the driver gives up cleanly, leaking nothing. */
static void ring_without_frame_numbers(void **state)
{
  (void)state;
  if (dkt_pfn_readable()) DKT_SKIP("frame numbers are readable here (root): ring_physical covers this process");
  long live = dk__objects_live();
  ExampleNICRings nic;
  assert_false(nic.allocate(0xFFFFFFFFFFFFF000ULL));
  assert_null(nic.fRxRingMD);
  assert_int_equal(dk__objects_live(), live);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(ring_physical),
    cmocka_unit_test(ring_mapped),
    cmocka_unit_test(ring_without_frame_numbers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
