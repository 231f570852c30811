/* src/base/failure.c: the per-thread failure record behind dk_last_failure(). */
#include "base/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local dk_failure tl_failure;
static _Thread_local int tl_set;

void dk__enter(const char *function)
{
  tl_failure.code = kIOReturnSuccess;
  tl_failure.constraint = DK_CONSTRAINT_NONE;
  tl_failure.function = function;
  tl_failure.text[0] = '\0';
  tl_set = 0;
}

static IOReturn record(IOReturn code, dk_constraint_kind kind, const char *fmt, va_list ap)
{
  tl_failure.code = code;
  tl_failure.constraint = kind;
  vsnprintf(tl_failure.text, sizeof tl_failure.text, fmt, ap);
  tl_set = 1;
  return code;
}

IOReturn dk__fail(IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
{
  if (tl_set) return code;
  va_list ap;
  va_start(ap, fmt);
  record(code, kind, fmt, ap);
  va_end(ap);
  return code;
}

void dk__fail_recode(const char *function, IOReturn code)
{
  tl_failure.function = function;
  tl_failure.code = code;
  tl_set = 1;
}

int dk__failed(void) { return tl_set; }
IOReturn dk__failure_code(void) { return tl_set ? tl_failure.code : kIOReturnSuccess; }

const dk_failure *dk_last_failure(void)
{
  if (!tl_failure.function) tl_failure.function = "";
  return &tl_failure;
}

void dk_clear_failure(void) { dk__enter(""); }

const char *dk_constraint_name(dk_constraint_kind kind)
{
  static const char *const names[] = {
    "none", "argument", "task", "mask", "alignment", "contiguity", "boundary", "segments",
    "cache", "privilege", "pin", "resource", "state", "range",
  };
  return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}
