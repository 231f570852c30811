/* tests/test_ready.c: ready descriptors, the create fast path. A released small pool buffer
 * is kept built by its thread and handed to the next request equal in every argument: these
 * tests prove that the buffer handed back is zero, meets its constraints through this test's
 * own pagemap read, has the state of a fresh one, and that nothing else ever gets it (another
 * size, alignment, window, direction, task, entry point, an option or system mapper changed
 * since). Trim and thread exit give its memory back. Needs root (frames) and hugetlb. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/pool.h"
#include "iokit/internal.h"
#include "mapper/mapper_impl.h"
#include "prim/prim.h"
#include "dk_test.h"

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))

static void require_pool(void)
{
  DKT_REQUIRE_ROOT();
  if (!dk_capabilities()->pool_usable) DKT_SKIP("no hugetlb support: the pool cannot run here");
  dk_option_set(DK_OPTION_POOL, 1);
}

static void validate(void)
{
  char why[256];
  if (dk__pool_validate(true, why, sizeof why) != 0) fail_msg("pool inconsistent: %s", why);
}

static IOBufferMemoryDescriptor *make(uint64_t len, uint64_t align, uint64_t high, IOOptionBits options)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.alignment = align;
  c.high = high;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, options, len, &c);
  if (!b) fail_msg("inTaskWithConstraints(%llu, align %llu, high 0x%llx): %s", (unsigned long long)len,
                   (unsigned long long)align, (unsigned long long)high, dkt_failure_text());
  return b;
}

static uint8_t *bytes(IOBufferMemoryDescriptor *b) { return IOBufferMemoryDescriptor_getBytesNoCopy(b); }

/* The frames behind the buffer, read here: one run, the alignment, under `high`, and the
 * descriptor's own physical address agrees. */
static void prove(IOBufferMemoryDescriptor *b, uint64_t len, uint64_t align, uint64_t high)
{
  uint8_t *va = bytes(b);
  assert_non_null(va);
  size_t n = 0;
  uint64_t *pfn = dkt_read_frames_alloc(va, len, &n);
  assert_non_null(pfn);
  size_t ps = dkt_page_size();
  uint64_t start = pfn[0] * ps + ((uintptr_t)va % ps);
  for (size_t i = 1; i < n; i++) assert_int_equal(pfn[i], pfn[0] + i);
  free(pfn);
  if (align > 1) {
    assert_int_equal(start % align, 0);
    assert_int_equal((uintptr_t)va % align, 0);
  }
  if (high) assert_true(start + len - 1 <= high);
  IOByteCount seg = 0;
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, &seg, kIOMemoryMapperNone), start);
  assert_int_equal(seg, len);
}

static dk_provider provider(IOBufferMemoryDescriptor *b)
{
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  return info.provider;
}

/* The layout decides a mask that every pool slab frame meets: the top of RAM. */
static uint64_t ram_mask(void)
{
  uint64_t top = dk_capabilities()->ram_top, m = 1;
  while (m < top) m <<= 1;
  return m - 1;
}

/* A written, released buffer comes back to the same request: the same memory, zero, still
 * meeting its constraints; every size class up to the largest slot. */
static void ready_same_request_gets_it_back_zeroed(void **state)
{
  (void)state;
  require_pool();
  uint64_t mask = ram_mask();
  const uint64_t lens[] = { 1, 64, 100, 256, 1000, 2048, 4096 };
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    uint64_t align = lens[i] >= 4096 ? 4096 : 64;
    IOBufferMemoryDescriptor *a = make(lens[i], align, mask, kIODirectionInOut);
    assert_int_equal(provider(a), DK_PROVIDER_POOL_SLAB);
    uint8_t *va = bytes(a);
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(a), 0, NULL, kIOMemoryMapperNone);
    memset(va, 0xA7, lens[i]);
    OSObject_release(a);
    IOBufferMemoryDescriptor *b = make(lens[i], align, mask, kIODirectionInOut);
    assert_ptr_equal(bytes(b), va);                     /* kept built: the same slot */
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, kIOMemoryMapperNone), pa);
    assert_true(dkt_all_bytes(bytes(b), lens[i], 0));   /* and zero */
    prove(b, lens[i], align, mask);
    OSObject_release(b);
  }
  validate();
  dk_pool_trim();
}

/* What a caller may change on a buffer does not survive its release. */
static void ready_state_is_fresh(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *a = make(512, 64, 0, kIODirectionInOut | kIOMemoryThreadSafe);
  uint8_t *va = bytes(a);
  IOBufferMemoryDescriptor_setLength(a, 10);
  IOMemoryDescriptor_setDirection(MD(a), kIODirectionOut);
  IOMemoryDescriptor_setTag(MD(a), 7);
  OSObject_retain(a);
  OSObject_release(a);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(a), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_complete(MD(a), kIODirectionNone), kIOReturnSuccess);
  OSObject_release(a);
  /* released and kept: the old handle is no descriptor any more */
  assert_int_equal(IOMemoryDescriptor_getLength(MD(a)), 0);
  assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(a));
  IOBufferMemoryDescriptor *b = make(512, 64, 0, kIODirectionInOut | kIOMemoryThreadSafe);
  assert_ptr_equal(bytes(b), va);
  assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), 512);
  assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), 512);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), kIODirectionInOut);
  assert_int_equal(IOMemoryDescriptor_getTag(MD(b)), 0);
  assert_int_equal(OSObject_getRetainCount(b), 1);
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_int_equal(info.prepare_count, 1);             /* auto-prepared, nothing more */
  assert_true(info.wired);
  /* a direction-Out buffer is prepared read-only, and comes back with the flags it was built
   * with, whatever prepare/complete did to them meanwhile */
  IOBufferMemoryDescriptor *o = make(64, 64, 0, kIODirectionOut);
  uint8_t *ova = bytes(o);
  uint64_t flags_before = IOMemoryDescriptor_getFlags(MD(o));
  assert_int_equal(IOMemoryDescriptor_complete(MD(o), kIODirectionNone), kIOReturnSuccess);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(o), kIODirectionIn), kIOReturnSuccess);
  IOMemoryDescriptor_setDirection(MD(o), kIODirectionIn);
  OSObject_release(o);
  o = make(64, 64, 0, kIODirectionOut);
  assert_ptr_equal(bytes(o), ova);                      /* kept, and revived */
  assert_int_equal(IOMemoryDescriptor_getFlags(MD(o)), flags_before);
  assert_int_equal(IOMemoryDescriptor_getDirection(MD(o)), kIODirectionOut);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(o), kIODirectionIn), kIOReturnNotWritable);
  OSObject_release(o);
  OSObject_release(b);
  dk_pool_trim();
}

/* Only an identical request gets a kept descriptor: each differing request below is met
 * elsewhere (and proven), and the kept one is still there for the original request after. */
static void ready_only_identical_requests(void **state)
{
  (void)state;
  require_pool();
  uint64_t mask = ram_mask();
  struct { uint64_t len, align, high; IOOptionBits options; int entry; } other[] = {
    { 60, 64, 0, kIODirectionInOut, 0 },               /* capacity */
    { 64, 128, 0, kIODirectionInOut, 0 },              /* alignment */
    { 64, 64, mask, kIODirectionInOut, 0 },            /* window */
    { 64, 64, 0, kIODirectionOut, 0 },                 /* direction */
    { 64, 64, 0, kIODirectionInOut | kIOMemoryThreadSafe, 0 },
    { 64, 64, 0, kIODirectionInOut, 1 },               /* no task */
    { 64, 64, 0, kIODirectionInOut, 2 },               /* inTaskWithOptions */
  };
  dk_pool_trim();
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
    IOBufferMemoryDescriptor *a = make(64, 64, 0, kIODirectionInOut);
    uint8_t *kept = bytes(a);
    OSObject_release(a);
    IOBufferMemoryDescriptor *b;
    if (other[i].entry == 1) {
      dk_constraints c = DK_CONSTRAINTS_NONE;
      c.alignment = 64;
      b = IOBufferMemoryDescriptor_inTaskWithConstraints(NULL, kIODirectionInOut, 64, &c);
      assert_non_null(b);
      assert_null(IOBufferMemoryDescriptor_getBytesNoCopy(b));   /* mapped nowhere */
      assert_ptr_not_equal(b, a);
    } else if (other[i].entry == 2) {
      b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionInOut, 64, 64);
      assert_non_null(b);
      assert_ptr_not_equal(bytes(b), kept);
      assert_true(dkt_all_bytes(bytes(b), 64, 0));
    } else {
      b = make(other[i].len, other[i].align, other[i].high, other[i].options);
      assert_ptr_not_equal(bytes(b), kept);
      assert_int_equal(IOMemoryDescriptor_getLength(MD(b)), other[i].len);
      assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), other[i].options & kIODirectionOutIn);
      prove(b, other[i].len, other[i].align, other[i].high);
    }
    IOBufferMemoryDescriptor *again = make(64, 64, 0, kIODirectionInOut);
    assert_ptr_equal(bytes(again), kept);
    OSObject_release(again);
    OSObject_release(b);
  }
  validate();
  dk_pool_trim();
}

/* A buffer with a prepare outstanding, or with a mapping, is freed the ordinary way; what
 * comes next is zero and in a fresh state either way. */
static void ready_busy_buffers_are_not_kept(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *a = make(256, 64, 0, kIODirectionInOut);
  assert_int_equal(IOMemoryDescriptor_prepare(MD(a), kIODirectionNone), kIOReturnSuccess);
  memset(bytes(a), 0x5A, 256);
  OSObject_release(a);                                  /* teardown completes the prepare */
  IOBufferMemoryDescriptor *b = make(256, 64, 0, kIODirectionInOut);
  assert_true(dkt_all_bytes(bytes(b), 256, 0));
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_int_equal(info.prepare_count, 1);
  /* completed down to no prepare at all: not as init left it either */
  assert_int_equal(IOMemoryDescriptor_complete(MD(b), kIODirectionNone), kIOReturnSuccess);
  memset(bytes(b), 0x6B, 256);
  OSObject_release(b);
  b = make(256, 64, 0, kIODirectionInOut);
  assert_true(dkt_all_bytes(bytes(b), 256, 0));
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_int_equal(info.prepare_count, 1);
  IOMemoryMap *m = IOMemoryDescriptor_map(MD(b), kIOMapAnywhere);
  assert_non_null(m);
  uint8_t *view = (uint8_t *)(uintptr_t)IOMemoryMap_getAddress(m);
  memset(view, 0x3C, 256);
  OSObject_release(b);                                  /* the map still holds it */
  assert_int_equal(view[0], 0x3C);
  OSObject_release(m);                                  /* now it goes */
  IOBufferMemoryDescriptor *c = make(256, 64, 0, kIODirectionInOut);
  assert_true(dkt_all_bytes(bytes(c), 256, 0));
  OSObject_release(c);
  validate();
  dk_pool_trim();
}

/* An option changed after a buffer was kept decides the next request: with the pool turned
 * off, the same request gets 4K pages, not the kept slot. */
static void ready_option_change_is_seen(void **state)
{
  (void)state;
  require_pool();
  IOBufferMemoryDescriptor *a = make(128, 64, 0, kIODirectionInOut);
  assert_int_equal(provider(a), DK_PROVIDER_POOL_SLAB);
  OSObject_release(a);
  dk_option_set(DK_OPTION_POOL, 0);
  IOBufferMemoryDescriptor *b = make(128, 64, 0, kIODirectionInOut);
  assert_int_equal(provider(b), DK_PROVIDER_MEMFD_4K);
  OSObject_release(b);
  dk_option_set(DK_OPTION_POOL, 1);
  b = make(128, 64, 0, kIODirectionInOut);
  assert_int_equal(provider(b), DK_PROVIDER_POOL_SLAB);
  OSObject_release(b);
  dk_pool_trim();
}

/* A system mapper set after a buffer was kept: the next buffer has its IOVA range. */
static void ready_system_mapper_is_seen(void **state)
{
  (void)state;
  require_pool();
  static const uint64_t ranges[1][2] = { { 0x100000, (1ull << 39) - 1 } };
  IOBufferMemoryDescriptor *a = make(64, 64, 0, kIODirectionInOut);
  OSObject_release(a);
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 0);
  assert_non_null(m);
  dk_mapper_set_system(m);
  IOBufferMemoryDescriptor *b = make(64, 64, 0, kIODirectionInOut);
  dk_buffer_info info;
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_ptr_equal(info.mapper, m);
  assert_true(info.iova != 0);
  assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(MD(b), 0, NULL, 0), info.iova);
  OSObject_release(b);
  b = make(64, 64, 0, kIODirectionInOut);                /* never kept under a mapper */
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_ptr_equal(info.mapper, m);
  assert_true(info.iova != 0);
  OSObject_release(b);
  /* kIOMemoryMapperNone: no mapper on the buffer, so it is kept, and comes back physical */
  b = make(64, 64, 0, kIODirectionInOut | kIOMemoryMapperNone);
  uint8_t *va = bytes(b);
  OSObject_release(b);
  b = make(64, 64, 0, kIODirectionInOut | kIOMemoryMapperNone);
  assert_ptr_equal(bytes(b), va);
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_null(info.mapper);
  prove(b, 64, 64, 0);
  OSObject_release(b);
  dk_mapper_set_system(NULL);
  assert_int_equal(dk_mapper_close(m, NULL, 0), 0);       /* no mapping left behind */
  b = make(64, 64, 0, kIODirectionInOut);
  assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
  assert_null(info.mapper);
  OSObject_release(b);
  dk_pool_trim();
}

/* What is kept counts as free memory, and trim gives it back to the kernel. */
static void ready_counts_free_and_trim_gives_it_back(void **state)
{
  (void)state;
  require_pool();
  dk_pool_trim();
  dk_pool_stats st0, st;
  assert_int_equal(dk_pool_get_stats(&st0), kIOReturnSuccess);
  for (int k = 0; k < 7; k++) {
    IOBufferMemoryDescriptor *a = make(64u << k, 64, 0, kIODirectionInOut);
    OSObject_release(a);
  }
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, st0.bytes_pool_used);
  assert_int_equal(st.requests_slab - st0.requests_slab, 7);
  IOBufferMemoryDescriptor *a = make(64, 64, 0, kIODirectionInOut);   /* met by a kept one */
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, st0.bytes_pool_used + 64);
  assert_int_equal(st.requests_slab - st0.requests_slab, 8);
  OSObject_release(a);
  dk_pool_trim();
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);
  validate();
}

/* Buffers created on one thread and released on others; threads exit with buffers kept: the
 * pool ends with nothing in use, and every buffer any thread got was zero. */
enum { THREADS = 4, ROUNDS = 3000 };
static _Atomic int g_dirty;
static IOBufferMemoryDescriptor *_Atomic g_handoff[THREADS];

static void *worker(void *arg)
{
  int id = (int)(intptr_t)arg;
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t len = 64u << (r % 4);
    IOBufferMemoryDescriptor *b = make(len, 64, 0, kIODirectionInOut);
    if (!dkt_all_bytes(bytes(b), len, 0)) atomic_store(&g_dirty, 1);
    memset(bytes(b), 0xEE, len);
    /* hand it to the next thread, take what the previous one left */
    IOBufferMemoryDescriptor *got = atomic_exchange(&g_handoff[(id + 1) % THREADS], b);
    if (got) OSObject_release(got);
  }
  return NULL;
}

static void ready_threads_hand_off_and_exit(void **state)
{
  (void)state;
  require_pool();
  dk_pool_trim();
  dk_pool_stats st0, st;
  assert_int_equal(dk_pool_get_stats(&st0), kIOReturnSuccess);
  long objects0 = dk__objects_live(), heap0 = dk__prim_counters().heap_blocks;
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i), 0);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < THREADS; i++) {
    IOBufferMemoryDescriptor *b = atomic_exchange(&g_handoff[i], NULL);
    if (b) OSObject_release(b);
  }
  assert_int_equal(atomic_load(&g_dirty), 0);
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, st0.bytes_pool_used);
  validate();
  dk_pool_trim();                                        /* the exited threads kept nothing */
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);
  assert_int_equal(dk__objects_live(), objects0);
  assert_int_equal(dk__prim_counters().heap_blocks, heap0);   /* descriptors, slab records: all freed */
}

/* A buffer released by an application's thread-exit destructor that runs after dmakit's own
 * (its key made later): it is kept again, and freed in the next round of destructors. */
static pthread_key_t g_app_key;

static void app_destructor(void *b) { OSObject_release(b); }

static void *exiting_worker(void *unused)
{
  (void)unused;
  IOBufferMemoryDescriptor *b = make(256, 64, 0, kIODirectionInOut);
  OSObject_release(make(256, 64, 0, kIODirectionInOut));   /* dmakit's keys are set for this thread */
  pthread_setspecific(g_app_key, b);
  return NULL;
}

static void ready_release_in_late_destructor(void **state)
{
  (void)state;
  require_pool();
  OSObject_release(make(256, 64, 0, kIODirectionInOut));   /* dmakit's keys exist before the app's */
  dk_pool_trim();
  dk_pool_stats st0, st;
  assert_int_equal(dk_pool_get_stats(&st0), kIOReturnSuccess);
  assert_int_equal(pthread_key_create(&g_app_key, app_destructor), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, exiting_worker, NULL), 0);
  pthread_join(t, NULL);
  pthread_key_delete(g_app_key);
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_used, st0.bytes_pool_used);
  dk_pool_trim();
  assert_int_equal(dk_pool_get_stats(&st), kIOReturnSuccess);
  assert_int_equal(st.bytes_pool_2m + st.bytes_pool_1g, 0);   /* nothing stayed in the dead thread */
  validate();
}

/* ---- the key of a kept descriptor, factory by factory ------------------------------------ *
 * Every factory looks for a kept descriptor before it builds: a request is the factory's own
 * arguments as (task, options, capacity, alignment, mask, constraints). Each factory below
 * meets kept descriptors that differ from its request in exactly one of these (made by the
 * general entry points, which give any key) and must build a buffer of its own; asked the
 * same again after its buffer is released, it gets that one back; and every kept descriptor
 * still goes to its own request after. */
typedef struct key {
  task_t task;
  IOOptionBits options;
  uint64_t len, align, mask;
  const dk_constraints *c;
} key;

static IOBufferMemoryDescriptor *make_key(const key *k)
{
  IOBufferMemoryDescriptor *b;
  if (k->c) b = IOBufferMemoryDescriptor_inTaskWithConstraints(k->task, k->options, k->len, k->c);
  else if (k->mask) b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(k->task, k->options, k->len, k->mask);
  else b = IOBufferMemoryDescriptor_inTaskWithOptions(k->task, k->options, k->len, k->align);
  if (!b) fail_msg("a %llu-byte buffer (options 0x%x, align %llu, mask 0x%llx): %s", (unsigned long long)k->len,
                   k->options, (unsigned long long)k->align, (unsigned long long)k->mask, dkt_failure_text());
  return b;
}

enum factory { F_OPTIONS, F_TAGGED, F_MASK, F_WITH_OPTIONS, F_CAPACITY, F_BYTES, F_COPY, F_CONSTRAINTS };

static uint8_t g_src[256];

static IOBufferMemoryDescriptor *make_with(enum factory f, const key *k)
{
  IODirection dir = k->options & kIODirectionOutIn;
  IOBufferMemoryDescriptor *b = NULL;
  switch (f) {
  case F_OPTIONS: b = IOBufferMemoryDescriptor_inTaskWithOptions(k->task, k->options, k->len, k->align); break;
  case F_TAGGED:
    b = IOBufferMemoryDescriptor_inTaskWithOptionsTagged(k->task, k->options, k->len, k->align, 7, 9);
    break;
  case F_MASK: b = IOBufferMemoryDescriptor_inTaskWithPhysicalMask(k->task, k->options, k->len, k->mask); break;
  case F_WITH_OPTIONS: b = IOBufferMemoryDescriptor_withOptions(k->options, k->len, k->align); break;
  case F_CAPACITY: b = IOBufferMemoryDescriptor_withCapacity(k->len, dir, false); break;
  case F_BYTES: b = IOBufferMemoryDescriptor_withBytes(g_src, k->len, dir, false); break;
  case F_COPY:
    b = IOBufferMemoryDescriptor_withCopy(k->task, k->options, kernel_map, (mach_vm_address_t)(uintptr_t)g_src, k->len);
    break;
  case F_CONSTRAINTS: b = IOBufferMemoryDescriptor_inTaskWithConstraints(k->task, k->options, k->len, k->c); break;
  }
  if (!b) fail_msg("factory %d, %llu bytes: %s", (int)f, (unsigned long long)k->len, dkt_failure_text());
  return b;
}

static void ready_each_factory_checks_every_argument(void **state)
{
  (void)state;
  require_pool();
  const uint64_t page = dk_capabilities()->page_size, mask = ram_mask();
  for (size_t i = 0; i < sizeof g_src; i++) g_src[i] = (uint8_t)(i * 7 + 1);
  static dk_constraints cr, calign, cother;
  cr = DK_CONSTRAINTS_NONE;
  cr.alignment = 64;
  cr.high = mask;
  calign = cr;
  calign.alignment = 128;            /* alignment differs (the constraints too, checked after) */
  cother = cr;
  cother.boundary = 1u << 16;        /* the same arguments but for the constraints */
  /* each factory's request as the key it is looked up by */
  const key want[] = {
    [F_OPTIONS] = { kernel_task, kIODirectionInOut, 256, 64, 0, NULL },
    [F_TAGGED] = { kernel_task, kIODirectionInOut, 256, 64, 0, NULL },
    [F_MASK] = { kernel_task, kIODirectionInOut, 256, 1, 0, NULL },
    [F_WITH_OPTIONS] = { kernel_task, kIODirectionInOut, 256, 64, 0, NULL },
    [F_CAPACITY] = { kernel_task, kIODirectionIn | kIOMemoryUnshared, 256, 1, 0, NULL },
    [F_BYTES] = { kernel_task, kIODirectionOut | kIOMemoryUnshared, 256, 256, 0, NULL },
    [F_COPY] = { kernel_task, kIODirectionInOut | kIOMemoryPageable, 256, page, 0, NULL },
    [F_CONSTRAINTS] = { kernel_task, kIODirectionInOut, 256, 64, 0, &cr },
  };
  for (int f = F_OPTIONS; f <= F_CONSTRAINTS; f++) {
    const key *w = &want[f];
    IOOptionBits kept_options = w->options & ~(IOOptionBits)kIOMemoryPageable;
    /* kept descriptors, each differing from the request in one argument (withCopy's buffers
     * are pageable, which no kept descriptor is: its request differs in its options already) */
    key other[8];
    int n = 0;
    other[n] = *w, other[n].len += 64, other[n].options = kept_options, n++;                 /* capacity */
    other[n] = *w, other[n].options = (kept_options & ~(IOOptionBits)kIODirectionOutIn) |
                                      ((w->options & kIODirectionOutIn) == kIODirectionIn ? kIODirectionOut : kIODirectionIn),
    n++;                                                                                      /* options */
    if (f != F_COPY) {
      other[n] = *w, other[n].task = NULL, n++;                                                 /* task */
      other[n] = *w, other[n].mask = mask, other[n].align = 1, other[n].c = NULL, n++;          /* mask */
      other[n] = *w, other[n].align = w->align * 2, n++;                                        /* alignment */
      if (w->c) other[n - 1].c = &calign;
      if (!w->c) {
        static dk_constraints ca[F_CONSTRAINTS];
        ca[f] = DK_CONSTRAINTS_NONE;
        ca[f].alignment = w->align;
        other[n] = *w, other[n].c = &ca[f], n++;                          /* constraints where none were */
      } else {
        other[n] = *w, other[n].c = NULL, n++;                            /* none where some were */
        other[n] = *w, other[n].c = &cother, n++;                         /* other constraints */
      }
    }
    dk_pool_trim();                                    /* nothing kept from before */
    IOBufferMemoryDescriptor *kept[8];
    for (int i = 0; i < n; i++) kept[i] = make_key(&other[i]);
    for (int i = 0; i < n; i++) OSObject_release(kept[i]);
    IOBufferMemoryDescriptor *b = make_with((enum factory)f, w);
    for (int i = 0; i < n; i++)
      if (b == kept[i]) fail_msg("factory %d got the descriptor kept for a request differing in argument %d", f, i);
    assert_int_equal(IOBufferMemoryDescriptor_getCapacity(b), w->len);
    assert_int_equal(IOMemoryDescriptor_getDirection(MD(b)), w->options & kIODirectionOutIn);
    dk_buffer_info info;
    assert_int_equal(dk_buffer_get_info(b, &info), kIOReturnSuccess);
    assert_int_equal(info.pageable, f == F_COPY);
    if (f == F_BYTES || f == F_COPY) assert_memory_equal(bytes(b), g_src, w->len);
    else assert_true(dkt_all_bytes(bytes(b), w->len, 0));
    if (f != F_COPY && w->align > 1) assert_int_equal((uintptr_t)bytes(b) % w->align, 0);
    memset(bytes(b), 0xC3, w->len);
    OSObject_release(b);
    /* the same request again: kept built (withCopy's pageable buffers are built afresh, their
     * object perhaps reused), zero or the new copy */
    IOBufferMemoryDescriptor *again = make_with((enum factory)f, w);
    if (f != F_COPY) assert_ptr_equal(again, b);
    if (f == F_BYTES || f == F_COPY) assert_memory_equal(bytes(again), g_src, w->len);
    else assert_true(dkt_all_bytes(bytes(again), w->len, 0));
    OSObject_release(again);
    /* every kept descriptor is still there for its own request */
    for (int i = 0; i < n; i++) {
      IOBufferMemoryDescriptor *k = make_key(&other[i]);
      assert_ptr_equal(k, kept[i]);
      OSObject_release(k);
    }
    validate();
  }
  dk_pool_trim();
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(ready_same_request_gets_it_back_zeroed),
    cmocka_unit_test(ready_state_is_fresh),
    cmocka_unit_test(ready_only_identical_requests),
    cmocka_unit_test(ready_busy_buffers_are_not_kept),
    cmocka_unit_test(ready_option_change_is_seen),
    cmocka_unit_test(ready_system_mapper_is_seen),
    cmocka_unit_test(ready_counts_free_and_trim_gives_it_back),
    cmocka_unit_test(ready_threads_hand_off_and_exit),
    cmocka_unit_test(ready_release_in_late_destructor),
    cmocka_unit_test(ready_each_factory_checks_every_argument),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
