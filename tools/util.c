/* tools/util.c: the shared parts of the dmakit command: usage errors, sizes with units, the
 * buffer request (flags and specs), segments with an independent constraint check, the JSON
 * writer, the progress bar and the procfs/sysfs readers. Public API only. */
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *prog = "dmakit";

/* ---- errors ------------------------------------------------------------------------------ */
void usage_error(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s%s%s: ", prog, cmd ? " " : "", cmd ? cmd : "");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry '%s%s%s --help'.\n", prog, cmd ? " " : "", cmd ? cmd : "");
  exit(EXIT_USAGE);
}

void errorf(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int getopt_cli(const char *cmd, int argc, char **argv, const struct option *opts)
{
  opterr = 0;
  int ch = getopt_long(argc, argv, ":h", opts, NULL);
  if (ch == '?') {
    if (optopt && optopt != '?') usage_error(cmd, "unknown flag '-%c'", optopt);
    usage_error(cmd, "unknown flag '%s'", argv[optind - 1]);
  }
  if (ch == ':') usage_error(cmd, "flag '%s' needs a value", argv[optind - 1]);
  return ch;
}

/* ---- numbers ------------------------------------------------------------------------------ */
int parse_size(const char *s, uint64_t *out)
{
  if (!s || !*s || *s == '-' || isspace((unsigned char)*s)) return -1;
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
  if (shift && *end == 'i') end++;
  if (*end == 'B' || *end == 'b') end++;
  if (*end) return -1;
  if (shift && v > (UINT64_MAX >> shift)) return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

int parse_mask(const char *s, uint64_t *out)
{
  char *end;
  size_t n = strlen(s);
  if (n > 3 && (!strcasecmp(s + n - 3, "bit") || !strcasecmp(s + n - 4 < s ? s : s + n - 4, "-bit"))) {
    errno = 0;
    unsigned long bits = strtoul(s, &end, 10);
    if (errno || end == s || (*end != 'b' && *end != 'B' && *end != '-') || bits < 12 || bits > 64) return -1;
    *out = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    return 0;
  }
  return parse_size(s, out);
}

const char *fmt_size(char buf[32], uint64_t b)
{
  static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  int u = 0;
  uint64_t v = b;
  while (u < 4 && v >= 1024 && v % 1024 == 0) { v /= 1024; u++; }
  if (v >= 1024 * 10 && u < 4) {                 /* not exact: one decimal */
    double d = (double)b;
    u = 0;
    while (u < 4 && d >= 1024) { d /= 1024; u++; }
    snprintf(buf, 32, "%.1f %s", d, unit[u]);
  } else {
    snprintf(buf, 32, "%" PRIu64 " %s", v, unit[u]);
  }
  return buf;
}

/* ---- the buffer request ------------------------------------------------------------------- */
const char *const cache_names[10] = {
  "default", "inhibit", "writethru", "copyback", "writecombine", "copybackinner",
  "posted", "realtime", "postedreordered", "postedcombinedreordered",
};

void dk_req_init(dk_req *r)
{
  memset(r, 0, sizeof *r);
  r->align = 0;
  r->direction = kIODirectionInOut;
  r->cache = -1;
  r->pool = -1;
}

static bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

const char *dk_req_set(dk_req *r, const char *key, const char *v)
{
  static char why[160];
  bool flag = v == NULL;
#define NEED_VALUE() do { if (flag) { snprintf(why, sizeof why, "'%s' needs a value", key); return why; } } while (0)
#define BAD(...) do { snprintf(why, sizeof why, __VA_ARGS__); return why; } while (0)
  if (!strcmp(key, "size")) {
    NEED_VALUE();
    if (parse_size(v, &r->size) || !r->size) BAD("size: '%s' is not a size (try 4096, 0x1000, 64K, 2M)", v);
  } else if (!strcmp(key, "mask")) {
    NEED_VALUE();
    if (parse_mask(v, &r->mask)) BAD("mask: '%s' is not a mask (try 0xFFFFFFFF or 32bit)", v);
  } else if (!strcmp(key, "align")) {
    NEED_VALUE();
    if (parse_size(v, &r->align) || (r->align && !is_pow2(r->align)))
      BAD("align: '%s' is not a power-of-two size", v);
  } else if (!strcmp(key, "boundary")) {
    NEED_VALUE();
    if (parse_size(v, &r->boundary) || !is_pow2(r->boundary)) BAD("boundary: '%s' is not a power-of-two size", v);
  } else if (!strcmp(key, "low")) {
    NEED_VALUE();
    if (parse_size(v, &r->low)) BAD("low: '%s' is not an address", v);
  } else if (!strcmp(key, "max-segment-size")) {
    NEED_VALUE();
    if (parse_size(v, &r->max_segment_size) || !r->max_segment_size) BAD("max-segment-size: '%s' is not a size", v);
  } else if (!strcmp(key, "max-segments")) {
    NEED_VALUE();
    uint64_t n;
    if (parse_size(v, &n) || !n || n > UINT32_MAX) BAD("max-segments: '%s' is not a count", v);
    r->max_segments = (uint32_t)n;
  } else if (!strcmp(key, "contiguous")) {
    if (!flag) BAD("contiguous takes no value");
    r->contiguous = true;
  } else if (!strcmp(key, "pageable")) {
    if (!flag) BAD("pageable takes no value");
    r->pageable = true;
  } else if (!strcmp(key, "task")) {
    NEED_VALUE();
    if (!strcmp(v, "kernel")) r->task_null = false;
    else if (!strcmp(v, "null")) r->task_null = true;
    else BAD("task: '%s' is not kernel or null", v);
  } else if (!strcmp(key, "direction")) {
    NEED_VALUE();
    if (!strcmp(v, "in")) r->direction = kIODirectionIn;
    else if (!strcmp(v, "out")) r->direction = kIODirectionOut;
    else if (!strcmp(v, "inout")) r->direction = kIODirectionInOut;
    else if (!strcmp(v, "none")) r->direction = kIODirectionNone;
    else BAD("direction: '%s' is not in, out, inout or none", v);
  } else if (!strcmp(key, "cache")) {
    NEED_VALUE();
    r->cache = -1;
    for (int i = 0; i < 10; i++) if (!strcmp(v, cache_names[i])) r->cache = i;
    if (r->cache < 0) BAD("cache: '%s' is not default, inhibit, writethru, copyback, writecombine, "
                          "copybackinner, posted, realtime, postedreordered or postedcombinedreordered", v);
  } else if (!strcmp(key, "pool")) {
    NEED_VALUE();
    if (strcmp(v, "0") && strcmp(v, "1")) BAD("pool: '%s' is not 0 or 1", v);
    r->pool = *v - '0';
  } else if (!strcmp(key, "label")) {
    NEED_VALUE();
    snprintf(r->label, sizeof r->label, "%s", v);
  } else {
    BAD("unknown key '%s'", key);
  }
  return NULL;
#undef NEED_VALUE
#undef BAD
}

const char *dk_req_parse_spec(dk_req *r, const char *spec, char *why, size_t cap)
{
  char buf[256];
  dk_req_init(r);
  if (strlen(spec) >= sizeof buf) { snprintf(why, cap, "spec '%.40s...' is too long", spec); return why; }
  snprintf(buf, sizeof buf, "%s", spec);
  char *save = NULL, *tok = strtok_r(buf, ",", &save);
  if (!tok) { snprintf(why, cap, "empty spec"); return why; }
  const char *e = dk_req_set(r, "size", tok);
  while (!e && (tok = strtok_r(NULL, ",", &save))) {
    char *eq = strchr(tok, '=');
    if (eq) *eq = '\0';
    e = dk_req_set(r, tok, eq ? eq + 1 : NULL);
  }
  if (!e && r->pageable && dk_req_needs_constraints(r)) e = "pageable cannot be combined with boundary, low or max-segment(s)";
  if (e) { snprintf(why, cap, "%s", e); return why; }
  return NULL;
}

bool dk_req_needs_constraints(const dk_req *r)
{
  return r->boundary || r->low || r->max_segment_size || r->max_segments;
}

void dk_req_describe(const dk_req *r, char *buf, size_t cap)
{
  char s[32];
  size_t n = (size_t)snprintf(buf, cap, "%s", fmt_size(s, r->size));
#define ADD(...) do { if (n < cap) n += (size_t)snprintf(buf + n, cap - n, __VA_ARGS__); } while (0)
  if (r->mask) ADD(", mask 0x%" PRIx64, r->mask);
  if (r->align) ADD(", align %s", fmt_size(s, r->align));
  if (r->boundary) ADD(", boundary %s", fmt_size(s, r->boundary));
  if (r->low) ADD(", low 0x%" PRIx64, r->low);
  if (r->max_segment_size) ADD(", max segment %s", fmt_size(s, r->max_segment_size));
  if (r->max_segments) ADD(", max %u segments", r->max_segments);
  if (r->contiguous) ADD(", contiguous");
  if (r->pageable) ADD(", pageable");
  if (r->task_null) ADD(", task NULL");
  if (r->cache >= 0) ADD(", cache %s", cache_names[r->cache]);
  if (r->pool == 0) ADD(", 4K pages only");
#undef ADD
}

dk_failure req_failure;

IOBufferMemoryDescriptor *dk_req_create(const dk_req *r, const char **call)
{
  memset(&req_failure, 0, sizeof req_failure);
  IOOptionBits options = r->direction;
  if (r->contiguous) options |= kIOMemoryPhysicallyContiguous;
  if (r->pageable) options |= kIOMemoryPageable;
  if (r->cache >= 0) options |= (IOOptionBits)r->cache << kIOMapCacheShift;   /* as IOKit: kIOMap*Cache */
  task_t task = r->task_null ? NULL : kernel_task;
  long saved_pool = dk_option_get(DK_OPTION_POOL);
  if (r->pool >= 0) dk_option_set(DK_OPTION_POOL, r->pool);
  IOBufferMemoryDescriptor *b = NULL;
  if (dk_req_needs_constraints(r)) {
    dk_constraints c = DK_CONSTRAINTS_NONE;
    c.low = r->low;
    c.high = r->mask;
    c.alignment = r->align;
    c.boundary = r->boundary;
    c.max_segment_size = r->max_segment_size;
    c.max_segments = r->max_segments;
    c.contiguous = r->contiguous;
    if (call) *call = "inTaskWithConstraints";
    b = IOBufferMemoryDescriptor_inTaskWithConstraints(task, options, r->size, &c);
  } else {
    if (call) *call = "initWithPhysicalMask";
    b = IOBufferMemoryDescriptor_alloc();
    if (b && !IOBufferMemoryDescriptor_initWithPhysicalMask(b, task, options, r->size, r->align ? r->align : 1,
                                                            r->mask)) {
      req_failure = *dk_last_failure();        /* kept: the release below may not touch it, */
      OSSafeReleaseNULL(b);                    /* but the reason must survive either way */
    }
  }
  if (!b && req_failure.code == kIOReturnSuccess) req_failure = *dk_last_failure();
  if (b && r->pageable) IOMemoryDescriptor_prepare((IOMemoryDescriptor *)b, kIODirectionNone);
  if (r->pool >= 0) dk_option_set(DK_OPTION_POOL, saved_pool);
  return b;
}

void dk_req_release(const dk_req *r, IOBufferMemoryDescriptor *b)
{
  if (!b) return;
  if (r->pageable) IOMemoryDescriptor_complete((IOMemoryDescriptor *)b, kIODirectionNone);
  OSObject_release(b);
}

/* ---- segments ---------------------------------------------------------------------------- */
size_t segments(IOBufferMemoryDescriptor *b, seg *out, size_t max, size_t *total)
{
  IOMemoryDescriptor *md = (IOMemoryDescriptor *)b;
  IOByteCount off = 0, len = IOMemoryDescriptor_getLength(md);
  size_t n = 0, all = 0;
  while (off < len) {
    IOByteCount l = 0, l2 = 0;
    addr64_t bus = IOMemoryDescriptor_getPhysicalSegment(md, off, &l, 0);
    if (!bus || !l) { if (total) *total = 0; return 0; }
    addr64_t cpu = IOMemoryDescriptor_getPhysicalSegment(md, off, &l2, kIOMemoryMapperNone);
    if (n < max) out[n++] = (seg){ bus, cpu, l };
    all++;
    off += l;
  }
  if (total) *total = all;
  return n;
}

verdict verify(const dk_req *r, const dk_buffer_info *info, const seg *s, size_t n)
{
  verdict v = { -1, -1, -1, -1, -1, false, 0 };
  uint64_t limit = r->mask ? r->mask : info->physical_limit;
  uint64_t align = r->align > 1 ? r->align : 0;
  if (limit) {
    v.mask = n > 0;
    for (size_t i = 0; i < n; i++) if (s[i].cpu + s[i].len - 1 > limit) v.mask = 0;
  }
  if (r->low) {
    v.low = n > 0;
    for (size_t i = 0; i < n; i++) if (s[i].cpu < r->low) v.low = 0;
  }
  if (align) v.align = n > 0 && s[0].cpu % align == 0;
  if (r->contiguous) v.contiguous = n == 1;
  v.device_segments = n;
  if (r->boundary) {
    v.boundary = n > 0;
    uint64_t lines = 0;
    for (size_t i = 0; i < n; i++) {
      uint64_t first = s[i].cpu / r->boundary, last = (s[i].cpu + s[i].len - 1) / r->boundary;
      lines += last - first;
    }
    v.device_segments = n + lines;
    /* a contiguous buffer is one segment: it must not cross a line at all; otherwise the
     * segments are split at the lines (as the device would be programmed) */
    if (r->contiguous && lines) v.boundary = 0;
  }
  v.all = n > 0 && v.mask && v.low && v.align && v.contiguous && v.boundary;
  return v;
}

/* ---- JSON -------------------------------------------------------------------------------- */
void jw_init(jw *w, FILE *f) { w->f = f; w->depth = 0; w->first[0] = true; }

static void jw_quote(FILE *f, const char *v)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

static void jw_sep(jw *w, const char *key)
{
  if (!w->first[w->depth]) fputc(',', w->f);
  w->first[w->depth] = false;
  if (key) {
    jw_quote(w->f, key);
    fputc(':', w->f);
  }
}

static void jw_open(jw *w, const char *key, char c)
{
  jw_sep(w, key);
  fputc(c, w->f);
  if (w->depth < 31) w->depth++;
  w->first[w->depth] = true;
}

void jw_obj(jw *w, const char *key) { jw_open(w, key, '{'); }
void jw_arr(jw *w, const char *key) { jw_open(w, key, '['); }
void jw_end_obj(jw *w) { w->depth--; fputc('}', w->f); }
void jw_end_arr(jw *w) { w->depth--; fputc(']', w->f); }

void jw_str(jw *w, const char *key, const char *v)
{
  jw_sep(w, key);
  if (v) jw_quote(w->f, v);
  else fputs("null", w->f);
}

void jw_u64(jw *w, const char *key, uint64_t v) { jw_sep(w, key); fprintf(w->f, "%" PRIu64, v); }
void jw_i64(jw *w, const char *key, int64_t v) { jw_sep(w, key); fprintf(w->f, "%" PRId64, v); }
void jw_dbl(jw *w, const char *key, double v) { jw_sep(w, key); fprintf(w->f, "%.6g", v); }
void jw_bool(jw *w, const char *key, bool v) { jw_sep(w, key); fputs(v ? "true" : "false", w->f); }
void jw_null(jw *w, const char *key) { jw_sep(w, key); fputs("null", w->f); }
void jw_done(jw *w) { fputc('\n', w->f); fflush(w->f); }

/* ---- progress ---------------------------------------------------------------------------- */
void progress_start(progress *p, const char *what, uint64_t total)
{
  p->what = what;
  p->total = total ? total : 1;
  p->tty = isatty(STDERR_FILENO);
  p->last = -1;
  progress_update(p, 0);
}

void progress_update(progress *p, uint64_t done)
{
  if (!p->tty) return;
  int pct = (int)(done * 100 / p->total);
  if (pct > 100) pct = 100;
  if (pct == p->last) return;
  p->last = pct;
  char bar[41];
  int fill = pct * 40 / 100;
  for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
  bar[40] = '\0';
  char a[32], b[32];
  fprintf(stderr, "\r%s [%s] %3d%% %s of %s ", p->what, bar, pct, fmt_size(a, done), fmt_size(b, p->total));
  fflush(stderr);
}

void progress_end(progress *p)
{
  if (p->tty) fputs("\r\033[K", stderr);
}

/* ---- files --------------------------------------------------------------------------------- */
long long read_ll(const char *path)
{
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long long v = -1;
  if (fscanf(f, "%lld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

size_t memory_layout(mem_range *out, size_t max, const char **source)
{
  size_t n = 0;
  FILE *f = fopen("/proc/iomem", "r");
  char line[256];
  if (f) {
    while (n < max && fgets(line, sizeof line, f)) {
      if (line[0] == ' ') continue;                         /* top-level ranges only */
      unsigned long long a, b;
      if (sscanf(line, "%llx-%llx", &a, &b) != 2 || !strstr(line, ": System RAM")) continue;
      if (b == 0) continue;                                  /* not root: addresses are zeroed */
      out[n].start = a;
      out[n].end = b;
      snprintf(out[n].name, sizeof out[n].name, "System RAM");
      n++;
    }
    fclose(f);
  }
  if (n) { *source = "/proc/iomem"; return n; }
  f = fopen("/proc/zoneinfo", "r");
  if (!f) { *source = "none"; return 0; }
  int node = -1;
  char zone[24] = "";
  unsigned long long spanned = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    if (sscanf(line, "Node %d, zone %23s", &node, zone) == 2) { spanned = 0; continue; }
    if (sscanf(line, " spanned %llu", &v) == 1) spanned = v;
    else if (sscanf(line, " start_pfn: %llu", &v) == 1 && spanned && n < max) {
      long page = sysconf(_SC_PAGESIZE);
      out[n].start = v * (uint64_t)page;
      out[n].end = (v + spanned) * (uint64_t)page - 1;
      snprintf(out[n].name, sizeof out[n].name, "node %d %s", node, zone);
      n++;
    }
  }
  fclose(f);
  *source = "/proc/zoneinfo";
  return n;
}

static int cmp_huge(const void *a, const void *b)
{
  const huge_info *x = a, *y = b;
  return x->size < y->size ? -1 : x->size > y->size;
}

size_t hugepage_info(huge_info *out, size_t max)
{
  DIR *d = opendir("/sys/kernel/mm/hugepages");
  if (!d) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    unsigned long long kb;
    if (sscanf(e->d_name, "hugepages-%llukB", &kb) != 1) continue;
    char p[320];
    huge_info *h = &out[n++];
    h->size = (uint64_t)kb << 10;
#define RD(field, file) do { snprintf(p, sizeof p, "/sys/kernel/mm/hugepages/%.64s/" file, e->d_name); h->field = read_ll(p); } while (0)
    RD(nr, "nr_hugepages");
    RD(free, "free_hugepages");
    RD(resv, "resv_hugepages");
    RD(surplus, "surplus_hugepages");
    RD(overcommit, "nr_overcommit_hugepages");
#undef RD
  }
  closedir(d);
  qsort(out, n, sizeof *out, cmp_huge);
  return n;
}

/* ---- showing a buffer ------------------------------------------------------------------- */
void print_failure_text(const char *indent, const dk_failure *f)
{
  if (!f) f = dk_last_failure();
  printf("%srefused: %s (%s), constraint %s\n%s  %s\n", indent, dk_ioreturn_name(f->code),
         dk_ioreturn_string(f->code), dk_constraint_name(f->constraint), indent, f->text);
}

static const char *tri(int v, const char *yes, const char *no) { return v < 0 ? NULL : v ? yes : no; }

void show_buffer_text(const dk_req *r, IOBufferMemoryDescriptor *b, const char *ind)
{
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  static seg s[4096];
  size_t total = 0, n = segments(b, s, 4096, &total);
  char a[32], c[32];
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  printf("%sdescriptor  %s, capacity %s, length %s, allocated %s, alignment 0x%" PRIx64 "\n", ind,
         dk_provider_name(info.provider), fmt_size(a, IOBufferMemoryDescriptor_getCapacity(b)),
         fmt_size(c, IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b)),
         fmt_size((char[32]){ 0 }, info.allocation_size), info.alignment);
  printf("%s            %s%s%s, direction %s, cache %s, %u address bits%s\n", ind,
         info.wired ? "wired" : "not wired", info.pinned ? ", pinned" : "", info.pageable ? ", pageable" : "",
         (const char *[]){ "none", "in", "out", "inout" }[info.options & 3],
         info.cache_mode < 10 ? cache_names[info.cache_mode] : "?", info.numAddressBits,
         info.physical_limit ? "" : ", no physical limit");
  if (info.physical_limit) printf("%s            physical limit 0x%" PRIx64 "\n", ind, info.physical_limit);
  printf("%svirtual     %p%s\n", ind, va, va ? "" : " (task NULL: mapped nowhere until map())");
  if (!n) {
    printf("%ssegments    none visible: %s\n", ind, dk_last_failure()->text);
    return;
  }
  size_t show = n > 8 ? 8 : n;
  for (size_t i = 0; i < show; i++) {
    printf("%ssegment %-3zu bus 0x%010" PRIx64 "  cpu 0x%010" PRIx64 "  length %s\n", ind, i, s[i].bus, s[i].cpu,
           fmt_size(a, s[i].len));
  }
  if (total > show) printf("%s            ... %zu segments in all\n", ind, total);
  verdict v = verify(r, &info, s, n);
  printf("%sverified    from the segments:", ind);
  const char *parts[] = {
    tri(v.mask, "below the limit", "ABOVE THE LIMIT"), tri(v.low, "above the low end", "BELOW THE LOW END"),
    tri(v.align, "aligned", "MISALIGNED"), tri(v.contiguous, "one contiguous run", "NOT CONTIGUOUS"),
    tri(v.boundary, "no boundary crossed", "CROSSES A BOUNDARY"),
  };
  int any = 0;
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
    if (parts[i]) printf("%s %s", any++ ? "," : "", parts[i]);
  if (!any) printf(" no physical constraint asked");
  if (r->boundary) printf(" (%" PRIu64 " device segments split at the lines)", v.device_segments);
  printf("\n%s            %s\n", ind, v.all ? "every constraint met" : "A CONSTRAINT IS BROKEN");
}

void show_buffer_json(jw *w, const char *key, const dk_req *r, IOBufferMemoryDescriptor *b)
{
  dk_buffer_info info;
  dk_buffer_get_info(b, &info);
  static seg s[4096];
  size_t total = 0, n = segments(b, s, 4096, &total);
  verdict v = verify(r, &info, s, n);
  jw_obj(w, key);
  jw_str(w, "label", r->label[0] ? r->label : NULL);
  jw_u64(w, "capacity", IOBufferMemoryDescriptor_getCapacity(b));
  jw_u64(w, "length", IOMemoryDescriptor_getLength((IOMemoryDescriptor *)b));
  jw_u64(w, "allocation_size", info.allocation_size);
  jw_u64(w, "alignment", info.alignment);
  jw_u64(w, "physical_limit", info.physical_limit);
  jw_u64(w, "address_bits", info.numAddressBits);
  jw_bool(w, "contiguous", info.contiguous);
  jw_bool(w, "pageable", info.pageable);
  jw_bool(w, "wired", info.wired);
  jw_bool(w, "pinned", info.pinned);
  jw_str(w, "provider", dk_provider_name(info.provider));
  jw_str(w, "direction", (const char *[]){ "none", "in", "out", "inout" }[info.options & 3]);
  jw_str(w, "cache", info.cache_mode < 10 ? cache_names[info.cache_mode] : "unknown");
  jw_str(w, "task", info.task ? "kernel" : "null");
  void *va = IOBufferMemoryDescriptor_getBytesNoCopy(b);
  if (va) jw_u64(w, "virtual_address", (uint64_t)(uintptr_t)va);
  else jw_null(w, "virtual_address");
  jw_u64(w, "segment_count", total);
  jw_arr(w, "segments");
  for (size_t i = 0; i < n; i++) {
    jw_obj(w, NULL);
    jw_u64(w, "bus", s[i].bus);
    jw_u64(w, "cpu_physical", s[i].cpu);
    jw_u64(w, "length", s[i].len);
    jw_end_obj(w);
  }
  jw_end_arr(w);
  jw_obj(w, "verified");
  const char *names[] = { "mask", "low", "alignment", "contiguous", "boundary" };
  int vals[] = { v.mask, v.low, v.align, v.contiguous, v.boundary };
  for (int i = 0; i < 5; i++) {
    if (vals[i] < 0) jw_null(w, names[i]);
    else jw_bool(w, names[i], vals[i]);
  }
  jw_u64(w, "device_segments", v.device_segments);
  jw_bool(w, "all", v.all);
  jw_end_obj(w);
  if (!n) jw_str(w, "segments_unavailable", dk_last_failure()->text);
  jw_end_obj(w);
}
