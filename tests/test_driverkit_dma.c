/* tests/test_driverkit_dma.c: DriverKit's IODMACommand, IOService and IOMapper_copyMapperForDevice
 * against Apple's IODMACommand.iig and XNU's IODMACommand::*_Impl (IOUserServer.cpp).
 *
 * The constants; every argument error with Apple's return code; the preparation's lifecycle
 * (PrepareForDMA, GetPreparation, PerformOperation, CompleteDMA; Busy, NotReady) with the
 * descriptor's prepare count back where it was; the segments with a (software) mapper: one
 * IOVA segment under maxAddressBits whatever the RAM, from the system mapper or the device's
 * own (a mapper recorded for a PCI address, found by dk_service_open); without a mapper (root):
 * a 128 KiB IOBufferMemoryDescriptor_Create buffer prepared with room for one segment comes
 * back as one segment, checked against this test's own pagemap reading: its 4K pages are
 * double-buffered into contiguous memory, with the data carried both ways, while contiguous
 * pool memory is taken as it is; room for many segments gives the physical runs.
 * Fault injection for the same calls is in test_faults.c. */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iokit/dmacommand.h"
#include "mapper/mapper_impl.h"
#include "prim/prim.h"

#define KIB 1024ull
#define SOFT_LO 0x100000ull
#define SOFT_HI ((1ull << 40) - 1)



static IOMemoryDescriptor *MD(IOBufferMemoryDescriptor *b) { return (IOMemoryDescriptor *)b; }

static IOMapper *soft_mapper(void)
{
  const uint64_t ranges[1][2] = { { SOFT_LO, SOFT_HI } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 65535);
  assert_non_null(m);
  return m;
}

static IOBufferMemoryDescriptor *dk_buffer(uint64_t options, uint64_t capacity)
{
  IOBufferMemoryDescriptor *b = NULL;
  DKT_OK(IOBufferMemoryDescriptor_Create(options, capacity, 0, &b));
  assert_non_null(b);
  return b;
}

static IODMACommand *dk_command(IOService *device, uint64_t bits)
{
  IODMACommandSpecification spec;
  memset(&spec, 0xA5, sizeof spec);     /* _resv left as garbage, as drivers do */
  spec.options = kIODMACommandSpecificationNoOptions;
  spec.maxAddressBits = bits;
  IODMACommand *c = NULL;
  DKT_OK(IODMACommand_Create(device, kIODMACommandCreateNoOptions, &spec, &c));
  assert_non_null(c);
  return c;
}

static uint32_t wire_count(IOBufferMemoryDescriptor *b)
{
  dk_buffer_info bi;
  DKT_OK(dk_buffer_get_info(b, &bi));
  return bi.prepare_count;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131u + seed * 7u + (i >> 12));
}
static bool filled(const uint8_t *p, size_t n, unsigned seed)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(i * 131u + seed * 7u + (i >> 12))) return false;
  return true;
}

/* The first PCI function in sysfs (this machine's), or NULL. */
static const char *some_pci_function(void)
{
  static char name[64];
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) return NULL;
  struct dirent *e;
  const char *found = NULL;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.' && strlen(e->d_name) < sizeof name) {
      strcpy(name, e->d_name);
      found = name;
      break;
    }
  closedir(d);
  return found;
}

/* ---- constants and argument errors --------------------------------------------------------- */

static void constants(void **s)
{
  (void)s;
  assert_int_equal(kIODMACommandCreateNoOptions, 0);
  assert_int_equal(kIODMACommandPrepareForDMANoOptions, 0);
  assert_int_equal(kIODMACommandCompleteDMANoOptions, 0);
  assert_int_equal(kIODMACommandSpecificationNoOptions, 0);
  assert_int_equal(kIODMACommandPerformOperationOptionRead, 1);
  assert_int_equal(kIODMACommandPerformOperationOptionWrite, 2);
  assert_int_equal(kIODMACommandPerformOperationOptionZero, 4);
  assert_int_equal(sizeof(IODMACommandSpecification), 18 * 8);
  assert_int_equal(sizeof(IOAddressSegment), 16);
  assert_int_equal(IOVMPageSize, (uint64_t)sysconf(_SC_PAGESIZE));
}

static void create_arguments(void **s)
{
  (void)s;
  IODMACommandSpecification spec = { kIODMACommandSpecificationNoOptions, 64, { 0 } };
  IODMACommand *c = (IODMACommand *)(uintptr_t)1;
  DKT_RC(kIOReturnBadArgument, IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, &spec, NULL));
  DKT_RC(kIOReturnBadArgument, IODMACommand_Create(NULL, 1, &spec, &c));
  assert_null(c);
  assert_true(dkt_text_has(dk_last_failure()->text, "options"));
  DKT_RC(kIOReturnBadArgument, IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, NULL, &c));
  spec.maxAddressBits = 256;
  DKT_RC(kIOReturnBadArgument, IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, &spec, &c));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  /* a descriptor is no IOService */
  IOBufferMemoryDescriptor *b = dk_buffer(kIOMemoryDirectionInOut, 4096);
  spec.maxAddressBits = 64;
  DKT_RC(kIOReturnBadArgument, IODMACommand_Create((IOService *)(void *)b, kIODMACommandCreateNoOptions, &spec, &c));
  assert_true(dkt_text_has(dk_last_failure()->text, "IOService"));
  /* fewer bits than a page: withSpecification refuses, folded into NoMemory as DriverKit does */
  spec.maxAddressBits = 8;
  DKT_RC(kIOReturnNoMemory, IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, &spec, &c));
  assert_null(c);
  assert_string_equal(dk_last_failure()->function, "IODMACommand::Create");
  /* 0 and 64..255 are "no limit" */
  spec.maxAddressBits = 0;
  c = dk_command(NULL, 0);
  OSObject_release(c);
  c = dk_command(NULL, 200);
  OSObject_release(c);
  OSObject_release(b);
}

static void prepare_arguments(void **s)
{
  (void)s;
  IOMapper *m = soft_mapper();
  dk_mapper_set_system(m);
  IODMACommand *c = dk_command(NULL, 64);
  IOBufferMemoryDescriptor *b = dk_buffer(kIOMemoryDirectionInOut, 16 * KIB);
  uint32_t wired = wire_count(b);
  IOAddressSegment seg[4];
  uint64_t flags = 0;
  uint32_t n = 4;
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 1, MD(b), 0, 0, &flags, &n, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, NULL, 0, 0, &flags, &n, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, NULL, &n, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, NULL, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, &n, NULL));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA((IODMACommand *)(void *)b, 0, MD(b), 0, 0, &flags, &n, seg));
  n = 0;   /* the forum's 0xE00002C2: an uninitialised segment count */
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, &n, seg));
  assert_true(dkt_text_has(dk_last_failure()->text, "segmentsCount"));
  n = 4;
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 8 * KIB, 16 * KIB, &flags, &n, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PrepareForDMA(c, 0, MD(b), 4 * KIB, 0, &flags, &n, seg));
  assert_int_equal(n, 4);
  assert_int_equal(wire_count(b), wired);          /* nothing stayed prepared */
  assert_null(IODMACommand_getMemoryDescriptor(c));
  DKT_RC(kIOReturnNotReady, IODMACommand_CompleteDMA(c, kIODMACommandCompleteDMANoOptions));
  DKT_RC(kIOReturnBadArgument, IODMACommand_CompleteDMA(c, 1));
  uint64_t off = 7, len = 7;
  IOMemoryDescriptor *got = (IOMemoryDescriptor *)(uintptr_t)1;
  DKT_RC(kIOReturnNotReady, IODMACommand_GetPreparation(c, &off, &len, &got));
  assert_null(got);
  DKT_RC(kIOReturnNotReady, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionZero, 0, 16, 0, NULL));
  /* prepared: a second PrepareForDMA is Busy; a kernel-style prepare is no DriverKit one */
  DKT_OK(IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, &n, seg));
  uint32_t n2 = 4;
  DKT_RC(kIOReturnBusy, IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, &n2, seg));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PerformOperation(c, 3, 0, 16, 0, MD(b)));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionRead, 0, 16, 0, NULL));
  DKT_RC(kIOReturnBadArgument, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionZero, 0, 32 * KIB, 0, NULL));
  DKT_RC(kIOReturnUnderrun, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionZero, 12 * KIB, 8 * KIB, 0, NULL));
  DKT_OK(IODMACommand_CompleteDMA(c, 0));
  DKT_RC(kIOReturnNotReady, IODMACommand_CompleteDMA(c, 0));
  DKT_OK(IODMACommand_setMemoryDescriptor(c, MD(b), true));
  DKT_RC(kIOReturnNotReady, IODMACommand_CompleteDMA(c, 0));
  DKT_OK(IODMACommand_clearMemoryDescriptor(c, true));
  assert_int_equal(wire_count(b), wired);
  OSObject_release(c);
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* Memory that cannot be prepared, a copy that does not fit the data descriptor, and no memory
 * for PerformOperation's copy: the error, its reason, and nothing left prepared. */
static void prepare_and_copy_refusals(void **s)
{
  (void)s;
  IOMapper *m = soft_mapper();
  dk_mapper_set_system(m);
  IODMACommand *c = dk_command(NULL, 64);
  size_t ps = dk_capabilities()->page_size;
  void *gone = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(gone != MAP_FAILED);
  munmap(gone, ps);
  IOMemoryDescriptor *unmapped = IOMemoryDescriptor_withAddressRange((uintptr_t)gone, ps, kIODirectionInOut, kernel_task);
  assert_non_null(unmapped);
  IOAddressSegment seg[4];
  uint64_t flags = 0;
  uint32_t n = 4;
  DKT_RC(kIOReturnVMError, IODMACommand_PrepareForDMA(c, 0, unmapped, 0, 0, &flags, &n, seg));
  assert_string_equal(dk_last_failure()->function, "IODMACommand::PrepareForDMA");
  assert_true(dkt_text_has(dk_last_failure()->text, "not mapped"));
  assert_null(IODMACommand_getMemoryDescriptor(c));
  assert_int_equal(n, 4);
  OSObject_release(unmapped);

  IOBufferMemoryDescriptor *b = dk_buffer(kIOMemoryDirectionInOut, 16 * KIB);
  IOBufferMemoryDescriptor *data = dk_buffer(kIOMemoryDirectionInOut, 16 * KIB);
  uint32_t wired = wire_count(b);
  DKT_OK(IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 0, &flags, &n, seg));
  /* Read: the DMA side fits, the data descriptor has 4 KiB from offset 12 KiB */
  DKT_RC(kIOReturnUnderrun, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionRead, 0, 8 * KIB,
                                                          12 * KIB, MD(data)));
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RANGE);
  /* Read past the prepared range */
  DKT_RC(kIOReturnUnderrun, IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionRead, 12 * KIB,
                                                          8 * KIB, 0, MD(data)));
  /* no memory for the copy */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_MALLOC), 0);
  IOReturn rc = IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionZero, 0, 4 * KIB, 0, NULL);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  assert_true(fired);
  assert_int_equal(rc, kIOReturnNoMemory);
  assert_true(dkt_text_has(dk_last_failure()->text, "no memory for a copy"));
  DKT_OK(IODMACommand_CompleteDMA(c, 0));
  assert_int_equal(wire_count(b), wired);
  OSObject_release(c);
  OSObject_release(b);
  OSObject_release(data);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* ---- with a mapper ---------------------------------------------------------------------- */

/* Prepare all of `b` with room for one segment: one IOVA segment below 2^bits for the whole
 * buffer, the flags from its direction, GetPreparation agreeing; then complete. */
static void one_iova_segment(IODMACommand *c, IOBufferMemoryDescriptor *b, uint64_t bits, uint64_t want_flags)
{
  uint64_t len = IOMemoryDescriptor_getLength(MD(b));
  uint32_t wired = wire_count(b);
  int refs = OSObject_getRetainCount(b);
  IOAddressSegment seg[2] = { { 0, 0 }, { 0xdead, 0xbeef } };
  uint64_t flags = 0;
  uint32_t n = 1;
  DKT_OK(IODMACommand_PrepareForDMA(c, kIODMACommandPrepareForDMANoOptions, MD(b), 0, 0, &flags, &n, seg));
  assert_int_equal(n, 1);
  assert_int_equal(seg[0].length, len);
  assert_true(seg[0].address >= SOFT_LO && seg[0].address + len - 1 <= SOFT_HI);
  if (bits < 64) assert_true(seg[0].address + len - 1 < (1ull << bits));
  assert_int_equal(seg[1].address, 0xdead);          /* nothing written past the room given */
  assert_int_equal(flags, want_flags);
  assert_int_equal(wire_count(b), wired + 1);        /* PrepareForDMA prepared the descriptor */
  uint64_t off = 1, plen = 0;
  IOMemoryDescriptor *got = NULL;
  DKT_OK(IODMACommand_GetPreparation(c, &off, &plen, &got));
  assert_int_equal(off, 0);
  assert_int_equal(plen, len);
  assert_ptr_equal(got, MD(b));
  assert_int_equal(OSObject_getRetainCount(b), refs + 2);   /* the command's and ours */
  OSObject_release(got);
  DKT_OK(IODMACommand_GetPreparation(c, NULL, NULL, NULL));
  assert_false(dk_dmacommand_is_double_buffered(c));
  DKT_OK(IODMACommand_CompleteDMA(c, kIODMACommandCompleteDMANoOptions));
  assert_int_equal(wire_count(b), wired);
  assert_int_equal(OSObject_getRetainCount(b), refs);
}

/* A command for `device` and a DriverKit buffer of `size`: one IOVA segment. */
static void command_for(IOService *device, uint64_t bits, uint64_t size)
{
  IODMACommand *c = dk_command(device, bits);
  IOBufferMemoryDescriptor *b = dk_buffer(kIOMemoryDirectionInOut, size);
  one_iova_segment(c, b, bits, kIOMemoryDirectionInOut);
  OSObject_release(c);
  OSObject_release(b);
}

static void system_mapper_one_segment(void **s)
{
  (void)s;
  IOMapper *m = soft_mapper();
  /* buffers from before the mapper: their RAM anywhere, scattered 4K pages or the pool */
  IOBufferMemoryDescriptor *big = dk_buffer(kIOMemoryDirectionInOut, 128 * KIB);
  IOBufferMemoryDescriptor *out = dk_buffer(kIOMemoryDirectionOut, 20 * KIB);
  IOBufferMemoryDescriptor *in = dk_buffer(kIOMemoryDirectionIn, 4 * KIB);
  dk_mapper_set_system(m);
  IODMACommand *c32 = dk_command(NULL, 32), *c64 = dk_command(NULL, 64);
  one_iova_segment(c32, big, 32, kIOMemoryDirectionInOut);
  one_iova_segment(c64, big, 64, kIOMemoryDirectionInOut);
  one_iova_segment(c32, out, 32, kIOMemoryDirectionOut);
  one_iova_segment(c32, in, 32, kIOMemoryDirectionIn);
  /* a sub-range: its own IOVA range, and the data the CPU sees through the command */
  IOAddressSegment seg[32];
  uint64_t flags;
  uint32_t n = 32;
  uint8_t *bytes = IOBufferMemoryDescriptor_getBytesNoCopy(big);
  fill(bytes, 128 * KIB, 1);
  DKT_OK(IODMACommand_PrepareForDMA(c32, 0, MD(big), 3 * KIB, 70 * KIB, &flags, &n, seg));
  assert_int_equal(n, 1);
  assert_int_equal(seg[0].length, 70 * KIB);
  assert_int_equal(seg[0].address & 0xfff, (3 * KIB) & 0xfff);   /* the IOVA keeps the in-page offset */
  IOBufferMemoryDescriptor *data = dk_buffer(kIOMemoryDirectionInOut, 8 * KIB);
  DKT_OK(IODMACommand_PerformOperation(c32, kIODMACommandPerformOperationOptionRead, 100, 8 * KIB, 0, MD(data)));
  assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(data), bytes + 3 * KIB + 100, 8 * KIB);
  DKT_OK(IODMACommand_PerformOperation(c32, kIODMACommandPerformOperationOptionZero, 0, 1 * KIB, 0, NULL));
  assert_true(dkt_all_bytes(bytes + 3 * KIB, 1 * KIB, 0));
  fill(IOBufferMemoryDescriptor_getBytesNoCopy(data), 8 * KIB, 9);
  DKT_OK(IODMACommand_PerformOperation(c32, kIODMACommandPerformOperationOptionWrite, 60 * KIB, 8 * KIB, 0, MD(data)));
  assert_true(filled(bytes + 63 * KIB, 8 * KIB, 9));
  DKT_RC(kIOReturnUnderrun,
     IODMACommand_PerformOperation(c32, kIODMACommandPerformOperationOptionWrite, 64 * KIB, 8 * KIB, 0, MD(data)));
  DKT_OK(IODMACommand_CompleteDMA(c32, 0));
  OSObject_release(data);
  OSObject_release(c32);
  OSObject_release(c64);
  OSObject_release(big);
  OSObject_release(out);
  OSObject_release(in);
  dk_mapper_info mi;
  DKT_OK(dk_mapper_get_info(m, &mi));
  assert_int_equal(mi.mappings_live, 0);
  assert_int_equal(mi.double_unmaps, 0);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
}

/* The device's own mapper: recorded for a PCI address (as dk_mapper_open_vfio records its
 * own), found by dk_service_open, used by Create although it is not the system mapper. */
static void device_mapper(void **s)
{
  (void)s;
  const char *fn = some_pci_function();
  if (!fn) DKT_SKIP("no PCI function in /sys/bus/pci/devices");
  IOMapper *m = soft_mapper();
  DKT_OK(dk__mapper_register_device(m, fn));
  IOService *svc = NULL;
  DKT_OK(dk_service_open(fn, &svc));
  assert_string_equal(dk_service_get_address(svc), fn);
  assert_int_equal(dk__mapper_refs(m), 2);                    /* ours and the service's */
  IOMapper *copy = IOMapper_copyMapperForDevice(svc);
  assert_ptr_equal(copy, m);
  assert_int_equal(OSObject_getRetainCount(copy), 3);
  OSObject_retain(copy);
  assert_int_equal(dk__mapper_refs(m), 4);
  OSObject_release(copy);
  OSSafeReleaseNULL(copy);                                    /* IOKit code releases it as any object */
  assert_int_equal(dk__mapper_refs(m), 2);
  assert_null(dk_mapper_get_system());
  command_for(svc, 36, 128 * KIB);
  OSObject_release(svc);
  assert_int_equal(dk__mapper_refs(m), 1);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  /* gone with its last reference: a new service has no mapper */
  DKT_OK(dk_service_open(fn, &svc));
  assert_null(IOMapper_copyMapperForDevice(svc));
  OSObject_release(svc);
}

static void service_arguments(void **s)
{
  (void)s;
  IOService *svc = (IOService *)(uintptr_t)1;
  DKT_RC(kIOReturnBadArgument, dk_service_open("0000:00:04.0", NULL));
  DKT_RC(kIOReturnBadArgument, dk_service_open(NULL, &svc));
  assert_null(svc);
  DKT_RC(kIOReturnBadArgument, dk_service_open("../../etc", &svc));
  DKT_RC(kIOReturnBadArgument, dk_service_open("0:0", &svc));
  DKT_RC(kIOReturnNoDevice, dk_service_open("ffff:ff:1f.7", &svc));
  assert_null(svc);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_null(IOMapper_copyMapperForDevice(NULL));
  assert_null(dk_service_get_address(NULL));
  const char *fn = some_pci_function();
  if (!fn) DKT_SKIP("no PCI function in /sys/bus/pci/devices");
  /* a function with no mapper open for it and not on vfio-pci: no mapper, bus = physical */
  char path[128], link[256];
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver", fn);
  ssize_t l = readlink(path, link, sizeof link - 1);
  if (l > 0 && (link[l] = '\0', strstr(link, "vfio-pci"))) DKT_SKIP("%s is bound to vfio-pci", fn);
  DKT_OK(dk_service_open(fn, &svc));
  assert_int_equal(OSObject_getRetainCount(svc), 1);
  assert_null(IOMapper_copyMapperForDevice(svc));
  /* Create for it takes the system mapper, as XNU's IODMACommand does */
  IOMapper *m = soft_mapper();
  dk_mapper_set_system(m);
  command_for(svc, 32, 8 * KIB);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);
  OSObject_release(svc);
}

/* ---- without a mapper: physical segments (root) ---------------------------------------------- */

static void check_one_physical_segment(IOBufferMemoryDescriptor *b, const IOAddressSegment *seg, bool bounced,
                                       IODMACommand *c)
{
  uint64_t len = IOMemoryDescriptor_getLength(MD(b));
  assert_int_equal(seg->length, len);
  const void *va = bounced ? (const void *)dk__dmacommand_bounce_bytes(c, NULL) : IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(va);
  const char *why = dkt_check_physical_promise(va, len, 1, 0, true);
  if (why) fail_msg("the one segment's memory: %s", why);
  uint64_t pfn;
  assert_int_equal(dkt_read_frames(va, 1, &pfn), 1);
  assert_int_equal(seg->address, pfn * dkt_page_size() + ((uintptr_t)va & (dkt_page_size() - 1)));
}

/* DriverKit's promise: 128 KiB from IOBufferMemoryDescriptor_Create, room for one segment, one
 * segment. Contiguous pool memory as it is; scattered 4K pages through a contiguous double
 * buffer, the data carried out at prepare and back at complete. */
static void one_physical_segment(void **s)
{
  (void)s;
  dkt_require_physical();
  if (!dkt_pool_usable()) DKT_SKIP("contiguous memory needs the hugepage pool (root and hugetlb)");
  IODMACommand *c = dk_command(NULL, 64);
  IOAddressSegment seg[32];
  uint64_t flags;
  uint32_t n;
  long pool = dk_option_get(DK_OPTION_POOL);

  dk_option_set(DK_OPTION_POOL, 1);
  /* DriverKit's own buffers are shareable (kIOMemoryKernelUserShared: a memfd of their own, 4K
   * pages); a kernel-style contiguous pool buffer is taken as it is */
  IOBufferMemoryDescriptor *contig = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIODirectionInOut | kIOMemoryPhysicallyContiguous, 128 * KIB, dkt_page_size());
  assert_non_null(contig);
  n = 1;
  DKT_OK(IODMACommand_PrepareForDMA(c, 0, MD(contig), 0, 0, &flags, &n, seg));
  assert_int_equal(n, 1);
  assert_false(dk_dmacommand_is_double_buffered(c));
  check_one_physical_segment(contig, &seg[0], false, c);
  DKT_OK(IODMACommand_CompleteDMA(c, 0));

  IOBufferMemoryDescriptor *scat = dk_buffer(kIOMemoryDirectionInOut, 128 * KIB);
  uint8_t *bytes = IOBufferMemoryDescriptor_getBytesNoCopy(scat);
  fill(bytes, 128 * KIB, 3);
  /* room for 32: the physical runs as they are, matching pagemap */
  n = 32;
  DKT_OK(IODMACommand_PrepareForDMA(c, 0, MD(scat), 0, 0, &flags, &n, seg));
  assert_false(dk_dmacommand_is_double_buffered(c));
  uint64_t at = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t pfn;
    assert_int_equal(dkt_read_frames(bytes + at, 1, &pfn), 1);
    assert_int_equal(seg[i].address, pfn * dkt_page_size());
    at += seg[i].length;
  }
  assert_int_equal(at, 128 * KIB);
  print_message("128 KiB of 4K pages: %u physical segment(s)\n", n);
  DKT_OK(IODMACommand_CompleteDMA(c, 0));
  /* room for one: double-buffered into one contiguous segment */
  n = 1;
  DKT_OK(IODMACommand_PrepareForDMA(c, 0, MD(scat), 0, 0, &flags, &n, seg));
  assert_int_equal(n, 1);
  uint64_t blen = 0;
  uint8_t *bounce = dk__dmacommand_bounce_bytes(c, &blen);
  if (bounce) {
    check_one_physical_segment(scat, &seg[0], true, c);
    assert_int_equal(blen, 128 * KIB);
    assert_true(filled(bounce, 128 * KIB, 3));        /* carried out at prepare */
    fill(bounce, 128 * KIB, 4);                       /* the device writes */
    DKT_OK(IODMACommand_CompleteDMA(c, 0));
    assert_true(filled(bytes, 128 * KIB, 4));         /* carried back at complete */
  } else {
    /* the kernel happened to give 32 adjacent frames */
    check_one_physical_segment(scat, &seg[0], false, c);
    DKT_OK(IODMACommand_CompleteDMA(c, 0));
  }
  dk_option_set(DK_OPTION_POOL, pool);
  OSObject_release(scat);
  OSObject_release(contig);
  OSObject_release(c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(constants),
    cmocka_unit_test(create_arguments),
    cmocka_unit_test(prepare_arguments),
    cmocka_unit_test(prepare_and_copy_refusals),
    cmocka_unit_test(system_mapper_one_segment),
    cmocka_unit_test(device_mapper),
    cmocka_unit_test(service_arguments),
    cmocka_unit_test(one_physical_segment),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
