/* src/base/tld.c: the one thread-exit key (see tld.h). */
#include "base/tld.h"

#include <pthread.h>
#include <stdatomic.h>

_Thread_local unsigned dk__tl_armed __attribute__((tls_model("initial-exec")));
static void (*_Atomic g_teardown[DK_TLD__COUNT])(void);
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void thread_exit(void *unused)
{
  (void)unused;
  unsigned armed = dk__tl_armed;
  dk__tl_armed = 0;                     /* a slot armed from here on runs in the next round */
  for (int s = 0; s < DK_TLD__COUNT; s++)
    if (armed & (1u << s)) {
      void (*fn)(void) = atomic_load_explicit(&g_teardown[s], memory_order_acquire);
      if (fn) fn();
    }
}

static void key_init(void) { pthread_key_create(&g_key, thread_exit); }

void dk__tld_arm_slow(dk_tld_slot slot, void (*teardown)(void))
{
  pthread_once(&g_once, key_init);
  atomic_store_explicit(&g_teardown[slot], teardown, memory_order_release);
  if (!dk__tl_armed) pthread_setspecific(g_key, (void *)1);
  dk__tl_armed |= 1u << slot;
}
