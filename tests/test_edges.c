/* tests/test_edges.c: argument checks and edge paths of the public calls that other suites
 * leave out: NULL handles for IODMACommand (IOKit and DriverKit forms), the share server and
 * client, and IOMapper; PerformOperation and readBytes/writeBytes at their limits; the device
 * registry (a mapper registered for a PCI address, a malformed address refused); dk_service_open
 * on a function with no driver, on one bound to vfio-pci whose group cannot be opened (the
 * mapper's code and reason), and with no memory for the object. Each gives the documented
 * IOReturn and dk_last_failure() names the constraint; nothing is left behind. Needs no
 * privilege (the vfio-pci binding is what src/prim's readlink says). */
#include "dk_test.h"
#include "iokit/internal.h"
#include "mapper/mapper.h"
#include "mapper/mapper_impl.h"
#include "prim/prim.h"

#include <dirent.h>
#include <dmakit/dmakit.h>
#include <dmakit/DriverKit.h>
#include <dmakit/share.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

/* Internal calls record a failure without starting a new record: clear it first. */
#define FRESH(call) (dk_clear_failure(), (call))

static void assert_code(IOReturn rc, IOReturn want, dk_constraint_kind k)
{
  if (rc != want) fail_msg("got %s, expected %s: %s", dk_ioreturn_name(rc), dk_ioreturn_name(want), dkt_failure_text());
  if (k != DK_CONSTRAINT_NONE && dk_last_failure()->constraint != k) fail_msg("constraint: %s", dkt_failure_text());
}

static void null_handles(void **state)
{
  (void)state;
  uint64_t off, len;
  IOMemoryDescriptor *md;
  assert_code(IODMACommand_CompleteDMA(NULL, 0), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  assert_code(IODMACommand_GetPreparation(NULL, &off, &len, &md), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  assert_code(IODMACommand_PerformOperation(NULL, kIODMACommandPerformOperationOptionZero, 0, 1, 0, NULL),
              kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  UInt64 o64, l64;
  assert_code(IODMACommand_getPreparedOffsetAndLength(NULL, &o64, &l64), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  UInt32 n = 1;
  UInt64 at = 0;
  IODMACommandSegment64 seg;
  assert_code(IODMACommand_genIOVMSegmentsWithFunction(NULL, kIODMACommandOutputHost64, &at, &seg, &n),
              kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  char byte;
  assert_int_equal(IODMACommand_readBytes(NULL, 0, &byte, 1), 0);
  assert_int_equal(IODMACommand_getAlignment(NULL), 0);

  dk_client_mapping m;
  assert_code(dk_client_unmap_memory(NULL, 0x1000), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(dk_client_next_mapping(NULL, 0, &m), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_false(dk_client_find_mapping(NULL, 0x1000, &m));
  assert_false(dk_client_is_connected(NULL));
  dk_client_close(NULL);
  dk_server_stats st = { .size = sizeof st };
  assert_code(dk_server_get_stats(NULL, &st), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  task_t t = (task_t)1;
  assert_code(dk_server_accept(NULL, 0, &t), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_null(t);
  assert_int_equal(dk_server_client_count(NULL), 0);
  dk_server_destroy(NULL);
  dk_client *c = (dk_client *)1;
  assert_code(dk_client_connect(NULL, NULL, &c), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  assert_null(c);
  dk_server *s = (dk_server *)1;
  assert_code(dk_server_create(NULL, NULL, &s), kIOReturnBadArgument, DK_CONSTRAINT_NONE);

  dk_mapper_info mi;
  assert_code(dk_mapper_get_info(NULL, &mi), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(dk_mapper_vfio_container_fd(NULL), -1);
  assert_int_equal(dk_mapper_vfio_device_fd(NULL), -1);
  assert_int_equal(dk_mapper_close(NULL, NULL, 0), 0);
}

/* A server's stats with a size that holds less than the header is refused; an older, smaller
 * struct gets the fields it has. */
static void server_stats_sizes(void **state)
{
  (void)state;
  char dir[64] = "/tmp/dk-edges-XXXXXX", path[108];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/sock", dir);
  dk_server *s = NULL;
  assert_code(dk_server_create(path, NULL, &s), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  dk_server_stats st;
  memset(&st, 0, sizeof st);
  st.size = 4;
  assert_code(dk_server_get_stats(s, &st), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(dk_server_get_stats(s, NULL), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  st.size = sizeof st;
  assert_code(dk_server_get_stats(s, &st), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_int_equal(st.version, 1);
  assert_int_equal(st.admitted, 0);
  assert_code(dk_server_accept(s, 0, NULL), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  task_t t = NULL;
  assert_code(dk_server_accept(s, 10, &t), kIOReturnTimeout, DK_CONSTRAINT_NONE);
  dk_server_destroy(s);
  rmdir(dir);
}

/* PerformOperation and readBytes/writeBytes at their limits, on a prepared command. */
static void command_limits(void **state)
{
  (void)state;
  dkt_require_physical();    /* PrepareForDMA hands out physical addresses (no mapper here) */
  IOBufferMemoryDescriptor *b = NULL, *data = NULL;
  assert_code(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 16384, 0, &b), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_code(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 4096, 0, &data), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b), 0x11, 16384);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(data), 0x22, 4096);
  IODMACommandSpecification spec;
  memset(&spec, 0, sizeof spec);
  spec.maxAddressBits = 64;
  IODMACommand *c = NULL;
  assert_code(IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, &spec, &c), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  /* not prepared yet */
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionZero, 0, 1, 0, NULL),
              kIOReturnNotReady, DK_CONSTRAINT_STATE);
  uint64_t flags = 0;
  uint32_t nseg = 4;
  IOAddressSegment segs[4];
  assert_code(IODMACommand_PrepareForDMA(c, 0, MD(b), 0, 16384, &flags, &nseg, segs), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  /* more than the data holds */
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionWrite, 0, 8192, 0, MD(data)),
              kIOReturnBadArgument, DK_CONSTRAINT_RANGE);
  assert_true(dkt_text_has(dk_last_failure()->text, "more than the data's"));
  /* nothing to move: success, nothing moved */
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionRead, 0, 0, 0, MD(data)),
              kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(data), 4096, 0x22));
  /* the data's part past its end */
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionWrite, 0, 4096, 1, MD(data)),
              kIOReturnUnderrun, DK_CONSTRAINT_RANGE);
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionRead, 14000, 4096, 0, MD(data)),
              kIOReturnUnderrun, DK_CONSTRAINT_RANGE);
  /* a Write that fits moves the bytes */
  assert_code(IODMACommand_PerformOperation(c, kIODMACommandPerformOperationOptionWrite, 4096, 4096, 0, MD(data)),
              kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_true(dkt_all_bytes((uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(b) + 4096, 4096, 0x22));
  assert_true(dkt_all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), 4096, 0x11));

  /* the IOKit form of the same command: bytes NULL, nothing asked, past the end */
  dk_clear_failure();
  assert_int_equal(IODMACommand_readBytes(c, 0, NULL, 16), 0);
  assert_code(dk_last_failure()->code, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(IODMACommand_writeBytes(c, 0, NULL, 0), 0);
  assert_int_equal(IODMACommand_readBytes(c, 16384, segs, 16), 0);
  assert_code(dk_last_failure()->code, kIOReturnOverrun, DK_CONSTRAINT_RANGE);
  uint8_t tail[32];
  assert_int_equal(IODMACommand_readBytes(c, 16384 - 8, tail, sizeof tail), 8);   /* clamped to the end */
  assert_true(dkt_all_bytes(tail, 8, 0x11));

  assert_code(IODMACommand_CompleteDMA(c, 0), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_int_equal(IODMACommand_readBytes(c, 0, tail, 8), 0);
  assert_code(dk_last_failure()->code, kIOReturnNotReady, DK_CONSTRAINT_STATE);
  OSObject_release(c);
  OSObject_release(data);
  OSObject_release(b);
}

/* The registry: a mapper registered for a PCI address is the device's (and holds a reference
 * while registered); a malformed address is refused. */
static void registry(void **state)
{
  (void)state;
  const uint64_t ranges[1][2] = { { 1ull << 32, 1ull << 36 } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 4096);
  assert_non_null(m);
  assert_int_equal(dk__mapper_refs(m), 1);
  assert_int_equal(dk__mapper_refs(NULL), 0);
  assert_code(FRESH(dk__mapper_register_device(m, "0000:zz:01.0")), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(FRESH(dk__mapper_register_device(m, "0000:00:01.0/../x")), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(FRESH(dk__mapper_register_device(NULL, "0000:00:01.0")), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(FRESH(dk__mapper_register_device(m, NULL)), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_null(dk__mapper_copy_for_device("0000:7f:1f.7"));
  assert_code(FRESH(dk__mapper_register_device(m, "0000:7f:1f.7")), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  IOMapper *got = dk__mapper_copy_for_device("0000:7f:1f.7");
  assert_ptr_equal(got, m);
  assert_true(dk__mapper_refs(m) >= 2);
  dk__mapper_release(got);
  assert_null(dk__mapper_copy_for_device("0000:7f:1f.6"));
  char report[256];
  assert_int_equal(dk_mapper_close(m, report, sizeof report), 0);
  assert_string_equal(report, "");
}

/* dk_service_open: an address with no function, a function with no driver (no mapper), one
 * bound to vfio-pci whose group cannot be opened, and no memory for the object. */
static const char *g_driver;
static char g_function[32];
static ssize_t fake_readlink(const char *path, char *buf, size_t cap)
{
  char want[96];
  snprintf(want, sizeof want, "/sys/bus/pci/devices/%s/driver", g_function);
  if (g_driver && !strcmp(path, want)) {
    if (!g_driver[0]) {
      errno = ENOENT;
      return -1;
    }
    int n = snprintf(buf, cap, "../../../bus/pci/drivers/%s", g_driver);
    return n;
  }
  return dk__prim_default.readlink(path, buf, cap);
}

static void service_open(void **state)
{
  (void)state;
  IOService *s = (IOService *)1;
  assert_code(dk_service_open("0000:00:00.0x", &s), kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_null(s);
  assert_code(dk_service_open("ffff:ff:1f.7", &s), kIOReturnNoDevice, DK_CONSTRAINT_ARGUMENT);
  /* a real function of this machine */
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) DKT_SKIP("no /sys/bus/pci/devices");
  struct dirent *e;
  g_function[0] = '\0';
  while ((e = readdir(d)))
    if (e->d_name[0] != '.' && strlen(e->d_name) < sizeof g_function) {
      memcpy(g_function, e->d_name, strlen(e->d_name) + 1);
      break;
    }
  closedir(d);
  if (!g_function[0]) DKT_SKIP("no PCI function on this machine");
  dk__prim.readlink = fake_readlink;
  dk__thread_caches_flush();
  dk_prim_counters before = dk__prim_counters();
  long objects = dk__objects_live();
  /* no driver: a service with no mapper */
  g_driver = "";
  assert_code(dk_service_open(g_function, &s), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_string_equal(dk_service_get_address(s), g_function);
  IOMapper *m = IOMapper_copyMapperForDevice(s);
  assert_null(m);
  OSObject_release(s);
  /* bound to vfio-pci, but its group cannot be opened here: the mapper's refusal */
  g_driver = "vfio-pci";
  IOReturn rc = dk_service_open(g_function, &s);
  print_message("  vfio-pci without its group: %s\n", dkt_failure_text());
  assert_int_not_equal(rc, kIOReturnSuccess);
  assert_null(s);
  assert_int_equal(dk_last_failure()->code, rc);
  assert_true(rc == kIOReturnNoDevice || rc == kIOReturnNotPermitted || rc == kIOReturnUnsupported);
  /* no memory for the service object */
  g_driver = "some-driver";
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_CALLOC) | DK_PRIM_BIT(DK_PRIM_MALLOC), ENOMEM);
  rc = dk_service_open(g_function, &s);
  dk__fault_disarm();
  assert_code(rc, kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE);
  assert_null(s);
  dk__prim.readlink = dk__prim_default.readlink;
  g_driver = NULL;
  dk__thread_caches_flush();
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
  assert_int_equal(dk__objects_live(), objects);
}

/* IOMemoryDescriptor's calls on NULL (XNU would crash; here a clear refusal or nothing), and
 * readBytes into NULL; setPurgeable without an old-state pointer. */
static void descriptor_null_handles(void **state)
{
  (void)state;
  assert_int_equal(IOMemoryDescriptor_getDirection(NULL), kIODirectionNone);
  IOMemoryDescriptor_setDirection(NULL, kIODirectionIn);
  assert_int_equal(IOMemoryDescriptor_getTag(NULL), 0);
  IOMemoryDescriptor_setTag(NULL, 5);
  assert_int_equal(IOMemoryDescriptor_getFlags(NULL), 0);
  IOByteCount len = 7;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(NULL, 0, &len, 0), 0);
  assert_code(IOMemoryDescriptor_prepare(NULL, kIODirectionNone), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  assert_code(IOMemoryDescriptor_complete(NULL, kIODirectionNone), kIOReturnBadArgument, DK_CONSTRAINT_NONE);
  char buf[8];
  assert_int_equal(IOMemoryDescriptor_readBytes(NULL, 0, buf, sizeof buf), 0);
  assert_int_equal(IOMemoryDescriptor_writeBytes(NULL, 0, buf, sizeof buf), 0);
  assert_code(IOMemoryDescriptor_performOperation(NULL, kIOMemoryIncoherentIOFlush, 0, 8), kIOReturnBadArgument,
              DK_CONSTRAINT_NONE);
  IOOptionBits old;
  assert_code(IOMemoryDescriptor_setPurgeable(NULL, kIOMemoryPurgeableNonVolatile, &old), kIOReturnBadArgument,
              DK_CONSTRAINT_NONE);

  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPageable | kIOMemoryPurgeable, 8192, 1);
  assert_non_null(b);
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionOut);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionOut);
  IOMemoryDescriptor_setTag(MD(b), 0x77);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0x77);
  assert_code(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  dk_clear_failure();
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, NULL, 8), 0);
  assert_code(dk_last_failure()->code, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  assert_code(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, NULL), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_code(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableNonVolatile, &old), kIOReturnSuccess,
              DK_CONSTRAINT_NONE);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  assert_code(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  OSObject_release(b);
}

/* src/prim: an interrupted madvise or fallocate is retried (DK_EINTR_RETRIES times at most, then
 * the EINTR is the caller's); persistent metadata fails like malloc, and a size that overflows
 * with its alignment is ENOMEM. */
static int g_eintr_left;
static int eintr_madvise(void *addr, size_t len, int advice)
{
  if (g_eintr_left-- > 0) {
    errno = EINTR;
    return -1;
  }
  return dk__prim_default.madvise(addr, len, advice);
}
static int eintr_fallocate(int fd, int mode, off_t off, off_t len)
{
  if (g_eintr_left-- > 0) {
    errno = EINTR;
    return -1;
  }
  return dk__prim_default.fallocate(fd, mode, off, len);
}

static void prim_retries_interrupted_calls(void **state)
{
  (void)state;
  void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  int fd = memfd_create("dk-test-edges", MFD_CLOEXEC);
  assert_true(fd >= 0);
  dk__prim.madvise = eintr_madvise;
  dk__prim.fallocate = eintr_fallocate;
  g_eintr_left = 3;
  assert_int_equal(dk__madvise(p, 8192, MADV_DONTNEED), 0);
  g_eintr_left = 3;
  assert_int_equal(dk__fallocate(fd, 0, 0, 8192), 0);
  g_eintr_left = 1000;
  errno = 0;
  assert_int_equal(dk__madvise(p, 8192, MADV_DONTNEED), -1);
  assert_int_equal(errno, EINTR);
  assert_int_equal(g_eintr_left, 1000 - DK_EINTR_RETRIES);
  g_eintr_left = 1000;
  assert_int_equal(dk__fallocate(fd, 0, 0, 16384), -1);
  assert_int_equal(errno, EINTR);
  dk__prim.madvise = dk__prim_default.madvise;
  dk__prim.fallocate = dk__prim_default.fallocate;
  close(fd);
  munmap(p, 8192);

  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_MALLOC), ENOMEM);
  assert_null(dk__alloc_persistent(64, 128));
  assert_true(dk__fault_fired());
  dk__fault_disarm();
  errno = 0;
  assert_null(dk__alloc_persistent(64, SIZE_MAX - 8));
  assert_int_equal(errno, ENOMEM);
}

/* A descriptor's prepare count at its limit (2^32 - 1; counting there by calls would take
 * minutes, so the count is set): one prepare more is refused with kIOReturnNoResources and
 * the state constraint, the count is left as it was, and the buffer is whole after. */
static void prepare_count_limit(void **state)
{
  (void)state;
  long objects = dk__objects_live();
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, 1);
  if (!b) fail_msg("a wired buffer: %s", dkt_failure_text());
  IOMemoryDescriptor *md = MD(b);
  assert_int_equal(atomic_load(&md->wire_count), 1);             /* auto-prepared */
  atomic_store(&md->wire_count, UINT32_MAX);
  assert_code(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnNoResources, DK_CONSTRAINT_STATE);
  assert_non_null(strstr(dk_last_failure()->text, "overflow"));
  assert_int_equal(atomic_load(&md->wire_count), UINT32_MAX);
  atomic_store(&md->wire_count, 2);
  assert_code(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_code(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_code(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess, DK_CONSTRAINT_NONE);
  assert_int_equal(atomic_load(&md->wire_count), 1);
  assert_int_equal(IOMemoryDescriptor_writeBytes(md, 0, "x", 1), 1);
  OSObject_release(b);
  dk__objects_cache_flush();
  assert_int_equal(dk__objects_live(), objects);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(null_handles),
    cmocka_unit_test(server_stats_sizes),
    cmocka_unit_test(command_limits),
    cmocka_unit_test(registry),
    cmocka_unit_test(service_open),
    cmocka_unit_test(descriptor_null_handles),
    cmocka_unit_test(prim_retries_interrupted_calls),
    cmocka_unit_test(prepare_count_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
