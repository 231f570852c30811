/* tests/cxx/test_cxx_driverkit_dma.cpp: a DriverKit dext's DMA ring, as Apple's DriverKit
 * documentation and dexts write it: IOBufferMemoryDescriptor::Create + SetLength +
 * GetAddressRange, IODMACommand::Create with an IODMACommandSpecification, PrepareForDMA with
 * room for one segment (DriverKit drivers count on one), GetPreparation, PerformOperation and
 * CompleteDMA, in OSSharedPtr (attach()) and raw pointers, sized with IOVMPageSize. Run as any
 * user through a software IOMapper (the segment is one IOVA range under maxAddressBits), and as
 * root without a mapper, where the 128 KiB buffer's one segment is checked against pagemap:
 * the buffer's own frames when they are one run, else the double buffer's, with the data
 * carried out at PrepareForDMA and back at CompleteDMA. */

/* ======== driver code (as a DriverKit dext writes it) ======================================= */
#include <DriverKit/IOBufferMemoryDescriptor.h>
#include <DriverKit/IODMACommand.h>
#include <DriverKit/IOLib.h>
#include <DriverKit/IOService.h>
#include <DriverKit/OSSharedPtr.h>

struct ExampleDMADext_IVars {
  IOService *provider;
  uint64_t maxAddressBits;
  OSSharedPtr<IOBufferMemoryDescriptor> ring;
  OSSharedPtr<IODMACommand> ringDMA;
  uint64_t ringBytes;
  uint64_t ringBusAddress;
  uint64_t ringFlags;
  uint8_t *ringCPU;
};

class ExampleDMADext {
public:
  kern_return_t SetupRing(uint64_t bytes);
  kern_return_t CopyToDevice(uint64_t offset, IOMemoryDescriptor *from, uint64_t length);
  kern_return_t CopyFromDevice(uint64_t offset, IOMemoryDescriptor *to, uint64_t length);
  void TeardownRing();
  ExampleDMADext_IVars *ivars;
};

kern_return_t ExampleDMADext::SetupRing(uint64_t bytes)
{
  kern_return_t ret;
  IOAddressSegment range = {};
  IOAddressSegment segments[1] = {};
  uint32_t segmentCount = 1;
  IODMACommandSpecification spec = {
    .options = kIODMACommandSpecificationNoOptions,
    .maxAddressBits = ivars->maxAddressBits,
  };

  bytes = (bytes + IOVMPageSize - 1) & ~(IOVMPageSize - 1);
  ret = IOBufferMemoryDescriptor::Create(kIOMemoryDirectionInOut, bytes, IOVMPageSize, ivars->ring.attach());
  if (ret != kIOReturnSuccess) return ret;
  ret = ivars->ring->SetLength(bytes);
  if (ret != kIOReturnSuccess) goto fail;
  ret = ivars->ring->GetAddressRange(&range);
  if (ret != kIOReturnSuccess) goto fail;
  ivars->ringCPU = reinterpret_cast<uint8_t *>(range.address);

  ret = IODMACommand::Create(ivars->provider, kIODMACommandCreateNoOptions, &spec, ivars->ringDMA.attach());
  if (ret != kIOReturnSuccess) goto fail;
  ret = ivars->ringDMA->PrepareForDMA(kIODMACommandPrepareForDMANoOptions, ivars->ring.get(), 0, bytes,
                                      &ivars->ringFlags, &segmentCount, segments);
  if (ret != kIOReturnSuccess) goto fail;
  if (segmentCount != 1 || segments[0].length != bytes) {
    IOLog("ExampleDMADext: the ring is %u segments\n", segmentCount);
    ivars->ringDMA->CompleteDMA(kIODMACommandCompleteDMANoOptions);
    ret = kIOReturnNotAligned;
    goto fail;
  }
  ivars->ringBusAddress = segments[0].address;
  ivars->ringBytes = bytes;
  return kIOReturnSuccess;

fail:
  ivars->ringDMA.reset();
  ivars->ring.reset();
  return ret;
}

/* What the device sees of the ring may be a copy (DriverKit: "IODMACommand does not perform
 * bounce buffering but allows access to the mapping with the PerformOperation method"). */
kern_return_t ExampleDMADext::CopyToDevice(uint64_t offset, IOMemoryDescriptor *from, uint64_t length)
{
  return ivars->ringDMA->PerformOperation(kIODMACommandPerformOperationOptionWrite, offset, length, 0, from);
}

kern_return_t ExampleDMADext::CopyFromDevice(uint64_t offset, IOMemoryDescriptor *to, uint64_t length)
{
  return ivars->ringDMA->PerformOperation(kIODMACommandPerformOperationOptionRead, offset, length, 0, to);
}

void ExampleDMADext::TeardownRing()
{
  if (ivars->ringDMA) ivars->ringDMA->CompleteDMA(kIODMACommandCompleteDMANoOptions);
  ivars->ringDMA.reset();
  ivars->ring.reset();
  ivars->ringBusAddress = 0;
  ivars->ringCPU = NULL;
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

#include <unistd.h>

extern "C" {
uint8_t *dk__dmacommand_bounce_bytes(IODMACommand *command, uint64_t *length);
}

static const uint64_t KIB = 1024;

static void fill(uint8_t *p, uint64_t n, unsigned seed)
{
  for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 7 + seed);
}

static bool filled(const uint8_t *p, uint64_t n, unsigned seed)
{
  for (uint64_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(i * 7 + seed)) return false;
  return true;
}

/* A data buffer of `n` bytes holding the pattern `seed`. */
static IOBufferMemoryDescriptor *pattern_buffer(uint64_t n, unsigned seed)
{
  IOBufferMemoryDescriptor *b = nullptr;
  OK(IOBufferMemoryDescriptor::Create(kIOMemoryDirectionInOut, n, 0, &b));
  OK(b->SetLength(n));
  fill(static_cast<uint8_t *>(b->getBytesNoCopy()), n, seed);
  return b;
}

/* The dext's ring through a software IOMapper (no privilege needed): one IOVA segment of the
 * whole 128 KiB under maxAddressBits, the flags of an InOut buffer, the preparation as
 * GetPreparation reports it, the CPU's writes seen through PerformOperation (no copy with a
 * mapper), and everything given back at the end. */
static void dext_ring_through_mapper(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xffffffffffffull);
  static const uint64_t address_bits[] = { 32, 40, 64 };
  for (uint64_t bits : address_bits) {
    ExampleDMADext_IVars iv = {};
    ExampleDMADext dext;
    dext.ivars = &iv;
    iv.maxAddressBits = bits;
    OK(dext.SetupRing(128 * KIB - 100));                         /* rounded up to IOVMPageSize */
    assert_int_equal(iv.ringBytes, 128 * KIB);
    assert_int_equal(iv.ringFlags, kIOMemoryDirectionInOut);
    assert_true(iv.ringBusAddress >= 0x100000);
    if (bits < 64) assert_true(iv.ringBusAddress + iv.ringBytes - 1 < (1ull << bits));
    assert_int_equal(iv.ringBusAddress % IOVMPageSize, 0);
    assert_false(dk_dmacommand_is_double_buffered(iv.ringDMA.get()));
    /* GetPreparation: the range and the descriptor, retained for the caller */
    uint64_t offset = 1, length = 0;
    OSSharedPtr<IOMemoryDescriptor> prepared;
    OK(iv.ringDMA->GetPreparation(&offset, &length, prepared.attach()));
    assert_int_equal(offset, 0);
    assert_int_equal(length, 128 * KIB);
    assert_ptr_equal(prepared.get(), iv.ring.get());
    assert_int_equal(iv.ring->getRetainCount(), 3);              /* ours, the command's, GetPreparation's */
    prepared.reset();
    OK(iv.ringDMA->GetPreparation(nullptr, nullptr, nullptr, nullptr));
    /* the device's view is the ring itself: writes either way are seen the other way */
    IOBufferMemoryDescriptor *data = pattern_buffer(8 * KIB, 5);
    OK(dext.CopyToDevice(4 * KIB, data, 8 * KIB));
    assert_true(filled(iv.ringCPU + 4 * KIB, 8 * KIB, 5));
    fill(iv.ringCPU, 8 * KIB, 9);
    OK(dext.CopyFromDevice(0, data, 8 * KIB));
    assert_true(filled(static_cast<uint8_t *>(data->getBytesNoCopy()), 8 * KIB, 9));
    OK(iv.ringDMA->PerformOperation(kIODMACommandPerformOperationOptionZero, 0, 4 * KIB, 0, nullptr));
    assert_true(dkt_all_bytes(iv.ringCPU, 4 * KIB, 0));
    RC(kIOReturnUnderrun, dext.CopyToDevice(128 * KIB - 4 * KIB, data, 8 * KIB));
    OSSafeReleaseNULL(data);
    dext.TeardownRing();
    assert_null(iv.ring.get());
    assert_int_equal(dk__objects_live(), live);
  }
  dkt_soft_mapper_end(m);
}

/* The dext's ring on a machine without an IOMMU (root): still one segment for 128 KiB, and
 * that segment is real: pagemap shows the buffer's frames as one run from its address, or,
 * when the buffer's 4K pages are scattered, the double buffer's frames; then what the CPU wrote
 * before PrepareForDMA is what the device sees, and what the device wrote reaches the buffer
 * at CompleteDMA. */
static void dext_ring_without_mapper(void **state)
{
  (void)state;
  dkt_require_physical();
  if (!dkt_pool_usable()) DKT_SKIP("a contiguous double buffer needs the hugepage pool (root and hugetlb)");
  long live = dk__objects_live();
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 1);
  ExampleDMADext_IVars iv = {};
  ExampleDMADext dext;
  dext.ivars = &iv;
  iv.maxAddressBits = 64;
  OK(dext.SetupRing(128 * KIB));
  IODMACommand *cmd = iv.ringDMA.get();
  const void *seen = iv.ringCPU;
  bool bounced = dk_dmacommand_is_double_buffered(cmd);
  if (bounced) seen = dk__dmacommand_bounce_bytes(cmd, nullptr);
  assert_non_null(seen);
  const char *why = dkt_check_physical_promise(seen, 128 * KIB, 1, 0, true);
  if (why) fail_msg("the one segment's memory: %s", why);
  uint64_t pfn = 0;
  assert_int_equal(dkt_read_frames(seen, 1, &pfn), 1);
  assert_int_equal(iv.ringBusAddress, pfn * dkt_page_size());
  print_message("128 KiB DriverKit ring without a mapper: one segment at 0x%llx (%s)\n",
                (unsigned long long)iv.ringBusAddress, bounced ? "double buffer" : "its own frames");
  /* the device's view: what the CPU does through PerformOperation, what the device writes
   * (here: into what `seen` maps) comes back at CompleteDMA */
  IOBufferMemoryDescriptor *data = pattern_buffer(128 * KIB, 3);
  OK(dext.CopyToDevice(0, data, 128 * KIB));
  assert_true(filled(static_cast<const uint8_t *>(seen), 128 * KIB, 3));
  fill(static_cast<uint8_t *>(const_cast<void *>(seen)), 128 * KIB, 4);   /* the device writes */
  uint8_t *cpu = iv.ringCPU;
  OK(iv.ringDMA->CompleteDMA(kIODMACommandCompleteDMANoOptions));
  assert_true(filled(cpu, 128 * KIB, 4));
  RC(kIOReturnNotReady, iv.ringDMA->CompleteDMA(kIODMACommandCompleteDMANoOptions));
  iv.ringDMA.reset();
  iv.ring.reset();
  OSSafeReleaseNULL(data);
  dk_option_set(DK_OPTION_POOL, pool);
  assert_int_equal(dk__objects_live(), live);
}

/* DriverKit's codes through the C++ members, and the objects each path leaves (none). */
static void dext_return_codes(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOMapper *m = dkt_soft_mapper_begin(0x100000, 0xffffffffull);
  IODMACommandSpecification spec = {};
  spec.maxAddressBits = 32;
  IODMACommand *raw = reinterpret_cast<IODMACommand *>(&live);
  RC(kIOReturnBadArgument, IODMACommand::Create(nullptr, 1, &spec, &raw));
  assert_null(raw);
  RC(kIOReturnBadArgument, IODMACommand::Create(nullptr, kIODMACommandCreateNoOptions, nullptr, &raw));
  spec.maxAddressBits = 256;
  RC(kIOReturnBadArgument, IODMACommand::Create(nullptr, kIODMACommandCreateNoOptions, &spec, &raw));
  spec.maxAddressBits = 32;
  OSSharedPtr<IODMACommand> cmd;
  OK(IODMACommand::Create(nullptr, kIODMACommandCreateNoOptions, &spec, cmd.attach()));
  assert_non_null(OSDynamicCast(IODMACommand, cmd.get()));
  OSSharedPtr<IOBufferMemoryDescriptor> buf;
  OK(IOBufferMemoryDescriptor::Create(kIOMemoryDirectionOut, 3 * IOVMPageSize, 0, buf.attach()));
  OK(buf->SetLength(3 * IOVMPageSize));
  IOAddressSegment seg[2];
  uint64_t flags = 0;
  uint32_t n = 0;
  RC(kIOReturnBadArgument, cmd->PrepareForDMA(0, buf.get(), 0, 0, &flags, &n, seg));   /* no room */
  n = 2;
  RC(kIOReturnBadArgument, cmd->PrepareForDMA(1, buf.get(), 0, 0, &flags, &n, seg));
  RC(kIOReturnNotReady, cmd->CompleteDMA(kIODMACommandCompleteDMANoOptions));
  RC(kIOReturnNotReady, cmd->GetPreparation(nullptr, nullptr, nullptr));
  /* length 0 is the descriptor's whole length, whatever the offset (as the kernel's prepare) */
  RC(kIOReturnBadArgument, cmd->PrepareForDMA(0, buf.get(), IOVMPageSize, 0, &flags, &n, seg));
  OK(cmd->PrepareForDMA(kIODMACommandPrepareForDMANoOptions, buf.get(), 0, 0, &flags, &n, seg, nullptr));
  assert_int_equal(n, 1);                                        /* one IOVA range */
  assert_int_equal(seg[0].length, 3 * IOVMPageSize);
  assert_int_equal(flags, kIOMemoryDirectionOut);                /* the device reads it */
  uint64_t offset = 1, length = 0;
  OK(cmd->GetPreparation(&offset, &length, nullptr));
  assert_int_equal(offset, 0);
  assert_int_equal(length, 3 * IOVMPageSize);
  RC(kIOReturnBusy, cmd->PrepareForDMA(0, buf.get(), 0, 0, &flags, &n, seg));
  RC(kIOReturnBadArgument, cmd->PerformOperation(kIODMACommandPerformOperationOptionRead |
                                                     kIODMACommandPerformOperationOptionWrite,
                                                 0, 16, 0, buf.get()));
  OK(cmd->CompleteDMA(kIODMACommandCompleteDMANoOptions, nullptr));
  RC(kIOReturnNotReady, cmd->CompleteDMA(kIODMACommandCompleteDMANoOptions));
  /* the command, the buffer and the software mapper's mappings all go */
  cmd.reset();
  buf.reset();
  dkt_soft_mapper_end(m);
  assert_int_equal(dk__objects_live(), live);
}

/* IOVMPageSize: the CPU page without an IOMMU (no VFIO mapper is opened here). */
static void vm_page_size(void **state)
{
  (void)state;
  assert_int_equal(IOVMPageSize, (uint64_t)sysconf(_SC_PAGESIZE));
  assert_int_equal(IOVMPageSize, dk_capabilities()->page_size);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(dext_ring_through_mapper),
    cmocka_unit_test(dext_ring_without_mapper),
    cmocka_unit_test(dext_return_codes),
    cmocka_unit_test(vm_page_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
