/* tools/cmd_stats.c: `dmakit stats`: the hugepage pool and allocator statistics of this
 * process (dk_pool_get_stats), optionally after growing the pool (--reserve, with a progress
 * bar on a terminal) or allocating buffers (--alloc); and `dmakit bench`, which runs the
 * benchmark suite (scripts/bench.sh) from the source tree and prints its table. */
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef DK_SOURCE_DIR
#define DK_SOURCE_DIR ""
#endif

/* ---- stats -------------------------------------------------------------------------------- */
static void stats_help(void)
{
  printf("usage: %s stats [--reserve SIZE [--page-size 2M|1G]] [--alloc SPEC]... [--trim] [--json]\n\n"
         "The hugepage pool and allocator statistics (dk_pool_get_stats). The pool lives in this\n"
         "process, so a plain `stats` shows an empty pool; --reserve grows it first and --alloc\n"
         "makes buffers first (SPEC as in `dmakit map`: SIZE[,mask=M][,align=A][,contiguous]...).\n\n"
         "  --reserve SIZE     dk_pool_reserve SIZE in steps (a progress bar on a terminal)\n"
         "  --page-size P      hugepage size for --reserve: 2M (default) or 1G\n"
         "  --alloc SPEC       allocate a buffer before reading the statistics (repeatable)\n"
         "  --trim             dk_pool_trim before reading the statistics\n"
         "  --json             one JSON object on stdout\n", prog);
}

int cmd_stats(int argc, char **argv)
{
  static const struct option opts[] = {
    { "reserve", required_argument, 0, 'r' }, { "page-size", required_argument, 0, 'P' },
    { "alloc", required_argument, 0, 'a' },   { "trim", no_argument, 0, 't' },
    { "json", no_argument, 0, 'j' },          { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
  };
  uint64_t reserve = 0, page = 2u << 20;
  int json = 0, trim = 0, ch;
  dk_req reqs[16];
  int nreq = 0;
  char why[200];
  optind = 1;
  while ((ch = getopt_cli("stats", argc, argv, opts)) != -1) {
    switch (ch) {
    case 'r': if (parse_size(optarg, &reserve) || !reserve) usage_error("stats", "--reserve: '%s' is not a size", optarg); break;
    case 'P':
      if (parse_size(optarg, &page) || (page != (2u << 20) && page != (1u << 30)))
        usage_error("stats", "--page-size: '%s' is not 2M or 1G", optarg);
      break;
    case 'a':
      if (nreq >= 16) usage_error("stats", "--alloc: at most 16 buffers");
      if (dk_req_parse_spec(&reqs[nreq], optarg, why, sizeof why)) usage_error("stats", "--alloc '%s': %s", optarg, why);
      nreq++;
      break;
    case 't': trim = 1; break;
    case 'j': json = 1; break;
    case 'h': stats_help(); return EXIT_OK;
    }
  }
  if (optind < argc) usage_error("stats", "unexpected argument '%s'", argv[optind]);

  int rc = EXIT_OK;
  char a[32], b[32];
  if (reserve) {
    uint64_t step = page > (64u << 20) ? page : (64u << 20), done = 0;
    progress p;
    progress_start(&p, "reserving hugepages", reserve);
    while (done < reserve) {
      uint64_t n = reserve - done < step ? reserve - done : step;
      IOReturn r = dk_pool_reserve(n, page);
      if (r != kIOReturnSuccess) {
        progress_end(&p);
        errorf("stats: dk_pool_reserve(%s of %s pages) after %s: %s: %s", fmt_size(a, n), fmt_size(b, page),
               fmt_size((char[32]){ 0 }, done), dk_ioreturn_name(r), dk_last_failure()->text);
        rc = EXIT_FAIL;
        break;
      }
      done += n;
      progress_update(&p, done);
    }
    progress_end(&p);
  }
  IOBufferMemoryDescriptor *bufs[16] = { 0 };
  for (int i = 0; i < nreq; i++) {
    bufs[i] = dk_req_create(&reqs[i], NULL);
    if (!bufs[i]) {
      dk_req_describe(&reqs[i], why, sizeof why);
      errorf("stats: --alloc %s refused: %s", why, req_failure.text);
      rc = EXIT_FAIL;
    }
  }
  if (trim) dk_pool_trim();
  dk_pool_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  IOReturn r = dk_pool_get_stats(&st);
  if (r != kIOReturnSuccess) {
    errorf("stats: dk_pool_get_stats: %s", dk_ioreturn_name(r));
    return EXIT_FAIL;
  }
  huge_info h[4];
  size_t nh = hugepage_info(h, 4);
  dk_reserve_info rsv[16];
  size_t nrsv = 0;
  if (dk_reserve_list(rsv, 16, &nrsv) != kIOReturnSuccess) nrsv = 0;
  if (nrsv > 16) nrsv = 16;
  if (json) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w, NULL);
    jw_obj(&w, "pool");
    jw_u64(&w, "version", st.version);
    jw_u64(&w, "bytes_4k", st.bytes_4k);
    jw_u64(&w, "bytes_pool_2m", st.bytes_pool_2m);
    jw_u64(&w, "bytes_pool_1g", st.bytes_pool_1g);
    jw_u64(&w, "bytes_pool_used", st.bytes_pool_used);
    jw_u64(&w, "bytes_pool_free", st.bytes_pool_free);
    jw_u64(&w, "runs", st.runs);
    jw_u64(&w, "largest_run", st.largest_run);
    jw_u64(&w, "largest_free", st.largest_free);
    jw_dbl(&w, "fragmentation", st.fragmentation);
    jw_u64(&w, "requests_4k", st.requests_4k);
    jw_u64(&w, "requests_pool", st.requests_pool);
    jw_u64(&w, "requests_slab", st.requests_slab);
    jw_u64(&w, "grows", st.grows);
    jw_u64(&w, "lowmem_searches", st.lowmem_searches);
    jw_u64(&w, "trims", st.trims);
    jw_u64(&w, "hugepages_raised_2m", st.hugepages_raised_2m);
    jw_u64(&w, "hugepages_raised_1g", st.hugepages_raised_1g);
    jw_u64(&w, "lowest_frame", st.lowest_frame);
    jw_obj(&w, "failures");
    for (int k = 0; k <= DK_CONSTRAINT_RANGE; k++) jw_u64(&w, dk_constraint_name((dk_constraint_kind)k), st.failures[k]);
    jw_end_obj(&w);
    jw_end_obj(&w);
    jw_arr(&w, "system_hugepages");
    for (size_t i = 0; i < nh; i++) {
      jw_obj(&w, NULL);
      jw_u64(&w, "size", h[i].size);
      jw_i64(&w, "nr", h[i].nr);
      jw_i64(&w, "free", h[i].free);
      jw_i64(&w, "reserved", h[i].resv);
      jw_i64(&w, "surplus", h[i].surplus);
      jw_end_obj(&w);
    }
    jw_end_arr(&w);
    jw_arr(&w, "reservations");
    for (size_t i = 0; i < nrsv; i++) {
      jw_obj(&w, NULL);
      jw_u64(&w, "mask", rsv[i].mask);
      jw_u64(&w, "bytes", (uint64_t)rsv[i].pages * rsv[i].page_size);
      jw_u64(&w, "pages", rsv[i].pages);
      jw_u64(&w, "pages_claimed", rsv[i].pages_claimed);
      jw_end_obj(&w);
    }
    jw_end_arr(&w);
    jw_u64(&w, "reserved_now", reserve);
    jw_u64(&w, "buffers", (uint64_t)nreq);
    jw_end_obj(&w);
    jw_done(&w);
  } else {
    printf("hugepage pool (this process)\n");
    printf("  held             %s in 2 MiB pages, %s in 1 GiB pages, in %" PRIu64 " contiguous runs (largest %s)\n",
           fmt_size(a, st.bytes_pool_2m), fmt_size(b, st.bytes_pool_1g), st.runs, fmt_size((char[32]){ 0 }, st.largest_run));
    printf("  used / free      %s in live buffers, %s free (largest free extent %s, fragmentation %.2f)\n",
           fmt_size(a, st.bytes_pool_used), fmt_size(b, st.bytes_pool_free), fmt_size((char[32]){ 0 }, st.largest_free),
           st.fragmentation);
    printf("  lowest frame     %s\n", st.lowest_frame ? (snprintf(why, sizeof why, "0x%" PRIx64, st.lowest_frame), why) : "none held");
    printf("  kernel limits    %" PRIu64 " x 2 MiB and %" PRIu64 " x 1 GiB hugepages raised by dmakit (given back at exit)\n",
           st.hugepages_raised_2m, st.hugepages_raised_1g);
    printf("allocator\n");
    printf("  requests         %" PRIu64 " on 4K pages, %" PRIu64 " from the pool, %" PRIu64 " from slabs\n",
           st.requests_4k, st.requests_pool, st.requests_slab);
    printf("  live 4K bytes    %s\n", fmt_size(a, st.bytes_4k));
    printf("  pool work        %" PRIu64 " grows, %" PRIu64 " low-memory searches, %" PRIu64 " trims\n", st.grows,
           st.lowmem_searches, st.trims);
    printf("  failures        ");
    int any = 0;
    for (int k = 0; k <= DK_CONSTRAINT_RANGE; k++)
      if (st.failures[k]) printf(" %s %" PRIu64, dk_constraint_name((dk_constraint_kind)k), st.failures[k]), any = 1;
    printf("%s\n", any ? "" : " none");
    printf("system hugepages  ");
    for (size_t i = 0; i < nh; i++)
      printf(" %s: %lld total, %lld free;", fmt_size(a, h[i].size), h[i].nr, h[i].free);
    printf("%s\n", nh ? "" : " none");
    printf("reservations     ");
    for (size_t i = 0; i < nrsv; i++)
      printf("%smask 0x%" PRIx64 ": %s, %u of %u pages held by running processes", i ? "; " : "", rsv[i].mask,
             fmt_size(a, (uint64_t)rsv[i].pages * rsv[i].page_size), rsv[i].pages_claimed, rsv[i].pages);
    printf("%s\n", nrsv ? "" : "none (dmakit reserve)");
    if (!reserve && !nreq) printf("(the pool belongs to the process: try --reserve 64M or --alloc 2M,contiguous)\n");
  }
  for (int i = 0; i < nreq; i++) dk_req_release(&reqs[i], bufs[i]);
  return rc;
}

/* ---- bench ----------------------------------------------------------------------------- */
static const char *bench_script(char *buf, size_t cap)
{
  const char *env = getenv("DMAKIT_SOURCE_DIR");       /* when set, the only place looked at */
  const char *dirs[2] = { env, env ? NULL : DK_SOURCE_DIR };
  struct stat st;
  for (int i = 0; i < 2; i++) {
    if (!dirs[i] || !*dirs[i]) continue;
    snprintf(buf, cap, "%s/scripts/bench.sh", dirs[i]);
    if (stat(buf, &st) == 0) return buf;
  }
  return NULL;
}

int cmd_bench(int argc, char **argv)
{
  static const struct option opts[] = {
    { "where", no_argument, 0, 'w' },           { "hugepages", required_argument, 0, 'H' },
    { "out", required_argument, 0, 'o' },       { "help", no_argument, 0, 'h' },
    { "quick", no_argument, 0, 'q' },           { "only", required_argument, 0, 'O' }, { 0, 0, 0, 0 },
  };
  int where = 0, quick = 0, ch;
  const char *hp = NULL, *out = NULL, *only = NULL;
  optind = 1;
  while ((ch = getopt_cli("bench", argc, argv, opts)) != -1) {
    uint64_t n;
    switch (ch) {
    case 'w': where = 1; break;
    case 'H': if (parse_size(optarg, &n) || !n) usage_error("bench", "--hugepages: '%s' is not a count", optarg); hp = optarg; break;
    case 'o': out = optarg; break;
    case 'q': quick = 1; break;
    case 'O':
      if (strcmp(optarg, "single") != 0 && strcmp(optarg, "scale") != 0)
        usage_error("bench", "--only: '%s' is neither single nor scale", optarg);
      only = optarg;
      break;
    case 'h':
      printf("usage: %s bench [--quick] [--only single|scale] [--hugepages N] [--out DIR] [--where]\n\n"
             "Runs the benchmark suite, `sh scripts/bench.sh` from the dmakit source tree (dmakit\n"
             "against DPDK and mmap+mlock+pagemap; needs root, installs libdpdk-dev), and prints its\n"
             "markdown table. The source tree is $DMAKIT_SOURCE_DIR, else where this dmakit was built\n"
             "from (%s).\n\n"
             "  --quick         the live-count cases at small counts only (about a minute)\n"
             "  --only KIND     single: one buffer at a time (dkbench); scale: thousands to a million\n"
             "                  buffers live (dkscale)\n"
             "  --hugepages N   2 MiB pages to hold during the run (DK_BENCH_HUGEPAGES, default 1536)\n"
             "  --out DIR       build and result directory (DK_BENCH_OUT, default build-bench)\n"
             "  --where         print the script's path and exit\n", prog, *DK_SOURCE_DIR ? DK_SOURCE_DIR : "unknown");
      return EXIT_OK;
    }
  }
  if (optind < argc) usage_error("bench", "unexpected argument '%s'", argv[optind]);
  char path[4096];
  const char *script = bench_script(path, sizeof path);
  if (!script) {
    errorf("bench: scripts/bench.sh not found (looked in $DMAKIT_SOURCE_DIR and %s); it lives in the dmakit "
           "source tree: run `sudo sh scripts/bench.sh` there, or set DMAKIT_SOURCE_DIR", *DK_SOURCE_DIR ? DK_SOURCE_DIR : "the build's source");
    return EXIT_FAIL;
  }
  if (where) { printf("%s\n", script); return EXIT_OK; }
  if (hp) setenv("DK_BENCH_HUGEPAGES", hp, 1);
  if (out) setenv("DK_BENCH_OUT", out, 1);
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) { errorf("bench: fork: %s", strerror(errno)); return EXIT_FAIL; }
  if (pid == 0) {
    if (quick) execlp("sh", "sh", script, "--quick", (char *)NULL);
    else if (only) execlp("sh", "sh", script, "--only", only, (char *)NULL);
    else execlp("sh", "sh", script, (char *)NULL);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {}
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return EXIT_OK;
  errorf("bench: %s failed (%s %d)", script, WIFEXITED(status) ? "exit" : "signal",
         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  return EXIT_FAIL;
}
