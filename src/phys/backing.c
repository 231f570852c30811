/* src/phys/backing.c: the first page provider. One memfd per buffer, mapped RW in this
 * process (the internal view every copy goes through), its pages allocated and locked when
 * wired (in steps, each checked against the memory budget, src/phys/budget.c), long-term pinned and their frames read once (one batched pagemap read) and cached
 * with the contiguous-run length of each page, so a physical query is two array loads. */
#include "phys/budget.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

static const char *why(int e) { return strerror(e); }

uint8_t *dk__reserve_aligned(size_t len, uint64_t align, uint64_t residue)
{
  size_t span = len + (size_t)align;
  if (span < len) { errno = ENOMEM; return NULL; }
  uint8_t *res = dk__mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (res == MAP_FAILED) return NULL;
  uint8_t *at = res + ((residue - (uint64_t)(uintptr_t)res) & (align - 1));
  if (at > res) dk__munmap(res, (size_t)(at - res));                 /* give back the slack */
  if (res + span > at + len) dk__munmap(at + len, (size_t)(res + span - (at + len)));
  return at;
}

bool dk__backing_create(dk_backing *b, size_t size, size_t valign)
{
  const dk_caps *caps = dk__caps();
  size_t page = caps->page_size;
  *b = DK_BACKING_INIT;
  b->shift = caps->page_shift;
  if (valign < page) valign = page;
  b->fd = dk__memfd_create("dmakit", MFD_CLOEXEC | MFD_ALLOW_SEALING);   /* sealed when shared */
  if (b->fd < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "memfd_create failed: %s", why(errno));
    return false;
  }
  if (dk__ftruncate(b->fd, (off_t)size) < 0) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "sizing the memfd to %zu bytes failed: %s",
             size, why(errno));
    goto fail;
  }
  b->size = size;
  if (valign == page) {
    void *p = dk__mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
    if (p == MAP_FAILED) goto fail_map;
    b->base = p;
    return true;
  }
  /* an aligned reservation, then the memfd placed over it */
  uint8_t *at = dk__reserve_aligned(size, valign, 0);
  if (!at) goto fail_map;
  if (dk__mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, b->fd, 0) == MAP_FAILED) {
    int e = errno;
    dk__munmap(at, size);
    errno = e;
    goto fail_map;
  }
  b->base = at;
  return true;
fail_map:
  dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "mapping %zu bytes failed: %s", size, why(errno));
fail:
  dk__close(b->fd);
  b->fd = -1;
  b->size = 0;
  return false;
}

/* Read the frames and the run table; needs the pages allocated and locked. */
static bool read_frames(dk_backing *b)
{
  size_t n = b->size >> b->shift;
  b->pfn = dk__calloc(n, sizeof *b->pfn);
  b->run = dk__calloc(n, sizeof *b->run);
  if (!b->pfn || !b->run) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the frame table of %zu pages", n);
    goto fail;
  }
  if (dk__pagemap_frames((uintptr_t)b->base, n, b->pfn) < 0) {
    dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_RESOURCE, "reading /proc/self/pagemap failed: %s",
             why(errno));
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    if (b->pfn[i] == 0) {
      dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_RESOURCE,
               "page %zu of a locked buffer has no frame in pagemap", i);
      goto fail;
    }
  }
  dk__frame_runs(b->pfn, b->run, n);
  b->frames_known = true;
  return true;
fail:
  dk__free(b->pfn);
  dk__free(b->run);
  b->pfn = NULL;
  b->run = NULL;
  return false;
}

/* Give back what a failed wire took: the locks, and the pages it allocated when the file had
 * none before (a pageable buffer's own contents are left alone). */
static void wire_undo(dk_backing *b, size_t locked, size_t taken, bool was_empty)
{
  if (locked) dk__munlock(b->base, locked);
  if (was_empty && taken)
    (void)dk__fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)taken);
}

bool dk__backing_wire(dk_backing *b)
{
  if (b->wired) return true;
  const dk_caps *caps = dk__caps();
  /* With frame numbers visible an unlocked page is an error; without, locking past
   * RLIMIT_MEMLOCK falls back to populated but unlocked (no address leaves dmakit). */
  bool must_lock = caps->pagemap_frames;
  unsigned what = must_lock ? DK_BUDGET_LOCKED : 0;
  /* what the pages will newly take: a pageable buffer's touched pages exist already */
  struct stat st;
  bool known = dk__fstat(b->fd, &st) == 0;
  uint64_t have = known ? (uint64_t)st.st_blocks * 512 : 0;
  uint64_t need = b->size > have ? b->size - have : 0;
  bool was_empty = known && have == 0;   /* only then may a failure punch out what it took */
  char purpose[64], sz[24];
  snprintf(purpose, sizeof purpose, "wiring %s of 4K pages", dk__budget_size(b->size, sz, sizeof sz));
  if (!dk__budget_check(need, what, false, purpose)) return false;
  /* Populate in steps: each allocates, maps and locks at most dk__budget_step() bytes, and the
   * budget is read again before the next, so memory running short ends in a refusal (and
   * everything given back) rather than in the OOM killer. */
  size_t step = (size_t)dk__budget_step(), locked = 0, taken = 0;
  bool lock = true;
  b->locked = false;
  for (size_t off = 0; off < b->size;) {
    size_t n = b->size - off < step ? b->size - off : step;
    if (off && !dk__budget_check(need > taken ? need - taken : 0, what, true, purpose)) goto fail;
    /* allocate the pages now: a full tmpfs reports ENOSPC here rather than SIGBUS later */
    if (dk__fallocate(b->fd, 0, (off_t)off, (off_t)n) < 0) {
      dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "allocating %zu bytes of pages failed: %s",
               b->size, why(errno));
      goto fail;
    }
    taken = off + n;
    /* Map them into our page tables now; mlock would too, but a sanitizer runtime may make
     * mlock a no-op, and the frames must be present before pagemap is read. */
    if (dk__madvise(b->base + off, n, MADV_POPULATE_WRITE) < 0) {
      if (errno != EINVAL) {
        dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "populating %zu bytes failed: %s", b->size,
                 why(errno));
        goto fail;
      }
      for (size_t o = off; o < off + n; o += (size_t)1 << b->shift)   /* kernels before 5.14 */
        (void)*(volatile uint8_t *)(b->base + o);
    }
    if (lock && dk__mlock(b->base + off, n) == 0) {
      locked = off + n;
    } else if (lock && !must_lock && (errno == ENOMEM || errno == EPERM || errno == EAGAIN)) {
      /* over RLIMIT_MEMLOCK without privilege: the rest stays populated but unlocked */
      if (locked) dk__munlock(b->base, locked);
      locked = 0;
      lock = false;
    } else if (lock) {
      int e = errno;
      if (e == ENOMEM || e == EPERM || e == EAGAIN)
        dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE,
                 "locking %zu bytes failed (%s); RLIMIT_MEMLOCK is %llu bytes", b->size, why(e),
                 (unsigned long long)caps->memlock_limit);
      else
        dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_RESOURCE, "mlock failed: %s", why(e));
      goto fail;
    }
    off += n;
  }
  b->locked = lock;
  /* Pin only where frames can be handed out: without CAP_SYS_ADMIN no address leaves
   * dmakit, and the pin would cost locked-memory budget for nothing. */
  if (caps->pagemap_frames && caps->pin_method == DK_PIN_IO_URING) {
    if (dk__pin(b->base, b->size, &b->pin) < 0) {
      dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PIN, "pinning %zu bytes through io_uring failed: %s",
               b->size, why(errno));
      goto fail_unlock;
    }
    b->pinned = true;
  } else if (caps->pin_method == DK_PIN_NO_COMPACTION) {
    b->pinned = true;
  }
  if (caps->pagemap_frames && !read_frames(b)) goto fail_unpin;
  b->wired = true;
  return true;
fail_unpin:
  dk__unpin(&b->pin);
  b->pinned = false;
fail_unlock:
  b->locked = false;
fail:
  wire_undo(b, locked, taken, was_empty);
  return false;
}

void dk__backing_unwire(dk_backing *b)
{
  if (!b->wired) return;
  dk__unpin(&b->pin);
  b->pinned = false;
  if (b->locked) dk__munlock(b->base, b->size);
  b->locked = false;
  dk__free(b->pfn);
  dk__free(b->run);
  b->pfn = NULL;
  b->run = NULL;
  b->frames_known = false;
  b->wired = false;
}

void dk__backing_destroy(dk_backing *b)
{
  dk__backing_unwire(b);
  if (b->base) dk__munmap(b->base, b->size);
  if (b->fd >= 0) dk__close(b->fd);
  *b = DK_BACKING_INIT;
}

void *dk__backing_map(const dk_backing *b, size_t off, size_t len, int prot, size_t guard,
                      void *fixed, bool overwrite, bool populate)
{
  int pop = populate ? MAP_POPULATE : 0;
  if (!guard) {
    int how = fixed ? (overwrite ? MAP_FIXED : MAP_FIXED_NOREPLACE) : 0;
    void *p = dk__mmap(fixed, len, prot, MAP_SHARED | how | pop, b->fd, (off_t)off);
    if (p == MAP_FAILED) return NULL;
    if (fixed && p != fixed) {     /* an old kernel ignoring MAP_FIXED_NOREPLACE */
      dk__munmap(p, len);
      errno = EEXIST;
      return NULL;
    }
    if (fixed && overwrite) dk__prim_count_adopted(len);
    return p;
  }
  size_t span = len + 2 * guard;
  uint8_t *res = dk__mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (res == MAP_FAILED) return NULL;
  void *p = dk__mmap(res + guard, len, prot, MAP_SHARED | MAP_FIXED | pop, b->fd, (off_t)off);
  if (p == MAP_FAILED) {
    int e = errno;
    dk__munmap(res, span);
    errno = e;
    return NULL;
  }
  /* The reservation is counted once, as `span`; the fixed mapping replaced part of it. */
  return p;
}

int dk__backing_unmap(void *addr, size_t len, size_t guard)
{
  return dk__munmap((uint8_t *)addr - guard, len + 2 * guard);
}

int dk__backing_discard(dk_backing *b)
{
  if (b->wired) { errno = EBUSY; return -1; }
  return dk__fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)b->size);
}
