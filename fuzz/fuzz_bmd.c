/* fuzz/fuzz_bmd.c: libFuzzer harness for IOBufferMemoryDescriptor. The input picks a factory,
 * a task, options, capacity, alignment, mask (or dk_constraints), then drives a sequence of
 * method calls. Every result is compared with the independent model in model.c, the contents
 * with a shadow copy, the physical promises with the frames, and the library's live-resource
 * counters must return to their baseline after every input. Any difference traps with a
 * message: a bug in the library or in the model. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "model.h"

#include "prim/prim.h"     /* dk__prim_counters: live fds, mappings, locked bytes, heap blocks */
#include "phys/phys.h"     /* dk__pins_live */

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


/* The hugepage pool (newer trees) keeps freed memory for reuse; trimming it first makes the
 * live-resource counters comparable. Weak: absent in trees without the pool. */
void dk__thread_caches_flush(void);   /* src/iokit/internal.h: this thread's cached objects and slots */
/* Give everything cached or pooled back, so the live counters compare with the baseline. */
static void trim_pool(void)
{
  dk__thread_caches_flush();
  (void)dk_pool_trim();
}

#define MAX_CAP   (4u << 20)              /* bounded capacity: fast iterations */
#define MAX_MAPS  16
#define NSLOTS    4

/* ---- input reader ---------------------------------------------------------------------- */
typedef struct reader { const uint8_t *p; size_t n; } reader;
static uint64_t take(reader *r, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) {
    v <<= 8;
    if (r->n) { v |= *r->p++; r->n--; }
  }
  return v;
}
static uint8_t  u8(reader *r)  { return (uint8_t)take(r, 1); }
static uint16_t u16(reader *r) { return (uint16_t)take(r, 2); }
static uint32_t u32(reader *r) { return (uint32_t)take(r, 4); }
static uint64_t u64(reader *r) { return take(r, 8); }

/* ---- failures -------------------------------------------------------------------------- */
static char g_trace[4096];
static size_t g_trace_len;
static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...)
{
  if (g_trace_len >= sizeof g_trace - 200) g_trace_len = 0;   /* keep the recent part */
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(g_trace + g_trace_len, sizeof g_trace - g_trace_len, fmt, ap);
  va_end(ap);
  if (k > 0) g_trace_len += (size_t)k < sizeof g_trace - g_trace_len ? (size_t)k : 0;
}

static void mismatch(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void mismatch(const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "\n==== dmakit model mismatch ====\ncalls so far:\n%s\n---- ", g_trace);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  const dk_failure *f = dk_last_failure();
  fprintf(stderr, "\nlast failure: %s (0x%x) %s: %s\n", dk_ioreturn_name(f->code), (unsigned)f->code,
          f->function ? f->function : "-", f->text);
  fflush(stderr);
  __builtin_trap();
}
#define CHECK(cond, ...) do { if (!(cond)) mismatch(__VA_ARGS__); } while (0)

/* Known library bugs (listed in the report) can be tolerated so that a long run looks past
 * them: DK_FUZZ_KNOWN=align63,... The default (CI) tolerates none. */
static bool known(const char *id)
{
  const char *k = getenv("DK_FUZZ_KNOWN");
  return k && strstr(k, id) != NULL;
}

/* ---- environment ------------------------------------------------------------------------ */
static model_env g_env;
static dk_prim_counters g_base;
static uint8_t *g_pattern;     /* MAX_CAP + page bytes of a pattern: source for writes */
static uint8_t *g_scratch;     /* MAX_CAP + page bytes: destination for reads */
static uint8_t *g_slots;       /* NSLOTS reserved windows for placed mappings */
static size_t g_slot_size;
static long g_overwrite_bytes;   /* placed kIOMapOverwrite spans made so far (never counted) */

static bool own_pfn_readable(void)
{
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  volatile uint8_t probe = 1;
  (void)probe;
  uint64_t e = 0, va = (uint64_t)(uintptr_t)&probe;
  bool ok = pread(fd, &e, 8, (off_t)(va / g_env.page * 8)) == 8 && (e & (1ull << 63)) &&
            (e & ((1ull << 55) - 1)) != 0;
  close(fd);
  return ok;
}

/* Our own frame read for [va] (independent of the library's pagemap code). */
static uint64_t own_frame(const void *va)
{
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t e = 0;
  ssize_t r = pread(fd, &e, 8, (off_t)((uintptr_t)va / g_env.page * 8));
  close(fd);
  if (r != 8 || !(e & (1ull << 63))) return 0;
  return e & ((1ull << 55) - 1);
}

static void warm_up(void)
{
  /* first use probes capabilities and creates the io_uring ring: not a leak */
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, 0, 3 * g_env.page, 1);
  if (b) {
    IOMemoryMap *m = IOMemoryDescriptor_map((IOMemoryDescriptor *)b, kIOMapReadOnly);
    OSObject_release(m);
    IOBufferMemoryDescriptor_getCapacity(b);
  }
  OSObject_release(b);
  (void)dk_last_failure();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc; (void)argv;
  g_env.page = (uint64_t)sysconf(_SC_PAGESIZE);
  g_env.ram_top = dk_capabilities()->ram_top;     /* a machine fact, not a rule */
  g_env.frames = geteuid() == 0 && own_pfn_readable();
  g_pattern = malloc(MAX_CAP + g_env.page);
  g_scratch = malloc(MAX_CAP + g_env.page);
  for (size_t i = 0; i < MAX_CAP + g_env.page; i++) g_pattern[i] = (uint8_t)(i * 131u + (i >> 12) + 7u);
  g_slot_size = MAX_CAP + 4 * g_env.page;
  g_slots = mmap(NULL, NSLOTS * g_slot_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (g_slots == MAP_FAILED) abort();
  warm_up();
  trim_pool();
  g_base = dk__prim_counters();
  fprintf(stderr, "fuzz_bmd: page %llu, ram_top 0x%llx, frames %s\n", (unsigned long long)g_env.page,
          (unsigned long long)g_env.ram_top, g_env.frames ? "visible (root)" : "hidden");
  return 0;
}

/* ---- the maps of one buffer --------------------------------------------------------------- */
typedef struct mmap_ent {
  IOMemoryMap *obj;
  int          refs;        /* handles we hold */
  bool         in_set;      /* a primary map (identity or real), shareable */
  bool         usable;      /* its address still maps the buffer (not unmapped, super alive) */
  int          super;       /* index of the super map, -1 */
  uint64_t     addr, offset, length;
  uint32_t     options;
} mmap_ent;

typedef struct state {
  IOBufferMemoryDescriptor *b;
  model_buf  m;
  model_create mc;
  uint8_t   *base;          /* getBytesNoCopy() */
  mmap_ent   maps[MAX_MAPS];
  int        nmaps;
  bool       slot_used[NSLOTS];
  bool       buf_released;
} state;

static IOMemoryDescriptor *MD(state *s) { return (IOMemoryDescriptor *)s->b; }

/* Contents through a private RO mapping of the whole capacity (works for every task/state). */
static void check_contents(state *s, const char *when)
{
  uint64_t len = IOMemoryDescriptor_getLength(MD(s));
  CHECK(len == s->m.length, "%s: getLength %llu, model %llu", when, (unsigned long long)len,
        (unsigned long long)s->m.length);
  if (s->base) {
    for (uint64_t i = 0; i < s->m.capacity; i++)
      CHECK(s->base[i] == s->m.shadow[i], "%s: byte %llu via getBytesNoCopy is 0x%02x, shadow 0x%02x",
            when, (unsigned long long)i, s->base[i], s->m.shadow[i]);
    return;
  }
  IOBufferMemoryDescriptor_setLength(s->b, s->m.capacity);
  IOMemoryMap *mp = IOMemoryDescriptor_createMappingInTask(MD(s), kernel_task, 0,
                                                          kIOMapAnywhere | kIOMapUnique | kIOMapReadOnly, 0, 0);
  CHECK(mp != NULL, "%s: a private RO mapping of the whole buffer failed", when);
  const uint8_t *p = (const uint8_t *)(uintptr_t)IOMemoryMap_getAddress(mp);
  CHECK(p != NULL, "%s: map address 0", when);
  for (uint64_t i = 0; i < s->m.capacity; i++)
    CHECK(p[i] == s->m.shadow[i], "%s: byte %llu via map is 0x%02x, shadow 0x%02x", when,
          (unsigned long long)i, p[i], s->m.shadow[i]);
  OSObject_release(mp);
  IOBufferMemoryDescriptor_setLength(s->b, s->m.length);
}

static void check_state(state *s, const char *when)
{
  CHECK(IOBufferMemoryDescriptor_getCapacity(s->b) == s->m.capacity, "%s: getCapacity", when);
  CHECK(IOMemoryDescriptor_getLength(MD(s)) == s->m.length, "%s: getLength %llu model %llu", when,
        (unsigned long long)IOMemoryDescriptor_getLength(MD(s)), (unsigned long long)s->m.length);
  uint64_t fl = IOMemoryDescriptor_getFlags(MD(s));
  CHECK(fl == s->m.flags, "%s: getFlags 0x%llx model 0x%x", when, (unsigned long long)fl, s->m.flags);
  CHECK(IOMemoryDescriptor_getDirection(MD(s)) == (s->m.flags & 7u), "%s: getDirection", when);
  dk_buffer_info info;
  CHECK(dk_buffer_get_info(s->b, &info) == kIOReturnSuccess, "%s: dk_buffer_get_info", when);
  CHECK(info.prepare_count == s->m.wire_count, "%s: prepare_count %u model %u", when,
        info.prepare_count, s->m.wire_count);
  CHECK(info.pageable == s->m.pageable, "%s: pageable", when);
}

/* Walk every physical segment; check the promises and our own pagemap reading. */
static void check_physical(state *s, const char *when)
{
  if (!model_phys_ok(&s->m, &g_env, 0)) {
    IOByteCount l = 77;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(s), 0, &l, 0);
    CHECK(pa == 0 && l == 0, "%s: getPhysicalSegment(0) must give 0 here, got 0x%llx len %llu", when,
          (unsigned long long)pa, (unsigned long long)l);
    return;
  }
  const model_create *c = &s->mc;
  uint64_t off = 0, nseg = 0, first = 0;
  while (off < s->m.length) {
    IOByteCount l = 0;
    addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(s), off, &l, 0);
    CHECK(pa != 0 && l > 0 && l <= s->m.length - off, "%s: segment at %llu: pa 0x%llx len %llu (length %llu)",
          when, (unsigned long long)off, (unsigned long long)pa, (unsigned long long)l,
          (unsigned long long)s->m.length);
    if (nseg == 0) first = pa;
    if (c->limit) CHECK(pa + l - 1 <= c->limit, "%s: segment 0x%llx+%llu above limit 0x%llx", when,
                        (unsigned long long)pa, (unsigned long long)l, (unsigned long long)c->limit);
    if (c->low) CHECK(pa >= c->low, "%s: segment below low", when);
    if (c->boundary && c->contig)
      CHECK((pa & ~(c->boundary - 1)) == ((pa + l - 1) & ~(c->boundary - 1)), "%s: crosses boundary", when);
    if (s->base) {
      uint64_t fr = own_frame(s->base + off);
      CHECK(fr && (fr * g_env.page | ((uintptr_t)(s->base + off) & (g_env.page - 1))) == pa,
            "%s: getPhysicalSegment(%llu)=0x%llx, pagemap frame 0x%llx", when, (unsigned long long)off,
            (unsigned long long)pa, (unsigned long long)fr);
    }
    nseg++;
    off += l;
  }
  if (c->contig && !s->m.pageable) CHECK(nseg <= 1, "%s: contiguous buffer in %llu segments", when,
                                         (unsigned long long)nseg);
  if (c->phys_align > 1 && !s->m.pageable)
    CHECK((first & (c->phys_align - 1)) == 0, "%s: physical start 0x%llx not aligned to 0x%llx", when,
          (unsigned long long)first, (unsigned long long)c->phys_align);
  if (c->max_segments && c->max_segment_size == 0 && c->boundary == 0)
    CHECK(nseg <= c->max_segments, "%s: %llu segments > max %u", when, (unsigned long long)nseg, c->max_segments);
}

/* ---- maps ------------------------------------------------------------------------------- */
static int find_map(state *s, IOMemoryMap *obj)
{
  for (int i = 0; i < s->nmaps; i++)
    if (s->maps[i].refs > 0 && s->maps[i].obj == obj) return i;
  return -1;
}

static bool compatible(const state *s, const mmap_ent *e, uint32_t opts, uint64_t at, uint64_t off, uint64_t len)
{
  if (!e->in_set || e->refs <= 0 || !e->addr) return false;
  if (e->super >= 0 && !s->maps[e->super].addr) return false;   /* a sub-range whose view went away */
  if ((e->options ^ opts) & (kIOMapReadOnly | kIOMapGuardedMask)) return false;
  uint32_t want = opts & kIOMapCacheMask;
  if (want && want != (e->options & kIOMapCacheMask)) return false;
  if (off < e->offset || off + len > e->offset + e->length) return false;
  if (!(opts & kIOMapAnywhere) && at != e->addr + (off - e->offset)) return false;
  return true;
}

static void do_map(state *s, reader *r, bool via_map)
{
  uint8_t sel = u8(r);
  uint32_t opts = u32(r) & ~(kIOMapOverwrite | kIOMapStatic);
  uint64_t off = 0, len = 0, at = 0;
  task_t task = kernel_task;
  int slot = -1;
  if (via_map) {
    opts |= kIOMapAnywhere;
  } else {
    off = (sel & 0x80) ? u64(r) : u32(r) % (s->m.capacity + 2);
    len = (sel & 0x40) ? u64(r) : u32(r) % (s->m.capacity + 2);
    if ((sel & 7) == 0) task = NULL;
    int placement = (sel >> 3) & 3;      /* 0,1 anywhere; 2 fresh slot (+Overwrite); 3 at an existing map */
    if (placement <= 1) opts |= kIOMapAnywhere;
    else opts &= ~kIOMapAnywhere;
    if (placement == 2) {
      for (int i = 0; i < NSLOTS; i++) if (!s->slot_used[i]) { slot = i; break; }
      if (slot < 0) { opts |= kIOMapAnywhere; placement = 0; }
      else { at = (uint64_t)(uintptr_t)(g_slots + (size_t)slot * g_slot_size) + (off & (g_env.page - 1));
             opts |= kIOMapOverwrite; }
    }
    if (placement == 3) {
      /* a map we still hold occupies its address; a released one's address is free again (a
       * placed mapping there may succeed), so only held, mapped ones are picked */
      int live[MAX_MAPS], nlive = 0;
      for (int i = 0; i < s->nmaps; i++)
        if (s->maps[i].refs > 0 && s->maps[i].addr) live[nlive++] = i;
      int k = s->nmaps ? (int)(u8(r) % s->nmaps) : -1;
      if (k >= 0 && nlive) { k = live[k % nlive]; at = s->maps[k].addr + (off - s->maps[k].offset); }
      else at = (uint64_t)(uintptr_t)g_slots;   /* occupied by our PROT_NONE reservation */
    }
  }
  uint64_t eff_len = len ? len : s->m.length;
  /* ---- prediction ---- */
  bool ok = true;
  const char *why = "";
  int compat[MAX_MAPS], ncompat = 0;
  if (!via_map && !task) { ok = false; why = "NULL task"; }
  else if (off >= s->m.length || off + eff_len < off || off + eff_len > s->m.length) { ok = false; why = "range"; }
  else {
    if (!(opts & kIOMapUnique))
      for (int i = 0; i < s->nmaps; i++)
        if (compatible(s, &s->maps[i], opts, at, off, eff_len)) compat[ncompat++] = i;
    if (!ncompat) {
      if (!(opts & kIOMapUnique) && (opts & kIOMapReference)) { ok = false; why = "reference"; }
      else if ((opts & kIOMapGuardedMask) && !(opts & kIOMapAnywhere)) { ok = false; why = "guard needs anywhere"; }
      else if (!(opts & kIOMapAnywhere) && slot < 0) { ok = false; why = "placed at an occupied address"; }
      else if (!(opts & kIOMapAnywhere) && (opts & kIOMapOverwrite)) {
        /* hugepage-pool memory maps in whole hugepages: overwriting must replace exactly the range */
        dk_buffer_info bi;
        if (dk_buffer_get_info((IOBufferMemoryDescriptor *)s->b, &bi) == kIOReturnSuccess &&
            (bi.provider == DK_PROVIDER_POOL || bi.provider == DK_PROVIDER_POOL_SLAB)) {
          const uint64_t H = 2ull << 20;
          uint64_t in_page = (IOMemoryDescriptor_getPhysicalAddress(MD(s)) + off) % H;
          if (in_page || (in_page + eff_len) % H) { ok = false; why = "pool overwrite not whole hugepages"; }
        }
      }
    }
  }
  if (s->nmaps >= MAX_MAPS) return;
  trace("%s(opts 0x%x off %llu len %llu at 0x%llx task %s) ", via_map ? "map" : "createMappingInTask", opts,
        (unsigned long long)off, (unsigned long long)len, (unsigned long long)at, task ? "kernel" : "NULL");
  IOMemoryMap *mp = via_map ? IOMemoryDescriptor_map(MD(s), opts)
                            : IOMemoryDescriptor_createMappingInTask(MD(s), task, at, opts, off, len);
  trace("-> %p\n", (void *)mp);
  if (!ok) { CHECK(mp == NULL, "mapping must fail (%s), got %p", why, (void *)mp); return; }
  CHECK(mp != NULL, "mapping must succeed (%d compatible), got NULL", ncompat);
  uint64_t addr = IOMemoryMap_getAddress(mp);
  int old = find_map(s, mp);
  if (old >= 0) {   /* the same object again: only for an exact compatible match */
    mmap_ent *e = &s->maps[old];
    CHECK(ncompat > 0 && e->in_set && e->offset == off && e->length == eff_len,
          "an existing map object came back for a request it does not match");
    e->refs++;
    return;
  }
  CHECK(IOMemoryMap_getLength(mp) == eff_len, "map getLength %llu, want %llu",
        (unsigned long long)IOMemoryMap_getLength(mp), (unsigned long long)eff_len);
  mmap_ent *e = &s->maps[s->nmaps++];
  memset(e, 0, sizeof *e);
  e->obj = mp; e->refs = 1; e->offset = off; e->length = eff_len; e->addr = addr; e->super = -1;
  e->usable = true;
  CHECK(addr != 0, "a new map has address 0");
  if (ncompat) {
    bool match = false;
    for (int i = 0; i < ncompat; i++) {
      mmap_ent *c = &s->maps[compat[i]];
      if (addr == c->addr + (off - c->offset)) { match = true; e->super = compat[i]; }
    }
    CHECK(match, "sub-range map address 0x%llx matches no compatible map", (unsigned long long)addr);
    e->options = opts;
    e->in_set = true;           /* sub-range maps join the set: the same request returns them again */
    CHECK(IOMemoryMap_getMapOptions(mp) == opts, "sub-map options 0x%x want 0x%x", IOMemoryMap_getMapOptions(mp), opts);
    return;
  }
  bool identity = task == kernel_task && !s->m.null_task && (opts & kIOMapAnywhere) &&
                  !(opts & kIOMapUnique) && !(opts & kIOMapGuardedMask) && off == 0;
  e->in_set = true;
  e->options = opts | (identity ? kIOMapStatic : 0);
  CHECK(IOMemoryMap_getMapOptions(mp) == e->options, "map options 0x%x, want 0x%x (identity %d)",
        IOMemoryMap_getMapOptions(mp), e->options, identity);
  if (identity) CHECK(addr == (uint64_t)(uintptr_t)s->base, "identity map address is not getBytesNoCopy");
  else if (s->base) CHECK(addr != (uint64_t)(uintptr_t)s->base || off != 0, "a real mapping at the buffer's own address");
  if (slot >= 0) {
    s->slot_used[slot] = true;
    g_overwrite_bytes += (long)(((at & (g_env.page - 1)) + eff_len + g_env.page - 1) & ~(g_env.page - 1));
    CHECK((addr & ~(g_env.page - 1)) == (at & ~(g_env.page - 1)), "placed map at 0x%llx, asked 0x%llx",
          (unsigned long long)addr, (unsigned long long)at);
  }
  CHECK(IOMemoryMap_getMemoryDescriptor(mp) == MD(s), "getMemoryDescriptor");
  CHECK(IOMemoryMap_getAddressTask(mp) == kernel_task, "getAddressTask");
}

static void mark_unusable(state *s, int i)
{
  s->maps[i].usable = false;
  for (int j = 0; j < s->nmaps; j++)
    if (s->maps[j].super == i && s->maps[j].usable) mark_unusable(s, j);
}

static void map_op(state *s, reader *r)
{
  if (!s->nmaps) return;
  int i = (int)(u8(r) % s->nmaps);
  mmap_ent *e = &s->maps[i];
  if (e->refs <= 0) return;
  uint8_t what = u8(r) % 4;
  if (what == 0) {                        /* release one handle */
    trace("release map %d\n", i);
    OSObject_release(e->obj);
    if (--e->refs == 0) { e->in_set = false; mark_unusable(s, i); }
  } else if (what == 1) {                 /* unmap: Success, address 0; twice is fine */
    trace("unmap map %d\n", i);
    CHECK(IOMemoryMap_unmap(e->obj) == kIOReturnSuccess, "unmap");
    CHECK(IOMemoryMap_getAddress(e->obj) == 0, "address after unmap");
    e->addr = 0;
    mark_unusable(s, i);
  } else if (what == 2 && e->usable) {    /* read through the map */
    const uint8_t *p = (const uint8_t *)(uintptr_t)e->addr;
    for (uint64_t k = 0; k < e->length; k += 1 + (k & 63))
      CHECK(p[k] == s->m.shadow[e->offset + k], "map %d byte %llu is 0x%02x, shadow 0x%02x", i,
            (unsigned long long)k, p[k], s->m.shadow[e->offset + k]);
  } else if (what == 3 && e->usable && !(e->options & kIOMapReadOnly)) {   /* write through it */
    uint64_t o = u32(r) % e->length, n = u16(r) % (e->length - o + 1);
    trace("write via map %d at %llu n %llu\n", i, (unsigned long long)o, (unsigned long long)n);
    memcpy((uint8_t *)(uintptr_t)e->addr + o, g_pattern + (o & 0xffff), (size_t)n);
    memcpy(s->m.shadow + e->offset + o, g_pattern + (o & 0xffff), (size_t)n);
  }
}

/* ---- creation ------------------------------------------------------------------------------ */
static uint64_t pick_size(reader *r, uint8_t sel)
{
  switch (sel & 7) {
  case 0: return 0;
  case 1: return 1 + u8(r);
  case 2: return u16(r);
  case 3: return (uint64_t)(1 + (u8(r) & 15)) * g_env.page + (u8(r) & 1 ? u16(r) % g_env.page : 0);
  case 4: return u32(r) % (MAX_CAP + 1);
  case 5: return UINT64_MAX - u16(r);                   /* must fail cleanly */
  case 6: return (1ull << 62) | (u64(r) & ((1ull << 63) - 1));   /* >= 2^62: cannot be mapped */
  default: return g_env.page;
  }
}

static uint64_t pick_align(reader *r)
{
  uint8_t sel = u8(r);
  switch (sel & 7) {
  case 0: return 0;
  case 1: return 1;
  case 2: return 1ull << (u8(r) % 64);
  case 3: return u64(r);
  case 4: return u16(r);
  default: return (1ull << (u8(r) % 14));
  }
}

static uint64_t pick_mask(reader *r)
{
  uint8_t sel = u8(r);
  switch (sel & 7) {
  case 0: return 0;
  case 1: return 0xFFFFFFFFull;
  case 2: return ((1ull << (32 + u8(r) % 32)) - 1) & ~((1ull << (u8(r) % 20)) - 1);
  case 3: return u64(r);
  case 4: return UINT64_MAX;
  default: return ~0ull << (u8(r) % 64);
  }
}

static uint32_t pick_options(reader *r)
{
  uint8_t sel = u8(r);
  if (sel & 1) return u32(r);                      /* any 32-bit value */
  static const uint32_t bits[] = { 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x800, 0x100000,
                                   0x200000, 0x10000, 0x100, 0x300, 0x800000 };
  uint32_t o = 0;
  uint16_t which = u16(r);
  for (unsigned i = 0; i < sizeof bits / sizeof bits[0]; i++)
    if (which & (1u << i)) o |= bits[i];
  return o;
}

static dk_failure g_fail;

static IOBufferMemoryDescriptor *create(reader *r, model_request *rq)
{
  memset(rq, 0, sizeof *rq);
  rq->factory = (model_factory)(u8(r) % MF__COUNT);
  rq->null_task = u8(r) & 1;
  rq->options = pick_options(r);
  rq->capacity = pick_size(r, u8(r));
  rq->alignment = pick_align(r);
  rq->mask = pick_mask(r);
  rq->contiguous = u8(r) & 1;
  rq->c = DK_CONSTRAINTS_NONE;
  if (rq->factory == MF_IN_TASK_WITH_CONSTRAINTS) {
    uint8_t f = u8(r);
    if (f & 1) rq->c.high = pick_mask(r);
    if (f & 2) rq->c.low = u32(r) & 0xFFFFF000u;
    if (f & 4) rq->c.alignment = pick_align(r);
    if (f & 8) rq->c.boundary = pick_align(r);
    if (f & 16) rq->c.max_segment_size = u32(r);
    if (f & 32) rq->c.max_segments = u8(r);
    rq->c.contiguous = (f & 64) != 0;
    rq->c.numa_node = (f & 128) ? 0 : -1;
  }
  task_t t = rq->null_task ? NULL : kernel_task;
  trace("create factory %d task %s options 0x%x cap 0x%llx align 0x%llx mask 0x%llx contig %d "
        "c{0x%llx..0x%llx a 0x%llx b 0x%llx mss 0x%llx ms %u c %d}\n",
        rq->factory, t ? "kernel" : "NULL", rq->options, (unsigned long long)rq->capacity,
        (unsigned long long)rq->alignment, (unsigned long long)rq->mask, rq->contiguous,
        (unsigned long long)rq->c.low, (unsigned long long)rq->c.high, (unsigned long long)rq->c.alignment,
        (unsigned long long)rq->c.boundary, (unsigned long long)rq->c.max_segment_size,
        rq->c.max_segments, rq->c.contiguous);
  switch (rq->factory) {
  case MF_IN_TASK_WITH_OPTIONS:
    return IOBufferMemoryDescriptor_inTaskWithOptions(t, rq->options, rq->capacity, rq->alignment);
  case MF_IN_TASK_WITH_PHYSICAL_MASK:
    return IOBufferMemoryDescriptor_inTaskWithPhysicalMask(t, rq->options, rq->capacity, rq->mask);
  case MF_WITH_OPTIONS:
    return IOBufferMemoryDescriptor_withOptions(rq->options, rq->capacity, rq->alignment);
  case MF_WITH_CAPACITY:
    return IOBufferMemoryDescriptor_withCapacity(rq->capacity, rq->options, rq->contiguous);
  case MF_WITH_BYTES:
    /* the source must cover the length; only bounded lengths can succeed */
    return IOBufferMemoryDescriptor_withBytes(g_pattern, rq->capacity, rq->options, rq->contiguous);
  case MF_ALLOC_INIT: {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_alloc();
    if (!b) return NULL;
    if (!IOBufferMemoryDescriptor_initWithPhysicalMask(b, t, rq->options, rq->capacity, rq->alignment, rq->mask)) {
      g_fail = *dk_last_failure();     /* before the release of the half-built object */
      OSObject_release(b);
      return NULL;
    }
    return b;
  }
  case MF_IN_TASK_WITH_CONSTRAINTS:
    return IOBufferMemoryDescriptor_inTaskWithConstraints(t, rq->options, rq->capacity, &rq->c);
  default:
    return NULL;
  }
}

/* ---- one input ------------------------------------------------------------------------------ */
static void release_all(state *s)
{
  bool buf_first = s->b && (s->nmaps & 1);    /* maps keep their descriptor alive */
  if (buf_first) { OSObject_release(s->b); s->buf_released = true; }
  for (int i = s->nmaps - 1; i >= 0; i--)
    while (s->maps[i].refs > 0) { OSObject_release(s->maps[i].obj); s->maps[i].refs--; }
  if (!s->buf_released && s->b) OSObject_release(s->b);
  s->b = NULL;
  model_buf_free(&s->m);
  memset(s->slot_used, 0, sizeof s->slot_used);
  /* placed mappings punched holes into the slot reservation: restore it */
  if (mmap(g_slots, NSLOTS * g_slot_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
           -1, 0) == MAP_FAILED)
    abort();
}

static void check_leaks(void)
{
  trim_pool();
  dk_prim_counters c = dk__prim_counters();
  /* known: a MAP_FIXED (kIOMapOverwrite) mapping is not counted, its munmap is */
  if (known("overwrite-count")) c.map_bytes += g_overwrite_bytes;   /* the deficit stays */
  CHECK(c.fds == g_base.fds && c.map_bytes == g_base.map_bytes && c.lock_bytes == g_base.lock_bytes &&
        c.heap_blocks == g_base.heap_blocks,
        "leak after the input: fds %ld->%ld map_bytes %ld->%ld lock_bytes %ld->%ld heap %ld->%ld",
        g_base.fds, c.fds, g_base.map_bytes, c.map_bytes, g_base.lock_bytes, c.lock_bytes,
        g_base.heap_blocks, c.heap_blocks);
  CHECK(dk__pins_live() == 0, "%ld pins live after the input", dk__pins_live());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  reader r = { data, size };
  static state st;
  state *s = &st;
  memset(s, 0, sizeof *s);
  g_trace_len = 0;
  g_trace[0] = 0;

  model_request rq;
  memset(&g_fail, 0, sizeof g_fail);
  s->b = create(&r, &rq);
  if (rq.factory != MF_ALLOC_INIT) g_fail = *dk_last_failure();
  model_predict_create(&rq, &g_env, &s->mc);
  const dk_failure *f = &g_fail;
  if (!s->b) {
    CHECK(s->mc.verdict != MV_MUST_SUCCEED, "creation must succeed, failed with %s (0x%x): %s",
          dk_ioreturn_name(f->code), (unsigned)f->code, f->text);
    bool code_ok = s->mc.ncodes == 0;
    for (int i = 0; i < s->mc.ncodes; i++) code_ok |= f->code == s->mc.codes[i];
    CHECK(code_ok, "creation failed with %s (0x%x), model allows other codes (%s)",
          dk_ioreturn_name(f->code), (unsigned)f->code, s->mc.why);
    check_leaks();
    return 0;
  }
  if (s->mc.verdict == MV_MUST_FAIL && s->mc.phys_align == UINT64_MAX && known("align63")) {
    OSObject_release(s->b);      /* known: an alignment above 2^63 is silently dropped */
    check_leaks();
    return 0;
  }
  CHECK(s->mc.verdict != MV_MUST_FAIL, "creation must fail (%s), got a buffer", s->mc.why);
  model_buf_init(&s->m, &s->mc);
  if (rq.factory == MF_WITH_BYTES) {   /* setLength(0) + appendBytes(bytes, len) */
    model_setLength(&s->m, 0);
    model_appendBytes(&s->m, g_pattern, rq.capacity);
  }
  s->base = IOBufferMemoryDescriptor_getBytesNoCopy(s->b);
  CHECK((s->base == NULL) == s->m.null_task, "getBytesNoCopy %p for %s task", (void *)s->base,
        s->m.null_task ? "NULL" : "kernel");
  check_state(s, "after create");
  check_contents(s, "after create");
  check_physical(s, "after create");

  for (int step = 0; step < 48 && r.n; step++) {
    uint8_t op = u8(&r) % 20;
    switch (op) {
    case 0: {
      uint64_t len = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      trace("setLength(%llu)\n", (unsigned long long)len);
      IOBufferMemoryDescriptor_setLength(s->b, len);
      model_setLength(&s->m, len);
      break;
    }
    case 1: {
      uint8_t k = u8(&r);
      uint64_t n = (k & 0x80) ? UINT64_MAX - u8(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t room = s->m.capacity - s->m.length;
      const uint8_t *src = (k & 1) ? NULL : g_pattern + (k & 0x7e);
      if (n > room && !(k & 1)) { /* the source must cover what is copied: room bytes */ }
      trace("appendBytes(%s, %llu)\n", src ? "pattern" : "NULL", (unsigned long long)n);
      bool rv = IOBufferMemoryDescriptor_appendBytes(s->b, src, n);
      CHECK(rv == model_appendBytes(&s->m, src, n), "appendBytes returned %d", rv);
      break;
    }
    case 2: {
      uint64_t start = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t n = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      void *p = IOBufferMemoryDescriptor_getBytesNoCopyRange(s->b, start, n);
      bool want = model_range_ptr_ok(&s->m, start, n);
      CHECK(want ? p == s->base + start : p == NULL, "getBytesNoCopyRange(%llu, %llu) = %p, base %p, length %llu",
            (unsigned long long)start, (unsigned long long)n, p, (void *)s->base, (unsigned long long)s->m.length);
      break;
    }
    case 3: {
      uint64_t off = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t n = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t want = model_readBytes(&s->m, off, n);
      trace("readBytes(%llu, %llu)\n", (unsigned long long)off, (unsigned long long)n);
      IOByteCount got = IOMemoryDescriptor_readBytes(MD(s), off, g_scratch, n);
      CHECK(got == want, "readBytes(%llu, %llu) = %llu, model %llu", (unsigned long long)off,
            (unsigned long long)n, (unsigned long long)got, (unsigned long long)want);
      if (got) CHECK(memcmp(g_scratch, s->m.shadow + off, (size_t)got) == 0, "readBytes data differs from shadow");
      break;
    }
    case 4: {
      uint8_t k = u8(&r);
      uint64_t off = (k & 2) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t n = (k & 4) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      const uint8_t *src = (k & 1) ? NULL : g_pattern + (k >> 3);
      trace("writeBytes(%llu, %s, %llu)\n", (unsigned long long)off, src ? "pattern" : "NULL", (unsigned long long)n);
      IOByteCount got = IOMemoryDescriptor_writeBytes(MD(s), off, src, n);
      uint64_t want = model_writeBytes(&s->m, off, src, n);
      CHECK(got == want, "writeBytes(%llu, %llu) = %llu, model %llu (flags 0x%x)", (unsigned long long)off,
            (unsigned long long)n, (unsigned long long)got, (unsigned long long)want, s->m.flags);
      break;
    }
    case 5: {
      static const uint32_t dirs[] = { 0, 1, 2, 3, 4, 8, 0x10, 0x20, 0x100, 6, 7 };
      uint8_t k = u8(&r);
      uint32_t d = (k & 0x80) ? u32(&r) : dirs[k % 11];
      trace("prepare(0x%x)\n", d);
      IOReturn got = IOMemoryDescriptor_prepare(MD(s), d);
      IOReturn want = model_prepare(&s->m, d);
      CHECK(got == want, "prepare(0x%x) = 0x%x, model 0x%x", d, (unsigned)got, (unsigned)want);
      break;
    }
    case 6: {
      uint32_t d = u8(&r);
      trace("complete(0x%x)\n", d);
      CHECK(IOMemoryDescriptor_complete(MD(s), d) == model_complete(&s->m, d), "complete");
      break;
    }
    case 7: {
      uint64_t off = (u8(&r) & 1) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      IOByteCount l = 123;
      addr64_t pa = IOMemoryDescriptor_getPhysicalSegment(MD(s), off, &l, (u8(&r) & 1) ? kIOMemoryMapperNone : 0);
      bool want = model_phys_ok(&s->m, &g_env, off);
      CHECK(want ? (pa != 0 && l > 0 && l <= s->m.length - off) : (pa == 0 && l == 0),
            "getPhysicalSegment(%llu) = 0x%llx len %llu, model %s", (unsigned long long)off, (unsigned long long)pa,
            (unsigned long long)l, want ? "nonzero" : "0");
      if (want && s->base) {
        uint64_t fr = own_frame(s->base + off);
        CHECK(fr * g_env.page + ((uintptr_t)(s->base + off) & (g_env.page - 1)) == pa, "segment vs pagemap");
      }
      break;
    }
    case 8: {
      static const uint32_t ops[] = { 1, 2, 50, 51, 0, 3, 49, 52 };
      uint8_t k = u8(&r);
      uint32_t o = (k & 0x80) ? u32(&r) : ops[k & 7];
      uint64_t off = (k & 0x40) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      uint64_t len = (k & 0x20) ? u64(&r) : u32(&r) % (s->m.capacity + 2);
      IOReturn alt, want = model_performOperation(&s->m, o, off, len, &alt);
      trace("performOperation(%u, %llu, %llu)\n", o, (unsigned long long)off, (unsigned long long)len);
      IOReturn got = IOMemoryDescriptor_performOperation(MD(s), o, off, len);
      CHECK(got == want || got == alt, "performOperation(%u, %llu, %llu) = 0x%x, model 0x%x/0x%x", o,
            (unsigned long long)off, (unsigned long long)len, (unsigned)got, (unsigned)want, (unsigned)alt);
      break;
    }
    case 9: {
      uint8_t k = u8(&r);
      uint32_t st_in = (k & 0x80) ? u32(&r) : (k & 7);
      uint32_t old = 0xdead, mold = 0xdead;
      bool mset;
      trace("setPurgeable(0x%x)\n", st_in);
      IOReturn got = IOMemoryDescriptor_setPurgeable(MD(s), st_in, &old);
      IOReturn want = model_setPurgeable(&s->m, st_in, &mold, &mset);
      CHECK(got == want, "setPurgeable(0x%x) = 0x%x, model 0x%x", st_in, (unsigned)got, (unsigned)want);
      if (mset) CHECK(old == mold, "setPurgeable old state %u, model %u", old, mold);
      break;
    }
    case 10: do_map(s, &r, true); break;
    case 11: case 12: do_map(s, &r, false); break;
    case 13: case 14: map_op(s, &r); break;
    case 15: {
      uint8_t k = u8(&r);
      uint32_t d = (k & 0x80) ? u32(&r) : (k & 7);
      trace("setDirection(0x%x)\n", d);
      IOMemoryDescriptor_setDirection(MD(s), d);
      model_setDirection(&s->m, d);
      break;
    }
    case 16:
      if (s->base) {   /* direct writes through getBytesNoCopy (works even when Out-only) */
        uint64_t o = u32(&r) % s->m.capacity, n = u16(&r) % (s->m.capacity - o + 1);
        memcpy(s->base + o, g_pattern + 1000, (size_t)n);
        memcpy(s->m.shadow + o, g_pattern + 1000, (size_t)n);
      }
      break;
    case 17: check_contents(s, "contents"); break;
    case 18: check_physical(s, "physical"); break;
    default: {
      uint32_t tag = u32(&r);
      IOMemoryDescriptor_setTag(MD(s), tag);
      CHECK(IOMemoryDescriptor_getTag(MD(s)) == tag, "tag round trip");
      break;
    }
    }
    check_state(s, "after a call");
  }
  check_contents(s, "at the end");
  check_physical(s, "at the end");
  release_all(s);
  check_leaks();
  return 0;
}
