/* src/phys/pin.c: frames that never move. mlock keeps a page resident but compaction may still
 * migrate it; a long-term pin (FOLL_LONGTERM, what VFIO type1 takes for DMA) makes migration
 * fail instead. User space gets that pin by registering the memory as an io_uring fixed
 * buffer. Each ring holds a sparse table of RING_SLOTS buffers of at most 1 GiB each; a pin
 * takes consecutive slots of one ring, unpinning clears them. Rings are made on demand. */
#include "base/fork.h"
#include "phys/budget.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#define RING_SLOTS   16384u              /* the kernel's IORING_MAX_REG_BUFFERS */
#define MAX_RINGS    64
#define SLOT_BYTES   (1ull << 30)        /* the kernel's limit per registered buffer */

typedef struct ring {
  int      fd;
  uint32_t used;
  uint64_t bits[RING_SLOTS / 64];        /* 1 = slot holds a pin */
} ring;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static ring *g_rings[MAX_RINGS];
static int g_nrings;
static long g_pins, g_slots;
/* Ring numbers in pins are g_base + the index: rings numbered below g_base are a parent's
 * (this process is a forked child), whose pins are the parent's to give back. */
static int g_base;

/* In a forked child: the rings are shared with the parent, and so are their pins. The child
 * closes its descriptors of them (the parent's stay open) and makes rings of its own. */
static void pins_in_child(void)
{
  pthread_mutex_init(&g_lock, NULL);
  for (int i = 0; i < g_nrings; i++) {
    dk__close(g_rings[i]->fd);
    dk__free(g_rings[i]);
    g_rings[i] = NULL;
  }
  g_nrings = 0;
  g_pins = g_slots = 0;
  g_base += MAX_RINGS;
}

static int ring_open(void)
{
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = dk__io_uring_setup(1, &p);
  if (fd < 0) return -1;
  struct io_uring_rsrc_register rr;
  memset(&rr, 0, sizeof rr);
  rr.nr = RING_SLOTS;
  rr.flags = IORING_RSRC_REGISTER_SPARSE;
  if (dk__io_uring_register(fd, IORING_REGISTER_BUFFERS2, &rr, sizeof rr) < 0) {
    int e = errno;
    dk__close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

dk_pin_method dk__pin_probe(char *detail, size_t cap)
{
  int fd = ring_open();
  if (fd < 0) {
    snprintf(detail, cap, "io_uring buffer registration unavailable (%s)", strerror(errno));
    return DK_PIN_NONE;
  }
  dk__close(fd);
  snprintf(detail, cap, "frames are long-term pinned through io_uring buffer registration");
  return DK_PIN_IO_URING;
}

static int slots_free(const ring *r, uint32_t at, uint32_t n)
{
  for (uint32_t i = at; i < at + n; i++)
    if (r->bits[i / 64] & (1ull << (i % 64))) return 0;
  return 1;
}
static void slots_mark(ring *r, uint32_t at, uint32_t n, int on)
{
  for (uint32_t i = at; i < at + n; i++) {
    if (on) r->bits[i / 64] |= 1ull << (i % 64);
    else    r->bits[i / 64] &= ~(1ull << (i % 64));
  }
  r->used = on ? r->used + n : r->used - n;
}
/* First run of n free slots, or -1. */
static long slots_find(const ring *r, uint32_t n)
{
  if (RING_SLOTS - r->used < n) return -1;
  for (uint32_t at = 0; at + n <= RING_SLOTS; at++) {
    if (r->bits[at / 64] == ~0ull) { at |= 63; continue; }
    if (slots_free(r, at, n)) return (long)at;
  }
  return -1;
}

static int update(int fd, uint32_t slot, struct iovec *iov, uint32_t n)
{
  struct io_uring_rsrc_update2 up;     /* tags stay 0: none wanted */
  memset(&up, 0, sizeof up);
  up.offset = slot;
  up.data = (uint64_t)(uintptr_t)iov;
  up.nr = n;
  int r = dk__io_uring_register(fd, IORING_REGISTER_BUFFERS_UPDATE, &up, sizeof up);
  return r < 0 ? -1 : 0;
}

int dk__pin(void *addr, size_t len, dk_pin *pin)
{
  uint64_t n64 = (len + SLOT_BYTES - 1) / SLOT_BYTES;
  if (len == 0 || n64 > RING_SLOTS) { errno = EINVAL; return -1; }
  uint32_t n = (uint32_t)n64;
  struct iovec *iov = dk__calloc(n, sizeof *iov);
  if (!iov) return -1;
  for (uint32_t i = 0; i < n; i++) {
    size_t off = (size_t)i * SLOT_BYTES;
    iov[i].iov_base = (uint8_t *)addr + off;
    iov[i].iov_len = len - off < SLOT_BYTES ? len - off : SLOT_BYTES;
  }
  int rc = -1, e = 0;
  pthread_mutex_lock(&g_lock);
  int ri = -1;
  long slot = -1;
  for (int i = 0; i < g_nrings && slot < 0; i++)
    if ((slot = slots_find(g_rings[i], n)) >= 0) ri = i;
  if (slot < 0) {
    if (g_nrings == MAX_RINGS) { e = ENOSPC; goto out; }
    ring *r = dk__calloc(1, sizeof *r);
    if (!r) { e = errno; goto out; }
    if ((r->fd = ring_open()) < 0) { e = errno; dk__free(r); goto out; }
    if (!g_nrings) dk__fork_register(DK_FORK_PIN, pins_in_child);
    ri = g_nrings;
    g_rings[g_nrings++] = r;
    slot = 0;
  }
  if (update(g_rings[ri]->fd, (uint32_t)slot, iov, n) < 0) { e = errno; goto out; }
  slots_mark(g_rings[ri], (uint32_t)slot, n, 1);
  pin->ring = (int16_t)(g_base + ri);
  pin->slot = (uint32_t)slot;
  pin->nslots = (uint16_t)n;
  pin->bytes = len;
  g_pins++;
  g_slots += n;
  rc = 0;
out:
  pthread_mutex_unlock(&g_lock);
  dk__free(iov);
  if (rc) errno = e;
  return rc;
}

void dk__unpin(dk_pin *pin)
{
  if (pin->ring < 0) return;
  struct iovec none = { NULL, 0 };
  pthread_mutex_lock(&g_lock);
  if (pin->ring < g_base) {              /* a parent's pin: it gives it back, not this child */
    pthread_mutex_unlock(&g_lock);
    *pin = DK_PIN_INIT;
    return;
  }
  ring *r = g_rings[pin->ring - g_base];
  /* Clearing a slot drops its pin. A failure here leaves the pages pinned until the slot is
   * reused or the ring closes: never unpinned early, the safe direction. */
  for (uint32_t i = 0; i < pin->nslots; i++)
    (void)update(r->fd, pin->slot + i, &none, 1);
  slots_mark(r, pin->slot, pin->nslots, 0);
  g_pins--;
  g_slots -= pin->nslots;
  pthread_mutex_unlock(&g_lock);
  dk__budget_note_release(pin->bytes);   /* some kernels free unregistered buffers later */
  *pin = DK_PIN_INIT;
}

long dk__pins_live(void)
{
  pthread_mutex_lock(&g_lock);
  long n = g_pins;
  pthread_mutex_unlock(&g_lock);
  return n;
}

int dk__pin_validate(char *why, size_t cap)
{
  int rc = 0;
  pthread_mutex_lock(&g_lock);
  long slots = 0;
  for (int i = 0; i < g_nrings && rc == 0; i++) {
    uint32_t bits = 0;
    for (uint32_t w = 0; w < RING_SLOTS / 64; w++) bits += (uint32_t)__builtin_popcountll(g_rings[i]->bits[w]);
    if (bits != g_rings[i]->used) {
      snprintf(why, cap, "pin ring %d: %u slots marked, %u counted", i, bits, g_rings[i]->used);
      rc = -1;
    }
    slots += bits;
  }
  if (rc == 0 && (slots != g_slots || g_pins < 0 || g_pins > g_slots)) {
    snprintf(why, cap, "pins: %ld slots marked, %ld held by %ld pins", slots, g_slots, g_pins);
    rc = -1;
  }
  pthread_mutex_unlock(&g_lock);
  return rc;
}
