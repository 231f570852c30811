/* tests/test_maprule.c: IOKit's mapping rule 3 (REFERENCE §4) decided case by case: a request
 * shares an existing mapping of the same descriptor only when that mapping is still mapped, in
 * the same task, with the same read-only and guard options, a compatible cache mode, a range
 * containing the request and, for a placed request, the address the request names. An exact
 * match is the same object; a contained range is a sub-range map at the matching address; each
 * other case is a new mapping; kIOMapReference with nothing compatible is kIOReturnNotFound. The
 * memory behind every map is the descriptor's (a store through one is seen through another).
 * A NULL-task buffer is used: it is mapped nowhere, so no mapping is the identity shortcut;
 * kIOMemoryKernelUserShared keeps it in 4K pages (a placed mapping of hugepage-pool memory
 * must start on the hugepage's own offset, which is another test's business). Needs no
 * privilege. */
#include "dk_test.h"

#include <dmakit/dmakit.h>
#include <string.h>
#include <sys/mman.h>

static size_t PS;

static IOMemoryMap *mapping(IOMemoryDescriptor *md, mach_vm_address_t at, IOOptionBits o, mach_vm_size_t off,
                            mach_vm_size_t len)
{
  IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(md, kernel_task, at, o, off, len);
  if (!m) fail_msg("createMappingInTask(at 0x%llx, options 0x%x, 0x%llx+0x%llx): %s", (unsigned long long)at, o,
                   (unsigned long long)off, (unsigned long long)len, dk_last_failure()->text);
  return m;
}

static uint8_t *addr(IOMemoryMap *m) { return (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m); }

/* An address where nothing is mapped now: a free range of `len` bytes. */
static mach_vm_address_t free_address(size_t len)
{
  void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  munmap(p, len);
  return (mach_vm_address_t)(uintptr_t)p;
}

static void maprule_sharing_decisions(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIOMemoryKernelUserShared | kIODirectionInOut,
                                                                         4 * PS, 1);
  assert_non_null(b);
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));   /* mapped nowhere */

  IOMemoryMap *a = mapping(md, 0, kIOMapAnywhere, 0, 0);
  int rc_a = OSObject_getRetainCount(a);
  memset(addr(a), 0x11, 4 * PS);

  /* exact match: the same object, one more reference */
  IOMemoryMap *same = mapping(md, 0, kIOMapAnywhere, 0, 4 * PS);
  assert_ptr_equal(same, a);
  assert_int_equal(OSObject_getRetainCount(a), rc_a + 1);
  OSObject_release(same);
  /* the default cache mode asks for nothing: shares */
  same = mapping(md, 0, kIOMapAnywhere | kIOMapDefaultCache, 0, 0);
  assert_ptr_equal(same, a);
  OSObject_release(same);

  /* contained: a sub-range map at the matching address */
  IOMemoryMap *sub = mapping(md, 0, kIOMapAnywhere, PS, PS);
  assert_ptr_not_equal(sub, a);
  assert_ptr_equal(addr(sub), addr(a) + PS);
  assert_int_equal(IOMemoryMap_getLength(sub), PS);
  /* placed at exactly that address: shares too */
  IOMemoryMap *placed_same = mapping(md, IOMemoryMap_getAddress(a) + 2 * PS, 0, 2 * PS, PS);
  assert_ptr_equal(addr(placed_same), addr(a) + 2 * PS);

  /* different options: new mappings of the same memory */
  IOMemoryMap *wc = mapping(md, 0, kIOMapAnywhere | kIOMapWriteCombineCache, 0, 0);
  IOMemoryMap *ro = mapping(md, 0, kIOMapAnywhere | kIOMapReadOnly, 0, 0);
  IOMemoryMap *gd = mapping(md, 0, kIOMapAnywhere | kIOMapGuardedSmall, 0, 0);
  mach_vm_address_t there = free_address(2 * PS);
  IOMemoryMap *elsewhere = mapping(md, there, 0, PS, PS);   /* placed, not where `a` has it */
  IOMemoryMap *news[] = { wc, ro, gd, elsewhere };
  for (size_t i = 0; i < 4; i++) {
    assert_ptr_not_equal(news[i], a);
    assert_true(addr(news[i]) < addr(a) || addr(news[i]) >= addr(a) + 4 * PS);   /* its own pages */
  }
  assert_ptr_equal(addr(elsewhere), (uint8_t *)(uintptr_t)there);
  assert_int_equal(addr(wc)[0], 0x11);
  addr(a)[PS] = 0x22;
  assert_int_equal(addr(elsewhere)[0], 0x22);   /* the same memory */
  assert_int_equal(addr(ro)[PS], 0x22);

  /* a range the existing maps do not contain: new */
  IOMemoryMap *head = mapping(md, 0, kIOMapAnywhere | kIOMapUnique, 0, PS);   /* unique: its own */
  assert_ptr_not_equal(head, a);
  IOMemoryMap *wider = mapping(md, 0, kIOMapAnywhere | kIOMapReadOnly | kIOMapWriteCombineCache, 0, 2 * PS);
  assert_ptr_not_equal(wider, ro);
  assert_ptr_not_equal(wider, wc);

  /* once `a` is unmapped, nothing shares it, nor its sub-range maps */
  assert_int_equal(IOMemoryMap_unmap(a), kIOReturnSuccess);
  IOMemoryMap *again = mapping(md, 0, kIOMapAnywhere, PS, PS);
  assert_ptr_not_equal(again, sub);
  assert_ptr_not_equal(again, a);
  assert_int_equal(addr(again)[0], 0x22);
  IOMemoryMap *whole = mapping(md, 0, kIOMapAnywhere, 0, 0);
  assert_ptr_not_equal(whole, a);
  assert_int_equal(addr(whole)[PS], 0x22);

  /* kIOMapReference: only an existing compatible map */
  IOMemoryMap *ref = IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0, kIOMapAnywhere | kIOMapReference, 0, 0);
  assert_ptr_equal(ref, whole);
  OSObject_release(ref);
  assert_null(IOMemoryDescriptor_createMappingInTask(md, kernel_task, 0,
                                                     kIOMapAnywhere | kIOMapReference | kIOMapInhibitCache, 0, 0));
  assert_int_equal(dk_last_failure()->code, kIOReturnNotFound);

  IOMemoryMap *all[] = { a, sub, placed_same, wc, ro, gd, elsewhere, head, wider, again, whole };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) OSObject_release(all[i]);
  OSObject_release(b);
}

static int setup(void **state)
{
  (void)state;
  PS = dk_capabilities()->page_size;
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = { cmocka_unit_test(maprule_sharing_decisions) };
  return cmocka_run_group_tests(tests, setup, NULL);
}
