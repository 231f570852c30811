/* examples/nvme/test_prps.c: the PRP builder of nvme.c against NVMe's rules, on segment lists
 * as IODMACommand gives them (page-sized pieces) and as DriverKit's PrepareForDMA does (runs of
 * any length): one page (PRP2 0), two pages (PRP2 the second page), more (PRP2 the list, every
 * entry a page), a first segment off a page, and the refusals (a later segment off a page, a
 * seam inside a page, a list too small). Prints "N passed, M failed". */
#include "nvme.h"

#include <stdio.h>

static int passed, failed;
#define EXPECT(cond)                                                                       \
  do {                                                                                     \
    if (cond) passed++;                                                                    \
    else { failed++; printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); }               \
  } while (0)

int main(void)
{
  const uint32_t pg = 4096;
  uint64_t list[8], p1, p2;
  uint32_t n;
  IOAddressSegment one[] = { { 0x10000, 512 } };
  EXPECT(nvme_build_prps(one, 1, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnSuccess && n == 1 && p1 == 0x10000 && p2 == 0);
  IOAddressSegment two[] = { { 0x10800, 0x800 }, { 0x20000, 0x1000 } };
  EXPECT(nvme_build_prps(two, 2, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnSuccess && n == 2 && p1 == 0x10800 &&
         p2 == 0x20000);
  /* one run of three pages starting mid-page: four entries, a list of three */
  IOAddressSegment run[] = { { 0x30200, 0x3000 } };
  EXPECT(nvme_build_prps(run, 1, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnSuccess && n == 4 && p1 == 0x30200 &&
         p2 == 0xabc000 && list[0] == 0x31000 && list[1] == 0x32000 && list[2] == 0x33000);
  /* IODMACommand's page pieces of a scattered buffer */
  IOAddressSegment pages[] = { { 0x50000, 0x1000 }, { 0x90000, 0x1000 }, { 0x70000, 0x1000 } };
  EXPECT(nvme_build_prps(pages, 3, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnSuccess && n == 3 &&
         p1 == 0x50000 && p2 == 0xabc000 && list[0] == 0x90000 && list[1] == 0x70000);
  IOAddressSegment late[] = { { 0x50000, 0x1000 }, { 0x90200, 0xe00 } };
  EXPECT(nvme_build_prps(late, 2, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnNotAligned);
  IOAddressSegment seam[] = { { 0x50000, 0x800 }, { 0x90000, 0x1000 } };
  EXPECT(nvme_build_prps(seam, 2, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnNotAligned);
  IOAddressSegment big[] = { { 0x100000, 10 * 0x1000 } };
  EXPECT(nvme_build_prps(big, 1, pg, &p1, &p2, list, 8, 0xabc000, &n) == kIOReturnNoSpace);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
