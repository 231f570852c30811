/* tests/test_semantics.c: deeper tests of REFERENCE.md §2-§6 than the §9 table: every §3
 * factory, §2 step by step (through dk_buffer_get_info), §4 method edge cases, §5
 * IOMemoryMap, §6 DriverKit, OSObject reference counting, dk_last_failure() and a
 * thread-safety smoke test. Runs as root and as an ordinary user. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dmakit/dmakit.h>

#include "dk_test.h"
#include "semantics_util.h"

/* ---- helpers --------------------------------------------------------------------------------- */

/* What getFlags() must report for a buffer created with these options (decisions in the brief,
 * from §2 steps 4, 13-17). */
static uint64_t expected_flags(IOOptionBits o) {
  const bool pageable = (o & kIOMemoryPageable) != 0;
  const uint64_t cache = (o & kIOMapCacheMask) >> kIOMapCacheShift;
  uint64_t f = kIOMemoryTypeVirtual64 | kIOMemoryAsReference | (o & kIOBufferDescriptorMemoryFlags);
  f |= cache << kIOMemoryBufferCacheShift; /* not masked: modes 8 and 9 spill over */
  if (pageable) {
    f |= kIOMemoryBufferPageable;
    if (o & kIOMemoryPurgeable) f |= kIOMemoryBufferPurgeable;
  } else {
    f |= kIOMemoryAutoPrepare;
    if ((o & kIOMemoryDirectionMask) == kIODirectionOut) f |= kIOMemoryPreparedReadOnly;
  }
  if (pageable || cache) f |= kIOMemoryPersistent;
  return f;
}

/* Does touching *p kill a child process with SIGSEGV/SIGBUS? */
static bool access_faults(volatile uint8_t *p, bool write) {
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    if (write)
      *p = 0x5A;
    else
      (void)*p;
    _exit(0);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS);
}

/* After an unmap: dmakit's memory is no longer at p, and if nothing else took the range, a
 * read faults. (Anything may reuse a freed range at once, a sanitizer runtime for one.) */
static void assert_gone(volatile uint8_t *p) {
  assert_false(dkt_maps_dmakit((const void *)p));
#if !defined(__SANITIZE_THREAD__)
  /* (TSan's runtime maps memory of its own around fork(), often into a range just freed) */
  if (!dkt_is_mapped((const void *)p)) assert_true(access_faults(p, false));
#endif
}

static IOBufferMemoryDescriptor *kbuf(IOOptionBits o, uint64_t cap) {
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, o, cap, 1);
  if (!b) print_failure("kbuf");
  assert_non_null(b);
  return b;
}

/* =============================== §3 factories ===================================================== */

static void fac_inTaskWithOptions(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 1000);
  dk_buffer_info i = info_of(b);
  assert_ptr_equal(i.task, kernel_task);
  assert_int_equal(i.options, kIODirectionInOut);
  /* 1000 bytes: a slab slot of the hugepage pool where it serves wired memory, else 4K pages */
  assert_int_equal(i.provider, pool_on() ? DK_PROVIDER_POOL_SLAB : DK_PROVIDER_MEMFD_4K);
  assert_wired_provider(b, "inTaskWithOptions(1000)");
  assert_true(i.wired);
  assert_false(i.pageable);
  assert_int_equal(i.prepare_count, 1);
  assert_int_equal(i.cache_mode, kIODefaultCache);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(p);
  memset(p, 0x31, 1000);
  uint8_t r[1000];
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, r, 1000), 1000);
  assert_true(all_bytes(r, 1000, 0x31));
  OSObject_release(b);

  /* unknown bits are accepted silently (§2 rejection summary) */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0x08000000u | kIOMemoryHostOnly | kIODirectionIn, 64, 1);
  assert_non_null(b);
  assert_int_equal(info_of(b).options, 0x08000000u | kIOMemoryHostOnly | kIODirectionIn);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), expected_flags(kIODirectionIn));
  OSObject_release(b);

  /* NULL task: wired and mapped nowhere (the seed page wins over XNU) */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 1000, 1);
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  assert_true(info_of(b).wired);
  assert_int_equal(info_of(b).prepare_count, 1);
  OSObject_release(b);
}

static void fac_inTaskWithOptionsTagged(void **state) {
  (void)state;
  const IOOptionBits opts[] = { kIODirectionOut, kIOMemoryPageable, kIOMemoryKernelUserShared | kIODirectionIn };
  for (size_t k = 0; k < 3; k++) {
    IOBufferMemoryDescriptor *a = IOBufferMemoryDescriptor_inTaskWithOptionsTagged(kernel_task, opts[k], 5000, 16, 99, 100);
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[k], 5000, 16);
    assert_non_null(a);
    assert_non_null(b);
    dk_buffer_info x = info_of(a), y = info_of(b);
    assert_int_equal(x.options, y.options);
    assert_int_equal(x.alignment, y.alignment);
    assert_int_equal(x.allocation_size, y.allocation_size);
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(a)), IOMemoryDescriptor_getFlags(MD(b)));
    assert_int_equal(IOMemoryDescriptor_getTag(MD(a)), 0); /* VM tags are not getTag() */
    OSObject_release(a);
    OSObject_release(b);
  }
  IOBufferMemoryDescriptor *n = IOBufferMemoryDescriptor_inTaskWithOptionsTagged(NULL, kIODirectionIn, 100, 1, 1, 1);
  assert_non_null(n);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(n));
  OSObject_release(n);
}

static void fac_inTaskWithPhysicalMask(void **state) {
  (void)state;
  /* mask 0: no derivation, alignment 1 */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionIn, 100, 0);
  assert_non_null(b);
  dk_buffer_info i = info_of(b);
  assert_true(i.alignment <= 1);
  assert_int_equal(i.allocation_size, 100);
  assert_int_equal(i.physical_limit, 0);
  assert_int_equal(i.numAddressBits, 64);
  OSObject_release(b);
  /* a mask: page alignment, page rounding, limit dropped above RAM */
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIODirectionIn, 100, BIG_MASK);
  assert_non_null(b);
  i = info_of(b);
  assert_int_equal(i.alignment, pg());
  assert_int_equal(i.allocation_size, pg());
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 100);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % pg(), 0);
  OSObject_release(b);
  /* NULL task, wired and pageable */
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, kIODirectionInOut, 3 * pg(), BIG_MASK);
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  assert_true(info_of(b).wired);
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, kIOMemoryPageable, 3 * pg(), BIG_MASK);
  assert_non_null(b);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));
  assert_false(info_of(b).wired);
  OSObject_release(b);
}

static void fac_withOptions(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionOut | kIOMemoryThreadSafe, 777, 32);
  assert_non_null(b);
  dk_buffer_info i = info_of(b);
  assert_ptr_equal(i.task, kernel_task);
  assert_int_equal(i.alignment, 32);
  assert_int_equal(i.options, kIODirectionOut | kIOMemoryThreadSafe);
  assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % 32, 0);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), expected_flags(kIODirectionOut | kIOMemoryThreadSafe));
  OSObject_release(b);
  b = IOBufferMemoryDescriptor_withOptions(kIOMemoryPageable, 777, 0);
  assert_non_null(b);
  assert_ptr_equal(info_of(b).task, kernel_task);
  assert_non_null(IOBufferMemoryDescriptor_getBytesNoCopy(b)); /* kernel pageable: a pointer */
  OSObject_release(b);
}

static void fac_withCapacity(void **state) {
  (void)state;
  for (IODirection d = 0; d < 4; d++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(300, d, false);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), d);
    assert_int_equal(info_of(b).options, d);
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), expected_flags(d));
    OSObject_release(b);
    b = IOBufferMemoryDescriptor_withCapacity(128, d, true);
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.options, d | kIOMemoryPhysicallyContiguous);
    assert_int_equal(i.alignment, 128);
    assert_true(i.contiguous);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % 128, 0);
    /* the 0x10 option bit is not the TypeVirtual flag it collides with: same flags as above */
    assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)), expected_flags(d));
    OSObject_release(b);
  }
  /* contiguous with capacity above a page: alignment == capacity > page (met by the pool,
   * refused by 4K pages) */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(pg() + 1, kIODirectionIn, true);
  if (b) {
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, pg() + 1);
    assert_true(i.contiguous);
    assert_int_equal(i.options, kIODirectionIn | kIOMemoryPhysicallyContiguous);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % next_pow2(pg() + 1), 0);
    assert_true(all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), pg() + 1, 0));
  }
  assert_pool_meets_or_4k_refuses(b, pg() + 1, 0, "withCapacity(page+1, contiguous)");
}

static void fac_withBytes(void **state) {
  (void)state;
  char text[300];
  for (size_t k = 0; k < sizeof text; k++) text[k] = (char)('a' + k % 26);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withBytes(text, sizeof text, kIODirectionOut, false);
  assert_non_null(b);
  assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), text, sizeof text);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), sizeof text);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), sizeof text);
  assert_int_equal(info_of(b).alignment, sizeof text);
  assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % 512, 0); /* next_pow2(300) */
  /* it is full: appending adds nothing */
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, "zz", 2));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), sizeof text);
  /* the source is copied, not referenced */
  text[0] = 'X';
  assert_int_equal(((char *)IOBufferMemoryDescriptor_getBytesNoCopy(b))[0], 'a');
  OSObject_release(b);
  /* contiguous, more than a page: alignment min(len, page) == page, but contiguity > page */
  uint8_t *big = calloc(1, 2 * pg());
  assert_non_null(big);
  for (size_t k = 0; k < 2 * pg(); k++) big[k] = (uint8_t)(k * 7 + 1);
  b = IOBufferMemoryDescriptor_withBytes(big, 2 * pg(), kIODirectionOut, true);
  if (b) {
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, pg());
    assert_true(i.contiguous);
    assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 2 * pg());
    assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), big, 2 * pg());
  }
  assert_pool_meets_or_4k_refuses(b, pg(), 0, "withBytes(2 pages, contiguous)");
  b = IOBufferMemoryDescriptor_withBytes(big, pg(), kIODirectionIn, true);
  free(big);
  assert_non_null(b);
  assert_int_equal(info_of(b).alignment, pg());
  assert_true(info_of(b).contiguous);
  OSObject_release(b);
}

static void fac_withCopy(void **state) {
  (void)state;
  const size_t n = 3000;
  uint8_t *src = malloc(n + 7);
  assert_non_null(src);
  uint8_t *s = src + 7; /* not page aligned */
  for (size_t k = 0; k < n; k++) s[k] = (uint8_t)(k ^ 0x5A);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable | kIODirectionInOut,
                                                                 kernel_map, (mach_vm_address_t)(uintptr_t)s, n);
  if (!b) print_failure("withCopy");
  assert_non_null(b);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), n);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), n);
  assert_true(info_of(b).pageable);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_non_null(p);
  assert_ptr_not_equal(p, s);
  assert_memory_equal(p, s, n);
  s[0] ^= 0xFF; /* a copy: later changes to the source do not show */
  assert_int_equal(p[0], 0x5A);
  p[1] = 0;
  assert_int_equal(s[1], 1 ^ 0x5A);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  uint8_t r[16];
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 100, r, 16), 16);
  assert_memory_equal(r, s + 100, 16);
  IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
  OSObject_release(b);

  /* requires Pageable, a task, a source address and a size (§2 step 3) */
  assert_null(IOBufferMemoryDescriptor_withCopy(kernel_task, kIODirectionInOut, kernel_map, (uintptr_t)s, n));
  assert_null(IOBufferMemoryDescriptor_withCopy(NULL, kIOMemoryPageable, kernel_map, (uintptr_t)s, n));
  assert_null(IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable, kernel_map, 0, n));
  assert_null(IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable, kernel_map, (uintptr_t)s, 0));
  assert_null(IOBufferMemoryDescriptor_withCopy(kernel_task, kIOMemoryPageable, NULL, (uintptr_t)s, n));
  free(src);
}

static void fac_alloc_init(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
  assert_non_null(b);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  dk_buffer_info i;
  if (dk_buffer_get_info(b, &i) == kIOReturnSuccess) assert_int_equal(i.provider, DK_PROVIDER_NONE);
  assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, kIODirectionIn | kIOMemoryKernelUserShared, 1234, 1, 0));
  assert_int_equal(OSObject_getRetainCount(b), 1);
  i = info_of(b);
  assert_int_equal(i.alignment, pg());
  assert_int_equal(i.allocation_size, pg());
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 1234);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 1234);
  assert_true(all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(b), 1234, 0));
  OSObject_release(b);
  /* a failed init: the object is released by the caller, free() copes with partial state.
   * The last two are beyond 4K pages only: the hugepage pool meets them (and then the
   * promise must hold) */
  const struct { task_t t; IOOptionBits o; uint64_t cap, align, mask; bool physical; } bad[] = {
    { kernel_task, 0, 0, 1, 0, false },
    { kernel_task, 0, UINT64_MAX, 1, 0, false },
    { kernel_task, 0, 3 * pg(), 2 * pg(), 0, true },
    { kernel_task, kIOMemoryPhysicallyContiguous, 3 * pg(), 1, 0, true },
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    b = IOBufferMemoryDescriptor_alloc();
    bool ok = IOBufferMemoryDescriptor_initWithPhysicalMask(b, bad[k].t, bad[k].o, bad[k].cap, bad[k].align, bad[k].mask);
    if (bad[k].physical && pool_on()) {
      if (!ok) print_failure("alloc+init beyond 4K pages");
      assert_true(ok);
      assert_int_equal(OSObject_getRetainCount(b), 1);
      assert_true(info_of(b).contiguous);
      assert_pool_meets_or_4k_refuses(b, bad[k].align, 0, "alloc+init beyond 4K pages");
      continue;
    }
    assert_false(ok);
    assert_int_not_equal(dk_last_failure()->code, kIOReturnSuccess);
    if (bad[k].physical) assert_physical_refusal("alloc+init beyond 4K pages");
    OSObject_release(b);
  }
}

/* =============================== §2 step by step ================================================== */

static void sec2_flags_composition(void **state) {
  (void)state;
  const IOOptionBits opts[] = {
    0, kIODirectionIn, kIODirectionOut, kIODirectionInOut, kIODirectionPrepareToPhys32 | kIODirectionIn,
    kIOMemoryThreadSafe | kIODirectionInOut, kIOMemoryMapperNone, kIOMemoryUseReserve, kIOMemoryClearEncrypt,
    kIOMemoryKernelUserShared,                              /* 0x10000 is not kIOMemoryPersistent here */
    kIOMemoryPurgeable,                                     /* 0x40 is not TypePersistentMD */
    kIOMapInhibitCache, kIOMapWriteThruCache, kIOMapCopybackCache, kIOMapWriteCombineCache,
    kIOMapCopybackInnerCache, kIOMapPostedWrite, kIOMapRealTimeCache, kIOMapPostedReordered,
    kIOMapPostedCombinedReordered, kIOMapInhibitCache | kIOMemoryKernelUserShared | kIODirectionOut,
    kIOMemoryPageable, kIOMemoryPageable | kIOMemoryPurgeable, kIOMemoryPageable | kIODirectionOut | kIOMemoryThreadSafe,
    kIOMemoryPageable | kIOMapWriteCombineCache, kIOMemoryPageable | kIOMemoryPurgeable | kIOMemoryKernelUserShared,
    kIOMemoryPageable | kIOMemoryPhysicallyContiguous,
    /* last: sub-page contiguity, which needs no frame numbers */
    kIOMemoryPhysicallyContiguous, kIOMemoryHostPhysicallyContiguous | kIODirectionOut,
  };
  for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, opts[k], 200, 1);
    if (!b) {
      print_failure("sec2_flags_composition");
      fail_msg("options %#x", opts[k]);
    }
    uint64_t got = IOMemoryDescriptor_getFlags(MD(b)), want = expected_flags(opts[k]);
    if (got != want) fail_msg("options %#x: getFlags %#llx, expected %#llx", opts[k], (unsigned long long)got, (unsigned long long)want);
    assert_int_equal(info_of(b).options, opts[k]); /* the raw options are kept apart */
    OSObject_release(b);
  }
}

static void sec2_mask_derivation_table(void **state) {
  (void)state;
  /* (mask, expected alignment) for masks above RAM; limit dropped */
  const struct { uint64_t mask, align; } t[] = {
    { BIG_MASK, pg() }, { BIG_MASK - 1, pg() }, { BIG_MASK & ~0x3FFull, pg() },
    { BIG_MASK & ~(pg() - 1), pg() }, { BIG_MASK & ~0xF00000ull, pg() }, { 0xFFFFFFFFFFFFFFFFull, pg() },
  };
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 2 * pg() + 1, t[k].mask);
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, t[k].align);
    assert_int_equal(i.allocation_size, 3 * pg());
    assert_int_equal(i.physical_limit, 0);
    assert_int_equal(i.numAddressBits, 64);
    assert_false(i.contiguous);
    OSObject_release(b);
  }
  /* trailing zeros above a page: contiguity forced; pageable ignores it */
  const uint64_t over[] = { BIG_MASK & ~(2 * pg() - 1), BIG_MASK & ~0xFFFFFull };
  for (size_t k = 0; k < 2; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 100, over[k]);
    const uint64_t want = over[k] & ~(over[k] - 1);   /* the lowest set bit */
    if (b) {
      dk_buffer_info i = info_of(b);
      assert_int_equal(i.alignment, want);
      assert_true(i.contiguous);
      assert_int_equal(i.physical_limit, 0);
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % want, 0);
    }
    assert_pool_meets_or_4k_refuses(b, want, 0, "mask with > page trailing zeros");
    b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIOMemoryPageable, 100, over[k]);
    assert_non_null(b);
    OSObject_release(b);
  }
  /* via the init API the alignment passed wins and the mask is ignored */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
  assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(b, kernel_task, 0, 100, 8, BIG_MASK & ~0xFFFFFull));
  assert_int_equal(info_of(b).alignment, 8);
  assert_false(info_of(b).contiguous);
  OSObject_release(b);
}

static void sec2_sharing_cache_encrypt_round(void **state) {
  (void)state;
  const IOOptionBits o[] = { kIOMemoryKernelUserShared, kIOMapCopybackCache, kIOMemoryClearEncrypt };
  for (int k = 0; k < 3; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, o[k], pg() + 10, 64);
    assert_non_null(b);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, pg());
    assert_int_equal(i.allocation_size, 2 * pg());
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), pg() + 10);
    OSObject_release(b);
  }
  /* an alignment already above a page is left alone (met by the pool, refused by 4K pages) */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared, 100, 4 * pg());
  if (b) {
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.alignment, 4 * pg());
    assert_int_equal(i.allocation_size, pg());
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(b) % (4 * pg()), 0);
  }
  assert_pool_meets_or_4k_refuses(b, 4 * pg(), 0, "KernelUserShared, 4 pages alignment");
}

static void sec2_cache_mode_bits(void **state) {
  (void)state;
  for (uint32_t mode = 0; mode <= 9; mode++) {
    IOOptionBits o = mode << kIOMapCacheShift;
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, o | kIODirectionInOut, 100, 1);
    assert_non_null(b);
    uint64_t f = IOMemoryDescriptor_getFlags(MD(b));
    assert_int_equal(f & 0xF0000000ull, (uint64_t)mode << 28);
    /* not masked: modes 8 and 9 spill above kIOMemoryBufferCacheMask, and what is left in the
     * mask is mode & 7 (8 reads back as default, 9 as kIOInhibitCache) */
    assert_int_equal((f & kIOMemoryBufferCacheMask) >> kIOMemoryBufferCacheShift, mode & 7);
    assert_int_equal(!!(f & kIOMemoryPersistent), mode != 0);
    dk_buffer_info i = info_of(b);
    assert_int_equal(i.cache_mode, mode);
    assert_int_equal(i.alignment, mode ? pg() : 1);
    OSObject_release(b);
  }
}

static void sec2_strict_cache_mode(void **state) {
  (void)state;
  long saved = dk_option_get(DK_OPTION_STRICT_CACHE_MODE);
  dk_option_set(DK_OPTION_STRICT_CACHE_MODE, 1);
  assert_int_equal(dk_option_get(DK_OPTION_STRICT_CACHE_MODE), 1);
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMapInhibitCache, 100, 1);
  if (b) OSObject_release(b);
  bool refused = (b == NULL);
  IOReturn code = dk_last_failure()->code;
  dk_constraint_kind kind = dk_last_failure()->constraint;
  IOBufferMemoryDescriptor *c = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMapCopybackCache, 100, 1);
  IOBufferMemoryDescriptor *d = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMapDefaultCache, 100, 1);
  dk_option_set(DK_OPTION_STRICT_CACHE_MODE, saved);
  assert_true(refused);
  assert_int_equal(code, kIOReturnUnsupported);
  assert_int_equal(kind, DK_CONSTRAINT_CACHE);
  assert_non_null(c);
  assert_non_null(d);
  OSObject_release(c);
  OSObject_release(d);
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMapInhibitCache, 100, 1);
  assert_non_null(b); /* stored and reported when not strict */
  OSObject_release(b);
}

static void sec2_pageable_ignores_physical(void **state) {
  (void)state;
  /* contiguity, host contiguity, alignment beyond a page and a real low limit: all ignored */
  IOBufferMemoryDescriptor *bs[] = {
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIOMemoryPhysicallyContiguous, 4 * pg(), 1),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIOMemoryHostPhysicallyContiguous, 4 * pg(), 1),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 4 * pg(), 8 * pg()),
    IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, kIOMemoryPageable, 4 * pg(), 0xFFFFFull),
    IOBufferMemoryDescriptor_inTaskWithPhysicalMask(NULL, kIOMemoryPageable, 4 * pg(), 0xFFFFFull),
  };
  for (size_t k = 0; k < sizeof bs / sizeof bs[0]; k++) {
    if (!bs[k]) print_failure("pageable");
    assert_non_null(bs[k]);
    dk_buffer_info i = info_of(bs[k]);
    assert_true(i.pageable);
    assert_false(i.wired);
    assert_int_equal(i.prepare_count, 0);
    assert_int_equal(i.allocation_size, 4 * pg());
    uint64_t f = IOMemoryDescriptor_getFlags(MD(bs[k]));
    assert_true(f & kIOMemoryBufferPageable);
    assert_true(f & kIOMemoryPersistent);
    assert_int_equal(f & kIOMemoryAutoPrepare, 0);
    /* and preparing does not bring the constraints back */
    assert_int_equal(IOMemoryDescriptor_prepare(MD(bs[k]), kIODirectionNone), kIOReturnSuccess);
    assert_true(info_of(bs[k]).wired);
    OSObject_release(bs[k]);
  }
}

static void sec2_wired_case(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut | kIOMemoryKernelUserShared, 3 * pg());
  dk_buffer_info i = info_of(b);
  assert_true(i.wired);
  assert_false(i.pageable);
  assert_int_equal(i.prepare_count, 1);
  /* kIOMemoryKernelUserShared keeps page-granular mappings: 4K pages even with the pool */
  assert_int_equal(i.provider, DK_PROVIDER_MEMFD_4K);
  assert_true(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryAutoPrepare);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPersistent, 0);
  OSObject_release(b);
}

static void sec2_task_rule_and_steps_12_20(void **state) {
  (void)state;
  /* step 11: only kernel_task and NULL exist; NULL without Pageable is allowed (seed page) */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, 0, 100, 1);
  assert_non_null(b);
  /* step 12: no mapper: 64 address bits */
  assert_int_equal(info_of(b).numAddressBits, 64);
  /* step 20: length = capacity */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 100);
  OSObject_release(b);
  /* step 10: wrap-around of capacity + alignment */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0, UINT64_MAX - 10, 100);
  assert_null(b);
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_ARGUMENT);
}

/* =============================== §4 methods ======================================================= */

static void m4_appendBytes(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 64);
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  memset(p, 0xEE, 64);
  IOBufferMemoryDescriptor_setLength(b, 8);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, NULL, 16)); /* NULL zero-fills */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 24);
  assert_true(all_bytes(p, 8, 0xEE));
  assert_true(all_bytes(p + 8, 16, 0));
  assert_true(all_bytes(p + 24, 40, 0xEE));
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, "abc", 3));
  assert_memory_equal(p + 24, "abc", 3);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, NULL, 1000)); /* truncated at capacity */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 64);
  assert_true(all_bytes(p + 27, 37, 0));
  OSObject_release(b);

  /* an Out-only kernel buffer: appendBytes copies with memcpy, so it works */
  b = kbuf(kIODirectionOut, 32);
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, "0123456789", 10));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 10);
  assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(b), "0123456789", 10);
  OSObject_release(b);

  /* a NULL-task buffer: the data arrives through the descriptor */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 32, 1);
  assert_non_null(b);
  IOBufferMemoryDescriptor_setLength(b, 0);
  assert_true(IOBufferMemoryDescriptor_appendBytes(b, "hello", 5));
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 5);
  char r[5];
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, r, 5), 5);
  assert_memory_equal(r, "hello", 5);
  OSObject_release(b);
}

static void m4_read_write_bytes(void **state) {
  (void)state;
  const uint64_t n = 3 * pg() + 123;
  uint8_t *src = malloc(n), *dst = malloc(n);
  for (uint64_t k = 0; k < n; k++) src[k] = (uint8_t)(k * 131);
  const IOOptionBits opts[] = { kIODirectionInOut, kIODirectionIn | kIOMemoryThreadSafe, kIOMemoryPageable | kIODirectionInOut };
  task_t tasks[] = { kernel_task, NULL };
  for (int t = 0; t < 2; t++)
    for (size_t o = 0; o < 3; o++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(tasks[t], opts[o], n, 1);
      assert_non_null(b);
      if (opts[o] & kIOMemoryPageable) assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
      assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, src, n), n);
      memset(dst, 0, n);
      assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, dst, n), n);
      assert_memory_equal(dst, src, n);
      /* unaligned pieces crossing pages */
      assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), pg() - 3, dst, pg() + 6), pg() + 6);
      assert_memory_equal(dst, src + pg() - 3, pg() + 6);
      uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
      if (tasks[t] == kernel_task) {
        assert_non_null(p);
        assert_memory_equal(p, src, n);
      } else {
        assert_null(p);
      }
      /* the direction is not checked by readBytes */
      IOMemoryDescriptor_setDirection(MD(b), kIODirectionIn);
      assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 1, dst, 1), 1);
      OSObject_release(b);
    }
  free(src);
  free(dst);
}

static void m4_out_only_lifecycle(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionOut, 100);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "a", 1), 0);
  /* complete to zero clears PreparedReadOnly; a prepare for writing then works */
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly, 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionInOut), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly, 0);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "a", 1), 1);
  OSObject_release(b);

  /* a pageable Out buffer becomes read-only at its first prepare */
  b = kbuf(kIOMemoryPageable | kIODirectionOut, 100);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly, 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_true(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "a", 1), 0);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionIn), kIOReturnNotWritable);
  /* only kIODirectionNone itself means the descriptor's direction (XNU wireVirtual): prepare-only
   * bits with no Out bit prepare for both ways, which read-only memory refuses (found by the
   * fuzzer against the model) */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionPrepareNoFault), kIOReturnNotWritable);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionOut | kIODirectionPrepareNoFault), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(b)) & kIOMemoryPreparedReadOnly, 0);
  /* prepared for writing first: writable */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionIn), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "a", 1), 1);
  OSObject_release(b);
}

static void m4_unprepared_pageable(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  uint8_t x = 1;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, &x, 1), 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, &x, 1), 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);
  IOByteCount len = 5;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, kIOMemoryMapperNone), 0);
  assert_int_equal(len, 0);
  ASSERT_FAILURE(kIOReturnNotReady, DK_CONSTRAINT_STATE);
  assert_int_equal(IOMemoryDescriptor_getPhysicalAddress(MD(b)), 0);
  OSObject_release(b);
}

static void m4_physical_segments_walk(void **state) {
  (void)state;
  /* walk the whole buffer: the runs tile it exactly */
  const uint64_t n = 5 * pg() + 77;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, n, pg());
  assert_non_null(b);
  IOByteCount off = 0;
  int segs = 0;
  while (off < n) {
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), off, &len, kIOMemoryMapperNone);
    if (!phys_answered(pa, len, "walk")) break;
    assert_int_equal(pa % pg(), off % pg());
    assert_true(len <= n - off);
    off += len;
    segs++;
  }
  if (segs) assert_int_equal(off, n);
  /* through the NULL-task buffer too */
  IOBufferMemoryDescriptor *nb = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, pg(), 1);
  IOByteCount len = 0;
  addr64_t npa = IOMemoryDescriptor_getPhysicalSegment(MD(nb), 0, &len, 0);
  if (phys_answered(npa, len, "NULL task")) assert_int_equal(len, pg());
  OSObject_release(nb);
  OSObject_release(b);
}

static void m4_setPurgeable_lifecycle(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIOMemoryPageable | kIOMemoryPurgeable | kIODirectionInOut, 2 * pg());
  uint64_t f = IOMemoryDescriptor_getFlags(MD(b));
  assert_true(f & kIOMemoryBufferPurgeable);
  assert_true(f & kIOMemoryBufferPageable);
  IOOptionBits old = 0;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableKeepCurrent, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableKeepCurrent, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableKeepCurrent, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableNonVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableVolatile);
  /* oldState may be NULL */
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableNonVolatile, NULL), kIOReturnSuccess);

  /* Empty discards the contents */
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  uint8_t data[64];
  memset(data, 0x99, sizeof data);
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), pg() + 1, data, sizeof data), sizeof data);
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableEmpty, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableNonVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableEmpty);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  uint8_t back[64];
  memset(back, 0x11, sizeof back);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), pg() + 1, back, sizeof back), sizeof back);
  assert_true(all_bytes(back, sizeof back, 0));
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  /* bad state still reports the current one */
  old = 0;
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), 0, &old), kIOReturnBadArgument);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  OSObject_release(b);

  /* NULL-task purgeable too */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIOMemoryPurgeable, pg(), 1);
  assert_non_null(b);
  assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(b), kIOMemoryPurgeableVolatile, &old), kIOReturnSuccess);
  assert_int_equal(old, kIOMemoryPurgeableNonVolatile);
  OSObject_release(b);
}

static void m4_performOperation_variants(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *bs[] = {
    IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 2 * pg(), 1),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMapInhibitCache, 2 * pg(), 1),
    IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionOut, 10, 1),
  };
  for (size_t k = 0; k < 3; k++) {
    assert_non_null(bs[k]);
    IOByteCount len = IOMemoryDescriptor_getLength(MD(bs[k]));
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(bs[k]), kIOMemoryIncoherentIOFlush, 0, len), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(bs[k]), kIOMemoryIncoherentIOStore, 1, len - 1), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(bs[k]), kIOMemoryIncoherentIOStore, len, 0), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(bs[k]), kIOMemoryIncoherentIOStore, len + 1, 1), kIOReturnUnderrun);
    assert_int_equal(IOMemoryDescriptor_performOperation(MD(bs[k]), 7, 0, len), kIOReturnUnsupported);
    OSObject_release(bs[k]);
  }
}

static void m4_tag_direction_independent(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionIn, 10);
  IOMemoryDescriptor_setTag(MD(b), 0xFFFFFFFF);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionIn);
  IOMemoryDescriptor_setDirection(MD(b), kIODirectionOut);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0xFFFFFFFF);
  /* setDirection does not re-wire: a buffer created In is still writable */
  assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, "q", 1), 1);
  uint64_t len = 0;
  assert_int_equal(IOMemoryDescriptor_GetLength(MD(b), &len), kIOReturnSuccess);
  assert_int_equal(len, 10);
  OSObject_release(b);
}

/* =============================== §5 IOMemoryMap ==================================================== */

static void map_unique_is_second_mapping(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 3 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  assert_non_null(p);
  assert_ptr_not_equal(p, base);
  IOOptionBits mo = IOMemoryMap_getMapOptions(m);
  assert_true(mo & kIOMapUnique);
  assert_true(mo & kIOMapAnywhere);
  assert_int_equal(mo & kIOMapStatic, 0);
  assert_int_equal(IOMemoryMap_getLength(m), 3 * pg());
  p[0] = 1;
  assert_int_equal(base[0], 1);
  base[3 * pg() - 1] = 2;
  assert_int_equal(p[3 * pg() - 1], 2);
  /* unique twice: two distinct objects */
  IOMemoryMap *m2 = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m2);
  assert_ptr_not_equal(m2, m);
  assert_int_not_equal(IOMemoryMap_getAddress(m2), IOMemoryMap_getAddress(m));
  OSObject_release(m2);
  OSObject_release(m);
  OSObject_release(b);
}

static void map_offset_mappings(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 4 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  for (uint64_t k = 0; k < 4 * pg(); k++) base[k] = (uint8_t)(k / 7);
  const struct { uint64_t off, len; } c[] = { { pg(), pg() }, { pg(), 3 * pg() }, { 100, 200 }, { 2 * pg() + 5, pg() } };
  for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, c[k].off, c[k].len);
    if (!m) print_failure("offset map");
    assert_non_null(m);
    uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
    assert_ptr_not_equal(p, base + c[k].off); /* a real second mapping */
    assert_int_equal(IOMemoryMap_getLength(m), c[k].len);
    assert_memory_equal(p, base + c[k].off, c[k].len);
    p[0] ^= 0xFF;
    assert_int_equal(base[c[k].off], p[0]);
    base[c[k].off + c[k].len - 1] = 0x42;
    assert_int_equal(p[c[k].len - 1], 0x42);
    IOByteCount l1 = 0, l2 = 0;
    IOPhysicalAddress a1 = IOMemoryMap_getPhysicalSegment(m, 0, &l1, 0);
    addr64_t a2 = IOMemoryDescriptor_getPhysicalSegment(MD(b), c[k].off, &l2, 0);
    if (phys_answered(a1, l1, "map segment")) {
      assert_int_equal(a1, a2);
      assert_int_equal(l1, l2);
      assert_int_equal(IOMemoryMap_getPhysicalAddress(m), a1);
    }
    OSObject_release(m);
  }
  /* offset with length 0: length becomes getLength(), so offset + length overflows the descriptor */
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, pg(), 0));
  OSObject_release(b);
}

static void map_readonly(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 2 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  /* kernel buffer: identity shortcut ignores ReadOnly */
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), kIOMapReadOnly);
  assert_non_null(m);
  assert_ptr_equal((uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m), base);
  assert_true(IOMemoryMap_getMapOptions(m) & kIOMapStatic);
  assert_true(IOMemoryMap_getMapOptions(m) & kIOMapReadOnly);
  ((uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m))[0] = 3;
  assert_int_equal(base[0], 3);
  OSObject_release(m);
  /* a real read-only mapping */
  m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique | kIOMapReadOnly, 0, 0);
  assert_non_null(m);
  volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  assert_int_equal(p[0], 3);
  assert_false(access_faults(p + pg(), false));
  assert_true(access_faults(p + pg(), true));
  OSObject_release(m);
  OSObject_release(b);
}

static void map_reference_and_submaps(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 4 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapReference, 0, 0));
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  IOMemoryMap *r = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapReference, 0, 0);
  assert_ptr_equal(r, m);
  assert_int_equal(OSObject_getRetainCount(m), 2);
  OSObject_release(r);
  /* a sub-range of an existing compatible map: points into the same memory */
  IOMemoryMap *s = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, pg(), pg());
  assert_non_null(s);
  assert_ptr_not_equal(s, m);
  uint8_t *sp = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(s);
  sp[10] = 0x77;
  assert_int_equal(base[pg() + 10], 0x77);
  assert_int_equal(IOMemoryMap_getLength(s), pg());
  OSObject_release(s);
  /* a different cache mode is not compatible with kIOMapReference */
  IOMemoryMap *c = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapReference | kIOMapInhibitCache, 0, 0);
  assert_null(c);
  OSObject_release(m);
  OSObject_release(b);
}

static void map_null_task_buffers(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getMapOptions(m) & kIOMapStatic, 0);
  assert_true(IOMemoryMap_getMapOptions(m) & kIOMapAnywhere);
  assert_ptr_equal(IOMemoryMap_getAddressTask(m), kernel_task);
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(m), MD(b));
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  /* a second, unique mapping sees the same memory */
  IOMemoryMap *u = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(u);
  uint8_t *q = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(u);
  assert_ptr_not_equal(p, q);
  p[100] = 0xAB;
  assert_int_equal(q[100], 0xAB);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getAddress(m), 0);
  assert_int_equal(q[100], 0xAB); /* the memory lives on */
  OSObject_release(u);
  OSObject_release(m);
  uint8_t r = 0;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 100, &r, 1), 1);
  assert_int_equal(r, 0xAB);
  OSObject_release(b);

  /* NULL + Pageable: map, write, then prepare and read back */
  b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryPageable | kIODirectionInOut, 2 * pg(), 1);
  assert_non_null(b);
  m = IOMemoryDescriptor_map(MD(b), 0);
  if (!m) print_failure("map NULL+Pageable");
  assert_non_null(m);
  p = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  assert_true(all_bytes(p, 2 * pg(), 0));
  p[pg() + 1] = 0xCD;
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), pg() + 1, &r, 1), 1);
  assert_int_equal(r, 0xCD);
  IOMemoryDescriptor_complete(MD(b), kIODirectionNone);
  OSObject_release(m);
  OSObject_release(b);
}

static void map_guard_pages(void **state) {
  (void)state;
  /* page-granular mapping semantics: 4K pages (pool memory maps in whole hugepages; test_pool) */
  long pool_was = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 2 * pg());
  const struct { IOOptionBits g; uint64_t guard; } c[] = { { kIOMapGuardedSmall, pg() }, { kIOMapGuardedLarge, 65536 } };
  for (int k = 0; k < 2; k++) {
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | c[k].g, 0, 0);
    assert_non_null(m);
    volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
    assert_false(access_faults(p, false));
    assert_false(access_faults(p + 2 * pg() - 1, true));
    assert_true(access_faults(p - 1, false));
    assert_true(access_faults(p + 2 * pg(), false));
    assert_true(access_faults(p - c[k].guard, false));
    assert_true(access_faults(p + 2 * pg() + c[k].guard - 1, false));
    OSObject_release(m);
  }
  /* guards are refused for a placed mapping */
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0x7f0000000000ull, kIOMapGuardedSmall, 0, 0));
  OSObject_release(b);
  dk_option_set(DK_OPTION_POOL, pool_was);
}

static void map_placed(void **state) {
  (void)state;
  /* page-granular mapping semantics: 4K pages (pool memory maps in whole hugepages; test_pool) */
  long pool_was = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 2 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  void *hole = mmap(NULL, 4 * pg(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(hole != MAP_FAILED);
  uintptr_t at = ((uintptr_t)hole + pg());
  munmap(hole, 4 * pg());
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, at, 0, 0, 0);
  if (!m) print_failure("placed map");
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getAddress(m), at);
  assert_int_equal(IOMemoryMap_getMapOptions(m) & kIOMapAnywhere, 0);
  ((uint8_t *)at)[5] = 9;
  assert_int_equal(base[5], 9);
  OSObject_release(m);
  OSObject_release(b);
  dk_option_set(DK_OPTION_POOL, pool_was);
}

static void map_placed_occupied(void **state) {
  (void)state;
  /* page-granular mapping semantics: 4K pages (pool memory maps in whole hugepages; test_pool) */
  long pool_was = dk_option_get(DK_OPTION_POOL);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 2 * pg());
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  base[0] = 0x44;
  uint8_t *mine = mmap(NULL, 2 * pg(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(mine != MAP_FAILED);
  memset(mine, 0x33, 2 * pg());
  /* the range is in use: a placed mapping without kIOMapOverwrite must not replace it */
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, (uintptr_t)mine, 0, 0, 0);
  if (m) OSObject_release(m);
  assert_null(m);
  assert_true(all_bytes(mine, 2 * pg(), 0x33));
  /* with kIOMapOverwrite it does */
  m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, (uintptr_t)mine, kIOMapOverwrite, 0, 0);
  if (!m) print_failure("kIOMapOverwrite");
  assert_non_null(m);
  assert_int_equal(IOMemoryMap_getAddress(m), (uintptr_t)mine);
  assert_int_equal(mine[0], 0x44);
  mine[1] = 0x45;
  assert_int_equal(base[1], 0x45);
  OSObject_release(m);
  munmap(mine, 2 * pg());
  OSObject_release(b);
  dk_option_set(DK_OPTION_POOL, pool_was);
}

static void map_physical_segment_forwarding(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 4 * pg(), pg());
  assert_non_null(b);
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere, pg(), pg());
  assert_non_null(m);
  assert_ptr_equal(IOMemoryMap_getMemoryDescriptor(m), MD(b));
  /* no check against the map's own length: only the descriptor's length bounds it */
  IOByteCount l1 = 0, l2 = 0;
  IOPhysicalAddress a1 = IOMemoryMap_getPhysicalSegment(m, pg() + 10, &l1, kIOMemoryMapperNone);
  if (phys_answered(a1, l1, "map beyond its length")) {
    addr64_t a2 = IOMemoryDescriptor_getPhysicalSegment(MD(b), 2 * pg() + 10, &l2, kIOMemoryMapperNone);
    assert_int_equal(a1, a2);
    assert_int_equal(l1, l2);
  }
  l1 = 99;
  assert_int_equal(IOMemoryMap_getPhysicalSegment(m, 3 * pg(), &l1, 0), 0); /* descriptor offset 4 pages */
  assert_int_equal(l1, 0);
  OSObject_release(m);
  OSObject_release(b);
}

static void map_lifetime(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, pg());
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  uintptr_t a = (uintptr_t)IOMemoryMap_getAddress(m);
  assert_int_equal(OSObject_getRetainCount(b), 2);
  OSObject_retain(m);
  assert_int_equal(OSObject_getRetainCount(m), 2);
  OSObject_release(m);
  assert_int_equal(IOMemoryMap_unmap(m), kIOReturnSuccess);
  /* the VM mapping is gone */
  assert_gone((volatile uint8_t *)a);
  assert_int_equal(IOMemoryMap_getLength(m), pg()); /* the object keeps its state */
  OSObject_release(m);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  /* the last release of a live real mapping unmaps it */
  m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  a = (uintptr_t)IOMemoryMap_getAddress(m);
  OSObject_release(m);
  assert_gone((volatile uint8_t *)a);
  OSObject_release(b);
}

/* =============================== §6 DriverKit ====================================================== */

static void dk_create_properties(void **state) {
  (void)state;
  for (uint64_t d = 0; d < 4; d++) {
    const uint64_t caps[] = { 1, 100, pg(), pg() + 1 };
    for (size_t c = 0; c < 4; c++) {
      IOBufferMemoryDescriptor *m = NULL;
      assert_int_equal(IOBufferMemoryDescriptor_Create(d, caps[c], 0, &m), kIOReturnSuccess);
      assert_non_null(m);
      dk_buffer_info i = info_of(m);
      assert_int_equal(i.options, d | kIOMemoryKernelUserShared | kIOMemoryThreadSafe);
      assert_int_equal(i.allocation_size, round_pg(caps[c]));
      assert_int_equal(i.alignment, pg());
      assert_ptr_equal(i.task, kernel_task);
      assert_true(i.wired);
      assert_int_equal(i.prepare_count, 1);
      assert_int_equal(IOMemoryDescriptor_getLength(MD(m)), caps[c]);
      assert_int_equal(IOBufferMemoryDescriptor_getCapacity(m), caps[c]);
      assert_int_equal(IOMemoryDescriptor_getFlags(MD(m)), expected_flags(d | kIOMemoryKernelUserShared | kIOMemoryThreadSafe));
      assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(m) % pg(), 0);
      assert_true(all_bytes(IOBufferMemoryDescriptor_getBytesNoCopy(m), round_pg(caps[c]), 0));
      OSObject_release(m);
    }
  }
  /* alignments: 0 and 1 mean none; small ones are absorbed by the page; above a page fails */
  const uint64_t al[] = { 1, 64, pg() };
  for (int k = 0; k < 3; k++) {
    IOBufferMemoryDescriptor *m = NULL;
    assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionIn, 100, al[k], &m), kIOReturnSuccess);
    assert_int_equal(info_of(m).alignment, pg());
    OSObject_release(m);
  }
  /* alignment above a page: contiguous; a DriverKit buffer is shared (kIOMemoryKernelUserShared),
   * so it gets a hugepage of its own, never a view of the pool's */
  IOBufferMemoryDescriptor *m = (IOBufferMemoryDescriptor *)(uintptr_t)0x20;
  if (pool_on()) {
    assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionIn, 100, 2 * pg(), &m), kIOReturnSuccess);
    assert_non_null(m);
    assert_int_equal(info_of(m).provider, DK_PROVIDER_HUGEFD);
    IOByteCount l = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(m), 0, &l, 0);
    assert_int_equal(pa % (2 * pg()), 0);
    assert_int_equal((uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(m) % (2 * pg()), 0);
    OSObject_release(m);
  } else {
    assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionIn, 100, 2 * pg(), &m), kIOReturnNoMemory);
    assert_null(m);
  }
}

static void dk_address_range_and_length(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *m = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 5000, 0, &m), kIOReturnSuccess);
  IOAddressSegment r = { 0, 0 };
  assert_int_equal(IOBufferMemoryDescriptor_GetAddressRange(m, &r), kIOReturnSuccess);
  assert_int_equal(r.address, (uintptr_t)IOBufferMemoryDescriptor_getBytesNoCopy(m));
  assert_int_equal(r.length, 5000);
  assert_int_equal(IOBufferMemoryDescriptor_SetLength(m, 123), kIOReturnSuccess);
  assert_int_equal(IOBufferMemoryDescriptor_GetAddressRange(m, &r), kIOReturnSuccess);
  assert_int_equal(r.length, 123);
  uint64_t len = 0;
  assert_int_equal(IOMemoryDescriptor_GetLength(MD(m), &len), kIOReturnSuccess);
  assert_int_equal(len, 123);
  assert_int_equal(IOBufferMemoryDescriptor_SetLength(m, 6000), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(m)), 123);
  OSObject_release(m);
}

static void dk_create_mapping(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionInOut, 3 * pg(), 0, &b), kIOReturnSuccess);
  uint8_t *base = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  /* default: guarded small, anywhere, the whole length */
  IOMemoryMap *map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 0, 0, 0, &map), kIOReturnSuccess);
  assert_non_null(map);
  IOOptionBits mo = IOMemoryMap_getMapOptions(map);
  assert_int_equal(mo & kIOMapGuardedMask, kIOMapGuardedSmall);
  assert_true(mo & kIOMapAnywhere);
  assert_int_equal(mo & kIOMapReadOnly, 0);
  assert_int_equal(IOMemoryMap_GetAddress(map), IOMemoryMap_getAddress(map));
  assert_int_not_equal(IOMemoryMap_GetAddress(map), 0);
  assert_int_equal(IOMemoryMap_GetLength(map), 3 * pg());
  assert_int_equal(IOMemoryMap_GetLength(map), IOMemoryMap_getLength(map));
  assert_int_equal(IOMemoryMap_GetOffset(map), 0);
  uint8_t *p = (uint8_t *)(uintptr_t)IOMemoryMap_GetAddress(map);
  p[1] = 0x61;
  assert_int_equal(base[1], 0x61);
  assert_true(access_faults((volatile uint8_t *)p - 1, false));
  OSObject_release(map);

  /* offset and length */
  map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, pg(), pg(), 0, &map), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_GetOffset(map), pg());
  assert_int_equal(IOMemoryMap_GetLength(map), pg());
  ((uint8_t *)(uintptr_t)IOMemoryMap_GetAddress(map))[2] = 0x62;
  assert_int_equal(base[pg() + 2], 0x62);
  OSObject_release(map);

  /* read-only and guard selection */
  map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), kIOMemoryMapReadOnly | kIOMemoryMapGuardedLarge, 0, 0, 0, 0, &map), kIOReturnSuccess);
  mo = IOMemoryMap_getMapOptions(map);
  assert_true(mo & kIOMapReadOnly);
  assert_int_equal(mo & kIOMapGuardedMask, kIOMapGuardedLarge);
  assert_true(access_faults((volatile uint8_t *)(uintptr_t)IOMemoryMap_GetAddress(map), true));
  OSObject_release(map);
  map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), kIOMemoryMapGuardedNone, 0, 0, 0, 0, &map), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getMapOptions(map) & kIOMapGuardedMask, 0);
  OSObject_release(map);

  /* cache selectors translate to the kernel encodings */
  const struct { uint64_t dk; IOOptionBits k; } cs[] = {
    { kIOMemoryMapCacheModeDefault, kIOMapDefaultCache }, { kIOMemoryMapCacheModeInhibit, kIOMapInhibitCache },
    { kIOMemoryMapCacheModeCopyback, kIOMapCopybackCache }, { kIOMemoryMapCacheModeWriteThrough, kIOMapWriteThruCache },
    { kIOMemoryMapCacheModeRealTime, kIOMapRealTimeCache },
  };
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
    map = NULL;
    assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), cs[k].dk, 0, 0, 0, 0, &map), kIOReturnSuccess);
    assert_int_equal(IOMemoryMap_getMapOptions(map) & kIOMapCacheMask, cs[k].k);
    OSObject_release(map);
  }
  /* a failed mapping is kIOReturnError */
  map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 3 * pg(), 0, 0, &map), kIOReturnError);
  assert_null(map);
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 0, 4 * pg(), 0, &map), kIOReturnError);
  assert_null(map);
  OSObject_release(b);

  /* the creator of an Out buffer is not forced read-only */
  b = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(kIOMemoryDirectionOut, pg(), 0, &b), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 0, 0, 0, &map), kIOReturnSuccess);
  assert_int_equal(IOMemoryMap_getMapOptions(map) & kIOMapReadOnly, 0);
  OSObject_release(map);
  OSObject_release(b);
}

/* =============================== OSObject ========================================================== */

static void obj_refcounting(void **state) {
  (void)state;
  assert_int_equal(OSObject_getRetainCount(NULL), 0);
  OSObject_retain(NULL);
  OSObject_release(NULL);
  IOBufferMemoryDescriptor *b = kbuf(0, 10);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  OSObject_retain(b);
  OSObject_retain(b);
  assert_int_equal(OSObject_getRetainCount(b), 3);
  OSObject_release(b);
  assert_int_equal(OSObject_getRetainCount(b), 2);
  OSObject_release(b);
  OSSafeReleaseNULL(b);
  assert_null(b);
  OSSafeReleaseNULL(b); /* NULL: nothing */
  IOBufferMemoryDescriptor *a = IOBufferMemoryDescriptor_alloc();
  assert_int_equal(OSObject_getRetainCount(a), 1);
  OSObject_release(a);
  IOBufferMemoryDescriptor *m = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(0, 10, 0, &m), kIOReturnSuccess);
  assert_int_equal(OSObject_getRetainCount(m), 1);
  IOMemoryMap *map = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(m), 0, 0, 0, 0, 0, &map), kIOReturnSuccess);
  assert_int_equal(OSObject_getRetainCount(map), 1);
  assert_int_equal(OSObject_getRetainCount(m), 2);
  OSObject_release(map);
  assert_int_equal(OSObject_getRetainCount(m), 1);
  OSObject_release(m);
}

/* =============================== dk_last_failure =================================================== */

static void *fail_in_thread(void *arg) {
  (void)arg;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withCapacity(0, 0, false);
  (void)b;
  return (void *)(uintptr_t)dk_last_failure()->constraint;
}

static void failure_contents(void **state) {
  (void)state;
  dk_clear_failure();
  assert_non_null(dk_last_failure());
  ASSERT_NO_FAILURE();

  assert_null(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0, 0, 1));
  const dk_failure *f = dk_last_failure();
  assert_int_not_equal(f->code, kIOReturnSuccess);
  assert_int_equal(f->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_non_null(f->function);
  assert_true(strlen(f->function) > 0);
  assert_true(strlen(f->text) > 0);
  assert_true(strlen(f->text) < sizeof f->text);
  print_message("capacity 0: %s: %s\n", f->function, f->text);

  /* cleared on entry of a call that succeeds */
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 100);
  ASSERT_NO_FAILURE();
  if (pool_on()) {
    /* the pool meets it: a success clears the failure */
    IOBufferMemoryDescriptor *c = IOBufferMemoryDescriptor_withCapacity(3 * pg(), kIODirectionIn, true);
    assert_non_null(c);
    ASSERT_NO_FAILURE();
    OSObject_release(c);
  } else {
    assert_null(IOBufferMemoryDescriptor_withCapacity(3 * pg(), kIODirectionIn, true));
    assert_physical_refusal("failure_contents contiguity");
    print_message("contiguity: %s: %s\n", dk_last_failure()->function, dk_last_failure()->text);
    assert_true(strlen(dk_last_failure()->text) > 0);
  }
  assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess);
  ASSERT_NO_FAILURE();
  uint8_t x;
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 200, &x, 1), 0);
  ASSERT_FAILURE_KIND(DK_CONSTRAINT_RANGE);
  assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, &x, 1), 1);
  ASSERT_NO_FAILURE();
  assert_null(IOMemoryDescriptor_createMappingInTask(MD(b), NULL, 0, kIOMapAnywhere, 0, 0));
  assert_int_not_equal(dk_last_failure()->code, kIOReturnSuccess);
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  assert_non_null(m);
  ASSERT_NO_FAILURE();
  OSObject_release(m);
  /* DriverKit */
  IOBufferMemoryDescriptor *d = NULL;
  assert_int_equal(IOBufferMemoryDescriptor_Create(0x100, 10, 0, &d), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->code, kIOReturnBadArgument);
  assert_int_equal(IOBufferMemoryDescriptor_Create(0, 10, 0, &d), kIOReturnSuccess);
  ASSERT_NO_FAILURE();
  OSObject_release(d);
  /* dk_clear_failure */
  assert_null(IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0, 0, 1));
  dk_clear_failure();
  ASSERT_NO_FAILURE();

  /* per thread */
  pthread_t t;
  void *res = NULL;
  assert_int_equal(pthread_create(&t, NULL, fail_in_thread, NULL), 0);
  assert_int_equal(pthread_join(t, &res), 0);
  assert_int_equal((uintptr_t)res, DK_CONSTRAINT_ARGUMENT);
  ASSERT_NO_FAILURE();
  OSObject_release(b);
}

static void provoke(void) {
  assert_null(IOBufferMemoryDescriptor_withOptions(0, 0, 1));
  assert_int_not_equal(dk_last_failure()->code, kIOReturnSuccess);
}

static void failure_cleared_on_entry(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 2 * pg());
  IOBufferMemoryDescriptor *p = kbuf(kIOMemoryPageable | kIOMemoryPurgeable | kIODirectionInOut, pg());
  uint8_t x[8] = { 0 };
  IOOptionBits old;
  provoke(); assert_int_equal(IOMemoryDescriptor_prepare(MD(b), kIODirectionNone), kIOReturnSuccess); ASSERT_NO_FAILURE();
  provoke(); assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess); ASSERT_NO_FAILURE();
  provoke(); assert_int_equal(IOMemoryDescriptor_readBytes(MD(b), 0, x, 8), 8); ASSERT_NO_FAILURE();
  provoke(); assert_int_equal(IOMemoryDescriptor_writeBytes(MD(b), 0, x, 8), 8); ASSERT_NO_FAILURE();
  provoke(); assert_int_equal(IOMemoryDescriptor_performOperation(MD(b), kIOMemoryIncoherentIOFlush, 0, 8), kIOReturnSuccess); ASSERT_NO_FAILURE();
  provoke(); assert_int_equal(IOMemoryDescriptor_setPurgeable(MD(p), kIOMemoryPurgeableKeepCurrent, &old), kIOReturnSuccess); ASSERT_NO_FAILURE();
  provoke();
  IOByteCount len = 0;
  addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &len, 0);
  if (pa) ASSERT_NO_FAILURE();
  else phys_answered(pa, len, "cleared on entry");
  provoke();
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(b), kernel_task, 0, kIOMapAnywhere | kIOMapUnique, 0, 0);
  assert_non_null(m);
  ASSERT_NO_FAILURE();
  OSObject_release(m);
  provoke();
  m = NULL;
  assert_int_equal(IOMemoryDescriptor_CreateMapping(MD(b), 0, 0, 0, 0, 0, &m), kIOReturnSuccess);
  ASSERT_NO_FAILURE();
  OSObject_release(m);
  provoke();
  IOBufferMemoryDescriptor *c = IOBufferMemoryDescriptor_withBytes("abc", 3, kIODirectionOut, false);
  assert_non_null(c);
  ASSERT_NO_FAILURE();
  OSObject_release(c);
  provoke();
  c = IOBufferMemoryDescriptor_alloc();
  assert_true(IOBufferMemoryDescriptor_initWithPhysicalMask(c, kernel_task, 0, 10, 1, 0));
  ASSERT_NO_FAILURE();
  OSObject_release(c);
  OSObject_release(p);
  OSObject_release(b);
}

static void failure_names(void **state) {
  (void)state;
  const char *names[DK_CONSTRAINT_RANGE + 1];
  for (int k = DK_CONSTRAINT_NONE; k <= DK_CONSTRAINT_RANGE; k++) {
    names[k] = dk_constraint_name((dk_constraint_kind)k);
    assert_non_null(names[k]);
    assert_true(strlen(names[k]) > 0);
    for (int j = 0; j < k; j++) assert_string_not_equal(names[j], names[k]);
  }
  assert_non_null(dk_provider_name(DK_PROVIDER_NONE));
  assert_non_null(dk_provider_name(DK_PROVIDER_MEMFD_4K));
  assert_string_not_equal(dk_provider_name(DK_PROVIDER_NONE), dk_provider_name(DK_PROVIDER_MEMFD_4K));
  for (int k = DK_PIN_NONE; k <= DK_PIN_NO_COMPACTION; k++) assert_non_null(dk_pin_method_name((dk_pin_method)k));
  for (int k = 0; k < DK_OPTION__COUNT; k++) assert_non_null(dk_option_name((dk_option)k));
  const dk_caps *c = dk_capabilities();
  assert_int_equal(c->root, geteuid() == 0);
  if (!c->root) assert_false(c->pagemap_frames);
  assert_true(c->ram_top > 0);
}

/* =============================== threads ============================================================ */

struct hammer { void *obj; int iters; IOBufferMemoryDescriptor *buf; };

static void *retain_release(void *arg) {
  struct hammer *h = arg;
  for (int k = 0; k < h->iters; k++) {
    OSObject_retain(h->obj);
    OSObject_release(h->obj);
  }
  return NULL;
}

static void *retain_only(void *arg) {
  struct hammer *h = arg;
  for (int k = 0; k < h->iters; k++) OSObject_retain(h->obj);
  return NULL;
}

static void *release_only(void *arg) {
  struct hammer *h = arg;
  for (int k = 0; k < h->iters; k++) OSObject_release(h->obj);
  return NULL;
}

static void *prepare_complete(void *arg) {
  struct hammer *h = arg;
  for (int k = 0; k < h->iters; k++) {
    if (IOMemoryDescriptor_prepare(MD(h->buf), kIODirectionNone) != kIOReturnSuccess) return (void *)1;
    if (IOMemoryDescriptor_complete(MD(h->buf), kIODirectionNone) != kIOReturnSuccess) return (void *)1;
  }
  return NULL;
}

static void run2(void *(*fn)(void *), struct hammer *h) {
  pthread_t a, b;
  void *ra = NULL, *rb = NULL;
  assert_int_equal(pthread_create(&a, NULL, fn, h), 0);
  assert_int_equal(pthread_create(&b, NULL, fn, h), 0);
  assert_int_equal(pthread_join(a, &ra), 0);
  assert_int_equal(pthread_join(b, &rb), 0);
  assert_null(ra);
  assert_null(rb);
}

static void threads_refcount(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut, 100);
  struct hammer h = { b, 100000, b };
  run2(retain_release, &h);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  run2(retain_only, &h);
  assert_int_equal(OSObject_getRetainCount(b), 200001);
  run2(release_only, &h);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  /* a map object too */
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), 0);
  struct hammer hm = { m, 100000, b };
  run2(retain_release, &hm);
  assert_int_equal(OSObject_getRetainCount(m), 1);
  OSObject_release(m);
  OSObject_release(b);
}

static void threads_prepare_complete(void **state) {
  (void)state;
  IOBufferMemoryDescriptor *b = kbuf(kIODirectionInOut | kIOMemoryThreadSafe, 4 * pg());
  struct hammer h = { b, 20000, b };
  run2(prepare_complete, &h);
  assert_int_equal(info_of(b).prepare_count, 1);
  assert_true(info_of(b).wired);
  OSObject_release(b);
  b = kbuf(kIOMemoryPageable | kIOMemoryThreadSafe | kIODirectionInOut, 4 * pg());
  struct hammer hp = { b, 2000, b };
  run2(prepare_complete, &hp);
  assert_int_equal(info_of(b).prepare_count, 0);
  assert_false(info_of(b).wired);
  OSObject_release(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(fac_inTaskWithOptions),
    cmocka_unit_test(fac_inTaskWithOptionsTagged),
    cmocka_unit_test(fac_inTaskWithPhysicalMask),
    cmocka_unit_test(fac_withOptions),
    cmocka_unit_test(fac_withCapacity),
    cmocka_unit_test(fac_withBytes),
    cmocka_unit_test(fac_withCopy),
    cmocka_unit_test(fac_alloc_init),
    cmocka_unit_test(sec2_flags_composition),
    cmocka_unit_test(sec2_mask_derivation_table),
    cmocka_unit_test(sec2_sharing_cache_encrypt_round),
    cmocka_unit_test(sec2_cache_mode_bits),
    cmocka_unit_test(sec2_strict_cache_mode),
    cmocka_unit_test(sec2_pageable_ignores_physical),
    cmocka_unit_test(sec2_wired_case),
    cmocka_unit_test(sec2_task_rule_and_steps_12_20),
    cmocka_unit_test(m4_appendBytes),
    cmocka_unit_test(m4_read_write_bytes),
    cmocka_unit_test(m4_out_only_lifecycle),
    cmocka_unit_test(m4_unprepared_pageable),
    cmocka_unit_test(m4_physical_segments_walk),
    cmocka_unit_test(m4_setPurgeable_lifecycle),
    cmocka_unit_test(m4_performOperation_variants),
    cmocka_unit_test(m4_tag_direction_independent),
    cmocka_unit_test(map_unique_is_second_mapping),
    cmocka_unit_test(map_offset_mappings),
    cmocka_unit_test(map_readonly),
    cmocka_unit_test(map_reference_and_submaps),
    cmocka_unit_test(map_null_task_buffers),
    cmocka_unit_test(map_guard_pages),
    cmocka_unit_test(map_placed),
    cmocka_unit_test(map_placed_occupied),
    cmocka_unit_test(map_physical_segment_forwarding),
    cmocka_unit_test(map_lifetime),
    cmocka_unit_test(dk_create_properties),
    cmocka_unit_test(dk_address_range_and_length),
    cmocka_unit_test(dk_create_mapping),
    cmocka_unit_test(obj_refcounting),
    cmocka_unit_test(failure_contents),
    cmocka_unit_test(failure_cleared_on_entry),
    cmocka_unit_test(failure_names),
    cmocka_unit_test(threads_refcount),
    cmocka_unit_test(threads_prepare_complete),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
