/* src/mem/prov_user.c: memory the caller already has (IOMemoryDescriptor::withAddressRange and
 * friends): ranges of this process's address space, or bus addresses the caller names
 * (physical, remote). Nothing is allocated or freed here. Wiring a virtual record long-term
 * pins each range's pages (the io_uring pin buffers get, so the frames never move while it is
 * held, even if the caller unmaps the range) and reads their frames in one batched pagemap
 * read per range; unwiring gives the pins back. A range the pin cannot take (unmapped,
 * read-only for a device write, PROT_NONE, device or file memory) is named in the refusal and
 * nothing stays held. */
#include "mem/mem.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t page_size(void) { return dk__caps()->page_size; }

/* The page span [first, end) of a range. */
static void span_of(const dk_urange *r, uint64_t *first, uint64_t *end)
{
  uint64_t p = page_size();
  *first = r->addr & ~(p - 1);
  *end = (r->addr + r->len + p - 1) & ~(p - 1);
}

bool dk__user_create(dk_mem *m, const uint64_t (*ranges)[2], uint32_t count, bool virt)
{
  *m = DK_MEM_NONE_INIT;
  dk_user *u = dk__calloc(1, sizeof *u);
  dk_urange *r = count ? dk__calloc(count, sizeof *r) : NULL;
  if (!u || (count && !r)) {
    dk__free(u);
    dk__free(r);
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a record of %u ranges", count);
    return false;
  }
  uint64_t off = 0, pages = 0, p = page_size();
  for (uint32_t i = 0; i < count; i++) {
    r[i].addr = ranges[i][0];
    r[i].len = ranges[i][1];
    r[i].off = off;
    r[i].page0 = pages;
    off += r[i].len;
    if (virt && r[i].len) {
      uint64_t first, end;
      span_of(&r[i], &first, &end);
      pages += (end - first) / p;
    }
  }
  u->count = count;
  u->virt = virt;
  u->r = r;
  u->pages = pages;
  m->kind = DK_PROVIDER_USER;
  u->va = virt && count ? (uint8_t *)(uintptr_t)r[0].addr : NULL;
  u->len = off;
  m->u.user = u;
  m->flags = virt ? 0 : DK_MEM_WIRED | DK_MEM_PINNED | DK_MEM_FRAMES_FIXED;  /* bus addresses as given */
  return true;
}

const dk_urange *dk__user_range_at(const dk_user *u, uint64_t off)
{
  uint32_t lo = 0, hi = u->count;
  while (lo < hi) {                       /* the last range starting at or before off */
    uint32_t mid = lo + (hi - lo) / 2;
    if (u->r[mid].off <= off) lo = mid + 1;
    else hi = mid;
  }
  while (lo > 0 && u->r[lo - 1].len == 0) lo--;   /* skip empty ranges at the same offset */
  for (uint32_t i = lo ? lo - 1 : 0; i < u->count; i++)
    if (off < u->r[i].off + u->r[i].len) return &u->r[i];
  return NULL;
}

bool dk__vma_find(uint64_t va, uint64_t *end, char perms[5])
{
  int fd = dk__open("/proc/self/maps", O_RDONLY);
  if (fd < 0) return false;
  char buf[8192];
  size_t have = 0;
  bool found = false, eof = false;
  while (!found && !eof) {
    ssize_t n = dk__read(fd, buf + have, sizeof buf - 1 - have);
    if (n <= 0) eof = true;
    else have += (size_t)n;
    buf[have] = 0;
    char *line = buf, *nl;
    while ((nl = strchr(line, '\n')) || (eof && *line)) {
      if (nl) *nl = 0;
      unsigned long long s = 0, e = 0;
      char p[8] = "";
      if (sscanf(line, "%llx-%llx %7s", &s, &e, p) == 3 && s <= va && va < e) {
        *end = e;
        memcpy(perms, p, 4);
        perms[4] = 0;
        found = true;
        break;
      }
      if (!nl) { line += strlen(line); break; }
      line = nl + 1;
    }
    if (found) break;
    have = strlen(line);                  /* a partial line waits for the next read */
    memmove(buf, line, have);
    if (have == sizeof buf - 1) have = 0; /* longer than any line of maps: dropped */
  }
  dk__close(fd);
  return found;
}

/* Why the pin (or faulting in) could not take [first, end): what the mappings there are. */
static void refuse(const dk_urange *r, uint64_t first, uint64_t end, bool device_writes, int err)
{
  unsigned long long a = r->addr, l = r->len;
  for (uint64_t va = first; va < end;) {
    uint64_t vend = 0;
    char perms[5];
    if (!dk__vma_find(va, &vend, perms)) {
      dk__fail(kIOReturnVMError, DK_CONSTRAINT_ARGUMENT,
               "range 0x%llx+0x%llx is not mapped in this process (nothing at 0x%llx)", a, l, (unsigned long long)va);
      return;
    }
    if (perms[0] != 'r') {
      dk__fail(kIOReturnNotReadable, DK_CONSTRAINT_ARGUMENT,
               "range 0x%llx+0x%llx cannot be read (PROT_NONE at 0x%llx)", a, l, (unsigned long long)va);
      return;
    }
    if (perms[1] != 'w') {
      dk__fail(device_writes ? kIOReturnNotWritable : kIOReturnCannotWire, DK_CONSTRAINT_ARGUMENT,
               "range 0x%llx+0x%llx is read-only at 0x%llx (%s); the long-term pin that keeps its frames in "
               "place needs write access", a, l, (unsigned long long)va,
               device_writes ? "the device writes it: direction In" : "direction Out");
      return;
    }
    va = vend;
  }
  if (err == EOPNOTSUPP || err == EFAULT || err == EINVAL)
    dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PIN,
             "range 0x%llx+0x%llx cannot be pinned: only anonymous, shared-memory (memfd, MAP_SHARED|MAP_ANONYMOUS) "
             "and hugetlb pages can be, not pages of a file on disk or of a device (%s)", a, l, strerror(err));
  else if (err == ENOMEM || err == EAGAIN)
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "pinning range 0x%llx+0x%llx failed: %s (RLIMIT_MEMLOCK is "
             "%llu bytes)", a, l, strerror(err), (unsigned long long)dk__caps()->memlock_limit);
  else
    dk__fail_errno(err, DK_CONSTRAINT_PIN, "pinning range 0x%llx+0x%llx", a, l);
}

/* Frames of range i's pages into pfn[], their runs into run[]; needs them pinned. */
static bool read_frames(dk_user *u, uint32_t i)
{
  const dk_urange *r = &u->r[i];
  uint64_t first, end, p = page_size();
  span_of(r, &first, &end);
  size_t n = (size_t)((end - first) / p);
  uint64_t *pfn = u->pfn + r->page0;
  if (dk__pagemap_frames((uintptr_t)first, n, pfn) < 0) {
    dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_RESOURCE, "reading /proc/self/pagemap failed: %s", strerror(errno));
    return false;
  }
  for (size_t k = 0; k < n; k++)
    if (!pfn[k]) {
      dk__fail(kIOReturnCannotWire, DK_CONSTRAINT_PIN, "page 0x%llx of range 0x%llx+0x%llx has no frame after pinning",
               (unsigned long long)(first + k * p), (unsigned long long)r->addr, (unsigned long long)r->len);
      return false;
    }
  dk__frame_runs(pfn, u->run + r->page0, n);
  return true;
}

static void unwire(dk_mem *m)
{
  dk_user *u = m->u.user;
  if (!u->virt) return;
  if (u->pins)
    for (uint32_t i = 0; i < u->count; i++) dk__unpin(&u->pins[i]);
  dk__free(u->pins);
  dk__free(u->pfn);
  dk__free(u->run);
  u->pins = NULL;
  u->pfn = NULL;
  u->run = NULL;
  u->frames_known = false;
  m->flags &= (uint8_t)~(DK_MEM_WIRED | DK_MEM_PINNED);
}

bool dk__user_wire(dk_mem *m, bool device_writes)
{
  dk_user *u = m->u.user;
  if (!u->virt || (m->flags & DK_MEM_WIRED)) return true;
  const dk_caps *caps = dk__caps();
  /* Frames are pinned and read only where they can be handed out (CAP_SYS_ADMIN): without it no
   * address leaves dmakit, and the pin would cost locked-memory budget for nothing. The pages
   * are still faulted in, which says at once whether the range can be used at all. */
  bool frames = caps->pagemap_frames;
  bool pin = frames && caps->pin_method == DK_PIN_IO_URING;
  if (u->pages) {
    if (pin) {
      if (!(u->pins = dk__calloc(u->count, sizeof *u->pins))) goto nomem;
      for (uint32_t i = 0; i < u->count; i++) u->pins[i] = DK_PIN_INIT;
    }
    if (frames && (!(u->pfn = dk__calloc((size_t)u->pages, sizeof *u->pfn)) ||
                   !(u->run = dk__calloc((size_t)u->pages, sizeof *u->run))))
      goto nomem;
  }
  for (uint32_t i = 0; i < u->count; i++) {
    const dk_urange *r = &u->r[i];
    if (!r->len) continue;
    uint64_t first, end;
    span_of(r, &first, &end);
    if (pin) {
      if (dk__pin((void *)(uintptr_t)first, (size_t)(end - first), &u->pins[i]) < 0) {
        refuse(r, first, end, device_writes, errno);
        goto fail;
      }
    } else if (dk__madvise((void *)(uintptr_t)first, (size_t)(end - first),
                           device_writes ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) < 0) {
      refuse(r, first, end, device_writes, errno);
      goto fail;
    }
    if (frames && !read_frames(u, i)) goto fail;
  }
  u->frames_known = frames;
  m->flags |= DK_MEM_WIRED | (pin || caps->pin_method == DK_PIN_NO_COMPACTION ? DK_MEM_PINNED : 0);
  return true;
nomem:
  dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the frame table of %llu pages",
           (unsigned long long)u->pages);
fail:
  unwire(m);
  return false;
}

static bool user_can(const dk_mem_req *rq, bool report)
{
  (void)rq;
  if (report)
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT, "memory the caller owns is not allocated here");
  return false;
}

static bool user_alloc(dk_mem *m, const dk_mem_req *rq)
{
  (void)m;
  return user_can(rq, true);
}

static void user_free(dk_mem *m)
{
  unwire(m);
  dk__free(m->u.user->r);
  dk__free(m->u.user);
}

static bool user_wire(dk_mem *m) { return dk__user_wire(m, true); }

static uint64_t user_phys(const dk_mem *m, uint64_t off, uint64_t *run)
{
  const dk_user *u = m->u.user;
  const dk_urange *r = dk__user_range_at(u, off);
  if (!r) {
    if (run) *run = 0;
    return 0;
  }
  uint64_t in = off - r->off, rest = r->len - in;
  if (!u->virt) {                          /* bus addresses as the caller gave them */
    if (run) *run = rest;
    return r->addr + in;
  }
  uint64_t p = page_size(), shift = dk__caps()->page_shift;
  uint64_t va = r->addr + in;
  uint64_t k = r->page0 + ((va >> shift) - (r->addr >> shift));
  uint64_t bytes = ((uint64_t)u->run[k] << shift) - (va & (p - 1));
  if (run) *run = bytes < rest ? bytes : rest;
  return (u->pfn[k] << shift) | (va & (p - 1));
}

/* A linear view of the caller's memory is made by iokit (map_at in gmd.c): this entry maps
 * nothing by itself. */
static void *user_map(const dk_mem *m, uint64_t off, uint64_t len, int prot, size_t guard, void *fixed,
                      bool overwrite, bool populate, void **base, size_t *span)
{
  (void)m; (void)off; (void)len; (void)prot; (void)guard; (void)fixed; (void)overwrite; (void)populate;
  (void)base; (void)span;
  errno = ENOTSUP;
  return NULL;
}

static uint64_t user_granule(const dk_mem *m)
{
  (void)m;
  return page_size();
}

static int user_share(const dk_mem *m, uint64_t off, uint64_t len, uint64_t *file_off, uint64_t *span,
                      uint64_t *in_page)
{
  (void)m; (void)off; (void)len; (void)file_off; (void)span; (void)in_page;
  dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
           "memory the driver already had (withAddressRange) has no file dmakit can send to a client: "
           "share an IOBufferMemoryDescriptor made with kIOMemoryKernelUserShared instead");
  errno = ENOTSUP;
  return -1;
}

static int user_discard(dk_mem *m)
{
  (void)m;
  errno = ENOTSUP;                     /* the caller's memory is the caller's */
  return -1;
}

const dk_provider_ops dk__prov_user = {
  DK_PROVIDER_USER, "user-range", user_can, user_alloc, user_free, user_wire, unwire,
  user_phys, user_map, user_granule, user_share, user_discard,
};
