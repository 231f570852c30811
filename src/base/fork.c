/* src/base/fork.c: the one fork handler (see fork.h). */
#include "base/fork.h"

#include <pthread.h>
#include <stdatomic.h>

static void (*_Atomic g_in_child[DK_FORK__COUNT])(void);
static _Atomic uint32_t g_epoch;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void child(void)
{
  atomic_fetch_add(&g_epoch, 1);
  for (int s = 0; s < DK_FORK__COUNT; s++) {
    void (*fn)(void) = atomic_load(&g_in_child[s]);
    if (fn) fn();
  }
}

static void install(void) { pthread_atfork(NULL, NULL, child); }

void dk__fork_register(dk_fork_slot slot, void (*in_child)(void))
{
  pthread_once(&g_once, install);
  atomic_store(&g_in_child[slot], in_child);
}

uint32_t dk__fork_epoch(void) { return atomic_load_explicit(&g_epoch, memory_order_relaxed); }
