/* tests/support/dk_test.h: helpers shared by the dmakit tests. They are deliberately
 * independent of the library: their own pagemap reader, process helpers and /proc parsers,
 * so that a test checks the library against the kernel, not against itself. */
#ifndef DK_TEST_H
#define DK_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <cmocka.h>

/* The system page size as the kernel reports it (sysconf), for the helpers' own use.
 * Tests take the page size from dk_capabilities()->page_size. */
size_t dkt_page_size(void);

/* Pages touched by [va, va + len): the number of entries dkt_read_frames writes. */
size_t dkt_page_count(const void *va, size_t len);

/* Frame numbers of the pages covering [va, va + len), read with our own open/pread of
 * /proc/self/pagemap. pfn_out[i] is the frame of the i-th page (0 if not present or if the
 * kernel hides frame numbers). Returns the number of pages, 0 on error (len 0 included). */
size_t dkt_read_frames(const void *va, size_t len, uint64_t *pfn_out);

/* The same, into a malloc'ed array the caller frees; NULL on error. *count gets the pages. */
uint64_t *dkt_read_frames_alloc(const void *va, size_t len, size_t *count);

/* True when pagemap shows real frame numbers to this process (root / CAP_SYS_ADMIN). */
bool dkt_pfn_readable(void);

/* Touch (read) every page of [va, va + len), so that a fresh mapping is populated. */
void dkt_touch_read(const void *va, size_t len);

/* The physical address of the byte at `offset` and the bytes from there to the next
 * physical discontinuity (or to `len`), from frames read for [va, va + len).
 * pfn[] is indexed by page of va (as filled by dkt_read_frames(va, len, ...)). Returns the
 * address, 0 if a frame is missing. */
uint64_t dkt_expected_segment(const void *va, size_t len, const uint64_t *pfn, size_t offset,
                              uint64_t *run);

/* Write 1 to /proc/sys/vm/compact_memory. 0 or -errno. */
int dkt_compact_memory(void);

/* Read an integer sysctl under /proc/sys (e.g. "vm/compact_unevictable_allowed"); -1 on error. */
long dkt_read_sysctl(const char *name);

/* Allocate `bytes` of anonymous memory, touch it, then free every other page, so that
 * compaction has work. 0 or -errno. dkt_unfragment frees what is left. Only one at a time. */
int  dkt_fragment_memory(size_t bytes);
void dkt_unfragment(void);

/* fork; the child (SIGSEGV and friends back at SIG_DFL, no core file) runs fn(arg) and exits
 * 0 (fn may _exit itself, or die). fn must not use cmocka asserts (use DKT_CHILD_CHECK). The parent waits
 * and stores the raw wait status. 0 or -errno. stdout/stderr are flushed before fork. */
/* The pid of the last child dkt_run_in_child started (reaped by then). */
long dkt_last_child_pid(void);
int dkt_run_in_child(void (*fn)(void *), void *arg, int *status);

/* In a child: setgroups(0)/setgid/setuid to 65534 (nobody), and mark the process dumpable
 * again so that /proc/self belongs to the new uid as it would in a real non-root run.
 * 0 or -errno. */
int dkt_drop_root(void);

/* VmLck and VmPin of /proc/self/status in kB; -1 when not found. */
long dkt_locked_kb(void);
long dkt_pinned_kb(void);

/* True when mlock really locks in this process (VmLck rises). AddressSanitizer intercepts
 * mlock as a no-op, so VmLck checks must be skipped there. */
bool dkt_mlock_works(void);

/* A readable descriptor (a memfd, at offset 0) holding `text`: what a swapped open() returns for
 * a file a test fakes (/proc text, sysfs). -1 with errno on failure. */
int dkt_text_fd(const char *text);

/* Open file descriptors of this process (entries of /proc/self/fd). -1 on error. */
int dkt_fd_count(void);

/* Case-insensitive search for `needle` in `text`, ignoring '_' in both (so "0xffff_ffff"
 * matches "0xffffffff"). */
bool dkt_text_has(const char *text, const char *needle);

/* True when every byte of [p, p + len) equals c. */
/* Whether anything is mapped at addr; whether a dmakit memfd (4K or pool) is mapped there. After
 * an unmap the range may be reused by anyone (a sanitizer runtime maps memory of its own): the
 * promise is that dmakit's memory is gone, and that a still-unmapped address faults. */
/* dk_last_failure() as one line: code, constraint and text (a static buffer). */
const char *dkt_failure_text(void);
bool dkt_is_mapped(const void *addr);
bool dkt_maps_dmakit(const void *addr);
bool dkt_all_bytes(const void *p, size_t len, unsigned char c);

/* ---- pool variants ----------------------------------------------------------------------
 * The only dmakit calls in tests/support: DK_OPTION_POOL for one test. As root with hugetlb
 * (dk_capabilities()->pool_usable) and the option on, every wired buffer comes from the
 * hugepage pool; with it off, from 4K pages. */
/* Skip (with the reason) unless physical addresses can be handed out here: root with frame
 * numbers visible, and frames pinned (or the pin requirement waived). test_pinning covers
 * the refusal itself. */
void dkt_require_physical(void);
bool dkt_pool_usable(void);   /* dk_capabilities()->pool_usable */
bool dkt_pool_on(void);       /* usable and DK_OPTION_POOL on */
/* cmocka setup/teardown: DK_OPTION_POOL 0 (or 1) for one test, the old value back after. */
int  dkt_setup_pool_off(void **state);
int  dkt_setup_pool_on(void **state);
int  dkt_teardown_pool_restore(void **state);

/* A test body run twice: fn##_4k with the pool off, fn##_pool with it on (skipped where the
 * pool cannot be used). Register them with DKT_TEST_4K(fn) and DKT_TEST_POOL(fn). */
#define DKT_POOL_VARIANTS(fn)                                                              \
  static void fn##_4k(void **state) { fn(state); }                                         \
  static void fn##_pool(void **state) {                                                    \
    if (!dkt_pool_usable()) DKT_SKIP("the hugepage pool is not usable here");              \
    fn(state);                                                                             \
  }
#define DKT_TEST_4K(fn) cmocka_unit_test_setup_teardown(fn##_4k, dkt_setup_pool_off, dkt_teardown_pool_restore)
#define DKT_TEST_POOL(fn) cmocka_unit_test_setup_teardown(fn##_pool, dkt_setup_pool_on, dkt_teardown_pool_restore)

/* Our own proof of a physical promise from pagemap frames of [va, va + len): one physically
 * contiguous run (when `contiguous`), the physical start a multiple of the next power of two
 * of `alignment`, and every byte at or below `limit` (0 = none). NULL or a static text
 * saying what is broken. */
const char *dkt_check_physical_promise(const void *va, size_t len, uint64_t alignment, uint64_t limit,
                                       bool contiguous);

#define DKT_SKIP_ROOT_TEXT "SKIP: needs root (pagemap frame numbers)"

#define DKT_REQUIRE_ROOT()                                                                 \
  do {                                                                                     \
    if (geteuid() != 0 || !dkt_pfn_readable()) {                                           \
      printf("%s\n", DKT_SKIP_ROOT_TEXT);                                                  \
      fflush(stdout);                                                                      \
      skip();                                                                              \
    }                                                                                      \
  } while (0)

/* Skip with a reason. */
#define DKT_SKIP(...)                                                                      \
  do {                                                                                     \
    printf("SKIP: " __VA_ARGS__);                                                          \
    printf("\n");                                                                          \
    fflush(stdout);                                                                        \
    skip();                                                                                \
  } while (0)

/* For code that runs in a forked child, where cmocka's longjmp must not be used: on failure
 * print where and why, then _exit(1). The parent asserts a clean exit. */
#define DKT_CHILD_CHECK(cond)                                                              \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "child check failed: %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
      fflush(stderr);                                                                      \
      _exit(1);                                                                            \
    }                                                                                      \
  } while (0)

/* An IOReturn expression that must succeed (DKT_OK) or give `expected` (DKT_RC); a failure
 * names the expression, the codes and dk_last_failure(). For tests that include dmakit.h. */
#define DKT_OK(expr)                                                                       \
  do {                                                                                     \
    IOReturn rc_ = (expr);                                                                 \
    if (rc_ != kIOReturnSuccess)                                                           \
      fail_msg("%s: %s (%s)", #expr, dk_ioreturn_name(rc_), dkt_failure_text());           \
  } while (0)

#define DKT_RC(expected, expr)                                                             \
  do {                                                                                     \
    IOReturn rc_ = (expr);                                                                 \
    if (rc_ != (IOReturn)(expected))                                                       \
      fail_msg("%s: got %s, expected %s (%s)", #expr, dk_ioreturn_name(rc_),               \
               dk_ioreturn_name((IOReturn)(expected)), dkt_failure_text());                \
  } while (0)

/* The parent side: assert that a child exited 0 (and say how it ended otherwise). */
void dkt_assert_child_ok(int status);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t dkt_now_ms(void);
/* Poll `cond` every 2 ms for up to `ms`; the value of the last evaluation. */
#define DKT_WAIT_UNTIL(cond, ms)                                                           \
  ({                                                                                       \
    uint64_t end_ = dkt_now_ms() + (uint64_t)(ms);                                         \
    bool ok_;                                                                              \
    while (!(ok_ = (cond)) && dkt_now_ms() < end_) usleep(2000);                           \
    ok_;                                                                                   \
  })

#endif
