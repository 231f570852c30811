/* src/phys/phys.h: where physical memory comes from. caps.c probes the machine once;
 * pagemap.c translates virtual pages to frames in batches; pin.c holds frames in place
 * (io_uring long-term pins); backing.c is the first provider: a memfd of 4K pages, populated,
 * locked and pinned, with its frames read once and cached while it is wired. */
#ifndef DK_PHYS_H
#define DK_PHYS_H

#include "base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- caps.c ----------------------------------------------------------------------- */
const dk_caps *dk__caps(void);

/* ---- pagemap.c ---------------------------------------------------------------------- */
/* Frame numbers of `npages` pages from page-aligned `va`, one batched read. pfn[i] is 0 for a
 * page that is not present or when frame numbers are hidden (not CAP_SYS_ADMIN).
 * 0, or -1 with errno. */
int dk__pagemap_frames(uintptr_t va, size_t npages, uint64_t *pfn);
/* run[i] = pages from page i to the end of its physically contiguous run, for n > 0 frames. */
void dk__frame_runs(const uint64_t *pfn, uint32_t *run, size_t n);

/* ---- pin.c ------------------------------------------------------------------------ */
typedef struct dk_pin {
  int16_t  ring;     /* -1 when not pinned */
  uint16_t nslots;
  uint32_t slot;
  uint64_t bytes;    /* pinned */
} dk_pin;
#define DK_PIN_INIT ((dk_pin){ -1, 0, 0, 0 })

/* Probe the io_uring pin once; fills detail. */
dk_pin_method dk__pin_probe(char *detail, size_t cap);
/* Long-term pin [addr, addr+len) (page-aligned, RW-mapped); 0 or -1 with errno. */
int  dk__pin(void *addr, size_t len, dk_pin *pin);
void dk__unpin(dk_pin *pin);
/* Pins live now (tests: no leak). */
long dk__pins_live(void);
/* The slot tables agree with the pin counts; 0, or -1 with why. */
int  dk__pin_validate(char *why, size_t cap);

/* ---- address space (backing.c) --------------------------------------------------- */
/* Reserve exactly [A, A+len) of inaccessible address space with A % align == residue (align a
 * power of two), for MAP_FIXED mappings to replace; NULL with errno. */
uint8_t *dk__reserve_aligned(size_t len, uint64_t align, uint64_t residue);

/* ---- backing.c ---------------------------------------------------------------------- */
typedef struct dk_backing {
  int       fd;            /* the memfd; -1 when none */
  uint8_t  *base;          /* internal RW mapping in this process */
  size_t    size;          /* bytes, a page multiple */
  unsigned  shift;         /* page shift */
  bool      wired;         /* allocated, locked (and pinned when frames are visible) */
  bool      locked;        /* mlock held (false only unprivileged, over RLIMIT_MEMLOCK) */
  bool      pinned;
  bool      frames_known;  /* pfn[] and run[] are valid */
  dk_pin    pin;
  uint64_t *pfn;           /* frame of each page, while wired */
  uint32_t *run;           /* run[i]: pages from i to the end of its physically contiguous run */
} dk_backing;

#define DK_BACKING_INIT ((dk_backing){ .fd = -1, .pin = { -1, 0, 0, 0 } })

/* A zero-filled memfd of `size` bytes mapped RW at an address aligned to `valign` (a power of
 * two; page or less means page). Records a failure and returns false on error. */
bool dk__backing_create(dk_backing *b, size_t size, size_t valign);
/* Allocate every page, lock it, pin it and read its frames (when frame numbers are visible). */
bool dk__backing_wire(dk_backing *b);
void dk__backing_unwire(dk_backing *b);
void dk__backing_destroy(dk_backing *b);
/* Physical address of byte `off`, and the bytes from there to the end of its contiguous run.
 * Needs frames_known. */
static inline uint64_t dk__backing_phys(const dk_backing *b, size_t off, size_t *run_bytes)
{
  unsigned shift = b->shift;
  size_t idx = off >> shift, in = off & ((1ul << shift) - 1);
  if (run_bytes) *run_bytes = ((size_t)b->run[idx] << shift) - in;
  return (b->pfn[idx] << shift) | in;
}
/* Map [off, off+len) of the memfd (off page-aligned) again in this process. With `guard`
 * bytes of inaccessible address space on each side; at `fixed` when non-NULL (replacing what
 * is there only with `overwrite`). Returns the mapping of the range, or NULL with errno. */
void *dk__backing_map(const dk_backing *b, size_t off, size_t len, int prot, size_t guard,
                      void *fixed, bool overwrite, bool populate);
int dk__backing_unmap(void *addr, size_t len, size_t guard);
/* Discard the contents (they read back zero); only while not wired. */
int dk__backing_discard(dk_backing *b);

#endif
