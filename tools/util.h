/* tools/util.h: what the dmakit commands share: usage errors (exit 2, the bad flag named),
 * number parsing with units, a buffer request that both `alloc` flags and `map --alloc`
 * specs fill in, segment walking with an independent check of every constraint, a small JSON
 * writer, a progress bar for long work on a terminal, and sysfs/procfs readers. */
#ifndef DMAKIT_TOOLS_UTIL_H
#define DMAKIT_TOOLS_UTIL_H

#include <dmakit/dmakit.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

extern const char *prog;

/* ---- exit codes ----------------------------------------------------------------------- */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_NO_DMA = 3 };

/* Prints "dmakit CMD: message" and "Try 'dmakit CMD --help'." on stderr, exits 2. */
__attribute__((noreturn, format(printf, 2, 3))) void usage_error(const char *cmd, const char *fmt, ...);
/* Prints "dmakit: message" on stderr. */
__attribute__((format(printf, 1, 2))) void errorf(const char *fmt, ...);

/* ---- numbers -------------------------------------------------------------------------- */
/* "4096", "0x1000", "64K", "2M", "1G", "1T", "64KiB" (binary units). 0 on success. */
int parse_size(const char *s, uint64_t *out);
/* A physical mask: any size above, or "32bit" / "32-bit" for 0xFFFFFFFF. */
int parse_mask(const char *s, uint64_t *out);
/* "64 KiB", "2 MiB", "4096 B": exact binary units where possible. */
const char *fmt_size(char buf[32], uint64_t bytes);

/* ---- one buffer request ------------------------------------------------------------- */
typedef struct dk_req {
  uint64_t     size, mask, align, boundary, low, max_segment_size;
  uint32_t     max_segments;
  bool         contiguous, pageable, task_null;
  IOOptionBits direction;     /* kIODirection* */
  int          cache;         /* kIO*Cache, -1 = unset */
  int          pool;          /* DK_OPTION_POOL for this request: -1 = as configured */
  char         label[48];
} dk_req;

void dk_req_init(dk_req *r);
/* Set one field by name ("mask", "contiguous", "task", ...); value is NULL for a flag.
 * Returns NULL on success, else a message naming what is wrong. */
const char *dk_req_set(dk_req *r, const char *key, const char *value);
/* Parse a `map --alloc` spec: "SIZE[,key=value|flag]...". NULL on success, else why not. */
const char *dk_req_parse_spec(dk_req *r, const char *spec, char *why, size_t cap);
/* Whether the request needs IOBufferMemoryDescriptor_inTaskWithConstraints. */
bool dk_req_needs_constraints(const dk_req *r);
/* A one-line description of the request, e.g. "64 KiB, mask 0xffffffff, contiguous". */
void dk_req_describe(const dk_req *r, char *buf, size_t cap);
/* Create the buffer (prepared if pageable). NULL with the reason in req_failure. */
extern dk_failure req_failure;
IOBufferMemoryDescriptor *dk_req_create(const dk_req *r, const char **call);
/* Release a buffer made by dk_req_create (completing a pageable prepare). */
void dk_req_release(const dk_req *r, IOBufferMemoryDescriptor *b);

extern const char *const cache_names[10];

/* ---- segments and the independent check ------------------------------------------------ */
typedef struct seg { uint64_t bus, cpu, len; } seg;

typedef struct verdict {
  int  mask, align, contiguous, boundary, low;   /* 1 met, 0 broken, -1 not asked */
  bool all;                                      /* every asked constraint met, and frames seen */
  uint64_t device_segments;                      /* after splitting at boundary lines */
} verdict;

/* Walk the segments; returns the count written (0 when physical addresses are unavailable),
 * *total the count there is. */
size_t segments(IOBufferMemoryDescriptor *b, seg *out, size_t max, size_t *total);
/* Check every constraint the request asked for (and the limit the library derived) against
 * the segments, without trusting the library's own check. */
verdict verify(const dk_req *r, const dk_buffer_info *info, const seg *s, size_t n);

/* ---- JSON ------------------------------------------------------------------------------ */
typedef struct jw { FILE *f; int depth; bool first[32]; } jw;
void jw_init(jw *w, FILE *f);
void jw_obj(jw *w, const char *key);    /* key NULL inside arrays / at top level */
void jw_arr(jw *w, const char *key);
void jw_end_obj(jw *w);
void jw_end_arr(jw *w);
void jw_str(jw *w, const char *key, const char *v);   /* v NULL writes null */
void jw_u64(jw *w, const char *key, uint64_t v);
void jw_i64(jw *w, const char *key, int64_t v);
void jw_dbl(jw *w, const char *key, double v);
void jw_bool(jw *w, const char *key, bool v);
void jw_null(jw *w, const char *key);
void jw_done(jw *w);                    /* the final newline */

/* ---- progress bar: drawn on stderr only when stderr is a terminal ---------------------- */
typedef struct progress { const char *what; uint64_t total; bool tty; int last; } progress;
void progress_start(progress *p, const char *what, uint64_t total);
void progress_update(progress *p, uint64_t done);
void progress_end(progress *p);

/* ---- files ---------------------------------------------------------------------------- */
/* The first line of a small file as an integer; -1 if unreadable. */
long long read_ll(const char *path);

/* Physical memory ranges: System RAM from /proc/iomem (root), else zones from /proc/zoneinfo. */
typedef struct mem_range { uint64_t start, end; char name[40]; } mem_range;  /* end inclusive */
size_t memory_layout(mem_range *out, size_t max, const char **source);

/* Hugepage sizes from /sys/kernel/mm/hugepages. */
typedef struct huge_info {
  uint64_t size;
  long long nr, free, resv, surplus, overcommit;
} huge_info;
size_t hugepage_info(huge_info *out, size_t max);

/* getopt_long with the shared conventions: unknown flags and missing values exit 2 naming
 * the flag. Returns the option character, -1 at the end. */
struct option;
int getopt_cli(const char *cmd, int argc, char **argv, const struct option *opts);

/* Sub-commands (tools/cmd_*.c). */
int cmd_caps(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_alloc(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_reserve(int argc, char **argv);

/* Shown by alloc and demo. */
void show_buffer_text(const dk_req *r, IOBufferMemoryDescriptor *b, const char *indent);
void show_buffer_json(jw *w, const char *key, const dk_req *r, IOBufferMemoryDescriptor *b);
void print_failure_text(const char *indent, const dk_failure *f);   /* f NULL: dk_last_failure() */

#endif
