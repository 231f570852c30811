/* tests/test_pinning.c: a frame dmakit has handed out never moves while the buffer is wired.
 *
 * mlock does not stop migration: with vm.compact_unevictable_allowed = 1, compaction moves
 * locked 4K pages (DESIGN.md, "Pinned means the frame never moves"). This test fragments
 * memory, places ~64 MiB of dmakit buffers and an mlock'ed memfd control of the same size in
 * the holes, frees the fragmenting memory and compacts several times. Every dmakit frame must
 * stay where it was, through pagemap and through getPhysicalSegment alike; the control shows
 * that the procedure really moves locked memory (its count is printed, not asserted). */
#include "dk_test.h"
#include "no_io_uring.h"

#include <dmakit/dmakit.h>

#include <errno.h>
#include <inttypes.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static size_t PS;

#define MiB ((size_t)1 << 20)


static int group_setup(void **state) {
  (void)state;
  PS = dk_capabilities()->page_size;
  return PS == 0 ? -1 : 0;
}

static int teardown_unfragment(void **state) {
  (void)state;
  dkt_unfragment();
  return 0;
}

/* ---- tracked buffers ------------------------------------------------------------------ */
typedef struct tracked {
  IOBufferMemoryDescriptor *b;
  IOMemoryMap *map;       /* for NULL-task buffers: where we read pagemap */
  const char  *va;        /* byte 0 of the buffer in this process */
  size_t       len;
  size_t       npages;
  uint64_t    *frames;    /* per page of [va, va + len), from getPhysicalSegment */
  const char  *kind;
} tracked;

/* Frames per page of [va, va + len) as getPhysicalSegment hands them out. */
static void frames_from_library(const tracked *t, uint64_t *out) {
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)t->b;
  uintptr_t va = (uintptr_t)t->va, first = va / PS;
  for (size_t i = 0; i < t->npages; i++) out[i] = 0;
  IOByteCount off = 0;
  while (off < t->len) {
    IOByteCount sl = 0;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, off, &sl, kIOMemoryMapperNone);
    if (a == 0 || sl == 0) fail_msg("%s: getPhysicalSegment(%" PRIu64 ") failed: %s", t->kind, (uint64_t)off, dkt_failure_text());
    /* every page the segment touches */
    for (uint64_t o = 0; o < sl;) {
      uintptr_t v = va + off + o;
      uint64_t p = a + o;
      if (p % PS != v % PS)
        fail_msg("%s: in-page offsets differ: va 0x%" PRIxPTR " phys 0x%" PRIx64, t->kind, v, p);
      out[v / PS - first] = p / PS;
      o += PS - v % PS;
    }
    off += sl;
  }
}

static void track(tracked *t, IOBufferMemoryDescriptor *b, const char *kind) {
  memset(t, 0, sizeof *t);
  t->b = b;
  t->kind = kind;
  t->len = IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b);
  t->va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  if (!t->va) {
    t->map = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, 0);
    assert_non_null(t->map);
    t->va = (const char *)(uintptr_t)IOMemoryMap_getAddress(t->map);
    assert_non_null(t->va);
    dkt_touch_read(t->va, t->len);
  }
  t->npages = dkt_page_count(t->va, t->len);
  t->frames = calloc(t->npages, sizeof *t->frames);
  assert_non_null(t->frames);
  frames_from_library(t, t->frames);
  /* the library's frames are the kernel's */
  uint64_t *pm = calloc(t->npages, sizeof *pm);
  assert_non_null(pm);
  assert_int_equal(dkt_read_frames(t->va, t->len, pm), t->npages);
  for (size_t i = 0; i < t->npages; i++)
    if (pm[i] != t->frames[i])
      fail_msg("%s: page %zu: getPhysicalSegment frame 0x%" PRIx64 ", pagemap 0x%" PRIx64, t->kind, i,
               t->frames[i], pm[i]);
  free(pm);
}

static void untrack(tracked *t) {
  OSSafeReleaseNULL(t->map);
  OSSafeReleaseNULL(t->b);
  free(t->frames);
  t->frames = NULL;
}

static void fill_pattern(const tracked *t, unsigned seed) {
  unsigned char *p = malloc(t->len);
  assert_non_null(p);
  for (size_t i = 0; i < t->len; i++) p[i] = (unsigned char)(i * 31 + seed);
  assert_int_equal(IOMemoryDescriptor_writeBytes((IOMemoryDescriptor *)t->b, 0, p, t->len), t->len);
  free(p);
}

static bool check_pattern(const tracked *t, unsigned seed) {
  for (size_t i = 0; i < t->len; i++)
    if ((unsigned char)t->va[i] != (unsigned char)(i * 31 + seed)) return false;
  return true;
}

/* ---- the control: an mlock'ed memfd ------------------------------------------------------ */
typedef struct control {
  int       fd;
  char     *p;
  size_t    len, npages;
  uint64_t *frames;
} control;

static void control_create(control *c, size_t len) {
  c->len = len;
  c->fd = memfd_create("dkt-control", MFD_CLOEXEC);
  assert_true(c->fd >= 0);
  assert_int_equal(ftruncate(c->fd, (off_t)len), 0);
  c->p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
  assert_true(c->p != MAP_FAILED);
  memset(c->p, 0x5a, len);
  assert_int_equal(mlock(c->p, len), 0);
  c->frames = dkt_read_frames_alloc(c->p, len, &c->npages);
  assert_non_null(c->frames);
}

static size_t control_moved(const control *c) {
  size_t n = 0, moved = 0;
  uint64_t *now = dkt_read_frames_alloc(c->p, c->len, &n);
  assert_non_null(now);
  for (size_t i = 0; i < n; i++) moved += now[i] != c->frames[i];
  free(now);
  return moved;
}

static void control_destroy(control *c) {
  munlock(c->p, c->len);
  munmap(c->p, c->len);
  close(c->fd);
  free(c->frames);
}

/* ---- THE test ---------------------------------------------------------------------------- */
static void test_handed_out_frames_never_move(void **state) {
  (void)state;
  DKT_REQUIRE_ROOT();
  const dk_caps *caps = dk_capabilities();
  /* With pin method NONE frames are refused, unless DK_OPTION_REQUIRE_PIN was turned off: then
   * the library hands out frames that can move, and this test is expected to catch it. */
  if (caps->pin_method == DK_PIN_NONE && dk_option_get(DK_OPTION_REQUIRE_PIN))
    DKT_SKIP("pin_method NONE (%s): no frames are handed out; see test_pin_none_*", caps->pin_detail);
  long cua = dkt_read_sysctl("vm/compact_unevictable_allowed");
  printf("pin method %s (%s); vm.compact_unevictable_allowed = %ld\n",
         dk_pin_method_name(caps->pin_method), caps->pin_detail, cua);

  /* 1. fragment, so that what we allocate next lands in holes compaction wants to empty */
  assert_int_equal(dkt_fragment_memory(1024 * MiB), 0);

  /* 2. ~64 MiB of dmakit buffers of many sizes and kinds */
  enum { MAXB = 512 };
  static tracked t[MAXB];
  size_t nt = 0, total = 0;
  struct { size_t size; int count; } mix[] = {
      { 16 * MiB, 2 }, { 4 * MiB, 3 }, { 1 * MiB, 8 }, { 64 * 1024, 32 },
      { 3 * PS + 17, 64 }, { PS, 128 }, { 100, 32 },
  };
  for (size_t m = 0; m < sizeof mix / sizeof mix[0]; m++) {
    for (int k = 0; k < mix[m].count; k++) {
      IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(
          (k & 1) ? kIODirectionInOut : kIODirectionIn, mix[m].size, 1);
      if (!b) fail_msg("withOptions(%zu): NULL, %s", mix[m].size, dkt_failure_text());
      track(&t[nt++], b, "wired kernel_task buffer");
      total += mix[m].size;
    }
  }
  for (int k = 0; k < 2; k++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 4 * MiB, 1);
    if (!b) fail_msg("NULL-task 4 MiB: NULL, %s", dkt_failure_text());
    track(&t[nt++], b, "NULL-task wired buffer");
    total += 4 * MiB;
  }
  {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
        kernel_task, kIOMemoryPageable | kIODirectionInOut, 4 * MiB, 1);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone), kIOReturnSuccess);
    track(&t[nt++], b, "prepared pageable buffer");
    total += 4 * MiB;
  }
  /* an unpinned one: prepared, frames recorded, then completed (it may move; only printed) */
  tracked loose;
  {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
        kernel_task, kIOMemoryPageable | kIODirectionInOut, 8 * MiB, 1);
    assert_non_null(b);
    assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone), kIOReturnSuccess);
    track(&loose, b, "completed pageable buffer");
    assert_int_equal(IOMemoryDescriptor_complete((IOMemoryDescriptor *)b, kIODirectionNone), kIOReturnSuccess);
  }
  for (size_t i = 0; i < nt; i++) fill_pattern(&t[i], (unsigned)i);

  /* 3. the control, of the same size, in the same holes */
  control c;
  control_create(&c, total);
  printf("tracking %zu dmakit buffers, %zu bytes; control %zu pages\n", nt, total, c.npages);

  /* 4. free the fragmenting memory and compact, several rounds, fragmenting again between */
  dkt_unfragment();
  for (int round = 0; round < 5; round++) {
    if (round == 3) {
      assert_int_equal(dkt_fragment_memory(512 * MiB), 0);
      assert_int_equal(dkt_compact_memory(), 0);
      dkt_unfragment();
    }
    int rc = dkt_compact_memory();
    if (rc != 0) fail_msg("compact_memory: %s", strerror(-rc));
    printf("round %d: control pages moved so far %zu of %zu\n", round, control_moved(&c), c.npages);
  }

  /* 5. nothing handed out moved; pagemap and getPhysicalSegment agree */
  size_t moved = 0, pages = 0, disagree = 0;
  for (size_t i = 0; i < nt; i++) {
    uint64_t *pm = calloc(t[i].npages, sizeof *pm), *lib = calloc(t[i].npages, sizeof *lib);
    assert_non_null(pm);
    assert_non_null(lib);
    assert_int_equal(dkt_read_frames(t[i].va, t[i].len, pm), t[i].npages);
    frames_from_library(&t[i], lib);
    for (size_t p = 0; p < t[i].npages; p++) {
      pages++;
      if (pm[p] != t[i].frames[p]) {
        if (moved < 5)
          printf("MOVED: %s %zu page %zu: handed out 0x%" PRIx64 ", now 0x%" PRIx64 "\n", t[i].kind, i,
                 p, t[i].frames[p], pm[p]);
        moved++;
      }
      if (lib[p] != pm[p]) disagree++;
    }
    if (!check_pattern(&t[i], (unsigned)i)) fail_msg("%s %zu: contents changed", t[i].kind, i);
    free(pm);
    free(lib);
  }
  size_t cm = control_moved(&c);
  size_t lm = 0;
  {
    uint64_t *pm = calloc(loose.npages, sizeof *pm);
    assert_non_null(pm);
    dkt_read_frames(loose.va, loose.len, pm);
    for (size_t p = 0; p < loose.npages; p++) lm += pm[p] != loose.frames[p];
    free(pm);
  }
  printf("CONTROL: %zu of %zu mlock'ed memfd pages moved\n", cm, c.npages);
  printf("unpinned (completed) pageable buffer: %zu of %zu pages moved\n", lm, loose.npages);
  printf("dmakit: %zu of %zu handed-out pages moved; %zu disagree with getPhysicalSegment\n", moved,
         pages, disagree);
  control_destroy(&c);
  untrack(&loose);
  for (size_t i = 0; i < nt; i++) untrack(&t[i]);
  assert_int_equal(moved, 0);
  assert_int_equal(disagree, 0);
}

/* ---- pins go away ------------------------------------------------------------------------ */
static void test_pins_gone_after_complete_and_release(void **state) {
  (void)state;
  DKT_REQUIRE_ROOT();
  const dk_caps *caps = dk_capabilities();
  bool uring = caps->pin_method == DK_PIN_IO_URING;

  /* warm up: whatever the library keeps for the process (a ring, a probe) exists now */
  for (int k = 0; k < 2; k++) {
    IOBufferMemoryDescriptor *w = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, PS, 1);
    assert_non_null(w);
    OSObject_release(w);
    w = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, PS, 1);
    assert_non_null(w);
    assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)w, 0), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_complete((IOMemoryDescriptor *)w, 0), kIOReturnSuccess);
    OSObject_release(w);
  }
  int fd0 = dkt_fd_count();
  long lck0 = dkt_locked_kb(), pin0 = dkt_pinned_kb();
  assert_true(fd0 > 0 && lck0 >= 0);
  printf("baseline: %d fds, VmLck %ld kB, VmPin %ld kB\n", fd0, lck0, pin0);

  enum { NW = 5 };
  IOBufferMemoryDescriptor *w[NW];
  for (int k = 0; k < NW; k++) {
    w[k] = k < 4 ? IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 1 * MiB, 1)
                 : IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 1 * MiB, 1);
    assert_non_null(w[k]);
    dk_buffer_info info;
    assert_int_equal(dk_buffer_get_info(w[k], &info), kIOReturnSuccess);
    assert_int_equal(info.provider, DK_PROVIDER_MEMFD_4K);   /* per-buffer locking is measured */
  }
  long lck1 = dkt_locked_kb(), pin1 = dkt_pinned_kb();
  printf("5 wired MiB: VmLck %ld kB, VmPin %ld kB\n", lck1, pin1);
  bool mlock_ok = dkt_mlock_works();
  if (!mlock_ok) printf("note: mlock does not lock in this process (sanitizer?): VmLck rises not checked\n");
  if (mlock_ok && lck1 < lck0 + NW * 1024) fail_msg("wired buffers are not locked: VmLck %ld -> %ld kB", lck0, lck1);
  if (uring && pin1 < pin0 + NW * 1024)
    fail_msg("pin method io_uring but VmPin %ld -> %ld kB for %d MiB wired", pin0, pin1, NW);

  IOBufferMemoryDescriptor *pg = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIOMemoryPageable | kIODirectionInOut, 2 * MiB, 1);
  assert_non_null(pg);
  IOMemoryDescriptor *pmd = (IOMemoryDescriptor *)pg;
  assert_int_equal(dkt_locked_kb(), lck1);
  for (int round = 0; round < 3; round++) {
    assert_int_equal(IOMemoryDescriptor_prepare(pmd, 0), kIOReturnSuccess);
    assert_int_equal(IOMemoryDescriptor_prepare(pmd, 0), kIOReturnSuccess);
    long lck2 = dkt_locked_kb(), pin2 = dkt_pinned_kb();
    if (mlock_ok && lck2 < lck1 + 2048) fail_msg("prepare: VmLck %ld -> %ld kB", lck1, lck2);
    if (uring && pin2 < pin1 + 2048) fail_msg("prepare: VmPin %ld -> %ld kB", pin1, pin2);
    assert_int_equal(IOMemoryDescriptor_complete(pmd, 0), kIOReturnSuccess);
    assert_int_equal(dkt_locked_kb(), lck2);   /* still prepared once */
    assert_int_equal(IOMemoryDescriptor_complete(pmd, 0), kIOReturnSuccess);
    if (dkt_locked_kb() != lck1) fail_msg("final complete: VmLck %ld, expected %ld kB", dkt_locked_kb(), lck1);
    if (dkt_pinned_kb() != pin1) fail_msg("final complete: VmPin %ld, expected %ld kB", dkt_pinned_kb(), pin1);
    IOByteCount sl = 0xdead;
    assert_int_equal(IOMemoryDescriptor_getPhysicalSegment(pmd, 0, &sl, 0), 0);
    assert_int_equal(sl, 0);
  }
  /* an unbalanced complete changes nothing */
  assert_int_equal(IOMemoryDescriptor_complete(pmd, 0), kIOReturnSuccess);
  assert_int_equal(dkt_locked_kb(), lck1);

  /* release while prepared: free completes */
  assert_int_equal(IOMemoryDescriptor_prepare(pmd, 0), kIOReturnSuccess);
  OSObject_release(pg);
  for (int k = 0; k < NW; k++) OSObject_release(w[k]);
  if (dkt_locked_kb() != lck0 || dkt_pinned_kb() != pin0 || dkt_fd_count() != fd0)
    fail_msg("after release: VmLck %ld (was %ld) kB, VmPin %ld (was %ld) kB, fds %d (were %d)",
             dkt_locked_kb(), lck0, dkt_pinned_kb(), pin0, dkt_fd_count(), fd0);

  /* many create/release cycles leak nothing */
  for (int k = 0; k < 200; k++) {
    IOBufferMemoryDescriptor *b = (k % 3 == 0) ? IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, 3 * PS + 17, 1)
                                  : (k % 3 == 1) ? IOBufferMemoryDescriptor_inTaskWithOptions(NULL, kIODirectionInOut, 64 * 1024, 1)
                                                 : IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable | kIODirectionOut, PS, 1);
    if (!b) fail_msg("cycle %d: NULL, %s", k, dkt_failure_text());
    if (k % 3 == 2)   /* released while prepared: free completes */
      assert_int_equal(IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, 0), kIOReturnSuccess);
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)b, kernel_task, 0,
                                                            kIOMapAnywhere | kIOMapUnique, 0, 0);
    assert_non_null(m);
    OSObject_release(m);
    OSObject_release(b);
  }
  if (dkt_locked_kb() != lck0 || dkt_pinned_kb() != pin0 || dkt_fd_count() != fd0)
    fail_msg("after 200 cycles: VmLck %ld (was %ld) kB, VmPin %ld (was %ld) kB, fds %d (were %d)",
             dkt_locked_kb(), lck0, dkt_pinned_kb(), pin0, dkt_fd_count(), fd0);
}

/* ---- pin method NONE: no physical addresses ------------------------------------------------ */
/* The checks, shared by the in-process test and the seccomp child. Returns 0 or the line of
 * the failed check; runs without cmocka asserts. */
#define NONE_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "pin-none check failed: line %d: %s (%s)\n", __LINE__, #cond,        \
              dkt_failure_text());                                                             \
      return __LINE__;                                                                     \
    }                                                                                      \
  } while (0)

static int pin_none_checks_inner(void) {
  size_t ps = dk_capabilities()->page_size;
  size_t size = 3 * ps + 17;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
  NONE_CHECK(b != NULL);
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  char *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  NONE_CHECK(va != NULL);
  NONE_CHECK(dkt_all_bytes(va, size, 0));
  memset(va, 0x77, size);                       /* the memory itself is fine */
  const IOOptionBits opts[] = { 0, kIOMemoryMapperNone };
  for (int k = 0; k < 2; k++) {
    IOByteCount sl = 0xdead;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, opts[k]);
    NONE_CHECK(a == 0);
    NONE_CHECK(sl == 0);
    NONE_CHECK(dk_last_failure()->constraint == DK_CONSTRAINT_PIN);
    a = IOMemoryDescriptor_getPhysicalSegment(md, ps + 1, &sl, opts[k]);
    NONE_CHECK(a == 0 && sl == 0);
    NONE_CHECK(dk_last_failure()->constraint == DK_CONSTRAINT_PIN);
  }
  NONE_CHECK(IOMemoryDescriptor_getPhysicalAddress(md) == 0);
  OSObject_release(b);

  /* with REQUIRE_PIN off, the caller takes the risk and gets the (current) frames */
  if (dk_capabilities()->pagemap_frames) {
    long old = dk_option_get(DK_OPTION_REQUIRE_PIN);
    dk_option_set(DK_OPTION_REQUIRE_PIN, 0);
    b = IOBufferMemoryDescriptor_withOptions(kIODirectionInOut, size, 1);
    NONE_CHECK(b != NULL);
    md = (IOMemoryDescriptor *)b;
    va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
    uint64_t pfn[8] = { 0 };
    NONE_CHECK(dkt_read_frames(va, size, pfn) > 0);
    IOByteCount sl = 0;
    addr64_t a = IOMemoryDescriptor_getPhysicalSegment(md, 0, &sl, 0);
    uint64_t run = 0;
    NONE_CHECK(a != 0);
    NONE_CHECK(a == dkt_expected_segment(va, size, pfn, 0, &run));
    OSObject_release(b);
    dk_option_set(DK_OPTION_REQUIRE_PIN, old);
  }
  return 0;
}

/* The checks assume the default DK_OPTION_REQUIRE_PIN = 1, whatever the environment says. */
static int pin_none_checks(void) {
  long old = dk_option_get(DK_OPTION_REQUIRE_PIN);
  dk_option_set(DK_OPTION_REQUIRE_PIN, 1);
  int line = pin_none_checks_inner();
  dk_option_set(DK_OPTION_REQUIRE_PIN, old);
  return line;
}

static void test_pin_none_refuses_physical_addresses(void **state) {
  (void)state;
  const dk_caps *caps = dk_capabilities();
  if (!caps->pagemap_frames)
    DKT_SKIP("needs root (pagemap frame numbers): without them the refusal is PRIVILEGE, not PIN");
  if (caps->pin_method != DK_PIN_NONE)
    DKT_SKIP("pin_method is %s here (%s); the NONE branch runs in test_pin_none_without_io_uring",
             dk_pin_method_name(caps->pin_method), caps->pin_detail);
  assert_int_equal(pin_none_checks(), 0);
}

#define PIN_NONE_ENV "DKT_PIN_NONE_CHILD"

/* The NONE branch for real: this binary again, with io_uring_setup refused by seccomp, so
 * the library cannot take the io_uring pin (and with compact_unevictable_allowed = 1, has no
 * other). */
static void test_pin_none_without_io_uring(void **state) {
  (void)state;
  DKT_REQUIRE_ROOT();   /* without it the refusal is about privilege (test_nonroot) */
#ifndef DKT_AUDIT_ARCH
  DKT_SKIP("no seccomp architecture constant for this CPU");
#else
  long cua = dkt_read_sysctl("vm/compact_unevictable_allowed");
  if (cua == 0) DKT_SKIP("vm.compact_unevictable_allowed = 0: mlock alone pins, NONE cannot be forced");
  fflush(stdout);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (dkt_forbid_io_uring() != 0) _exit(121);
    setenv(PIN_NONE_ENV, "1", 1);
    unsetenv("DMAKIT_REQUIRE_PIN");
    execl("/proc/self/exe", "test_pinning", (char *)NULL);
    _exit(122);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
    DKT_SKIP("with io_uring refused the library still found a pin method (see its line above)");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 78)
    DKT_SKIP("the seccomp child cannot read frame numbers");
  if (WIFEXITED(st) && WEXITSTATUS(st) >= 120 && WEXITSTATUS(st) <= 122)
    DKT_SKIP("could not set up the seccomp child (status %d)", WEXITSTATUS(st));
  dkt_assert_child_ok(st);
#endif
}

static int pin_none_child_main(void) {
  const dk_caps *caps = dk_capabilities();
  printf("seccomp child: pin_method %s (%s)\n", dk_pin_method_name(caps->pin_method), caps->pin_detail);
  fflush(stdout);
  if (caps->pin_method != DK_PIN_NONE) return 77;
  if (!caps->pagemap_frames) return 78;
  int line = pin_none_checks();
  return line ? 1 : 0;
}

/* The frames test is the 4K provider's (mlock'ed pages that compaction would move, pinned
 * through io_uring per buffer) and runs with the pool off; it runs again with the hugepage
 * pool. The VmLck/VmPin accounting test measures per-buffer locking, which only 4K-page
 * buffers have (the pool pins whole chunks until dk_pool_trim): pool off. */
DKT_POOL_VARIANTS(test_handed_out_frames_never_move)

static int teardown_unfragment_pool(void **state) {
  teardown_unfragment(state);
  return dkt_teardown_pool_restore(state);
}

int main(void) {
  if (getenv(PIN_NONE_ENV)) return pin_none_child_main();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_handed_out_frames_never_move_4k, dkt_setup_pool_off,
                                      teardown_unfragment_pool),
      cmocka_unit_test_setup_teardown(test_handed_out_frames_never_move_pool, dkt_setup_pool_on,
                                      teardown_unfragment_pool),
      cmocka_unit_test_setup_teardown(test_pins_gone_after_complete_and_release, dkt_setup_pool_off,
                                      dkt_teardown_pool_restore),
      cmocka_unit_test(test_pin_none_refuses_physical_addresses),
      cmocka_unit_test(test_pin_none_without_io_uring),
  };
  return cmocka_run_group_tests_name("pinning", tests, group_setup, NULL);
}
