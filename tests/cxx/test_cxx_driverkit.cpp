/* tests/cxx/test_cxx_driverkit.cpp: a DriverKit dext's buffers, as Apple's DriverKit
 * documentation writes them: IOBufferMemoryDescriptor::Create into an OSSharedPtr (attach())
 * and into a raw pointer, SetLength, GetAddressRange, CreateMapping with IOMemoryMap's
 * GetAddress / GetLength / GetOffset, and the return codes DriverKit gives for bad options.
 * Runs as root and as any user (nothing here needs a physical address). DriverKit's
 * IODMACommand (Create, PrepareForDMA) is not in the C library yet: see docs/cxx.md. */

/* ======== driver code (as a DriverKit dext writes it) ======================================= */
#include <DriverKit/IOBufferMemoryDescriptor.h>
#include <DriverKit/IOLib.h>
#include <DriverKit/IOMemoryMap.h>
#include <DriverKit/OSSharedPtr.h>

#include <string.h>

struct ExampleDext_IVars {
  OSSharedPtr<IOBufferMemoryDescriptor> commandRing;
  uint64_t commandRingAddress;
  uint64_t commandRingLength;
  IOBufferMemoryDescriptor *dataBuffer;
  IOMemoryMap *dataMap;
};

class ExampleDext {
public:
  kern_return_t SetupBuffers(uint64_t ringBytes, uint64_t dataBytes);
  void TeardownBuffers();
  ExampleDext_IVars *ivars;
};

kern_return_t ExampleDext::SetupBuffers(uint64_t ringBytes, uint64_t dataBytes)
{
  kern_return_t ret;
  IOAddressSegment range;

  ret = IOBufferMemoryDescriptor::Create(kIOMemoryDirectionInOut, ringBytes, 0, ivars->commandRing.attach());
  if (ret != kIOReturnSuccess) {
    IOLog("ExampleDext: ring Create failed 0x%x\n", ret);
    return ret;
  }
  ret = ivars->commandRing->SetLength(ringBytes);
  if (ret != kIOReturnSuccess) goto fail;
  ret = ivars->commandRing->GetAddressRange(&range);
  if (ret != kIOReturnSuccess) goto fail;
  ivars->commandRingAddress = range.address;
  ivars->commandRingLength = range.length;
  memset(reinterpret_cast<void *>(range.address), 0xA5, range.length);

  ret = IOBufferMemoryDescriptor::Create(kIOMemoryDirectionOut, dataBytes, 0, &ivars->dataBuffer);
  if (ret != kIOReturnSuccess) goto fail;
  ret = ivars->dataBuffer->CreateMapping(0, 0, 0, 0, 0, &ivars->dataMap);
  if (ret != kIOReturnSuccess) goto fail;
  return kIOReturnSuccess;

fail:
  IOLog("ExampleDext: buffer setup failed 0x%x\n", ret);
  TeardownBuffers();
  return ret;
}

void ExampleDext::TeardownBuffers()
{
  OSSafeReleaseNULL(ivars->dataMap);
  OSSafeReleaseNULL(ivars->dataBuffer);
  ivars->commandRing.reset();
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

static uint64_t PS;

static int group_setup(void **state)
{
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS ? 0 : -1;
}

static void dext_buffers(void **state)
{
  (void)state;
  long live = dk__objects_live();
  ExampleDext_IVars iv = {};
  ExampleDext dext;
  dext.ivars = &iv;
  OK(dext.SetupBuffers(3000, 5 * PS + 1));
  /* the ring: kernel_task memory at the address GetAddressRange gave, length = capacity */
  assert_non_null(iv.commandRing.get());
  assert_int_equal(iv.commandRingLength, 3000);
  assert_int_equal(iv.commandRingAddress, (uint64_t)(uintptr_t)iv.commandRing->getBytesNoCopy());
  assert_int_equal(iv.commandRingAddress % PS, 0);                  /* page-aligned */
  assert_int_equal(iv.commandRing->getRetainCount(), 1);
  assert_true(dkt_all_bytes(reinterpret_cast<void *>(iv.commandRingAddress), 3000, 0xA5));
  /* DriverKit's SetLength: success even past the capacity, which it ignores */
  OK(iv.commandRing->SetLength(1000));
  uint64_t l = 0;
  OK(iv.commandRing->GetLength(&l));
  assert_int_equal(l, 1000);
  OK(iv.commandRing->SetLength(1u << 20));
  OK(iv.commandRing->GetLength(&l));
  assert_int_equal(l, 1000);
  /* the data buffer's mapping: its own address (guarded), the same memory */
  assert_non_null(iv.dataMap);
  uint8_t *mapped = reinterpret_cast<uint8_t *>(iv.dataMap->GetAddress());
  uint8_t *bytes = static_cast<uint8_t *>(iv.dataBuffer->getBytesNoCopy());
  assert_non_null(mapped);
  assert_int_equal(iv.dataMap->GetLength(), 5 * PS + 1);
  assert_int_equal(iv.dataMap->GetOffset(), 0);
  assert_ptr_not_equal(mapped, bytes);
  assert_true(dkt_all_bytes(mapped, 5 * PS + 1, 0));                /* zeroed */
  bytes[5 * PS] = 0x42;
  assert_int_equal(mapped[5 * PS], 0x42);
  assert_ptr_equal(iv.dataMap->getMemoryDescriptor(), iv.dataBuffer);
  dext.TeardownBuffers();
  assert_null(iv.commandRing.get());
  assert_null(iv.dataBuffer);
  assert_null(iv.dataMap);
  assert_int_equal(dk__objects_live(), live);
}

/* DriverKit's codes: only direction bits (else kIOReturnBadArgument), capacity 0 is
 * kIOReturnNoMemory, *memory NULL on failure; an unknown cache selector in CreateMapping is
 * kIOReturnBadArgument; attach() into a pointer that holds an object releases it first. */
static void dext_return_codes(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOBufferMemoryDescriptor *b = reinterpret_cast<IOBufferMemoryDescriptor *>(&live);
  RC(kIOReturnBadArgument, IOBufferMemoryDescriptor::Create(kIOMemoryDisableCopyOnWrite, PS, 0, &b));
  assert_null(b);
  RC(kIOReturnNoMemory, IOBufferMemoryDescriptor::Create(kIOMemoryDirectionIn, 0, 0, &b));
  assert_null(b);
  OSSharedPtr<IOBufferMemoryDescriptor> sp;
  OK(IOBufferMemoryDescriptor::Create(kIOMemoryDirectionIn, PS, 0, sp.attach()));
  IOBufferMemoryDescriptor *first = sp.get();
  assert_int_equal(dk__objects_live(), live + 1);
  first->retain();                                                  /* to watch it */
  OK(IOBufferMemoryDescriptor::Create(kIOMemoryDirectionIn, 2 * PS, 0, sp.attach()));
  assert_int_equal(first->getRetainCount(), 1);                     /* attach() released it */
  assert_ptr_not_equal(sp.get(), first);
  assert_int_equal(sp->getCapacity(), 2 * PS);
  first->release();
  assert_int_equal(dk__objects_live(), live + 1);
  IOMemoryMap *map = NULL;
  RC(kIOReturnBadArgument, sp->CreateMapping(kIOMemoryMapCacheModeCopyback | kIOMemoryMapCacheModeInhibit, 0, 0, 0,
                                             0, &map));
  assert_null(map);
  OK(sp->CreateMapping(kIOMemoryMapReadOnly | kIOMemoryMapGuardedNone, 0, PS, PS, 0, &map));
  assert_int_equal(map->GetOffset(), PS);
  assert_int_equal(map->GetLength(), PS);
  assert_true(map->getMapOptions() & kIOMapReadOnly);
  OSSafeReleaseNULL(map);
  sp = nullptr;
  assert_int_equal(dk__objects_live(), live);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(dext_buffers),
    cmocka_unit_test(dext_return_codes),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
