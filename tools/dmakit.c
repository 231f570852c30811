/* tools/dmakit.c: the dmakit command's entry point: the command table, global help and
 * dispatch. Each command lives in tools/cmd_*.c on the public API only; the shared parts
 * (flags, sizes, JSON, segments and their check) are in tools/util.c. */
#include "util.h"

#include <string.h>

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
  { "doctor", cmd_doctor, "what this machine can do for DMA buffers, each problem with its fix" },
  { "caps",   cmd_caps,   "the library's capability probe (frames, pinning, top of RAM)" },
  { "alloc",  cmd_alloc,  "allocate one buffer: descriptor, segments, every constraint verified" },
  { "map",    cmd_map,    "a picture of physical memory with live buffers (SVG, PNG)" },
  { "reserve", cmd_reserve, "keep hugepages below a mask past the process (--status, --release)" },
  { "stats",  cmd_stats,  "hugepage pool and allocator statistics (--reserve to grow the pool)" },
  { "bench",  cmd_bench,  "run the benchmark suite (scripts/bench.sh) and print its table" },
  { "demo",   cmd_demo,   "the README demo: constrained buffers and where they landed" },
};

static void help(FILE *f)
{
  fprintf(f, "usage: %s <command> [flags]\n\ncommands:\n", prog);
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nEvery command takes --help. Sizes and addresses take decimal, 0x hex and K/M/G/T units\n"
             "(64K, 2M, 0x1000); masks also take 32bit. Exit codes: 0 success, 1 failure (doctor:\n"
             "warnings), 2 bad usage, 3 (doctor) no physical DMA buffers possible here.\n"
             "See dmakit(1).\n");
}

int main(int argc, char **argv)
{
  if (argc < 2) { help(stderr); return EXIT_USAGE; }
  const char *c = argv[1];
  if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) { help(stdout); return EXIT_OK; }
  if (!strcmp(c, "--version")) { printf("dmakit 0.1.0\n"); return EXIT_OK; }
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (!strcmp(c, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  if (c[0] == '-') usage_error(NULL, "unknown flag '%s' (flags go after the command)", c);
  usage_error(NULL, "unknown command '%s'", c);
}
