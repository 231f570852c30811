/* src/iokit/refusal.c: why a request that only the hugepage pool could meet is refused. 4K
 * pages promise one contiguous page and page alignment; more needs the pool. When the pool
 * cannot serve, the cause decides the answer, as for a physical mask: without privilege (the
 * pool reads frame numbers, which need root) it is kIOReturnNotPrivileged and the privilege
 * constraint; with the pool merely turned off (DMAKIT_POOL=0), without hugetlb, or out of
 * memory, it is kIOReturnNoMemory and the constraint that could not be met. Each reason
 * names its cause. */
#include "iokit/refusal.h"
#include "phys/phys.h"

IOReturn dk__refuse_pool_only(dk_constraint_kind kind, const char *what)
{
  const dk_caps *caps = dk__caps();
  bool off = !dk__option(DK_OPTION_POOL);
  if (!caps->pagemap_frames)
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PRIVILEGE,
                    "%s: 4K pages cannot promise it, and the hugepage pool that can needs root (frame numbers in "
                    "/proc/self/pagemap need CAP_SYS_ADMIN)%s", what, off ? "; it is also turned off (DMAKIT_POOL=0)" : "");
  if (off)
    return dk__fail(kIOReturnNoMemory, kind,
                    "%s: 4K pages cannot promise it, and the hugepage pool is turned off (DMAKIT_POOL=0)", what);
  if (!caps->hugepage_size_count)
    return dk__fail(kIOReturnNoMemory, kind,
                    "%s: 4K pages cannot promise it, and the hugepage pool needs hugetlb support in the kernel", what);
  return dk__fail(kIOReturnNoMemory, kind, "%s: 4K pages cannot promise it, and the hugepage pool could not meet it either",
                  what);
}
