/* tests/test_reserve_table.c: the reservation table's reader and the calls that only read it
 * (src/phys/reserve.c: dk_reserve_list, dk_reserve_pages, dk_reserve_estimate, and
 * dk_reserve_release's refusals), against tables this test writes into a directory of its own
 * (DMAKIT_RESERVE_DIR), so no hugepage is found, held or given back and the machine's own
 * reservations are not touched. A well-formed table is listed narrowest mask first with its
 * frames' range, its pages by mask then frame, truncated to the capacity with the full count;
 * every malformed table (an unknown line, a page before any reservation, fewer or more pages than
 * announced, an absurd page count, more than DK_RESERVE_MAX reservations, a table that is a
 * directory) is refused with kIOReturnNoResources and a reason, nothing leaked. */
#include "dk_test.h"
#include "phys/reserve.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <dmakit/reserve.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define P2 (2ull << 20)

static char g_dir[64], g_table[128];

static void write_table(const char *text)
{
  if (unlink(g_table) != 0) assert_true(errno == ENOENT);
  FILE *f = fopen(g_table, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/dk-reserve-table-XXXXXX");
  if (!mkdtemp(g_dir)) return -1;
  setenv("DMAKIT_RESERVE_DIR", g_dir, 1);
  char sub[96];
  snprintf(sub, sizeof sub, "%s/reserve", g_dir);
  if (mkdir(sub, 0700) != 0) return -1;
  snprintf(g_table, sizeof g_table, "%s/table", sub);
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  unsetenv("DMAKIT_RESERVE_DIR");
  return system(cmd) == 0 ? 0 : -1;
}

/* Three reservations written widest first; frames out of order within each. */
static const char *k_good =
    "dmakit-reservations 1\n"
    "R ffffffff 1700000300 3 3\n"
    "P 0 0 1c0000000\n"
    "P 1 200000 80000000\n"
    "P 2 400000 a0000000\n"
    "R 3fffffff 1700000100 1 2\n"
    "P 0 0 20000000\n"
    "P 0 200000 1000000\n"
    "R 7fffffff 1700000200 1 0\n";

static void lists_a_well_formed_table(void **state)
{
  (void)state;
  write_table(k_good);
  dk_prim_counters before = dk__prim_counters();
  dk_reserve_info info[4];
  size_t count = 0;
  assert_int_equal(dk_reserve_list(info, 4, &count), kIOReturnSuccess);
  assert_int_equal(count, 3);
  assert_int_equal(info[0].mask, 0x3fffffffull);
  assert_int_equal(info[0].pages, 2);
  assert_int_equal(info[0].page_size, P2);
  assert_int_equal(info[0].lowest, 0x1000000ull);
  assert_int_equal(info[0].highest, 0x20000000ull);
  assert_int_equal(info[0].created, 1700000100);
  assert_int_equal(info[0].pages_claimed, 0);      /* no claims file: nobody holds any */
  assert_int_equal(info[1].mask, 0x7fffffffull);
  assert_int_equal(info[1].pages, 0);
  assert_int_equal(info[1].lowest, 0);
  assert_int_equal(info[2].mask, 0xffffffffull);
  assert_int_equal(info[2].lowest, 0x80000000ull);
  assert_int_equal(info[2].highest, 0x1c0000000ull);
  /* less room than reservations: the count is still all of them */
  memset(info, 0xa5, sizeof info);
  assert_int_equal(dk_reserve_list(info, 1, &count), kIOReturnSuccess);
  assert_int_equal(count, 3);
  assert_int_equal(info[0].mask, 0x3fffffffull);
  assert_int_equal(info[1].mask, 0xa5a5a5a5a5a5a5a5ull);   /* nothing written past the capacity */
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 3);

  dk_reserve_page pages[8];
  assert_int_equal(dk_reserve_pages(pages, 8, &count), kIOReturnSuccess);
  assert_int_equal(count, 5);
  const uint64_t want_mask[5] = { 0x3fffffff, 0x3fffffff, 0xffffffff, 0xffffffff, 0xffffffff };
  const uint64_t want_frame[5] = { 0x1000000, 0x20000000, 0x80000000, 0xa0000000, 0x1c0000000 };
  for (int i = 0; i < 5; i++) {
    assert_int_equal(pages[i].mask, want_mask[i]);
    assert_int_equal(pages[i].frame, want_frame[i]);
    assert_false(pages[i].claimed);
  }
  assert_int_equal(dk_reserve_pages(pages, 2, &count), kIOReturnSuccess);
  assert_int_equal(count, 5);
  assert_int_equal(pages[1].frame, 0x20000000ull);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

/* The estimate counts what the reservation already holds. */
static void estimate_counts_what_is_held(void **state)
{
  (void)state;
  write_table(k_good);
  dk_reserve_cost c;
  IOReturn rc = dk_reserve_estimate(0x3fffffff, 2 * P2, NULL, &c);
  if (rc != kIOReturnSuccess) fail_msg("estimate: %s", dkt_failure_text());
  assert_int_equal(c.have, 2 * P2);
  assert_int_equal(c.need, 0);
  assert_true(c.fits);
  assert_int_equal(dk_reserve_estimate(0x7fffffff, 3 * P2, NULL, &c), kIOReturnSuccess);
  assert_int_equal(c.have, 0);
  assert_int_equal(c.need, 3 * P2);
}

static void assert_refused(IOReturn rc, const char *what, const char *needle)
{
  if (rc != kIOReturnNoResources) fail_msg("%s: %s, expected kIOReturnNoResources", what, dkt_failure_text());
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
  if (!dkt_text_has(dk_last_failure()->text, needle)) fail_msg("%s: the reason lacks \"%s\": %s", what, needle, dkt_failure_text());
}

static void refuses_malformed_tables(void **state)
{
  (void)state;
  static const struct { const char *what, *text; } bad[] = {
    { "an unknown line", "dmakit-reservations 1\nX 1 2 3\n" },
    { "another format", "dmakit-reservations 2\n" },
    { "a page before any reservation", "dmakit-reservations 1\nP 0 0 1000000\n" },
    { "fewer pages than announced", "dmakit-reservations 1\nR 3fffffff 1 1 2\nP 0 0 1000000\n" },
    { "fewer pages, then the next reservation",
      "dmakit-reservations 1\nR 3fffffff 1 1 2\nP 0 0 1000000\nR 7fffffff 1 1 0\n" },
    { "more pages than announced", "dmakit-reservations 1\nR 3fffffff 1 1 1\nP 0 0 1000000\nP 0 200000 1200000\n" },
    { "an absurd page count", "dmakit-reservations 1\nR 3fffffff 1 1 99999999\n" },
  };
  dk_prim_counters before = dk__prim_counters();
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_table(bad[i].text);
    dk_reserve_info info[2];
    size_t count = 0;
    assert_refused(dk_reserve_list(info, 2, &count), bad[i].what, "is not a dmakit reservation table");
    dk_reserve_page pages[2];
    assert_refused(dk_reserve_pages(pages, 2, &count), bad[i].what, "is not a dmakit reservation table");
    dk_reserve_cost c;
    assert_refused(dk_reserve_estimate(0x3fffffff, P2, NULL, &c), bad[i].what, "is not a dmakit reservation table");
  }
  /* one reservation more than a machine may have */
  char text[1024];
  int n = snprintf(text, sizeof text, "dmakit-reservations 1\n");
  for (int i = 0; i <= DK_RESERVE_MAX; i++)
    n += snprintf(text + n, sizeof text - (size_t)n, "R %llx 1 0 0\n", (unsigned long long)((1ull << (22 + i)) - 1));
  write_table(text);
  size_t count;
  assert_refused(dk_reserve_list(NULL, 0, &count), "too many reservations", "is not a dmakit reservation table");
  /* a table that cannot be read */
  assert_int_equal(unlink(g_table), 0);
  assert_int_equal(mkdir(g_table, 0700), 0);
  assert_refused(dk_reserve_list(NULL, 0, &count), "a directory", "cannot read");
  assert_int_equal(rmdir(g_table), 0);
  /* no table: no reservations */
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 0);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

static void bad_arguments(void **state)
{
  (void)state;
  dk_reserve_info info[1];
  size_t count;
  assert_int_equal(dk_reserve_list(info, 1, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  assert_int_equal(dk_reserve_list(NULL, 1, &count), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_pages(NULL, 3, &count), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_estimate(0x3fffffff, P2, NULL, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_release(0x12345), kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "is not 2^n - 1"));
}

/* Releasing what is not there: refused, the table as it was. */
static void release_of_nothing_is_not_found(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("releasing a reservation needs root");
  write_table(k_good);
  assert_int_equal(dk_reserve_release(0xfffffffff), kIOReturnNotFound);
  assert_true(dkt_text_has(dk_last_failure()->text, "there is no reservation below mask 0xfffffffff"));
  size_t count;
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 3);
  assert_int_equal(unlink(g_table), 0);
  assert_int_equal(dk_reserve_release(0), kIOReturnNotFound);
  assert_true(dkt_text_has(dk_last_failure()->text, "there are no reservations"));
  write_table("dmakit-reservations 1\nbroken\n");
  assert_refused(dk_reserve_release(0x3fffffff), "release of a broken table", "is not a dmakit reservation table");
  assert_int_equal(unlink(g_table), 0);
}

/* A reservation's claims file with byte k locked (an open file description of this test, as a
 * claiming process holds it): page k is claimed by a live process. */
static int hold_claim(uint64_t mask, off_t k)
{
  char path[160];
  snprintf(path, sizeof path, "%s/reserve/mask-0x%llx.claims", g_dir, (unsigned long long)mask);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = k, .l_len = 1 };
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &l), 0);
  return fd;
}

/* Pages a live process holds are counted as claimed, listed as such, and keep the reservation
 * from being released (kIOReturnBusy), the table as it was. */
static void claimed_pages_block_release(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("releasing a reservation needs root");
  write_table(k_good);
  int fd = hold_claim(0xffffffff, 1);
  dk_reserve_info info[3];
  size_t count;
  assert_int_equal(dk_reserve_list(info, 3, &count), kIOReturnSuccess);
  assert_int_equal(info[2].mask, 0xffffffffull);
  assert_int_equal(info[2].pages_claimed, 1);
  assert_int_equal(info[0].pages_claimed, 0);
  dk_reserve_page pages[5];
  assert_int_equal(dk_reserve_pages(pages, 5, &count), kIOReturnSuccess);
  int claimed = 0;
  for (int i = 0; i < 5; i++) claimed += pages[i].claimed;
  assert_int_equal(claimed, 1);
  assert_true(pages[2].claimed);            /* page 1 of 0xffffffff: frame 0x80000000, the lowest */
  assert_int_equal(dk_reserve_release(0xffffffff), kIOReturnBusy);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_RESOURCE);
  assert_true(dkt_text_has(dk_last_failure()->text, "1 of the 3 pages reserved below mask 0xffffffff are held"));
  assert_int_equal(dk_reserve_release(0), kIOReturnBusy);
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 3);
  close(fd);
  char path[160];
  snprintf(path, sizeof path, "%s/reserve/mask-0xffffffff.claims", g_dir);
  unlink(path);
  assert_int_equal(unlink(g_table), 0);
}

/* Releasing reservations that hold no page (so nr_hugepages is not touched): the table is
 * rewritten without them, and removed with the last one. A journal of a search that died before
 * it committed (its generation in no page of the table) is cleaned up on the way. */
static void release_rewrites_the_table(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("releasing a reservation needs root");
  write_table("dmakit-reservations 1\n"
              "R 3fffffff 1700000100 1 2\n"
              "P 0 0 20000000\n"
              "P 0 200000 1000000\n"
              "R 7fffffff 1700000200 3 0\n"
              "R ffffffff 1700000300 1 0\n");
  char journal[160];
  snprintf(journal, sizeof journal, "%s/reserve/search", g_dir);
  FILE *j = fopen(journal, "w");
  assert_non_null(j);
  fprintf(j, "999999999 0 3fffffff 7\n");     /* raised nothing: nothing to give back */
  fclose(j);
  dk_prim_counters before = dk__prim_counters();
  long owed = dk__reserve_owed();
  assert_int_equal(dk_reserve_release(0x7fffffff), kIOReturnSuccess);
  assert_int_equal(access(journal, F_OK), -1);   /* the dead search's journal is gone */
  dk_reserve_info info[3];
  size_t count;
  assert_int_equal(dk_reserve_list(info, 3, &count), kIOReturnSuccess);
  assert_int_equal(count, 2);
  assert_int_equal(info[0].mask, 0x3fffffffull);
  assert_int_equal(info[0].pages, 2);             /* kept as it was */
  assert_int_equal(info[0].lowest, 0x1000000ull);
  assert_int_equal(info[1].mask, 0xffffffffull);
  /* a committed search's journal (its generation in the table) leaves the pages alone */
  j = fopen(journal, "w");
  assert_non_null(j);
  fprintf(j, "999999999 0 3fffffff 0\n");
  fclose(j);
  assert_int_equal(dk_reserve_release(0xffffffff), kIOReturnSuccess);
  assert_int_equal(access(journal, F_OK), -1);
  assert_int_equal(dk_reserve_list(info, 3, &count), kIOReturnSuccess);
  assert_int_equal(count, 1);
  assert_int_equal(info[0].pages, 2);
  /* the last ones: the table goes */
  write_table("dmakit-reservations 1\nR 7fffffff 1 1 0\n");
  assert_int_equal(dk_reserve_release(0), kIOReturnSuccess);
  assert_int_equal(access(g_table, F_OK), -1);
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 0);
  assert_int_equal(dk__reserve_owed(), owed);     /* no nr_hugepages owed */
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(lists_a_well_formed_table),
    cmocka_unit_test(estimate_counts_what_is_held),
    cmocka_unit_test(refuses_malformed_tables),
    cmocka_unit_test(bad_arguments),
    cmocka_unit_test(release_of_nothing_is_not_found),
    cmocka_unit_test(claimed_pages_block_release),
    cmocka_unit_test(release_rewrites_the_table),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
