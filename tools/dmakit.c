/* tools/dmakit.c: the dmakit command, on the public API only.
 *   dmakit caps [--json]          what this machine allows (frames, pinning, top of RAM)
 *   dmakit alloc [flags] SIZE     one buffer: its descriptor, segments, verified constraints
 *   dmakit demo                   the README demo: several constrained buffers, where they landed */
#include <dmakit/dmakit.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *prog = "dmakit";

static void usage_error(const char *fmt, const char *arg)
{
  fprintf(stderr, "%s: ", prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry '%s --help'.\n", prog);
  exit(2);
}

/* "4096", "0x1000", "64K", "2M", "1G", "1T" (binary units). */
static int parse_size(const char *s, uint64_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s) return -1;
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: break;
  }
  if (*end == 'i' || *end == 'B') end++;
  if (*end == 'B') end++;
  if (*end) return -1;
  if (shift && v > (UINT64_MAX >> shift)) return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

static void print_failure(const char *what)
{
  const dk_failure *f = dk_last_failure();
  printf("  %-10s refused: %s (%s), constraint %s\n             %s\n", what, dk_ioreturn_name(f->code),
         dk_ioreturn_string(f->code), dk_constraint_name(f->constraint), f->text);
}

/* ---- caps ---------------------------------------------------------------------------- */
static int cmd_caps(int argc, char **argv)
{
  int json = argc > 1 && !strcmp(argv[1], "--json");
  const dk_caps *c = dk_capabilities();
  if (json) {
    printf("{\"page_size\":%u,\"root\":%s,\"pagemap_frames\":%s,\"pin_method\":\"%s\","
           "\"compact_unevictable_allowed\":%d,\"ram_top\":%" PRIu64 ",\"memlock_limit\":%" PRIu64 "}\n",
           c->page_size, c->root ? "true" : "false", c->pagemap_frames ? "true" : "false",
           dk_pin_method_name(c->pin_method), c->compact_unevictable_allowed, c->ram_top, c->memlock_limit);
    return 0;
  }
  printf("page size          %u\n", c->page_size);
  printf("running as root    %s\n", c->root ? "yes" : "no");
  printf("frame numbers      %s\n", c->pagemap_frames ? "visible in /proc/self/pagemap"
                                                      : "hidden (needs root / CAP_SYS_ADMIN)");
  printf("pinning            %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  printf("top of RAM         0x%" PRIx64 " (%.1f GiB)\n", c->ram_top, c->ram_top / 1073741824.0);
  if (c->memlock_limit == UINT64_MAX) printf("locked-memory limit unlimited\n");
  else printf("locked-memory limit %" PRIu64 " KiB%s\n", c->memlock_limit >> 10,
              c->root ? " (root is not bound by it)" : "");
  return 0;
}

/* ---- one buffer ---------------------------------------------------------------------- */
typedef struct seg { uint64_t pa, len; } seg;

/* Walk the segments; returns the count (0 if physical addresses are unavailable). */
static size_t segments(IOBufferMemoryDescriptor *b, seg *out, size_t max)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  IOByteCount off = 0, total = IOMemoryDescriptor_getLength(md);
  size_t n = 0;
  while (off < total && n < max) {
    IOByteCount len = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(md, off, &len, kIOMemoryMapperNone);
    if (!pa) return 0;
    out[n++] = (seg){ pa, len };
    off += len;
  }
  return n;
}

static void show_buffer(IOBufferMemoryDescriptor *b, uint64_t limit, int json)
{
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  static seg segs[4096];
  size_t n = segments(b, segs, 4096);
  uint64_t len = IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b);
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  /* check every promise against the segments, independently of the library's own check */
  int mask_ok = 1, align_ok = 1, contig_ok = 1;
  uint64_t need_align = info.alignment > 1 ? info.alignment : 1;
  for (size_t i = 0; i < n; i++)
    if (limit && segs[i].pa + segs[i].len - 1 > limit) mask_ok = 0;
  if (n && info.contiguous && n != 1) contig_ok = 0;
  if (n && need_align <= (1ull << 30) && (need_align & (need_align - 1)) == 0 && segs[0].pa % need_align) align_ok = 0;
  if (json) {
    printf("{\"capacity\":%zu,\"length\":%" PRIu64 ",\"alignment\":%" PRIu64 ",\"allocation_size\":%" PRIu64
           ",\"physical_limit\":%" PRIu64 ",\"contiguous\":%s,\"pageable\":%s,\"wired\":%s,\"pinned\":%s,"
           "\"provider\":\"%s\",\"virtual_address\":%" PRIu64 ",\"segments\":[",
           (size_t)IOBufferMemoryDescriptor_getCapacity(b), len, info.alignment, info.allocation_size,
           info.physical_limit, info.contiguous ? "true" : "false", info.pageable ? "true" : "false",
           info.wired ? "true" : "false", info.pinned ? "true" : "false", dk_provider_name(info.provider),
           (uint64_t)(uintptr_t)va);
    for (size_t i = 0; i < n; i++)
      printf("%s{\"physical\":%" PRIu64 ",\"length\":%" PRIu64 "}", i ? "," : "", segs[i].pa, segs[i].len);
    printf("],\"verified\":%s}\n", n && mask_ok && align_ok && contig_ok ? "true" : "false");
    return;
  }
  printf("    capacity %zu, alignment 0x%" PRIx64 ", allocated %" PRIu64 " bytes, provider %s, %s%s\n",
         (size_t)IOBufferMemoryDescriptor_getCapacity(b), info.alignment, info.allocation_size,
         dk_provider_name(info.provider), info.wired ? "wired" : "not wired", info.pinned ? ", pinned" : "");
  printf("    virtual address %p%s\n", va, va ? "" : " (task NULL: mapped nowhere; use map())");
  if (!n) {
    const dk_failure *f = dk_last_failure();
    printf("    no physical segments: %s\n", f->text);
    return;
  }
  size_t show = n > 6 ? 6 : n;
  for (size_t i = 0; i < show; i++)
    printf("    segment %zu: physical 0x%09" PRIx64 "  length %" PRIu64 "\n", i, segs[i].pa, segs[i].len);
  if (n > show) printf("    ... %zu segments in all\n", n);
  printf("    verified through pagemap: %s%s%s\n", limit ? (mask_ok ? "below the limit, " : "ABOVE THE LIMIT, ") : "",
         align_ok ? "aligned" : "MISALIGNED", info.contiguous ? (contig_ok ? ", one contiguous run" : ", NOT CONTIGUOUS") : "");
}

static int cmd_alloc(int argc, char **argv)
{
  static const struct option opts[] = {
    { "mask", required_argument, 0, 'm' },  { "align", required_argument, 0, 'a' },
    { "contiguous", no_argument, 0, 'c' },  { "task", required_argument, 0, 't' },
    { "direction", required_argument, 0, 'd' }, { "pageable", no_argument, 0, 'p' },
    { "json", no_argument, 0, 'j' },        { "hold", no_argument, 0, 'H' },
    { "help", no_argument, 0, 'h' },        { 0, 0, 0, 0 },
  };
  uint64_t mask = 0, align = 1, size = 0;
  int contiguous = 0, json = 0, hold = 0, ch;
  IOOptionBits options = kIODirectionInOut;
  task_t task = kernel_task;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (ch) {
    case 'm': if (parse_size(optarg, &mask)) usage_error("--mask: '%s' is not a number", optarg); break;
    case 'a': if (parse_size(optarg, &align)) usage_error("--align: '%s' is not a size", optarg); break;
    case 'c': contiguous = 1; break;
    case 't':
      if (!strcmp(optarg, "kernel")) task = kernel_task;
      else if (!strcmp(optarg, "null")) task = NULL;
      else usage_error("--task: '%s' is not kernel or null", optarg);
      break;
    case 'd':
      options &= ~kIOMemoryDirectionMask;
      if (!strcmp(optarg, "in")) options |= kIODirectionIn;
      else if (!strcmp(optarg, "out")) options |= kIODirectionOut;
      else if (!strcmp(optarg, "inout")) options |= kIODirectionInOut;
      else if (!strcmp(optarg, "none")) options |= kIODirectionNone;
      else usage_error("--direction: '%s' is not in, out, inout or none", optarg);
      break;
    case 'p': options |= kIOMemoryPageable; break;
    case 'j': json = 1; break;
    case 'H': hold = 1; break;
    case 'h':
      printf("usage: %s alloc [--mask M] [--align A] [--contiguous] [--task kernel|null]\n"
             "        [--direction in|out|inout|none] [--pageable] [--json] [--hold] SIZE\n"
             "SIZE, M and A take decimal, 0x hex and K/M/G/T units (64K, 2M).\n", prog);
      return 0;
    default: usage_error("alloc: unknown flag '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc - 1) usage_error("alloc: %s", optind >= argc ? "SIZE is missing" : "too many arguments");
  if (parse_size(argv[optind], &size)) usage_error("alloc: '%s' is not a size", argv[optind]);
  if (contiguous) options |= kIOMemoryPhysicallyContiguous;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
  if (!b || !IOBufferMemoryDescriptor_initWithPhysicalMask(b, task, options, size, align, mask)) {
    const dk_failure *f = dk_last_failure();
    fprintf(stderr, "%s: alloc failed: %s (%s), constraint %s: %s\n", prog, dk_ioreturn_name(f->code),
            dk_ioreturn_string(f->code), dk_constraint_name(f->constraint), f->text);
    OSSafeReleaseNULL(b);
    return 1;
  }
  if (options & kIOMemoryPageable) IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone);
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  if (!json) printf("buffer of %" PRIu64 " bytes\n", size);
  show_buffer(b, info.physical_limit, json);
  if (hold) {
    fprintf(stderr, "holding the buffer (pid %d); press Enter to release\n", (int)getpid());
    (void)getchar();
  }
  if (options & kIOMemoryPageable) IOMemoryDescriptor_complete((IOMemoryDescriptor *)b, kIODirectionNone);
  OSObject_release(b);
  return 0;
}

/* ---- demo ----------------------------------------------------------------------------- */
static IOBufferMemoryDescriptor *demo_step(const char *title, IOBufferMemoryDescriptor *b, uint64_t limit)
{
  printf("\n%s\n", title);
  if (!b) { print_failure("buffer"); return NULL; }
  show_buffer(b, limit, 0);
  return b;
}

static int cmd_demo(void)
{
  const dk_caps *c = dk_capabilities();
  printf("dmakit demo: IOBufferMemoryDescriptor on Linux\n==============================================\n");
  cmd_caps(0, NULL);
  if (!c->pagemap_frames)
    printf("\nNot root: buffers work, but physical addresses stay hidden. Run as root to see them.\n");

  IOBufferMemoryDescriptor *a = demo_step(
      "1. withCapacity(4096, kIODirectionInOut, contiguous): one page, physically contiguous",
      IOBufferMemoryDescriptor_withCapacity(c->page_size, kIODirectionInOut, true), 0);
  IOBufferMemoryDescriptor *b = demo_step(
      "2. inTaskWithOptions(kernel_task, kIODirectionIn, 64 KiB): scattered 4K frames, pinned",
      IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIODirectionIn, 64 * 1024, 1), 0);

  /* a mask the host can meet: just above the highest frame buffer 2 received */
  uint64_t top = 0;
  seg s[16];
  size_t n = b ? segments(b, s, 16) : 0;
  for (size_t i = 0; i < n; i++) if (s[i].pa + s[i].len > top) top = s[i].pa + s[i].len;
  if (top) {
    uint64_t mask = 1;
    while (mask < top + (top >> 2)) mask = (mask << 1) | 1;
    char title[160];
    snprintf(title, sizeof title,
             "3. inTaskWithPhysicalMask(kernel_task, 0, 16 KiB, 0x%" PRIx64 "): a mask chosen above the frames seen", mask);
    IOBufferMemoryDescriptor *m = demo_step(title, IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 16384, mask), mask);
    OSSafeReleaseNULL(m);
  }
  IOBufferMemoryDescriptor *m32 = demo_step(
      "4. inTaskWithPhysicalMask(kernel_task, 0, 4 KiB, 0xFFFFFFFF): a 32-bit device",
      IOBufferMemoryDescriptor_inTaskWithPhysicalMask(kernel_task, 0, 4096, 0xFFFFFFFFull), 0xFFFFFFFFull);
  IOBufferMemoryDescriptor *big = demo_step(
      "5. withCapacity(256 KiB, kIODirectionOut, contiguous): more than one page, contiguous",
      IOBufferMemoryDescriptor_withCapacity(256 * 1024, kIODirectionOut, true), 0);

  printf("\n6. inTaskWithOptions(NULL, 0, 8 KiB): the seed page's unmapped DMA buffer\n");
  IOBufferMemoryDescriptor *nb = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, 0, 8192, 1);
  if (nb) {
    show_buffer(nb, 0, 0);
    IOMemoryMap *map = IOMemoryDescriptor_map((IOMemoryDescriptor *)nb, kIOMapReadOnly);
    printf("    map(kIOMapReadOnly) -> a read-only view at 0x%" PRIx64 " (%" PRIu64 " bytes)\n",
           (uint64_t)IOMemoryMap_getAddress(map), (uint64_t)IOMemoryMap_getLength(map));
    OSSafeReleaseNULL(map);
  } else print_failure("buffer");

  printf("\n7. a pageable buffer: no frames until prepare()\n");
  IOBufferMemoryDescriptor *pg = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 8192, 1);
  if (pg) {
    IOByteCount len;
    if (!IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)pg, 0, &len, 0))
      printf("    before prepare: %s\n", dk_last_failure()->text);
    IOMemoryDescriptor_prepare((IOMemoryDescriptor *)pg, kIODirectionNone);
    printf("    after prepare:\n");
    show_buffer(pg, 0, 0);
    IOMemoryDescriptor_complete((IOMemoryDescriptor *)pg, kIODirectionNone);
  }
  OSSafeReleaseNULL(pg);
  OSSafeReleaseNULL(nb);
  OSSafeReleaseNULL(big);
  OSSafeReleaseNULL(m32);
  OSSafeReleaseNULL(b);
  OSSafeReleaseNULL(a);
  printf("\nEvery physical promise above was read back through /proc/self/pagemap. Requests that\n"
         "4K pages cannot meet fail with the reason; the hugepage pool will meet contiguity and\n"
         "large alignment, and a low-memory search will meet low masks.\n");
  return 0;
}

static void help(void)
{
  printf("usage: %s <command> [flags]\n\n"
         "commands:\n"
         "  caps [--json]      what this machine allows: frame numbers, pinning, top of RAM\n"
         "  alloc [flags] SIZE allocate one buffer and show its segments (alloc --help)\n"
         "  demo               allocate several constrained buffers and show where they landed\n", prog);
}

int main(int argc, char **argv)
{
  if (argc < 2) { help(); return 2; }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) { help(); return 0; }
  if (!strcmp(argv[1], "caps")) return cmd_caps(argc - 1, argv + 1);
  if (!strcmp(argv[1], "alloc")) return cmd_alloc(argc - 1, argv + 1);
  if (!strcmp(argv[1], "demo")) return cmd_demo();
  usage_error("unknown command '%s'", argv[1]);
  return 2;
}
