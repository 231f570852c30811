/* src/phys/pagemap.c: virtual page -> frame number, through /proc/self/pagemap, in batches.
 * The file is opened per batch (a descriptor kept open would read the parent's pagemap in a
 * forked child); callers cache the result, so this runs once per wiring, never per query. */
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define PM_PRESENT   (1ull << 63)
#define PM_PFN_MASK  ((1ull << 55) - 1)
#define PM_BATCH     (1u << 16)      /* entries per pread: 512 KiB */

int dk__pagemap_frames(uintptr_t va, size_t npages, uint64_t *pfn)
{
  int fd = dk__open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0) return -1;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);   /* not dk__caps(): the probe calls us */
  size_t done = 0;
  int interrupted = 0;
  while (done < npages) {
    size_t n = npages - done < PM_BATCH ? npages - done : PM_BATCH;
    off_t off = (off_t)((va / page + done) * sizeof(uint64_t));
    ssize_t got = dk__pread(fd, pfn + done, n * sizeof(uint64_t), off);
    if (got < 0 && errno == EINTR && ++interrupted < DK_EINTR_RETRIES) continue;
    if (got <= 0 || got % (ssize_t)sizeof(uint64_t)) {
      int e = got < 0 ? errno : EIO;
      dk__close(fd);
      errno = e;
      return -1;
    }
    size_t k = (size_t)got / sizeof(uint64_t);
    for (size_t i = done; i < done + k; i++)
      pfn[i] = (pfn[i] & PM_PRESENT) ? (pfn[i] & PM_PFN_MASK) : 0;
    done += k;
  }
  dk__close(fd);
  return 0;
}

void dk__frame_runs(const uint64_t *pfn, uint32_t *run, size_t n)
{
  run[n - 1] = 1;
  for (size_t i = n - 1; i-- > 0;) run[i] = pfn[i + 1] == pfn[i] + 1 ? run[i + 1] + 1 : 1;
}
