/* IOKit/IOTypes.h (dmakit C++ layer): IOKit's scalar types, as dmakit defines them for LP64
 * Linux (REFERENCE.md §1.1), the task handles (kernel_task is this process), and, as in XNU,
 * the return codes. Also Mach's page macros that kext DMA code uses (PAGE_SIZE, PAGE_MASK,
 * PAGE_SHIFT, trunc_page, round_page): this machine's CPU page, read once at run time as on
 * arm64 macOS (where PAGE_SIZE is a variable too); each only where nothing defined it before. */
#ifndef DMAKIT_COMPAT_IOKIT_IOTYPES_H
#define DMAKIT_COMPAT_IOKIT_IOTYPES_H

#include <dmakit/IOReturn.h>
#include <dmakit/IOTypes.h>

#include <unistd.h>

namespace dk_cxx {
inline vm_size_t cpu_page_size() noexcept
{
  static const vm_size_t size = (vm_size_t)sysconf(_SC_PAGESIZE);   /* the auxiliary vector: no system call */
  return size;
}
inline int cpu_page_shift() noexcept { return __builtin_ctzll(cpu_page_size()); }
} // namespace dk_cxx

#ifndef PAGE_SIZE
#define PAGE_SIZE (dk_cxx::cpu_page_size())
#endif
#ifndef PAGE_MASK
#define PAGE_MASK (dk_cxx::cpu_page_size() - 1)
#endif
#ifndef PAGE_SHIFT
#define PAGE_SHIFT (dk_cxx::cpu_page_shift())
#endif
#ifndef trunc_page
#define trunc_page(x) ((vm_offset_t)(x) & ~(vm_offset_t)(dk_cxx::cpu_page_size() - 1))
#endif
#ifndef round_page
#define round_page(x) trunc_page((vm_offset_t)(x) + (dk_cxx::cpu_page_size() - 1))
#endif

#endif
