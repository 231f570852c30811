/* IOKit/IOLib.h (dmakit C++ layer): the few IOLib calls that DMA-memory code makes around its
 * buffers: IOLog (to stderr), IOMalloc / IOMallocZero / IOFree and IONew / IONewZero / IODelete /
 * IOSafeDeleteNULL for its own bookkeeping (plain heap memory; DMA memory comes from
 * IOBufferMemoryDescriptor), and the C string calls (bzero, memset ...) IOLib brings. */
#ifndef DMAKIT_COMPAT_IOKIT_IOLIB_H
#define DMAKIT_COMPAT_IOKIT_IOLIB_H

#include <dmakit/compat/IOKit/IOTypes.h>
#include <dmakit/compat/IOKit/IOReturn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <strings.h>

inline void IOLogv(const char *format, va_list ap) __attribute__((format(printf, 1, 0)));
inline void IOLogv(const char *format, va_list ap) { std::vfprintf(stderr, format, ap); }
inline void IOLog(const char *format, ...) __attribute__((format(printf, 1, 2)));
inline void IOLog(const char *format, ...)
{
  va_list ap;
  va_start(ap, format);
  IOLogv(format, ap);
  va_end(ap);
}

inline void *IOMalloc(vm_size_t size) { return std::malloc(size ? size : 1); }
inline void *IOMallocZero(vm_size_t size) { return std::calloc(1, size ? size : 1); }
inline void IOFree(void *address, vm_size_t size)
{
  (void)size;
  std::free(address);
}

/* `count` objects of `type`, NULL when the size overflows (as IOKit's IONew). */
namespace dk_cxx {
inline void *new_array(size_t size, size_t count, bool zero)
{
  size_t bytes;
  if (__builtin_mul_overflow(size, count, &bytes)) return nullptr;
  return zero ? IOMallocZero(bytes) : IOMalloc(bytes);
}
} // namespace dk_cxx
#define IONew(type, count) ((type *)dk_cxx::new_array(sizeof(type), (count), false))
#define IONewZero(type, count) ((type *)dk_cxx::new_array(sizeof(type), (count), true))
#define IODelete(ptr, type, count) IOFree((ptr), sizeof(type) * (count))
#define IOSafeDeleteNULL(ptr, type, count) \
  do {                                     \
    if ((ptr) != nullptr) {                \
      IODelete((ptr), type, (count));      \
      (ptr) = nullptr;                     \
    }                                      \
  } while (0)

#endif
