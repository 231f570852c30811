/* tests/semantics_util.h: small helpers shared by test_reference.c and test_semantics.c.
 * Everything is static inline so that each test program only keeps what it uses.
 * Include after <cmocka.h> and <dmakit/dmakit.h>. */
#ifndef DK_TEST_SEMANTICS_UTIL_H
#define DK_TEST_SEMANTICS_UTIL_H

#include <stdio.h>
#include <string.h>

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

/* A physical mask whose limit is far above any RAM this machine has: the library drops such a
 * limit (dk_capabilities()->ram_top), so it never restricts where the RAM comes from. */
#define BIG_MASK ((1ull << 48) - 1)

static inline uint64_t pg(void) { return dk_capabilities()->page_size; }

static inline uint64_t round_pg(uint64_t n) { return (n + pg() - 1) & ~(pg() - 1); }

static inline uint64_t next_pow2(uint64_t n) {
  uint64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

static inline dk_buffer_info info_of(IOBufferMemoryDescriptor *b) {
  dk_buffer_info i;
  memset(&i, 0xA5, sizeof i);
  assert_non_null(b);
  assert_int_equal(dk_buffer_get_info(b, &i), kIOReturnSuccess);
  return i;
}

static inline bool all_bytes(const void *p, size_t n, uint8_t v) {
  const uint8_t *c = (const uint8_t *)p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != v) return false;
  return true;
}

static inline void print_failure(const char *where) {
  const dk_failure *f = dk_last_failure();
  print_message("%s: dk_last_failure code=0x%08x (%s) constraint=%s function=%s text=\"%s\"\n",
                where, (unsigned)f->code, dk_ioreturn_name(f->code),
                dk_constraint_name(f->constraint), f->function ? f->function : "(null)", f->text);
}

/* dk_last_failure() must describe exactly this code and constraint. */
#define ASSERT_FAILURE(code_, kind_)                                                    \
  do {                                                                                  \
    const dk_failure *f_ = dk_last_failure();                                           \
    if (f_->code != (IOReturn)(code_) || f_->constraint != (kind_))                     \
      print_failure(#code_ "/" #kind_);                                                 \
    assert_int_equal(f_->code, (IOReturn)(code_));                                      \
    assert_int_equal(f_->constraint, (kind_));                                          \
  } while (0)

#define ASSERT_FAILURE_KIND(kind_)                                                      \
  do {                                                                                  \
    const dk_failure *f_ = dk_last_failure();                                           \
    if (f_->constraint != (kind_)) print_failure(#kind_);                               \
    assert_int_equal(f_->constraint, (kind_));                                          \
    assert_int_not_equal(f_->code, kIOReturnSuccess);                                   \
  } while (0)

#define ASSERT_NO_FAILURE()                                                             \
  do {                                                                                  \
    const dk_failure *f_ = dk_last_failure();                                           \
    if (f_->code != kIOReturnSuccess) print_failure("expected no failure");             \
    assert_int_equal(f_->code, kIOReturnSuccess);                                       \
    assert_int_equal(f_->constraint, DK_CONSTRAINT_NONE);                               \
  } while (0)

/* The 4K provider cannot give physical contiguity beyond a page or physical alignment
 * beyond a page: such a request fails with kIOReturnNoMemory and says which. Without frame
 * numbers (not root) the refusal may instead be about privilege. */
static inline void assert_physical_refusal(const char *what) {
  const dk_failure *f = dk_last_failure();
  if (f->code == kIOReturnNoMemory &&
      (f->constraint == DK_CONSTRAINT_CONTIGUITY || f->constraint == DK_CONSTRAINT_ALIGNMENT))
    return;
  if (!dk_capabilities()->pagemap_frames && f->code == kIOReturnNotPrivileged &&
      f->constraint == DK_CONSTRAINT_PRIVILEGE)
    return;
  print_failure(what);
  fail_msg("%s: expected kIOReturnNoMemory with CONTIGUITY/ALIGNMENT", what);
}

/* ---- which provider serves a wired buffer ------------------------------------------------------
 * As root with hugetlb (dk_capabilities()->pool_usable) and DK_OPTION_POOL on (the default;
 * DMAKIT_POOL=0 turns it off) every wired buffer comes from the hugepage pool: physically one
 * segment, aligned to next_pow2(alignment), masks met. Otherwise wired buffers are 4K pages,
 * which cannot promise contiguity or physical alignment beyond a page. */
static inline bool pool_on(void) {
  return dk_capabilities()->pool_usable && dk_option_get(DK_OPTION_POOL) != 0;
}

/* The provider the routing picks for a wired buffer of this allocation size and final
 * alignment: small buffers (size class next_pow2(max(size, alignment)) up to 4 KiB) are slab
 * slots, the rest pool ranges; without the pool, 4K pages. */
static inline dk_provider wired_provider(uint64_t allocation_size, uint64_t alignment) {
  if (!pool_on()) return DK_PROVIDER_MEMFD_4K;
  uint64_t a = next_pow2(alignment ? alignment : 1);
  uint64_t need = allocation_size > a ? allocation_size : a;
  return need <= 4096 ? DK_PROVIDER_POOL_SLAB : DK_PROVIDER_POOL;
}

/* b is wired, and from the provider the routing picks for it. */
static inline void assert_wired_provider(IOBufferMemoryDescriptor *b, const char *what) {
  dk_buffer_info i = info_of(b);
  assert_true(i.wired);
  assert_false(i.pageable);
  dk_provider want = wired_provider(i.allocation_size, i.alignment);
  /* kIOMemoryKernelUserShared buffers have a file of their own: 4K pages, or a hugepage of
   * their own where 4K pages cannot keep the promise (alignment above a page); never the pool */
  if (i.options & kIOMemorySharingTypeMask)
    want = next_pow2(i.alignment ? i.alignment : 1) <= pg() || !pool_on() ? DK_PROVIDER_MEMFD_4K : DK_PROVIDER_HUGEFD;
  if (i.provider != want)
    fail_msg("%s: provider %s, expected %s (pool %s, allocation %llu, alignment %llu)", what,
             dk_provider_name(i.provider), dk_provider_name(want), pool_on() ? "on" : "off",
             (unsigned long long)i.allocation_size, (unsigned long long)i.alignment);
}

/* Prove a physical promise through getPhysicalSegment (both option values): the walk over
 * [0, getLength()) has one segment when `contiguous`, starts at a multiple of
 * next_pow2(alignment), and every byte lies at or below `limit` (0 = none). */
static inline void assert_physical_promise(IOBufferMemoryDescriptor *b, uint64_t alignment, uint64_t limit,
                                           bool contiguous, const char *what) {
  const IOOptionBits opts[] = { 0, kIOMemoryMapperNone };
  IOByteCount len = IOMemoryDescriptor_getLength(MD(b));
  assert_true(len > 0);
  for (int o = 0; o < 2; o++) {
    IOByteCount off = 0;
    unsigned segs = 0;
    addr64_t first = 0;
    while (off < len) {
      IOByteCount sl = 0;
      addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(b), off, &sl, opts[o]);
      if (pa == 0 || sl == 0 || sl > len - off) {
        print_failure(what);
        fail_msg("%s: offset %llu of %llu: segment 0x%llx +%llu", what, (unsigned long long)off,
                 (unsigned long long)len, (unsigned long long)pa, (unsigned long long)sl);
      }
      if (segs == 0) first = pa;
      if (limit && pa + sl - 1 > limit)
        fail_msg("%s: segment 0x%llx +%llu ends above the limit 0x%llx", what, (unsigned long long)pa,
                 (unsigned long long)sl, (unsigned long long)limit);
      off += sl;
      segs++;
    }
    if (contiguous && segs != 1)
      fail_msg("%s: %u physical segments for %llu contiguous bytes", what, segs, (unsigned long long)len);
    uint64_t a = next_pow2(alignment ? alignment : 1);
    if (first % a != 0)
      fail_msg("%s: physical start 0x%llx is not a multiple of 0x%llx", what, (unsigned long long)first,
               (unsigned long long)a);
    /* the segment at any offset is the start plus the offset when contiguous */
    if (contiguous) {
      IOByteCount sl = 0;
      assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), len - 1, &sl, opts[o]), first + len - 1);
      assert_int_equal(sl, 1);
    }
  }
}

/* A wired request beyond what 4K pages can promise (contiguity or physical alignment beyond a
 * page, a mask below the frames the kernel hands out): with the pool it must exist, come from
 * the routed provider and keep the promise (one segment, physical start % next_pow2(alignment)
 * == 0, every byte at or below `limit`); without the pool it is refused as
 * assert_physical_refusal() says. Releases b. */
static inline void assert_pool_meets_or_4k_refuses(IOBufferMemoryDescriptor *b, uint64_t alignment, uint64_t limit,
                                                   const char *what) {
  if (pool_on()) {
    if (!b) {
      print_failure(what);
      fail_msg("%s: the hugepage pool must meet this request", what);
    }
    ASSERT_NO_FAILURE();
    assert_wired_provider(b, what);
    assert_physical_promise(b, alignment, limit, true, what);
    OSObject_release(b);
    return;
  }
  if (b) OSObject_release(b);
  assert_null(b);
  assert_physical_refusal(what);
}

/* getPhysicalSegment either answers (root with frame numbers) or returns 0 with *len 0 and
 * says why: no frame numbers (privilege) or frames that cannot be pinned. */
static inline bool phys_answered(addr64_t pa, IOByteCount len, const char *what) {
  if (pa != 0) {
    assert_true(len > 0);
    return true;
  }
  assert_int_equal(len, 0);
  const dk_failure *f = dk_last_failure();
  if (!dk_capabilities()->pagemap_frames) {
    if (f->constraint != DK_CONSTRAINT_PRIVILEGE) print_failure(what);
    assert_int_equal(f->constraint, DK_CONSTRAINT_PRIVILEGE);
    return false;
  }
  if (f->constraint != DK_CONSTRAINT_PIN) print_failure(what);
  assert_int_equal(f->constraint, DK_CONSTRAINT_PIN);
  assert_true(dk_option_get(DK_OPTION_REQUIRE_PIN) != 0);
  return false;
}

#endif
