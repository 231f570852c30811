/* tests/test_reserve_table.c: the reservation table's reader and the calls that only read it
 * (src/phys/reserve.c: dk_reserve_list, dk_reserve_pages, dk_reserve_estimate, and
 * dk_reserve_release's refusals), against tables this test writes into a directory of its own
 * (DMAKIT_RESERVE_DIR), so no hugepage is found, held or given back and the machine's own
 * reservations are not touched. A well-formed table is listed narrowest mask first with its
 * frames' range, its pages by mask then frame, truncated to the capacity with the full count;
 * every malformed table (an unknown line, a page before any reservation, fewer or more pages than
 * announced, an absurd page count, more than DK_RESERVE_MAX reservations, a table that is a
 * directory) is refused with kIOReturnNoResources and a reason, nothing leaked. Also: the
 * estimate against zone tables of the test's own (/proc text served through src/prim's open), a
 * release that cannot rewrite the table (failures injected through src/prim), the admin lock
 * held or failing, and claims (src/phys/claim.c) against written tables, with one real 2 MiB
 * page on the test's own hugetlbfs mount for a page found elsewhere than the table records. */
#include "dk_test.h"
#include "phys/reserve.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <dmakit/reserve.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
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

/* ---- the estimate against a zone table of the test's own (src/prim's open swapped) ------------- */
static const char *g_zoneinfo, *g_meminfo;   /* NULL: the real file; "": open fails with ENOENT */

static int fake_open(const char *path, int flags, mode_t mode)
{
  const char *text = !strcmp(path, "/proc/zoneinfo") ? g_zoneinfo : !strcmp(path, "/proc/meminfo") ? g_meminfo : NULL;
  if (!text) return dk__prim_default.open(path, flags, mode);
  if (!text[0]) {
    errno = ENOENT;
    return -1;
  }
  return dkt_text_fd(text);
}

static void fake_machine(const char *zoneinfo, const char *meminfo)
{
  g_zoneinfo = zoneinfo;
  g_meminfo = meminfo;
  dk__prim.open = zoneinfo || meminfo ? fake_open : dk__prim_default.open;
}

#define GIB (1ull << 30)
/* One node: DMA (0-16 MiB) gives 2 MiB above its low watermark and its protection against
 * Normal allocations; DMA32 (1-3 GiB, cut in half by a 2 GiB mask) 2 GiB; Normal (4-6 GiB) 1 GiB;
 * Movable (6-7 GiB) nothing, hugepages are not taken from it; Device empty. The last line has no
 * newline. */
static const char *k_zones =
    "Node 0, zone      DMA\n"
    "  pages free     1124\n"
    "        low      100\n"
    "        spanned  4096\n"
    "        protection: (0, 0, 512, 512, 512)\n"
    "  start_pfn:           0\n"
    "Node 0, zone    DMA32\n"
    "  pages free     527336\n"
    "        low      1000\n"
    "        spanned  524288\n"
    "        protection: (0, 0, 2048, 2048, 2048)\n"
    "  start_pfn:           262144\n"
    "Node 0, zone   Normal\n"
    "  pages free     262644\n"
    "        low      500\n"
    "        spanned  524288\n"
    "        protection: (0, 0, 0, 0, 0)\n"
    "  start_pfn:           1048576\n"
    "Node 0, zone  Movable\n"
    "  pages free     262144\n"
    "        low      0\n"
    "        spanned  262144\n"
    "        protection: (0, 0, 0, 0, 0)\n"
    "  start_pfn:           1572864\n"
    "Node 0, zone   Device\n"
    "  pages free     0\n"
    "        spanned  0";
static const char *k_mem16 = "MemTotal:       16777216 kB\nMemFree:        8388608 kB\nMemAvailable:    8388608 kB\n";

/* The estimate's figures come from the zones: what lies below the mask, what a zone the mask cuts
 * holds on each side (in proportion), what lies above it, less each zone's low watermark and the
 * protection a lower zone keeps from hugepage allocations. */
static void estimate_reads_the_zones(void **state)
{
  (void)state;
  if (dk__caps()->page_size != 4096) DKT_SKIP("the zone table is written for 4 KiB pages");
  if (unlink(g_table) != 0) assert_true(errno == ENOENT);
  dk_prim_counters before = dk__prim_counters();
  fake_machine(k_zones, k_mem16);
  dk_reserve_cost c;
  IOReturn rc = dk_reserve_estimate(0x7fffffff, GIB, NULL, &c);
  dk_reserve_cost big;
  IOReturn rc_big = dk_reserve_estimate(0x7fffffff, 2 * GIB, NULL, &big);
  fake_machine(k_zones, "MemTotal:       16777216 kB\n");
  dk_reserve_cost blind;
  IOReturn rc_blind = dk_reserve_estimate(0x7fffffff, GIB, NULL, &blind);
  fake_machine(NULL, NULL);
  if (rc != kIOReturnSuccess) fail_msg("estimate: %s", dkt_failure_text());
  assert_int_equal(c.need, GIB);
  assert_int_equal(c.free_below, GIB + P2);         /* DMA's 2 MiB and DMA32's lower half */
  assert_int_equal(c.free_cut, GIB);                /* DMA32's upper half */
  assert_int_equal(c.free_above, GIB);              /* Normal */
  assert_int_equal(c.hold, 2 * GIB);                /* what lies above, then what is needed */
  assert_int_equal(c.hold_max, 3 * GIB);
  assert_int_equal(c.available, 8 * GIB);
  assert_int_equal(c.keep_free, GIB);               /* a sixteenth of MemTotal */
  assert_int_equal(c.max_hold, 7 * GIB);
  assert_true(c.fits);
  /* more than lies below the mask: not worth a search */
  assert_int_equal(rc_big, kIOReturnSuccess);
  assert_false(big.fits);
  if (!dkt_text_has(big.text, "too little free below the mask (1026 MiB of 2048 MiB)")) fail_msg("%s", big.text);
  /* MemAvailable missing: nothing is counted available, so nothing fits */
  assert_int_equal(rc_blind, kIOReturnSuccess);
  assert_int_equal(blind.available, 0);
  assert_false(blind.fits);
  assert_true(dkt_text_has(blind.text, "that would leave less than"));
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

/* Two nodes of a kernel without ZONE_DMA (each node's zones start at DMA32): node 1's zones are
 * numbered from 0 again, so Normal is the zone hugepages come from and DMA32 keeps its protection
 * against it in both nodes. */
static const char *k_zones_no_dma =
    "Node 0, zone    DMA32\n"
    "  pages free     262756\n"
    "        low      100\n"
    "        spanned  524288\n"
    "        protection: (0, 512, 512, 512)\n"
    "  start_pfn:           0\n"
    "Node 0, zone   Normal\n"
    "  pages free     131172\n"
    "        low      100\n"
    "        spanned  262144\n"
    "        protection: (0, 0, 0, 0)\n"
    "  start_pfn:           524288\n"
    "Node 0, zone  Movable\n"
    "  pages free     0\n"
    "        spanned  0\n"
    "Node 1, zone    DMA32\n"
    "  pages free     0\n"
    "        spanned  0\n"
    "        protection: (0, 512, 512, 512)\n"
    "Node 1, zone   Normal\n"
    "  pages free     131172\n"
    "        low      100\n"
    "        spanned  262144\n"
    "        protection: (0, 0, 0, 0)\n"
    "  start_pfn:           1048576\n"
    "Node 1, zone  Movable\n"
    "  pages free     0\n"
    "        spanned  0\n";

static void estimate_numbers_each_nodes_zones(void **state)
{
  (void)state;
  if (dk__caps()->page_size != 4096) DKT_SKIP("the zone table is written for 4 KiB pages");
  if (unlink(g_table) != 0) assert_true(errno == ENOENT);
  fake_machine(k_zones_no_dma, k_mem16);
  dk_reserve_cost c;
  IOReturn rc = dk_reserve_estimate(0xffffffff, GIB, NULL, &c);
  fake_machine(NULL, NULL);
  if (rc != kIOReturnSuccess) fail_msg("estimate: %s", dkt_failure_text());
  assert_int_equal(c.free_below, GIB + GIB / 2);     /* node 0's DMA32 less its protection, and Normal */
  assert_int_equal(c.free_cut, 0);
  assert_int_equal(c.free_above, GIB / 2);           /* node 1's Normal */
}

/* /proc/zoneinfo unreadable: the estimate is refused with the reason, nothing leaked. */
static void estimate_without_zones_is_refused(void **state)
{
  (void)state;
  if (unlink(g_table) != 0) assert_true(errno == ENOENT);
  dk_prim_counters before = dk__prim_counters();
  fake_machine("", k_mem16);
  dk_reserve_cost c;
  IOReturn rc = dk_reserve_estimate(0x7fffffff, GIB, NULL, &c);
  fake_machine(NULL, NULL);
  assert_refused(rc, "no zone table", "/proc/zoneinfo cannot be read");
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
  dk_reserve_cost c;
  assert_int_equal(dk_reserve_estimate(0x3fffffff, 0, NULL, &c), kIOReturnBadArgument);
  assert_int_equal(dk_reserve_estimate(0x3fffffff, (1ull << 46) + 1, NULL, &c), kIOReturnBadArgument);
  assert_true(dkt_text_has(dk_last_failure()->text, "is 0 or too large"));
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

/* A table without its last newline, or with no reservation at all, is read as it is; a table
 * removed between its size and its text is no table; out without capacity gets nothing. */
static void reads_tables_at_their_edges(void **state)
{
  (void)state;
  dk_prim_counters before = dk__prim_counters();
  size_t count = 9;
  write_table("dmakit-reservations 1\n");
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 0);
  write_table("dmakit-reservations 1\nR 3fffffff 1700000100 1 1\nP 0 0 1000000");
  dk_reserve_info info[1];
  assert_int_equal(dk_reserve_list(info, 1, &count), kIOReturnSuccess);
  assert_int_equal(count, 1);
  assert_int_equal(info[0].pages, 1);
  assert_int_equal(info[0].lowest, 0x1000000ull);
  dk_reserve_page page = { 0x5a, 0x5a, true };
  assert_int_equal(dk_reserve_pages(&page, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 1);
  assert_int_equal(page.mask, 0x5a);                 /* nothing written without capacity */
  /* the table's first open finds it gone (a release between the size and the read) */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_OPEN), ENOENT);
  IOReturn rc = dk_reserve_list(NULL, 0, &count);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  assert_true(fired);
  assert_int_equal(rc, kIOReturnSuccess);
  assert_int_equal(count, 0);
  assert_int_equal(unlink(g_table), 0);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

static void write_journal(const char *text)
{
  char journal[160];
  snprintf(journal, sizeof journal, "%s/reserve/search", g_dir);
  FILE *j = fopen(journal, "w");
  assert_non_null(j);
  fputs(text, j);
  fclose(j);
}

static bool journal_exists(void)
{
  char journal[160];
  snprintf(journal, sizeof journal, "%s/reserve/search", g_dir);
  return access(journal, F_OK) == 0;
}

/* A journal that is not one (unparsable), or one whose table cannot be read: removed by the
 * next release, which then reports the table as it finds it. */
static void release_clears_a_broken_journal(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("releasing a reservation needs root");
  long owed = dk__reserve_owed();
  write_table(k_good);
  write_journal("not a journal\n");
  assert_int_equal(dk_reserve_release(0xfffffffff), kIOReturnNotFound);
  assert_false(journal_exists());
  write_table("dmakit-reservations 1\nbroken\n");
  write_journal("999999999 0 3fffffff 7\n");          /* raised nothing: nothing to give back */
  assert_refused(dk_reserve_release(0x3fffffff), "release of a broken table", "is not a dmakit reservation table");
  assert_false(journal_exists());
  assert_int_equal(dk__reserve_owed(), owed);
  assert_int_equal(unlink(g_table), 0);
}

/* Short writes: returns half of what it is given. */
static ssize_t half_write(int fd, const void *buf, size_t n) { return dk__prim_default.write(fd, buf, n / 2 ? n / 2 : n); }

/* The table's new file cannot be made. */
static int no_new_file(const char *path, int flags, mode_t mode)
{
  size_t n = strlen(path);
  if (n > 4 && !strcmp(path + n - 4, ".new")) {
    errno = EACCES;
    return -1;
  }
  return dk__prim_default.open(path, flags, mode);
}

/* The table cannot be rewritten (its new file cannot be written, is written short, cannot be
 * renamed over the old one, or the last one cannot be removed): the release is refused with the
 * reason, the table is as it was and no temporary file is left behind. */
static void release_keeps_the_table_when_it_cannot_be_rewritten(void **state)
{
  (void)state;
  if (geteuid() != 0) DKT_SKIP("releasing a reservation needs root");
  static const struct { const char *what; dk_prim_call call; int err; bool half; } faults[] = {
    { "the write fails", DK_PRIM_WRITE, ENOSPC, false },
    { "the write is short", DK_PRIM_WRITE, 0, true },
    { "the rename fails", DK_PRIM_RENAME, EIO, false },
    { "the new file cannot be made", DK_PRIM_OPEN, EACCES, false },
  };
  long owed = dk__reserve_owed();
  dk_prim_counters before = dk__prim_counters();
  char tmp[160];
  snprintf(tmp, sizeof tmp, "%s.new", g_table);
  for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
    write_table(k_good);
    IOReturn rc;
    if (faults[i].half) {
      dk__prim.write = half_write;
      rc = dk_reserve_release(0x7fffffff);
      dk__prim.write = dk__prim_default.write;
    } else {
      dk__prim.open = faults[i].call == DK_PRIM_OPEN ? no_new_file : dk__prim_default.open;
      if (faults[i].call != DK_PRIM_OPEN) dk__fault_arm(1, 0, DK_PRIM_BIT(faults[i].call), faults[i].err);
      rc = dk_reserve_release(0x7fffffff);
      dk__fault_disarm();
      dk__prim.open = dk__prim_default.open;
    }
    if (rc != kIOReturnNoResources) fail_msg("%s: %s", faults[i].what, dkt_failure_text());
    if (!dkt_text_has(dk_last_failure()->text, "rewriting the reservation table failed"))
      fail_msg("%s: %s", faults[i].what, dkt_failure_text());
    size_t count;
    assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
    assert_int_equal(count, 3);
    assert_int_equal(access(tmp, F_OK), -1);
  }
  /* the last reservation: the table cannot be removed */
  write_table("dmakit-reservations 1\nR 7fffffff 1 1 0\n");
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_UNLINK), EACCES);
  IOReturn rc = dk_reserve_release(0);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "rewriting the reservation table failed"));
  size_t count;
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, 1);
  assert_int_equal(unlink(g_table), 0);
  assert_int_equal(dk__reserve_owed(), owed);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
}

/* After a refused search: nothing leaked, the table still lists its `reservations`; then the
 * table goes. */
static void refused_and_unchanged(dk_prim_counters before, size_t reservations)
{
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
  size_t count;
  assert_int_equal(dk_reserve_list(NULL, 0, &count), kIOReturnSuccess);
  assert_int_equal(count, reservations);
  assert_int_equal(unlink(g_table), 0);
}

/* The admin lock: interrupted twice, it is taken all the same; held by another search or
 * release, a search is refused as busy; failing otherwise, it says so. */
static void the_admin_lock(void **state)
{
  (void)state;
  if (geteuid() != 0 || !dk__caps()->pagemap_frames) DKT_SKIP("a reservation search needs root");
  dk_huge_counts k;
  if (dk__huge_counts(P2, &k) < 0) DKT_SKIP("the kernel has no 2 MiB hugepages");
  write_table(k_good);
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_FCNTL_LOCK), EINTR);
  IOReturn rc = dk_reserve_release(0xfffffffff);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  assert_true(fired);
  assert_int_equal(rc, kIOReturnNotFound);            /* went on past the interruption */

  char path[160];
  snprintf(path, sizeof path, "%s/reserve/lock", g_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = DK_RSV_LOCK_ADMIN, .l_len = 1 };
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &l), 0);
  dk_prim_counters before = dk__prim_counters();
  rc = dk_reserve_create(0x3fffffff, 4 * P2, NULL, NULL, NULL);
  assert_int_equal(rc, kIOReturnBusy);
  assert_true(dkt_text_has(dk_last_failure()->text, "another reservation search or release is running"));
  assert_int_equal(dk_reserve_release(0x3fffffff), kIOReturnBusy);
  close(fd);
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_FCNTL_LOCK), ENOLCK);
  rc = dk_reserve_create(0x3fffffff, 4 * P2, NULL, NULL, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "locking the reservations failed"));
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_FCNTL_LOCK), EINTR);      /* interrupted every time */
  rc = dk_reserve_create(0x3fffffff, 4 * P2, NULL, NULL, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "locking the reservations failed"));
  refused_and_unchanged(before, 3);
}

/* statfs that finds dmakit's hugetlbfs mounted on the test's directory (so nothing is mounted). */
static int mounted_statfs(const char *path, struct statfs *st)
{
  int rc = dk__prim_default.statfs(path, st);
  if (rc == 0 && !strncmp(path, g_dir, strlen(g_dir))) st->f_type = HUGETLBFS_MAGIC;
  return rc;
}

/* A machine with DK_RESERVE_MAX reservations: a search for another mask is refused before it
 * holds anything, and the table is as it was. */
static void a_full_table_takes_no_new_mask(void **state)
{
  (void)state;
  if (geteuid() != 0 || !dk__caps()->pagemap_frames) DKT_SKIP("a reservation search needs root");
  dk_huge_counts k;
  if (dk__huge_counts(P2, &k) < 0) DKT_SKIP("the kernel has no 2 MiB hugepages");
  char text[1024];
  int n = snprintf(text, sizeof text, "dmakit-reservations 1\n");
  for (int i = 0; i < DK_RESERVE_MAX; i++)
    n += snprintf(text + n, sizeof text - (size_t)n, "R %llx 1 0 0\n", (unsigned long long)((1ull << (23 + i)) - 1));
  write_table(text);
  dk_prim_counters before = dk__prim_counters();
  dk__prim.statfs = mounted_statfs;
  IOReturn rc = dk_reserve_create(0x3fffff, P2, NULL, NULL, NULL);
  dk__prim.statfs = dk__prim_default.statfs;
  assert_int_equal(rc, kIOReturnNoResources);
  assert_true(dkt_text_has(dk_last_failure()->text, "there are already 16 reservations"));
  refused_and_unchanged(before, DK_RESERVE_MAX);
}

/* ---- claims against a written table (src/phys/claim.c) ----------------------------------------- */
static const char *k_claimable =
    "dmakit-reservations 1\n"
    "R ffffffff 1700000200 1 1\n"
    "P 0 0 2000000\n"             /* a wider reservation with a page under 1 GiB */
    "R 3fffffff 1700000100 2 4\n"
    "P 0 0 1000000\n"             /* 0 and 1: adjacent, one file */
    "P 0 200000 1200000\n"
    "P 0 400000 1600000\n"        /* 2: a gap before it */
    "P 1 0 1800000\n"             /* 3: adjacent to 2 but in another file */
    "R 7fffffff 1700000300 1 1\n"
    "P 0 0 90000000\n";           /* a wider one with none */

static int claim(uint64_t low, uint64_t high, uint64_t len, uint64_t align)
{
  dk_constraints c = DK_CONSTRAINTS_NONE;
  c.low = low;
  c.high = high;
  dk_hchunk out;
  dk_clear_failure();             /* an internal call: the first failure recorded is its own */
  return dk__reserve_claim(&c, len, align, &out);
}

static void assert_no_window(int r, const char *what, const char *held)
{
  if (r != -1) fail_msg("%s: %d, expected -1", what, r);
  assert_int_equal(dk_last_failure()->code, kIOReturnNoMemory);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_MASK);
  if (!dkt_text_has(dk_last_failure()->text, held)) fail_msg("%s: the reason lacks \"%s\": %s", what, held, dkt_failure_text());
}

/* A request is served by adjacent pages of one file, aligned, within its limits, that nobody
 * holds; where no reservation has such pages the refusal says what they hold, what running
 * processes hold, and how to grow the narrowest. A window half held is let go entirely. */
static void claims_need_a_free_window(void **state)
{
  (void)state;
  if (geteuid() != 0 || !dk__caps()->pagemap_frames) DKT_SKIP("claiming reserved pages needs root");
  write_table(k_claimable);
  int fd = hold_claim(0x3fffffff, 1);
  dk_prim_counters before = dk__prim_counters();
  /* pages 0-1 fit but 1 is held; 1-2 are not adjacent; 2-3 are in two files */
  assert_no_window(claim(0, 0x3fffffff, 2 * P2, P2), "two pages",
                   "hold 5 pages of 2 MiB, 1 of them held by running processes, and none has 2 free adjacent pages");
  assert_true(dkt_text_has(dk_last_failure()->text, "dmakit reserve --mask 0x3fffffff 12M"));
  assert_no_window(claim(0, 0x3fffffff, 2 * P2, 4 * P2), "aligned to 8 MiB", "none has 2 free adjacent pages");
  assert_no_window(claim(0x1100000, 0x3fffffff, 2 * P2, P2), "above 17 MiB", "hold 5 pages of 2 MiB");
  /* above 33 MiB: the wider reservation's page is under it, so only the narrow one applies */
  assert_no_window(claim(0x2100000, 0x3fffffff, 2 * P2, P2), "above 33 MiB", "hold 4 pages of 2 MiB");
  /* under 19 MiB: only page 0 applies (and the wider reservations have none) */
  assert_no_window(claim(0, 0x12fffff, 2 * P2, P2), "under 19 MiB", "hold 4 pages of 2 MiB");
  /* the page that is not held, named by a request for nothing: claimed, but its file is not there */
  int r = claim(0, 0x3fffffff, 0, P2);
  assert_int_equal(r, -1);
  assert_true(dkt_text_has(dk_last_failure()->text, "opening the reserved pages"));
  /* no limit, or a limit under every reservation and its pages: no reservation applies */
  assert_int_equal(claim(0, 0, P2, P2), 0);
  assert_int_equal(claim(0, 0x3fffff, P2, P2), 0);
  /* every call of a claim failed in turn: no reservation applies (the lock cannot be had), or it
   * is refused with a reason; nothing leaked either way */
  unsigned long n = 1;
  for (;; n++) {
    dk__fault_arm(n, 0, 0, 0);
    r = claim(0, 0x3fffffff, 0, P2);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    if (!fired) break;
    if (r != 0 && r != -1) fail_msg("fault at call %lu: %d", n, r);
    if (r == -1 && dk_last_failure()->code == kIOReturnSuccess) fail_msg("fault at call %lu: -1 without a reason", n);
    dk_prim_counters now = dk__prim_counters();
    if (now.fds != before.fds || now.heap_blocks != before.heap_blocks)
      fail_msg("fault at call %lu: leak: fds %ld->%ld heap %ld->%ld", n, before.fds, now.fds, before.heap_blocks,
               now.heap_blocks);
  }
  assert_true(n > 5);
  dk_prim_counters after = dk__prim_counters();
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
  /* what the refused claims took is let go: only the test's page is held */
  dk_reserve_info info[3];
  size_t count;
  assert_int_equal(dk_reserve_list(info, 3, &count), kIOReturnSuccess);
  assert_int_equal(info[0].pages_claimed, 1);
  assert_int_equal(info[1].pages_claimed, 0);
  assert_int_equal(info[2].pages_claimed, 0);
  close(fd);
  char path[160];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/reserve/mask-0x%llx.claims", g_dir, (unsigned long long)info[i].mask);
    unlink(path);
  }
  assert_int_equal(unlink(g_table), 0);
  assert_int_equal(claim(0, 0x3fffffff, P2, P2), 0);    /* no table: no reservation */
}

/* A reserved page found elsewhere than the table records once it is claimed (what the kernel
 * migrating it would show): outside the request's limits, it is not handed out, the reason says
 * where it lies, and this process never claims it again. The page is real (a 2 MiB page in a
 * hugetlbfs file on the test's own mount, from one surplus page dmakit's limit allows for the
 * test and takes back); the table records it one page above where it is, and the request asks for
 * exactly the recorded page, so the check fails wherever the kernel put it. */
static void a_page_found_elsewhere_is_not_handed_out(void **state)
{
  (void)state;
  if (geteuid() != 0 || !dk__caps()->pagemap_frames || !dkt_pfn_readable())
    DKT_SKIP("claiming reserved pages needs root");
  dk_huge_counts k;
  if (dk__huge_counts(P2, &k) < 0) DKT_SKIP("the kernel has no 2 MiB hugepages");
  char mnt[160], file[224];
  snprintf(mnt, sizeof mnt, "%s/hugetlbfs-2M", g_dir);
  snprintf(file, sizeof file, "%s/mask-0xfffffffff.0.pages", mnt);
  if (mkdir(mnt, 0700) != 0) assert_int_equal(errno, EEXIST);
  if (mount("dk-test", mnt, "hugetlbfs", 0, "pagesize=2M,mode=0700") != 0) DKT_SKIP("cannot mount hugetlbfs: %s", strerror(errno));
  long raised = 0;
  if (!dk__huge_make_room(P2, 1, 1, &raised)) {
    umount(mnt);
    DKT_SKIP("no 2 MiB page for the test: %s", dkt_failure_text());
  }
  int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)P2), 0);
  uint8_t *va = mmap(NULL, P2, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(va != MAP_FAILED);
  memset(va, 0x5a, 4096);                          /* what a process that held it left */
  uint64_t pfn = 0;
  dkt_read_frames(va, 4096, &pfn);
  munmap(va, P2);
  close(fd);
  assert_true(pfn != 0);
  const uint64_t real = pfn * 4096, recorded = real + P2;
  char text[160];
  snprintf(text, sizeof text, "dmakit-reservations 1\nR fffffffff 1700000100 1 1\nP 0 0 %llx\n",
           (unsigned long long)recorded);
  write_table(text);
  dk_backing warm;                                 /* the pin ring is made on first use: made now */
  assert_true(dk__backing_create(&warm, 4096, 0));
  assert_true(dk__backing_wire(&warm));
  dk__backing_destroy(&warm);
  dk_prim_counters before = dk__prim_counters();
  int first = claim(recorded, recorded + P2 - 1, P2, P2);
  dk_failure f1 = *dk_last_failure();
  int again = claim(recorded, recorded + P2 - 1, P2, P2);
  dk_failure f2 = *dk_last_failure();
  dk_prim_counters after = dk__prim_counters();
  unlink(file);
  umount(mnt);
  dk__huge_give_back(P2, raised);
  char claims[160];
  snprintf(claims, sizeof claims, "%s/reserve/mask-0xfffffffff.claims", g_dir);
  unlink(claims);
  assert_int_equal(unlink(g_table), 0);
  assert_int_equal(first, -1);
  assert_int_equal(f1.code, kIOReturnNoMemory);
  assert_int_equal(f1.constraint, DK_CONSTRAINT_MASK);
  char where[64];
  snprintf(where, sizeof where, "now lies at 0x%llx", (unsigned long long)real);
  if (!dkt_text_has(f1.text, where) || !dkt_text_has(f1.text, "it is not handed out")) fail_msg("%s", f1.text);
  assert_int_equal(again, -1);                     /* never claimed again by this process */
  if (!dkt_text_has(f2.text, "none has 1 free adjacent pages")) fail_msg("%s", f2.text);
  assert_int_equal(after.fds, before.fds);
  assert_int_equal(after.heap_blocks, before.heap_blocks);
  assert_int_equal(after.map_bytes, before.map_bytes);
  assert_int_equal(dk__huge_raised(P2), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(lists_a_well_formed_table),
    cmocka_unit_test(estimate_counts_what_is_held),
    cmocka_unit_test(refuses_malformed_tables),
    cmocka_unit_test(estimate_reads_the_zones),
    cmocka_unit_test(estimate_numbers_each_nodes_zones),
    cmocka_unit_test(estimate_without_zones_is_refused),
    cmocka_unit_test(bad_arguments),
    cmocka_unit_test(release_of_nothing_is_not_found),
    cmocka_unit_test(claimed_pages_block_release),
    cmocka_unit_test(release_rewrites_the_table),
    cmocka_unit_test(reads_tables_at_their_edges),
    cmocka_unit_test(release_clears_a_broken_journal),
    cmocka_unit_test(release_keeps_the_table_when_it_cannot_be_rewritten),
    cmocka_unit_test(the_admin_lock),
    cmocka_unit_test(a_full_table_takes_no_new_mask),
    cmocka_unit_test(claims_need_a_free_window),
    cmocka_unit_test(a_page_found_elsewhere_is_not_handed_out),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
