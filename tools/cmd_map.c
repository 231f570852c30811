/* tools/cmd_map.c: `dmakit map`: a picture of physical memory: the RAM ranges, the hugepages
 * the pool is known to hold, every live buffer in its own colour, each buffer's mask line and
 * the 4 GiB line, plus a close-up of each 2 MiB window a buffer landed in. Buffers live only
 * in the process that made them, so map makes its own (demo ones, or --alloc SPEC).
 * The pool's runs come from dk_pool_get_runs(). */
#include "canvas.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFS 16
#define MAX_SEGS 512
#define HUGE_2M  (2ull << 20)

static const uint32_t palette[8] = { 0x1f77b4, 0xd62728, 0x2ca02c, 0x9467bd, 0x8c564b, 0xe377c2, 0x17becf, 0xbcbd22 };

static const char *const default_specs[] = {
  "64K,pool=0,label=4K pages",
  "256K,contiguous,label=contiguous 256K",
  "1M,align=1M,label=aligned 1M",
  "32K,contiguous,boundary=64K,label=64K boundary",
  "16K,mask=36bit,label=36-bit device",
  "4K,mask=32bit,label=32-bit device",
};

typedef struct mbuf {
  dk_req req;
  IOBufferMemoryDescriptor *b;
  dk_buffer_info info;
  seg s[MAX_SEGS];
  size_t n, total;
  verdict v;
  dk_failure fail;
  uint32_t color;
} mbuf;

typedef struct window { uint64_t base; bool pool; int nbuf; } window;

static void map_help(void)
{
  printf("usage: %s map [--alloc SPEC]... [-o FILE.svg|FILE.png|-] [--png FILE.png] [--json]\n\n"
         "Draws physical memory: RAM ranges (/proc/iomem as root, else /proc/zoneinfo zones), the\n"
         "pool's hugepages, every buffer in its own colour, each buffer's mask line and the 4 GiB\n"
         "line, and a close-up of each 2 MiB window holding a buffer. Buffers exist only in the\n"
         "process that made them, so map allocates its own: a demo set, or one per --alloc.\n\n"
         "  --alloc SPEC   SIZE[,mask=M][,align=A][,boundary=B][,low=L][,contiguous][,pageable]\n"
         "                 [,task=kernel|null][,direction=D][,cache=C][,pool=0|1][,label=TEXT]\n"
         "                 e.g. --alloc 2M,contiguous --alloc 4K,mask=32bit (repeatable, up to %d)\n"
         "  -o, --output FILE   the picture, SVG or PNG by FILE's extension (.svg, .png; default\n"
         "                 dmakit-map.svg; - for SVG on stdout); PNG needs cairo at build time\n"
         "                 (libcairo2-dev)\n"
         "  --png FILE     also a PNG (FILE ends in .png; needs cairo)\n"
         "  --json         the buffers and the layout as JSON on stdout instead of the text summary\n",
         prog, MAX_BUFS);
}

/* The picture format a file name asks for, by its extension (any case): 's' for .svg, 'p'
 * for .png, 0 for anything else. "-" is SVG on stdout. */
static int format_of(const char *path)
{
  if (!strcmp(path, "-")) return 's';
  const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
  if (!dot || (slash && dot < slash)) return 0;
  if (!strcasecmp(dot, ".svg")) return 's';
  if (!strcasecmp(dot, ".png")) return 'p';
  return 0;
}

/* x position of a physical address on the overview bar */
static double xpos(uint64_t pa, uint64_t top, double x0, double w) { return x0 + (double)pa / (double)top * w; }

static const char *hex(char buf[24], uint64_t v) { snprintf(buf, 24, "0x%" PRIx64, v); return buf; }

/* The 2 MiB windows holding segments: the pool's first, then at most 4 of scattered 4K pages. */
static size_t windows_of(const mbuf *bufs, int nb, window *w, size_t max, size_t *dropped)
{
  size_t n = 0, n4k = 0;
  *dropped = 0;
  for (int pass = 0; pass < 2; pass++)
  for (int i = 0; i < nb; i++) {
    bool pool = bufs[i].info.provider == DK_PROVIDER_POOL || bufs[i].info.provider == DK_PROVIDER_POOL_SLAB;
    if (pool != (pass == 0)) continue;
    for (size_t k = 0; k < bufs[i].n; k++) {
      for (uint64_t a = bufs[i].s[k].cpu & ~(HUGE_2M - 1); a < bufs[i].s[k].cpu + bufs[i].s[k].len; a += HUGE_2M) {
        size_t j = 0;
        while (j < n && w[j].base != a) j++;
        if (j == n) {
          if (n == max || (!pool && n4k == 4)) { (*dropped)++; continue; }
          if (!pool) n4k++;
          w[n++] = (window){ a, pool, 0 };
        }
        w[j].pool |= pool;
        w[j].nbuf++;
      }
    }
  }
  return n;
}

static void draw(canvas *cv, mbuf *bufs, int nb, const mem_range *mem, size_t nmem, const char *mem_source,
                 const dk_pool_stats *st, const dk_caps *caps)
{
  const double W = 1100, x0 = 70, bw = 960;
  char a[32], a2[32], h1[24], h2[32];
  window win[12];
  size_t dropped = 0, nwin = windows_of(bufs, nb, win, 12, &dropped);
  double H = 300 + nwin * 46 + (dropped ? 20 : 0) + nb * 22 + 40;
  canvas_init(cv, W, H);
  canvas_rect(cv, 0, 0, W, H, 0xffffff, NO_COLOR);
  char host[64] = "this machine";
  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  canvas_text(cv, x0, 30, 18, 0x222222, ANCHOR_START, "dmakit map: physical memory of %s", host)->bold = true;
  canvas_text(cv, x0, 50, 12, 0x555555, ANCHOR_START, "RAM from %s; top of RAM %s (%s); pool holds %s in %" PRIu64
              " runs; %d buffers", mem_source, hex(h1, caps->ram_top), fmt_size(a, caps->ram_top),
              fmt_size((char[32]){ 0 }, st->bytes_pool_2m + st->bytes_pool_1g), st->runs, nb);

  /* ---- overview ---- */
  uint64_t top = caps->ram_top;
  for (size_t i = 0; i < nmem; i++) if (mem[i].end + 1 > top) top = mem[i].end + 1;
  if (top < (5ull << 30)) top = 5ull << 30;       /* the 4 GiB line always fits */
  const double y = 122, bh = 56;
  canvas_text(cv, x0, y - 44, 13, 0x222222, ANCHOR_START, "Physical address space, 0 to %s", hex(h1, top))->bold = true;
  shape *bg = canvas_rect(cv, x0, y, bw, bh, 0xf2f2f2, 0x999999);
  snprintf(bg->text, sizeof bg->text, "no RAM (holes, devices)");
  for (size_t i = 0; i < nmem; i++) {
    double x = xpos(mem[i].start, top, x0, bw), w = xpos(mem[i].end + 1, top, x0, bw) - x;
    shape *r = canvas_rect(cv, x, y, w < 1 ? 1 : w, bh, 0xd9ead3, 0x6aa84f);
    snprintf(r->cls, sizeof r->cls, "ram");
    snprintf(r->text, sizeof r->text, "%s %s-%s (%s)", mem[i].name, hex(h1, mem[i].start), hex(h2, mem[i].end),
             fmt_size(a, mem[i].end - mem[i].start + 1));
  }
  /* every run of hugepages the pool holds */
  (void)st;
  size_t nruns = 0;
  if (dk_pool_get_runs(NULL, 0, &nruns) == kIOReturnSuccess && nruns) {
    dk_pool_run *runs = calloc(nruns, sizeof *runs);
    if (runs && dk_pool_get_runs(runs, nruns, &nruns) == kIOReturnSuccess) {
      for (size_t i = 0; i < nruns; i++) {
        double x = xpos(runs[i].physical, top, x0, bw), w = xpos(runs[i].physical + runs[i].length, top, x0, bw) - x;
        shape *r = canvas_rect(cv, x, y + 18, w < 3 ? 3 : w, bh - 36, 0xf4a259, NO_COLOR);
        snprintf(r->cls, sizeof r->cls, "pool");
        snprintf(r->text, sizeof r->text, "pool run %s, %s of %s pages, %s free", hex(h1, runs[i].physical),
                 fmt_size(a, runs[i].length), fmt_size(h2, runs[i].page_size), fmt_size(a2, runs[i].bytes_free));
      }
    }
    free(runs);
  }
  /* every reserved page (dmakit reserve), in its own colour: claimed pages darker */
  size_t nres = 0;
  if (dk_reserve_pages(NULL, 0, &nres) == kIOReturnSuccess && nres) {
    dk_reserve_page *pages = calloc(nres, sizeof *pages);
    if (pages && dk_reserve_pages(pages, nres, &nres) == kIOReturnSuccess) {
      for (size_t i = 0; i < nres; i++) {
        double x = xpos(pages[i].frame, top, x0, bw);
        shape *r = canvas_rect(cv, x, y + 4, 3, bh - 8, pages[i].claimed ? 0x5b3a9e : 0x9b7fd4, NO_COLOR);
        snprintf(r->cls, sizeof r->cls, "reserved");
        snprintf(r->text, sizeof r->text, "reserved page %s (2 MiB, below mask %s)%s", hex(h1, pages[i].frame),
                 hex(h2, pages[i].mask), pages[i].claimed ? ", held by a running process" : ", free");
      }
    }
    free(pages);
  }
  /* buffers: a tick per segment, a numbered marker above */
  for (int i = 0; i < nb; i++) {
    mbuf *m = &bufs[i];
    if (!m->n) continue;
    for (size_t k = 0; k < m->n; k++) {
      double x = xpos(m->s[k].cpu, top, x0, bw), w = (double)m->s[k].len / (double)top * bw;
      shape *r = canvas_rect(cv, x, y + 4, w < 2 ? 2 : w, bh - 8, m->color, NO_COLOR);
      if (k == 0) snprintf(r->id, sizeof r->id, "buffer-%d", i + 1);
      snprintf(r->cls, sizeof r->cls, "buffer");
      snprintf(r->text, sizeof r->text, "buffer %d segment %zu: %s, %s", i + 1, k, hex(h1, m->s[k].cpu), fmt_size(a, m->s[k].len));
    }
    double x = xpos(m->s[0].cpu, top, x0, bw);
    double my = y - 6 - (i % 3) * 12;
    canvas_line(cv, x + 1, my + 2, x + 1, y, m->color, false);
    canvas_text(cv, x + 3, my, 10, m->color, ANCHOR_START, "%d", i + 1)->bold = true;
  }
  /* axis */
  uint64_t step = 1ull << 30;
  while (top / step > 12) step <<= 1;
  for (uint64_t t = 0; t <= top; t += step) {
    double x = xpos(t, top, x0, bw);
    canvas_line(cv, x, y + bh, x, y + bh + 5, 0x666666, false);
    canvas_text(cv, x, y + bh + 17, 10, 0x666666, ANCHOR_MIDDLE, "%" PRIu64 "G", t >> 30);
  }
  /* the 4 GiB line and each distinct mask line */
  double y_lines = y + bh + 28;
  double x4 = xpos(1ull << 32, top, x0, bw);
  shape *l4 = canvas_line(cv, x4, y - 40, x4, y_lines + 8, 0xcc0000, true);
  l4->stroke_width = 1.5;
  snprintf(l4->cls, sizeof l4->cls, "line-4g");
  canvas_text(cv, x4 + 4, y_lines + 8, 11, 0xcc0000, ANCHOR_START, "4 GiB: 32-bit devices see only the left");
  int nlines = 0;
  for (int i = 0; i < nb; i++) {
    uint64_t mask = bufs[i].req.mask;
    if (!mask || mask == 0xFFFFFFFFull) continue;
    bool seen = false;
    for (int j = 0; j < i; j++) if (bufs[j].req.mask == mask) seen = true;
    if (seen) continue;
    if (mask + 1 >= top) {                      /* beyond the picture: say so at its right edge */
      shape *t = canvas_text(cv, x0 + bw, y_lines + 24 + nlines * 14, 11, bufs[i].color, ANCHOR_END,
                             "mask %s (buffer %d) lies beyond the top of RAM: all of it is below", hex(h1, mask), i + 1);
      snprintf(t->id, sizeof t->id, "mask-%d", i + 1);
      shape *l = canvas_line(cv, x0 + bw, y - 40, x0 + bw, y + bh, bufs[i].color, true);
      snprintf(l->cls, sizeof l->cls, "mask");
      nlines++;
      continue;
    }
    double x = xpos(mask + 1, top, x0, bw);
    shape *l = canvas_line(cv, x, y - 40, x, y_lines + 24 + nlines * 14, bufs[i].color, true);
    snprintf(l->cls, sizeof l->cls, "mask");
    canvas_text(cv, x + 4, y_lines + 24 + nlines * 14, 11, bufs[i].color, ANCHOR_START, "mask %s (buffer %d)", hex(h1, mask), i + 1);
    nlines++;
  }
  for (int i = 0; i < nb; i++)
    if (bufs[i].req.mask == 0xFFFFFFFFull) {
      canvas_text(cv, x4 - 4, y_lines + 24, 11, bufs[i].color, ANCHOR_END, "mask 0xffffffff (buffer %d)", i + 1);
      break;
    }

  /* ---- close-ups: each 2 MiB window holding a buffer ---- */
  double yc = 262;
  canvas_text(cv, x0, yc, 13, 0x222222, ANCHOR_START, "Close-up: each 2 MiB window a buffer landed in")->bold = true;
  yc += 14;
  if (!nwin) canvas_text(cv, x0, yc + 16, 12, 0x555555, ANCHOR_START, "%s",
                         caps->pagemap_frames ? "no buffer has physical segments" : "no physical addresses: run as root to see where buffers land");
  for (size_t i = 0; i < nwin; i++) {
    double wy = yc + i * 46;
    canvas_text(cv, x0, wy + 12, 11, 0x333333, ANCHOR_START, "%s - %s  %s", hex(h1, win[i].base),
                hex(h2, win[i].base + HUGE_2M - 1), win[i].pool ? "a hugepage of the pool" : "4K pages from the kernel");
    shape *r = canvas_rect(cv, x0, wy + 17, bw, 20, win[i].pool ? 0xfde3c8 : 0xeef5ea, 0x999999);
    snprintf(r->cls, sizeof r->cls, win[i].pool ? "pool" : "ram");
    for (int b = 0; b < nb; b++)
      for (size_t k = 0; k < bufs[b].n; k++) {
        uint64_t s0 = bufs[b].s[k].cpu, s1 = s0 + bufs[b].s[k].len;
        uint64_t w0 = win[i].base, w1 = w0 + HUGE_2M;
        if (s1 <= w0 || s0 >= w1) continue;
        uint64_t c0 = s0 > w0 ? s0 : w0, c1 = s1 < w1 ? s1 : w1;
        double x = x0 + (double)(c0 - w0) / HUGE_2M * bw, w = (double)(c1 - c0) / HUGE_2M * bw;
        shape *sr = canvas_rect(cv, x, wy + 17, w < 1.5 ? 1.5 : w, 20, bufs[b].color, NO_COLOR);
        snprintf(sr->cls, sizeof sr->cls, "buffer");
        snprintf(sr->text, sizeof sr->text, "buffer %d: %s, %s", b + 1, hex(h1, s0), fmt_size(a, bufs[b].s[k].len));
      }
  }
  double yl = yc + nwin * 46 + 10;
  if (dropped) {
    canvas_text(cv, x0, yl + 6, 11, 0x777777, ANCHOR_START, "... and %zu more windows not shown", dropped);
    yl += 20;
  }

  /* ---- legend ---- */
  canvas_text(cv, x0, yl + 14, 13, 0x222222, ANCHOR_START, "Buffers")->bold = true;
  for (int i = 0; i < nb; i++) {
    mbuf *m = &bufs[i];
    double ly = yl + 28 + i * 22;
    char desc[160];
    dk_req_describe(&m->req, desc, sizeof desc);
    shape *sw = canvas_rect(cv, x0, ly, 14, 14, m->b ? m->color : 0xffffff, m->color);
    snprintf(sw->id, sizeof sw->id, "legend-%d", i + 1);
    snprintf(sw->cls, sizeof sw->cls, "legend");
    snprintf(sw->text, sizeof sw->text, "buffer %d: %.120s", i + 1, m->req.label[0] ? m->req.label : desc);
    shape *t;
    if (!m->b)
      t = canvas_text(cv, x0 + 22, ly + 11, 11, 0x777777, ANCHOR_START, "%d. %s: %s - refused (%s): %.70s", i + 1,
                      m->req.label[0] ? m->req.label : "buffer", desc, dk_constraint_name(m->fail.constraint), m->fail.text);
    else if (!m->n)
      t = canvas_text(cv, x0 + 22, ly + 11, 11, 0x333333, ANCHOR_START, "%d. %s: %s - %s, no physical address visible",
                      i + 1, m->req.label[0] ? m->req.label : "buffer", desc, dk_provider_name(m->info.provider));
    else
      t = canvas_text(cv, x0 + 22, ly + 11, 11, 0x333333, ANCHOR_START, "%d. %s: %s - %s, %zu segment%s from %s, %s",
                      i + 1, m->req.label[0] ? m->req.label : "buffer", desc, dk_provider_name(m->info.provider), m->total,
                      m->total == 1 ? "" : "s", hex(h1, m->s[0].cpu), m->v.all ? "every constraint verified" : "A CONSTRAINT IS BROKEN");
    snprintf(t->id, sizeof t->id, "label-%d", i + 1);
  }
  double yk = yl + 36 + nb * 22;
  canvas_rect(cv, x0, yk, 14, 10, 0xd9ead3, 0x6aa84f);
  canvas_text(cv, x0 + 20, yk + 9, 10, 0x555555, ANCHOR_START, "RAM");
  canvas_rect(cv, x0 + 70, yk, 14, 10, 0xf2f2f2, 0x999999);
  canvas_text(cv, x0 + 90, yk + 9, 10, 0x555555, ANCHOR_START, "no RAM");
  canvas_rect(cv, x0 + 160, yk, 14, 10, 0xf4a259, NO_COLOR);
  canvas_text(cv, x0 + 180, yk + 9, 10, 0x555555, ANCHOR_START,
              "the pool's runs of hugepages");
  canvas_rect(cv, x0 + 360, yk, 14, 10, 0x9b7fd4, NO_COLOR);
  canvas_text(cv, x0 + 380, yk + 9, 10, 0x555555, ANCHOR_START, "reserved pages (darker: held by a process)");
}

int cmd_map(int argc, char **argv)
{
  static const struct option opts[] = {
    { "alloc", required_argument, 0, 'a' }, { "output", required_argument, 0, 'o' },
    { "png", required_argument, 0, 'p' },   { "json", no_argument, 0, 'j' },
    { "help", no_argument, 0, 'h' },        { 0, 0, 0, 0 },
  };
  static mbuf bufs[MAX_BUFS];
  int nb = 0, json = 0, ch;
  const char *out_path = "dmakit-map.svg", *svg_path = NULL, *png_path = NULL, *png_also = NULL;
  char why[200];
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
    switch (ch) {
    case 'a':
      if (nb >= MAX_BUFS) usage_error("map", "--alloc: at most %d buffers", MAX_BUFS);
      if (dk_req_parse_spec(&bufs[nb].req, optarg, why, sizeof why)) usage_error("map", "--alloc '%s': %s", optarg, why);
      nb++;
      break;
    case 'o': out_path = optarg; break;
    case 'p': png_also = optarg; break;
    case 'j': json = 1; break;
    case 'h': map_help(); return EXIT_OK;
    case ':': usage_error("map", "flag '%s' needs a value", argv[optind - 1]);
    default: usage_error("map", "unknown flag '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) usage_error("map", "unexpected argument '%s'", argv[optind]);
  /* the format comes from the name: an SVG is never written into a .png, nor the reverse */
  switch (format_of(out_path)) {
  case 's': svg_path = out_path; break;
  case 'p': png_path = out_path; break;
  default:
    usage_error("map", "-o '%s': the picture's format comes from the file's extension: .svg or .png (- for SVG on "
                "stdout)", out_path);
  }
  if (png_also && format_of(png_also) != 'p') usage_error("map", "--png '%s': the file name must end in .png", png_also);
  if ((png_path || png_also) && !canvas_png_available())
    usage_error("map", "%s '%s': this dmakit was built without cairo, so it cannot write PNG (install libcairo2-dev "
                "and rebuild, or write .svg)", png_path ? "-o" : "--png", png_path ? png_path : png_also);
  if (png_path && png_also && !strcmp(png_path, png_also)) png_also = NULL;
  if (!png_path) {
    png_path = png_also;
    png_also = NULL;
  }
  if (!nb)
    for (size_t i = 0; i < sizeof default_specs / sizeof *default_specs; i++)
      dk_req_parse_spec(&bufs[nb++].req, default_specs[i], why, sizeof why);

  const dk_caps *caps = dk_capabilities();
  for (int i = 0; i < nb; i++) {
    mbuf *m = &bufs[i];
    m->color = palette[i % 8];
    m->b = dk_req_create(&m->req, NULL);
    if (!m->b) { m->fail = req_failure; continue; }
    dk_buffer_get_info(m->b, &m->info);
    m->n = segments(m->b, m->s, MAX_SEGS, &m->total);
    m->v = verify(&m->req, &m->info, m->s, m->n);
  }
  dk_pool_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  dk_pool_get_stats(&st);
  mem_range mem[64];
  const char *mem_source = "none";
  size_t nmem = memory_layout(mem, 64, &mem_source);

  canvas cv;
  draw(&cv, bufs, nb, mem, nmem, mem_source, &st, caps);
  int rc = EXIT_OK;
  if (svg_path) {
    FILE *f = strcmp(svg_path, "-") ? fopen(svg_path, "w") : stdout;
    if (!f || canvas_write_svg(&cv, f) || (f != stdout && fclose(f))) {
      errorf("map: cannot write %s: %s", svg_path, strerror(errno));
      rc = EXIT_FAIL;
    }
  }
  const char *pngs[2] = { png_path, png_also };
  for (int i = 0; i < 2; i++) {
    const char *png_why = NULL;
    if (pngs[i] && canvas_write_png(&cv, pngs[i], &png_why)) {
      errorf("map: cannot write %s: %s", pngs[i], png_why);
      rc = EXIT_FAIL;
    }
  }
  canvas_free(&cv);

  bool svg_stdout = svg_path && !strcmp(svg_path, "-");
  FILE *out = svg_stdout ? stderr : stdout;                /* the SVG may own stdout */
  if (json) {
    jw w;
    jw_init(&w, out);
    jw_obj(&w, NULL);
    jw_str(&w, "svg", svg_path);
    jw_str(&w, "png", png_path);
    jw_obj(&w, "memory");
    jw_str(&w, "source", mem_source);
    jw_u64(&w, "ram_top", caps->ram_top);
    jw_arr(&w, "ranges");
    for (size_t i = 0; i < nmem; i++) {
      jw_obj(&w, NULL);
      jw_u64(&w, "start", mem[i].start);
      jw_u64(&w, "end", mem[i].end);
      jw_str(&w, "name", mem[i].name);
      jw_end_obj(&w);
    }
    jw_end_arr(&w);
    jw_end_obj(&w);
    jw_obj(&w, "pool");
    jw_u64(&w, "bytes_held", st.bytes_pool_2m + st.bytes_pool_1g);
    jw_u64(&w, "runs", st.runs);
    jw_u64(&w, "lowest_frame", st.lowest_frame);
    jw_end_obj(&w);
    size_t nrp = 0;
    dk_reserve_pages(NULL, 0, &nrp);
    jw_u64(&w, "reserved_pages", nrp);
    jw_arr(&w, "buffers");
    for (int i = 0; i < nb; i++) {
      mbuf *m = &bufs[i];
      char desc[160];
      dk_req_describe(&m->req, desc, sizeof desc);
      if (m->b) {
        jw_obj(&w, NULL);
        jw_u64(&w, "index", (uint64_t)i + 1);
        jw_str(&w, "request", desc);
        jw_bool(&w, "ok", true);
        show_buffer_json(&w, "buffer", &m->req, m->b);
        jw_end_obj(&w);
      } else {
        jw_obj(&w, NULL);
        jw_u64(&w, "index", (uint64_t)i + 1);
        jw_str(&w, "request", desc);
        jw_bool(&w, "ok", false);
        jw_obj(&w, "error");
        jw_str(&w, "code", dk_ioreturn_name(m->fail.code));
        jw_str(&w, "constraint", dk_constraint_name(m->fail.constraint));
        jw_str(&w, "text", m->fail.text);
        jw_end_obj(&w);
        jw_end_obj(&w);
      }
    }
    jw_end_arr(&w);
    jw_end_obj(&w);
    jw_done(&w);
  } else {
    char a[32];
    fprintf(out, "physical memory: %zu ranges from %s, top of RAM 0x%" PRIx64 "; pool holds %s in %" PRIu64 " runs\n",
            nmem, mem_source, caps->ram_top, fmt_size(a, st.bytes_pool_2m + st.bytes_pool_1g), st.runs);
    for (int i = 0; i < nb; i++) {
      mbuf *m = &bufs[i];
      char desc[160];
      dk_req_describe(&m->req, desc, sizeof desc);
      fprintf(out, "  %d. %-18s %s: ", i + 1, m->req.label[0] ? m->req.label : "buffer", desc);
      if (!m->b) fprintf(out, "refused (%s): %s\n", dk_constraint_name(m->fail.constraint), m->fail.text);
      else if (!m->n) fprintf(out, "%s, no physical address visible\n", dk_provider_name(m->info.provider));
      else fprintf(out, "%s, %zu segment%s from 0x%" PRIx64 ", %s\n", dk_provider_name(m->info.provider), m->total,
                   m->total == 1 ? "" : "s", m->s[0].cpu, m->v.all ? "verified" : "A CONSTRAINT IS BROKEN");
    }
    if (!svg_stdout)
      fprintf(out, "picture: %s%s%s%s%s\n", svg_path ? svg_path : "", svg_path && png_path ? ", " : "",
              png_path ? png_path : "", png_also ? ", " : "", png_also ? png_also : "");
  }
  for (int i = 0; i < nb; i++) dk_req_release(&bufs[i].req, bufs[i].b);
  return rc;
}
