/* e2e/nvme_image.c: the host side of the NVMe end-to-end test (scripts/e2e.sh).
 *   nvme_image fill IMAGE MiB          a raw image of MiB MiB, every 512-byte unit in the pattern
 *   nvme_image check IMAGE GUEST-LOG   after the guest exits: the ranges the guest reports with
 *                                      "E2E-NVME-WROTE <byte offset> <bytes>" hold what it wrote,
 *                                      every other byte is as filled; at least 9 ranges, each in
 *                                      a write slot of e2e/nvme_pattern.h
 * Exit 0 when all holds; the first difference is printed. */
#include "nvme_pattern.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXR 64

static int fill(const char *path, uint64_t mib)
{
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); return 1; }
  static uint8_t buf[1 << 20];
  for (uint64_t m = 0; m < mib; m++) {
    nvme_pattern_fill(buf, m << 20, sizeof buf, NVME_E2E_SEED);
    if (fwrite(buf, 1, sizeof buf, f) != sizeof buf) { perror("write"); fclose(f); return 1; }
  }
  if (fclose(f) != 0) { perror("close"); return 1; }
  printf("nvme_image: %s: %" PRIu64 " MiB filled (seed 0x%x)\n", path, mib, NVME_E2E_SEED);
  return 0;
}

static int check(const char *path, const char *log)
{
  uint64_t ro[MAXR], rl[MAXR];
  unsigned n = 0;
  FILE *l = fopen(log, "r");
  if (!l) { perror(log); return 1; }
  char line[512];
  while (fgets(line, sizeof line, l)) {
    const char *p = strstr(line, "E2E-NVME-WROTE ");
    uint64_t o, len;
    if (p && sscanf(p, "E2E-NVME-WROTE %" SCNu64 " %" SCNu64, &o, &len) == 2 && n < MAXR) {
      ro[n] = o;
      rl[n++] = len;
    }
  }
  fclose(l);
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return 1; }
  fseek(f, 0, SEEK_END);
  uint64_t size = (uint64_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  int bad = 0;
  if (n < 9) { printf("nvme_image: the guest reported %u written ranges, expected 9 or more\n", n); bad = 1; }
  for (unsigned i = 0; i < n; i++) {
    unsigned slot = 0;
    while (slot < NVME_E2E_SLOTS && !(ro[i] >= nvme_slot(size, slot) && ro[i] < nvme_slot(size, slot + 1))) slot++;
    bool write_slot = slot % 6 >= 3 && slot < NVME_E2E_SLOTS;
    if (!write_slot || ro[i] + rl[i] > nvme_slot(size, slot + 1) || rl[i] < 32768 || ro[i] % 512 || rl[i] % 512) {
      printf("nvme_image: range %" PRIu64 "+%" PRIu64 " is not inside one write slot\n", ro[i], rl[i]);
      bad = 1;
    }
  }
  static uint8_t buf[1 << 16];
  uint64_t written = 0;
  for (uint64_t at = 0; at < size && !bad; at += 512) {
    size_t got = fread(buf, 1, 512, f);
    if (got != 512) { printf("nvme_image: short read at %" PRIu64 "\n", at); bad = 1; break; }
    uint32_t seed = NVME_E2E_SEED;
    for (unsigned i = 0; i < n; i++)
      if (at >= ro[i] && at < ro[i] + rl[i]) seed = NVME_E2E_WRITE_SEED;
    if (seed == NVME_E2E_WRITE_SEED) written += 512;
    uint64_t w = nvme_pattern_check(buf, at, 512, seed);
    if (w) {
      printf("nvme_image: byte %" PRIu64 " is 0x%02x, expected 0x%02x (%s)\n", at + w - 1, buf[w - 1],
             nvme_pattern_byte(at / 512, (uint32_t)(w - 1), seed), seed == NVME_E2E_SEED ? "as filled" : "as written");
      bad = 1;
    }
  }
  fclose(f);
  if (!bad)
    printf("nvme_image: %s: %u ranges (%" PRIu64 " bytes) as the guest wrote them, the other %" PRIu64
           " bytes as filled\n", path, n, written, size - written);
  return bad;
}

int main(int argc, char **argv)
{
  if (argc == 4 && !strcmp(argv[1], "fill")) return fill(argv[2], strtoull(argv[3], NULL, 0));
  if (argc == 4 && !strcmp(argv[1], "check")) return check(argv[2], argv[3]);
  fprintf(stderr, "usage: nvme_image fill IMAGE MiB | nvme_image check IMAGE GUEST-LOG\n");
  return 2;
}
