/* src/base/failure.c: the per-thread failure record behind dk_last_failure(). Entering a
 * public call costs two thread-local stores (the call's name, "nothing recorded"); the record
 * itself is written only when something fails, and read back as success otherwise. */
#include "base/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local dk_failure tl_failure;
_Thread_local const char *dk__tl_function DK_TLS_IE;
_Thread_local int dk__tl_set DK_TLS_IE;
#define tl_function dk__tl_function
#define tl_set dk__tl_set

IOReturn dk__fail(IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
{
  if (tl_set) return code;
  tl_failure.code = code;
  tl_failure.constraint = kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_failure.text, sizeof tl_failure.text, fmt, ap);
  va_end(ap);
  tl_set = 1;
  return code;
}

void dk__fail_recode(const char *function, IOReturn code)
{
  tl_function = function;
  tl_failure.code = code;
  tl_set = 1;
}

int dk__failed(void) { return tl_set; }
IOReturn dk__failure_code(void) { return tl_set ? tl_failure.code : kIOReturnSuccess; }

const dk_failure *dk_last_failure(void)
{
  if (!tl_set) {
    tl_failure.code = kIOReturnSuccess;
    tl_failure.constraint = DK_CONSTRAINT_NONE;
    tl_failure.text[0] = '\0';
  }
  tl_failure.function = tl_function ? tl_function : "";
  return &tl_failure;
}

void dk_clear_failure(void) { dk__enter(""); }

const char *dk_constraint_name(dk_constraint_kind kind)
{
  static const char *const names[] = {
    "none", "argument", "task", "mask", "alignment", "contiguity", "boundary", "segments",
    "cache", "privilege", "pin", "resource", "state", "range", "peer", "connection",
  };
  return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}
