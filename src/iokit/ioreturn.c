/* src/iokit/ioreturn.c: names and texts of IOReturn codes, from the one list in IOReturn.h. */
#include "iokit/internal.h"

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
