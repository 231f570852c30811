/* src/base/base.h: what every layer may use: the calling thread's failure record (set once
 * where a failure is understood best, read by dk_last_failure()) and exact integer helpers
 * (powers of two, rounding with overflow checks). No system calls here. */
#ifndef DK_BASE_H
#define DK_BASE_H

#include <dmakit/dmakit.h>
#include <stdatomic.h>
#include <stdint.h>

/* Start of a public call: clear the failure record and name the call (base/failure.c). The
 * two variables are in static TLS (initial-exec, 12 bytes): a plain %fs access on every
 * call's entry, no __tls_get_addr call that would make leaf functions save registers. */
#define DK_TLS_IE __attribute__((tls_model("initial-exec")))
extern _Thread_local const char *dk__tl_function DK_TLS_IE;
extern _Thread_local int dk__tl_set DK_TLS_IE;
static inline void dk__enter(const char *function)
{
  dk__tl_function = function;
  dk__tl_set = 0;
}
/* Record a failure; the first one since dk__enter wins (the deepest layer knows most).
 * Returns `code` for tail calls. */
IOReturn dk__fail(IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The internal error convention, in one place. A function that can fail returns bool (or a
 * pointer, NULL on failure) and records why with dk__fail where the failure is understood
 * best, in words and with the IOReturn the public call returns; its callers pass the failure
 * up without recording again (the first record since dk__enter wins). Only src/prim, and the
 * few helpers directly on top of it that stay pure (pagemap reads, pins, mappings of a file,
 * the IOVA allocator), keep the system's convention: -1 or NULL with errno; whoever calls them
 * records the failure, with dk__fail_errno when an errno is all there is (its IOReturn from
 * the one table in base/ioreturn.c). Public calls return IOReturn, or NULL/0/false as IOKit's
 * signatures do, and dk_last_failure() says why. */

/* The IOReturn an errno stands for (base/ioreturn.c), and a failure recorded from one:
 * "<what>: <strerror(e)>". */
IOReturn dk__ioreturn_from_errno(int e);
IOReturn dk__fail_errno(int e, dk_constraint_kind kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Keep the recorded reason, report it as `code` from `function` (an outer call such as
 * DriverKit's Create built on an inner public call). */
void dk__fail_recode(const char *function, IOReturn code);
int  dk__failed(void);            /* a failure was recorded since dk__enter */
/* Forget the recorded failure (a retry or a fallback whose own reason is the one to report). */
static inline void dk__fail_forget(void) { dk__tl_set = 0; }
IOReturn dk__failure_code(void);

/* The current value of a dk_option (base/options.c). */
long dk__option(dk_option o);
/* A number that changes whenever something that decides how a buffer is built changes (an
 * option, the system mapper): what was built under an older number is not reused. */
extern _Atomic uint64_t dk__config_gen_v;
static inline uint64_t dk__config_gen(void)
{
  return atomic_load_explicit(&dk__config_gen_v, memory_order_acquire);
}
void dk__config_bump(void);

static inline int dk__is_pow2(uint64_t x) { return x && !(x & (x - 1)); }
/* Smallest power of two >= x (x >= 1); 0 if it does not fit in 64 bits. */
static inline uint64_t dk__next_pow2(uint64_t x)
{
  if (x <= 1) return 1;
  if (x > (1ull << 63)) return 0;
  return 1ull << (64 - __builtin_clzll(x - 1));
}
/* Number of significant bits: 32 for 0xFFFFFFFF, 0 for 0. */
static inline unsigned dk__bitlen(uint64_t x) { return x ? 64u - (unsigned)__builtin_clzll(x) : 0u; }
/* Round x up to a multiple of the power of two a; returns 0 and leaves *out alone on overflow. */
static inline int dk__round_up(uint64_t x, uint64_t a, uint64_t *out)
{
  uint64_t r = (x + (a - 1)) & ~(a - 1);
  if (r < x) return 0;
  *out = r;
  return 1;
}

#endif
