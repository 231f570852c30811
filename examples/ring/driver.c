/* examples/ring/driver.c: the driver half of the ring example. It listens on a Unix socket,
 * takes the first client (the device emulator, emulator.c) as a task, creates two buffers
 * meant for sharing (kIOMemoryKernelUserShared) and maps them into it: the ring read-write,
 * the status page read-only. Then it submits descriptors into the submission ring and checks
 * every completion the device writes back (sequence, length, checksum) against what it
 * computes itself. Layout and ordering rules: ring.h.
 *   ring_driver SOCKET [MESSAGES]       exit 0 when every completion matched */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ring.h"

#include <dmakit/dmakit.h>
#include <dmakit/share.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000   /* the longest the driver waits for the device to make progress */

static int fail(const char *what)
{
  const dk_failure *f = dk_last_failure();
  fprintf(stderr, "driver: %s: %s: %s\n", what, dk_ioreturn_name(f->code), f->text);
  return 1;
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}


/* A kIOMemoryKernelUserShared buffer in this process, zeroed, tagged for the client. */
static IOBufferMemoryDescriptor *shared_buffer(IOOptionBits direction, size_t bytes, uint32_t tag)
{
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t size = (bytes + page - 1) / page * page;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIOMemoryKernelUserShared | direction, size, page);
  if (b) IOMemoryDescriptor_setTag((IOMemoryDescriptor *)b, tag);
  return b;
}

/* Submit `n` descriptors and a stop descriptor; check every completion. 0 when all matched. */
static int run_ring(ring_shared *r, status_page *st, uint32_t n, task_t device)
{
  uint32_t submitted = 0, completed = 0, cq_head = 0;
  uint8_t expect[PAYLOAD_MAX];
  uint64_t last_progress = now_ms();
  unsigned idle = 0;
  bool stop_sent = false;
  while (!stop_sent) {
    bool progress = false;
    /* Submit while there is room. The acquire load of sq_head orders the device's reads of
     * the slot before our overwrite of it. */
    uint32_t head = atomic_load_explicit(&r->sq_head.value, memory_order_acquire);
    while (submitted - head < RING_SLOTS && (submitted < n || completed == n)) {
      ring_desc *d = &r->sq[submitted % RING_SLOTS];
      d->seq = submitted;
      if (submitted < n) {
        d->flags = 0;
        d->len = ring_payload(submitted, d->payload);
      } else {
        d->flags = DESC_STOP;   /* every completion is in: tell the device to stop */
        d->len = 0;
        stop_sent = true;
      }
      submitted++;
      atomic_store_explicit(&r->sq_tail.value, submitted, memory_order_release);
      progress = true;
      if (stop_sent) break;
    }
    /* Take completions. The device is another process: its tail is bounded before use and
     * each entry is copied out once, then checked. */
    uint32_t tail = atomic_load_explicit(&r->cq_tail.value, memory_order_acquire);
    if (tail - cq_head > RING_SLOTS) {
      fprintf(stderr, "driver: device published completion tail %u with head %u\n", tail, cq_head);
      return 1;
    }
    while (cq_head != tail) {
      ring_comp c = r->cq[cq_head % RING_SLOTS];
      uint32_t len = ring_payload(completed, expect);
      uint64_t sum = ring_checksum(expect, len);
      if (c.seq != completed || c.status != COMP_OK || c.len != len || c.checksum != sum) {
        fprintf(stderr,
                "driver: completion %u wrong: seq %u status %u len %u checksum %016llx "
                "(expected seq %u len %u checksum %016llx)\n",
                cq_head, c.seq, c.status, c.len, (unsigned long long)c.checksum, completed, len,
                (unsigned long long)sum);
        return 1;
      }
      completed++;
      cq_head++;
      atomic_store_explicit(&r->cq_head.value, cq_head, memory_order_release);
      progress = true;
    }
    if (completed > n) {
      fprintf(stderr, "driver: %u completions for %u descriptors\n", completed, n);
      return 1;
    }
    atomic_fetch_add_explicit(&st->heartbeat, 1, memory_order_relaxed);
    if (progress) {
      idle = 0;
      last_progress = now_ms();
      continue;
    }
    if (!dk_task_is_connected(device)) {
      fprintf(stderr, "driver: the device went away after %u of %u completions\n", completed, n);
      return 1;
    }
    if (now_ms() - last_progress > WAIT_MS) {
      fprintf(stderr, "driver: no progress for %d ms (%u submitted, %u completed)\n", WAIT_MS,
              submitted, completed);
      return 1;
    }
    backoff(&idle);
  }
  printf("driver: %u descriptors submitted, %u completions verified\n", n, completed);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s SOCKET [MESSAGES]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  unsigned long n = argc == 3 ? strtoul(argv[2], NULL, 0) : 100000;
  if (n == 0 || n > UINT32_MAX - RING_SLOTS) {
    fprintf(stderr, "driver: MESSAGES must be 1..%u\n", UINT32_MAX - RING_SLOTS);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  int rc = 1;
  dk_server *server = NULL;
  task_t device = NULL;
  IOBufferMemoryDescriptor *ring = NULL, *status = NULL;
  IOMemoryMap *ring_map = NULL, *status_map = NULL;

  /* The default policy admits processes of this user (and root), read-write. */
  if (dk_server_create(path, NULL, &server) != kIOReturnSuccess) return fail("dk_server_create");
  printf("driver: listening on %s\n", path);
  if (dk_server_accept(server, WAIT_MS, &device) != kIOReturnSuccess) {
    fail("dk_server_accept");
    goto out;
  }
  dk_peer peer;
  dk_access access;
  if (dk_task_get_peer(device, &peer, &access))
    printf("driver: device connected: pid %d uid %u, access %s\n", (int)peer.pid, (unsigned)peer.uid,
           access == DK_ACCESS_READ_WRITE ? "read-write" : "read-only");

  ring = shared_buffer(kIODirectionInOut, sizeof(ring_shared), RING_TAG);
  status = shared_buffer(kIODirectionOut, sizeof(status_page), STATUS_TAG);
  if (!ring || !status) {
    fail("IOBufferMemoryDescriptor_inTaskWithOptions");
    goto out;
  }
  ring_shared *r = IOBufferMemoryDescriptor_getBytesNoCopy(ring);
  status_page *st = IOBufferMemoryDescriptor_getBytesNoCopy(status);
  r->magic = RING_MAGIC;
  r->slots = RING_SLOTS;
  st->magic = STATUS_MAGIC;
  st->messages = (uint32_t)n;
  st->driver_pid = (uint32_t)getpid();

  /* Into the device's address space: IOMemoryMap_getAddress is its address, not ours. */
  ring_map = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)ring, device, 0,
                                                    kIOMapAnywhere, 0, 0);
  if (!ring_map) {
    fail("createMappingInTask(ring)");
    goto out;
  }
  status_map = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)status, device, 0,
                                                      kIOMapAnywhere | kIOMapReadOnly, 0, 0);
  if (!status_map) {
    fail("createMappingInTask(status, kIOMapReadOnly)");
    goto out;
  }
  printf("driver: ring (%llu bytes) at 0x%llx in the device, status page read-only at 0x%llx\n",
         (unsigned long long)IOMemoryMap_getLength(ring_map),
         (unsigned long long)IOMemoryMap_getAddress(ring_map),
         (unsigned long long)IOMemoryMap_getAddress(status_map));

  if (run_ring(r, st, (uint32_t)n, device) != 0) goto out;

  /* The device stops at the stop descriptor and disconnects. */
  uint64_t deadline = now_ms() + WAIT_MS;
  while (dk_task_is_connected(device) && now_ms() < deadline) {
    struct timespec ts = { 0, 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  if (dk_task_is_connected(device)) {
    fprintf(stderr, "driver: the device did not disconnect after the stop descriptor\n");
    goto out;
  }
  printf("driver: device disconnected; all %lu completions matched\n", n);
  rc = 0;
out:
  /* On failure, cut the device off first: it is told and keeps its mappings until it closes.
   * Releasing the maps while it is connected would unmap them under its feet. */
  if (rc != 0 && device) dk_task_disconnect(device);
  OSSafeReleaseNULL(status_map);
  OSSafeReleaseNULL(ring_map);
  OSSafeReleaseNULL(status);
  OSSafeReleaseNULL(ring);
  if (device) dk_task_release(device);
  dk_server_destroy(server);
  return rc;
}
