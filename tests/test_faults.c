/* tests/test_faults.c: every public operation under injected system-call and heap failures.
 * For each operation, the Nth eligible prim call fails (N = 1, 2, ... until the operation runs
 * to the end without meeting the fault), once with fail-once and once with fail-forever: any
 * call, then each call alone with every errno it can really return, then the library's heap
 * allocations alone. After each run: the result is success or a documented IOReturn with a
 * reason, the live counters (fds, mapped bytes, locked bytes, heap blocks, pins, objects) are
 * back at the baseline, and the internal consistency check passes. The mapped operations
 * (buffers and IODMACommand under the software IOMapper) also leave the mapper with nothing
 * mapped, its IOVA space whole, no system mapper set and no reference taken. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "iokit/internal.h"
#include "mapper/mapper_impl.h"
#include "phys/phys.h"
#include "prim/prim.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

typedef IOReturn (*op_fn)(void);

/* An operation that must call the API again after a failure (a trim) keeps the reason here. */
static char g_reason[sizeof(((dk_failure *)0)->text)];

static const char *reason(void) { return g_reason[0] ? g_reason : dk_last_failure()->text; }

static IOReturn failure_code(void)
{
  IOReturn c = dk_last_failure()->code;
  return c == kIOReturnSuccess ? kIOReturnError : c;
}

/* Walk every physical segment (when frames are visible); a failure is the operation's.
 * `options` 0, or kIOMemoryMapperNone for the RAM behind a mapped buffer. */
static IOReturn walk_opts(IOMemoryDescriptor *md, IOOptionBits options)
{
  if (!dk_capabilities()->pagemap_frames) return kIOReturnSuccess;
  IOByteCount off = 0, len, total = IOMemoryDescriptor_getLength(md);
  while (off < total) {
    if (!IOMemoryDescriptor_getPhysicalSegment(md, off, &len, options)) return failure_code();
    off += len;
  }
  return kIOReturnSuccess;
}

static IOReturn walk(IOMemoryDescriptor *md) { return walk_opts(md, 0); }

static IOReturn op_wired(void)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIODirectionInOut, 3 * dk_capabilities()->page_size + 17, 1);
  if (!b) return failure_code();
  IOReturn rc = walk(MD(b));
  OSObject_release(b);
  return rc;
}

static IOReturn op_null_task_map(void)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, 0, 8192, 1);
  if (!b) return failure_code();
  IOReturn rc = kIOReturnSuccess;
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  if (!m) rc = failure_code();
  else {
    memset((void *)(uintptr_t)IOMemoryMap_getAddress(m), 0x5a, 8192);
    uint8_t x[16];
    if (IOMemoryDescriptor_readBytes(MD(b), 8000, x, 16) != 16 || x[15] != 0x5a) rc = kIOReturnInternalError;
    OSObject_release(m);
  }
  OSObject_release(b);
  return rc;
}

static IOReturn op_pageable(void)
{
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIOMemoryPurgeable, 16384, 1);
  if (!b) return failure_code();
  IOReturn rc = IOMemoryDescriptor_prepare(MD(b), kIODirectionNone);
  if (rc == kIOReturnSuccess) {
    rc = walk(MD(b));
    IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
  }
  IOOptionBits old;
  if (rc == kIOReturnSuccess) rc = IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableEmpty, &old);
  OSObject_release(b);
  return rc;
}

static IOReturn op_maps(void)
{
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 3 * 4096, 1);
  if (!b) return failure_code();
  IOReturn rc = kIOReturnSuccess;
  IOMemoryMap *ro = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0,
                                                           kIOMapAnywhere | kIOMapReadOnly | kIOMapUnique, 0, 0);
  IOMemoryMap *g = ro ? IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0,
                                                              kIOMapAnywhere | kIOMapGuardedLarge, 4096, 4096)
                      : NULL;
  IOMemoryMap *sub = g ? IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0,
                                                               kIOMapAnywhere | kIOMapGuardedLarge, 4096, 100)
                       : NULL;
  if (!ro || !g || !sub) rc = failure_code();
  else if (IOMemoryMap_unmap(g) != kIOReturnSuccess) rc = failure_code();
  OSSafeReleaseNULL(sub);
  OSSafeReleaseNULL(g);
  OSSafeReleaseNULL(ro);
  OSObject_release(b);
  return rc;
}

static IOReturn op_with_bytes(void)
{
  static uint8_t data[5000];
  memset(data, 7, sizeof data);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withBytes(data, sizeof data, kIODirectionOut, false);
  if (!b) return failure_code();
  OSObject_release(b);
  return kIOReturnSuccess;
}

static IOReturn op_with_copy(void)
{
  static uint8_t data[9000];
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable, kernel_map,
                                                                  (mach_vm_address_t)(uintptr_t)data, sizeof data);
  if (!b) return failure_code();
  OSObject_release(b);
  return kIOReturnSuccess;
}

static IOReturn op_driverkit(void)
{
  IOBufferMemoryDescriptor *b = NULL;
  IOReturn rc = IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 10000, 0, &b);
  if (rc != kIOReturnSuccess) return rc;
  IOMemoryMap *m = NULL;
  rc = IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 0, 0, 0, &m);
  OSSafeReleaseNULL(m);
  OSObject_release(b);
  return rc;
}

static IOReturn op_constraints(void)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.max_segments = 64;          /* always met by 16 pages; makes dmakit verify the frames */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 16 * 4096, &c);
  if (!b) return failure_code();
  IOReturn rc = walk(MD(b));
  OSObject_release(b);
  return rc;
}

/* The pool from empty: growth (hugetlb memfd, populate, frames, remap, pin), a contiguous
 * buffer, release, trim (every hugepage and raised limit given back). */
static IOReturn op_pool_growth(void)
{
  dk_pool_trim();
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.contiguous = true;
  c.alignment = 1u << 16;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, 0, 1u << 20, &c);
  IOReturn rc = b ? walk(MD(b)) : failure_code();
  if (rc != kIOReturnSuccess) snprintf(g_reason, sizeof g_reason, "%s", dk_last_failure()->text);
  OSSafeReleaseNULL(b);
  dk_pool_trim();
  return rc;
}

/* ---- the IOMapper: the software backend (IOVAs allocated and tracked, nothing programmed) ---- */

/* Made in the tests' setup, outside every swept operation; the system mapper only inside them. */
static IOMapper *g_mapper;
#define SOFT_IOVA_LO 0x100000ull
#define SOFT_IOVA_HI ((1ull << 40) - 1)
#define MASK28 0x0FFFFFFFull

/* The bus address of a mapped buffer: one IOVA range for the whole buffer, within `limit`. A
 * query makes no system call, so a 0 here is never the injected fault's doing. */
static IOReturn check_iova(IOMemoryDescriptor *md, uint64_t limit)
{
  IOByteCount len = 0, total = IOMemoryDescriptor_getLength(md);
  addr64_t iova = IOMemoryDescriptor_getPhysicalSegment(md, 0, &len, 0);
  if (!iova || len != total || iova < SOFT_IOVA_LO || iova + total - 1 > limit) {
    snprintf(g_reason, sizeof g_reason, "getPhysicalSegment(0): IOVA 0x%llx+0x%llx, not one range of 0x%llx "
             "bytes below 0x%llx (%.100s)", (unsigned long long)iova, (unsigned long long)len,
             (unsigned long long)total, (unsigned long long)limit, dk_last_failure()->text);
    return kIOReturnInternalError;
  }
  return kIOReturnSuccess;
}

/* (a) A wired 28-bit buffer under the system mapper: mapped at creation, its IOVA under the
 * mask; kIOMemoryMapperNone gives the RAM behind it. */
static IOReturn op_mapped_wired(void)
{
  dk_mapper_set_system(g_mapper);
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, 8192, MASK28);
  IOReturn rc = b ? kIOReturnSuccess : failure_code();
  dk_mapper_set_system(NULL);
  if (!b) return rc;
  rc = check_iova(MD(b), MASK28);
  if (rc == kIOReturnSuccess) rc = walk_opts(MD(b), kIOMemoryMapperNone);
  OSObject_release(b);
  return rc;
}

/* (b) A pageable buffer under the system mapper: no IOVA until prepare, one while prepared,
 * none after the last complete. */
static IOReturn op_mapped_pageable(void)
{
  dk_mapper_set_system(g_mapper);
  IOBufferMemoryDescriptor *b =
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut | kIOMemoryPageable, 16384, 1);
  IOReturn rc = b ? kIOReturnSuccess : failure_code();
  dk_mapper_set_system(NULL);
  if (!b) return rc;
  IOByteCount len;
  if (IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0) != 0) {
    snprintf(g_reason, sizeof g_reason, "an IOVA before prepare");
    rc = kIOReturnInternalError;
  }
  if (rc == kIOReturnSuccess) rc = IOMemoryDescriptor_prepare(MD(b), kIODirectionNone);
  if (rc == kIOReturnSuccess) {
    rc = check_iova(MD(b), SOFT_IOVA_HI);
    if (rc == kIOReturnSuccess) rc = walk_opts(MD(b), kIOMemoryMapperNone);
    IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
    if (rc == kIOReturnSuccess && IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0) != 0) {
      snprintf(g_reason, sizeof g_reason, "an IOVA after the last complete");
      rc = kIOReturnInternalError;
    }
  }
  OSObject_release(b);
  return rc;
}

/* One command's life on `b`: setMemoryDescriptor(autoPrepare), every segment (one IOVA range
 * within `bits`; at `expect` when nonzero), clearMemoryDescriptor(autoComplete), release. */
static IOReturn command_pass(IOBufferMemoryDescriptor *b, UInt8 bits, uint64_t expect)
{
  IODMACommand *c =
      IODMACommand_withSpecification(IODMACommand_OutputHost64, bits, 0, kIODMAMapOptionMapped, 0, 1, g_mapper, NULL);
  if (!c) return failure_code();
  IOReturn rc = IODMACommand_setMemoryDescriptor(c, MD(b), true);
  if (rc == kIOReturnSuccess) {
    UInt64 off = 0;
    IODMACommandSegment64 s[4] = { { 0, 0 } };
    UInt32 n = 4;
    rc = IODMACommand_gen64IOVMSegments(c, &off, s, &n);
    uint64_t limit = bits < 64 ? (1ull << bits) - 1 : UINT64_MAX;
    if (rc != kIOReturnSuccess || n != 1 || s[0].fLength != IOMemoryDescriptor_getLength(MD(b)) ||
        s[0].fIOVMAddr + s[0].fLength - 1 > limit || (expect && s[0].fIOVMAddr != expect)) {
      snprintf(g_reason, sizeof g_reason, "%u-bit command: %s, %u segment(s), first 0x%llx+0x%llx (expected 0x%llx)",
               bits, dk_ioreturn_name(rc), n, (unsigned long long)s[0].fIOVMAddr,
               (unsigned long long)s[0].fLength, (unsigned long long)expect);
      rc = kIOReturnInternalError;
    }
    IOReturn cr = IODMACommand_clearMemoryDescriptor(c, true);
    if (rc == kIOReturnSuccess) rc = cr;
  }
  OSObject_release(c);
  return rc;
}

/* (c) IODMACommand with the soft mapper on a buffer created under it (its IOVA near 2^40): a
 * 28-bit command maps the range again under its own limit, a 64-bit one shares the buffer's
 * mapping. Not test_dmacommand's sweep (explicit prepare of a bounced, misaligned range). */
static IOReturn op_mapped_command(void)
{
  dk_mapper_set_system(g_mapper);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 8192, 4096);
  IOReturn rc = b ? kIOReturnSuccess : failure_code();
  dk_mapper_set_system(NULL);
  if (!b) return rc;
  dk_buffer_info bi = { 0 };
  if (dk_buffer_get_info(b, &bi) != kIOReturnSuccess || bi.mapper != g_mapper || bi.iova <= MASK28) {
    snprintf(g_reason, sizeof g_reason, "the buffer's IOVA 0x%llx is not the soft mapper's, above 2^28",
             (unsigned long long)bi.iova);
    rc = kIOReturnInternalError;
  }
  if (rc == kIOReturnSuccess) rc = command_pass(b, 28, 0);
  if (rc == kIOReturnSuccess) rc = command_pass(b, 64, bi.iova);
  dk_mapper_info mi = { 0 };
  if (rc == kIOReturnSuccess &&
      (dk_mapper_get_info(g_mapper, &mi) != kIOReturnSuccess || mi.mappings_live != 1 || mi.buffers_mapped != 1)) {
    snprintf(g_reason, sizeof g_reason, "after the commands: %u mappings, %llu buffers mapped (expected the buffer's 1)",
             mi.mappings_live, (unsigned long long)mi.buffers_mapped);
    rc = kIOReturnInternalError;
  }
  OSObject_release(b);
  return rc;
}

/* DriverKit's IODMACommand: a 64 KiB DriverKit buffer prepared with room for one segment, the
 * one segment checked, completed. With the soft system mapper it is one IOVA range; without a
 * mapper (root, pool) its 4K pages go through a contiguous double buffer. */
static IOReturn op_driverkit_dma(void)
{
  IOBufferMemoryDescriptor *b = NULL;
  IODMACommand *c = NULL;
  /* 36 bits under the mapper (an IOVA limit to check); none without it, where a double buffer
   * that cannot be had under a limit is reported as the limit (MessageTooLarge) */
  IODMACommandSpecification spec = { kIODMACommandSpecificationNoOptions, g_mapper ? 36 : 64, { 0 } };
  if (g_mapper) dk_mapper_set_system(g_mapper);
  IOReturn rc = IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 64 * 1024, 0, &b);
  if (rc == kIOReturnSuccess) rc = IODMACommand_Create(NULL, kIODMACommandCreateNoOptions, &spec, &c);
  if (g_mapper) dk_mapper_set_system(NULL);
  if (rc == kIOReturnSuccess) {
    IOAddressSegment seg[2] = { { 0, 0 }, { 0, 0 } };
    uint64_t flags = 0;
    uint32_t n = 1;
    rc = IODMACommand_PrepareForDMA(c, kIODMACommandPrepareForDMANoOptions, MD(b), 0, 0, &flags, &n, seg);
    if (rc == kIOReturnSuccess && (n != 1 || seg[0].length != 64 * 1024 || (g_mapper && seg[0].address + seg[0].length > (1ull << 36)) ||
                                   flags != kIOMemoryDirectionInOut)) {
      snprintf(g_reason, sizeof g_reason, "PrepareForDMA gave %u segment(s), the first 0x%llx+0x%llx, flags 0x%llx", n,
               (unsigned long long)seg[0].address, (unsigned long long)seg[0].length, (unsigned long long)flags);
      rc = kIOReturnInternalError;
    }
    if (rc == kIOReturnSuccess) rc = IODMACommand_CompleteDMA(c, kIODMACommandCompleteDMANoOptions);
    else if (rc == kIOReturnInternalError) IODMACommand_CompleteDMA(c, kIODMACommandCompleteDMANoOptions);
  }
  OSSafeReleaseNULL(c);
  OSSafeReleaseNULL(b);
  return rc;
}

/* ---- the harness ---------------------------------------------------------------------- */

typedef struct snapshot { dk_prim_counters c; long pins, objects; } snapshot;

static snapshot snap(void)
{
  snapshot s = { dk__prim_counters(), dk__pins_live(), dk__objects_live() };
  return s;
}

static void assert_same(const snapshot *a, const snapshot *b, const char *what, unsigned long n, int forever)
{
  if (a->c.fds != b->c.fds || a->c.map_bytes != b->c.map_bytes || a->c.lock_bytes != b->c.lock_bytes ||
      a->c.heap_blocks != b->c.heap_blocks || a->pins != b->pins || a->objects != b->objects)
    fail_msg("%s, fault at call %lu (%s): leak: fds %ld->%ld map %ld->%ld lock %ld->%ld heap %ld->%ld pins %ld->%ld "
             "objects %ld->%ld",
             what, n, forever ? "forever" : "once", a->c.fds, b->c.fds, a->c.map_bytes, b->c.map_bytes,
             a->c.lock_bytes, b->c.lock_bytes, a->c.heap_blocks, b->c.heap_blocks, a->pins, b->pins,
             a->objects, b->objects);
  char why[256];
  if (dk__debug_validate(why, sizeof why) != 0)
    fail_msg("%s, fault at call %lu: consistency check failed: %s", what, n, why);
}

static int documented(IOReturn rc)
{
  return rc == kIOReturnNoMemory || rc == kIOReturnNoResources || rc == kIOReturnCannotWire ||
         rc == kIOReturnVMError || rc == kIOReturnNoSpace || rc == kIOReturnError;
}

/* With the soft mapper in use: after every run nothing is mapped (no IOVA leaked, none freed
 * twice), the IOVA space is whole again, no system mapper is left set, and only the test holds
 * the mapper. Read after the result's checks: dk_mapper_get_info starts a new failure record. */
static void assert_mapper_clean(const char *what, unsigned long n, int forever)
{
  if (!g_mapper) return;
  dk_mapper_info i;
  if (dk_mapper_get_info(g_mapper, &i) != kIOReturnSuccess) fail_msg("%s: dk_mapper_get_info failed", what);
  size_t extents = (size_t)g_mapper->space.free.count;
  uint64_t used = g_mapper->space.used;
  int refs = atomic_load(&g_mapper->refs);
  if (i.mappings_live || i.buffers_mapped || i.bytes_mapped || i.double_unmaps || i.leaks_reported || used ||
      extents != g_mapper->space.napertures || refs != 1 || dk_mapper_get_system())
    fail_msg("%s, fault at call %lu (%s): mapper not clean: %u mappings live, %llu buffers mapped, %llu bytes mapped, "
             "%llu double unmaps, %llu leaks reported, IOVA bytes used %llu in %zu free extents (%zu apertures), "
             "%d references, system mapper %p",
             what, n, forever ? "forever" : "once", i.mappings_live, (unsigned long long)i.buffers_mapped,
             (unsigned long long)i.bytes_mapped, (unsigned long long)i.double_unmaps,
             (unsigned long long)i.leaks_reported, (unsigned long long)used, extents, g_mapper->space.napertures, refs,
             (void *)dk_mapper_get_system());
}

/* One injection sweep: fail the nth call among `calls` (a prim call mask, 0 = all) with `err`,
 * n = 1, 2, ... until the operation no longer reaches the fault. Returns the fault points. */
static unsigned long sweep(const char *what, op_fn op, const snapshot *base, uint64_t calls, int err, int forever)
{
  unsigned long n;
  for (n = 1; n < 10000; n++) {
    g_reason[0] = '\0';
    dk__thread_caches_flush();         /* every allocation reaches the heap, where faults are */
    dk__fault_arm(n, forever, calls, err);
    IOReturn rc = op();
    int fired = dk__fault_fired();
    dk__fault_disarm();
    dk__thread_caches_flush();
    snapshot now = snap();
    assert_same(base, &now, what, n, forever);
    if (rc != kIOReturnSuccess) {
      if (!fired) fail_msg("%s failed (%s) with no fault injected", what, dk_ioreturn_name(rc));
      if (!documented(rc))
        fail_msg("%s, fault at call %lu (errno %d): undocumented %s: %s", what, n, err, dk_ioreturn_name(rc),
                 reason());
      if (rc != kIOReturnError && reason()[0] == '\0')
        fail_msg("%s, fault at call %lu: %s without a reason", what, n, dk_ioreturn_name(rc));
    }
    assert_mapper_clean(what, n, forever);
    if (!fired) break;        /* the operation ran to the end before call n */
  }
  return n - 1;
}

/* Every errno each prim call can really return (its man page), failed one call at a time. */
typedef struct call_errs { dk_prim_call call; int errs[6]; } call_errs;
static const call_errs g_errs[] = {
  { DK_PRIM_MMAP,              { ENOMEM, EAGAIN, ENFILE, EPERM, EEXIST, EINVAL } },
  { DK_PRIM_MPROTECT,          { ENOMEM, EACCES } },
  { DK_PRIM_MADVISE,           { ENOMEM, EAGAIN, EINVAL, EFAULT, EINTR, EPERM } },
  { DK_PRIM_MLOCK,             { ENOMEM, EAGAIN, EPERM } },
  { DK_PRIM_MEMFD_CREATE,      { EMFILE, ENFILE, ENOMEM, EINVAL } },
  { DK_PRIM_FTRUNCATE,         { EFBIG, EINTR, EPERM, EIO } },
  { DK_PRIM_FALLOCATE,         { ENOSPC, ENOMEM, EINTR, EFBIG, EIO } },
  { DK_PRIM_OPEN,              { EMFILE, ENFILE, ENOMEM, EACCES, ENOENT, EINTR } },
  { DK_PRIM_PREAD,             { EIO, EINTR, EFAULT, EINVAL } },
  { DK_PRIM_READ,              { EIO, EINTR, EFAULT } },
  { DK_PRIM_IO_URING_SETUP,    { ENOMEM, EMFILE, ENFILE, ENOSYS, EPERM } },
  { DK_PRIM_IO_URING_REGISTER, { ENOMEM, EFAULT, EOPNOTSUPP, EBUSY, EINTR, ENXIO } },
  { DK_PRIM_GETRLIMIT,         { EFAULT } },
  { DK_PRIM_PROCESS_VM_READV,  { EFAULT, ENOMEM, EPERM, ESRCH } },
  { DK_PRIM_MALLOC,            { ENOMEM } },
  { DK_PRIM_CALLOC,            { ENOMEM } },
};

/* `errnos_per_call`: how many of each call's errnos to sweep (6 = all). */
static void run_faults_n(const char *what, op_fn op, int errnos_per_call)
{
  /* warm up: capabilities probed, the pin ring exists, the operation works without faults */
  assert_int_equal(op(), kIOReturnSuccess);
  dk__thread_caches_flush();
  snapshot base = snap();
  unsigned long total = 0;
  /* 1. any call, two errnos, once and for ever */
  const int errs[] = { 0, EAGAIN };
  for (int e = 0; e < 2; e++) {
    for (int forever = 0; forever < 2; forever++) {
      unsigned long points = sweep(what, op, &base, 0, errs[e], forever);
      assert_true(points > 0);    /* the operation makes prim calls: the loop really injected */
      total += points;
    }
  }
  /* 2. each call with each errno it can return */
  for (size_t i = 0; i < sizeof g_errs / sizeof g_errs[0]; i++)
    for (int e = 0; e < errnos_per_call && g_errs[i].errs[e]; e++)
      for (int forever = 0; forever < 2; forever++)
        total += sweep(what, op, &base, DK_PRIM_BIT(g_errs[i].call), g_errs[i].errs[e], forever);
  /* 3. the library's own heap allocations alone */
  unsigned long heap = 0;
  for (int forever = 0; forever < 2; forever++)
    heap += sweep(what, op, &base, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC), ENOMEM, forever);
  assert_true(heap > 0);          /* every operation allocates at least its object */
  print_message("%s: %lu injected failures, %lu of them heap allocations\n", what, total + heap, heap);
  /* and it still works afterwards */
  assert_int_equal(op(), kIOReturnSuccess);
}

static void run_faults(const char *what, op_fn op) { run_faults_n(what, op, 6); }

static void faults_wired(void **s) { (void)s; run_faults("wired buffer", op_wired); }
static void faults_null_task(void **s) { (void)s; run_faults("NULL-task buffer + map", op_null_task_map); }
static void faults_pageable(void **s) { (void)s; run_faults("pageable prepare/complete", op_pageable); }
static void faults_maps(void **s) { (void)s; run_faults("unique, guarded and sub-range maps", op_maps); }
static void faults_with_bytes(void **s) { (void)s; run_faults("withBytes", op_with_bytes); }
static void faults_with_copy(void **s) { (void)s; run_faults("withCopy", op_with_copy); }
static void faults_driverkit(void **s) { (void)s; run_faults("DriverKit Create + CreateMapping", op_driverkit); }
static void faults_pool_growth(void **s)
{
  (void)s;
  if (!dk_capabilities()->pool_usable || !dk_option_get(DK_OPTION_POOL)) {
    print_message("SKIP: the hugepage pool is not usable here (needs root and hugetlb)\n");
    skip();
  }
  /* each growth costs real hugepages (the kernel zeroes and may compact for them): grow by one
   * page at a time, and sweep each call with its first errno */
  long grow = dk_option_get(DK_OPTION_POOL_GROW_MB);
  dk_option_set(DK_OPTION_POOL_GROW_MB, 2);
  run_faults_n("pool growth, contiguous buffer, trim", op_pool_growth, 1);
  dk_option_set(DK_OPTION_POOL_GROW_MB, grow);
}
static void faults_constraints(void **s)
{
  (void)s;
  if (!dk_capabilities()->pagemap_frames) {
    print_message("SKIP: verified constraints need frame numbers (root)\n");
    skip();
  }
  run_faults("inTaskWithConstraints", op_constraints);
}

/* The soft mapper is made here, before the sweep's baseline, and closed after: the close
 * reports any mapping still live. */
static int mapper_setup(void **s)
{
  (void)s;
  const uint64_t ranges[1][2] = { { SOFT_IOVA_LO, SOFT_IOVA_HI } };
  g_mapper = dk__mapper_create_soft(ranges, 1, 65535);
  return g_mapper ? 0 : -1;
}

static int mapper_teardown(void **s)
{
  (void)s;
  dk_mapper_set_system(NULL);          /* a failed assertion may have left it set */
  char report[512];
  unsigned leaks = dk_mapper_close(g_mapper, report, sizeof report);
  g_mapper = NULL;
  if (leaks) fprintf(stderr, "soft mapper closed with %u live mapping(s):\n%s", leaks, report);
  return leaks ? -1 : 0;
}

static void faults_mapped_wired(void **s)
{
  (void)s;
  run_faults("28-bit wired buffer under the soft system mapper", op_mapped_wired);
}
static void faults_mapped_pageable(void **s)
{
  (void)s;
  run_faults("pageable buffer under the soft system mapper, prepare/complete", op_mapped_pageable);
}
static void faults_driverkit_dma_mapped(void **s)
{
  (void)s;
  run_faults("DriverKit IODMACommand, PrepareForDMA with room for one segment, soft mapper", op_driverkit_dma);
}
static void faults_driverkit_dma_bounce(void **s)
{
  (void)s;
  if (!dk_capabilities()->pagemap_frames || !dk_capabilities()->pool_usable || !dk_option_get(DK_OPTION_POOL)) {
    print_message("SKIP: a contiguous double buffer needs frame numbers and the hugepage pool (root, hugetlb)\n");
    skip();
  }
  run_faults("DriverKit IODMACommand, PrepareForDMA with room for one segment, contiguous double buffer",
             op_driverkit_dma);
}
static void faults_mapped_command(void **s)
{
  (void)s;
  run_faults("IODMACommand (28- and 64-bit) with the soft mapper, autoPrepare/autoComplete", op_mapped_command);
}

/* ---- releasing never allocates --------------------------------------------------------- *
 * Every release path with the C heap failing for ever: large pool blocks between live
 * neighbours (each free needs a free-list node of its own), slab slots of several classes,
 * 4K-page buffers, buffers mapped by the soft mapper in mappings of their own (the IOVA
 * allocator's frees) and sharing one, IOMemoryMaps, an IODMACommand that remapped its range
 * under its own limit. The releases must not even ask the heap (the injector counts every
 * heap call it sees), and nothing may be lost: after them the pool gives every chunk back at
 * trim, the IOVA space is whole and every counter is back at its baseline. */
#define NFREE 48
static void faults_frees_never_allocate(void **st)
{
  (void)st;
  dk__thread_caches_flush();
  dk_pool_trim();
  snapshot base = snap();
  long pool = dk_option_get(DK_OPTION_POOL);
  IOBufferMemoryDescriptor *b[4 * NFREE];
  IOMemoryMap *maps[NFREE];
  IODMACommand *cmd[4];
  size_t nb = 0, nm = 0, nc = 0;
  const uint64_t P = dk_capabilities()->page_size;
  /* wired buffers of the default provider (the pool as root): large and small */
  for (int i = 0; i < NFREE; i++) {
    uint64_t size = i % 3 == 0 ? 3 * P + 17 : i % 3 == 1 ? 64 : 4096;
    b[nb] = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, size, i % 3 == 1 ? 64 : 1);
    if (!b[nb]) fail_msg("buffer %d: %s", i, dk_last_failure()->text);
    if (i % 4 == 0 && nm < NFREE) {
      maps[nm] = IOMemoryDescriptor_createMappingInTask(MD(b[nb]), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
      if (!maps[nm]) fail_msg("map %d: %s", i, dk_last_failure()->text);
      nm++;
    }
    nb++;
  }
  /* 4K pages, each a mapping of its own under the soft system mapper, and pool buffers
   * sharing one */
  dk_mapper_set_system(g_mapper);
  for (int i = 0; i < NFREE; i++) {
    dk_option_set(DK_OPTION_POOL, i % 2 ? 0 : pool);
    b[nb] = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionInOut, i % 2 ? 2 * P : 256,
                                                            0xFFFFFFFFFFull);
    if (!b[nb]) fail_msg("mapped buffer %d: %s", i, dk_last_failure()->text);
    nb++;
  }
  dk_option_set(DK_OPTION_POOL, pool);
  dk_mapper_set_system(NULL);
  /* commands that map a range again under a 28-bit limit (the buffers' IOVAs lie near 2^40) */
  for (size_t i = 0; i < 4; i++) {
    cmd[nc] = IODMACommand_withSpecification(IODMACommand_OutputHost64, 28, 0, kIODMAMapOptionMapped, 0, 1,
                                             g_mapper, NULL);
    assert_non_null(cmd[nc]);
    assert_int_equal(IODMACommand_setMemoryDescriptor(cmd[nc], MD(b[nb - 1 - i]), true), kIOReturnSuccess);
    nc++;
  }
  dk_mapper_info before;
  assert_int_equal(dk_mapper_get_info(g_mapper, &before), kIOReturnSuccess);
  assert_true(before.mappings_live > 2);
  /* now everything goes back with the heap failing: every other one first, so that frees land
   * between live blocks */
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_MALLOC) | DK_PRIM_BIT(DK_PRIM_CALLOC) | DK_PRIM_BIT(DK_PRIM_REALLOC), ENOMEM);
  for (size_t i = 0; i < nc; i++) {
    IODMACommand_clearMemoryDescriptor(cmd[i], true);
    OSObject_release(cmd[i]);
  }
  for (size_t i = 0; i < nm; i++) OSObject_release(maps[i]);
  for (size_t i = 0; i < nb; i += 2) OSObject_release(b[i]);
  for (size_t i = 1; i < nb; i += 2) OSObject_release(b[i]);
  unsigned long asked = dk__fault_calls_seen();
  dk__fault_disarm();
  if (asked) fail_msg("the releases asked the heap for memory %lu time(s)", asked);
  dk__thread_caches_flush();
  dk_pool_trim();
  dk_pool_stats ps;
  assert_int_equal(dk_pool_get_stats(&ps), kIOReturnSuccess);
  assert_int_equal(ps.bytes_pool_used, 0);
  assert_int_equal(ps.bytes_pool_2m + ps.bytes_pool_1g, 0);     /* no chunk held for ever */
  snapshot now = snap();
  assert_same(&base, &now, "releases with the heap failing", 0, 1);
  assert_mapper_clean("releases with the heap failing", 0, 1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(faults_wired),       cmocka_unit_test(faults_null_task),
    cmocka_unit_test(faults_pageable),    cmocka_unit_test(faults_maps),
    cmocka_unit_test(faults_with_bytes),  cmocka_unit_test(faults_with_copy),
    cmocka_unit_test(faults_driverkit),   cmocka_unit_test(faults_constraints),
    cmocka_unit_test(faults_pool_growth),
    cmocka_unit_test_setup_teardown(faults_mapped_wired, mapper_setup, mapper_teardown),
    cmocka_unit_test_setup_teardown(faults_mapped_pageable, mapper_setup, mapper_teardown),
    cmocka_unit_test_setup_teardown(faults_mapped_command, mapper_setup, mapper_teardown),
    cmocka_unit_test_setup_teardown(faults_frees_never_allocate, mapper_setup, mapper_teardown),
    cmocka_unit_test_setup_teardown(faults_driverkit_dma_mapped, mapper_setup, mapper_teardown),
    cmocka_unit_test(faults_driverkit_dma_bounce),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
