/* tests/test_reference.c: one test per applicable row of REFERENCE.md §9 (the reviewer
 * table), named after the row. Runs as root and as an ordinary user: nothing here needs
 * frame numbers; where a physical address is asked for, a refusal for lack of privilege
 * (or pinning) is accepted. Deeper tests of §2-§6 are in test_semantics.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <dmakit/dmakit.h>

#include "semantics_util.h"

#define CK(name, value) assert_int_equal((uint64_t)(name), (uint64_t)(value))

/* ---- row 1: option constants (§1.1-§1.6, §1.8) --------------------------------------- */
static void row01_option_constants(void **state) {
  (void)state;
  /* §1.1 types (LP64) */
  assert_int_equal(sizeof(IOOptionBits), 4);
  assert_int_equal(sizeof(IODirection), 4);
  assert_int_equal(sizeof(IOReturn), 4);
  assert_true((IOReturn)-1 < 0);
  assert_int_equal(sizeof(mach_vm_size_t), 8);
  assert_int_equal(sizeof(mach_vm_address_t), 8);
  assert_int_equal(sizeof(vm_size_t), 8);
  assert_int_equal(sizeof(vm_offset_t), 8);
  assert_int_equal(sizeof(IOByteCount), 8);
  assert_int_equal(sizeof(IOPhysicalAddress), 8);
  assert_int_equal(sizeof(IOPhysicalLength), 8);
  assert_int_equal(sizeof(addr64_t), 8);
  assert_int_equal(sizeof(IOVirtualAddress), 8);
  assert_int_equal(sizeof(ppnum_t), 4);
  assert_int_equal(sizeof(IOPhysicalRange), 16);
  assert_int_equal(sizeof(IOVirtualRange), 16);
  assert_int_equal(sizeof(IOAddressRange), 16);
  assert_int_equal(sizeof(IOAddressSegment), 16);
  assert_int_equal(offsetof(IOAddressSegment, length), 8);

  /* §1.2 directions */
  CK(kIODirectionNone, 0x0);
  CK(kIODirectionIn, 0x1);
  CK(kIODirectionOut, 0x2);
  CK(kIODirectionOutIn, 0x3);
  CK(kIODirectionInOut, 0x3);
  CK(kIODirectionPrepareToPhys32, 0x4);
  CK(kIODirectionPrepareNoFault, 0x8);
  CK(kIODirectionPrepareReserved1, 0x10);
  CK(kIODirectionPrepareNoZeroFill, 0x10);
  CK(kIODirectionPrepareNonCoherent, 0x20);
  CK(kIODirectionPrepareAvoidThrottling, 0x100);
  CK(kIODirectionCompleteWithError, 0x40);
  CK(kIODirectionCompleteWithDataValid, 0x80);

  /* §1.3 allocation options */
  CK(kIOMemoryPhysicallyContiguous, 0x00000010);
  CK(kIOMemoryPageable, 0x00000020);
  CK(kIOMemoryPurgeable, 0x00000040);
  CK(kIOMemoryHostPhysicallyContiguous, 0x00000080);
  CK(kIOMemorySharingTypeMask, 0x000f0000);
  CK(kIOMemoryUnshared, 0x00000000);
  CK(kIOMemoryKernelUserShared, 0x00010000);
  CK(kIOBufferDescriptorMemoryFlags, 0x00B0080F);
  CK(kIOBufferDescriptorMemoryFlags & ~kIOMemoryAutoPrepare, 0x00B00807);
  CK(_IOBUFFERMEMORYDESCRIPTOR_INTASKWITHOPTIONS_, 1);
  CK(_IOBUFFERMEMORYDESCRIPTOR_HOSTPHYSICALLYCONTIGUOUS_, 1);
  CK(IOBUFFERMEMORYDESCRIPTOR_SUPPORTS_INTASKWITHOPTIONS_TAGS, 1);

  /* §1.4 descriptor flags */
  CK(kIOMemoryDirectionMask, 0x7);
  CK(kIOMemoryAutoPrepare, 0x8);
  CK(kIOMemoryTypeVirtual, 0x10);
  CK(kIOMemoryTypeVirtual64, 0x10);
  CK(kIOMemoryTypePhysical, 0x20);
  CK(kIOMemoryTypePhysical64, 0x20);
  CK(kIOMemoryTypeUPL, 0x30);
  CK(kIOMemoryTypePersistentMD, 0x40);
  CK(kIOMemoryTypeUIO, 0x50);
  CK(kIOMemoryTypeMask, 0xf0);
  CK(kIOMemoryAsReference, 0x100);
  CK(kIOMemoryBufferPageable, 0x400);
  CK(kIOMemoryMapperNone, 0x800);
  CK(kIOMemoryHostOnly, 0x1000);
  CK(kIOMemoryRedirected, 0x4000);
  CK(kIOMemoryPreparedReadOnly, 0x8000);
  CK(kIOMemoryPersistent, 0x10000);
  CK(kIOMemoryMapCopyOnWrite, 0x20000);
  CK(kIOMemoryRemote, 0x40000);
  CK(kIOMemoryThreadSafe, 0x100000);
  CK(kIOMemoryClearEncrypt, 0x200000);
  CK(kIOMemoryBufferPurgeable, 0x400000);
  CK(kIOMemoryUseReserve, 0x800000);
  CK(kIOMemoryBufferCacheMask, 0x70000000);
  CK(kIOMemoryBufferCacheShift, 28);
  /* the documented bit collisions */
  CK(kIOMemoryPhysicallyContiguous, kIOMemoryTypeVirtual);
  CK(kIOMemoryPageable, kIOMemoryTypePhysical);
  CK(kIOMemoryPurgeable, kIOMemoryTypePersistentMD);
  CK(kIOMemoryHostPhysicallyContiguous & kIOMemoryTypeMask, kIOMemoryHostPhysicallyContiguous);
  CK(kIOMemoryKernelUserShared, kIOMemoryPersistent);

  /* §1.5 cache modes and map options */
  CK(kIODefaultCache, 0);
  CK(kIOInhibitCache, 1);
  CK(kIOWriteThruCache, 2);
  CK(kIOCopybackCache, 3);
  CK(kIOWriteCombineCache, 4);
  CK(kIOCopybackInnerCache, 5);
  CK(kIOPostedWrite, 6);
  CK(kIORealTimeCache, 7);
  CK(kIOPostedReordered, 8);
  CK(kIOPostedCombinedReordered, 9);
  CK(kIOMapDefaultCache, 0x000);
  CK(kIOMapInhibitCache, 0x100);
  CK(kIOMapWriteThruCache, 0x200);
  CK(kIOMapCopybackCache, 0x300);
  CK(kIOMapWriteCombineCache, 0x400);
  CK(kIOMapCopybackInnerCache, 0x500);
  CK(kIOMapPostedWrite, 0x600);
  CK(kIOMapRealTimeCache, 0x700);
  CK(kIOMapPostedReordered, 0x800);
  CK(kIOMapPostedCombinedReordered, 0x900);
  CK(kIOMapAnywhere, 0x1);
  CK(kIOMapCacheMask, 0xf00);
  CK(kIOMapCacheShift, 8);
  CK(kIOMapUserOptionsMask, 0xfff);
  CK(kIOMapReadOnly, 0x1000);
  CK(kIOMapStatic, 0x01000000);
  CK(kIOMapReference, 0x02000000);
  CK(kIOMapUnique, 0x04000000);
  CK(kIOMap64Bit, 0x08000000);
  CK(kIOMapPrefault, 0x10000000);
  CK(kIOMapOverwrite, 0x20000000);
  CK(kIOMapGuardedMask, 0xC0000000);
  CK(kIOMapGuardedSmall, 0x40000000);
  CK(kIOMapGuardedLarge, 0x80000000);
  /* the cache mask overlaps nothing in §1.3 or the direction bits */
  CK(kIOMapCacheMask & (kIOMemoryDirectionMask | kIOMemoryPhysicallyContiguous | kIOMemoryPageable |
                        kIOMemoryPurgeable | kIOMemoryHostPhysicallyContiguous |
                        kIOMemorySharingTypeMask),
     0);

  /* §1.6 purgeable, performOperation, preparation IDs, DMA mapping */
  CK(kIOMemoryPurgeableKeepCurrent, 1);
  CK(kIOMemoryPurgeableNonVolatile, 2);
  CK(kIOMemoryPurgeableVolatile, 3);
  CK(kIOMemoryPurgeableEmpty, 4);
  CK(kIOMemoryIncoherentIOFlush, 1);
  CK(kIOMemoryIncoherentIOStore, 2);
  CK(kIOMemoryClearEncrypted, 50);
  CK(kIOMemorySetEncrypted, 51);
  CK(kIOPreparationIDUnprepared, 0);
  CK(kIOPreparationIDUnsupported, 1);
  CK(kIOPreparationIDAlwaysPrepared, 2);
  assert_null(kIOMapperSystem);
  CK(kIODMAMapOptionMapped, 0);
  CK(kIODMAMapOptionBypassed, 1);
  CK(kIODMAMapOptionNonCoherent, 2);
  CK(kIODMAMapOptionUnmapped, 3);
  CK(kIODMAMapOptionTypeMask, 0xf);
  CK(kIODMAMapOptionNoCacheStore, 0x10);
  CK(kIODMAMapOptionOnChip, 0x20);
  CK(kIODMAMapOptionIterateOnly, 0x40);
  CK(kIODMAMapOptionDextOwner, 0x80);
  assert_int_equal(offsetof(IODMAMapSpecification, alignment), 0);
  assert_int_equal(sizeof(((IODMAMapSpecification *)0)->alignment), 8);
  assert_int_equal(sizeof(((IODMAMapSpecification *)0)->options), 4);
  assert_int_equal(sizeof(((IODMAMapSpecification *)0)->numAddressBits), 1);
  assert_true(offsetof(IODMAMapSpecification, device) < offsetof(IODMAMapSpecification, options));
  assert_true(offsetof(IODMAMapSpecification, options) <
              offsetof(IODMAMapSpecification, numAddressBits));

  /* §1.8 DriverKit */
  CK(kIOMemoryDirectionNone, 0);
  CK(kIOMemoryDirectionIn, 1);
  CK(kIOMemoryDirectionOut, 2);
  CK(kIOMemoryDirectionOutIn, 3);
  CK(kIOMemoryDirectionInOut, 3);
  CK(kIOMemoryDisableCopyOnWrite, 0x10);
  CK(kIOMemoryMapFixedAddress, 0x1);
  CK(kIOMemoryMapReadOnly, 0x2);
  CK(kIOMemoryMapGuardedMask, 0x1C);
  CK(kIOMemoryMapGuardedDefault, 0);
  CK(kIOMemoryMapGuardedNone, 0x4);
  CK(kIOMemoryMapGuardedSmall, 0x8);
  CK(kIOMemoryMapGuardedLarge, 0xC);
  CK(kIOMemoryMapCacheModeDefault, 0);
  CK(kIOMemoryMapCacheModeInhibit, 0x100);
  CK(kIOMemoryMapCacheModeCopyback, 0x200);
  CK(kIOMemoryMapCacheModeWriteThrough, 0x400);
  CK(kIOMemoryMapCacheModeRealTime, 0x800);
}

/* ---- row 2: IOReturn constants (§1.7) -------------------------------------------------- */
struct ioreturn_row {
  IOReturn    code;
  uint32_t    hex;
  const char *name;
  const char *text;
};

#define R(n, h, t) { n, h, #n, t }
static const struct ioreturn_row k_ioreturns[] = {
  R(kIOReturnSuccess, 0x00000000u, "OK"),
  R(kIOReturnInvalid, 0xE0000001u, "should never be seen"),
  R(kIOReturnError, 0xE00002BCu, "general error"),
  R(kIOReturnNoMemory, 0xE00002BDu, "can't allocate memory"),
  R(kIOReturnNoResources, 0xE00002BEu, "resource shortage"),
  R(kIOReturnIPCError, 0xE00002BFu, "error during IPC"),
  R(kIOReturnNoDevice, 0xE00002C0u, "no such device"),
  R(kIOReturnNotPrivileged, 0xE00002C1u, "privilege violation"),
  R(kIOReturnBadArgument, 0xE00002C2u, "invalid argument"),
  R(kIOReturnLockedRead, 0xE00002C3u, "device read locked"),
  R(kIOReturnLockedWrite, 0xE00002C4u, "device write locked"),
  R(kIOReturnExclusiveAccess, 0xE00002C5u, "exclusive access and device already open"),
  R(kIOReturnBadMessageID, 0xE00002C6u, "sent/received messages had different msg_id"),
  R(kIOReturnUnsupported, 0xE00002C7u, "unsupported function"),
  R(kIOReturnVMError, 0xE00002C8u, "misc. VM failure"),
  R(kIOReturnInternalError, 0xE00002C9u, "internal error"),
  R(kIOReturnIOError, 0xE00002CAu, "General I/O error"),
  R(kIOReturnCannotLock, 0xE00002CCu, "can't acquire lock"),
  R(kIOReturnNotOpen, 0xE00002CDu, "device not open"),
  R(kIOReturnNotReadable, 0xE00002CEu, "read not supported"),
  R(kIOReturnNotWritable, 0xE00002CFu, "write not supported"),
  R(kIOReturnNotAligned, 0xE00002D0u, "alignment error"),
  R(kIOReturnBadMedia, 0xE00002D1u, "Media Error"),
  R(kIOReturnStillOpen, 0xE00002D2u, "device(s) still open"),
  R(kIOReturnRLDError, 0xE00002D3u, "rld failure"),
  R(kIOReturnDMAError, 0xE00002D4u, "DMA failure"),
  R(kIOReturnBusy, 0xE00002D5u, "Device Busy"),
  R(kIOReturnTimeout, 0xE00002D6u, "I/O Timeout"),
  R(kIOReturnOffline, 0xE00002D7u, "device offline"),
  R(kIOReturnNotReady, 0xE00002D8u, "not ready"),
  R(kIOReturnNotAttached, 0xE00002D9u, "device not attached"),
  R(kIOReturnNoChannels, 0xE00002DAu, "no DMA channels left"),
  R(kIOReturnNoSpace, 0xE00002DBu, "no space for data"),
  R(kIOReturnPortExists, 0xE00002DDu, "port already exists"),
  R(kIOReturnCannotWire, 0xE00002DEu, "can't wire down physical memory"),
  R(kIOReturnNoInterrupt, 0xE00002DFu, "no interrupt attached"),
  R(kIOReturnNoFrames, 0xE00002E0u, "no DMA frames enqueued"),
  R(kIOReturnMessageTooLarge, 0xE00002E1u, "oversized msg received on interrupt port"),
  R(kIOReturnNotPermitted, 0xE00002E2u, "not permitted"),
  R(kIOReturnNoPower, 0xE00002E3u, "no power to device"),
  R(kIOReturnNoMedia, 0xE00002E4u, "media not present"),
  R(kIOReturnUnformattedMedia, 0xE00002E5u, "media not formatted"),
  R(kIOReturnUnsupportedMode, 0xE00002E6u, "no such mode"),
  R(kIOReturnUnderrun, 0xE00002E7u, "data underrun"),
  R(kIOReturnOverrun, 0xE00002E8u, "data overrun"),
  R(kIOReturnDeviceError, 0xE00002E9u, "the device is not working properly"),
  R(kIOReturnNoCompletion, 0xE00002EAu, "a completion routine is required"),
  R(kIOReturnAborted, 0xE00002EBu, "operation aborted"),
  R(kIOReturnNoBandwidth, 0xE00002ECu, "bus bandwidth would be exceeded"),
  R(kIOReturnNotResponding, 0xE00002EDu, "device not responding"),
  R(kIOReturnIsoTooOld, 0xE00002EEu, "isochronous I/O request for distant past"),
  R(kIOReturnIsoTooNew, 0xE00002EFu, "isochronous I/O request for distant future"),
  R(kIOReturnNotFound, 0xE00002F0u, "data was not found"),
};
#undef R

struct xlist_row {
  const char *name;
  unsigned    code;
};
#define XROW(n, c, t) { #n, c },
static const struct xlist_row k_xlist[] = { DK_IORETURN_LIST(XROW) };
#undef XROW

static void row02_ioreturn_constants(void **state) {
  (void)state;
  const size_t n = sizeof k_ioreturns / sizeof k_ioreturns[0];
  assert_int_equal(n, 53);

  /* type: a 32-bit signed kern_return_t */
  assert_int_equal(_Generic(kIOReturnNoMemory, int: 1, default: 0), 1);
  assert_int_equal(_Generic(kIOReturnSuccess, int: 1, default: 0), 1);
  CK((uint32_t)sys_iokit, 0xE0000000u);
  CK(sub_iokit_common, 0);
  CK((uint32_t)iokit_common_err(0x2bd), 0xE00002BDu);

  /* the signed values of §1.7 */
  assert_true(kIOReturnSuccess == 0);
  assert_true(kIOReturnError == -536870212);
  assert_true(kIOReturnNoMemory == -536870211);
  assert_true(kIOReturnNoResources == -536870210);
  assert_true(kIOReturnBadArgument == -536870206);
  assert_true(kIOReturnUnsupported == -536870201);
  assert_true(kIOReturnVMError == -536870200);
  assert_true(kIOReturnOverrun == -536870168);
  assert_true(kIOReturnError < 0 && kIOReturnInvalid < 0 && kIOReturnNotFound < 0);

  for (size_t i = 0; i < n; i++) {
    const struct ioreturn_row *r = &k_ioreturns[i];
    if ((uint32_t)r->code != r->hex) fail_msg("%s is 0x%08x, expected 0x%08x", r->name, (unsigned)r->code, r->hex);
    if (r->code != 0) assert_true(r->code < 0);
    const char *nm = dk_ioreturn_name(r->code);
    const char *tx = dk_ioreturn_string(r->code);
    assert_non_null(nm);
    assert_non_null(tx);
    assert_string_equal(nm, r->name);
    assert_string_equal(tx, r->text);
    for (size_t j = 0; j < i; j++) assert_int_not_equal(r->code, k_ioreturns[j].code);
  }
  /* the X-macro list in the header carries exactly the same codes */
  const size_t nx = sizeof k_xlist / sizeof k_xlist[0];
  assert_int_equal(nx, n);
  for (size_t i = 0; i < nx; i++) {
    bool found = false;
    for (size_t j = 0; j < n; j++)
      if (strcmp(k_xlist[i].name, k_ioreturns[j].name) == 0) {
        IOReturn want = k_xlist[i].code == 0 ? 0 : iokit_common_err(k_xlist[i].code);
        assert_int_equal(want, k_ioreturns[j].code);
        found = true;
      }
    if (!found) fail_msg("DK_IORETURN_LIST has %s, not in §1.7", k_xlist[i].name);
  }
  /* codes 0x2CB and 0x2DC are unused; and some unrelated values */
  const IOReturn unknown[] = { iokit_common_err(0x2cb), iokit_common_err(0x2dc), iokit_common_err(0x2f1),
                               iokit_common_err(0x3ff), 1, -1, 0x12345678, (IOReturn)0xE0000002u };
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_non_null(dk_ioreturn_name(unknown[i]));
    assert_string_equal(dk_ioreturn_name(unknown[i]), "kIOReturnUnknown");
    assert_string_equal(dk_ioreturn_string(unknown[i]), "unknown IOReturn code");
  }
}

/* ---- row 3: capacity 0 ------------------------------------------------------------------ */
static void expect_capacity_zero(IOBufferMemoryDescriptor *b, const char *what) {
  if (b) {
    OSObject_release(b);
    fail_msg("%s with capacity 0 returned an object", what);
  }
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
}

static void row03_capacity_zero(void **state) {
  (void)state;
  static const char src[16] = "0123456789abcde";
  const IOOptionBits opts[] = { 0, kIODirectionInOut, kIOMemoryPageable, kIOMemoryKernelUserShared,
                                kIOMemoryPhysicallyContiguous, kIOMemoryPageable | kIOMemoryPurgeable };
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[i], 0, 1), "inTaskWithOptions");
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[i], 0, 0), "inTaskWithOptions/0");
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithOptions(NULL, opts[i], 0, 1), "inTaskWithOptions(NULL)");
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithOptionsTagged(kernel_task, opts[i], 0, 1, 7, 9), "Tagged");
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, opts[i], 0, BIG_MASK), "inTaskWithPhysicalMask");
    expect_capacity_zero(IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, opts[i], 0, 0), "inTaskWithPhysicalMask/0");
    expect_capacity_zero(IOBufferMemoryDescriptor_withOptions(opts[i], 0, 1), "withOptions");
    expect_capacity_zero(IOBufferMemoryDescriptor_withOptions(opts[i], 0, pg()), "withOptions/page");
  }
  expect_capacity_zero(IOBufferMemoryDescriptor_withCapacity(0, kIODirectionInOut, false), "withCapacity");
  expect_capacity_zero(IOBufferMemoryDescriptor_withCapacity(0, kIODirectionInOut, true), "withCapacity/contig");
  expect_capacity_zero(IOBufferMemoryDescriptor_withBytes(src, 0, kIODirectionOut, false), "withBytes");
  expect_capacity_zero(IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable, kernel_map,
                                                         (mach_vm_address_t)(uintptr_t)src, 0),
                       "withCopy");

  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
  assert_non_null(b);
  assert_false(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, 0, 0, 1, 0));
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
  OSObject_release(b);

  IOBufferMemoryDescriptor *m = (IOBufferMemoryDescriptor *)(uintptr_t)0x1;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 0, 0, &m), kIOReturnNoMemory);
  assert_null(m);
}

/* ---- row 4: stored capacity -------------------------------------------------------------- */
static void row04_stored_capacity(void **state) {
  (void)state;
  const uint64_t caps[] = { 1, 3, 100, 4095, pg() - 1, pg(), pg() + 1, 3 * pg() + 17 };
  const uint64_t aligns[] = { 0, 1, 8, 100, pg() };
  const IOOptionBits opts[] = { kIODirectionInOut, kIOMemoryKernelUserShared, kIOMemoryPageable,
                                kIOMapInhibitCache | kIODirectionIn };
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++)
      for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
        IOBufferMemoryDescriptor *b =
            IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[o], caps[c], aligns[a]);
        if (!b) print_failure("row04");
        assert_non_null(b);
        assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), caps[c]);
        dk_buffer_info i = info_of(b);
        assert_true(i.allocation_size >= caps[c]);
        OSObject_release(b);
      }
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 100, BIG_MASK);
  assert_non_null(b);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_withCapacity(pg() + 1, kIODirectionIn, false);
  assert_non_null(b);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), pg() + 1);
  OSObject_release(b);
}

/* ---- row 5: initial length == capacity ------------------------------------------------------ */
static void row05_initial_length(void **state) {
  (void)state;
  const uint64_t caps[] = { 1, 100, pg(), 2 * pg() + 5 };
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    IOBufferMemoryDescriptor *bs[] = {
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, caps[c], 1),
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, caps[c], 1),
      IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, caps[c], 1),
      IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable, caps[c], 1),
      IOBufferMemoryDescriptor_inTaskWithOptionsTagged(kernel_task, 0, caps[c], 1, 1, 2),
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, caps[c], BIG_MASK),
      IOBufferMemoryDescriptor_withOptions(kIOMemoryKernelUserShared, caps[c], 0),
      IOBufferMemoryDescriptor_withCapacity(caps[c], kIODirectionOut, false),
    };
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
      if (!bs[i]) fail_msg("factory %zu failed for capacity %llu", i, (unsigned long long)caps[c]);
      assert_int_equal(IOMemoryDescriptor_getLength(MD(bs[i])), caps[c]);
      assert_int_equal(IOBufferMemoryDescriptor_getCapacity(bs[i]), caps[c]);
      OSObject_release(bs[i]);
    }
  }
  IOBufferMemoryDescriptor *m = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 300, 0, &m), kIOReturnSuccess);
  uint64_t len = 0;
  assert_int_equal(IOMemoryDescriptor_GetLength(MD(m), &len), kIOReturnSuccess);
  assert_int_equal(len, 300);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(m)), 300);
  OSObject_release(m);
}

/* ---- row 6: zero fill ------------------------------------------------------------------------ */
static void row06_zero_fill(void **state) {
  (void)state;
  /* dirty and free buffers first, so that reuse of the same memory would show */
  for (int round = 0; round < 2; round++) {
    const uint64_t caps[] = { 1, 64, 100, pg() - 1, pg(), 3 * pg() + 7 };
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
      const IOOptionBits opts[] = { kIODirectionInOut, kIOMemoryKernelUserShared | kIODirectionInOut,
                                    kIOMemoryPageable | kIODirectionInOut, kIOMapWriteCombineCache };
      for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
        IOBufferMemoryDescriptor *b =
            IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[o], caps[c], 1);
        assert_non_null(b);
        if (opts[o] & kIOMemoryPageable)
          assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
        dk_buffer_info i = info_of(b);
        uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
        assert_non_null(p);
        /* every allocated byte, not only the requested ones */
        assert_true(i.allocation_size >= caps[c]);
        assert_true(all_bytes(p, i.allocation_size, 0));
        uint8_t *tmp = malloc(caps[c]);
        assert_non_null(tmp);
        memset(tmp, 0x5A, caps[c]);
        assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, tmp, caps[c]), caps[c]);
        assert_true(all_bytes(tmp, caps[c], 0));
        free(tmp);
        memset(p, 0xEE, caps[c]);
        if (opts[o] & kIOMemoryPageable) IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
        OSObject_release(b);
      }
    }
  }
  /* page-rounded buffers: the slack past capacity is zero too */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0, 100, pg());
  assert_non_null(b);
  assert_int_equal(info_of(b).allocation_size, pg());
  assert_true(all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), pg(), 0));
  OSObject_release(b);
  /* NULL task: read through the descriptor */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  uint8_t *tmp = malloc(2 * pg());
  memset(tmp, 1, 2 * pg());
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, tmp, 2 * pg()), 2 * pg());
  assert_true(all_bytes(tmp, 2 * pg(), 0));
  free(tmp);
  OSObject_release(b);
}

/* ---- row 7: alignment 0 or 1 -------------------------------------------------------------------- */
static void row07_alignment_none(void **state) {
  (void)state;
  for (uint64_t a = 0; a <= 1; a++) {
    const uint64_t caps[] = { 1, 3, 100, 1000 };
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, caps[c], a);
      assert_non_null(b);
      dk_buffer_info i = info_of(b);
      assert_true(i.alignment <= 1);        /* no requirement recorded */
      assert_int_equal(i.allocation_size, caps[c]); /* and no page rounding (§2 step 8) */
      assert_false(i.contiguous);
      assert_non_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
      OSObject_release(b);
    }
  }
}

/* ---- row 8: alignment n > 1 --------------------------------------------------------------------- */
static void row08_alignment_pow2(void **state) {
  (void)state;
  const uint64_t aligns[] = { 2, 3, 5, 8, 16, 24, 64, 100, 256, 1000, 2048, pg() - 1, pg() };
  const uint64_t caps[] = { 1, 10, 200, pg() + 3 };
  for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++)
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
      /* keep several alive at once so that they cannot all land on a page start by luck */
      IOBufferMemoryDescriptor *bs[4];
      for (int k = 0; k < 4; k++) {
        bs[k] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, caps[c], aligns[a]);
        assert_non_null(bs[k]);
        uintptr_t p = (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(bs[k]);
        if (p % next_pow2(aligns[a]) != 0)
          fail_msg("alignment %llu: address %#lx is not a multiple of %llu", (unsigned long long)aligns[a],
                   (unsigned long)p, (unsigned long long)next_pow2(aligns[a]));
        dk_buffer_info i = info_of(bs[k]);
        assert_true(i.alignment >= aligns[a]);
        assert_false(i.contiguous);
      }
      for (int k = 0; k < 4; k++) OSObject_release(bs[k]);
    }
}

/* ---- row 9: alignment >= page ------------------------------------------------------------------- */
static void row09_alignment_page_rounds(void **state) {
  (void)state;
  const uint64_t caps[] = { 1, 100, pg() - 1, pg(), pg() + 1, 5 * pg() - 3 };
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, caps[c], pg());
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.allocation_size, round_pg(caps[c]));
    assert_int_equal(i.alignment, pg());
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), caps[c]);
    assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), caps[c]);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % pg(), 0);
    /* the slack is allocated and zero, but not part of the descriptor */
    assert_true(all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), round_pg(caps[c]), 0));
    assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, caps[c] + 1));
    OSObject_release(b);
  }
}

/* ---- row 10: alignment > page forces contiguity -------------------------------------------------- */
static void row10_alignment_forces_contiguous(void **state) {
  (void)state;
  /* a physical alignment above a page (and so contiguity) is more than the 4K provider can
   * give; the hugepage pool gives it, and then the promise must hold */
  const uint64_t aligns[] = { pg() + 1, 2 * pg(), 16 * pg() };
  for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, aligns[a]);
    if (b) {
      dk_buffer_info i = info_of(b);
      /* the request is recorded as contiguous, with the alignment asked for */
      assert_true(i.contiguous);
      assert_int_equal(i.alignment, aligns[a]);
      if (!pool_on()) {
        OSObject_release(b);
        fail_msg("alignment %llu > page succeeded on the 4K provider", (unsigned long long)aligns[a]);
      }
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % next_pow2(aligns[a]), 0);
    }
    assert_pool_meets_or_4k_refuses(b, aligns[a], 0, "row10 inTaskWithOptions");
    b = IOBufferMemoryDescriptor_withOptions(0, 3 * pg(), 2 * pg());
    if (b) {
      assert_true(info_of(b).contiguous);
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % (2 * pg()), 0);
    }
    assert_pool_meets_or_4k_refuses(b, 2 * pg(), 0, "row10 withOptions");
  }
  /* pageable memory ignores alignment beyond a page (§2 step 14) */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 100, 2 * pg());
  assert_non_null(b);
  assert_true(info_of(b).pageable);
  OSObject_release(b);
}

/* ---- row 11: KernelUserShared / cache mode / ClearEncrypt --------------------------------------- */
static void row11_shared_cache_encrypt_page_align(void **state) {
  (void)state;
  const IOOptionBits opts[] = { kIOMemoryKernelUserShared, 0x00020000u /* another sharing type */,
                                kIOMapInhibitCache, kIOMapWriteThruCache, kIOMapCopybackCache,
                                kIOMapWriteCombineCache, kIOMapRealTimeCache, kIOMapPostedCombinedReordered,
                                kIOMemoryClearEncrypt, kIOMemoryKernelUserShared | kIOMapInhibitCache };
  const uint64_t aligns[] = { 0, 1, 16, pg() - 1 };
  for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++)
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[o] | kIODirectionInOut, 100, aligns[a]);
      if (!b) print_failure("row11");
      assert_non_null(b);
      dk_buffer_info i = info_of(b);
      assert_int_equal(i.alignment, pg());
      assert_int_equal(i.allocation_size, pg());
      assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % pg(), 0);
      OSObject_release(b);
    }
  /* without any of them a 100-byte buffer is not page-rounded */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, 16);
  assert_non_null(b);
  assert_int_equal(info_of(b).allocation_size, 100);
  OSObject_release(b);
}

/* ---- row 12: physicalMask with alignment <= 1 ---------------------------------------------------- */
static void row12_physical_mask_derivation(void **state) {
  (void)state;
  assert_true(dk_capabilities()->ram_top != 0);
  assert_true(dk_capabilities()->ram_top <= BIG_MASK);
  struct { uint64_t mask; uint64_t align; } cases[] = {
    { BIG_MASK, pg() },                   /* no trailing zeros: a page */
    { BIG_MASK & ~0x7ull, pg() },         /* 8 bytes: raised to a page */
    { BIG_MASK & ~0xFFFull, pg() < 4096 ? 4096 : pg() },
    { BIG_MASK & ~(pg() - 1), pg() },
    { ~0ull, pg() },                      /* every bit */
    { BIG_MASK & ~0xF0000ull, pg() },     /* holes in the middle are ignored */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, 100, cases[c].mask);
    if (!b) print_failure("row12");
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, cases[c].align);
    assert_int_equal(i.allocation_size, pg());       /* alignment >= page: page-rounded */
    assert_int_equal(i.physical_limit, 0);           /* limit at/above ram_top is dropped */
    assert_false(i.contiguous);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % cases[c].align, 0);
    OSObject_release(b);
  }
  /* 64 KiB of trailing zeros: an alignment above a page forces contiguity (§2 step 9) */
  if (pg() < 0x10000) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 100, BIG_MASK & ~0xFFFFull);
    if (b) {
      dk_buffer_info i = info_of(b);
      assert_int_equal(i.alignment, 0x10000);
      assert_true(i.contiguous);
      assert_int_equal(i.physical_limit, 0);
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % 0x10000, 0);
    }
    assert_pool_meets_or_4k_refuses(b, 0x10000, 0, "row12 64K mask");
  }
  /* alignment 0 and 1 both count as "none" for the init API */
  for (uint64_t a = 0; a <= 1; a++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
    assert_non_null(b);
    assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, 0, 100, a, BIG_MASK & ~0x7ull));
    assert_int_equal(info_of(b).alignment, pg());
    OSObject_release(b);
  }
}

/* ---- row 13: physicalMask with alignment > 1 (init API) ------------------------------------------ */
static void row13_mask_ignored_with_alignment(void **state) {
  (void)state;
  /* Masks that no RAM could satisfy (1 MiB, 64 KiB-aligned): ignored because alignment > 1. */
  const uint64_t masks[] = { 0xFFFFFull, 0xFFFF0000ull, BIG_MASK & ~0xFFFFFull };
  const uint64_t aligns[] = { 2, 16, 100, pg() };
  for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++)
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
      assert_non_null(b);
      bool ok = IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, kIODirectionInOut, 100, aligns[a], masks[m]);
      if (!ok) print_failure("row13");
      assert_true(ok);
      dk_buffer_info i = info_of(b);
      assert_int_equal(i.alignment, aligns[a]);
      assert_int_equal(i.physical_limit, 0);
      assert_int_equal(i.numAddressBits, 64);
      assert_false(i.contiguous);
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % next_pow2(aligns[a]), 0);
      OSObject_release(b);
    }
}

/* ---- row 14: physicalMask with a mapper ---------------------------------------------------------- */
/* No IOMMU mapper exists yet, so only the no-mapper side of row 14 applies: numAddressBits stays
 * 64 and the mask limits the RAM itself (physical_limit = mask with trailing zeros filled, when
 * that is below ram_top; dropped otherwise). */
static void row14_mask_without_mapper(void **state) {
  (void)state;
  const uint64_t masks[] = { BIG_MASK, BIG_MASK & ~(pg() - 1), ~0ull };
  for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 3 * pg(), masks[m]);
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.numAddressBits, 64);
    assert_int_equal(i.physical_limit, 0);
    OSObject_release(b);
  }
  /* a mask below the top of RAM, if this machine can meet it: recorded as the RAM limit */
  const uint64_t top = dk_capabilities()->ram_top;
  uint64_t mask = next_pow2(top) / 2 - 1;       /* the largest 2^n-1 below ram_top */
  if (mask >= top) mask = (mask + 1) / 2 - 1;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 100, mask & ~0xFFull);
  if (b) {
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.numAddressBits, 64);
    assert_int_equal(i.physical_limit, mask);
    OSObject_release(b);
  } else {
    const dk_failure *f = dk_last_failure();
    if (!(f->constraint == DK_CONSTRAINT_MASK || f->constraint == DK_CONSTRAINT_PRIVILEGE ||
          f->constraint == DK_CONSTRAINT_PIN))
      print_failure("row14 low mask");
    assert_true(f->constraint == DK_CONSTRAINT_MASK || f->constraint == DK_CONSTRAINT_PRIVILEGE ||
                f->constraint == DK_CONSTRAINT_PIN);
  }
}

/* ---- row 15: NULL task without Pageable ----------------------------------------------------------- */
/* XNU rejects it (§2 step 11); dmakit follows the seed page: a wired buffer mapped nowhere
 * the caller sees, reachable through map() and read/writeBytes. Only kernel_task and NULL
 * exist as tasks, so the "user task without Pageable" half cannot be exercised yet. */
static void row15_null_task_wired(void **state) {
  (void)state;
  const uint64_t cap = 2 * pg() + 10;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, cap, 1);
  if (!b) print_failure("row15");
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 1));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, cap));
  dk_buffer_info i = info_of(b);
  assert_false(i.pageable);
  assert_true(i.wired);

  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  if (!m) print_failure("row15 map");
  assert_non_null(m);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  assert_non_null(p);
  assert_int_equal(IOMemoryMap_getLength(m), cap);
  assert_true(all_bytes(p, cap, 0));
  p[0] = 0x11;
  p[cap - 1] = 0x22;
  uint8_t two[2] = { 0, 0 };
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, &two[0], 1), 1);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), cap - 1, &two[1], 1), 1);
  assert_int_equal(two[0], 0x11);
  assert_int_equal(two[1], 0x22);
  const char msg[] = "through writeBytes";
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), pg() + 3, msg, sizeof msg), sizeof msg);
  assert_memory_equal(p + pg() + 3, msg, sizeof msg);
  OSObject_release(m);
  OSObject_release(b);

  /* the other factories with a NULL task */
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, 0, 100, BIG_MASK);
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  OSObject_release(b);
  IOBufferMemoryDescriptor *a = IOBufferMemoryDescriptor_alloc();
  assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(a, NULL, kIODirectionIn, 100, 1, 0));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(a));
  OSObject_release(a);
}

/* ---- row 16: NULL task + Pageable -------------------------------------------------------------- */
static void row16_null_task_pageable(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 1));
  dk_buffer_info i = info_of(b);
  assert_true(i.pageable);
  assert_false(i.wired);
  assert_int_equal(i.prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 3 * pg());
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  uint8_t buf[64];
  memset(buf, 9, sizeof buf);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), pg(), buf, sizeof buf), sizeof buf);
  assert_true(all_bytes(buf, sizeof buf, 0));
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  OSObject_release(b);
}

/* ---- row 17: Pageable ---------------------------------------------------------------------------- */
static void row17_pageable_needs_prepare(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  dk_buffer_info i = info_of(b);
  assert_true(i.pageable);
  assert_false(i.wired);
  assert_int_equal(i.prepare_count, 0);
  uint64_t flags = IOMemoryDescriptor_getFlags(MD(b));
  assert_int_equal(flags & kIOMemoryAutoPrepare, 0);
  assert_true(flags & kIOMemoryBufferPageable);

  /* unprepared: physical queries and copies refuse (XNU panics) */
  IOByteCount len = 12345;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0), 0);
  assert_int_equal(len, 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);
  uint8_t x = 7;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, &x, 1), 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, &x, 1), 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);

  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  i = info_of(b);
  assert_true(i.wired);
  assert_int_equal(i.prepare_count, 1);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 5, &x, 1), 1);
  uint8_t y = 0;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 5, &y, 1), 1);
  assert_int_equal(y, 7);
  len = 0;
  addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0);
  phys_answered(pa, len, "row17 prepared");
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  i = info_of(b);
  assert_false(i.wired);
  assert_int_equal(i.prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 5, &y, 1), 0);
  OSObject_release(b);
}

/* ---- row 18: Purgeable without Pageable ---------------------------------------------------------- */
static void row18_purgeable_ignored(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPurgeable | kIODirectionInOut, 100, 1);
  assert_non_null(b);
  uint64_t flags = IOMemoryDescriptor_getFlags(MD(b));
  assert_int_equal(flags & kIOMemoryBufferPurgeable, 0);
  assert_int_equal(flags & kIOMemoryBufferPageable, 0);
  assert_int_equal(flags & kIOMemoryTypeMask, kIOMemoryTypeVirtual64); /* 0x40 did not leak in */
  assert_true(flags & kIOMemoryAutoPrepare);
  dk_buffer_info i = info_of(b);
  assert_false(i.pageable);
  assert_true(i.wired);
  assert_int_equal(i.options, kIOMemoryPurgeable | kIODirectionInOut);
  IOOptionBits old = 0xdead;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, &old), kIOReturnUnsupported);
  OSObject_release(b);
}

/* ---- row 19: overflow --------------------------------------------------------------------------- */
static void row19_overflow(void **state) {
  (void)state;
  const uint64_t max = UINT64_MAX;
  struct { uint64_t cap, align; IOOptionBits opts; } cases[] = {
    { max, 1, 0 },                        /* capacity + alignment wraps */
    { max - 1, 2, 0 },
    { max - 100, 1000, 0 },
    { max - pg() + 2, pg(), 0 },          /* round_page overflows */
    { max, pg(), kIOMemoryPageable },
    { max - 10, 1, kIOMemoryKernelUserShared }, /* page alignment forced, then rounding overflows */
    { max - 10, 1, kIOMemoryPageable },
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, cases[c].opts, cases[c].cap, cases[c].align);
    if (b) OSObject_release(b);
    assert_null(b);
    ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
    b = IOBufferMemoryDescriptor_alloc();
    assert_false(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, cases[c].opts, cases[c].cap, cases[c].align, 0));
    ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
    OSObject_release(b);
  }
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(SIZE_MAX, kIODirectionIn, false);
  assert_null(b);
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, max - 5, BIG_MASK);
  assert_null(b);
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
  IOBufferMemoryDescriptor *m = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(0, max - 5, 0, &m), kIOReturnNoMemory);
  assert_null(m);
}

/* ---- row 20: PhysicallyContiguous with a mapper -------------------------------------------------- */
/* No IOMMU mapper exists yet, so only the no-mapper side applies: kIOMemoryPhysicallyContiguous
 * and kIOMemoryHostPhysicallyContiguous both ask for host-contiguous RAM, with or without
 * kIOMemoryMapperNone. Within one page the 4K provider can give that; beyond, it refuses. */
static void row20_contiguous_without_mapper(void **state) {
  (void)state;
  const IOOptionBits opts[] = { kIOMemoryPhysicallyContiguous, kIOMemoryHostPhysicallyContiguous,
                                kIOMemoryPhysicallyContiguous | kIOMemoryMapperNone,
                                kIOMemoryHostPhysicallyContiguous | kIOMemoryMapperNone };
  for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
    const uint64_t caps[] = { 100, 1000, pg() };
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
      IOBufferMemoryDescriptor *bs[6];
      for (int k = 0; k < 6; k++) {
        bs[k] = IOBufferMemoryDescriptor_withOptions(opts[o] | kIODirectionInOut, caps[c], 1);
        if (!bs[k]) print_failure("row20 small contiguous");
        assert_non_null(bs[k]);
        dk_buffer_info i = info_of(bs[k]);
        assert_true(i.contiguous);
        assert_int_equal(i.numAddressBits, 64);
        uintptr_t p = (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(bs[k]);
        /* contiguous by construction: it may not cross a page boundary */
        assert_true(p % pg() + caps[c] <= pg());
        IOByteCount len = 0;
        addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(bs[k]), 0, &len, 0);
        if (phys_answered(pa, len, "row20")) assert_int_equal(len, caps[c]);
      }
      for (int k = 0; k < 6; k++) OSObject_release(bs[k]);
    }
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(opts[o], 3 * pg(), 1);
    if (b) assert_true(info_of(b).contiguous);
    assert_pool_meets_or_4k_refuses(b, 1, 0, "row20 3 pages");
  }
}

/* ---- row 21: direction -------------------------------------------------------------------------- */
static void row21_direction(void **state) {
  (void)state;
  for (IOOptionBits d = 0; d < 8; d++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, d | kIOMemoryThreadSafe, 64, 1);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), d);
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & 7, d);
    OSObject_release(b);
  }
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 1);
  uint64_t before = IOMemoryDescriptor_getFlags(MD(b));
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionIn);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionIn);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), (before & ~7ull) | kIODirectionIn);
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionOut);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionOut);
  /* the argument is not masked: stray bits leak into the flags */
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionIn | kIOMemoryHostOnly);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionIn);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), (before & ~7ull) | kIODirectionIn | kIOMemoryHostOnly);
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionNone);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionNone);
  assert_true(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryHostOnly); /* OR-ed, never cleared */
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionPrepareToPhys32 | kIODirectionOut);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), 6);
  OSObject_release(b);
}

/* ---- row 22: withCapacity(cap, dir, true) -------------------------------------------------------- */
static void row22_withCapacity_contiguous_alignment(void **state) {
  (void)state;
  const uint64_t caps[] = { 1, 64, 100, 512, pg() };
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(caps[c], kIODirectionIn, true);
    if (!b) print_failure("row22");
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, caps[c]);
    assert_true(i.contiguous);
    assert_int_equal(i.options, kIODirectionIn | kIOMemoryPhysicallyContiguous);
    assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionIn);
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), caps[c]);
    uintptr_t p = (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b);
    if ((caps[c] & (caps[c] - 1)) == 0) assert_int_equal(p % caps[c], 0);
    assert_true(p % pg() + caps[c] <= pg());
    OSObject_release(b);
    b = IOBufferMemoryDescriptor_withCapacity(caps[c], kIODirectionIn, false);
    assert_non_null(b);
    i = info_of(b);
    assert_true(i.alignment <= 1);
    assert_false(i.contiguous);
    assert_int_equal(i.options, kIODirectionIn);
    OSObject_release(b);
  }
  /* alignment == capacity above a page: contiguous and over-aligned, beyond the 4K provider */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(3 * pg(), kIODirectionInOut, true);
  if (b) {
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, 3 * pg());
    assert_true(i.contiguous);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % next_pow2(3 * pg()), 0);
  }
  assert_pool_meets_or_4k_refuses(b, 3 * pg(), 0, "row22 3 pages");
}

/* ---- row 23: withBytes --------------------------------------------------------------------------- */
static void row23_withBytes(void **state) {
  (void)state;
  const uint64_t lens[] = { 1, 7, 100, pg() - 1, pg(), pg() + 1, 3 * pg() };
  for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
    uint8_t *src = malloc(lens[l]);
    assert_non_null(src);
    for (uint64_t k = 0; k < lens[l]; k++) src[k] = (uint8_t)(k * 7 + 3);
    const IODirection dirs[] = { kIODirectionOut, kIODirectionIn, kIODirectionInOut };
    for (size_t d = 0; d < 3; d++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withBytes(src, lens[l], dirs[d], false);
      if (!b) print_failure("row23");
      assert_non_null(b);
      assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), lens[l]);
      assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), lens[l]);
      assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), dirs[d]);
      assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), src, lens[l]);
      dk_buffer_info i = info_of(b);
      uint64_t want_align = lens[l] < pg() ? lens[l] : pg();
      assert_int_equal(i.alignment, want_align);
      assert_false(i.contiguous);
      if (want_align == pg()) assert_int_equal(i.allocation_size, round_pg(lens[l]));
      uint8_t *back = malloc(lens[l]);
      assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, back, lens[l]), lens[l]);
      assert_memory_equal(back, src, lens[l]);
      free(back);
      OSObject_release(b);
    }
    free(src);
  }
  uint8_t one[1] = { 0x42 };
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withBytes(one, 1, kIODirectionOut, true);
  assert_non_null(b);
  assert_true(info_of(b).contiguous);
  assert_int_equal(*(uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(b), 0x42);
  OSObject_release(b);
}

/* ---- row 24: factories map onto initWithPhysicalMask --------------------------------------------- */
static void same_derivation(IOBufferMemoryDescriptor *a, IOBufferMemoryDescriptor *b) {
  assert_non_null(a);
  assert_non_null(b);
  dk_buffer_info x = info_of(a), y = info_of(b);
  assert_int_equal(x.options, y.options);
  assert_int_equal(x.alignment, y.alignment);
  assert_int_equal(x.allocation_size, y.allocation_size);
  assert_int_equal(x.physical_limit, y.physical_limit);
  assert_int_equal(x.numAddressBits, y.numAddressBits);
  assert_int_equal(x.contiguous, y.contiguous);
  assert_int_equal(x.pageable, y.pageable);
  assert_int_equal(x.wired, y.wired);
  assert_int_equal(x.prepare_count, y.prepare_count);
  assert_int_equal(x.cache_mode, y.cache_mode);
  assert_ptr_equal(x.task, y.task);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(a)), IOMemoryDescriptor_getFlags(MD(b)));
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(a), IOBufferMemoryDescriptor_getCapacity(b));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(a)), IOMemoryDescriptor_getLength(MD(b)));
  OSObject_release(a);
  OSObject_release(b);
}

static IOBufferMemoryDescriptor *init_buffer(task_t t, IOOptionBits o, uint64_t cap, uint64_t align, uint64_t mask) {
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
  assert_non_null(b);
  if (!IOBufferMemoryDescriptor_initWithPhysicalMask(b, t, o, cap, align, mask)) {
    print_failure("initWithPhysicalMask");
    OSObject_release(b);
    return NULL;
  }
  return b;
}

static void row24_factories_map_onto_init(void **state) {
  (void)state;
  const IOOptionBits opts[] = { 0, kIODirectionOut, kIODirectionInOut | kIOMemoryThreadSafe,
                                kIOMemoryKernelUserShared | kIODirectionIn, kIOMemoryPageable,
                                kIOMemoryPageable | kIOMemoryPurgeable, kIOMapInhibitCache };
  const uint64_t aligns[] = { 1, 64, pg() };
  for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
      same_derivation(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[o], 300, aligns[a]),
                      init_buffer(kernel_task, opts[o], 300, aligns[a], 0));
      same_derivation(IOBufferMemoryDescriptor_withOptions(opts[o], 300, aligns[a]),
                      init_buffer(kernel_task, opts[o], 300, aligns[a], 0));
      same_derivation(IOBufferMemoryDescriptor_inTaskWithOptionsTagged(kernel_task, opts[o], 300, aligns[a], 3, 4),
                      init_buffer(kernel_task, opts[o], 300, aligns[a], 0));
    }
    same_derivation(IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, opts[o], 300, BIG_MASK & ~0xFFull),
                    init_buffer(kernel_task, opts[o], 300, 1, BIG_MASK & ~0xFFull));
    same_derivation(IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, opts[o], 300, BIG_MASK),
                    init_buffer(NULL, opts[o], 300, 1, BIG_MASK));
  }
  same_derivation(IOBufferMemoryDescriptor_withCapacity(300, kIODirectionOut, false),
                  init_buffer(kernel_task, kIODirectionOut, 300, 1, 0));
  same_derivation(IOBufferMemoryDescriptor_withCapacity(256, kIODirectionIn, true),
                  init_buffer(kernel_task, kIODirectionIn | kIOMemoryPhysicallyContiguous, 256, 256, 0));
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(0, 10, 1);
  assert_ptr_equal(info_of(b).task, kernel_task);
  OSObject_release(b);
}

/* ---- row 25: tagged inTaskWithOptions ------------------------------------------------------------ */
static void row25_tagged(void **state) {
  (void)state;
  const uint32_t tags[][2] = { { 0, 0 }, { 1, 2 }, { 0xFFFFFFFFu, 0xFFFFFFFFu }, { 241, 0 } };
  for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptionsTagged(kernel_task, kIODirectionInOut, 100, 1, tags[t][0], tags[t][1]);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0);
    IOMemoryDescriptor_setTag(MD(b), 0x1234);
    assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0x1234);
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
    OSObject_release(b);
  }
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptionsTagged(NULL, kIOMemoryPageable, 100, 1, 5, 6);
  assert_non_null(b);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0);
  OSObject_release(b);
}

/* ---- row 26: setLength(> capacity) ---------------------------------------------------------------- */
static void row26_setLength_beyond_capacity(void **state) {
  (void)state;
  /* page-rounded internally, so there is room past capacity: still refused */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, pg());
  assert_non_null(b);
  IOBufferMemoryDescriptor_setLength(b, 101);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  IOBufferMemoryDescriptor_setLength(b, pg());
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  IOBufferMemoryDescriptor_setLength(b, SIZE_MAX);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  IOBufferMemoryDescriptor_setLength(b, 40);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 40);
  IOBufferMemoryDescriptor_setLength(b, 101);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 40);
  IOBufferMemoryDescriptor_setLength(b, 100);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
  OSObject_release(b);
}

/* ---- row 27: appendBytes overflow ---------------------------------------------------------------- */
static void row27_appendBytes_truncates(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, pg());
  assert_non_null(b);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint8_t a[60], c[60];
  memset(a, 0xA1, sizeof a);
  memset(c, 0xC3, sizeof c);
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, a, 60));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 60);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, c, 60)); /* only 40 fit */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  assert_true(all_bytes(p, 60, 0xA1));
  assert_true(all_bytes(p + 60, 40, 0xC3));
  assert_true(all_bytes(p + 100, pg() - 100, 0)); /* nothing past capacity, although allocated */
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, c, 1)); /* full: copies 0, still true */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, c, 0));
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, c, SIZE_MAX));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  assert_int_equal(p[100], 0);
  OSObject_release(b);
}

/* ---- row 28: getBytesNoCopy(start, len) ------------------------------------------------------------ */
static void row28_getBytesNoCopyRange(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, 1);
  assert_non_null(b);
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(base);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 100), base);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 0), base);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 99, 1), base + 99);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 99, 0), base + 99);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 50, 50), base + 50);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 101));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 50, 51));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 100, 0)); /* start == length */
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 101, 0));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 1, SIZE_MAX)); /* wraps */
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, SIZE_MAX, 2));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, SIZE_MAX, 0));
  /* the check is against the length, not the capacity */
  IOBufferMemoryDescriptor_setLength(b, 10);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 5, 5), base + 5);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 5, 6));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 10, 0));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 20, 1));
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 0));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(b, 0, 1));
  OSObject_release(b);
}

/* ---- row 29: getBytesNoCopy() after setLength(0) ---------------------------------------------------- */
static void row29_getBytesNoCopy_after_setLength0(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  void *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(base);
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 0);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), base);
  IOBufferMemoryDescriptor_setLength(b, 1);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), base);
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 3 * pg(), 1);
  base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(base);
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_ptr_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), base);
  OSObject_release(b);
}

/* ---- row 30: getPhysicalSegment(off >= length) -------------------------------------------------------- */
static void row30_getPhysicalSegment_past_end(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), pg());
  assert_non_null(b);
  const IOByteCount offs[] = { 2 * pg(), 2 * pg() + 1, 5 * pg(), UINT64_MAX };
  for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
    IOByteCount len = 777;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), offs[k], &len, 0), 0);
    assert_int_equal(len, 0);
    ASSERT_FAILURE_KIND(DK_CONSTRAINT_RANGE);
    len = 777;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), offs[k], &len, kIOMemoryMapperNone), 0);
    assert_int_equal(len, 0);
  }
  /* the current length, not the capacity, bounds it */
  IOBufferMemoryDescriptor_setLength(b, 100);
  IOByteCount len = 777;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 100, &len, 0), 0);
  assert_int_equal(len, 0);
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_RANGE);
  IOBufferMemoryDescriptor_setLength(b, 0);
  len = 777;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0), 0);
  assert_int_equal(len, 0);
  /* a NULL length pointer is allowed */
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0), 0);
  OSObject_release(b);
}

/* ---- row 31: getPhysicalSegment lengths --------------------------------------------------------------- */
static void row31_getPhysicalSegment_lengths(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), pg());
  assert_non_null(b);
  IOBufferMemoryDescriptor_setLength(b, pg() + 100);
  const IOOptionBits opts[] = { 0, kIOMemoryMapperNone };
  for (int o = 0; o < 2; o++) {
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, opts[o]);
    if (phys_answered(pa, len, "row31 off 0")) {
      assert_int_equal(pa % pg(), 0);
      /* at least to the end of the first page, never past the length */
      assert_true(len >= pg() && len <= pg() + 100);
    }
    len = 0;
    pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), pg(), &len, opts[o]);
    if (phys_answered(pa, len, "row31 off page")) {
      assert_int_equal(pa % pg(), 0);
      assert_int_equal(len, 100);
    }
    len = 0;
    pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), pg() + 50, &len, opts[o]);
    if (phys_answered(pa, len, "row31 off page+50")) {
      assert_int_equal(pa % pg(), 50);
      assert_int_equal(len, 50);
    }
    len = 0;
    pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 10, &len, opts[o]);
    if (phys_answered(pa, len, "row31 off 10")) {
      assert_int_equal(pa % pg(), 10);
      assert_true(len >= pg() - 10 && len <= pg() + 90);
    }
  }
  IOPhysicalAddress a0 = IOMemoryDescriptor_getPhysicalAddress(MD(b));
  IOByteCount l0 = 0;
  addr64_t s0 = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &l0, 0);
  assert_int_equal(a0, s0);
  OSObject_release(b);
}

/* ---- row 32: readBytes/writeBytes out of range -------------------------------------------------------- */
static void row32_read_write_out_of_range(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 100, 1);
  assert_non_null(b);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint8_t dst[64], src[64];
  memset(src, 0x55, sizeof src);
  struct { IOByteCount off, len; } bad[] = { { 90, 20 }, { 0, 101 }, { 101, 0 }, { 101, 1 }, { 200, 10 },
                                             { 1, UINT64_MAX }, { UINT64_MAX, 2 }, { 99, 2 } };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    memset(dst, 0xAA, sizeof dst);
    /* all or nothing: not even the in-range part is copied */
    assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), bad[k].off, dst, bad[k].len), 0);
    assert_true(all_bytes(dst, sizeof dst, 0xAA));
    ASSERT_FAILURE_KIND(DK_CONSTRAINT_RANGE);
    assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), bad[k].off, src, bad[k].len), 0);
    ASSERT_FAILURE_KIND(DK_CONSTRAINT_RANGE);
    assert_true(all_bytes(p, 100, 0));
  }
  /* in range works, up to the very end */
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 36, src, 64), 64);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 36, dst, 64), 64);
  assert_true(all_bytes(dst, 64, 0x55));
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 100, dst, 0), 0);
  /* the current length bounds it */
  IOBufferMemoryDescriptor_setLength(b, 50);
  memset(dst, 0xAA, sizeof dst);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 40, dst, 20), 0);
  assert_true(all_bytes(dst, sizeof dst, 0xAA));
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 40, NULL, 20), 0);
  assert_true(all_bytes(p + 36, 64, 0x55));
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 40, dst, 10), 10);
  OSObject_release(b);
}

/* ---- row 33: writeBytes(NULL src) ----------------------------------------------------------------------- */
static void row33_writeBytes_null_zero_fills(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  memset(p, 0xFF, 3 * pg());
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 10, NULL, 20), 20);
  assert_true(all_bytes(p, 10, 0xFF));
  assert_true(all_bytes(p + 10, 20, 0));
  assert_true(all_bytes(p + 30, 10, 0xFF));
  /* across page boundaries */
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), pg() - 5, NULL, pg() + 10), pg() + 10);
  assert_true(all_bytes(p + 30, pg() - 35, 0xFF));
  assert_true(all_bytes(p + pg() - 5, pg() + 10, 0));
  assert_true(all_bytes(p + 2 * pg() + 5, pg() - 5, 0xFF));
  OSObject_release(b);
  /* a NULL-task buffer, through a mapping */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, pg(), 1);
  assert_non_null(b);
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  memset(p, 0x77, pg());
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 1, NULL, 3), 3);
  assert_int_equal(p[0], 0x77);
  assert_true(all_bytes(p + 1, 3, 0));
  assert_int_equal(p[4], 0x77);
  OSObject_release(m);
  OSObject_release(b);
}

/* ---- row 34: writeBytes on an Out-only wired buffer -------------------------------------------------------- */
static void row34_writeBytes_out_only(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *bs[] = {
    IOBufferMemoryDescriptor_withCapacity(100, kIODirectionOut, false),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionOut | kIOMemoryThreadSafe, pg() + 1, 1),
    IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionOut, 100, 1),
  };
  for (size_t k = 0; k < sizeof bs / sizeof bs[0]; k++) {
    IOBufferMemoryDescriptor *b = bs[k];
    assert_non_null(b);
    assert_true(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly);
    const uint8_t v[4] = { 1, 2, 3, 4 };
    assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, v, 4), 0);
    ASSERT_FAILURE(kIOReturnNotWritable, DK_CONSTRAINT_STATE);
    assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, NULL, 4), 0);
    uint8_t r[4] = { 9, 9, 9, 9 };
    assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, r, 4), 4);
    assert_true(all_bytes(r, 4, 0));
    uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    if (p) { /* memcpy through the kernel pointer still works */
      memcpy(p, v, 4);
      assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, r, 4), 4);
      assert_memory_equal(r, v, 4);
    }
    /* a later prepare for writing fails; for reading it counts */
    assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionIn), kIOReturnNotWritable);
    assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionOutIn), kIOReturnNotWritable);
    assert_int_equal(info_of(b).prepare_count, 1);
    assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionOut), kIOReturnSuccess);
    assert_int_equal(info_of(b).prepare_count, 2);
    assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
    /* setDirection does not undo it while wired */
    IOMemoryDescriptor_setDirection(MD(b), kIODirectionInOut);
    assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, v, 4), 0);
    assert_true(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly);
    OSObject_release(b);
  }
  /* other directions are writable */
  const IODirection ok[] = { kIODirectionNone, kIODirectionIn, kIODirectionInOut };
  for (size_t d = 0; d < 3; d++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(100, ok[d], false);
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly, 0);
    assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "xy", 2), 2);
    OSObject_release(b);
  }
}

/* ---- row 35: prepare/complete ----------------------------------------------------------------------------- */
static void row35_prepare_complete_counted(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  assert_int_equal(info_of(b).prepare_count, 1); /* auto-prepared */
  assert_true(info_of(b).wired);
  for (uint32_t k = 2; k <= 5; k++) {
    assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
    assert_int_equal(info_of(b).prepare_count, k);
  }
  for (uint32_t k = 5; k > 0; k--) {
    assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
    assert_int_equal(info_of(b).prepare_count, k - 1);
  }
  /* unbalanced complete: success, count stays 0 */
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionCompleteWithError), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionInOut), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 1);
  /* free completes everything outstanding */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionIn), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionOut), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 3);
  OSObject_release(b);

  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_false(info_of(b).wired);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 2);
  assert_true(info_of(b).wired);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_true(info_of(b).wired);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionCompleteWithDataValid), kIOReturnSuccess);
  assert_false(info_of(b).wired);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  OSObject_release(b); /* with one prepare outstanding */
}

/* ---- row 36: performOperation ---------------------------------------------------------------------------- */
static void row36_performOperation(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  const IOOptionBits bad[] = { 0, 3, 4, 49, 52, 100, 0x101, 0x80000001u, 0xFFFFFFFFu };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), bad[k], 0, 3 * pg()), kIOReturnUnsupported);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), bad[k], 10 * pg(), 1), kIOReturnUnsupported);
  }
  const IOOptionBits ops[] = { kIOMemoryIncoherentIOFlush, kIOMemoryIncoherentIOStore };
  for (int o = 0; o < 2; o++) {
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], 0, 3 * pg()), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], 5, 100), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], pg() - 1, 2), kIOReturnSuccess);
    /* clipped to the length */
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], pg(), UINT64_MAX), kIOReturnSuccess);
    /* offset == length: nothing to do */
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], 3 * pg(), 10), kIOReturnSuccess);
    /* offset past the end */
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], 3 * pg() + 1, 10), kIOReturnUnderrun);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), ops[o], UINT64_MAX, 1), kIOReturnUnderrun);
  }
  /* the data survives a flush */
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  memset(p, 0x3C, 3 * pg());
  assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), kIOMemoryIncoherentIOFlush, 0, 3 * pg()), kIOReturnSuccess);
  assert_true(all_bytes(p, 3 * pg(), 0x3C));
  /* the current length bounds it */
  IOBufferMemoryDescriptor_setLength(b, 100);
  assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), kIOMemoryIncoherentIOStore, 101, 1), kIOReturnUnderrun);
  assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), kIOMemoryIncoherentIOStore, 100, 1), kIOReturnSuccess);
  OSObject_release(b);
}

/* ---- row 37: setPurgeable bad state ------------------------------------------------------------------------- */
static void row37_setPurgeable_bad_state(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIOMemoryPurgeable, 2 * pg(), 1);
  assert_non_null(b);
  const IOOptionBits bad[] = { 0, 5, 6, 0xF, 0x10, 0x100, 0xFFFFFFF0u };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    IOOptionBits old = 0xdead;
    assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), bad[k], &old), kIOReturnBadArgument);
    assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  }
  IOOptionBits old = 0;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  old = 0xdead;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), 0x7, &old), kIOReturnBadArgument);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  /* the upper bits are modifiers: low nibble 2 is NonVolatile */
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), 0x100 | kIOMemoryPurgeableNonVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableKeepCurrent, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  OSObject_release(b);

  /* memory that is not Pageable+Purgeable */
  const IOOptionBits plain[] = { 0, kIOMemoryPageable, kIOMemoryPurgeable };
  for (size_t k = 0; k < 3; k++) {
    b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, plain[k], 100, 1);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, &old), kIOReturnUnsupported);
    OSObject_release(b);
  }
}

/* ---- row 38: map() of a kernel buffer --------------------------------------------------------------------- */
static void row38_map_kernel_identity(void **state) {
  (void)state;
  const IOOptionBits opts[] = { kIODirectionInOut, kIOMemoryPageable, kIOMemoryKernelUserShared };
  for (size_t k = 0; k < 3; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[k], 3 * pg(), 1);
    assert_non_null(b);
    int rc = OSObject_getRetainCount(b);
    IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
    assert_non_null(m);
    assert_int_equal(OSObject_getRetainCount(m), 1);
    assert_int_equal(OSObject_getRetainCount(b), rc + 1); /* the map retains the descriptor */
    assert_int_equal(IOMemoryMap_getAddress(m), (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b));
    assert_int_equal(IOMemoryMap_getVirtualAddress(m), IOMemoryMap_getAddress(m));
    IOOptionBits mo = IOMemoryMap_getMapOptions(m);
    assert_true(mo & kIOMapStatic);
    assert_true(mo & kIOMapAnywhere);
    assert_int_equal(IOMemoryMap_getLength(m), 3 * pg());
    assert_int_equal(IOMemoryMap_getSize(m), 3 * pg());
    assert_ptr_equal(IOMemoryMap_getAddressTask(m), kernel_task);
    assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(m), MD(b));
    OSObject_release(m);
    assert_int_equal(OSObject_getRetainCount(b), rc);
    OSObject_release(b);
  }
}

/* ---- row 39: map() twice, same options -------------------------------------------------------------------- */
static void row39_map_twice_same_object(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  IOMemoryMap *m1 = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m1);
  assert_int_equal(OSObject_getRetainCount(m1), 1);
  IOMemoryMap *m2 = IOMemoryDescriptor_map(MD(b), 0);
  assert_ptr_equal(m1, m2);
  assert_int_equal(OSObject_getRetainCount(m1), 2);
  IOMemoryMap *m3 = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, 0, 0);
  assert_ptr_equal(m1, m3);
  assert_int_equal(OSObject_getRetainCount(m1), 3);
  OSObject_release(m3);
  OSObject_release(m2);
  assert_int_equal(OSObject_getRetainCount(m1), 1);
  assert_int_equal(IOMemoryMap_getAddress(m1), (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b));
  OSObject_release(m1);
  /* with a NULL task (a real mapping) too */
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  m1 = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m1);
  m2 = IOMemoryDescriptor_map(MD(b), 0);
  assert_ptr_equal(m1, m2);
  assert_int_equal(OSObject_getRetainCount(m1), 2);
  OSObject_release(m2);
  OSObject_release(m1);
  OSObject_release(b);
}

/* ---- row 40: createMappingInTask length 0 ------------------------------------------------------------------ */
static void row40_map_length_zero_uses_length(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  IOBufferMemoryDescriptor_setLength(b, pg() + 50);
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, 0, 0);
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getLength(m), pg() + 50);
  OSObject_release(m);
  m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getLength(m), pg() + 50);
  OSObject_release(m);
  m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getLength(m), pg() + 50);
  OSObject_release(m);
  OSObject_release(b);
}

/* ---- row 41: createMappingInTask range beyond length, or length 0 -------------------------------------------- */
static void row41_map_out_of_range(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  struct { uint64_t off, len; IOOptionBits o; } bad[] = {
    { 2 * pg(), 0, kIOMapAnywhere }, { 2 * pg(), 1, kIOMapAnywhere }, { 3 * pg(), 0, kIOMapAnywhere },
    { 0, 2 * pg() + 1, kIOMapAnywhere }, { pg(), pg() + 1, kIOMapAnywhere },
    { pg(), UINT64_MAX, kIOMapAnywhere }, { UINT64_MAX, 2, kIOMapAnywhere },
    { 0, 2 * pg() + 1, kIOMapAnywhere | kIOMapUnique }, { 2 * pg(), 0, kIOMapAnywhere | kIOMapUnique },
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, bad[k].o, bad[k].off, bad[k].len);
    if (m) {
      OSObject_release(m);
      fail_msg("case %zu mapped out of range", k);
    }
    assert_int_not_equal(dk_last_failure()->code, kIOReturnSuccess);
  }
  /* after setLength(0) nothing can be mapped */
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_null(IOMemoryDescriptor_map(MD(b), 0));
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0));
  /* a shorter length bounds it */
  IOBufferMemoryDescriptor_setLength(b, pg());
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, 0, pg() + 1));
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, 0, pg());
  assert_non_null(m);
  OSObject_release(m);
  /* task NULL */
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), NULL, 0, kIOMapAnywhere, 0, 0));
  OSObject_release(b);
}

/* ---- row 42: guarded map without Anywhere -------------------------------------------------------------------- */
static void row42_guarded_needs_anywhere(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  const IOOptionBits g[] = { kIOMapGuardedSmall, kIOMapGuardedLarge, kIOMapGuardedMask };
  for (int k = 0; k < 3; k++) {
    assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, g[k], 0, 0));
    assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, g[k] | kIOMapUnique, 0, 0));
  }
  for (int k = 0; k < 2; k++) {
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, g[k] | kIOMapAnywhere, 0, 0);
    if (!m) print_failure("row42 guarded anywhere");
    assert_non_null(m);
    uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
    uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    assert_ptr_not_equal(p, base); /* guards rule out the identity shortcut */
    assert_true((IOMemoryMap_getMapOptions(m) & kIOMapGuardedMask) == g[k]);
    p[7] = (uint8_t)(0x40 + k);
    assert_int_equal(base[7], 0x40 + k);
    OSObject_release(m);
  }
  OSObject_release(b);
}

/* ---- row 43: IOMemoryMap::getLength fixed at map time ------------------------------------------------------- */
static void row43_map_length_fixed(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 3 * pg(), 1);
  assert_non_null(b);
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  IOMemoryMap *u = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, pg(), pg());
  assert_non_null(m);
  assert_non_null(u);
  assert_int_equal(IOMemoryMap_getLength(u), pg());
  IOBufferMemoryDescriptor_setLength(b, 10);
  assert_int_equal(IOMemoryMap_getLength(m), 3 * pg());
  assert_int_equal(IOMemoryMap_getSize(m), 3 * pg());
  assert_int_equal(IOMemoryMap_getLength(u), pg());
  IOBufferMemoryDescriptor_setLength(b, 3 * pg());
  assert_int_equal(IOMemoryMap_getLength(m), 3 * pg());
  OSObject_release(u);
  OSObject_release(m);
  OSObject_release(b);
}

/* ---- row 44: unmap twice ----------------------------------------------------------------------------------- */
static void row44_unmap_twice(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  /* a static (identity) map */
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  assert_int_not_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(IOMemoryMap_getVirtualAddress(m), 0);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getAddress(m), 0);
  /* the buffer itself is untouched */
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  base[0] = 1;
  assert_int_equal(base[0], 1);
  OSObject_release(m);
  /* a real mapping */
  m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  assert_int_not_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(OSObject_getRetainCount(m), 1); /* alive until released */
  OSObject_release(m);
  assert_int_equal(base[0], 1);
  OSObject_release(b);
}

/* ---- row 45: setTag/getTag --------------------------------------------------------------------------------- */
static void row45_tag_round_trip(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(10, kIODirectionIn, false);
  assert_non_null(b);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0);
  const IOOptionBits tags[] = { 1, 0xDEADBEEFu, 0xFFFFFFFFu, 0x80000000u, 0 };
  uint64_t flags = IOMemoryDescriptor_getFlags(MD(b));
  for (size_t k = 0; k < sizeof tags / sizeof tags[0]; k++) {
    IOMemoryDescriptor_setTag(MD(b), tags[k]);
    assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), tags[k]);
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), flags); /* not interpreted */
  }
  OSObject_release(b);
}

/* ---- row 46: DriverKit Create bad options ------------------------------------------------------------------ */
static void row46_driverkit_create_bad_options(void **state) {
  (void)state;
  for (unsigned bit = 2; bit < 64; bit++) {
    IOBufferMemoryDescriptor *m = (IOBufferMemoryDescriptor *)(uintptr_t)0x10;
    kern_return_t r = IOBufferMemoryDescriptor_Create((1ull << bit) | kIOMemoryDirectionIn, 100, 0, &m);
    if (r != kIOReturnBadArgument) fail_msg("bit %u: 0x%08x", bit, (unsigned)r);
    assert_null(m);
  }
  IOBufferMemoryDescriptor *m = (IOBufferMemoryDescriptor *)(uintptr_t)0x10;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDisableCopyOnWrite, 100, 0, &m), kIOReturnBadArgument);
  assert_null(m);
  /* even with capacity 0, the options are checked first */
  m = (IOBufferMemoryDescriptor *)(uintptr_t)0x10;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryPageable, 0, 0, &m), kIOReturnBadArgument);
  assert_null(m);
  for (uint64_t d = 0; d < 4; d++) {
    m = NULL;
    assert_int_equal(IOBufferMemoryDescriptor_Create(d, 100, 0, &m), kIOReturnSuccess);
    assert_non_null(m);
    assert_int_equal(IOMemoryDescriptor_getDirection(MD(m)), d);
    OSObject_release(m);
  }
}

/* ---- row 47: DriverKit SetLength -------------------------------------------------------------------------- */
static void row47_driverkit_setlength(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *m = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 1000, 0, &m), kIOReturnSuccess);
  uint64_t len = 0;
  const uint64_t lens[] = { 10, 0, 1000, 1001, pg(), UINT64_MAX, 999 };
  uint64_t want = 1000;
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    assert_int_equal(IOBufferMemoryDescriptor_SetLength(m, lens[k]), kIOReturnSuccess);
    if (lens[k] <= 1000) want = lens[k];
    assert_int_equal(IOMemoryDescriptor_GetLength(MD(m), &len), kIOReturnSuccess);
    assert_int_equal(len, want);
    assert_int_equal(IOMemoryDescriptor_getLength(MD(m)), want);
  }
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(m), 1000);
  OSObject_release(m);
}

/* ---- row 48: DriverKit CreateMapping unknown cache selector ------------------------------------------------ */
static void row48_driverkit_bad_cache_selector(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 2 * pg(), 0, &b), kIOReturnSuccess);
  const uint64_t bad[] = { 0x300, 0x500, 0x600, 0x700, 0x900, 0xC00, 0x1000, 0x2000, 0x8000, 0xFF00, 0x1100 };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    IOMemoryMap *map = NULL;
    kern_return_t r = IOMemoryDescriptor_CreateMapping(MD(b), bad[k], 0, 0, 0, 0, &map);
    if (r != kIOReturnBadArgument) fail_msg("selector %#llx: 0x%08x", (unsigned long long)bad[k], (unsigned)r);
    assert_null(map);
  }
  const uint64_t good[] = { kIOMemoryMapCacheModeDefault, kIOMemoryMapCacheModeInhibit, kIOMemoryMapCacheModeCopyback,
                            kIOMemoryMapCacheModeWriteThrough, kIOMemoryMapCacheModeRealTime };
  for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
    IOMemoryMap *map = NULL;
    assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), good[k], 0, 0, 0, 0, &map), kIOReturnSuccess);
    assert_non_null(map);
    OSObject_release(map);
  }
  OSObject_release(b);
}

/* ---- row 49: page size -------------------------------------------------------------------------------------- */
static void row49_page_size_runtime(void **state) {
  (void)state;
  const dk_caps *c = dk_capabilities();
  assert_ptr_equal(c, dk_capabilities());
  assert_int_equal(c->page_size, (uint32_t)sysconf(_SC_PAGESIZE));
  assert_int_equal(1ull << c->page_shift, c->page_size);
  /* every page rounding follows it */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIOMemoryKernelUserShared, 1, 1);
  assert_non_null(b);
  assert_int_equal(info_of(b).allocation_size, c->page_size);
  assert_int_equal(info_of(b).alignment, c->page_size);
  OSObject_release(b);
  b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(0, 1, 0, &b), kIOReturnSuccess);
  assert_int_equal(info_of(b).allocation_size, c->page_size);
  assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % c->page_size, 0);
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, c->page_size + 1, BIG_MASK);
  assert_int_equal(info_of(b).allocation_size, 2ull * c->page_size);
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 3, 1);
  assert_int_equal(info_of(b).allocation_size, c->page_size);
  OSObject_release(b);
}

/* ---- row 50: free ------------------------------------------------------------------------------------------ */
static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  assert_non_null(f);
  char line[256];
  long v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = strtol(line + kl + 1, NULL, 10);
  fclose(f);
  return v;
}

static long count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  long n = 0;
  int ch;
  while ((ch = fgetc(f)) != EOF)
    if (ch == '\n') n++;
  fclose(f);
  return n;
}

static long count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  long n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void churn(uint64_t size) {
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, 1);
  assert_non_null(b);
  IOMemoryDescriptor_prepare(MD(b), kIODirectionNone);
  IOMemoryDescriptor_prepare(MD(b), kIODirectionNone);
  IOMemoryMap *m1 = IOMemoryDescriptor_map(MD(b), 0);
  IOMemoryMap *m2 = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m1);
  assert_non_null(m2);
  OSObject_release(m1);
  OSObject_release(m2);
  OSObject_release(b);
  IOBufferMemoryDescriptor *p = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIOMemoryPurgeable, size, 1);
  assert_non_null(p);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(p), kIODirectionNone), kIOReturnSuccess);
  IOMemoryMap *m3 = IOMemoryDescriptor_map(MD(p), 0);
  assert_non_null(m3);
  OSObject_release(m3);
  OSObject_release(p);
}

static void row50_free(void **state) {
  (void)state;
  /* the buffer outlives its creator's reference while a map holds it */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  assert_int_equal(OSObject_getRetainCount(b), 2);
  OSObject_release(b);
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(m), MD(b));
  assert_int_equal(OSObject_getRetainCount(b), 1);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  p[0] = 0x12;
  uint8_t r = 0;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, &r, 1), 1);
  assert_int_equal(r, 0x12);
  OSObject_release(m); /* frees both */

  /* nothing leaks: locked memory, mappings and descriptors return to where they were. Locked
   * and pinned memory is per buffer only for 4K pages (the hugepage pool pins whole chunks
   * and keeps them until dk_pool_trim), so this measure runs with the pool off */
  uint64_t lim = dk_capabilities()->memlock_limit;
  uint64_t size = 256 * 1024;
  if (lim != UINT64_MAX && size > lim / 8) size = lim / 8 & ~(pg() - 1);
  if (size < pg()) size = pg();
  const bool pool_was_on = pool_on();
  const long pool_saved = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  churn(size); /* warm up lazily created state */
  long lck0 = status_kb("VmLck"), pin0 = status_kb("VmPin");
  long maps0 = count_lines("/proc/self/maps"), fds0 = count_fds();
  /* does the measure work? A live wired buffer shows as locked (mlock) or pinned (io_uring)
   * memory; under a sanitizer mlock is a no-op, and then only VmPin may show it */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, 1);
  assert_non_null(b);
  const bool lck_counts = status_kb("VmLck") >= lck0 + (long)(size / 1024);
  const bool pin_counts = status_kb("VmPin") >= pin0 + (long)(size / 1024);
  OSObject_release(b);
  if (!lck_counts && !pin_counts) print_message("row50: locked memory is not observable here (sanitizer?)\n");
  for (int k = 0; k < 64; k++) churn(size);
  long lck1 = status_kb("VmLck"), pin1 = status_kb("VmPin");
  long maps1 = count_lines("/proc/self/maps"), fds1 = count_fds();
  print_message("row50: VmLck %ld -> %ld kB, VmPin %ld -> %ld kB, maps %ld -> %ld, fds %ld -> %ld (64 x %llu bytes)\n",
                lck0, lck1, pin0, pin1, maps0, maps1, fds0, fds1, (unsigned long long)size);
  dk_option_set(DK_OPTION_POOL, pool_saved);
  if (lck_counts) assert_true(lck1 <= lck0 + (long)(2 * size / 1024));
  if (pin_counts) assert_true(pin1 <= pin0 + (long)(2 * size / 1024));
  assert_true(maps1 <= maps0 + 4);
  assert_true(fds1 <= fds0 + 2);

  /* with the pool: freed buffers go back to it (its used bytes return to where they were),
   * and mappings and descriptors do not pile up */
  if (pool_was_on) {
    assert_true(pool_on());
    churn(size);
    dk_pool_stats st0 = { .size = sizeof st0 }, st1 = { .size = sizeof st1 };
    assert_int_equal(dk_pool_get_stats(&st0), kIOReturnSuccess);
    maps0 = count_lines("/proc/self/maps");
    fds0 = count_fds();
    for (int k = 0; k < 64; k++) churn(size);
    assert_int_equal(dk_pool_get_stats(&st1), kIOReturnSuccess);
    maps1 = count_lines("/proc/self/maps");
    fds1 = count_fds();
    print_message("row50 (pool): used %llu -> %llu bytes, maps %ld -> %ld, fds %ld -> %ld\n",
                  (unsigned long long)st0.bytes_pool_used, (unsigned long long)st1.bytes_pool_used, maps0, maps1,
                  fds0, fds1);
    assert_int_equal(st1.bytes_pool_used, st0.bytes_pool_used);
    assert_true(st1.requests_pool + st1.requests_slab > st0.requests_pool + st0.requests_slab);
    assert_true(maps1 <= maps0 + 4);
    assert_true(fds1 <= fds0 + 2);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(row01_option_constants),
    cmocka_unit_test(row02_ioreturn_constants),
    cmocka_unit_test(row03_capacity_zero),
    cmocka_unit_test(row04_stored_capacity),
    cmocka_unit_test(row05_initial_length),
    cmocka_unit_test(row06_zero_fill),
    cmocka_unit_test(row07_alignment_none),
    cmocka_unit_test(row08_alignment_pow2),
    cmocka_unit_test(row09_alignment_page_rounds),
    cmocka_unit_test(row10_alignment_forces_contiguous),
    cmocka_unit_test(row11_shared_cache_encrypt_page_align),
    cmocka_unit_test(row12_physical_mask_derivation),
    cmocka_unit_test(row13_mask_ignored_with_alignment),
    cmocka_unit_test(row14_mask_without_mapper),
    cmocka_unit_test(row15_null_task_wired),
    cmocka_unit_test(row16_null_task_pageable),
    cmocka_unit_test(row17_pageable_needs_prepare),
    cmocka_unit_test(row18_purgeable_ignored),
    cmocka_unit_test(row19_overflow),
    cmocka_unit_test(row20_contiguous_without_mapper),
    cmocka_unit_test(row21_direction),
    cmocka_unit_test(row22_withCapacity_contiguous_alignment),
    cmocka_unit_test(row23_withBytes),
    cmocka_unit_test(row24_factories_map_onto_init),
    cmocka_unit_test(row25_tagged),
    cmocka_unit_test(row26_setLength_beyond_capacity),
    cmocka_unit_test(row27_appendBytes_truncates),
    cmocka_unit_test(row28_getBytesNoCopyRange),
    cmocka_unit_test(row29_getBytesNoCopy_after_setLength0),
    cmocka_unit_test(row30_getPhysicalSegment_past_end),
    cmocka_unit_test(row31_getPhysicalSegment_lengths),
    cmocka_unit_test(row32_read_write_out_of_range),
    cmocka_unit_test(row33_writeBytes_null_zero_fills),
    cmocka_unit_test(row34_writeBytes_out_only),
    cmocka_unit_test(row35_prepare_complete_counted),
    cmocka_unit_test(row36_performOperation),
    cmocka_unit_test(row37_setPurgeable_bad_state),
    cmocka_unit_test(row38_map_kernel_identity),
    cmocka_unit_test(row39_map_twice_same_object),
    cmocka_unit_test(row40_map_length_zero_uses_length),
    cmocka_unit_test(row41_map_out_of_range),
    cmocka_unit_test(row42_guarded_needs_anywhere),
    cmocka_unit_test(row43_map_length_fixed),
    cmocka_unit_test(row44_unmap_twice),
    cmocka_unit_test(row45_tag_round_trip),
    cmocka_unit_test(row46_driverkit_create_bad_options),
    cmocka_unit_test(row47_driverkit_setlength),
    cmocka_unit_test(row48_driverkit_bad_cache_selector),
    cmocka_unit_test(row49_page_size_runtime),
    cmocka_unit_test(row50_free),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
