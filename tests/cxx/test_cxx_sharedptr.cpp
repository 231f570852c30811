/* tests/cxx/test_cxx_sharedptr.cpp: OSSharedPtr lifetimes with IOKit's factories returning
 * OSSharedPtr (IOKIT_ENABLE_SHARED_PTR, as a driver that opted in writes it): construction
 * with and without a retain, copies, moves, reset, detach, attach, swap, comparisons, the
 * casts (OSStaticPtrCast, OSConstPtrCast, OSDynamicPtrCast, OSDynamicCast), a map keeping its
 * descriptor alive, and two-step creation (OSTypeAlloc). Each count is checked against the
 * objects dmakit holds (no leak, nothing freed early). A second translation unit
 * (test_cxx_sharedptr_raw.unit.cpp) uses the same factories returning raw pointers, in the
 * same program, as units that differ in IOKIT_ENABLE_SHARED_PTR do. Passing pointers between
 * C and C++ code, and a base pointer's identity, are checked too. */

/* ======== driver code (an IOKit kext that opted in to shared pointers) ====================== */
#define IOKIT_ENABLE_SHARED_PTR
#define IOKIT_ENABLE_EXPERIMENTAL_SHARED_PTR_IN_API
#include <IOKit/IOBufferMemoryDescriptor.h>
#include <libkern/c++/OSSharedPtr.h>

class ExampleAudioEngine {
public:
  bool createBuffers(vm_size_t bytes);
  void freeBuffers();

  OSSharedPtr<IOBufferMemoryDescriptor> fSampleBuffer;
  OSSharedPtr<IOMemoryMap> fSampleMap;
  void *fSamples = nullptr;
};

bool ExampleAudioEngine::createBuffers(vm_size_t bytes)
{
  fSampleBuffer = IOBufferMemoryDescriptor::withOptions(kIODirectionInOut | kIOMemoryKernelUserShared, bytes, 64);
  if (!fSampleBuffer) return false;
  fSampleMap = fSampleBuffer->map();
  if (!fSampleMap) {
    fSampleBuffer.reset();
    return false;
  }
  fSamples = reinterpret_cast<void *>(fSampleMap->getVirtualAddress());
  return true;
}

void ExampleAudioEngine::freeBuffers()
{
  fSampleMap.reset();
  fSampleBuffer.reset();
  fSamples = nullptr;
}

/* ======== the test ========================================================================== */
#include "cxx_test.h"

/* the raw-pointer unit (test_cxx_sharedptr_raw.unit.cpp) */
IOBufferMemoryDescriptor *raw_unit_with_capacity(vm_size_t capacity);
IOMemoryMap *raw_unit_map(IOBufferMemoryDescriptor *b);

static void engine_lifetime(void **state)
{
  (void)state;
  long live = dk__objects_live();
  ExampleAudioEngine e;
  assert_true(e.createBuffers(8192));
  assert_int_equal(dk__objects_live(), live + 2);
  /* the map holds the descriptor: one reference each from the engine, plus the map's */
  assert_int_equal(e.fSampleMap->getRetainCount(), 1);
  assert_int_equal(e.fSampleBuffer->getRetainCount(), 2);
  assert_ptr_equal(e.fSamples, e.fSampleBuffer->getBytesNoCopy());      /* kernel_task: static map */
  assert_true(e.fSampleMap->getMapOptions() & kIOMapStatic);
  e.fSampleBuffer.reset();                                            /* the map keeps it */
  assert_int_equal(dk__objects_live(), live + 2);
  assert_int_equal(e.fSampleMap->getMemoryDescriptor()->getLength(), 8192);
  e.freeBuffers();
  assert_int_equal(dk__objects_live(), live);
}

static void shared_ptr_operations(void **state)
{
  (void)state;
  long live = dk__objects_live();
  {
    OSSharedPtr<IOBufferMemoryDescriptor> a = IOBufferMemoryDescriptor::withCapacity(4096, kIODirectionOut);
    assert_true(static_cast<bool>(a));
    assert_int_equal(a->getRetainCount(), 1);
    OSSharedPtr<IOBufferMemoryDescriptor> b = a;                         /* copy: retained */
    assert_int_equal(a->getRetainCount(), 2);
    assert_true(a == b);
    OSSharedPtr<IOMemoryDescriptor> md = a;                              /* to the base: retained */
    assert_int_equal(a->getRetainCount(), 3);
    assert_ptr_equal(static_cast<void *>(md.get()), static_cast<void *>(a.get()));   /* same pointer */
    OSSharedPtr<IOBufferMemoryDescriptor> c = static_cast<OSSharedPtr<IOBufferMemoryDescriptor> &&>(b);   /* move */
    assert_null(b.get());
    assert_true(b == nullptr);
    assert_int_equal(a->getRetainCount(), 3);
    c.reset();
    assert_int_equal(a->getRetainCount(), 2);
    /* reset to another object with and without taking a reference */
    IOBufferMemoryDescriptor *raw = IOBufferMemoryDescriptor_withCapacity(64, kIODirectionIn, false);   /* C, +1 */
    c.reset(raw, OSNoRetain);
    assert_int_equal(raw->getRetainCount(), 1);
    OSSharedPtr<IOBufferMemoryDescriptor> d(raw, OSRetain);
    assert_int_equal(raw->getRetainCount(), 2);
    d.reset(a.get(), OSRetain);
    assert_int_equal(raw->getRetainCount(), 1);
    assert_int_equal(a->getRetainCount(), 3);
    swap(c, d);
    assert_ptr_equal(c.get(), a.get());
    assert_ptr_equal(d.get(), raw);
    assert_true(d != c);
    assert_true(raw == d);
    /* detach: the reference is the caller's; give it back by hand (C) */
    IOBufferMemoryDescriptor *taken = d.detach();
    assert_null(d.get());
    assert_int_equal(taken->getRetainCount(), 1);
    OSObject_release(taken);
    assert_int_equal(dk__objects_live(), live + 1);
    /* assignment from nullptr and self-move leave the counts right */
    md = nullptr;
    c = static_cast<OSSharedPtr<IOBufferMemoryDescriptor> &&>(c);
    assert_int_equal(a->getRetainCount(), 2);
  }
  assert_int_equal(dk__objects_live(), live);
}

static void shared_ptr_casts(void **state)
{
  (void)state;
  long live = dk__objects_live();
  {
    OSSharedPtr<IOBufferMemoryDescriptor> b = IOBufferMemoryDescriptor::withOptions(kIODirectionInOut, 4096, 1);
    OSSharedPtr<IOMemoryDescriptor> md = OSStaticPtrCast<IOMemoryDescriptor>(b);     /* copy: +1 */
    assert_int_equal(b->getRetainCount(), 2);
    OSSharedPtr<OSObject> obj = OSStaticPtrCast<OSObject>(static_cast<OSSharedPtr<IOMemoryDescriptor> &&>(md));
    assert_null(md.get());
    assert_int_equal(b->getRetainCount(), 2);                                    /* moved, not retained */
    OSSharedPtr<IOBufferMemoryDescriptor> back = OSDynamicPtrCast<IOBufferMemoryDescriptor>(obj);
    assert_ptr_equal(back.get(), b.get());
    assert_int_equal(b->getRetainCount(), 3);
    OSSharedPtr<IOMemoryMap> notMap = OSDynamicPtrCast<IOMemoryMap>(obj);
    assert_null(notMap.get());
    assert_int_equal(b->getRetainCount(), 3);
    OSSharedPtr<IOMemoryMap> stillNot = OSDynamicPtrCast<IOMemoryMap>(static_cast<OSSharedPtr<OSObject> &&>(obj));
    assert_null(stillNot.get());
    assert_non_null(obj.get());                     /* a failed cast leaves the source its reference */
    OSSharedPtr<IOMemoryDescriptor> moved =
        OSDynamicPtrCast<IOMemoryDescriptor>(static_cast<OSSharedPtr<OSObject> &&>(obj));
    assert_null(obj.get());
    assert_int_equal(b->getRetainCount(), 3);
    OSSharedPtr<const IOMemoryDescriptor> cmd = OSConstPtrCast<const IOMemoryDescriptor>(moved);
    assert_int_equal(b->getRetainCount(), 4);
    assert_int_equal(cmd->getLength(), 4096);
    OSSharedPtr<IOMemoryDescriptor> mut = OSConstPtrCast<IOMemoryDescriptor>(cmd);
    assert_int_equal(b->getRetainCount(), 5);
    /* raw OSDynamicCast, metaCast and NULL */
    IOMemoryMap *map = b->map().detach();
    assert_ptr_equal(OSDynamicCast(IOMemoryMap, map), map);
    assert_null(OSDynamicCast(IOMemoryDescriptor, map));
    assert_ptr_equal(OSDynamicCast(OSObject, map), map);
    assert_null(OSDynamicCast(IOBufferMemoryDescriptor, static_cast<OSObject *>(nullptr)));
    assert_ptr_equal(b->metaCast("IOMemoryDescriptor"), b.get());
    assert_null(b->metaCast("IODMACommand"));
    OSSafeReleaseNULL(map);
    assert_null(map);
  }
  assert_int_equal(dk__objects_live(), live);
}

/* One program, two units: this one's factories return OSSharedPtr, the other's raw pointers
 * (each form under its own symbol, DK_OSPTR_ABI), and objects pass between them. */
static void shared_and_raw_units(void **state)
{
  (void)state;
  long live = dk__objects_live();
  {
    OSSharedPtr<IOBufferMemoryDescriptor> s = IOBufferMemoryDescriptor::withCapacity(100, kIODirectionIn);
    IOBufferMemoryDescriptor *r = raw_unit_with_capacity(200);
    assert_non_null(r);
    assert_int_equal(r->getCapacity(), 200);
    assert_int_equal(s->getCapacity(), 100);
    OSSharedPtr<IOBufferMemoryDescriptor> owned(r, OSNoRetain);              /* take the raw +1 */
    IOMemoryMap *m = raw_unit_map(s.get());
    assert_non_null(m);
    assert_int_equal(s->getRetainCount(), 2);
    OSSharedPtr<IOMemoryMap> mp(m, OSNoRetain);
    assert_int_equal(dk__objects_live(), live + 3);
  }
  assert_int_equal(dk__objects_live(), live);
}

/* The C++ pointer is the C handle: a C call takes it and what C returns is the class. */
static void c_and_cxx_share_pointers(void **state)
{
  (void)state;
  long live = dk__objects_live();
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 512, 1);
  assert_non_null(b);
  IOMemoryDescriptor *md = b;                                 /* derived -> base, no cast */
  OSObject *o = md;
  assert_ptr_equal(static_cast<void *>(md), static_cast<void *>(b));
  assert_ptr_equal(static_cast<void *>(o), static_cast<void *>(b));
  assert_int_equal(IOMemoryDescriptor_getLength(md), 512);    /* C on the C++ pointer */
  b->setLength(100);
  assert_int_equal(md->getLength(), 100);
  assert_true(b->appendBytes("abc", 3));
  char out[3];
  assert_int_equal(md->readBytes(100, out, 3), 3);
  assert_memory_equal(out, "abc", 3);
  /* two-step creation, IOKit's way */
  IOBufferMemoryDescriptor *t = OSTypeAlloc(IOBufferMemoryDescriptor);
  assert_non_null(t);
  assert_true(t->initWithPhysicalMask(kernel_task, kIODirectionIn, 4096, 0, 0xFFFFFFFFFFFFF000ULL));
  assert_int_equal(t->getCapacity(), 4096);
  t->release();
  IOBufferMemoryDescriptor *bad = OSTypeAlloc(IOBufferMemoryDescriptor);
  assert_false(bad->initWithPhysicalMask(kernel_task, kIODirectionIn, 0, 0, 0));   /* capacity 0 */
  bad->release();
  o->release();
  assert_int_equal(dk__objects_live(), live);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(engine_lifetime),
    cmocka_unit_test(shared_ptr_operations),
    cmocka_unit_test(shared_ptr_casts),
    cmocka_unit_test(shared_and_raw_units),
    cmocka_unit_test(c_and_cxx_share_pointers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
