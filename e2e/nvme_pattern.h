/* e2e/nvme_pattern.h: the NVMe end-to-end test's image contents, shared by the host (which fills
 * the raw image before boot and checks it after: e2e/nvme_image.c) and the guest program
 * (e2e/nvme_e2e.c, which checks its reads against it and writes with a second seed). The image
 * is cut into 512-byte units whatever the namespace's block size: unit u starts with u as a
 * little-endian 64-bit number, and the rest follows from u and a seed. The 18 slots say where
 * the guest reads (slots 0-2, 6-8, 12-14: left as filled) and writes (3-5, 9-11, 15-17): six
 * for each of its three passes. */
#ifndef DK_E2E_NVME_PATTERN_H
#define DK_E2E_NVME_PATTERN_H

#include <stdint.h>
#include <string.h>

#define NVME_E2E_SEED        0x5eed0001u   /* what the host fills */
#define NVME_E2E_WRITE_SEED  0x3a17e002u   /* what the guest writes */
#define NVME_E2E_SLOTS       18u

static inline uint8_t nvme_pattern_byte(uint64_t unit, uint32_t i, uint32_t seed)
{
  if (i < 8) return (uint8_t)(unit >> (8 * i));
  uint32_t x = (uint32_t)unit * 2654435761u ^ seed ^ (i * 0x9e3779b1u);
  x ^= x >> 15;
  return (uint8_t)(x * 0x2c1b3c6du >> 24);
}

/* Fill `len` bytes (a multiple of 512) as the image holds them from byte `at` (a multiple of 512). */
static inline void nvme_pattern_fill(uint8_t *p, uint64_t at, uint64_t len, uint32_t seed)
{
  for (uint64_t o = 0; o < len; o++) p[o] = nvme_pattern_byte((at + o) / 512, (uint32_t)((at + o) % 512), seed);
}

/* 0 when p[0, len) is the image's content from byte `at` under `seed`; else 1 + the offset of
 * the first wrong byte. */
static inline uint64_t nvme_pattern_check(const uint8_t *p, uint64_t at, uint64_t len, uint32_t seed)
{
  for (uint64_t o = 0; o < len; o++)
    if (p[o] != nvme_pattern_byte((at + o) / 512, (uint32_t)((at + o) % 512), seed)) return o + 1;
  return 0;
}

/* Where slot k starts, in bytes, in an image of `bytes` bytes (4 KiB-aligned, so any block size
 * up to 4 KiB divides it). */
static inline uint64_t nvme_slot(uint64_t bytes, unsigned k)
{
  return (bytes / NVME_E2E_SLOTS) / 4096 * 4096 * k;
}

#endif
