/* tests/test_reserve.c: reservations (dmakit/reserve.h), proven through the frames and across
 * processes. Deterministic on any machine of this kind: the reservations made here use a mask
 * above all RAM (every page qualifies), and the buffers drawn from them ask for a limit taken
 * from the reserved pages themselves. Covered: a reservation made by one process serves
 * buffers in others with no search; concurrent claims by forked processes never share a
 * frame (read through our own pagemap reader); a killed process's pages return and the next
 * claimant sees them zeroed; status; release refused while pages are held and restoring
 * nr_hugepages after; bounds refusals naming what does not fit; a search below 28 bits within a
 * small bound that either refuses naming the mask or keeps only verified frames; injected
 * system-call failures in create, claim and release leaving nothing behind. Needs root (frames,
 * nr_hugepages) and 2 MiB hugepages; runs in a private DMAKIT_RESERVE_DIR under /tmp. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dmakit/dmakit.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "phys/huge.h"
#include "phys/phys.h"
#include "phys/reserve.h"
#include "prim/prim.h"
#include "dk_test.h"

#define P2 (2ull << 20)
#define NR "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
#define SURPLUS "/sys/kernel/mm/hugepages/hugepages-2048kB/surplus_hugepages"
#define OVERCOMMIT "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages"

static char g_dir[64];
static uint64_t g_wide;          /* 2^n - 1 at or above the top of RAM: every page is below it */
static long g_nr_before;

static long read_long(const char *path)
{
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f) { if (fscanf(f, "%ld", &v) != 1) v = -1; fclose(f); }
  return v;
}

/* Persistent 2 MiB hugepages: nr_hugepages also counts surplus pages, which a pool that just
 * exited may still hold for a moment (the kernel drops its io_uring pins after the exit). Such a
 * page freed between the read of nr_hugepages and that of surplus_hugepages would count as
 * persistent, and the kernel passes through states where nr_hugepages counts a page that is
 * neither (a hugepage being migrated): the pair is read until three readings a millisecond
 * apart agree (within about 2 s). */
static long nr_now(void)
{
  long nr = read_long(NR), surplus = read_long(SURPLUS);
  for (int i = 0, agree = 0; i < 2000 && agree < 2; i++) {
    struct timespec t = { 0, 1000000 };
    nanosleep(&t, NULL);
    long nr2 = read_long(NR), surplus2 = read_long(SURPLUS);
    agree = nr2 == nr && surplus2 == surplus ? agree + 1 : 0;
    nr = nr2;
    surplus = surplus2;
  }
  return nr < 0 ? -1 : nr - (surplus > 0 ? surplus : 0);
}

static void require(void)
{
  DKT_REQUIRE_ROOT();
  if (nr_now() < 0) DKT_SKIP("the kernel has no 2 MiB hugepages");
  if (!g_dir[0]) DKT_SKIP("no private reservation directory");
}

static int group_setup(void **s)
{
  (void)s;
  if (geteuid() != 0 || nr_now() < 0) return 0;
  snprintf(g_dir, sizeof g_dir, "/tmp/dmakit-test-reserve.%d", (int)getpid());
  setenv("DMAKIT_RESERVE_DIR", g_dir, 1);
  uint64_t top = dk_capabilities()->ram_top;
  g_wide = (1ull << dk__bitlen(top ? top : (1ull << 40))) - 1;
  if (g_wide < (1ull << 22) - 1) g_wide = (1ull << 22) - 1;
  g_nr_before = nr_now();
  /* a fallback pool search (when the reservation is exhausted) stays small */
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MB, 64);
  dk_option_set(DK_OPTION_LOWMEM_SEARCH_MS, 500);
  return 0;
}

static void end_holders(void);
static void end_churn(void);

/* After each test, pass or fail: no holder left alive, nothing left reserved, so a failure is
 * reported once and never leaves hugepages behind on the machine (or fails the tests after it). */
static int test_teardown(void **s)
{
  (void)s;
  end_holders();
  end_churn();
  if (!g_dir[0]) return 0;
  dk_pool_trim();
  size_t n = 0;
  if (dk_reserve_list(NULL, 0, &n) == kIOReturnSuccess && n > 0) {
    IOReturn rc = dk_reserve_release(0);
    if (rc != kIOReturnSuccess)
      fprintf(stderr, "a test left %zu reservation(s); release: %s\n", n, dkt_failure_text());
  }
  return 0;
}

static int group_teardown(void **s)
{
  (void)s;
  end_holders();
  if (!g_dir[0]) return 0;
  dk_pool_trim();
  IOReturn rc = dk_reserve_release(0);
  if (rc != kIOReturnSuccess && rc != kIOReturnNotFound) {
    /* left for `DMAKIT_RESERVE_DIR=<dir> dmakit reserve --release` once this process is gone */
    fprintf(stderr, "reservations in %s could not be released: %s\n", g_dir, dkt_failure_text());
    return 0;
  }
  char p[128];
  snprintf(p, sizeof p, "%s/hugetlbfs-2M", g_dir);
  umount2(p, MNT_DETACH);
  rmdir(p);
  const char *files[] = { "lock", "table", "search", NULL };
  for (int i = 0; files[i]; i++) {
    snprintf(p, sizeof p, "%s/reserve/%s", g_dir, files[i]);
    unlink(p);
  }
  char cmd[320];
  snprintf(cmd, sizeof cmd, "rm -f %s/reserve/*.claims; rmdir %s/reserve %s", g_dir, g_dir, g_dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s incomplete\n", g_dir);
  if (nr_now() != g_nr_before) fprintf(stderr, "nr_hugepages %ld, was %ld\n", nr_now(), g_nr_before);
  return 0;
}

/* Each test starts and ends with no reservation and nr_hugepages as found. */
static void assert_clean(void)
{
  /* this process's own pool gives its surplus hugepages back first: a search that raises
   * nr_hugepages would otherwise make them persistent (the kernel converts surplus pages
   * first), and the count would be off by them */
  dk_pool_trim();
  size_t n = 99;
  assert_int_equal(dk_reserve_list(NULL, 0, &n), kIOReturnSuccess);
  assert_int_equal(n, 0);
  assert_int_equal(nr_now(), g_nr_before);
}

typedef struct frames { uint64_t f[64]; size_t n; } frames;

static frames reserved(void)
{
  frames fr;
  dk_reserve_page p[64];
  size_t n = 0;
  assert_int_equal(dk_reserve_pages(p, 64, &n), kIOReturnSuccess);
  assert_true(n <= 64);
  for (size_t i = 0; i < n; i++) fr.f[i] = p[i].frame;
  fr.n = n;
  return fr;
}

static bool in_frames(const frames *fr, uint64_t pa)
{
  for (size_t i = 0; i < fr->n; i++)
    if (pa >= fr->f[i] && pa < fr->f[i] + P2) return true;
  return false;
}

/* The limit a request gives to draw from the pages: the highest reserved page that the library
 * keeps as a limit (below the top of RAM); *usable receives how many pages lie under it. */
static uint64_t limit_of(const frames *fr, size_t *usable)
{
  uint64_t top = dk_capabilities()->ram_top, best = 0;
  for (size_t i = 0; i < fr->n; i++) {
    uint64_t end = fr->f[i] + P2 - 1;
    if ((!top || end < top - 1) && end > best) best = end;
  }
  *usable = 0;
  for (size_t i = 0; i < fr->n; i++) *usable += fr->f[i] + P2 - 1 <= best;
  return best;
}

/* In a child: a contiguous buffer of `len` below `high`, its frames read by our own reader. */
static IOBufferMemoryDescriptor *child_buffer(uint64_t len, uint64_t high, uint64_t *pa)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = high;
  c.contiguous = true;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, len, &c);
  if (!b) return NULL;
  uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  uint64_t pfn[1024];
  size_t n = dkt_read_frames(va, (size_t)len, pfn);
  DKT_CHILD_CHECK(n > 0 && n <= 1024);
  for (size_t i = 1; i < n; i++) DKT_CHILD_CHECK(pfn[i] == pfn[0] + i);
  *pa = pfn[0] * dkt_page_size() + ((uintptr_t)va % dkt_page_size());
  return b;
}

static uint64_t lowmem_searches(void)
{
  dk_pool_stats st = { .size = sizeof st };
  dk_pool_get_stats(&st);
  return st.lowmem_searches;
}

/* ---- arguments and bounds ------------------------------------------------------------------ */
static void reserve_bad_arguments(void **s)
{
  (void)s;
  dk_reserve_cost e;
  assert_int_equal(dk_reserve_estimate(0xF0000000ull, P2, NULL, &e), kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "0xf0000000"));
  assert_int_equal(dk_reserve_estimate(0xFFFFF, P2, NULL, &e), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_estimate(0xFFFFFFFF, 0, NULL, &e), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_estimate(0xFFFFFFFF, P2, NULL, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_create(0x12345, P2, NULL, NULL, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(dk_reserve_release(0x1000), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_list(NULL, 3, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_pages(NULL, 1, &(size_t){ 0 }), kIOReturnBadArgument);
}

static void reserve_bounds_refused(void **s)
{
  (void)s;
  require();
  assert_clean();
  /* a bound below what is asked: refused before anything is held */
  dk_reserve_bounds b = { .max_hold = 2 * P2 };
  dk_reserve_cost e;
  assert_int_equal(dk_reserve_estimate(g_wide, 8 * P2, &b, &e), kIOReturnSuccess);
  assert_false(e.fits);
  assert_int_equal(e.need, 8 * P2);
  assert_int_equal(e.free_above, 0);                /* nothing lies above a mask above RAM */
  assert_true(dkt_text_has(e.text, "more than the bound"));
  assert_true(strlen(e.text) + 16 < sizeof dk_last_failure()->text);   /* the refusal carries all of it */
  assert_int_equal(dk_reserve_create(g_wide, 8 * P2, &b, NULL, NULL), kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "not searched"));
  assert_true(dkt_text_has(dk_last_failure()->text, "4 MiB"));
  /* a floor of free memory larger than the machine */
  dk_reserve_bounds k = { .keep_free = 1ull << 50 };
  assert_int_equal(dk_reserve_create(g_wide, P2, &k, NULL, NULL), kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "would leave less than"));
  assert_clean();
  /* the estimate of a feasible one fits and says what it may hold */
  assert_int_equal(dk_reserve_estimate(g_wide, 3 * P2, NULL, &e), kIOReturnSuccess);
  assert_true(e.fits);
  assert_int_equal(e.hold, 3 * P2);
  assert_true(e.available > 0 && e.keep_free >= (128ull << 20) && e.max_seconds == 300);
}

/* ---- persistence and claims ----------------------------------------------------------------- */
static void make_in_child(void *arg)
{
  uint64_t bytes = *(uint64_t *)arg;
  DKT_CHILD_CHECK(dk_reserve_create(g_wide, bytes, NULL, NULL, NULL) == kIOReturnSuccess);
  _exit(0);
}

typedef struct use_args { uint64_t high; const frames *fr; } use_args;

static void use_in_child(void *arg)
{
  const use_args *u = arg;
  uint64_t pa = 0;
  IOBufferMemoryDescriptor *b = child_buffer(64 * 1024, u->high, &pa);
  if (!b) { fprintf(stderr, "child: %s\n", dkt_failure_text()); _exit(1); }
  DKT_CHILD_CHECK(in_frames(u->fr, pa));
  DKT_CHILD_CHECK(pa + 64 * 1024 - 1 <= u->high);
  DKT_CHILD_CHECK(lowmem_searches() == 0);
  dk_reserve_info ri;
  size_t n = 0;
  DKT_CHILD_CHECK(dk_reserve_list(&ri, 1, &n) == kIOReturnSuccess && n == 1 && ri.pages_claimed == 1);
  OSObject_release(b);
  _exit(0);
}

static void reserve_persists_and_serves(void **s)
{
  (void)s;
  require();
  assert_clean();
  uint64_t bytes = 3 * P2 + 1;               /* rounded up to 4 pages */
  int st;
  assert_int_equal(dkt_run_in_child(make_in_child, &bytes, &st), 0);
  dkt_assert_child_ok(st);
  /* the maker is gone; the reservation stays */
  dk_reserve_info ri;
  size_t n = 0;
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(n, 1);
  assert_int_equal(ri.mask, g_wide);
  assert_int_equal(ri.pages, 4);
  assert_int_equal(ri.pages_claimed, 0);
  assert_int_equal(nr_now(), g_nr_before + 4);
  frames fr = reserved();
  assert_int_equal(fr.n, 4);
  size_t usable;
  use_args u = { limit_of(&fr, &usable), &fr };
  assert_true(usable >= 3);
  /* asking for the same again finds it there: no search */
  assert_int_equal(dk_reserve_create(g_wide, 4 * P2, NULL, NULL, NULL), kIOReturnSuccess);
  assert_int_equal(nr_now(), g_nr_before + 4);
  for (int i = 0; i < 2; i++) {                /* two processes one after the other */
    assert_int_equal(dkt_run_in_child(use_in_child, &u, &st), 0);
    dkt_assert_child_ok(st);
  }
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(ri.pages_claimed, 0);        /* both exited: their pages came back */
  assert_int_equal(dk_reserve_release(g_wide), kIOReturnSuccess);
  assert_clean();
  assert_int_equal(dk_reserve_release(g_wide), kIOReturnNotFound);
}

/* A child that takes one 2 MiB buffer (one reserved page), fills it, reports its frame, and
 * holds it until the parent closes `go` (or kills it). */
typedef struct holder { pid_t pid; int report, go; } holder;
static int g_parent_fds[64];            /* pipe ends the parent holds for live holders */
static int g_nparent_fds;
static pid_t g_holder_pids[32];         /* holders not yet waited for */
static int g_nholder_pids;

static void forget_fd(int fd)
{
  for (int i = 0; i < g_nparent_fds; i++)
    if (g_parent_fds[i] == fd) g_parent_fds[i--] = g_parent_fds[--g_nparent_fds];
}

static void forget_pid(pid_t pid)
{
  for (int i = 0; i < g_nholder_pids; i++)
    if (g_holder_pids[i] == pid) g_holder_pids[i--] = g_holder_pids[--g_nholder_pids];
}

/* A test that failed while holders held pages: kill and reap them, close the parent's ends. */
static void end_holders(void)
{
  for (int i = 0; i < g_nholder_pids; i++) kill(g_holder_pids[i], SIGKILL);
  for (int i = 0; i < g_nholder_pids; i++) waitpid(g_holder_pids[i], NULL, 0);
  for (int i = 0; i < g_nparent_fds; i++) close(g_parent_fds[i]);
  g_nholder_pids = g_nparent_fds = 0;
}

static holder hold_page(uint64_t high, unsigned char fill)
{
  int rp[2], gp[2];
  assert_int_equal(pipe(rp), 0);
  assert_int_equal(pipe(gp), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(rp[0]);
    close(gp[1]);
    for (int i = 0; i < g_nparent_fds; i++) close(g_parent_fds[i]);   /* other holders' ends */
    uint64_t pa = 0;
    IOBufferMemoryDescriptor *b = child_buffer(P2, high, &pa);
    uint64_t msg[2] = { b ? pa : 0, b ? 0 : 1 };
    if (b) {
      uint8_t *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
      DKT_CHILD_CHECK(dkt_all_bytes(va, (size_t)P2, 0));          /* zeroed at claim */
      memset(va, fill, (size_t)P2);
    }
    if (write(rp[1], msg, sizeof msg) != sizeof msg) _exit(2);
    char c;
    while (read(gp[0], &c, 1) > 0) {}
    if (b) OSObject_release(b);
    _exit(0);
  }
  close(rp[1]);
  close(gp[0]);
  g_holder_pids[g_nholder_pids++] = pid;
  g_parent_fds[g_nparent_fds++] = rp[0];
  g_parent_fds[g_nparent_fds++] = gp[1];
  return (holder){ pid, rp[0], gp[1] };
}

static uint64_t holder_frame(holder *h, bool *failed)
{
  uint64_t msg[2] = { 0, 1 };
  assert_int_equal(read(h->report, msg, sizeof msg), sizeof msg);
  *failed = msg[1] != 0;
  return msg[0];
}

static void holder_end(holder *h, bool kill_it)
{
  if (kill_it) kill(h->pid, SIGKILL);
  close(h->go);
  close(h->report);
  forget_fd(h->go);
  forget_fd(h->report);
  int st;
  assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
  forget_pid(h->pid);
  if (kill_it) assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  else dkt_assert_child_ok(st);
}

/* A fresh reservation of 4 pages; *high is the limit that draws from them (limit_of). */
static frames four_pages(uint64_t *high, size_t *usable)
{
  require();
  assert_clean();
  assert_int_equal(dk_reserve_create(g_wide, 4 * P2, NULL, NULL, NULL), kIOReturnSuccess);
  frames fr = reserved();
  *high = limit_of(&fr, usable);
  return fr;
}

/* n holders at once (fill 0: a different byte each), every one given a distinct reserved page:
 * got[i] receives holder i's frame. */
static void hold_all(holder *h, size_t n, uint64_t high, unsigned char fill, const frames *fr, uint64_t *got)
{
  for (size_t i = 0; i < n; i++) h[i] = hold_page(high, fill ? fill : (unsigned char)(0x11 * (i + 1)));
  for (size_t i = 0; i < n; i++) {
    bool failed;
    got[i] = holder_frame(&h[i], &failed);
    assert_false(failed);
    assert_true(in_frames(fr, got[i]));
    assert_int_equal(got[i] % P2, 0);
    for (size_t j = 0; j < i; j++) assert_true(got[j] != got[i]);
  }
}

static void reserve_concurrent_claims(void **s)
{
  (void)s;
  size_t usable;
  uint64_t high;
  frames fr = four_pages(&high, &usable);
  holder h[4];
  uint64_t got[4];
  /* every child holds its page at once: no two share a frame, each is a reserved page */
  hold_all(h, usable, high, 0, &fr, got);
  dk_reserve_info ri;
  size_t n;
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(ri.pages_claimed, usable);
  /* release is refused while processes hold pages, and says so */
  assert_int_equal(dk_reserve_release(0), kIOReturnBusy);
  assert_true(dkt_text_has(dk_last_failure()->text, "held by running processes"));
  /* one more process: the reservation has nothing free under the limit; what it gets (if
   * anything) is not a reserved page, or it is refused naming the reservation */
  holder extra = hold_page(high, 0x77);
  bool failed;
  uint64_t pa = holder_frame(&extra, &failed);
  if (!failed) assert_false(in_frames(&fr, pa));
  holder_end(&extra, false);
  for (size_t i = 0; i < usable; i++) holder_end(&h[i], false);
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(ri.pages_claimed, 0);
  assert_int_equal(dk_reserve_release(0), kIOReturnSuccess);
  assert_clean();
}

/* Growing a reservation adds a second file of pages; all of them serve, and release takes both. */
static void reserve_grows(void **s)
{
  (void)s;
  require();
  assert_clean();
  dk_reserve_info ri;
  size_t n;
  assert_int_equal(dk_reserve_create(g_wide, 2 * P2, NULL, NULL, NULL), kIOReturnSuccess);
  /* nr_hugepages rose by exactly what the reservation holds (at least the 2 pages asked) */
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_true(ri.pages >= 2);
  assert_int_equal(nr_now(), g_nr_before + (long)ri.pages);
  const int files = ri.pages < 4 ? 2 : 1;        /* the growth is a second file of pages */
  assert_int_equal(dk_reserve_create(g_wide, 4 * P2, NULL, NULL, NULL), kIOReturnSuccess);
  assert_int_equal(nr_now(), g_nr_before + 4);
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(n, 1);
  assert_int_equal(ri.pages, 4);
  char p[160];
  for (int gen = 0; gen < files; gen++) {
    snprintf(p, sizeof p, "%s/hugetlbfs-2M/mask-0x%llx.%d.pages", g_dir, (unsigned long long)g_wide, gen);
    assert_int_equal(access(p, F_OK), 0);
  }
  frames fr = reserved();
  size_t usable;
  uint64_t high = limit_of(&fr, &usable);
  holder h[4];
  uint64_t got[4];
  hold_all(h, usable, high, 0x42, &fr, got);
  for (size_t i = 0; i < usable; i++) holder_end(&h[i], false);
  assert_int_equal(dk_reserve_release(g_wide), kIOReturnSuccess);
  assert_clean();
  assert_int_equal(access(p, F_OK), -1);
}

static void exhausted_in_child(void *arg)
{
  const use_args *u = arg;
  dk_option_set(DK_OPTION_POOL_MAX_MB, 0);        /* no room to grow (the pool grows by as little as one page): only the reservation */
  uint64_t pa;
  IOBufferMemoryDescriptor *b = child_buffer(P2, u->high, &pa);
  DKT_CHILD_CHECK(b == NULL);
  fprintf(stderr, "refused as expected: %s\n", dkt_failure_text());
  DKT_CHILD_CHECK(dkt_text_has(dk_last_failure()->text, "held by running processes"));
  DKT_CHILD_CHECK(dkt_text_has(dk_last_failure()->text, "grow it: dmakit reserve --mask"));
  _exit(0);
}

static void reserve_killed_claim_returns_zeroed(void **s)
{
  (void)s;
  size_t usable;
  uint64_t high;
  frames fr = four_pages(&high, &usable);
  holder h[4];
  uint64_t got[4];
  hold_all(h, usable, high, 0xA5, &fr, got);
  /* exhausted: the refusal says what the reservation holds and how to grow it */
  use_args u = { high, &fr };
  int st;
  assert_int_equal(dkt_run_in_child(exhausted_in_child, &u, &st), 0);
  dkt_assert_child_ok(st);
  /* killed holders leave their data behind; their pages come back and the next claimant sees
   * them zeroed (hold_page checks every byte before it writes) */
  for (size_t i = 0; i < usable; i++) holder_end(&h[i], true);
  dk_reserve_info ri;
  size_t n;
  assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
  assert_int_equal(ri.pages_claimed, 0);
  hold_all(h, usable, high, 0x5A, &fr, got);
  for (size_t i = 0; i < usable; i++) holder_end(&h[i], false);
  assert_int_equal(dk_reserve_release(0), kIOReturnSuccess);
  assert_clean();
}

/* A search killed while it holds pages: the next search or release undoes it from the journal. */
static bool die_after_a_step(const dk_reserve_progress *p, void *arg)
{
  (void)arg;
  if (p->held) kill(getpid(), SIGKILL);
  return true;
}

static void search_and_die(void *arg)
{
  (void)arg;
  dk_reserve_create(g_wide, 64 * P2, NULL, die_after_a_step, NULL);   /* more than one step finds */
  _exit(3);                                                           /* not reached */
}

static void reserve_killed_search_recovered(void **s)
{
  (void)s;
  require();
  assert_clean();
  int st;
  assert_int_equal(dkt_run_in_child(search_and_die, NULL, &st), 0);
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  long held = nr_now() - g_nr_before;
  print_message("a search killed after its first step left %ld pages raised\n", held);
  assert_true(held > 0);                         /* it died holding them */
  char p[160];
  snprintf(p, sizeof p, "%s/reserve/search", g_dir);
  assert_int_equal(access(p, F_OK), 0);          /* and its journal says so */
  assert_int_equal(dk_reserve_release(0), kIOReturnNotFound);   /* nothing was reserved ... */
  assert_int_equal(access(p, F_OK), -1);
  assert_clean();                                /* ... and what it held is given back */
}

/* ---- a real search below a low mask, within a small bound --------------------------------------- */
static void reserve_low_mask_search(void **s)
{
  (void)s;
  require();
  assert_clean();
  const uint64_t mask = 0x0FFFFFFF;
  dk_reserve_bounds b = { .max_hold = 256ull << 20, .max_seconds = 20 };
  IOReturn rc = dk_reserve_create(mask, P2, &b, NULL, NULL);
  print_message("28-bit reservation within 256 MiB: %s: %s\n", dk_ioreturn_name(rc), dk_last_failure()->text);
  assert_int_equal(nr_now(), g_nr_before + (rc == kIOReturnSuccess ? 1 : 0));
  if (rc != kIOReturnSuccess) {
    assert_true(rc == kIOReturnNoResources || rc == kIOReturnNoMemory);
    assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_MASK);
    assert_true(dkt_text_has(dk_last_failure()->text, "0xfffffff"));
    assert_clean();
    return;
  }
  /* kept: every page verified below the mask by our own reader, in a process of its own */
  frames fr = reserved();
  assert_int_equal(fr.n, 1);
  assert_true(fr.f[0] + P2 - 1 <= mask);
  holder h = hold_page(mask, 0x33);
  bool failed;
  uint64_t pa = holder_frame(&h, &failed);
  assert_false(failed);
  assert_true(pa + P2 - 1 <= mask);
  holder_end(&h, false);
  assert_int_equal(dk_reserve_release(mask), kIOReturnSuccess);
  assert_clean();
}

/* ---- other processes' hugepages come and go meanwhile ------------------------------------------ */
/* A process that maps and unmaps one surplus 2 MiB page for ever (from nr_overcommit_hugepages
 * raised by one for it): the kernel frees its page between any two reads of the counts, and it
 * takes a free page between a search's raise and its mapping. */
static pid_t g_churn = -1;
static long g_churn_oc = -1;          /* nr_overcommit_hugepages before it */

static void write_long(const char *path, long v)
{
  FILE *f = fopen(path, "w");
  if (f) { fprintf(f, "%ld\n", v); fclose(f); }
}

static void start_churn(void)
{
  g_churn_oc = read_long(OVERCOMMIT);
  assert_true(g_churn_oc >= 0);
  write_long(OVERCOMMIT, g_churn_oc + 1);
  fflush(NULL);
  g_churn = fork();
  assert_true(g_churn >= 0);
  if (g_churn == 0) {
    for (;;) {
      void *p = mmap(NULL, P2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
      if (p == MAP_FAILED) continue;
      memset(p, 1, 4096);
      munmap(p, P2);
    }
  }
}

static void end_churn(void)
{
  if (g_churn > 0) {
    kill(g_churn, SIGKILL);
    waitpid(g_churn, NULL, 0);
  }
  if (g_churn_oc >= 0) write_long(OVERCOMMIT, g_churn_oc);
  g_churn = -1;
  g_churn_oc = -1;
}

static void reserve_under_churn(void **s)
{
  (void)s;
  require();
  assert_clean();
  start_churn();
  /* the counts the library reads agree with each other: nr_hugepages less the surplus pages is
   * the persistent count, whichever moment the other process's page came or went. The kernel
   * itself passes through moments where they do not (a page counted in one and not yet in the
   * other, for as long as the allocating process is off the CPU), so no reading is exact while
   * another process allocates; read apart, one in a dozen was off, read whole almost none. */
  int moved = 0, off = 0, settled_off = 0;
  for (int i = 0; i < 2000; i++) {
    dk_huge_counts k;
    assert_int_equal(dk__huge_counts(P2, &k), 0);
    off += k.nr - k.surplus != g_nr_before;
    moved += k.surplus > 0;
  }
  for (int i = 0; i < 20; i++) {
    dk_huge_counts k;
    assert_int_equal(dk__huge_counts_settled(P2, &k), 0);
    settled_off += k.nr - k.surplus != g_nr_before;
  }
  print_message("2000 whole readings of the counts, %d with the other process's page mapped, %d off; "
                "20 settled readings, %d off\n", moved, off, settled_off);
  assert_true(off <= 20);
  assert_true(settled_off <= 1);
  /* searches and releases meanwhile: each succeeds (a page the other process takes between a
   * step's raise and its mapping is not an error), and none is left reserved */
  for (int i = 0; i < 4; i++) {
    IOReturn rc = dk_reserve_create(g_wide, 4 * P2, NULL, NULL, NULL);
    if (rc) fail_msg("search %d: %s", i, dkt_failure_text());
    assert_int_equal(dk_reserve_release(g_wide), kIOReturnSuccess);
    size_t n = 99;
    assert_int_equal(dk_reserve_list(NULL, 0, &n), kIOReturnSuccess);
    assert_int_equal(n, 0);
  }
  /* and, the other process stopped, every page the four raised was given back */
  end_churn();
  assert_clean();
}

/* ---- injected failures ---------------------------------------------------------------------- */
typedef IOReturn (*op_fn)(void);
static uint64_t g_high;
static char g_reason[320];      /* the failure of an operation that calls the API again after it */

static IOReturn op_create_release(void)
{
  IOReturn rc = dk_reserve_create(g_wide, 2 * P2, NULL, NULL, NULL);
  if (rc == kIOReturnSuccess) rc = dk_reserve_release(g_wide);
  snprintf(g_reason, sizeof g_reason, "%s", rc ? dk_last_failure()->text : "");
  return rc;
}

/* The buffer op_claim made, released after the faults are disarmed: a pool free that fails to
 * get a free-list node loses the range until the process exits (pool.c, give()), which for a
 * claimed chunk keeps its claim until then; that is the pool's, not the claim's, to test. */
static IOBufferMemoryDescriptor *g_claimed;

static IOReturn op_claim(void)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.high = g_high;
  c.contiguous = true;
  g_claimed = IOBufferMemoryDescriptor_inTaskWithConstraints(kernel_task, kIODirectionInOut, P2, &c);
  IOReturn rc = g_claimed ? kIOReturnSuccess : dk_last_failure()->code;
  snprintf(g_reason, sizeof g_reason, "%s", g_claimed ? "" : dk_last_failure()->text);
  return rc;
}

static bool documented(IOReturn rc)
{
  return rc == kIOReturnSuccess || rc == kIOReturnNoMemory || rc == kIOReturnNoResources || rc == kIOReturnBusy ||
         rc == kIOReturnCannotWire || rc == kIOReturnNotFound;
}

static void sweep(const char *what, op_fn op, bool keep_reservation)
{
  dk_pool_trim();
  dk_prim_counters base = dk__prim_counters();
  long pins = dk__pins_live();
  unsigned long points = 0;
  for (int forever = 0; forever < 2; forever++) {
    for (unsigned long nth = 1; nth < 2000; nth++) {
      dk__fault_arm(nth, forever, 0, 0);
      IOReturn rc = op();
      int fired = dk__fault_fired();
      dk__fault_disarm();
      if (!documented(rc)) fail_msg("%s, fault at call %lu: undocumented %s: %s", what, nth, dk_ioreturn_name(rc),
                                    g_reason);
      if (rc != kIOReturnSuccess && !fired) fail_msg("%s failed with no fault injected: %s", what, g_reason);
      if (rc != kIOReturnSuccess && !g_reason[0]) fail_msg("%s, fault at call %lu: %s without a reason", what, nth,
                                                            dk_ioreturn_name(rc));
      /* whatever was left is put right by the next unfaulted call */
      if (g_claimed) OSObject_release(g_claimed);
      g_claimed = NULL;
      dk_pool_trim();
      if (!keep_reservation) {
        IOReturn r = dk_reserve_release(0);
        if (r != kIOReturnSuccess && r != kIOReturnNotFound)
          fail_msg("%s, fault at call %lu: release after it: %s", what, nth, dk_last_failure()->text);
        if (nr_now() != g_nr_before)
          fail_msg("%s, fault at call %lu (%s): persistent hugepages %ld after release, were %ld", what, nth,
                   forever ? "forever" : "once", nr_now(), g_nr_before);
      } else {
        dk_reserve_info ri;
        size_t n;
        assert_int_equal(dk_reserve_list(&ri, 1, &n), kIOReturnSuccess);
        if (n != 1 || ri.pages_claimed != 0)
          fail_msg("%s, fault at call %lu (%s): %zu reservations, %u pages still claimed", what, nth,
                   forever ? "forever" : "once", n, ri.pages_claimed);
      }
      assert_int_equal(dk__reserve_owed(), 0);
      dk_prim_counters now = dk__prim_counters();
      if (now.fds != base.fds || now.map_bytes != base.map_bytes || now.heap_blocks != base.heap_blocks ||
          dk__pins_live() != pins)
        fail_msg("%s, fault at call %lu (%s): leak: fds %ld->%ld map %ld->%ld heap %ld->%ld pins %ld->%ld", what, nth,
                 forever ? "forever" : "once", base.fds, now.fds, base.map_bytes, now.map_bytes, base.heap_blocks,
                 now.heap_blocks, pins, dk__pins_live());
      points++;
      if (!fired) break;
    }
  }
  print_message("%s: %lu fault points\n", what, points);
  assert_true(points > 4);
}

static void reserve_faults(void **s)
{
  (void)s;
  require();
  assert_clean();
  assert_int_equal(op_create_release(), kIOReturnSuccess);      /* warm: mount, caps, lock file */
  sweep("create + release", op_create_release, false);
  assert_clean();
  assert_int_equal(dk_reserve_create(g_wide, 2 * P2, NULL, NULL, NULL), kIOReturnSuccess);
  frames fr = reserved();
  size_t usable;
  g_high = limit_of(&fr, &usable);
  assert_true(usable >= 1);
  long grow = dk_option_get(DK_OPTION_POOL_MAX_MB);
  dk_option_set(DK_OPTION_POOL_MAX_MB, 0);         /* a claim or nothing: no pool growth */
  assert_int_equal(op_claim(), kIOReturnSuccess);
  OSSafeReleaseNULL(g_claimed);
  dk_pool_trim();
  sweep("claim from a reservation", op_claim, true);
  dk_option_set(DK_OPTION_POOL_MAX_MB, grow);
  assert_int_equal(dk_reserve_release(0), kIOReturnSuccess);
  assert_clean();
}

int main(int argc, char **argv)
{
  if (argc > 1) cmocka_set_test_filter(argv[1]);   /* one test by name */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(reserve_bad_arguments, test_teardown),
    cmocka_unit_test_teardown(reserve_bounds_refused, test_teardown),
    cmocka_unit_test_teardown(reserve_persists_and_serves, test_teardown),
    cmocka_unit_test_teardown(reserve_concurrent_claims, test_teardown),
    cmocka_unit_test_teardown(reserve_killed_claim_returns_zeroed, test_teardown),
    cmocka_unit_test_teardown(reserve_grows, test_teardown),
    cmocka_unit_test_teardown(reserve_killed_search_recovered, test_teardown),
    cmocka_unit_test_teardown(reserve_low_mask_search, test_teardown),
    cmocka_unit_test_teardown(reserve_under_churn, test_teardown),
    cmocka_unit_test_teardown(reserve_faults, test_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
