/* IOKit/IOLib.h (dmakit C++ layer): the few IOLib calls that DMA-memory code makes around its
 * buffers: IOLog (to stderr) and IOMalloc / IOMallocZero / IOFree for its own bookkeeping
 * (plain heap memory; DMA memory comes from IOBufferMemoryDescriptor). */
#ifndef DMAKIT_COMPAT_IOKIT_IOLIB_H
#define DMAKIT_COMPAT_IOKIT_IOLIB_H

#include <dmakit/compat/IOKit/IOTypes.h>
#include <dmakit/compat/IOKit/IOReturn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

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

#endif
