/* tests/test_base.c: the base layer on its own: options (defaults, DMAKIT_<NAME> environment
 * overrides read once, in decimal, hex or octal, an empty value meaning the default, names,
 * out-of-range options), the per-thread failure record (the first failure since a public call
 * began wins, recoding keeps the reason, a fresh thread reads success, every constraint has a
 * name) and the per-thread counters (a thread's counts survive its exit, its block is reused).
 * The integer helpers' edges. Needs no privilege. */
#include "dk_test.h"
#include "base/base.h"
#include "base/counters.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* set in main() before the library reads its options */
static void options_from_environment(void **state)
{
  (void)state;
  assert_int_equal(dk_option_get(DK_OPTION_LOWMEM_SEARCH_MS), 0x7b);   /* "0x7b" */
  assert_int_equal(dk_option_get(DK_OPTION_SHARE_TIMEOUT_MS), 010);    /* "010": octal */
  assert_int_equal(dk_option_get(DK_OPTION_POOL_GROW_MB), 32);         /* "": the default */
  assert_int_equal(dk_option_get(DK_OPTION_POOL_MAX_MB), 4096);        /* unset: the default */
  /* read once: a later change of the environment changes nothing */
  setenv("DMAKIT_POOL_MAX_MB", "1", 1);
  assert_int_equal(dk_option_get(DK_OPTION_POOL_MAX_MB), 4096);
}

static void options_set_get_names(void **state)
{
  (void)state;
  static const char *const names[DK_OPTION__COUNT] = {
    [DK_OPTION_STRICT_CACHE_MODE] = "STRICT_CACHE_MODE", [DK_OPTION_REQUIRE_PIN] = "REQUIRE_PIN",
    [DK_OPTION_POOL] = "POOL", [DK_OPTION_POOL_MAX_MB] = "POOL_MAX_MB", [DK_OPTION_POOL_GROW_MB] = "POOL_GROW_MB",
    [DK_OPTION_LOWMEM_SEARCH_MB] = "LOWMEM_SEARCH_MB", [DK_OPTION_LOWMEM_SEARCH_MS] = "LOWMEM_SEARCH_MS",
    [DK_OPTION_SHARE_TIMEOUT_MS] = "SHARE_TIMEOUT_MS", [DK_OPTION_MAPPER_DEBUG] = "MAPPER_DEBUG",
    [DK_OPTION_MEMORY_MARGIN_MB] = "MEMORY_MARGIN_MB",
  };
  for (int o = 0; o < DK_OPTION__COUNT; o++) assert_non_null(names[o]);   /* a new option is named here */
  for (int o = 0; o < DK_OPTION__COUNT; o++) {
    assert_string_equal(dk_option_name((dk_option)o), names[o]);
    long was = dk_option_get((dk_option)o);
    uint64_t gen = dk__config_gen();
    dk_option_set((dk_option)o, was + 5);
    assert_int_equal(dk_option_get((dk_option)o), was + 5);
    assert_true(dk__config_gen() > gen);   /* what was built under the old value is not reused */
    dk_option_set((dk_option)o, was);
  }
  /* out of range: no name, reads 0, a set changes nothing (but still counts as a change) */
  assert_string_equal(dk_option_name(DK_OPTION__COUNT), "unknown");
  assert_string_equal(dk_option_name((dk_option)-1), "unknown");
  assert_int_equal(dk_option_get(DK_OPTION__COUNT), 0);
  assert_int_equal(dk_option_get((dk_option)-1), 0);
  dk_option_set(DK_OPTION__COUNT, 99);
  assert_int_equal(dk_option_get(DK_OPTION__COUNT), 0);
}

static void failure_first_wins_and_recode(void **state)
{
  (void)state;
  dk__enter("outer_call");
  assert_false(dk__failed());
  assert_int_equal(dk__failure_code(), kIOReturnSuccess);
  assert_int_equal(dk_last_failure()->code, kIOReturnSuccess);
  assert_string_equal(dk_last_failure()->text, "");
  assert_string_equal(dk_last_failure()->function, "outer_call");
  assert_int_equal(dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_MASK, "deep %s", "reason"), kIOReturnNoMemory);
  assert_int_equal(dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "shallow"), kIOReturnBadArgument);
  assert_true(dk__failed());
  const dk_failure *f = dk_last_failure();
  assert_int_equal(f->code, kIOReturnNoMemory);
  assert_int_equal(f->constraint, DK_CONSTRAINT_MASK);
  assert_string_equal(f->text, "deep reason");
  dk__fail_recode("Create", kIOReturnNoResources);
  f = dk_last_failure();
  assert_int_equal(f->code, kIOReturnNoResources);
  assert_string_equal(f->function, "Create");
  assert_string_equal(f->text, "deep reason");
  assert_int_equal(dk__failure_code(), kIOReturnNoResources);
  /* a long reason is cut, NUL-terminated */
  char big[2048];
  memset(big, 'r', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  dk__enter("long");
  dk__fail(kIOReturnError, DK_CONSTRAINT_STATE, "%s", big);
  assert_true(strlen(dk_last_failure()->text) < sizeof dk_last_failure()->text);
  dk_clear_failure();
  assert_int_equal(dk_last_failure()->code, kIOReturnSuccess);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_NONE);
  assert_string_equal(dk_last_failure()->function, "");
}

static void *fresh_thread_failure(void *arg)
{
  (void)arg;
  const dk_failure *f = dk_last_failure();   /* nothing entered on this thread yet */
  bool ok = f->code == kIOReturnSuccess && f->text[0] == '\0' && strcmp(f->function, "") == 0;
  return ok ? (void *)1 : NULL;
}

static void failure_per_thread_and_names(void **state)
{
  (void)state;
  dk__enter("main_thread");
  dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_PIN, "here");
  pthread_t t;
  void *ok = NULL;
  assert_int_equal(pthread_create(&t, NULL, fresh_thread_failure, NULL), 0);
  assert_int_equal(pthread_join(t, &ok), 0);
  assert_non_null(ok);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_PIN);   /* ours untouched */
  static const char *const names[] = { "none", "argument", "task", "mask", "alignment", "contiguity",
                                       "boundary", "segments", "cache", "privilege", "pin", "resource",
                                       "state", "range", "peer", "connection" };
  for (unsigned k = 0; k < sizeof names / sizeof names[0]; k++)
    assert_string_equal(dk_constraint_name((dk_constraint_kind)k), names[k]);
  assert_string_equal(dk_constraint_name((dk_constraint_kind)(sizeof names / sizeof names[0])), "unknown");
  assert_string_equal(dk_constraint_name((dk_constraint_kind)-1), "unknown");
}

static void *count_and_exit(void *arg)
{
  int n = *(int *)arg;
  for (int i = 0; i < n; i++) dk__ctr_add(DK_CTR_REQUESTS_SLAB, 1);
  return NULL;
}

/* A thread's counts outlive it, and the blocks of exited threads are reused, not multiplied. */
static void counters_survive_thread_exit(void **state)
{
  (void)state;
  int64_t s0 = dk__ctr_sum(DK_CTR_REQUESTS_SLAB);
  int n = 7;
  for (int round = 0; round < 20; round++) {
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, count_and_exit, &n), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
  }
  assert_int_equal(dk__ctr_sum(DK_CTR_REQUESTS_SLAB), s0 + 20 * 7);
  dk__ctr_add(DK_CTR_REQUESTS_SLAB, -(20 * 7));
  assert_int_equal(dk__ctr_sum(DK_CTR_REQUESTS_SLAB), s0);
}

static void integer_helpers(void **state)
{
  (void)state;
  assert_false(dk__is_pow2(0));
  assert_true(dk__is_pow2(1));
  assert_true(dk__is_pow2(1ull << 63));
  assert_false(dk__is_pow2(6));
  assert_int_equal(dk__next_pow2(0), 1);
  assert_int_equal(dk__next_pow2(1), 1);
  assert_int_equal(dk__next_pow2(3), 4);
  assert_int_equal(dk__next_pow2(1ull << 63), 1ull << 63);
  assert_int_equal(dk__next_pow2((1ull << 63) + 1), 0);
  assert_int_equal(dk__bitlen(0), 0);
  assert_int_equal(dk__bitlen(0xFFFFFFFFu), 32);
  uint64_t out = 7;
  assert_true(dk__round_up(4097, 4096, &out));
  assert_int_equal(out, 8192);
  out = 7;
  assert_false(dk__round_up(UINT64_MAX - 10, 4096, &out));
  assert_int_equal(out, 7);   /* left alone */
}

/* Each errno a system call reports becomes the IOReturn IOKit's callers test for
 * (src/base/ioreturn.c): memory, resources, privilege, arguments, devices, and an
 * unknown errno the generic kIOReturnError. */
static void errno_to_ioreturn(void **state)
{
  (void)state;
  static const struct { int e; IOReturn rc; } map[] = {
    {0, kIOReturnSuccess},
    {ENOMEM, kIOReturnNoMemory}, {ENOSPC, kIOReturnNoMemory}, {EOVERFLOW, kIOReturnNoMemory},
    {EMFILE, kIOReturnNoResources}, {ENFILE, kIOReturnNoResources}, {EAGAIN, kIOReturnNoResources},
    {ENOBUFS, kIOReturnNoResources},
    {EPERM, kIOReturnNotPrivileged}, {EACCES, kIOReturnNotPrivileged},
    {EINVAL, kIOReturnBadArgument}, {EFAULT, kIOReturnBadArgument}, {ENAMETOOLONG, kIOReturnBadArgument},
    {ENOENT, kIOReturnNoDevice}, {ENODEV, kIOReturnNoDevice}, {ENXIO, kIOReturnNoDevice},
    {EBUSY, kIOReturnBusy}, {EEXIST, kIOReturnNoSpace},
    {ENOTSUP, kIOReturnUnsupported}, {ENOSYS, kIOReturnUnsupported},
    {ETIMEDOUT, kIOReturnTimeout}, {EIO, kIOReturnIOError},
    {EPIPE, kIOReturnNotAttached}, {ECONNRESET, kIOReturnNotAttached}, {ECONNREFUSED, kIOReturnNotAttached},
    {ENOTCONN, kIOReturnNotAttached},
    {EDOM, kIOReturnError}, {-1, kIOReturnError},
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    IOReturn rc = dk__ioreturn_from_errno(map[i].e);
    if (rc != map[i].rc)
      fail_msg("errno %d (%s) gave 0x%x (%s), expected 0x%x (%s)", map[i].e, strerror(map[i].e), rc,
               dk_ioreturn_string(rc), map[i].rc, dk_ioreturn_string(map[i].rc));
  }
  /* every code the mapping gives has its own text; a code outside the table says so */
  for (size_t i = 1; i < sizeof map / sizeof map[0]; i++)
    assert_string_not_equal(dk_ioreturn_string(map[i].rc), "unknown IOReturn code");
  assert_string_equal(dk_ioreturn_string((IOReturn)0xe00002ffu), "unknown IOReturn code");
}

int main(void)
{
  setenv("DMAKIT_LOWMEM_SEARCH_MS", "0x7b", 1);
  setenv("DMAKIT_SHARE_TIMEOUT_MS", "010", 1);
  setenv("DMAKIT_POOL_GROW_MB", "", 1);
  unsetenv("DMAKIT_POOL_MAX_MB");
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(options_from_environment),
    cmocka_unit_test(options_set_get_names),
    cmocka_unit_test(failure_first_wins_and_recode),
    cmocka_unit_test(failure_per_thread_and_names),
    cmocka_unit_test(counters_survive_thread_exit),
    cmocka_unit_test(integer_helpers),
    cmocka_unit_test(errno_to_ioreturn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
