/* tests/test_apple_iokit.c: Apple's own IOKit self-tests, translated to dmakit's C API: XNU's
 * iokit/Tests/TestIOMemoryDescriptor.cpp (xnu-11417.101.15; every test that function
 * IOMemoryDescriptorTest runs, in its order) and the user-client port-leak test
 * (tests/iokit/map_memory_port_leak_45265408.c with its service TestIOConnectMapMemoryPortLeak45265408).
 * Each original assert is kept as a cmocka assert, in the same order. Where the translation
 * must say something differently, a comment names the XNU construct and what stands for it:
 *   - current_task() (the user process calling the test sysctl) is kernel_task here, the driver's
 *     own process, except in IOBMDSetLengthMapTest, whose point is a mapping into a user task:
 *     there it is a connected client (dmakit's share API), as is the port-leak test's client;
 *   - kernel memory from IOMallocAligned is shared anonymous memory (MAP_SHARED | MAP_ANONYMOUS):
 *     the tests map it a second time, which Linux can do only for shared pages;
 *   - mach_vm_inherit(VM_INHERIT_NONE), used to fragment the kernel's map entries, is
 *     madvise(MADV_DONTFORK), which splits this process's mappings the same way;
 *   - IODMACommand::SegmentOptions is passed as the classic withSpecification arguments it stands
 *     for (fAlignmentLength and fAlignmentInternalSegments of 1 change nothing);
 *   - IOMappedWrite32 to a segment's bus address is a write into the bounce buffer that segment
 *     points at (the device's side of the double buffer);
 *   - mach_vm_region's protection is read from /proc/self/maps; OSString contexts are dmakit
 *     objects; kern_allocation_name has no Linux counterpart (the buffer calls are kept);
 *   - the #if 0 blocks of IOMemoryDescriptorTest (newValue 3-6: upl_transpose redirects, a
 *     hardware "isp" mapper, dmaMap) are not run by XNU either and are not translated;
 *     IOBufferMemoryDescriptor::inTaskWithGuardPages (kernel-private API) is not provided, so
 *     the second half of IOGuardPageMDTest is left out (docs/porting.md). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iokit/dmacommand.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

static size_t page_size_(void) { return dk_capabilities()->page_size; }
#define page_size page_size_()
#define ptoa(n) ((uint64_t)(n) * page_size)
#define round_page(x) (((uint64_t)(x) + page_size - 1) & ~((uint64_t)page_size - 1))
#define current_task() kernel_task

/* IOMallocAligned(n, page_size) / IOFreeAligned: kernel memory XNU can map twice; shared here. */
static void *malloc_aligned(size_t n)
{
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  return p;
}
static void free_aligned(void *p, size_t n) { munmap(p, n); }

/* Bus addresses are physical without a mapper: the tests that walk them need frame numbers. */
static bool physical_or_skip(void)
{
  if (dkt_pfn_readable() && (dk_capabilities()->pin_method != DK_PIN_NONE || !dk_option_get(DK_OPTION_REQUIRE_PIN)))
    return true;
  printf("SKIP: needs root (bus addresses are frame numbers from /proc/self/pagemap)\n");
  return false;
}

/* ---- IOMultMemoryDescriptorTest ------------------------------------------------------------------ */
static void IOMultMemoryDescriptorTest(void **state)
{
  (void)state;
  IOMemoryDescriptor *mds[3];
  IOMultiMemoryDescriptor *mmd;
  IOMemoryMap *map;
  void *addr;
  uint8_t *data;
  uint32_t i;
  IOAddressRange ranges[2];

  data = malloc_aligned(ptoa(8));
  for (i = 0; i < ptoa(8); i++) data[i] = ((uint8_t)(i / page_size)) | 0xD0;

  ranges[0].address = (IOVirtualAddress)(uintptr_t)(data + ptoa(4));
  ranges[0].length = ptoa(4);
  ranges[1].address = (IOVirtualAddress)(uintptr_t)(data + ptoa(0));
  ranges[1].length = ptoa(4);

  mds[0] = IOMemoryDescriptor_withAddressRange((mach_vm_address_t)(uintptr_t)data, 2, kIODirectionOutIn, kernel_task);
  assert_non_null(mds[0]);
  {
    uint64_t dmaLen, dmaOffset;
    dmaLen = IOMemoryDescriptor_getDMAMapLength(mds[0], &dmaOffset);
    assert_int_equal(0, dmaOffset);
    assert_int_equal(ptoa(1), dmaLen);
  }
  OSObject_release(mds[0]);
  mds[0] = IOMemoryDescriptor_withAddressRange((mach_vm_address_t)(uintptr_t)(data + page_size - 2), 4,
                                               kIODirectionOutIn, kernel_task);
  assert_non_null(mds[0]);
  {
    uint64_t dmaLen, dmaOffset;
    dmaLen = IOMemoryDescriptor_getDMAMapLength(mds[0], &dmaOffset);
    assert_int_equal(page_size - 2, dmaOffset);
    assert_int_equal(ptoa(2), dmaLen);
  }
  OSObject_release(mds[0]);

  mds[0] = IOMemoryDescriptor_withAddressRanges(&ranges[0], 2, kIODirectionOutIn, kernel_task);
  {
    uint64_t dmaLen, dmaOffset;
    dmaLen = IOMemoryDescriptor_getDMAMapLength(mds[0], &dmaOffset);
    assert_int_equal(0, dmaOffset);
    assert_int_equal(ptoa(8), dmaLen);
  }
  mds[1] = MD(IOSubMemoryDescriptor_withSubRange(mds[0], ptoa(3), ptoa(2), kIODirectionOutIn));
  {
    uint64_t dmaLen, dmaOffset;
    dmaLen = IOMemoryDescriptor_getDMAMapLength(mds[1], &dmaOffset);
    assert_int_equal(0, dmaOffset);
    assert_int_equal(ptoa(2), dmaLen);
  }
  mds[2] = MD(IOSubMemoryDescriptor_withSubRange(mds[0], ptoa(7), ptoa(1), kIODirectionOutIn));

  mmd = IOMultiMemoryDescriptor_withDescriptors(&mds[0], sizeof(mds) / sizeof(mds[0]), kIODirectionOutIn, false);
  {
    uint64_t dmaLen, dmaOffset;
    dmaLen = IOMemoryDescriptor_getDMAMapLength(MD(mmd), &dmaOffset);
    assert_int_equal(0, dmaOffset);
    assert_int_equal(ptoa(11), dmaLen);
  }
  OSObject_release(mds[2]);
  OSObject_release(mds[1]);
  OSObject_release(mds[0]);
  map = IOMemoryDescriptor_createMappingInTask(MD(mmd), kernel_task, 0, kIOMapAnywhere | kIOMapGuardedSmall, ptoa(7),
                                               IOMemoryDescriptor_getLength(MD(mmd)) - ptoa(7));
  OSObject_release(mmd);
  assert_non_null(map);

  addr = (void *)(uintptr_t)IOMemoryMap_getVirtualAddress(map);
  assert_int_equal(ptoa(4), IOMemoryMap_getLength(map));
  assert_int_equal(0xd3d3d3d3, ((uint32_t *)addr)[ptoa(0) / sizeof(uint32_t)]);
  assert_int_equal(0xd7d7d7d7, ((uint32_t *)addr)[ptoa(1) / sizeof(uint32_t)]);
  assert_int_equal(0xd0d0d0d0, ((uint32_t *)addr)[ptoa(2) / sizeof(uint32_t)]);
  assert_int_equal(0xd3d3d3d3, ((uint32_t *)addr)[ptoa(3) / sizeof(uint32_t)]);
  OSObject_release(map);
  free_aligned(data, ptoa(8));
}

/* ---- IODMACommandForceDoubleBufferTest ------------------------------------------- */
static void IODMACommandForceDoubleBufferTest(void **state)
{
  (void)state;
  if (!physical_or_skip()) { skip(); return; }
  IOReturn ret;
  IOBufferMemoryDescriptor *bmd;
  IODMACommand *dma;
  uint32_t dir, data;
  /* SegmentOptions { fNumAddressBits 64, fMaxSegmentSize 0x2000, fMaxTransferSize 128 KiB, fAlignment 1,
   * fAlignmentLength 1, fAlignmentInternalSegments 1 } */
  IODMACommandSegment64 segments[1];
  UInt32 numSegments;
  UInt64 dmaOffset;

  for (dir = kIODirectionIn;; dir++) {
    bmd = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, dir | kIOMemoryPageable, ptoa(8), 1);
    assert_non_null(bmd);
    {
      uint64_t dmaLen, dmaOffset2;
      dmaLen = IOMemoryDescriptor_getDMAMapLength(MD(bmd), &dmaOffset2);
      assert_int_equal(0, dmaOffset2);
      assert_int_equal(ptoa(8), dmaLen);
    }

    ((uint32_t *)IOBufferMemoryDescriptor_getBytesNoCopy(bmd))[0] = 0x53535300 | dir;

    ret = IOMemoryDescriptor_prepare(MD(bmd), (IODirection)dir);
    assert_int_equal(kIOReturnSuccess, ret);

    dma = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0x2000, kIODMAMapOptionMapped, 128 * 1024, 1,
                                         NULL, NULL);
    assert_non_null(dma);
    ret = IODMACommand_setMemoryDescriptor(dma, MD(bmd), true);
    assert_int_equal(kIOReturnSuccess, ret);

    ret = IODMACommand_synchronize(dma, kIODMACommandForceDoubleBuffer | kIODirectionOut);
    assert_int_equal(kIOReturnSuccess, ret);

    dmaOffset = 0;
    numSegments = 1;
    ret = IODMACommand_gen64IOVMSegments(dma, &dmaOffset, &segments[0], &numSegments);
    assert_int_equal(kIOReturnSuccess, ret);
    assert_int_equal(1, numSegments);

    if (kIODirectionOut & dir) {
      data = ((uint32_t *)IOBufferMemoryDescriptor_getBytesNoCopy(bmd))[0];
      assert_int_equal((0x53535300 | dir), data);
    }
    if (kIODirectionIn & dir) {
      /* IOMappedWrite32(segments[0].fIOVMAddr, 0x11223300 | dir): the device writes the bounce page */
      IOBufferMemoryDescriptor *bounce = dk__dmacommand_bounce(dma);
      assert_non_null(bounce);
      assert_int_equal(segments[0].fIOVMAddr, IOMemoryDescriptor_getPhysicalSegment(MD(bounce), 0, NULL, 0));
      ((uint32_t *)IOBufferMemoryDescriptor_getBytesNoCopy(bounce))[0] = 0x11223300 | dir;
    }

    ret = IODMACommand_clearMemoryDescriptor(dma, true);
    assert_int_equal(kIOReturnSuccess, ret);
    OSObject_release(dma);

    IOMemoryDescriptor_complete(MD(bmd), (IODirection)dir);

    if (kIODirectionIn & dir) {
      data = ((uint32_t *)IOBufferMemoryDescriptor_getBytesNoCopy(bmd))[0];
      assert_int_equal((0x11223300 | dir), data);
    }

    OSObject_release(bmd);

    if (dir == kIODirectionInOut) break;
  }
}

/* ---- IOMemoryRemoteTest ------------------------------------------------------------ */
static void IOMemoryRemoteTest(void **state)
{
  (void)state;
  IOReturn ret;
  IOMemoryDescriptor *md;
  IOByteCount offset, length;
  addr64_t addr;
  uint32_t idx;
  IODMACommand *dma;
  /* SegmentOptions { 64, 0x2000, 128 KiB, 1, 1, 1 } */
  IODMACommandSegment64 segments[1];
  UInt32 numSegments;
  UInt64 dmaOffset;
  IOAddressRange ranges[2] = {
    { 0x1234567890123456ULL, 0x1000 }, { 0x5432109876543210, 0x2000 },
  };

  md = IOMemoryDescriptor_withAddressRanges(&ranges[0], 2, kIODirectionOutIn | kIOMemoryRemote, NULL);
  assert_non_null(md);

  ret = IOMemoryDescriptor_prepare(md, kIODirectionOutIn);
  assert_int_equal(kIOReturnSuccess, ret);

  print_message("remote md flags 0x%llx, r %d\n", (unsigned long long)IOMemoryDescriptor_getFlags(md),
                (0 != (kIOMemoryRemote & IOMemoryDescriptor_getFlags(md))));

  for (offset = 0, idx = 0; true; offset += length, idx++) {
    addr = IOMemoryDescriptor_getPhysicalSegment(md, offset, &length, 0);
    if (!length) break;
    assert_true(idx < 2);
    assert_int_equal(addr, ranges[idx].address);
    assert_int_equal(length, ranges[idx].length);
  }
  assert_int_equal(offset, IOMemoryDescriptor_getLength(md));

  dma = IODMACommand_withSpecification(IODMACommand_OutputHost64, 64, 0x2000,
                                       kIODMAMapOptionUnmapped | kIODMAMapOptionIterateOnly, 128 * 1024, 1, NULL, NULL);
  assert_non_null(dma);
  ret = IODMACommand_setMemoryDescriptor(dma, md, true);
  assert_int_equal(kIOReturnSuccess, ret);

  for (dmaOffset = 0, idx = 0; dmaOffset < IOMemoryDescriptor_getLength(md); idx++) {
    numSegments = 1;
    ret = IODMACommand_gen64IOVMSegments(dma, &dmaOffset, &segments[0], &numSegments);
    assert_int_equal(kIOReturnSuccess, ret);
    assert_int_equal(1, numSegments);
    assert_true(idx < 2);
    assert_int_equal(segments[0].fIOVMAddr, ranges[idx].address);
    assert_int_equal(segments[0].fLength, ranges[idx].length);
  }
  assert_int_equal(dmaOffset, IOMemoryDescriptor_getLength(md));

  ret = IODMACommand_clearMemoryDescriptor(dma, true);
  assert_int_equal(kIOReturnSuccess, ret);
  OSObject_release(dma);
  IOMemoryDescriptor_complete(md, kIODirectionOutIn);
  OSObject_release(md);
}

/* ---- IOMemoryPrefaultTest ----------------------------------------------------------------------------- */
static void IOMemoryPrefaultTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd;
  IOMemoryMap *map;
  IOReturn kr;
  uint32_t data;
  uint32_t *p;

  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(current_task(), kIODirectionOutIn | kIOMemoryPageable, ptoa(8), 1);
  assert_non_null(bmd);
  kr = IOMemoryDescriptor_prepare(MD(bmd), kIODirectionNone);
  assert_int_equal(kIOReturnSuccess, kr);

  map = IOMemoryDescriptor_map(MD(bmd), kIOMapPrefault);
  assert_non_null(map);

  p = (uint32_t *)(uintptr_t)IOMemoryMap_getVirtualAddress(map);
  data = p[0];    /* under XNU's simple lock: no fault may be taken */
  print_message("IOMemoryPrefaultTest %d\n", data);
  assert_int_equal(data, 0);

  OSObject_release(map);
  OSObject_release(bmd);
}

/* ---- IOBMDOverflowTest -------------------------------------------------------------------------------- */
static void IOBMDOverflowTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd;
  bmd = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIOMemoryPageable | kIODirectionOut,
                                                        0xffffffffffffffffULL, 0);
  assert_null(bmd);
}

/* ---- IOBMDSetLengthMapTest: a 16 KiB-aligned kIOMemoryKernelUserShared buffer mapped into the
 * user task (current_task() of the sysctl caller): a connected client here ------------------------------ */
static const char *sock_path(void)
{
  static char path[64];
  if (!path[0]) snprintf(path, sizeof path, "/tmp/dmakit-apple-%d.sock", (int)getpid());
  return path;
}

static void IOBMDSetLengthMapTest(void **state)
{
  (void)state;
  if (!physical_or_skip() || !dk_capabilities()->pool_usable) {
    if (dkt_pfn_readable()) printf("SKIP: a 16 KiB physical alignment needs hugepages here\n");
    skip();
    return;
  }
  dk_server *srv = NULL;
  assert_int_equal(dk_server_create(sock_path(), NULL, &srv), kIOReturnSuccess);
  dk_client *client = NULL;
  assert_int_equal(dk_client_connect(sock_path(), NULL, &client), kIOReturnSuccess);
  task_t user_task = NULL;
  assert_int_equal(dk_server_accept(srv, 5000, &user_task), kIOReturnSuccess);

  IOBufferMemoryDescriptor *bmd;
  IOMemoryMap *map;

  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryDirectionOutIn | kIOMemoryKernelUserShared,
                                                   0x4000, 0x4000);
  if (!bmd) fail_msg("inTaskWithOptions: %s", dkt_failure_text());

  IOBufferMemoryDescriptor_setLength(bmd, 0x100);
  map = IOMemoryDescriptor_createMappingInTask(MD(bmd), user_task, 0, kIOMapAnywhere, 0, 0);
  if (!map) fail_msg("createMappingInTask into the client: %s", dkt_failure_text());
  OSSafeReleaseNULL(map);

  IOBufferMemoryDescriptor_setLength(bmd, 0x200);
  map = IOMemoryDescriptor_createMappingInTask(MD(bmd), user_task, 0, kIOMapAnywhere, 0, 0);
  assert_non_null(map);
  OSSafeReleaseNULL(map);

  OSObject_release(bmd);

  dk_client_close(client);
  dk_task_release(user_task);
  dk_server_destroy(srv);
}

/* ---- ZeroLengthTest ----------------------------------------------------------------- */
static void ZeroLengthTest(void **state)
{
  (void)state;
  IOMemoryDescriptor *md;
  md = IOMemoryDescriptor_withAddressRange(0, 0, kIODirectionNone, current_task());
  assert_non_null(md);
  IOMemoryDescriptor_prepare(md, kIODirectionNone);
  IOMemoryDescriptor_complete(md, kIODirectionNone);
  OSObject_release(md);
}

/* ---- BadFixedAllocTest --------------------------------------------------------------- */
static void BadFixedAllocTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd;
  IOMemoryMap *map;
  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionIn | kIOMemoryPageable, ptoa(1), 1);
  assert_non_null(bmd);
  map = IOMemoryDescriptor_createMappingInTask(MD(bmd), kernel_task, 0x2000, 0, 0, 0);
  assert_null(map);
  OSObject_release(bmd);
}

/* ---- IODirectionPrepareNoZeroFillTest ------------------------------------------------- */
static void IODirectionPrepareNoZeroFillTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd;
  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionIn | kIOMemoryPageable, ptoa(24), 1);
  assert_non_null(bmd);
  IOMemoryDescriptor_prepare(MD(bmd), (IODirection)(kIODirectionIn | kIODirectionPrepareNoZeroFill));
  IOMemoryDescriptor_prepare(MD(bmd), kIODirectionIn);
  IOMemoryDescriptor_complete(MD(bmd), (IODirection)(kIODirectionIn | kIODirectionCompleteWithDataValid));
  IOMemoryDescriptor_complete(MD(bmd), kIODirectionIn);
  OSObject_release(bmd);
}

/* ---- IOMemoryMapTest, run by IOMemoryMapCopyOnWriteTest ------------------------------- */
static void IOMemoryMapTest(uint32_t options)
{
  IOBufferMemoryDescriptor *bmd;
  IOMemoryDescriptor *md;
  IOMemoryMap *map;
  uint32_t data;
  uint8_t *p;
  uint8_t *p2;

  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(current_task(), kIODirectionOutIn | kIOMemoryPageable, 0x4018 + 0x800,
                                                   1);
  assert_non_null(bmd);
  p = (uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(bmd);
  p += 0x800;
  data = 0x11111111;
  memcpy(p, &data, sizeof(data));              /* copyout */
  data = 0x22222222;
  memcpy(p + 0x1000, &data, sizeof(data));
  data = 0x33333333;
  memcpy(p + 0x2000, &data, sizeof(data));
  data = 0x44444444;
  memcpy(p + 0x3000, &data, sizeof(data));

  md = IOMemoryDescriptor_withAddressRange((mach_vm_address_t)(uintptr_t)p, 0x4018, kIODirectionOut | options,
                                           current_task());
  assert_non_null(md);
  map = IOMemoryDescriptor_map(md, kIOMapReadOnly);
  if (!map) fail_msg("map: %s", dkt_failure_text());

  p2 = (uint8_t *)(uintptr_t)IOMemoryMap_getVirtualAddress(map);
  assert_int_equal(0x11, p2[0]);
  assert_int_equal(0x22, p2[0x1000]);
  assert_int_equal(0x33, p2[0x2000]);
  assert_int_equal(0x44, p2[0x3000]);

  data = 0x99999999;
  memcpy(p + 0x2000, &data, sizeof(data));

  assert_int_equal(0x11, p2[0]);
  assert_int_equal(0x22, p2[0x1000]);
  assert_int_equal(0x44, p2[0x3000]);
  if (kIOMemoryMapCopyOnWrite & options) {
    assert_int_equal(0x33, p2[0x2000]);
  } else {
    assert_int_equal(0x99, p2[0x2000]);
  }

  OSObject_release(map);
  OSObject_release(md);
  OSObject_release(bmd);
}

static void IOMemoryMapCopyOnWriteTest(void **state)
{
  (void)state;
  IOMemoryMapTest(0);
  IOMemoryMapTest(kIOMemoryMapCopyOnWrite);
}

/* ---- AllocationNameTest -------------------------------------------------------------------------------- */
static void AllocationNameTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd;
  /* kern_allocation_name_allocate / thread_set_allocation_name: no Linux counterpart */
  bmd = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionOutIn | kIOMemoryPageable | kIOMemoryKernelUserShared,
                                                   ptoa(13), 1);
  assert_non_null(bmd);
  IOMemoryDescriptor_prepare(MD(bmd), kIODirectionNone);
  OSObject_release(bmd);    /* newValue != 7 */
}

/* ---- IOGuardPageMDTest ----------------------------------------------------------------------------------- */

/* The protection of the page at `a`, from /proc/self/maps ("---p" for none); mach_vm_region. */
static bool page_inaccessible(uintptr_t a)
{
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[512];
  bool none = false, found = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long long s, e;
    char perms[8];
    if (sscanf(line, "%llx-%llx %7s", &s, &e, perms) == 3 && s <= a && a < e) {
      none = perms[0] == '-' && perms[1] == '-' && perms[2] == '-';
      found = true;
      break;
    }
  }
  fclose(f);
  assert_true(found);
  return none;
}

static void IOGuardPageMDTest(void **state)
{
  (void)state;
  enum { MAX_LEFT_GUARD_PAGES = 5, MAX_RIGHT_GUARD_PAGES = 5 };
  IOMemoryDescriptor *mds[3];
  IOMemoryDescriptor *dataMD;
  IOMultiMemoryDescriptor *mmd;
  IOMemoryMap *map;
  void *addr;
  uint8_t *data;
  uint32_t i;

  data = malloc_aligned(page_size);
  for (i = 0; i < page_size; i++) data[i] = (uint8_t)(i & 0xFF);

  dataMD = IOMemoryDescriptor_withAddressRange((mach_vm_address_t)(uintptr_t)data, page_size, kIODirectionOutIn,
                                               kernel_task);
  assert_non_null(dataMD);

  for (size_t leftGuardSize = 1; leftGuardSize < MAX_LEFT_GUARD_PAGES; leftGuardSize++) {
    for (size_t rightGuardSize = 1; rightGuardSize < MAX_RIGHT_GUARD_PAGES; rightGuardSize++) {
      mds[0] = MD(IOGuardPageMemoryDescriptor_withSize(page_size * leftGuardSize));
      assert_non_null(mds[0]);

      mds[1] = dataMD;
      OSObject_retain(mds[1]);

      mds[2] = MD(IOGuardPageMemoryDescriptor_withSize(page_size * rightGuardSize));
      assert_non_null(mds[2]);

      mmd = IOMultiMemoryDescriptor_withDescriptors(&mds[0], sizeof(mds) / sizeof(mds[0]), kIODirectionOutIn, false);

      OSSafeReleaseNULL(mds[2]);
      OSSafeReleaseNULL(mds[1]);
      OSSafeReleaseNULL(mds[0]);

      map = IOMemoryDescriptor_createMappingInTask(MD(mmd), kernel_task, 0, kIOMapAnywhere, 0,
                                                   IOMemoryDescriptor_getLength(MD(mmd)));

      OSSafeReleaseNULL(mmd);
      assert_non_null(map);
      addr = (void *)(uintptr_t)IOMemoryMap_getAddress(map);

      /* check data */
      for (i = 0; i < page_size; i++)
        assert_int_equal(*(uint8_t *)((uintptr_t)addr + page_size * leftGuardSize + i), (uint8_t)(i & 0xFF));

      /* check map length */
      assert_int_equal(page_size * leftGuardSize + page_size + page_size * rightGuardSize, IOMemoryMap_getLength(map));

      /* check page protections */
      for (i = 0; i < leftGuardSize + 1 + rightGuardSize; i++) {
        uintptr_t regionAddr = (uintptr_t)addr + i * page_size;
        if (i < leftGuardSize || i > leftGuardSize + 1) assert_true(page_inaccessible(regionAddr));
      }
      OSSafeReleaseNULL(map);
    }
  }

  OSSafeReleaseNULL(dataMD);
  free_aligned(data, page_size);
  /* inTaskWithGuardPages (kernel-private) is not provided: the rest of the test is left out */
}

/* ---- IOMDContextTest ---------------------------------------------------------------------------------- */
static void IOMDContextTest(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *bmd = IOBufferMemoryDescriptor_inTaskWithOptions(
      NULL, kIODirectionOutIn | kIOMemoryPageable | kIOMemoryKernelUserShared, ptoa(13), 1);

  void *current = NULL;
  /* OSString::withCStringNoCopy("firstString") / ("secondString"): any dmakit objects */
  IOBufferMemoryDescriptor *firstString = IOBufferMemoryDescriptor_withCapacity(12, kIODirectionNone, false);
  IOBufferMemoryDescriptor *secondString = IOBufferMemoryDescriptor_withCapacity(13, kIODirectionNone, false);

  assert_null(IOMemoryDescriptor_copyContext(MD(bmd)));

  IOMemoryDescriptor_setContext(MD(bmd), NULL);
  assert_null(IOMemoryDescriptor_copyContext(MD(bmd)));

  IOMemoryDescriptor_setContext(MD(bmd), firstString);
  current = IOMemoryDescriptor_copyContext(MD(bmd));
  assert_ptr_equal(current, firstString);
  OSSafeReleaseNULL(current);

  IOMemoryDescriptor_setContext(MD(bmd), NULL);
  assert_null(IOMemoryDescriptor_copyContext(MD(bmd)));

  IOMemoryDescriptor_setContext(MD(bmd), secondString);
  current = IOMemoryDescriptor_copyContext(MD(bmd));
  assert_ptr_equal(current, secondString);
  OSSafeReleaseNULL(current);

  OSObject_release(bmd);

  assert_int_equal(OSObject_getRetainCount(firstString), 1);
  assert_int_equal(OSObject_getRetainCount(secondString), 1);

  OSObject_release(firstString);
  OSObject_release(secondString);
}

/* ---- IOMemoryDescriptorTest: the tests above in XNU's order, then its own loop over
 * IOGeneralMemoryDescriptor ranges, mappings and physical reads ------------------------------------------ */
static void IOMemoryDescriptorTest_ranges(void **state)
{
  (void)state;
  if (!physical_or_skip()) { skip(); return; }
  IOMemoryDescriptor *md;
  uint8_t *data[2];
  size_t bsize = 16 * 1024 * 1024;
  size_t srcsize, srcoffset, mapoffset, size;
  IOReturn kr = kIOReturnSuccess;

  data[0] = malloc_aligned(bsize);     /* mach_vm_allocate_kernel(kernel_map, ...) */
  data[1] = NULL;
  /* mach_vm_inherit(kernel_map, data + ptoa(1), ptoa(1) / data + ptoa(16), ptoa(4), VM_INHERIT_NONE) */
  assert_int_equal(madvise(data[0] + ptoa(1), ptoa(1), MADV_DONTFORK), 0);
  assert_int_equal(madvise(data[0] + ptoa(16), ptoa(4), MADV_DONTFORK), 0);

  uint32_t idx, offidx;
  for (idx = 0; idx < (bsize / sizeof(uint32_t)); idx++) ((uint32_t *)data[0])[idx] = idx;

  uint32_t *words = malloc(bsize);
  unsigned long maps = 0, checked = 0;
  for (srcoffset = 0; srcoffset < bsize; srcoffset = ((srcoffset << 2) + 0x40c)) {
    for (srcsize = 4; srcsize < (bsize - srcoffset - 1); srcsize = ((srcsize << 2) + 0x3fc)) {
      IOAddressRange ranges[3];
      uint32_t rangeCount = 1;

      memset(&ranges[0], 0, sizeof(ranges));
      ranges[0].address = (uintptr_t)data[0] + srcoffset;
      ranges[0].length = srcsize;
      ranges[1].address = ranges[2].address = (uintptr_t)data[0];

      if (srcsize > ptoa(5)) {
        ranges[0].length = 7634;
        ranges[1].length = 9870;
        ranges[2].length = srcsize - ranges[0].length - ranges[1].length;
        ranges[1].address = ranges[0].address + ranges[0].length;
        ranges[2].address = ranges[1].address + ranges[1].length;
        rangeCount = 3;
      } else if ((srcsize > ptoa(2)) && !((page_size - 1) & srcoffset)) {
        ranges[0].length = ptoa(1);
        ranges[1].length = ptoa(1);
        ranges[2].length = srcsize - ranges[0].length - ranges[1].length;
        ranges[0].address = (uintptr_t)data[0] + srcoffset + ptoa(1);
        ranges[1].address = (uintptr_t)data[0] + srcoffset;
        ranges[2].address = ranges[0].address + ranges[0].length;
        rangeCount = 3;
      }

      md = IOMemoryDescriptor_withAddressRanges(&ranges[0], rangeCount, kIODirectionInOut, kernel_task);
      assert_non_null(md);

      if (kIOReturnSuccess == kr) {
        for (mapoffset = 0; mapoffset < srcsize; mapoffset = ((mapoffset << 1) + 0xf00)) {
          for (size = 4; size < (srcsize - mapoffset - 1); size = ((size << 2) + 0x200)) {
            IOMemoryMap *map;
            mach_vm_address_t addr = 0;

            map = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapGuardedSmall,
                                                         mapoffset, size);
            if (map) {
              addr = IOMemoryMap_getAddress(map);
              maps++;
            } else {
              kr = kIOReturnError;
              fail_msg("map [0x%lx @ 0x%lx] of ranges [0x%llx, 0x%llx] [0x%llx, 0x%llx] [0x%llx, 0x%llx]: %s",
                       (long)size, (long)mapoffset, (long long)(ranges[0].address - (uintptr_t)data[0]),
                       (long long)ranges[0].length, (long long)(ranges[1].address - (uintptr_t)data[0]),
                       (long long)ranges[1].length, (long long)(ranges[2].address - (uintptr_t)data[0]),
                       (long long)ranges[2].length, dkt_failure_text());
            }
            if (kIOReturnSuccess != kr) break;
            kr = IOMemoryDescriptor_prepare(md, kIODirectionNone);
            if (kIOReturnSuccess != kr) fail_msg("prepare() fail 0x%x: %s", kr, dkt_failure_text());
            /* the words through the physical pages: XNU reads each with readBytes; one readBytes of
             * the whole range reads the same bytes through the same path */
            size_t words_n = size / sizeof(uint32_t);
            if (words_n && sizeof(uint32_t) * words_n != IOMemoryDescriptor_readBytes(md, mapoffset, words,
                                                                                       sizeof(uint32_t) * words_n))
              memset(words, 0, sizeof(uint32_t) * words_n);
            for (idx = 0; idx < size; idx += sizeof(uint32_t)) {
              offidx = (uint32_t)(idx + mapoffset + srcoffset);
              if ((srcsize <= ptoa(5)) && (srcsize > ptoa(2)) && !((page_size - 1) & srcoffset)) {
                if (offidx < ptoa(2)) offidx ^= ptoa(1);
              }
              offidx /= sizeof(uint32_t);

              if (offidx != ((uint32_t *)(uintptr_t)addr)[idx / sizeof(uint32_t)]) {
                fail_msg("vm mismatch md %p map %p, @ 0x%x, 0x%lx, 0x%lx,", (void *)md, (void *)map, idx,
                         (long)srcoffset, (long)mapoffset);
              } else if (idx + sizeof(uint32_t) <= sizeof(uint32_t) * words_n) {
                if (offidx != words[idx / sizeof(uint32_t)])
                  fail_msg("phys mismatch md %p map %p, @ 0x%x, 0x%lx, 0x%lx,", (void *)md, (void *)map, idx,
                           (long)srcoffset, (long)mapoffset);
                checked++;
              }
            }
            IOMemoryDescriptor_complete(md, kIODirectionNone);
            OSObject_release(map);
          }
          if (kIOReturnSuccess != kr) break;
        }
      }
      OSObject_release(md);
      if (kIOReturnSuccess != kr) break;
    }
    if (kIOReturnSuccess != kr) break;
  }
  free(words);
  assert_int_equal(kr, kIOReturnSuccess);
  print_message("%lu mappings, %lu words compared through the view and through the physical pages\n", maps, checked);
  free_aligned(data[0], bsize);
}

/* ---- the user-client port-leak test: IOServiceOpen, IOConnectMapMemory(kIOMapAnywhere |
 * kIOMapDefaultCache | kIOMapReadOnly), IOConnectUnmapMemory, IOServiceClose, again and again; the
 * port names of the task (descriptors here) must not grow ------------------------------------------------ */
static IOBufferMemoryDescriptor *g_shared_memory;

/* TestIOConnectMapMemoryPortLeak45265408UserClient::clientMemoryForType */
static IOReturn clientMemoryForType(void *ctx, task_t client, uint32_t type, IOOptionBits *flags,
                                    IOMemoryDescriptor **memory)
{
  (void)ctx; (void)client; (void)type; (void)flags;
  *memory = MD(g_shared_memory);
  OSObject_retain(g_shared_memory);
  return kIOReturnSuccess;
}

static void testIOConnectMapMemoryPortLeak45265408(void **state)
{
  (void)state;
  /* the user client's start(): IOBufferMemoryDescriptor::withOptions(kIOMemoryKernelUserShared, PAGE_SIZE) */
  g_shared_memory = IOBufferMemoryDescriptor_withOptions(kIOMemoryKernelUserShared, page_size, 1);
  assert_non_null(g_shared_memory);
  dk_server_policy policy = { .memory_for_type = clientMemoryForType };
  dk_server *service = NULL;
  assert_int_equal(dk_server_create(sock_path(), &policy, &service), kIOReturnSuccess);
  int lastPortNameCount = 0, portNameCount = 0;
  size_t consecutive = 0;
  /* XNU: 200000 iterations, counting every 10000; here 20000, counting every 1000 */
  for (size_t i = 0; i < 20000; i++) {
    dk_client *connect = NULL;
    mach_vm_address_t address = 0;
    mach_vm_size_t size = 0;
    IOReturn kr = dk_client_connect(sock_path(), NULL, &connect);
    if (kr != kIOReturnSuccess) fail_msg("open service: %s", dkt_failure_text());
    task_t task = NULL;
    assert_int_equal(dk_server_accept(service, 5000, &task), kIOReturnSuccess);
    kr = dk_client_map_memory(connect, 0, kIOMapAnywhere | kIOMapDefaultCache | kIOMapReadOnly, &address, &size);
    if (kr != kIOReturnSuccess) fail_msg("map memory: %s: %s", dk_ioreturn_name(kr), dkt_failure_text());
    assert_int_equal(size, page_size);
    kr = dk_client_unmap_memory(connect, address);
    if (kr != kIOReturnSuccess) fail_msg("unmap memory: %s", dkt_failure_text());
    dk_client_close(connect);
    dk_task_release(task);

    if ((i % 1000) == 0) {
      portNameCount = dkt_fd_count();
      if (lastPortNameCount != 0) {
        if (portNameCount - lastPortNameCount > 100) {
          consecutive += 1;
          if (consecutive > 10) fail_msg("Detected port leak %d -> %d", lastPortNameCount, portNameCount);
        }
      }
      lastPortNameCount = portNameCount;
    }
  }
  print_message("20000 open/map/unmap/close rounds; descriptors %d at the last count\n", portNameCount);
  dk_server_destroy(service);
  OSSafeReleaseNULL(g_shared_memory);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(IODMACommandForceDoubleBufferTest),
    cmocka_unit_test(AllocationNameTest),
    cmocka_unit_test(IOMemoryMapCopyOnWriteTest),
    cmocka_unit_test(IOMultMemoryDescriptorTest),
    cmocka_unit_test(IOBMDOverflowTest),
    cmocka_unit_test(IOBMDSetLengthMapTest),
    cmocka_unit_test(ZeroLengthTest),
    cmocka_unit_test(IODirectionPrepareNoZeroFillTest),
    cmocka_unit_test(BadFixedAllocTest),
    cmocka_unit_test(IOMemoryRemoteTest),
    cmocka_unit_test(IOMemoryPrefaultTest),
    cmocka_unit_test(IOGuardPageMDTest),
    cmocka_unit_test(IOMDContextTest),
    cmocka_unit_test(IOMemoryDescriptorTest_ranges),
    cmocka_unit_test(testIOConnectMapMemoryPortLeak45265408),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
