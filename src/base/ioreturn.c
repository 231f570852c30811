/* src/base/ioreturn.c: names and texts of IOReturn codes, from the one list in IOReturn.h, and
 * the one table from an errno to the IOReturn a caller sees, for failures that are only an
 * errno by the time they are recorded. */
#include "base/base.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NAME(n, c, t) case (int)iokit_common_err_or_success(c): return #n;
#define TEXT(n, c, t) case (int)iokit_common_err_or_success(c): return t;
#define iokit_common_err_or_success(c) ((c) == 0 ? 0u : (0xE0000000u | (c)))

const char *dk_ioreturn_name(IOReturn code)
{
  switch (code) {
    DK_IORETURN_LIST(NAME)
  default: return "kIOReturnUnknown";
  }
}

const char *dk_ioreturn_string(IOReturn code)
{
  switch (code) {
    DK_IORETURN_LIST(TEXT)
  default: return "unknown IOReturn code";
  }
}

IOReturn dk__ioreturn_from_errno(int e)
{
  switch (e) {
  case 0:          return kIOReturnSuccess;
  case ENOMEM:
  case ENOSPC:
  case EOVERFLOW:  return kIOReturnNoMemory;
  case EMFILE:
  case ENFILE:
  case EAGAIN:
  case ENOBUFS:    return kIOReturnNoResources;
  case EPERM:
  case EACCES:     return kIOReturnNotPrivileged;
  case EINVAL:
  case EFAULT:
  case ENAMETOOLONG: return kIOReturnBadArgument;
  case ENOENT:
  case ENODEV:
  case ENXIO:      return kIOReturnNoDevice;
  case EBUSY:      return kIOReturnBusy;
  case EEXIST:     return kIOReturnNoSpace;
  case ENOTSUP:
  case ENOSYS:     return kIOReturnUnsupported;
  case ETIMEDOUT:  return kIOReturnTimeout;
  case EIO:        return kIOReturnIOError;
  case EPIPE:
  case ECONNRESET:
  case ECONNREFUSED:
  case ENOTCONN:   return kIOReturnNotAttached;
  default:         return kIOReturnError;
  }
}

IOReturn dk__fail_errno(int e, dk_constraint_kind kind, const char *fmt, ...)
{
  char what[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return dk__fail(dk__ioreturn_from_errno(e), kind, "%s: %s", what, strerror(e));
}
