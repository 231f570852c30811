/* tests/test_phys_edges.c: the page providers' own edges, called directly (src/phys/backing.c,
 * src/phys/huge.c): an aligned 4K backing and its mappings failing one by one, a failed backing
 * destroyed, a wired backing wired again and refusing a discard, a mapping populated at once;
 * the address-space reservation overflowing; the hugepage sizes listed within the caller's room;
 * the hugepage limits refused at dmakit's cap and where the kernel finds no 1 GiB page or refuses
 * the write (nothing written: the write is failed through src/prim); the records of 1 GiB pages
 * of dead processes, kept for the living and for this process. Each refusal names its reason and
 * leaves no descriptor, mapping or heap block behind. */
#include "dk_test.h"
#include "phys/huge.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ull << 20)

static void assert_same(dk_prim_counters before, const char *what)
{
  dk_prim_counters after = dk__prim_counters();
  if (after.fds != before.fds || after.map_bytes != before.map_bytes || after.heap_blocks != before.heap_blocks ||
      after.lock_bytes != before.lock_bytes)
    fail_msg("%s: leak: fds %ld->%ld map %ld->%ld heap %ld->%ld lock %ld->%ld", what, before.fds, after.fds,
             before.map_bytes, after.map_bytes, before.heap_blocks, after.heap_blocks, before.lock_bytes,
             after.lock_bytes);
}

/* ---- backing.c ------------------------------------------------------------------------------ */

/* A backing aligned past the page: its view starts on the alignment; when either of its two
 * mappings (the aligned reservation, the memfd placed over it) fails, the create is refused with
 * the reason and nothing is left, and destroying the failed backing is harmless. */
static void aligned_backing_and_its_failures(void **state)
{
  (void)state;
  const size_t size = 3 * 4096, align = 64 * 1024;
  dk_prim_counters before = dk__prim_counters();
  dk_backing b;
  assert_true(dk__backing_create(&b, size, align));
  assert_int_equal((uintptr_t)b.base % align, 0);
  memset(b.base, 0x5a, size);
  dk__backing_destroy(&b);
  assert_same(before, "an aligned backing");
  for (unsigned long nth = 1; nth <= 2; nth++) {
    dk_clear_failure();
    dk__fault_arm(nth, 0, DK_PRIM_BIT(DK_PRIM_MMAP), ENOMEM);
    bool ok = dk__backing_create(&b, size, align);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    assert_true(fired);
    assert_false(ok);
    assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
    assert_true(dkt_text_has(dk_last_failure()->text, "mapping 12288 bytes failed"));
    assert_int_equal(b.fd, -1);
    dk__backing_destroy(&b);             /* a failed backing: nothing to give back */
    assert_same(before, nth == 1 ? "the aligned reservation failing" : "the memfd's fixed mapping failing");
  }
}

/* The address-space reservation of a length that overflows with its alignment: ENOMEM, nothing
 * mapped. */
static void reservation_overflow(void **state)
{
  (void)state;
  dk_prim_counters before = dk__prim_counters();
  errno = 0;
  assert_null(dk__reserve_aligned(SIZE_MAX - 4096, 2 * MIB, 0));
  assert_int_equal(errno, ENOMEM);
  assert_same(before, "an overflowing reservation");
}

/* Wired once, wiring again changes nothing; a wired backing refuses to give its pages back
 * (EBUSY), an unwired one gives them (its contents read back zero); a second mapping made with
 * MAP_POPULATE shows what the view holds. */
static void wired_backing_refuses_a_discard(void **state)
{
  (void)state;
  const size_t size = 16 * 4096;
  dk_backing b;
  assert_true(dk__backing_create(&b, size, 0));    /* warm up: the pin ring is made on first use */
  if (!dk__backing_wire(&b)) fail_msg("wire: %s", dkt_failure_text());
  dk__backing_destroy(&b);
  dk_prim_counters before = dk__prim_counters();
  assert_true(dk__backing_create(&b, size, 0));
  if (!dk__backing_wire(&b)) fail_msg("wire: %s", dkt_failure_text());
  memset(b.base, 0xa5, size);
  dk_pin pin = b.pin;
  assert_true(dk__backing_wire(&b));     /* already wired: the same pin, nothing taken again */
  assert_int_equal(b.pin.ring, pin.ring);
  assert_int_equal(b.pin.slot, pin.slot);
  errno = 0;
  assert_int_equal(dk__backing_discard(&b), -1);
  assert_int_equal(errno, EBUSY);
  assert_int_equal(b.base[size - 1], 0xa5);
  uint8_t *view = dk__backing_map(&b, 0, size, PROT_READ, 0, NULL, false, true);
  assert_non_null(view);
  assert_int_equal(view[0], 0xa5);
  assert_int_equal(view[size - 1], 0xa5);
  assert_int_equal(dk__backing_unmap(view, size, 0), 0);
  dk__backing_unwire(&b);
  assert_int_equal(dk__backing_discard(&b), 0);
  for (size_t i = 0; i < size; i += 4096) assert_int_equal(b.base[i], 0);
  dk__backing_destroy(&b);
  assert_same(before, "a wired backing");
}

/* ---- huge.c --------------------------------------------------------------------------------- */

/* The sizes the kernel offers, never more than the caller has room for. */
static void huge_sizes_within_room(void **state)
{
  (void)state;
  uint64_t all[4] = { 0 }, one[2] = { 0, 0 };
  int n = dk__huge_sizes(all, 4);
  if (n < 2) DKT_SKIP("the kernel offers fewer than two hugepage sizes");
  assert_int_equal(dk__huge_sizes(one, 1), 1);
  assert_int_equal(one[0], all[0]);
  assert_int_equal(one[1], 0);
  assert_int_equal(dk__huge_sizes(one, 0), 0);
}

/* More pages than the cap allows: refused before anything is written; a 1 GiB raise the kernel
 * cannot serve (its write fails ENOMEM: it found nothing) or refuses (EACCES): refused with the
 * reason, nothing recorded as raised. The writes are failed in src/prim, so the kernel's counts
 * are never changed. */
static void make_room_refusals(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("raising hugepage limits needs root");
  dk_huge_counts k2;
  if (dk__huge_counts(2 * MIB, &k2) < 0) DKT_SKIP("the kernel has no 2 MiB hugepages");
  long raised = -1, before2 = dk__huge_raised(2 * MIB);
  dk_clear_failure();
  assert_false(dk__huge_make_room(2 * MIB, LONG_MAX / 4, 0, &raised));
  assert_int_equal(raised, 0);
  assert_int_equal(dk_last_failure()->code, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "would pass dmakit's cap of 0"));
  assert_int_equal(dk__huge_raised(2 * MIB), before2);

  dk_huge_counts k1;
  if (dk__huge_counts(1ull << 30, &k1) < 0) DKT_SKIP("the kernel has no 1 GiB hugepages");
  long before1 = dk__huge_raised(1ull << 30);
  long n = k1.free - k1.resv + 1;               /* one more than there is */
  static const struct { int err; const char *text; } refusals[] = {
    { ENOMEM, "the kernel found 0 of 1 more 1 GiB pages" },
    { EACCES, "raising /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages failed" },
  };
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
    dk_prim_counters before = dk__prim_counters();
    dk_clear_failure();
    dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_WRITE), refusals[i].err);
    bool ok = dk__huge_make_room(1ull << 30, n, LONG_MAX / 4, &raised);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    assert_true(fired);
    assert_false(ok);
    assert_int_equal(raised, 0);
    if (!dkt_text_has(dk_last_failure()->text, refusals[i].text))
      fail_msg("errno %d: the reason lacks \"%s\": %s", refusals[i].err, refusals[i].text, dkt_failure_text());
    assert_int_equal(dk__huge_raised(1ull << 30), before1);
    assert_same(before, "a refused 1 GiB raise");
  }
}

static void put_record(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Records of 1 GiB pages left by processes: a dead process's record goes (here one of no pages,
 * so nr_hugepages is not written); a living process's, this process's own and a file that is no
 * record stay. */
static void dead_records_are_reclaimed(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("reclaiming records of dead processes needs root");
  mkdir("/run/dmakit", 0700);
  pid_t dead = fork();
  assert_true(dead >= 0);
  if (dead == 0) _exit(0);
  assert_int_equal(waitpid(dead, NULL, 0), dead);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t alive = fork();
  assert_true(alive >= 0);
  if (alive == 0) {
    char c;
    close(fds[1]);
    (void)!read(fds[0], &c, 1);           /* until the test closes its end */
    _exit(0);
  }
  close(fds[0]);
  char p_dead[64], p_alive[64], p_self[64], p_other[64];
  snprintf(p_dead, sizeof p_dead, "/run/dmakit/gigantic.%d", (int)dead);
  snprintf(p_alive, sizeof p_alive, "/run/dmakit/gigantic.%d", (int)alive);
  snprintf(p_self, sizeof p_self, "/run/dmakit/gigantic.%d", (int)getpid());
  snprintf(p_other, sizeof p_other, "/run/dmakit/gigantic.test-%d", (int)getpid());
  put_record(p_dead, "0\n");
  put_record(p_alive, "0\n");
  put_record(p_self, "0\n");
  put_record(p_other, "0\n");
  dk_prim_counters before = dk__prim_counters();
  dk__huge_reclaim_dead();
  assert_same(before, "reclaiming records");
  bool dead_gone = access(p_dead, F_OK) != 0, alive_kept = access(p_alive, F_OK) == 0,
       self_kept = access(p_self, F_OK) == 0, other_kept = access(p_other, F_OK) == 0;
  close(fds[1]);
  waitpid(alive, NULL, 0);
  unlink(p_dead);
  unlink(p_alive);
  unlink(p_self);
  unlink(p_other);
  assert_true(dead_gone);
  assert_true(alive_kept);
  assert_true(self_kept);
  assert_true(other_kept);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(aligned_backing_and_its_failures),
    cmocka_unit_test(reservation_overflow),
    cmocka_unit_test(wired_backing_refuses_a_discard),
    cmocka_unit_test(huge_sizes_within_room),
    cmocka_unit_test(make_room_refusals),
    cmocka_unit_test(dead_records_are_reclaimed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
