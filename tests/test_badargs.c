/* tests/test_badargs.c: bad input to the IOMemoryMap accessors, IODMACommand and the DriverKit calls gets
 * the neutral value the signature allows (0, NULL) or a clear IOReturn with a reason, never a
 * crash: NULL, a descriptor where a map is expected (a type-checked cast), an unknown cache or
 * guard selector, options a DriverKit Create does not take; and DriverKit's option translation
 * (cache selectors, guards by default, read-only, a fixed address) reaches the kernel-style
 * map as IOKit does it. Needs no privilege. */
#include "dk_test.h"

#include <dmakit/dmakit.h>
#include <dmakit/DriverKit.h>
#include <string.h>
#include "iokit/dmacommand.h"
#include "iokit/internal.h"
#include "prim/prim.h"

static void expect_failure(IOReturn code, dk_constraint_kind kind, const char *what)
{
  const dk_failure *f = dk_last_failure();
  if (f->code != code || f->constraint != kind || !f->text[0])
    fail_msg("%s: %s (%s) \"%s\", expected %s (%s)", what, dk_ioreturn_name(f->code), dk_constraint_name(f->constraint),
             f->text, dk_ioreturn_name(code), dk_constraint_name(kind));
}

static void map_accessors_refuse_non_maps(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 4096, 1);
  assert_non_null(b);
  IOMemoryMap *not_maps[] = { NULL, (IOMemoryMap *)b };   /* a descriptor is no map */
  for (size_t i = 0; i < 2; i++) {
    IOMemoryMap *m = not_maps[i];
    assert_int_equal(IOMemoryMap_getAddress(m), 0);
    assert_int_equal(IOMemoryMap_getVirtualAddress(m), 0);
    assert_int_equal(IOMemoryMap_getSize(m), 0);
    assert_int_equal(IOMemoryMap_getLength(m), 0);
    assert_int_equal(IOMemoryMap_getMapOptions(m), 0);
    assert_null(IOMemoryMap_getAddressTask(m));
    assert_null(IOMemoryMap_getMemoryDescriptor(m));
    assert_int_equal(IOMemoryMap_GetAddress(m), 0);
    assert_int_equal(IOMemoryMap_GetLength(m), 0);
    assert_int_equal(IOMemoryMap_GetOffset(m), 0);
    IOPhysicalLength len = 77;
    assert_int_equal(IOMemoryMap_getPhysicalSegment(m, 0, &len, 0), 0);
    assert_int_equal(len, 0);
    expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "getPhysicalSegment of a non-map");
    assert_int_equal(IOMemoryMap_getPhysicalSegment(m, 0, NULL, 0), 0);
    assert_int_equal(IOMemoryMap_getPhysicalAddress(m), 0);
    assert_int_equal(IOMemoryMap_unmap(m), kIOReturnBadArgument);
    expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "unmap of a non-map");
  }
  /* and a map where a descriptor is expected */
  IOMemoryMap *real = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, 0);
  assert_non_null(real);
  assert_null(IOMemoryDescriptor_map((IOMemoryDescriptor *)real, 0));
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "map of a map");
  assert_null(IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)real, kernel_task, 0, kIOMapAnywhere, 0, 0));
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "createMappingInTask of a map");
  assert_null(IOMemoryDescriptor_map(NULL, 0));
  /* the real map answers, and its task is this process */
  assert_true(IOMemoryMap_getAddressTask(real) == kernel_task);
  assert_true(IOMemoryMap_getMemoryDescriptor(real) == (IOMemoryDescriptor *)b);
  assert_int_equal(IOMemoryMap_GetOffset(real), 0);
  assert_int_equal(IOMemoryMap_unmap(real), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_unmap(real), kIOReturnSuccess);   /* nothing left to do */
  assert_int_equal(IOMemoryMap_getAddress(real), 0);
  OSObject_release(real);
  OSObject_release(b);
}

/* A mapping into a task that is neither this process nor a connected client is refused. */
static void map_into_unknown_task_refused(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 4096, 1);
  assert_non_null(b);
  int not_a_task;
  assert_null(IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)b, (task_t)&not_a_task, 0, kIOMapAnywhere, 0, 0));
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_TASK, "a mapping into an unknown task");
  OSObject_release(b);
}

static void driverkit_refusals(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 4096, 0, NULL), kIOReturnBadArgument);
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "Create without a result pointer");
  b = (IOBufferMemoryDescriptor *)&b;
  assert_int_equal(IOBufferMemoryDescriptor_Create(0x100, 4096, 0, &b), kIOReturnBadArgument);
  assert_null(b);   /* cleared on failure */
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 4096, 0, &b), kIOReturnSuccess);
  assert_non_null(b);

  IOAddressSegment range;
  assert_int_equal(IOBufferMemoryDescriptor_GetAddressRange(NULL, &range), kIOReturnBadArgument);
  assert_int_equal(IOBufferMemoryDescriptor_GetAddressRange(b, NULL), kIOReturnBadArgument);
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "GetAddressRange without a result pointer");
  uint64_t len = 0;
  assert_int_equal(IOMemoryDescriptor_GetLength(NULL, &len), kIOReturnBadArgument);
  assert_int_equal(IOMemoryDescriptor_GetLength((IOMemoryDescriptor *)b, NULL), kIOReturnBadArgument);
  assert_int_equal(IOMemoryDescriptor_GetLength((IOMemoryDescriptor *)b, &len), kIOReturnSuccess);
  assert_int_equal(len, 4096);
  assert_int_equal(IOBufferMemoryDescriptor_SetLength(b, UINT64_MAX), kIOReturnSuccess);   /* always, as DriverKit */

  IOMemoryMap *m = (IOMemoryMap *)&m;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(NULL, 0, 0, 0, 0, 0, &m), kIOReturnBadArgument);
  assert_null(m);
  assert_int_equal(IOMemoryDescriptor_CreateMapping((IOMemoryDescriptor *)b, 0, 0, 0, 0, 0, NULL), kIOReturnBadArgument);
  assert_int_equal(IOMemoryDescriptor_CreateMapping((IOMemoryDescriptor *)b, 0xFF00, 0, 0, 0, 0, &m), kIOReturnBadArgument);
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "an unknown cache selector");
  assert_int_equal(IOMemoryDescriptor_CreateMapping((IOMemoryDescriptor *)b, kIOMemoryMapGuardedMask, 0, 0, 0, 0, &m),
                   kIOReturnBadArgument);
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "an unknown guard selector");
  OSObject_release(b);
}

/* DriverKit options become the kernel-style map's options: each cache selector, guards (small
 * by default, none, small, large), read-only; a fixed address needs one and gets no guard. */
static void driverkit_option_translation(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 8192, 0, &b), kIOReturnSuccess);
  static const struct { uint64_t dk; IOOptionBits cache; } caches[] = {
    { kIOMemoryMapCacheModeDefault, kIOMapDefaultCache }, { kIOMemoryMapCacheModeInhibit, kIOMapInhibitCache },
    { kIOMemoryMapCacheModeCopyback, kIOMapCopybackCache }, { kIOMemoryMapCacheModeWriteThrough, kIOMapWriteThruCache },
    { kIOMemoryMapCacheModeRealTime, kIOMapRealTimeCache },
  };
  static const struct { uint64_t dk; IOOptionBits guard; } guards[] = {
    { kIOMemoryMapGuardedDefault, kIOMapGuardedSmall }, { kIOMemoryMapGuardedNone, 0 },
    { kIOMemoryMapGuardedSmall, kIOMapGuardedSmall }, { kIOMemoryMapGuardedLarge, kIOMapGuardedLarge },
  };
  for (size_t c = 0; c < sizeof caches / sizeof caches[0]; c++)
    for (size_t g = 0; g < sizeof guards / sizeof guards[0]; g++)
      for (int ro = 0; ro < 2; ro++) {
        IOMemoryMap *m = NULL;
        uint64_t o = caches[c].dk | guards[g].dk | (ro ? kIOMemoryMapReadOnly : 0);
        IOReturn rc = IOMemoryDescriptor_CreateMapping((IOMemoryDescriptor *)b, o, 0, 0, 0, 0, &m);
        if (rc != kIOReturnSuccess) fail_msg("CreateMapping(0x%llx): %s", (unsigned long long)o, dk_last_failure()->text);
        IOOptionBits k = IOMemoryMap_getMapOptions(m);
        assert_int_equal(k & kIOMapCacheMask, caches[c].cache);
        assert_int_equal(k & kIOMapGuardedMask, guards[g].guard);
        assert_int_equal(!!(k & kIOMapReadOnly), ro);
        assert_true(k & kIOMapAnywhere);
        assert_int_equal(IOMemoryMap_GetLength(m), 8192);
        OSObject_release(m);
      }
  /* a fixed address of 0 is refused as the kernel-style call refuses it, folded to kIOReturnError */
  IOMemoryMap *m = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping((IOMemoryDescriptor *)b, kIOMemoryMapFixedAddress, 0, 0, 0, 0, &m),
                   kIOReturnError);
  assert_null(m);
  assert_string_equal(dk_last_failure()->function, "IOMemoryDescriptor::CreateMapping");
  assert_true(dk_last_failure()->text[0] != '\0');
  OSObject_release(b);
}

/* Every IODMACommand call given NULL or an object that is no command. */
static void dmacommand_refuses_non_commands(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 4096, 1);
  assert_non_null(b);
  IODMACommand *not_cmds[] = { NULL, (IODMACommand *)b };
  for (size_t i = 0; i < 2; i++) {
    IODMACommand *c = not_cmds[i];
    assert_int_equal(IODMACommand_setMemoryDescriptor(c, (IOMemoryDescriptor *)b, true), kIOReturnBadArgument);
    assert_int_equal(IODMACommand_clearMemoryDescriptor(c, true), kIOReturnBadArgument);
    assert_null(IODMACommand_getMemoryDescriptor(c));
    assert_int_equal(IODMACommand_prepare(c, 0, 0, false, false), kIOReturnBadArgument);
    assert_int_equal(IODMACommand_complete(c, false, false), kIOReturnBadArgument);
    assert_int_equal(IODMACommand_synchronize(c, kIODirectionOut), kIOReturnBadArgument);
    UInt64 off = 0;
    UInt32 n = 1;
    IODMACommandSegment64 seg64;
    IODMACommandSegment32 seg32;
    assert_int_equal(IODMACommand_gen64IOVMSegments(c, &off, &seg64, &n), kIOReturnBadArgument);
    assert_int_equal(IODMACommand_genIOVMSegments(c, &off, &seg32, &n), kIOReturnBadArgument);
    assert_null(IODMACommand_getRefCon(c));
    assert_false(dk_dmacommand_is_double_buffered(c));
    uint64_t len = 9;
    assert_null(dk__dmacommand_bounce(c));
    assert_null(dk__dmacommand_bounce_bytes(c, &len));
    assert_int_equal(len, 0);
    assert_null(dk__dmacommand_bounce_bytes(c, NULL));
  }
  OSObject_release(b);
}

/* The segment output functions: the byte order each promises, at index i; refused (false,
 * nothing written) without a segment array, and, for the 32-bit ones, for an address or a
 * length beyond 32 bits. */
static void dmacommand_output_functions(void **state)
{
  (void)state;
  typedef bool (*outf)(IODMACommand *, IODMACommandSegment64, void *, UInt32);
  static const struct { outf f; int bits; int big; } outs[] = {
    { IODMACommand_OutputHost32, 32, -1 }, { IODMACommand_OutputBig32, 32, 1 }, { IODMACommand_OutputLittle32, 32, 0 },
    { IODMACommand_OutputHost64, 64, -1 }, { IODMACommand_OutputBig64, 64, 1 }, { IODMACommand_OutputLittle64, 64, 0 },
  };
  const IODMACommandSegment64 seg = { .fIOVMAddr = 0x12345678, .fLength = 0x9abc };
  const IODMACommandSegment64 high = { .fIOVMAddr = 0x100000000ull, .fLength = 0x1000 };
  const IODMACommandSegment64 long_seg = { .fIOVMAddr = 0x1000, .fLength = 0x100000000ull };
  for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
    uint8_t buf[64], zero[64];
    memset(buf, 0, sizeof buf);
    memset(zero, 0, sizeof zero);
    assert_false(outs[k].f(NULL, seg, NULL, 0));
    assert_true(outs[k].f(NULL, seg, buf, 1));
    size_t w = outs[k].bits / 8;   /* bytes per field */
    assert_memory_equal(buf, zero, 2 * w);   /* index 0 untouched */
    uint64_t a = 0, l = 0;
    for (size_t i = 0; i < w; i++) {
      size_t ai = outs[k].big == 1 ? i : outs[k].big == 0 ? w - 1 - i : 0;
      if (outs[k].big < 0) break;
      a = (a << 8) | buf[2 * w + ai];
      l = (l << 8) | buf[3 * w + ai];
    }
    if (outs[k].big < 0) {
      if (w == 4) { uint32_t a32, l32; memcpy(&a32, buf + 8, 4); memcpy(&l32, buf + 12, 4); a = a32; l = l32; }
      else { memcpy(&a, buf + 16, 8); memcpy(&l, buf + 24, 8); }
    }
    assert_int_equal(a, seg.fIOVMAddr);
    assert_int_equal(l, seg.fLength);
    memset(buf, 0, sizeof buf);
    assert_int_equal(outs[k].f(NULL, high, buf, 0), outs[k].bits == 64);
    assert_int_equal(outs[k].f(NULL, long_seg, buf, 1), outs[k].bits == 64);
    if (outs[k].bits == 32) assert_memory_equal(buf, zero, sizeof buf);
  }
}

/* ---- buffers: refusals of the factories and init, accessors of what is not a buffer ---- */

#define BMD_NULL(call, code, kind)                                                         \
  do {                                                                                     \
    dk_clear_failure();                                                                    \
    IOBufferMemoryDescriptor *r_ = (call);                                                 \
    if (r_) fail_msg("%s gave a buffer", #call);                                           \
    expect_failure(code, kind, #call);                                                     \
  } while (0)

/* Constraints no memory can meet, an alignment no address has, an unknown task, a NULL or
 * malformed constraint set, pageable constrained memory: refused before anything is allocated,
 * each with its code, constraint and reason; nothing is left behind. */
static void buffer_factories_refuse(void **state)
{
  (void)state;
  dk__objects_cache_flush();
  long objects = dk__objects_live();
  dk_prim_counters before = dk__prim_counters();
  dk_constraints c = DK_CONSTRAINTS_NONE;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 4096, NULL), kIOReturnBadArgument,
           DK_CONSTRAINT_ARGUMENT);
  c.alignment = 3;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 4096, &c), kIOReturnBadArgument,
           DK_CONSTRAINT_ARGUMENT);
  assert_non_null(strstr(dk_last_failure()->text, "power of two"));
  c = DK_CONSTRAINTS_NONE;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIOMemoryPageable, 4096, &c),
           kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT);
  /* one contiguous segment longer than the largest segment allowed */
  c.contiguous = true;
  c.max_segment_size = 4096;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 8192, &c), kIOReturnNoMemory,
           DK_CONSTRAINT_SEGMENTS);
  /* 16 KiB crosses three 4 KiB boundary lines however it lies: at least 4 segments, 3 allowed */
  c = DK_CONSTRAINTS_NONE;
  c.boundary = 4096;
  c.max_segments = 3;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 16384, &c), kIOReturnNoMemory,
           DK_CONSTRAINT_SEGMENTS);
  assert_non_null(strstr(dk_last_failure()->text, "at least 4 segments"));
  /* an alignment whose next power of two is past 2^63: no address has it (wired only) */
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4096, (1ull << 63) + 1),
           kIOReturnNoMemory, DK_CONSTRAINT_ALIGNMENT);
  /* a task that is neither kernel_task, NULL nor a connected client */
  static int not_a_task;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithOptions((task_t)(void *)&not_a_task, kIOMemoryPageable, 4096, 1),
           kIOReturnBadArgument, DK_CONSTRAINT_TASK);
  dk__objects_cache_flush();
  assert_int_equal(dk__objects_live(), objects);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.map_bytes, before.map_bytes);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

/* init on NULL, on something else, on a buffer already made; the accessors on NULL and on an
 * allocated, never initialized buffer: the neutral value, and the buffer untouched. */
static void buffer_init_and_accessors_refuse(void **state)
{
  (void)state;
  dk_clear_failure();
  assert_false(IOBufferMemoryDescriptor_initWithPhysicalMask(NULL, kernel_task, 0, 4096, 1, 0));
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "init of NULL");
  assert_non_null(strstr(dk_last_failure()->text, "not an IOBufferMemoryDescriptor"));
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 100, 1);
  assert_non_null(b);
  memset(IOBufferMemoryDescriptor_getBytesNoCopy(b), 0x11, 100);
  assert_false(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, 0, 8192, 1, 0));
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "init of a made buffer");
  assert_non_null(strstr(dk_last_failure()->text, "already initialized"));
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
  assert_int_equal(((uint8_t *)IOBufferMemoryDescriptor_getBytesNoCopy(b))[99], 0x11);
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, NULL), kIOReturnBadArgument);
  OSObject_release(b);

  IOBufferMemoryDescriptor *u = IOBufferMemoryDescriptor_alloc();
  assert_non_null(u);
  IOBufferMemoryDescriptor *none[] = { NULL, u };
  for (int i = 0; i < 2; i++) {
    IOBufferMemoryDescriptor *x = none[i];
    assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(x));
    assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(x, 0, 1));
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(x), 0);
    IOBufferMemoryDescriptor_setLength(x, 1);
    assert_int_equal(IOMemoryDescriptor_getLength((IOMemoryDescriptor *)(void *)x), 0);
    assert_false(IOBufferMemoryDescriptor_appendBytes(x, "ab", 2));
    assert_int_equal(dk_buffer_get_info(x, &info), kIOReturnBadArgument);
    expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "dk_buffer_get_info");
  }
  /* the allocated one can still be made a buffer */
  assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(u, kernel_task, kIODirectionInOut, 64, 1, 0));
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(u), 64);
  OSObject_release(u);
  /* a buffer in no task is mapped nowhere: no bytes, whole or in part */
  IOBufferMemoryDescriptor *n = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 64, 1);
  assert_non_null(n);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(n));
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopyRange(n, 0, 8));
  OSObject_release(n);
}

/* A window reaching past the top of RAM asks nothing of the memory: the buffer is made (no
 * frame needs reading, so without privilege too) and reports no physical limit. */
static void buffer_window_above_ram_is_no_limit(void **state)
{
  (void)state;
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = UINT64_MAX;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 8192, &c);
  if (!b) fail_msg("a window up to 2^64-1: %s", dk_last_failure()->text);
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_int_equal(info.physical_limit, 0);
  OSObject_release(b);
}

/* Every provider has its name, and a value that is none of them is "none". */
static void provider_names(void **state)
{
  (void)state;
  assert_string_equal(dk_provider_name(DK_PROVIDER_MEMFD_4K), "memfd-4k");
  assert_string_equal(dk_provider_name(DK_PROVIDER_POOL), "hugepage-pool");
  assert_string_equal(dk_provider_name(DK_PROVIDER_POOL_SLAB), "hugepage-pool-slab");
  assert_string_equal(dk_provider_name(DK_PROVIDER_USER), "user-range");
  assert_string_equal(dk_provider_name(DK_PROVIDER_HUGEFD), "hugepage-own");
  assert_string_equal(dk_provider_name((dk_provider)99), "none");
}

/* ---- descriptors: performOperation, purgeable state, DMA map length, context ------------- */

/* The encryption operations have nothing to do on Linux and succeed on a valid range; an
 * unknown operation is refused. On memory the caller had, the cache operations reach every
 * line through this process's view (and the range is left as it was). setPurgeable on
 * anything but a buffer is unsupported; an unknown state is refused without an old state to
 * report; the DMA map length of a range is its pages; the context of NULL is nothing. */
static void descriptor_operations(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 8192, 1);
  assert_non_null(b);
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)(void *)b;
  assert_int_equal(IOMemoryDescriptor_performOperation(md, kIOMemoryClearEncrypted, 0, 8192), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_performOperation(md, kIOMemorySetEncrypted, 100, 10), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_performOperation(md, 3, 0, 8192), kIOReturnUnsupported);
  expect_failure(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT, "operation 3");
  assert_int_equal(IOMemoryDescriptor_setPurgeable(md, 9, NULL), kIOReturnBadArgument);
  expect_failure(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "purgeable state 9");
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(md, NULL), 8192);
  OSObject_release(b);

  static uint8_t mine[3 * 4096] __attribute__((aligned(4096)));
  memset(mine, 0x42, sizeof mine);
  IOMemoryDescriptor *r = IOMemoryDescriptor_withAddressRange((mach_vm_address_t)(uintptr_t)(mine + 100), 8192,
                                                              kIODirectionInOut, kernel_task);
  assert_non_null(r);
  assert_int_equal(IOMemoryDescriptor_performOperation(r, kIOMemoryIncoherentIOFlush, 0, 8192), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_performOperation(r, kIOMemoryIncoherentIOStore, 50, 9000), kIOReturnSuccess);
  assert_true(dkt_all_bytes(mine, sizeof mine, 0x42));
  IOOptionBits old = 77;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(r, kIOMemoryPurgeableVolatile, &old), kIOReturnUnsupported);
  expect_failure(kIOReturnUnsupported, DK_CONSTRAINT_STATE, "setPurgeable of a range");
  uint64_t off = 1;
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(r, &off), 3 * 4096);   /* 100 + 8192 bytes touch 3 pages */
  assert_int_equal(off, 100);
  off = 1;
  assert_int_equal(IOMemoryDescriptor_getDMAMapLength(NULL, &off), 0);
  assert_int_equal(off, 0);
  IOMemoryDescriptor_setContext(r, NULL);                 /* nothing set, nothing to clear */
  assert_null(IOMemoryDescriptor_copyContext(r));
  assert_null(IOMemoryDescriptor_copyContext(NULL));
  OSObject_release(r);
}

/* With the hugepage pool off, 4K pages answer alone: a boundary below the page size that the
 * buffer crosses, one contiguous run longer than a page, a pageable capacity no mapping can
 * hold, and a physical limit (which needs frame numbers to check: root) are refused, each with
 * its cause; a limit the pages do meet as root is kept and proven by the frames. */
static void four_k_pages_refuse(void **state)
{
  (void)state;
  long pool = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  bool root = dk_capabilities()->pagemap_frames;
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.boundary = 2048;
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 4096, &c), kIOReturnNoMemory,
           DK_CONSTRAINT_BOUNDARY);
  assert_non_null(strstr(dk_last_failure()->text, "below the page size"));
  BMD_NULL(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, (1ull << 63) + 4096, 1),
           kIOReturnNoMemory, DK_CONSTRAINT_ARGUMENT);
  assert_non_null(strstr(dk_last_failure()->text, "too large"));
  c = DK_CONSTRAINTS_NONE;
  c.contiguous = true;
  if (root) {
    BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 8192, &c), kIOReturnNoMemory,
             DK_CONSTRAINT_CONTIGUITY);
    assert_non_null(strstr(dk_last_failure()->text, "turned off"));
  } else {
    BMD_NULL(IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 8192, &c), kIOReturnNotPrivileged,
             DK_CONSTRAINT_PRIVILEGE);
    assert_non_null(strstr(dk_last_failure()->text, "also turned off"));
  }
  c = DK_CONSTRAINTS_NONE;
  c.high = 0xFFFFFFFFull;
  dk_clear_failure();
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 4096, &c);
  if (!root) {
    assert_null(b);
    expect_failure(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE, "a limit without frame numbers");
  } else if (!b) {
    expect_failure(kIOReturnNoMemory, DK_CONSTRAINT_MASK, "a limit 4K pages did not meet");
  } else {
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)(void *)b, 0, &len, 0);
    assert_true(pa != 0 && pa + len - 1 <= c.high);
    OSObject_release(b);
  }
  dk_option_set(DK_OPTION_POOL, pool);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(map_accessors_refuse_non_maps),
    cmocka_unit_test(map_into_unknown_task_refused),
    cmocka_unit_test(driverkit_refusals),
    cmocka_unit_test(driverkit_option_translation),
    cmocka_unit_test(dmacommand_refuses_non_commands),
    cmocka_unit_test(dmacommand_output_functions),
    cmocka_unit_test(buffer_factories_refuse),
    cmocka_unit_test(buffer_init_and_accessors_refuse),
    cmocka_unit_test(buffer_window_above_ram_is_no_limit),
    cmocka_unit_test(provider_names),
    cmocka_unit_test(descriptor_operations),
    cmocka_unit_test(four_k_pages_refuse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
