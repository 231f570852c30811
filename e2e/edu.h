/* e2e/edu.h: what both end-to-end programs need of QEMU's "edu" device (QEMU
 * docs/specs/edu.rst): its registers, one DMA transfer and the RAM -> device -> RAM round trip,
 * finding it in sysfs, test bookkeeping (CHECK, DIE), and an independent pagemap reader.
 * Header-only: each program is one translation unit (edu_dma.c: no IOMMU; edu_vfio.c: VFIO). */
#ifndef DK_E2E_EDU_H
#define DK_E2E_EDU_H

#include <dmakit/dmakit.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define REG_ID 0x00
#define REG_LIVE 0x04
#define REG_DMA_SRC 0x80
#define REG_DMA_DST 0x88
#define REG_DMA_CNT 0x90
#define REG_DMA_CMD 0x98
#define CMD_START 1u
#define CMD_TO_RAM 2u
#define EDU_BUF 0x40000ull
#define PG 4096ull
#define XFER 2048ull
/* edu's DMA mask: QEMU's default 28 bits, or E2E_DMA_MASK (a 2^n - 1 in hex, given to QEMU as
 * -device edu,dma_mask=... and to the guest on its command line). */
static uint64_t dma_mask = 0x0FFFFFFFull;
static unsigned mask_bits = 28;
static void read_mask(void)
{
  const char *m = getenv("E2E_DMA_MASK");
  if (m && *m) dma_mask = strtoull(m, NULL, 0);
  mask_bits = 0;
  while (mask_bits < 64 && (dma_mask >> mask_bits)) mask_bits++;
  printf("device DMA mask 0x%llx (%u bits)\n", (unsigned long long)dma_mask, mask_bits);
}
#define TWO_MB (2ull << 20)

static volatile uint8_t *bar;
static int failures;
static int pagemap_fd = -1;

#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); failures++; }               \
    else { printf("ok: " __VA_ARGS__); printf("\n"); }                                     \
  } while (0)
#define DIE(...)                                                                           \
  do {                                                                                     \
    printf("FATAL: " __VA_ARGS__); printf(" (errno=%d %s)\n", errno, strerror(errno));     \
    printf("E2E-DMA: FAIL (fatal)\n"); exit(2);                                            \
  } while (0)

static uint32_t rd32(uint32_t off) { return *(volatile uint32_t *)(bar + off); }
static void wr32(uint32_t off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }
static uint64_t rd64(uint32_t off) { return *(volatile uint64_t *)(bar + off); }
static void wr64(uint32_t off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void print_failure(const char *what)
{
  const dk_failure *f = dk_last_failure();
  printf("  %s: %s (constraint %s, in %s): %s\n", what, dk_ioreturn_name(f->code),
         dk_constraint_name(f->constraint), f->function ? f->function : "?", f->text);
}

/* One DMA transfer; QEMU's edu starts it from a 100 ms virtual-clock timer, so poll. */
static int edu_dma(uint64_t src, uint64_t dst, uint64_t cnt, int to_ram)
{
  wr64(REG_DMA_SRC, src);
  wr64(REG_DMA_DST, dst);
  wr64(REG_DMA_CNT, cnt);
  __sync_synchronize();
  wr64(REG_DMA_CMD, CMD_START | (to_ram ? CMD_TO_RAM : 0));
  double t0 = now();
  while (rd64(REG_DMA_CMD) & CMD_START) {
    if (now() - t0 > 10.0) { printf("FAIL: DMA timeout\n"); failures++; return -1; }
    usleep(1000);
  }
  __sync_synchronize();
  return 0;
}

/* RAM(src bus address) -> device buffer -> RAM(dst bus address), XFER bytes */
static void round_trip(uint64_t src_bus, uint64_t dst_bus)
{
  edu_dma(src_bus, EDU_BUF, XFER, 0);
  edu_dma(EDU_BUF, dst_bus, XFER, 1);
}

static void fill(void *p, size_t n, uint32_t seed)
{
  uint32_t *w = p;
  for (size_t i = 0; i < n / 4; i++) w[i] = seed * 2654435761u + (uint32_t)i;
}

static int all_zero(const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++) if (p[i]) return 0;
  return 1;
}

static char *find_edu(void)
{
  static char name[256];
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) DIE("opendir /sys/bus/pci/devices");
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[512], buf[32];
    unsigned v = 0, dv = 0;
    FILE *f;
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", e->d_name);
    if (!(f = fopen(p, "r"))) continue;
    if (fgets(buf, sizeof buf, f)) v = (unsigned)strtoul(buf, 0, 16);
    fclose(f);
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/device", e->d_name);
    if (!(f = fopen(p, "r"))) continue;
    if (fgets(buf, sizeof buf, f)) dv = (unsigned)strtoul(buf, 0, 16);
    fclose(f);
    if (v == EDU_VENDOR && dv == EDU_DEVICE) {
      snprintf(name, sizeof name, "%s", e->d_name);
      closedir(d);
      return name;
    }
  }
  closedir(d);
  return NULL;
}

/* No IOMMU: enable memory decoding and bus mastering through sysfs, map BAR0 from resource0,
 * check the id and liveness registers. */
static inline void open_edu(const char *bdf)
{
  char p[512];
  snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/config", bdf);
  int cfg = open(p, O_RDWR);
  if (cfg < 0) DIE("open %s", p);
  uint16_t cmd;
  if (pread(cfg, &cmd, 2, 4) != 2) DIE("read PCI command");
  cmd |= 0x6;                                   /* memory space + bus master */
  if (pwrite(cfg, &cmd, 2, 4) != 2) DIE("write PCI command");
  if (pread(cfg, &cmd, 2, 4) != 2) DIE("read PCI command");
  close(cfg);
  printf("PCI command register = 0x%04x\n", cmd);
  CHECK((cmd & 0x6) == 0x6, "memory decoding and bus mastering enabled");

  snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/resource0", bdf);
  int fd = open(p, O_RDWR | O_SYNC);
  if (fd < 0) DIE("open %s", p);
  bar = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (bar == MAP_FAILED) DIE("mmap resource0");
  uint32_t id = rd32(REG_ID);
  printf("edu id register = 0x%08x\n", id);
  CHECK((id & 0xffff) == 0x00ed, "id register low half is 0x00ed");
  wr32(REG_LIVE, 0x12345678);
  CHECK(rd32(REG_LIVE) == ~0x12345678u, "liveness register inverts");
}

/* Independent of dmakit: the frame of one virtual page, from /proc/self/pagemap. */
static uint64_t pagemap_phys(const void *va)
{
  uint64_t ent;
  if (pread(pagemap_fd, &ent, 8, (off_t)(((uintptr_t)va / PG) * 8)) != 8) return 0;
  if (!(ent & (1ull << 63))) return 0;
  return (ent & ((1ull << 55) - 1)) * PG + ((uintptr_t)va % PG);
}

#endif
