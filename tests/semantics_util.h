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
