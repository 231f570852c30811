/* libkern/c++/OSPtr.h (dmakit C++ layer): OSPtr<T>, what IOKit's factories return: T * by
 * default, OSSharedPtr<T> in a translation unit that defines IOKIT_ENABLE_SHARED_PTR before its
 * first IOKit include (XNU asks for IOKIT_ENABLE_EXPERIMENTAL_SHARED_PTR_IN_API too; dmakit
 * accepts either). Functions whose result depends on it carry DK_OSPTR_ABI, an ABI tag that
 * keeps the two forms apart when units that differ are linked into one program (XNU relies on
 * trivial_abi for that, which GCC lacks). */
#ifndef DMAKIT_COMPAT_OSPTR_H
#define DMAKIT_COMPAT_OSPTR_H

#include <dmakit/compat/libkern/c++/OSSharedPtr.h>

#if defined(IOKIT_ENABLE_SHARED_PTR)
template <typename T> using OSPtr = OSSharedPtr<T>;
#define DK_OSPTR_ABI __attribute__((abi_tag("dk_osptr")))
namespace dk_cxx {
template <typename T> inline OSPtr<T> osptr(T *p) noexcept { return OSPtr<T>(p, OSNoRetain); }
}
#else
template <typename T> using OSPtr = T *;
#define DK_OSPTR_ABI
namespace dk_cxx {
template <typename T> inline OSPtr<T> osptr(T *p) noexcept { return p; }
}
#endif

#endif
