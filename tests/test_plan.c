/* tests/test_plan.c: REFERENCE.md §2 steps 1-16 as a table. Each row gives initWithPhysicalMask's
 * arguments (with a page size and whether a mapper exists) and the values XNU derives, worked
 * out by hand from the reference, then checks src/iokit/plan.c against them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "iokit/plan.h"

#define P4K  4096ull
#define P16K 16384ull
#define FAILS 0xffffffffffffffffull     /* expected alignment marker for a failing row */

typedef struct row {
  const char  *name;
  dk_task_kind task;
  IOOptionBits options;
  uint64_t     capacity, alignment, mask, page;
  bool         mapped;
  /* expected */
  uint64_t     alignment_out;            /* FAILS: init returns false */
  dk_constraint_kind fail_kind;
  uint64_t     size_out, limit_out;
  uint8_t      bits_out;
  bool         contig_out;
  uint32_t     flags_out;
} row;

#define BASE   (kIOMemoryTypeVirtual64 | kIOMemoryAsReference)            /* 0x110 */
#define WIRED  (BASE | kIOMemoryAutoPrepare)                              /* 0x118 */
#define PAGED  (BASE | kIOMemoryBufferPageable | kIOMemoryPersistent)

static const row rows[] = {
  /* step 1 */
  { "capacity 0", DK_TASK_KERNEL, 0, 0, 1, 0, P4K, false, FAILS, DK_CONSTRAINT_ARGUMENT, 0, 0, 0, false, 0 },
  /* plain: alignment 1, no rounding */
  { "plain 100 bytes", DK_TASK_KERNEL, 0, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, false, WIRED },
  { "alignment 0 is none", DK_TASK_KERNEL, 0, 100, 0, 0, P4K, false, 0, 0, 100, 0, 64, false, WIRED },
  { "direction bits kept unvalidated", DK_TASK_KERNEL, 0x7, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, false, WIRED | 7 },
  /* step 6: the mask's derivations */
  { "mask 0xFFFFFFFF", DK_TASK_KERNEL, 0, 100, 1, 0xFFFFFFFFull, P4K, false, P4K, 0, P4K, 0xFFFFFFFFull, 64, false, WIRED },
  { "mask 0xFFFFF000", DK_TASK_KERNEL, 0, 100, 1, 0xFFFFF000ull, P4K, false, P4K, 0, P4K, 0xFFFFFFFFull, 64, false, WIRED },
  { "mask 0xFFFF0000 forces 64K, contiguous", DK_TASK_KERNEL, 0, 100, 1, 0xFFFF0000ull, P4K, false, 0x10000, 0, P4K, 0xFFFFFFFFull, 64, true, WIRED },
  { "mask 36-bit", DK_TASK_KERNEL, 0, 8192, 1, 0xFFFFFFFFFull, P4K, false, P4K, 0, 8192, 0xFFFFFFFFFull, 64, false, WIRED },
  { "mask with a hole: only the top counts", DK_TASK_KERNEL, 0, 100, 1, 0xF0F0F000ull, P4K, false, P4K, 0, P4K, 0xF0F0FFFFull, 64, false, WIRED },
  { "mask 0xFFFFF000 on 16K pages", DK_TASK_KERNEL, 0, 100, 1, 0xFFFFF000ull, P16K, false, P16K, 0, P16K, 0xFFFFFFFFull, 64, false, WIRED },
  /* step 6: alignment > 1 makes the mask ignored */
  { "mask ignored with alignment 8", DK_TASK_KERNEL, 0, 100, 8, 0xFFFFFFFFull, P4K, false, 8, 0, 100, 0, 64, false, WIRED },
  { "mask ignored with alignment page", DK_TASK_KERNEL, 0, 100, P4K, 0xFFFFFFFFull, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED },
  /* step 12: with a mapper the limit becomes address bits */
  { "mapper: 32-bit mask -> 32 bits, no RAM limit", DK_TASK_KERNEL, 0, 100, 1, 0xFFFFFFFFull, P4K, true, P4K, 0, P4K, 0, 32, false, WIRED },
  { "mapper: 36-bit mask -> 36 bits", DK_TASK_KERNEL, 0, 100, 1, 0xFFFFFFFFFull, P4K, true, P4K, 0, P4K, 0, 36, false, WIRED },
  /* kIOMemoryMapperNone (0x800) lies inside kIOMapCacheMask (0xf00): XNU's cache arithmetic reads
   * it as cache mode 8, so it also page-aligns and marks the buffer persistent. */
  { "MapperNone keeps the RAM limit", DK_TASK_KERNEL, kIOMemoryMapperNone, 100, 1, 0xFFFFFFFFull, P4K, true, P4K, 0, P4K, 0xFFFFFFFFull, 64, false, WIRED | kIOMemoryMapperNone | 0x80000000u | kIOMemoryPersistent },
  /* step 7: sharing, cache mode, encryption force page alignment */
  { "KernelUserShared page-aligns", DK_TASK_KERNEL, kIOMemoryKernelUserShared, 100, 1, 0, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED },
  { "cache mode inhibit", DK_TASK_KERNEL, kIOMapInhibitCache, 100, 1, 0, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED | (1u << 28) | kIOMemoryPersistent },
  /* modes 8 and 9 (0x800, 0x900) carry the kIOMemoryMapperNone bit into _flags as well */
  { "cache mode 8 spills to bit 31", DK_TASK_KERNEL, kIOMapPostedReordered, 100, 1, 0, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED | kIOMemoryMapperNone | 0x80000000u | kIOMemoryPersistent },
  { "cache mode 9 spills to bits 31 and 28", DK_TASK_KERNEL, kIOMapPostedCombinedReordered, 100, 1, 0, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED | kIOMemoryMapperNone | 0x90000000u | kIOMemoryPersistent },
  { "ClearEncrypt page-aligns", DK_TASK_KERNEL, kIOMemoryClearEncrypt, 100, 1, 0, P4K, false, P4K, 0, P4K, 0, 64, false, WIRED | kIOMemoryClearEncrypt },
  /* steps 8-9: page rounding, big alignment means contiguous */
  { "alignment = page rounds the size", DK_TASK_KERNEL, 0, P4K + 1, P4K, 0, P4K, false, P4K, 0, 2 * P4K, 0, 64, false, WIRED },
  { "alignment > page forces contiguity", DK_TASK_KERNEL, 0, 100, 2 * P4K, 0, P4K, false, 2 * P4K, 0, P4K, 0, 64, true, WIRED },
  { "odd alignment (withCapacity 12K contiguous)", DK_TASK_KERNEL, kIOMemoryPhysicallyContiguous, 3 * P4K, 3 * P4K, 0, P4K, false, 3 * P4K, 0, 3 * P4K, 0, 64, true, WIRED },
  { "alignment just below a page: no rounding", DK_TASK_KERNEL, 0, 100, P4K - 1, 0, P4K, false, P4K - 1, 0, 100, 0, 64, false, WIRED },
  /* step 8 / 10: overflow */
  { "page rounding overflows", DK_TASK_KERNEL, 0, UINT64_MAX - 10, P4K, 0, P4K, false, FAILS, DK_CONSTRAINT_ARGUMENT, 0, 0, 0, false, 0 },
  { "capacity + alignment wraps", DK_TASK_KERNEL, 0, UINT64_MAX - 100, 1024, 0, P4K, false, FAILS, DK_CONSTRAINT_ARGUMENT, 0, 0, 0, false, 0 },
  { "capacity + alignment exactly fits", DK_TASK_KERNEL, 0, UINT64_MAX - 1024, 1024, 0, P4K, false, 1024, 0, UINT64_MAX - 1024, 0, 64, false, WIRED },
  /* step 11: tasks */
  { "other task without Pageable fails", DK_TASK_OTHER, 0, 100, 1, 0, P4K, false, FAILS, DK_CONSTRAINT_TASK, 0, 0, 0, false, 0 },
  { "NULL task without Pageable: seed page wins", DK_TASK_NULL, 0, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, false, WIRED },
  { "other task with Pageable", DK_TASK_OTHER, kIOMemoryPageable, 100, 1, 0, P4K, false, 1, 0, P4K, 0, 64, false, PAGED },
  /* step 14: pageable ignores contiguity, limit, big alignment */
  { "pageable ignores contiguity and mask", DK_TASK_KERNEL, kIOMemoryPageable | kIOMemoryPhysicallyContiguous, 100, 1, 0xFFFFFFFFull, P4K, false, P4K, 0, P4K, 0, 64, false, PAGED },
  { "pageable + purgeable", DK_TASK_NULL, kIOMemoryPageable | kIOMemoryPurgeable, 100, 1, 0, P4K, false, 1, 0, P4K, 0, 64, false, PAGED | kIOMemoryBufferPurgeable },
  { "purgeable without pageable is ignored", DK_TASK_KERNEL, kIOMemoryPurgeable, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, false, WIRED },
  /* step 15: contiguity with and without a mapper */
  { "HostPhysicallyContiguous", DK_TASK_KERNEL, kIOMemoryHostPhysicallyContiguous, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, true, WIRED },
  { "PhysicallyContiguous, no mapper", DK_TASK_KERNEL, kIOMemoryPhysicallyContiguous, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, true, WIRED },
  { "PhysicallyContiguous with a mapper: IOVA only", DK_TASK_KERNEL, kIOMemoryPhysicallyContiguous, 100, 1, 0, P4K, true, 1, 0, 100, 0, 64, false, WIRED },
  { "PhysicallyContiguous | MapperNone with a mapper", DK_TASK_KERNEL, kIOMemoryPhysicallyContiguous | kIOMemoryMapperNone, 100, 1, 0, P4K, true, P4K, 0, P4K, 0, 64, true, WIRED | kIOMemoryMapperNone | 0x80000000u | kIOMemoryPersistent },
  { "HostPhysicallyContiguous with a mapper", DK_TASK_KERNEL, kIOMemoryHostPhysicallyContiguous, 100, 1, 0, P4K, true, 1, 0, 100, 0, 64, true, WIRED },
  /* rule A: a remaining limit rounds the size to pages even below page alignment */
  { "limit rounds the size", DK_TASK_KERNEL, 0, 5000, 1, 0xFFFFFFFFull, P4K, false, P4K, 0, 2 * P4K, 0xFFFFFFFFull, 64, false, WIRED },
  /* flags: raw option bits outside kIOBufferDescriptorMemoryFlags never reach _flags */
  { "only buffer flags reach _flags", DK_TASK_KERNEL, kIOMemoryThreadSafe | kIOMemoryUseReserve | 0x00001000u, 100, 1, 0, P4K, false, 1, 0, 100, 0, 64, false, WIRED | kIOMemoryThreadSafe | kIOMemoryUseReserve },
};

static void run_row(const row *r)
{
  dk_plan p;
  dk_constraint_kind kind;
  char why[200];
  IOReturn rc = dk__plan(&p, r->task, r->options, r->capacity, r->alignment, r->mask, r->page, r->mapped,
                         &kind, why, sizeof why);
  print_message("%s\n", r->name);
  if (r->alignment_out == FAILS) {
    assert_int_not_equal(rc, kIOReturnSuccess);
    assert_int_equal(kind, r->fail_kind);
    assert_true(why[0] != '\0');
    return;
  }
  assert_int_equal(rc, kIOReturnSuccess);
  assert_int_equal(p.capacity, r->capacity);
  assert_int_equal(p.options, r->options);
  assert_int_equal(p.alignment, r->alignment_out);
  assert_int_equal(p.alloc_size, r->size_out);
  assert_int_equal(p.limit, r->limit_out);
  assert_int_equal(p.num_address_bits, r->bits_out);
  assert_int_equal(p.contig, r->contig_out);
  assert_int_equal(p.flags, r->flags_out);
}

static void plan_table(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) run_row(&rows[i]);
}

/* Mask derivation for every trailing-zero count: alignment 2^tz (at least a page), limit with
 * the trailing zeros filled. */
static void plan_mask_every_shift(void **state)
{
  (void)state;
  for (unsigned top = 12; top <= 63; top++) {
    for (unsigned tz = 0; tz < top; tz++) {
      uint64_t mask = ((top == 64 ? 0 : (1ull << top)) - 1) & ~((1ull << tz) - 1);
      dk_plan p;
      dk_constraint_kind kind;
      char why[200];
      IOReturn rc = dk__plan(&p, DK_TASK_KERNEL, 0, 1, 1, mask, P4K, false, &kind, why, sizeof why);
      uint64_t want_align = (1ull << tz) < P4K ? P4K : (1ull << tz);
      if (rc != kIOReturnSuccess) {
        /* only when rounding the 1-byte capacity to the alignment cannot overflow: never */
        fail_msg("mask 0x%llx failed: %s", (unsigned long long)mask, why);
      }
      assert_int_equal(p.alignment, want_align);
      assert_int_equal(p.limit, (1ull << top) - 1);
      assert_int_equal(p.contig, want_align > P4K);
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(plan_table),
    cmocka_unit_test(plan_mask_every_shift),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
