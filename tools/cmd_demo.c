/* tools/cmd_demo.c: `dmakit demo`, the README demo: what this machine allows, then a series of
 * constrained buffers (4K pages, the hugepage pool, masks, contiguity, alignment, a boundary,
 * a NULL-task buffer, a pageable one), each with its segments checked against its promise,
 * and a closing list of what to look at. */
#include "util.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

typedef struct tally { int made, verified, refused; } tally;

static IOBufferMemoryDescriptor *step(tally *t, const char *title, const char *spec)
{
  dk_req r;
  char why[200];
  dk_req_parse_spec(&r, spec, why, sizeof why);
  const char *call;
  printf("\n%s\n", title);
  IOBufferMemoryDescriptor *b = dk_req_create(&r, &call);
  if (!b) {
    print_failure_text("    ", &req_failure);
    t->refused++;
    return NULL;
  }
  show_buffer_text(&r, b, "    ");
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  seg s[64];
  size_t n = segments(b, s, 64, NULL);
  t->made++;
  if (n && verify(&r, &info, s, n).all) t->verified++;
  dk_req_release(&r, b);
  return b;
}

int cmd_demo(int argc, char **argv)
{
  static const struct option opts[] = { { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
  int ch;
  optind = 1;
  while ((ch = getopt_cli("demo", argc, argv, opts)) != -1) {
    if (ch == 'h') {
      printf("usage: %s demo\n\nAllocates a series of constrained buffers (4K pages, the hugepage pool, masks,\n"
             "contiguity, alignment, a boundary, a NULL task, pageable memory) and shows where each\n"
             "landed, every segment checked against the promise. scripts/demo.sh runs it after\n"
             "`dmakit doctor` and before `dmakit map`.\n", prog);
      return EXIT_OK;
    }
  }
  if (optind < argc) usage_error("demo", "unexpected argument '%s'", argv[optind]);
  const dk_caps *c = dk_capabilities();
  tally t = { 0, 0, 0 };
  char a[32];
  printf("dmakit demo: IOBufferMemoryDescriptor on Linux\n==============================================\n");
  printf("frame numbers       %s\n", c->pagemap_frames ? "visible (root)" : "hidden: run as root to see physical addresses");
  printf("pinning             %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  printf("top of RAM          0x%" PRIx64 " (%s)\n", c->ram_top, fmt_size(a, c->ram_top));
  printf("hugepage pool       %s\n", c->pool_usable ? "usable: wired buffers come from pinned hugepages"
                                                    : "not usable here: 4K pages only");

  step(&t, "1. withCapacity(4 KiB, kIODirectionInOut, contiguous): one page is always contiguous",
       "4K,contiguous");
  step(&t, "2. inTaskWithOptions(kernel_task, kIODirectionIn, 64 KiB) with DMAKIT_POOL=0: scattered 4K frames",
       "64K,direction=in,pool=0");
  step(&t, "3. the same 64 KiB from the hugepage pool: one segment", "64K,direction=in");
  step(&t, "4. inTaskWithPhysicalMask(kernel_task, 0, 16 KiB, 36 bits): a 36-bit device", "16K,mask=36bit");
  step(&t, "5. inTaskWithPhysicalMask(kernel_task, 0, 4 KiB, 0xFFFFFFFF): a 32-bit device", "4K,mask=32bit");
  step(&t, "6. inTaskWithOptions(kernel_task, contiguous, 2 MiB, alignment 2 MiB): beyond what 4K pages promise",
       "2M,contiguous,align=2M");
  step(&t, "7. inTaskWithConstraints(kernel_task, 48 KiB, contiguous, boundary 64 KiB, 36-bit): a descriptor ring",
       "48K,contiguous,boundary=64K,mask=36bit");

  printf("\n8. inTaskWithOptions(NULL, 0, 8 KiB): a DMA buffer mapped nowhere until map()\n");
  IOBufferMemoryDescriptor *nb = IOBufferMemoryDescriptor_inTaskWithOptions(NULL, 0, 8192, 1);
  if (nb) {
    dk_req r;
    dk_req_init(&r);
    r.size = 8192;
    r.task_null = true;
    show_buffer_text(&r, nb, "    ");
    IOMemoryMap *map = IOMemoryDescriptor_map((IOMemoryDescriptor *)nb, kIOMapReadOnly);
    printf("    map(kIOMapReadOnly) -> a read-only view at 0x%" PRIx64 " (%" PRIu64 " bytes)\n",
           (uint64_t)IOMemoryMap_getAddress(map), (uint64_t)IOMemoryMap_getLength(map));
    OSSafeReleaseNULL(map);
    OSSafeReleaseNULL(nb);
    t.made++;
  } else {
    print_failure_text("    ", NULL);
    t.refused++;
  }

  printf("\n9. a pageable buffer: no frames until prepare()\n");
  IOBufferMemoryDescriptor *pg = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryPageable, 8192, 1);
  if (pg) {
    IOByteCount len;
    if (!IOMemoryDescriptor_getPhysicalSegment((IOMemoryDescriptor *)pg, 0, &len, 0))
      printf("    before prepare: %s\n", dk_last_failure()->text);
    IOMemoryDescriptor_prepare((IOMemoryDescriptor *)pg, kIODirectionNone);
    printf("    after prepare:\n");
    dk_req r;
    dk_req_init(&r);
    r.size = 8192;
    r.pageable = true;
    show_buffer_text(&r, pg, "    ");
    IOMemoryDescriptor_complete((IOMemoryDescriptor *)pg, kIODirectionNone);
    OSSafeReleaseNULL(pg);
    t.made++;
  }

  printf("\nWhat to look at\n");
  printf("  - %d buffers made, %d with physical segments checked against every promise (read back\n"
         "    through /proc/self/pagemap, not taken from the library), %d refused.\n", t.made, t.verified, t.refused);
  printf("  - A refusal names the constraint and the reason (dk_last_failure()): a buffer is never\n"
         "    handed out broken.\n");
  printf("  - Steps 2 and 3: 4K pages scatter; the pool gives one contiguous segment.\n");
  printf("  - Step 8: a NULL-task buffer has no address here but has frames and can be mapped.\n");
  printf("  - Next: `dmakit doctor` (what to fix), `dmakit map` (the picture), `dmakit alloc --help`.\n");
  return EXIT_OK;
}
