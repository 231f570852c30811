/* tools/cmd_caps.c: `dmakit caps`: the library's own capability probe (dk_capabilities),
 * printed as it is. `dmakit doctor` goes further and says what to fix. */
#include "util.h"

#include <getopt.h>
#include <inttypes.h>

int cmd_caps(int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, 0, 'j' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
  };
  int json = 0, ch;
  optind = 1;
  while ((ch = getopt_cli("caps", argc, argv, opts)) != -1) {
    if (ch == 'j') json = 1;
    else if (ch == 'h') {
      printf("usage: %s caps [--json]\n\nWhat dk_capabilities() found: page size, root, frame numbers in\n"
             "/proc/self/pagemap, the pin method, top of RAM, the locked-memory limit, hugepage sizes.\n", prog);
      return EXIT_OK;
    }
  }
  if (optind < argc) usage_error("caps", "unexpected argument '%s'", argv[optind]);
  const dk_caps *c = dk_capabilities();
  if (json) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w, NULL);
    jw_u64(&w, "page_size", c->page_size);
    jw_bool(&w, "root", c->root);
    jw_bool(&w, "pagemap_frames", c->pagemap_frames);
    jw_str(&w, "pin_method", dk_pin_method_name(c->pin_method));
    jw_str(&w, "pin_detail", c->pin_detail);
    jw_i64(&w, "compact_unevictable_allowed", c->compact_unevictable_allowed);
    jw_u64(&w, "ram_top", c->ram_top);
    jw_u64(&w, "memlock_limit", c->memlock_limit);
    jw_arr(&w, "hugepage_sizes");
    for (uint32_t i = 0; i < c->hugepage_size_count; i++) jw_u64(&w, NULL, c->hugepage_sizes[i]);
    jw_end_arr(&w);
    jw_bool(&w, "pool_usable", c->pool_usable);
    jw_end_obj(&w);
    jw_done(&w);
    return EXIT_OK;
  }
  char a[32];
  printf("page size           %u\n", c->page_size);
  printf("running as root     %s\n", c->root ? "yes" : "no");
  printf("frame numbers       %s\n", c->pagemap_frames ? "visible in /proc/self/pagemap"
                                                       : "hidden (needs root / CAP_SYS_ADMIN)");
  printf("pinning             %s: %s\n", dk_pin_method_name(c->pin_method), c->pin_detail);
  printf("top of RAM          0x%" PRIx64 " (%.1f GiB)\n", c->ram_top, c->ram_top / 1073741824.0);
  if (c->memlock_limit == UINT64_MAX) printf("locked-memory limit unlimited\n");
  else printf("locked-memory limit %s%s\n", fmt_size(a, c->memlock_limit), c->root ? " (root is not bound by it)" : "");
  printf("hugepage sizes     ");
  for (uint32_t i = 0; i < c->hugepage_size_count; i++) printf(" %s", fmt_size(a, c->hugepage_sizes[i]));
  printf("%s\n", c->hugepage_size_count ? "" : " none");
  printf("hugepage pool       %s\n", c->pool_usable ? "usable (wired buffers come from it; DMAKIT_POOL=0 turns it off)"
                                                    : "not usable here (needs root and hugetlb)");
  return EXIT_OK;
}
