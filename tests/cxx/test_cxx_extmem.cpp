/* tests/cxx/test_cxx_extmem.cpp: memory the driver already has, as an IOKit driver describes it
 * (XNU's IOMemoryDescriptor.h, IOSubMemoryDescriptor.h, IOMultiMemoryDescriptor.h): an
 * application's buffers attached with withAddressRanges and prepare(), their segments from an
 * IODMACommand loop, getDMAMapLength, a guarded view built from IOGuardPageMemoryDescriptor,
 * IOSubMemoryDescriptor and IOMultiMemoryDescriptor, and setContext/copyContext. Checked as root
 * against pagemap (the segments are the ranges' frames, byte for byte), and as any user through
 * a software IOMapper (one 32-bit I/O virtual range) and through the CPU's view of the memory. */

/* ======== driver code (as an IOKit kext writes it) ========================================== */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IODMACommand.h>
#include <IOKit/IOGuardPageMemoryDescriptor.h>
#include <IOKit/IOMemoryDescriptor.h>
#include <IOKit/IOMultiMemoryDescriptor.h>
#include <IOKit/IOSubMemoryDescriptor.h>

#define kMaxUserSegments 64

class ExampleUserBuffers {
public:
  IOReturn attach(IOAddressRange *ranges, UInt32 count, IODirection direction);
  IOReturn buildSegments(UInt8 addressBits);
  void detach();

  IOMemoryDescriptor *fMemory = NULL;
  IODMACommand *fCommand = NULL;
  IODMACommand::Segment64 fSegments[kMaxUserSegments];
  UInt32 fSegmentCount = 0;
};

IOReturn ExampleUserBuffers::attach(IOAddressRange *ranges, UInt32 count, IODirection direction)
{
  fMemory = IOMemoryDescriptor::withAddressRanges(ranges, count, direction, kernel_task);
  if (!fMemory) return kIOReturnNoMemory;
  IOReturn ret = fMemory->prepare();
  if (ret != kIOReturnSuccess) OSSafeReleaseNULL(fMemory);
  return ret;
}

IOReturn ExampleUserBuffers::buildSegments(UInt8 addressBits)
{
  fCommand = IODMACommand::withSpecification(kIODMACommandOutputHost64, addressBits, 0, IODMACommand::kMapped, 0, 1);
  if (!fCommand) return kIOReturnNoMemory;
  IOReturn ret = fCommand->setMemoryDescriptor(fMemory);
  UInt64 offset = 0;
  fSegmentCount = 0;
  while (ret == kIOReturnSuccess && offset < fMemory->getLength()) {
    UInt32 numSegments = 1;
    if (fSegmentCount == kMaxUserSegments) return kIOReturnNoResources;
    ret = fCommand->gen64IOVMSegments(&offset, &fSegments[fSegmentCount], &numSegments);
    if (ret == kIOReturnSuccess && numSegments == 1) fSegmentCount++;
  }
  return ret;
}

void ExampleUserBuffers::detach()
{
  if (fCommand) fCommand->clearMemoryDescriptor();
  OSSafeReleaseNULL(fCommand);
  if (fMemory) fMemory->complete();
  OSSafeReleaseNULL(fMemory);
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

#include <cstring>
#include <sys/mman.h>

static uint64_t PS;

static int group_setup(void **state)
{
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS ? 0 : -1;
}

/* Anonymous memory, populated, each page filled with its own byte (first + page index); shared
 * memory where a second view of it is wanted (Linux cannot show private pages twice). */
static uint8_t *pages(size_t n, uint8_t first, bool shared = false)
{
  void *p = mmap(nullptr, n * PS, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail_msg("mmap of %zu pages failed", n);
  for (size_t i = 0; i < n; i++) memset(static_cast<uint8_t *>(p) + i * PS, first + (int)i, PS);
  return static_cast<uint8_t *>(p);
}

/* The frame of the page holding va, by pagemap. */
static uint64_t frame_of(const uint8_t *va)
{
  uint64_t pfn = 0;
  const uint8_t *page = reinterpret_cast<const uint8_t *>(reinterpret_cast<uintptr_t>(va) & ~(uintptr_t)(PS - 1));
  if (dkt_read_frames(page, PS, &pfn) != 1 || !pfn) fail_msg("no frame for %p in pagemap", (const void *)va);
  return pfn * PS + (reinterpret_cast<uintptr_t>(va) & (PS - 1));
}

/* Root, no mapper: two ranges of the application's memory (one starting inside a page); the
 * command's segments cover the descriptor exactly, and every page of every segment is the frame
 * pagemap gives for the byte of the ranges it stands for. */
static void user_ranges_physical(void **state)
{
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  uint8_t *a = pages(6, 0x10), *b = pages(3, 0x40);
  IOAddressRange ranges[2] = { { reinterpret_cast<mach_vm_address_t>(a) + 100, 5 * PS },
                               { reinterpret_cast<mach_vm_address_t>(b), 3 * PS } };
  ExampleUserBuffers d;
  OK(d.attach(ranges, 2, kIODirectionInOut));
  assert_int_equal(d.fMemory->getLength(), 8 * PS);
  OK(d.buildSegments(64));
  uint64_t off = 0;
  for (UInt32 i = 0; i < d.fSegmentCount; i++) {
    const IODMACommand::Segment64 &s = d.fSegments[i];
    for (uint64_t in = 0; in < s.fLength;) {
      uint64_t o = off + in;
      const uint8_t *va = o < ranges[0].length ? reinterpret_cast<const uint8_t *>(ranges[0].address) + o
                                               : reinterpret_cast<const uint8_t *>(ranges[1].address) + (o - ranges[0].length);
      if (s.fIOVMAddr + in != frame_of(va))
        fail_msg("segment %u at +0x%llx: 0x%llx, pagemap says 0x%llx", i, (unsigned long long)in,
                 (unsigned long long)(s.fIOVMAddr + in), (unsigned long long)frame_of(va));
      uint64_t to_page = PS - (reinterpret_cast<uintptr_t>(va) & (PS - 1));
      in += to_page < s.fLength - in ? to_page : s.fLength - in;
    }
    off += s.fLength;
  }
  assert_int_equal(off, 8 * PS);
  /* the bytes through the descriptor are the application's */
  uint8_t x = 0;
  assert_int_equal(d.fMemory->readBytes(5 * PS, &x, 1), 1);
  assert_int_equal(x, 0x40);
  d.detach();
  assert_null(d.fMemory);
  assert_int_equal(dk__objects_live(), live);
  munmap(a, 6 * PS);
  munmap(b, 3 * PS);
}

/* Any user, a 32-bit device behind an IOMMU (software mapper): one range starting 100 bytes
 * into a page is one I/O virtual segment below 4 GiB keeping the offset in the page, and
 * getDMAMapLength says the pages the mapping spans; detach leaves nothing mapped. */
static void user_range_mapped_32(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xFFFFFFFFull);
  uint8_t *a = pages(4, 0x20);
  IOAddressRange r = { reinterpret_cast<mach_vm_address_t>(a) + 100, 3 * PS };
  ExampleUserBuffers d;
  OK(d.attach(&r, 1, kIODirectionOut));
  uint64_t pageOffset = 0;
  assert_int_equal(d.fMemory->getDMAMapLength(&pageOffset), 4 * PS);
  assert_int_equal(pageOffset, 100);
  OK(d.buildSegments(32));
  assert_int_equal(d.fSegmentCount, 1);
  assert_int_equal(d.fSegments[0].fLength, 3 * PS);
  assert_true(d.fSegments[0].fIOVMAddr + d.fSegments[0].fLength - 1 <= 0xFFFFFFFFull);
  assert_int_equal(d.fSegments[0].fIOVMAddr & (PS - 1), 100);
  d.detach();
  dkt_soft_mapper_end(m);
  assert_int_equal(dk__objects_live(), live);
  munmap(a, 4 * PS);
}

/* Any user: the middle two pages of the application's four (shared memory), between two guard
 * pages, as one descriptor; a mapping of it shows those pages' bytes at a page and two pages
 * in, a store through it is seen by the application, and the descriptor's own copies read the
 * same. */
static void guarded_view(void **state)
{
  (void)state;
  long live = dk__objects_live();
  uint8_t *a = pages(4, 0x60, true);
  IOMemoryDescriptor *whole = IOMemoryDescriptor::withAddressRange(reinterpret_cast<mach_vm_address_t>(a), 4 * PS,
                                                                   kIODirectionInOut, kernel_task);
  assert_non_null(whole);
  IOSubMemoryDescriptor *middle = IOSubMemoryDescriptor::withSubRange(whole, PS, 2 * PS, kIODirectionInOut);
  IOGuardPageMemoryDescriptor *g1 = IOGuardPageMemoryDescriptor::withSize(PS);
  IOGuardPageMemoryDescriptor *g2 = IOGuardPageMemoryDescriptor::withSize(PS);
  assert_true(middle && g1 && g2);
  IOMemoryDescriptor *parts[3] = { g1, middle, g2 };
  IOMultiMemoryDescriptor *view = IOMultiMemoryDescriptor::withDescriptors(parts, 3, kIODirectionInOut);
  assert_non_null(view);
  assert_int_equal(view->getLength(), 4 * PS);
  IOMemoryMap *map = view->createMappingInTask(kernel_task, 0, kIOMapAnywhere);
  if (!map) fail_msg("createMappingInTask: %s", dkt_failure_text());
  const uint8_t *p = reinterpret_cast<const uint8_t *>(map->getAddress());
  assert_int_equal(map->getLength(), 4 * PS);
  assert_int_equal(p[PS], 0x61);
  assert_int_equal(p[3 * PS - 1], 0x62);
  const_cast<uint8_t *>(p)[PS + 7] = 0xee;      /* the same memory, not a copy */
  assert_int_equal(a[PS + 7], 0xee);
  uint8_t x = 0;
  assert_int_equal(view->readBytes(2 * PS, &x, 1), 1);
  assert_int_equal(x, 0x62);
  OSSafeReleaseNULL(map);
  OSSafeReleaseNULL(view);
  OSSafeReleaseNULL(g2);
  OSSafeReleaseNULL(g1);
  OSSafeReleaseNULL(middle);
  OSSafeReleaseNULL(whole);
  assert_int_equal(dk__objects_live(), live);
  munmap(a, 4 * PS);
}

/* setContext keeps an object with the descriptor (retained); copyContext hands it back +1. */
static void context(void **state)
{
  (void)state;
  long live = dk__objects_live();
  uint8_t *a = pages(1, 1);
  IOMemoryDescriptor *md = IOMemoryDescriptor::withAddressRange(reinterpret_cast<mach_vm_address_t>(a), PS,
                                                                kIODirectionOut, kernel_task);
  IOBufferMemoryDescriptor *tagObject = IOBufferMemoryDescriptor::withCapacity(64, kIODirectionInOut);
  assert_true(md && tagObject);
  assert_null(md->copyContext());
  md->setContext(tagObject);
  assert_int_equal(tagObject->getRetainCount(), 2);
  OSObject *got = md->copyContext();
  assert_ptr_equal(got, tagObject);
  assert_int_equal(tagObject->getRetainCount(), 3);
  OSSafeReleaseNULL(got);
  OSSafeReleaseNULL(md);                      /* lets its context go */
  assert_int_equal(tagObject->getRetainCount(), 1);
  OSSafeReleaseNULL(tagObject);
  assert_int_equal(dk__objects_live(), live);
  munmap(a, PS);
}

/* Bad input reads as IOKit's: memory that is not there, refused at prepare. */
static void unmapped_range_refused(void **state)
{
  (void)state;
  long live = dk__objects_live();
  uint8_t *a = pages(2, 0);
  munmap(a, 2 * PS);
  IOAddressRange r = { reinterpret_cast<mach_vm_address_t>(a), 2 * PS };
  ExampleUserBuffers d;
  RC(kIOReturnVMError, d.attach(&r, 1, kIODirectionIn));
  assert_null(d.fMemory);
  assert_int_equal(dk__objects_live(), live);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(user_ranges_physical),
    cmocka_unit_test(user_range_mapped_32),
    cmocka_unit_test(guarded_view),
    cmocka_unit_test(context),
    cmocka_unit_test(unmapped_range_refused),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
