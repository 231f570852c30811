/* tests/cxx/test_cxx_dmacommand.cpp: an IODMACommand loop as an IOKit storage driver writes it
 * (Apple's IODMACommand documentation and XNU's header): withSpecification with
 * kIODMACommandOutputHost64 or weakWithSpecification with kIODMACommandOutputHost32,
 * setMemoryDescriptor, prepare(offset, length), a gen64IOVMSegments / gen32IOVMSegments loop
 * into the device's segment list, complete, clearMemoryDescriptor; kIterateOnly and
 * kForceDoubleBuffer. Checked as root against pagemap (physical segments cut at the maximum
 * segment size), and as any user through a software IOMapper (32-bit I/O virtual addresses). */

/* ======== driver code (as an IOKit kext writes it) ========================================== */
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <IOKit/IODMACommand.h>
#include <IOKit/IOLib.h>

#define kMaxSegments 128

class ExampleStorageDriver {
public:
  bool initCommand64(UInt8 addressBits, UInt64 maxSegmentSize);
  bool initCommand32(UInt64 maxSegmentSize);
  bool initIterator(UInt8 addressBits);
  IOReturn startTransfer(IOMemoryDescriptor *md, UInt64 offset, UInt64 length);
  void finishTransfer();
  void freeCommand();

  IODMACommand *fDMACommand = NULL;
  bool fUses32BitSegments = false;
  IODMACommand::Segment64 fSegments64[kMaxSegments];
  IODMACommand::Segment32 fSegments32[kMaxSegments];
  UInt32 fSegmentCount = 0;
};

bool ExampleStorageDriver::initCommand64(UInt8 addressBits, UInt64 maxSegmentSize)
{
  fDMACommand = IODMACommand::withSpecification(kIODMACommandOutputHost64, addressBits, maxSegmentSize,
                                                IODMACommand::kMapped, 0, 1);
  fUses32BitSegments = false;
  return fDMACommand != NULL;
}

bool ExampleStorageDriver::initCommand32(UInt64 maxSegmentSize)
{
  fUses32BitSegments = true;
  return IODMACommand::weakWithSpecification(&fDMACommand, kIODMACommandOutputHost32, 32, maxSegmentSize) ==
         kIOReturnSuccess;
}

bool ExampleStorageDriver::initIterator(UInt8 addressBits)
{
  fDMACommand = IODMACommand::withSpecification(
      kIODMACommandOutputHost64, addressBits, 0,
      (IODMACommand::MappingOptions)(IODMACommand::kMapped | IODMACommand::kIterateOnly));
  fUses32BitSegments = false;
  return fDMACommand != NULL;
}

IOReturn ExampleStorageDriver::startTransfer(IOMemoryDescriptor *md, UInt64 offset, UInt64 length)
{
  IOReturn ret = fDMACommand->setMemoryDescriptor(md, false);
  if (ret != kIOReturnSuccess) return ret;
  ret = fDMACommand->prepare(offset, length);
  if (ret != kIOReturnSuccess) {
    fDMACommand->clearMemoryDescriptor();
    return ret;
  }
  UInt64 genOffset = 0;
  fSegmentCount = 0;
  while (genOffset < length) {
    UInt32 numSegments = 1;
    if (fSegmentCount == kMaxSegments) {
      ret = kIOReturnNoResources;
      break;
    }
    if (fUses32BitSegments)
      ret = fDMACommand->gen32IOVMSegments(&genOffset, &fSegments32[fSegmentCount], &numSegments);
    else
      ret = fDMACommand->gen64IOVMSegments(&genOffset, &fSegments64[fSegmentCount], &numSegments);
    if (ret != kIOReturnSuccess) break;
    if (numSegments != 1) {
      ret = kIOReturnDMAError;
      break;
    }
    fSegmentCount++;
  }
  if (ret != kIOReturnSuccess) {
    IOLog("ExampleStorage: no segments for the transfer (0x%x)\n", ret);
    finishTransfer();
  }
  return ret;
}

void ExampleStorageDriver::finishTransfer()
{
  fDMACommand->complete();
  fDMACommand->clearMemoryDescriptor();
}

void ExampleStorageDriver::freeCommand() { OSSafeReleaseNULL(fDMACommand); }

/* ======== the test ========================================================================== */
#include "cxx_test.h"

#include <cstring>

static uint64_t PS;

static int group_setup(void **state)
{
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS ? 0 : -1;
}

/* The driver's segments are the physical runs of [offset, offset+length) by pagemap, each cut
 * at maxSeg (alignment 1: cut exactly there). */
static void check_physical_segments(const ExampleStorageDriver &d, const uint8_t *va, size_t bufLen, uint64_t offset,
                                    uint64_t length, uint64_t maxSeg)
{
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, bufLen, &n);
  assert_non_null(pfn);
  uint64_t off = offset;
  for (UInt32 i = 0; i < d.fSegmentCount; i++) {
    uint64_t run = 0;
    uint64_t want = dkt_expected_segment(va, bufLen, pfn, (size_t)off, &run);
    if (run > offset + length - off) run = offset + length - off;
    if (maxSeg && run > maxSeg) run = maxSeg;
    if (d.fSegments64[i].fIOVMAddr != want || d.fSegments64[i].fLength != run)
      fail_msg("segment %u: 0x%llx+0x%llx, pagemap says 0x%llx+0x%llx", i,
               (unsigned long long)d.fSegments64[i].fIOVMAddr, (unsigned long long)d.fSegments64[i].fLength,
               (unsigned long long)want, (unsigned long long)run);
    off += run;
  }
  assert_int_equal(off, offset + length);
  free(pfn);
}

static void dma_physical_64(void **state)
{
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 16 * PS;
  IOBufferMemoryDescriptor *buf = IOBufferMemoryDescriptor::withOptions(kIODirectionInOut, len, PS);
  assert_non_null(buf);
  const uint8_t *va = static_cast<const uint8_t *>(buf->getBytesNoCopy());
  ExampleStorageDriver d;
  assert_true(d.initCommand64(64, PS));
  assert_int_equal(d.fDMACommand->getNumAddressBits(), 64);
  /* the whole buffer, then a range that starts inside a page */
  OK(d.startTransfer(buf, 0, len));
  assert_true(d.fSegmentCount >= 16);
  check_physical_segments(d, va, len, 0, len, PS);
  d.finishTransfer();
  OK(d.startTransfer(buf, PS / 2, 3 * PS));
  check_physical_segments(d, va, len, PS / 2, 3 * PS, PS);
  UInt64 po = 0, pl = 0;
  OK(d.fDMACommand->getPreparedOffsetAndLength(&po, &pl));
  assert_int_equal(po, PS / 2);
  assert_int_equal(pl, 3 * PS);
  /* the descriptor the command holds is the driver's buffer, as IOKit's class */
  const IOMemoryDescriptor *held = d.fDMACommand->getMemoryDescriptor();
  assert_ptr_equal(held, buf);
  assert_ptr_equal(OSDynamicCast(IOBufferMemoryDescriptor, held), buf);
  assert_null(OSDynamicCast(IOMemoryMap, held));
  d.finishTransfer();
  RC(kIOReturnNotReady, d.fDMACommand->getPreparedOffsetAndLength(&po, &pl));
  d.freeCommand();
  OSSafeReleaseNULL(buf);
  assert_null(buf);
  assert_int_equal(dk__objects_live(), live);
}

/* kIterateOnly walks the memory as it is (no bounce, no mapping of its own). */
static void dma_iterate_only_physical(void **state)
{
  (void)state;
  dkt_require_physical();
  long live = dk__objects_live();
  size_t len = 8 * PS;
  IOBufferMemoryDescriptor *buf = IOBufferMemoryDescriptor::inTaskWithOptions(kernel_task, kIODirectionOut, len, PS);
  assert_non_null(buf);
  ExampleStorageDriver d;
  assert_true(d.initIterator(64));
  OK(d.startTransfer(buf, 0, len));
  check_physical_segments(d, static_cast<const uint8_t *>(buf->getBytesNoCopy()), len, 0, len, 0);
  assert_false(dk_dmacommand_is_double_buffered(d.fDMACommand));
  d.finishTransfer();
  d.freeCommand();
  OSSafeReleaseNULL(buf);
  assert_int_equal(dk__objects_live(), live);
}

/* A 32-bit device behind an IOMMU: 32-bit segments, I/O virtual addresses below 4 GiB, one
 * range cut at the maximum segment size; the buffer's own mapping is what the command uses.
 * As any user (software IOMapper). */
static void dma_mapped_32(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xFFFFFFFFull);
  size_t len = 12 * PS;
  IOBufferMemoryDescriptor *buf = IOBufferMemoryDescriptor::withCapacity(len, kIODirectionInOut);
  assert_non_null(buf);
  ExampleStorageDriver d;
  assert_true(d.initCommand32(4 * PS));
  assert_int_equal(d.fDMACommand->getNumAddressBits(), 32);
  OK(d.startTransfer(buf, PS, 9 * PS));
  assert_int_equal(d.fSegmentCount, 3);
  IOByteCount segLen = 0;
  UInt64 iova = buf->getPhysicalSegment(PS, &segLen);
  assert_int_equal(segLen, len - PS);                   /* mapped: one range to the end */
  UInt64 expect = iova;
  for (UInt32 i = 0; i < d.fSegmentCount; i++) {
    assert_int_equal(d.fSegments32[i].fIOVMAddr, expect);
    assert_int_equal(d.fSegments32[i].fLength, i < 2 ? 4 * PS : PS);
    expect += d.fSegments32[i].fLength;
  }
  assert_true(expect - 1 <= 0xFFFFFFFFull);
  /* 64-bit records from a 32-bit command are refused (XNU: "incorrect results") */
  UInt64 off = 0;
  IODMACommand::Segment64 s64[1];
  UInt32 one = 1;
  RC(kIOReturnBadArgument, d.fDMACommand->gen64IOVMSegments(&off, s64, &one));
  d.finishTransfer();
  d.freeCommand();
  OSSafeReleaseNULL(buf);
  assert_int_equal(dk__objects_live(), live);
  dkt_soft_mapper_end(m);
}

/* Double buffering on request (IODMACommand::kForceDoubleBuffer): the device's view is a
 * bounce buffer; the command's writeBytes reach it, complete() copies it into the memory. */
static void dma_force_double_buffer(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, (1ull << 40) - 1);
  size_t len = 4 * PS;
  IOBufferMemoryDescriptor *buf = IOBufferMemoryDescriptor::withCapacity(len, kIODirectionIn);
  assert_non_null(buf);
  uint8_t *va = static_cast<uint8_t *>(buf->getBytesNoCopy());
  ExampleStorageDriver d;
  assert_true(d.initCommand64(40, 0));
  OK(d.startTransfer(buf, 0, len));
  OK(d.fDMACommand->synchronize(IODMACommand::kForceDoubleBuffer));
  assert_true(dk_dmacommand_is_double_buffered(d.fDMACommand));
  const char msg[] = "what the device wrote";
  assert_int_equal(d.fDMACommand->writeBytes(100, msg, sizeof msg), sizeof msg);
  assert_true(dkt_all_bytes(va + 100, sizeof msg, 0));  /* not yet in the memory */
  char back[sizeof msg];
  assert_int_equal(d.fDMACommand->readBytes(100, back, sizeof back), sizeof back);
  assert_memory_equal(back, msg, sizeof msg);
  d.finishTransfer();                                   /* complete(): the In copy */
  assert_memory_equal(va + 100, msg, sizeof msg);
  d.freeCommand();
  OSSafeReleaseNULL(buf);
  assert_int_equal(dk__objects_live(), live);
  dkt_soft_mapper_end(m);
}

/* IOKit's names are the C library's functions; the factories' argument rules hold. */
static void dma_names_and_rules(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IODMACommand::SegmentFunction f = kIODMACommandOutputHost64;
  assert_true(f == &IODMACommand::OutputHost64);
  assert_true(f == IODMACommand_OutputHost64);
  assert_true(kIODMACommandOutputBig32 == &IODMACommand::OutputBig32);
  IODMACommand::Segment64 s = { 0x1000, 0x200 };
  IODMACommand::Segment32 out[2];
  assert_true(IODMACommand::OutputHost32(NULL, s, out, 1));
  assert_int_equal(out[1].fIOVMAddr, 0x1000);
  /* a bad specification: NULL, and a weak creation's kIOReturnError */
  assert_null(IODMACommand::withSpecification(NULL, 64, 0));
  IODMACommand *cmd = reinterpret_cast<IODMACommand *>(&s);
  assert_int_equal(IODMACommand::weakWithSpecification(&cmd, kIODMACommandOutputHost32, 40, 0), kIOReturnError);
  assert_null(cmd);
  assert_int_equal(IODMACommand::weakWithSpecification(NULL, kIODMACommandOutputHost64, 64, 0), kIOReturnBadArgument);
  /* the SegmentOptions form */
  IODMACommand::SegmentOptions so = {};
  so.fStructSize = sizeof so;
  so.fNumAddressBits = 39;
  so.fAlignment = 8;
  OSPtr<IODMACommand> c = IODMACommand::withSpecification(kIODMACommandOutputHost64, &so, IODMACommand::kMapped,
                                                          NULL, NULL);
  assert_non_null(c);
  assert_int_equal(c->getNumAddressBits(), 39);
  assert_int_equal(c->getAlignment(), 8);
  assert_string_equal(dk_object_class_name(c), "IODMACommand");
  assert_ptr_equal(OSDynamicCast(OSObject, c), c);
  assert_null(OSDynamicCast(IOMemoryDescriptor, c));
  c->release();
  assert_int_equal(dk__objects_live(), live);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(dma_physical_64),
    cmocka_unit_test(dma_iterate_only_physical),
    cmocka_unit_test(dma_mapped_32),
    cmocka_unit_test(dma_force_double_buffer),
    cmocka_unit_test(dma_names_and_rules),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
