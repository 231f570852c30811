/* tools/cmd_alloc.c: `dmakit alloc`: one buffer with every constraint a flag, its descriptor,
 * its segments (bus and CPU physical address, length), and whether each constraint holds,
 * checked from the segments rather than taken from the library. --hold keeps it alive. */
#include "util.h"

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

static void alloc_help(void)
{
  printf("usage: %s alloc [flags] SIZE\n\n"
         "Allocate one IOBufferMemoryDescriptor, print it, its segments and whether every\n"
         "constraint holds (checked independently from the segments).\n\n"
         "  --mask M               physical address mask (0xFFFFFFFF, 32bit)\n"
         "  --align A              physical and virtual alignment (power of two)\n"
         "  --contiguous           one physically contiguous segment\n"
         "  --boundary B           no segment crosses a multiple of B (inTaskWithConstraints)\n"
         "  --low L                lowest physical address allowed (inTaskWithConstraints)\n"
         "  --max-segment-size S   longest segment (inTaskWithConstraints)\n"
         "  --max-segments N       most segments (inTaskWithConstraints)\n"
         "  --task kernel|null     kernel_task (mapped here) or NULL (mapped nowhere)\n"
         "  --direction in|out|inout|none\n"
         "  --cache MODE           default inhibit writethru copyback writecombine copybackinner\n"
         "                         posted realtime postedreordered postedcombinedreordered\n"
         "  --pageable             pageable memory (prepared here so it has frames)\n"
         "  --pool 0|1             0: 4K pages only (DMAKIT_POOL for this buffer)\n"
         "  --json                 one JSON object on stdout\n"
         "  --hold                 keep the buffer until Enter or a signal (SIGINT, SIGTERM)\n\n"
         "SIZE and every address take decimal, 0x hex and K/M/G/T units (64K, 2M).\n"
         "Exit: 0 allocated, 1 refused (the reason from dk_last_failure() on stderr), 2 bad usage.\n",
         prog);
}

static void hold(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;            /* no SA_RESTART: the read below returns on a signal */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  fprintf(stderr, "%s alloc: holding the buffer (pid %d); press Enter or send a signal to release\n", prog,
          (int)getpid());
  char c;
  ssize_t n;
  while (!g_signal && (n = read(STDIN_FILENO, &c, 1)) == 1 && c != '\n') {}
  while (!g_signal && n == 0) pause();  /* stdin closed: wait for the signal */
  if (g_signal) fprintf(stderr, "%s alloc: signal %d, releasing the buffer\n", prog, (int)g_signal);
}

int cmd_alloc(int argc, char **argv)
{
  static const struct option opts[] = {
    { "mask", required_argument, 0, 'm' },        { "align", required_argument, 0, 'a' },
    { "contiguous", no_argument, 0, 'c' },         { "boundary", required_argument, 0, 'b' },
    { "low", required_argument, 0, 'l' },          { "max-segment-size", required_argument, 0, 'S' },
    { "max-segments", required_argument, 0, 'N' }, { "task", required_argument, 0, 't' },
    { "direction", required_argument, 0, 'd' },   { "cache", required_argument, 0, 'C' },
    { "pageable", no_argument, 0, 'p' },           { "pool", required_argument, 0, 'P' },
    { "json", no_argument, 0, 'j' },               { "hold", no_argument, 0, 'H' },
    { "help", no_argument, 0, 'h' },               { 0, 0, 0, 0 },
  };
  dk_req r;
  dk_req_init(&r);
  int json = 0, want_hold = 0, ch;
  optind = 1;
  while ((ch = getopt_cli("alloc", argc, argv, opts)) != -1) {
    const char *key = NULL;
    switch (ch) {
    case 'm': key = "mask"; break;
    case 'a': key = "align"; break;
    case 'c': key = "contiguous"; break;
    case 'b': key = "boundary"; break;
    case 'l': key = "low"; break;
    case 'S': key = "max-segment-size"; break;
    case 'N': key = "max-segments"; break;
    case 't': key = "task"; break;
    case 'd': key = "direction"; break;
    case 'C': key = "cache"; break;
    case 'p': key = "pageable"; break;
    case 'P': key = "pool"; break;
    case 'j': json = 1; break;
    case 'H': want_hold = 1; break;
    case 'h': alloc_help(); return EXIT_OK;
    default: usage_error("alloc", "unknown flag '%s'", argv[optind - 1]);
    }
    if (key) {
      const char *e = dk_req_set(&r, key, optarg && ch != 'c' && ch != 'p' ? optarg : NULL);
      if (e) usage_error("alloc", "--%s", e);
    }
  }
  if (optind >= argc) usage_error("alloc", "SIZE is missing");
  if (optind < argc - 1) usage_error("alloc", "unexpected argument '%s' (one SIZE only)", argv[optind + 1]);
  const char *e = dk_req_set(&r, "size", argv[optind]);
  if (e) usage_error("alloc", "%s", e);
  if (r.pageable && dk_req_needs_constraints(&r))
    usage_error("alloc", "--pageable cannot be combined with --boundary, --low or --max-segment(s): "
                         "inTaskWithConstraints makes wired buffers only");

  const char *call = NULL;
  IOBufferMemoryDescriptor *b = dk_req_create(&r, &call);
  char desc[200];
  dk_req_describe(&r, desc, sizeof desc);
  if (!b) {
    const dk_failure *f = &req_failure;
    fprintf(stderr, "%s alloc: %s refused %s: %s (%s), constraint %s: %s\n", prog, call, desc,
            dk_ioreturn_name(f->code), dk_ioreturn_string(f->code), dk_constraint_name(f->constraint), f->text);
    if (json) {
      jw w;
      jw_init(&w, stdout);
      jw_obj(&w, NULL);
      jw_bool(&w, "ok", false);
      jw_str(&w, "call", call);
      jw_str(&w, "request", desc);
      jw_obj(&w, "error");
      jw_str(&w, "code", dk_ioreturn_name(f->code));
      jw_str(&w, "constraint", dk_constraint_name(f->constraint));
      jw_str(&w, "text", f->text);
      jw_end_obj(&w);
      jw_end_obj(&w);
      jw_done(&w);
    }
    return EXIT_FAIL;
  }
  if (json) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w, NULL);
    jw_bool(&w, "ok", true);
    jw_str(&w, "call", call);
    jw_str(&w, "request", desc);
    show_buffer_json(&w, "buffer", &r, b);
    jw_end_obj(&w);
    jw_done(&w);
  } else {
    printf("%s(%s): %s\n", call, r.task_null ? "NULL" : "kernel_task", desc);
    show_buffer_text(&r, b, "  ");
    fflush(stdout);
  }
  if (want_hold) hold();
  dk_req_release(&r, b);
  return EXIT_OK;
}
