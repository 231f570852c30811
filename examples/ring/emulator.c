/* examples/ring/emulator.c: the device half of the ring example, a separate process. It
 * connects to the driver (driver.c), waits for the two buffers the driver maps into it and
 * tells them apart by their tags, shows that the kernel refuses writes to the read-only status
 * page (a forked child that writes it dies of SIGSEGV; mprotect cannot make it writable), then
 * "processes" each descriptor of the submission ring (a checksum of its payload) and writes a
 * completion into the completion ring until the driver's stop descriptor. Layout: ring.h.
 *   ring_emulator SOCKET                exit 0 after the stop descriptor */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ring.h"

#include <dmakit/dmakit.h>
#include <dmakit/share.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000   /* the longest the device waits for the driver */

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}


/* The driver may still be starting: retry until its socket answers. */
static dk_client *connect_driver(const char *path)
{
  uint64_t deadline = now_ms() + WAIT_MS;
  for (;;) {
    dk_client *c = NULL;
    IOReturn ret = dk_client_connect(path, NULL, &c);
    if (ret == kIOReturnSuccess) return c;
    if (ret == kIOReturnNotPermitted || now_ms() > deadline) {
      fprintf(stderr, "emulator: dk_client_connect(%s): %s: %s\n", path, dk_ioreturn_name(ret),
              dk_last_failure()->text);
      return NULL;
    }
    sleep_ms(20);
  }
}

/* Write the read-only page from a child process: the kernel must kill it with SIGSEGV. And
 * mprotect must refuse to make the page writable (the file description is read-only). */
static int show_read_only(volatile uint32_t *word, const dk_client_mapping *m)
{
  pid_t pid = fork();
  if (pid < 0) {
    perror("emulator: fork");
    return 1;
  }
  if (pid == 0) {
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGSEGV, SIG_DFL);   /* a sanitizer's handler would turn the fault into an exit */
    *word = 0xdeadbeef;
    _exit(0);                   /* the write went through: read-only is not enforced */
  }
  int status;
  if (waitpid(pid, &status, 0) != pid) {
    perror("emulator: waitpid");
    return 1;
  }
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV) {
    fprintf(stderr, "emulator: a write to the read-only status page did not fault (status 0x%x)\n",
            (unsigned)status);
    return 1;
  }
  printf("emulator: writing the read-only status page: child killed by SIGSEGV, as expected\n");

  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  void *start = (void *)(uintptr_t)(m->address & ~(uint64_t)(page - 1));
  if (mprotect(start, page, PROT_READ | PROT_WRITE) == 0) {
    fprintf(stderr, "emulator: mprotect made the read-only status page writable\n");
    return 1;
  }
  printf("emulator: mprotect(PROT_WRITE) on it: %s, as expected\n", strerror(errno));
  return 0;
}

/* Process descriptors until the stop descriptor. 0 when the driver's count was met. */
static int run_device(ring_shared *r, const status_page *st, dk_client *c)
{
  uint32_t sq_head = 0, cq_tail = 0, processed = 0;
  uint64_t last_progress = now_ms();
  unsigned idle = 0;
  for (;;) {
    /* The driver's tail is bounded before use; each descriptor is copied out once. */
    uint32_t tail = atomic_load_explicit(&r->sq_tail.value, memory_order_acquire);
    if (tail - sq_head > RING_SLOTS) {
      fprintf(stderr, "emulator: driver published submission tail %u with head %u\n", tail, sq_head);
      return 1;
    }
    if (tail == sq_head) {
      if (!dk_client_is_connected(c)) {
        fprintf(stderr, "emulator: the driver went away after %u descriptors\n", processed);
        return 1;
      }
      if (now_ms() - last_progress > WAIT_MS) {
        fprintf(stderr, "emulator: no descriptor for %d ms\n", WAIT_MS);
        return 1;
      }
      backoff(&idle);
      continue;
    }
    idle = 0;
    last_progress = now_ms();
    ring_desc d;
    memcpy(&d, &r->sq[sq_head % RING_SLOTS], sizeof d);
    if (d.flags & DESC_STOP) {
      atomic_store_explicit(&r->sq_head.value, sq_head + 1, memory_order_release);
      break;
    }
    ring_comp comp = { .seq = d.seq, .status = COMP_OK, .len = d.len };
    if (d.len > PAYLOAD_MAX) {
      comp.status = 1;   /* a bad descriptor gets an error completion, never a read past it */
      comp.len = 0;
    } else {
      comp.checksum = ring_checksum(d.payload, d.len);
    }
    /* The slot is read: give it back, then wait for room in the completion ring. The acquire
     * load of cq_head orders the driver's read of a completion slot before our overwrite. */
    sq_head++;
    atomic_store_explicit(&r->sq_head.value, sq_head, memory_order_release);
    while (cq_tail - atomic_load_explicit(&r->cq_head.value, memory_order_acquire) >= RING_SLOTS) {
      if (!dk_client_is_connected(c) || now_ms() - last_progress > WAIT_MS) {
        fprintf(stderr, "emulator: the driver stopped taking completions\n");
        return 1;
      }
      backoff(&idle);
    }
    r->cq[cq_tail % RING_SLOTS] = comp;
    cq_tail++;
    atomic_store_explicit(&r->cq_tail.value, cq_tail, memory_order_release);
    processed++;
  }
  if (processed != st->messages) {
    fprintf(stderr, "emulator: processed %u descriptors, the driver announced %u\n", processed,
            st->messages);
    return 1;
  }
  printf("emulator: %u descriptors processed, stop descriptor seen\n", processed);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  dk_client *c = connect_driver(argv[1]);
  if (!c) return 1;

  /* The driver pushes two mappings (createMappingInTask); the order is its business, the tag
   * says which is which. */
  dk_client_mapping ring_m = { 0 }, status_m = { 0 };
  for (int i = 0; i < 2; i++) {
    dk_client_mapping m;
    IOReturn ret = dk_client_next_mapping(c, WAIT_MS, &m);
    if (ret != kIOReturnSuccess) {
      fprintf(stderr, "emulator: dk_client_next_mapping: %s: %s\n", dk_ioreturn_name(ret),
              dk_last_failure()->text);
      dk_client_close(c);
      return 1;
    }
    printf("emulator: mapping %llu: tag 0x%08x, %llu bytes at 0x%llx, %s\n",
           (unsigned long long)m.id, m.tag, (unsigned long long)m.length,
           (unsigned long long)m.address, m.writable ? "read-write" : "read-only");
    if (m.tag == RING_TAG) ring_m = m;
    else if (m.tag == STATUS_TAG) status_m = m;
  }
  int rc = 1;
  if (!ring_m.address || !ring_m.writable || ring_m.length < sizeof(ring_shared)) {
    fprintf(stderr, "emulator: no writable ring of %zu bytes was mapped\n", sizeof(ring_shared));
    goto out;
  }
  if (!status_m.address || status_m.writable || status_m.length < sizeof(status_page)) {
    fprintf(stderr, "emulator: no read-only status page was mapped\n");
    goto out;
  }
  ring_shared *r = (ring_shared *)(uintptr_t)ring_m.address;
  status_page *st = (status_page *)(uintptr_t)status_m.address;
  if (r->magic != RING_MAGIC || r->slots != RING_SLOTS || st->magic != STATUS_MAGIC) {
    fprintf(stderr, "emulator: the buffers do not hold the driver's layout\n");
    goto out;
  }
  printf("emulator: driver pid %u announces %u descriptors\n", st->driver_pid, st->messages);
  if (show_read_only(&st->pad, &status_m) != 0) goto out;
  rc = run_device(r, st, c);
out:
  dk_client_close(c);
  return rc;
}
