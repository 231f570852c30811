/* tools/cmd_reserve.c: `dmakit reserve`: make, show and release reservations (dmakit/reserve.h):
 * 2 MiB hugepages below a mask, found once and kept past the process, from which later
 * processes' buffers under that mask are carved with no search. Before a search it prints the
 * estimate of what the search may hold; while it runs, a progress bar (on a terminal); Ctrl-C
 * stops it and everything is given back. Exit 0 done, 1 refused or failed, 2 bad usage. */
#include "util.h"

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void reserve_help(void)
{
  printf("usage: %s reserve [--mask M] [--max-hold SIZE] [--max-seconds N] [--keep-free SIZE] [--yes] SIZE\n"
         "       %s reserve --status [--json]\n"
         "       %s reserve --release [--mask M]\n"
         "       %s reserve --estimate [--mask M] [bounds] SIZE\n\n"
         "Makes the reservation below mask M (default 32bit) hold SIZE in 2 MiB hugepages: a search finds\n"
         "the pages it lacks once and keeps exactly those in a hugetlbfs file under /run/dmakit (or\n"
         "$DMAKIT_RESERVE_DIR) until --release or reboot; buffers under that mask in every later process\n"
         "come from it first, with no search. The kernel hands out its highest memory first, so the\n"
         "search may hold far more than it keeps: the estimate is printed before it starts, and it\n"
         "starts only within the bounds and with --yes (or a 'y' on a terminal). Needs root.\n\n"
         "  --mask M          the device's mask, 2^n - 1 (0xfffffff, 28bit, 32bit; default 32bit)\n"
         "  --max-hold SIZE   the most the search may hold at once (default: what --keep-free leaves)\n"
         "  --keep-free SIZE  stop before available memory falls below this (default 1/16 of RAM, >= 128M)\n"
         "  --max-seconds N   stop after N seconds (default 300)\n"
         "  --yes             start without asking\n"
         "  --estimate        print the estimate only\n"
         "  --status          the reservations: size, pages held by running processes, frames\n"
         "  --release         give the reservation below --mask (default: all) back to the kernel\n"
         "  --json            one JSON object on stdout (--status, --estimate)\n", prog, prog, prog, prog);
}

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

typedef struct bar { progress p; char what[96]; } bar;

static bool on_progress(const dk_reserve_progress *pr, void *arg)
{
  bar *b = arg;
  char a[32], c[32];
  snprintf(b->what, sizeof b->what, "searching: %s of %s found, holding", fmt_size(a, pr->found), fmt_size(c, pr->need));
  b->p.what = b->what;
  b->p.total = pr->hold_limit ? pr->hold_limit : 1;
  b->p.last = -1;                           /* the text changed: draw again */
  progress_update(&b->p, pr->held);
  return !g_stop;
}

static void put_cost_json(jw *w, const dk_reserve_cost *e)
{
  jw_obj(w, "estimate");
  jw_u64(w, "mask", e->mask);
  jw_u64(w, "bytes", e->bytes);
  jw_u64(w, "have", e->have);
  jw_u64(w, "need", e->need);
  jw_u64(w, "free_above", e->free_above);
  jw_u64(w, "free_cut", e->free_cut);
  jw_u64(w, "free_below", e->free_below);
  jw_u64(w, "hold", e->hold);
  jw_u64(w, "hold_max", e->hold_max);
  jw_u64(w, "available", e->available);
  jw_u64(w, "max_hold", e->max_hold);
  jw_u64(w, "keep_free", e->keep_free);
  jw_u64(w, "max_seconds", e->max_seconds);
  jw_bool(w, "fits", e->fits);
  jw_str(w, "text", e->text);
  jw_end_obj(w);
}

static int show_status(int json)
{
  dk_reserve_info r[32];
  size_t n = 0;
  IOReturn rc = dk_reserve_list(r, 32, &n);
  if (rc != kIOReturnSuccess) {
    errorf("reserve --status: %s: %s", dk_ioreturn_name(rc), dk_last_failure()->text);
    return EXIT_FAIL;
  }
  if (n > 32) n = 32;
  huge_info h[4];
  size_t nh = hugepage_info(h, 4);
  if (json) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w, NULL);
    jw_arr(&w, "reservations");
    for (size_t i = 0; i < n; i++) {
      jw_obj(&w, NULL);
      jw_u64(&w, "mask", r[i].mask);
      jw_u64(&w, "page_size", r[i].page_size);
      jw_u64(&w, "pages", r[i].pages);
      jw_u64(&w, "bytes", (uint64_t)r[i].pages * r[i].page_size);
      jw_u64(&w, "pages_claimed", r[i].pages_claimed);
      jw_u64(&w, "lowest", r[i].lowest);
      jw_u64(&w, "highest", r[i].highest);
      jw_i64(&w, "created", r[i].created);
      jw_end_obj(&w);
    }
    jw_end_arr(&w);
    for (size_t i = 0; i < nh; i++)
      if (h[i].size == (2u << 20)) { jw_i64(&w, "nr_hugepages", h[i].nr); jw_i64(&w, "free_hugepages", h[i].free); }
    jw_end_obj(&w);
    jw_done(&w);
    return EXIT_OK;
  }
  if (!n) printf("no reservations\n");
  for (size_t i = 0; i < n; i++) {
    char a[32], when[32];
    time_t t = (time_t)r[i].created;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    printf("mask 0x%-10" PRIx64 " %s in %u pages of 2 MiB, %u held by running processes, %u free; frames "
           "0x%" PRIx64 "-0x%" PRIx64 "; since %s\n", r[i].mask, fmt_size(a, (uint64_t)r[i].pages * r[i].page_size),
           r[i].pages, r[i].pages_claimed, r[i].pages - r[i].pages_claimed, r[i].lowest, r[i].highest + r[i].page_size - 1,
           when);
  }
  for (size_t i = 0; i < nh; i++)
    if (h[i].size == (2u << 20)) printf("system 2 MiB hugepages: %lld total, %lld free\n", h[i].nr, h[i].free);
  return EXIT_OK;
}

int cmd_reserve(int argc, char **argv)
{
  static const struct option opts[] = {
    { "mask", required_argument, 0, 'm' },      { "max-hold", required_argument, 0, 'H' },
    { "max-seconds", required_argument, 0, 'S' }, { "keep-free", required_argument, 0, 'K' },
    { "yes", no_argument, 0, 'y' },             { "status", no_argument, 0, 's' },
    { "release", no_argument, 0, 'r' },         { "estimate", no_argument, 0, 'e' },
    { "json", no_argument, 0, 'j' },            { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
  };
  uint64_t mask = 0xFFFFFFFFull, v;
  dk_reserve_bounds bounds = { 0, 0, 0 };
  int yes = 0, status = 0, release = 0, only_estimate = 0, json = 0, mask_given = 0, ch;
  optind = 1;
  while ((ch = getopt_cli("reserve", argc, argv, opts)) != -1) {
    switch (ch) {
    case 'm':
      if (parse_mask(optarg, &mask) || !mask || (mask & (mask + 1)))
        usage_error("reserve", "--mask: '%s' is not a mask 2^n - 1 (try 0xfffffff, 28bit or 32bit)", optarg);
      mask_given = 1;
      break;
    case 'H': if (parse_size(optarg, &bounds.max_hold) || !bounds.max_hold) usage_error("reserve", "--max-hold: '%s' is not a size", optarg); break;
    case 'K': if (parse_size(optarg, &bounds.keep_free) || !bounds.keep_free) usage_error("reserve", "--keep-free: '%s' is not a size", optarg); break;
    case 'S':
      if (parse_size(optarg, &v) || !v || v > 86400) usage_error("reserve", "--max-seconds: '%s' is not 1..86400", optarg);
      bounds.max_seconds = (uint32_t)v;
      break;
    case 'y': yes = 1; break;
    case 's': status = 1; break;
    case 'r': release = 1; break;
    case 'e': only_estimate = 1; break;
    case 'j': json = 1; break;
    case 'h': reserve_help(); return EXIT_OK;
    }
  }
  if (status + release + only_estimate > 1) usage_error("reserve", "--status, --release and --estimate go alone");
  if (status || release) {
    if (optind < argc) usage_error("reserve", "unexpected argument '%s'", argv[optind]);
    if (status) return show_status(json);
    IOReturn rc = dk_reserve_release(mask_given ? mask : 0);
    if (rc != kIOReturnSuccess) {
      errorf("reserve --release: %s: %s", dk_ioreturn_name(rc), dk_last_failure()->text);
      return EXIT_FAIL;
    }
    printf("released %s\n", mask_given ? "the reservation" : "every reservation");
    return EXIT_OK;
  }
  if (optind != argc - 1) usage_error("reserve", optind < argc ? "one SIZE only" : "SIZE is missing (e.g. 64M)");
  uint64_t size;
  if (parse_size(argv[optind], &size) || !size) usage_error("reserve", "'%s' is not a size", argv[optind]);

  dk_reserve_cost e;
  IOReturn rc = dk_reserve_estimate(mask, size, &bounds, &e);
  if (rc != kIOReturnSuccess) {
    errorf("reserve: %s: %s", dk_ioreturn_name(rc), dk_last_failure()->text);
    return rc == kIOReturnBadArgument ? EXIT_USAGE : EXIT_FAIL;
  }
  char a[32], b[32], c[32];
  if (only_estimate) {
    if (json) {
      jw w;
      jw_init(&w, stdout);
      jw_obj(&w, NULL);
      put_cost_json(&w, &e);
      jw_end_obj(&w);
      jw_done(&w);
    } else {
      printf("estimate: %s\n", e.text);
    }
    return e.fits ? EXIT_OK : EXIT_FAIL;
  }
  if (e.need == 0) {
    printf("the reservation below mask 0x%" PRIx64 " already holds %s\n", mask, fmt_size(a, e.have));
    return EXIT_OK;
  }
  printf("estimate: %s\n", e.text);
  printf("bounds:   hold at most %s, keep %s of %s available, stop after %u s\n", fmt_size(a, e.max_hold),
         fmt_size(b, e.keep_free), fmt_size(c, e.available), e.max_seconds);
  if (!e.fits) {
    errorf("reserve: not started: the estimate does not fit the bounds (raise --max-hold, lower --keep-free, or "
           "reserve less)");
    return EXIT_FAIL;
  }
  if (!yes) {
    if (!isatty(STDIN_FILENO)) {
      errorf("reserve: not started: pass --yes to start a search that may hold up to %s", fmt_size(a, e.hold_max));
      return EXIT_FAIL;
    }
    printf("start the search? [y/N] ");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin) || (line[0] != 'y' && line[0] != 'Y')) {
      printf("not started\n");
      return EXIT_FAIL;
    }
  }
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  bar pb;
  progress_start(&pb.p, "searching", e.max_hold);
  rc = dk_reserve_create(mask, size, &bounds, on_progress, &pb);
  progress_end(&pb.p);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (rc != kIOReturnSuccess) {
    errorf("reserve: %s: %s", dk_ioreturn_name(rc), dk_last_failure()->text);
    return EXIT_FAIL;
  }
  dk_reserve_info r[32];
  size_t n = 0;
  dk_reserve_list(r, 32, &n);
  for (size_t i = 0; i < n && i < 32; i++)
    if (r[i].mask == mask)
      printf("reserved below mask 0x%" PRIx64 ": %s in %u pages of 2 MiB (frames 0x%" PRIx64 "-0x%" PRIx64 ")\n", mask,
             fmt_size(a, (uint64_t)r[i].pages * r[i].page_size), r[i].pages, r[i].lowest, r[i].highest + r[i].page_size - 1);
  return EXIT_OK;
}
