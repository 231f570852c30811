/* tests/cxx/cxx_test.h: what the C++ layer's tests share. Each test file has two parts: driver
 * code written as an IOKit kext or a DriverKit dext writes it (Apple's headers and names only),
 * and the test that runs it and checks the result against the kernel (pagemap, through the C
 * test support) and against dmakit's own records (live objects, the last failure). */
#ifndef DK_CXX_TEST_H
#define DK_CXX_TEST_H

#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include <dmakit/dmakit.h>

extern "C" {
#include "dk_test.h"
/* dmakit internals the C tests use too (the tests link the static library) */
long dk__objects_live(void);
IOMapper *dk__mapper_create_soft(const uint64_t (*ranges)[2], size_t n, uint32_t dma_limit);
}

#define OK DKT_OK
#define RC DKT_RC

/* A software IOMapper (IOVAs allocated and tracked, nothing programmed: no IOMMU or privilege
 * needed) over [start, end], made the system mapper; dkt_soft_mapper_end undoes it and checks
 * that nothing stayed mapped. (No RAII: a failed check leaves through longjmp.) */
static inline IOMapper *dkt_soft_mapper_begin(uint64_t start, uint64_t end)
{
  const uint64_t ranges[1][2] = { { start, end } };
  IOMapper *m = dk__mapper_create_soft(ranges, 1, 0);
  if (!m) fail_msg("software mapper: %s", dkt_failure_text());
  dk_mapper_set_system(m);
  return m;
}

static inline void dkt_soft_mapper_end(IOMapper *m)
{
  dk_mapper_set_system(nullptr);
  char report[512];
  unsigned leaks = dk_mapper_close(m, report, sizeof report);
  if (leaks) fail_msg("mapper closed with %u live mappings: %s", leaks, report);
}

#endif
