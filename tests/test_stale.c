/* tests/test_stale.c: no buffer ever shows another buffer's old data. Property test: many
 * rounds of create / fill with a pattern / release, then create again and require every byte
 * to read zero, across sizes (1 B .. 8 MiB), tasks (kernel_task, read through
 * getBytesNoCopy; NULL, read through map()), wired and pageable (after prepare; and before
 * prepare, through a mapping), the tail of withBytes' allocation (capacity == length there,
 * so the same size is checked again through a separate withCapacity after a withBytes of a
 * pattern was released), and purgeable memory after setPurgeable(Empty).
 *
 * What it catches: memory recycled without zeroing (a pool or free list that hands freed
 * pages back, a memfd reused without truncation, a page-rounded tail that was not cleared,
 * Empty that only changes a state word). It can fail: replacing the library's zero-fill with
 * nothing in a scratch copy (for example recycling a released backing's memfd without
 * FALLOC_FL_PUNCH_HOLE, or making setPurgeable(Empty) skip dk__backing_discard) makes
 * check_zero report the first non-zero byte and its pattern value. Runs without root. */
#include "dk_test.h"

#include <dmakit/dmakit.h>

#include <stdlib.h>
#include <string.h>

static const size_t kSizes[] = { 1, 7, 64, 4095, 4096, 4097, 12345, 65536, 65537, 1u << 20,
                                 (1u << 20) + 3, 3u << 20, 8u << 20 };
#define NSIZES (sizeof kSizes / sizeof kSizes[0])

static uint8_t pattern_of(unsigned round) { return (uint8_t)(0xA5 ^ (round * 29u)) | 1; }

/* Every byte of the buffer's capacity (and of the page-rounded tail where we can see it). */
static void check_zero(const uint8_t *p, size_t len, const char *what, size_t size, unsigned round)
{
  for (size_t i = 0; i < len; i++)
    if (p[i] != 0)
      fail_msg("%s, size %zu, round %u: byte %zu is 0x%02x (stale data)", what, size, round, i, p[i]);
}

/* A buffer's bytes as this process sees them: getBytesNoCopy, or a fresh map for NULL task. */
static void check_buffer_zero(IOBufferMemoryDescriptor *b, size_t size, const char *what, unsigned round)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  const uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  IOMemoryMap *m = NULL;
  if (!p) {
    m = IOMemoryDescriptor_map(md, kIOMapReadOnly);
    assert_non_null(m);
    p = (const uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  }
  /* only [0, capacity): small buffers may share a page with others (sub-page packing) */
  check_zero(p, size, what, size, round);
  OSObject_release(m);
}

static void fill(IOBufferMemoryDescriptor *b, size_t size, uint8_t v)
{
  uint8_t *p = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  if (p) {
    memset(p, v, size);
    return;
  }
  IOMemoryMap *m = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, 0);
  assert_non_null(m);
  memset((void *)(uintptr_t)IOMemoryMap_getAddress(m), v, size);
  OSObject_release(m);
}

typedef struct kind {
  const char *name;
  task_t      task;
  IOOptionBits options;
  bool        prepare;
} kind;

static void test_new_buffers_read_zero(void **state)
{
  (void)state;
  const kind kinds[] = {
    { "wired kernel_task", NULL, kIODirectionInOut, false },
    { "wired NULL task", NULL, kIODirectionInOut, false },
    { "pageable kernel_task, prepared", NULL, kIODirectionInOut | kIOMemoryPageable, true },
    { "pageable NULL task, prepared", NULL, kIODirectionInOut | kIOMemoryPageable, true },
    { "pageable kernel_task, unprepared", NULL, kIODirectionInOut | kIOMemoryPageable, false },
  };
  const bool kernel[] = { true, false, true, false, true };
  unsigned rounds = 0;
  for (size_t s = 0; s < NSIZES; s++) {
    size_t size = kSizes[s];
    unsigned reps = size >= (1u << 20) ? 2 : 6;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
      task_t task = kernel[k] ? kernel_task : NULL;
      for (unsigned r = 0; r < reps; r++, rounds++) {
        /* dirty: several buffers at once, so freed memory is plentiful and varied */
        IOBufferMemoryDescriptor *dirty[3];
        for (int i = 0; i < 3; i++) {
          dirty[i] = IOBufferMemoryDescriptor_inTaskWithOptions(task, kinds[k].options, size, 1);
          assert_non_null(dirty[i]);
          if (kinds[k].prepare)
            assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)dirty[i], kIODirectionNone), kIOReturnSuccess);
          fill(dirty[i], size, pattern_of(rounds + (unsigned)i));
        }
        for (int i = 0; i < 3; i++) OSObject_release(dirty[i]);   /* released while prepared */
        IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(task, kinds[k].options, size, 1);
        assert_non_null(b);
        if (kinds[k].prepare)
          assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone), kIOReturnSuccess);
        check_buffer_zero(b, size, kinds[k].name, rounds);
        if (kinds[k].prepare) {   /* readBytes agrees */
          uint8_t probe[64];
          size_t n = size < sizeof probe ? size : sizeof probe;
          assert_int_equal(IOMemoryDescriptor_readBytes((IOMemoryDescriptor *)b, size - n, probe, n), n);
          check_zero(probe, n, "readBytes", size, rounds);
        }
        OSObject_release(b);
      }
    }
  }
  printf("stale: %u rounds over %zu sizes and %zu kinds: every new buffer read zero\n", rounds, NSIZES,
         sizeof kinds / sizeof kinds[0]);
}

/* withBytes: capacity == length, so its own tail is not visible through the API. After a
 * withBytes of a pattern is released, a withCapacity of the same size must read zero. */
static void test_with_bytes_then_with_capacity(void **state)
{
  (void)state;
  uint8_t *src = malloc(8u << 20);
  assert_non_null(src);
  for (size_t s = 0; s < NSIZES; s++) {
    size_t size = kSizes[s];
    for (unsigned r = 0; r < 3; r++) {
      memset(src, pattern_of(r + 7), size);
      IOBufferMemoryDescriptor *wb = IOBufferMemoryDescriptor_withBytes(src, size, kIODirectionInOut, false);
      assert_non_null(wb);
      assert_int_equal(IOBufferMemoryDescriptor_getCapacity(wb), size);
      assert_int_equal(IOMemoryDescriptor_getLength((IOMemoryDescriptor *)wb), size);
      assert_memory_equal(IOBufferMemoryDescriptor_getBytesNoCopy(wb), src, size);
      OSObject_release(wb);
      IOBufferMemoryDescriptor *wc = IOBufferMemoryDescriptor_withCapacity(size, kIODirectionInOut, false);
      assert_non_null(wc);
      check_buffer_zero(wc, size, "withCapacity after withBytes", r);
      OSObject_release(wc);
    }
  }
  free(src);
}

/* Purgeable: Empty discards the contents; they read back zero (after prepare, and through a map). */
static void test_purgeable_empty_reads_zero(void **state)
{
  (void)state;
  for (size_t s = 0; s < NSIZES; s++) {
    size_t size = kSizes[s];
    for (int nt = 0; nt < 2; nt++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
          nt ? NULL : kernel_task, kIOMemoryPageable | kIOMemoryPurgeable | kIODirectionInOut, size, 1);
      assert_non_null(b);
      IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
      fill(b, size, 0x5A);
      IOOptionBits old = 0;
      assert_int_equal(IOMemoryDescriptor_setPurgeable(md, kIOMemoryPurgeableVolatile, &old), kIOReturnSuccess);
      assert_int_equal(IOMemoryDescriptor_setPurgeable(md, kIOMemoryPurgeableEmpty, &old), kIOReturnSuccess);
      assert_int_equal(old, kIOMemoryPurgeableVolatile);
      check_buffer_zero(b, size, nt ? "purgeable Empty (NULL task)" : "purgeable Empty", 0);
      assert_int_equal(IOMemoryDescriptor_prepare(md, kIODirectionNone), kIOReturnSuccess);
      uint8_t probe[64];
      size_t n = size < sizeof probe ? size : sizeof probe;
      assert_int_equal(IOMemoryDescriptor_readBytes(md, size - n, probe, n), n);
      check_zero(probe, n, "purgeable Empty, prepared", size, 0);
      assert_int_equal(IOMemoryDescriptor_complete(md, kIODirectionNone), kIOReturnSuccess);
      OSObject_release(b);
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_new_buffers_read_zero),
    cmocka_unit_test(test_with_bytes_then_with_capacity),
    cmocka_unit_test(test_purgeable_empty_reads_zero),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
