/* examples/ring/ring.h: the memory layout the driver (driver.c) and the device emulator
 * (emulator.c) agree on. Two buffers: the ring (read-write for both) holds a submission ring
 * of descriptors the driver fills and a completion ring the emulator fills; the status page
 * (read-only for the emulator) holds what the driver tells the device. Indices are free-running
 * 32-bit counters (slot = index % RING_SLOTS) in C11 atomics: a producer writes an entry, then
 * publishes it with a release store of its tail; a consumer reads the tail with acquire, reads
 * the entry, then frees the slot with a release store of its head. Lock-free 32-bit atomics are
 * plain loads and stores on shared memory, so they work between processes. */
#ifndef DK_EXAMPLE_RING_H
#define DK_EXAMPLE_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define RING_TAG        0x52494e47u   /* "RING": IOMemoryDescriptor_setTag, seen by the client */
#define STATUS_TAG      0x53544154u   /* "STAT" */
#define RING_MAGIC      0x676e6972u
#define STATUS_MAGIC    0x74617473u
#define RING_SLOTS      64u           /* a power of two */
#define PAYLOAD_MAX     232u

/* One cache line per index, so producer and consumer do not share a line. */
typedef struct ring_index {
  _Atomic uint32_t value;
  char pad[64 - sizeof(uint32_t)];
} ring_index;

/* A descriptor: the driver asks the device to process `len` bytes of payload. */
#define DESC_STOP 0x1u                /* no payload: the device stops */
typedef struct ring_desc {
  uint32_t seq;
  uint32_t flags;
  uint32_t len;
  uint32_t pad;
  uint8_t  payload[PAYLOAD_MAX];
} ring_desc;                          /* 248 bytes */

/* A completion: what the device made of descriptor `seq`. */
#define COMP_OK 0u
typedef struct ring_comp {
  uint32_t seq;
  uint32_t status;
  uint32_t len;
  uint32_t pad;
  uint64_t checksum;
} ring_comp;                          /* 24 bytes */

typedef struct ring_shared {
  uint32_t   magic;
  uint32_t   slots;
  char       pad[56];
  ring_index sq_tail;                 /* written by the driver */
  ring_index sq_head;                 /* written by the emulator */
  ring_index cq_tail;                 /* written by the emulator */
  ring_index cq_head;                 /* written by the driver */
  ring_desc  sq[RING_SLOTS];
  ring_comp  cq[RING_SLOTS];
} ring_shared;

/* The driver writes this page; the emulator can only read it. */
typedef struct status_page {
  uint32_t magic;
  uint32_t messages;                  /* how many descriptors the driver will submit */
  uint32_t driver_pid;
  uint32_t pad;
  _Atomic uint64_t heartbeat;         /* advanced by the driver while it runs */
} status_page;

/* The "processing" the device does: FNV-1a, 64-bit. */
static inline uint64_t ring_checksum(const uint8_t *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* The payload of descriptor `seq`: its length (1..PAYLOAD_MAX) and bytes, both from seq. */
static inline uint32_t ring_payload(uint32_t seq, uint8_t *out)
{
  uint64_t x = 0x9e3779b97f4a7c15ull * (seq + 1u);
  uint32_t len = 1u + (uint32_t)(x >> 40) % PAYLOAD_MAX;
  for (uint32_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = (uint8_t)x;
  }
  return len;
}

/* Nothing to do: spin briefly, then sleep a little (both sides poll the rings). */
static inline void backoff(unsigned *idle)
{
  if (++*idle < 64) {
    sched_yield();
  } else {
    struct timespec ts = { 0, 50 * 1000 };
    nanosleep(&ts, NULL);
  }
}

#endif
