/* src/base/counters.c: registration and summing of the per-thread counter blocks. */
#include "base/counters.h"

#include <pthread.h>

_Thread_local dk_tctr dk__tl_ctr;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dk_tctr *g_blocks;
static int64_t g_retired[DK_CTR__COUNT];
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* A thread exits: fold its counts into the retired totals and unlink its block. */
static void retire(void *block)
{
  dk_tctr *t = block;
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < DK_CTR__COUNT; i++) {
    g_retired[i] += atomic_load_explicit(&t->v[i], memory_order_relaxed);
    atomic_store_explicit(&t->v[i], 0, memory_order_relaxed);
  }
  for (dk_tctr **pp = &g_blocks; *pp; pp = &(*pp)->next)
    if (*pp == t) { *pp = t->next; break; }
  /* a later thread-exit destructor that counts (a release) registers the block again, and
   * the next round of destructors retires it again */
  t->registered = 0;
  pthread_mutex_unlock(&g_lock);
}

static void key_init(void) { pthread_key_create(&g_key, retire); }

void dk__ctr_register(void)
{
  pthread_once(&g_once, key_init);
  pthread_mutex_lock(&g_lock);
  dk__tl_ctr.next = g_blocks;
  g_blocks = &dk__tl_ctr;
  dk__tl_ctr.registered = 1;
  pthread_mutex_unlock(&g_lock);
  pthread_setspecific(g_key, &dk__tl_ctr);
}

int64_t dk__ctr_sum(dk_ctr c)
{
  pthread_mutex_lock(&g_lock);
  int64_t s = g_retired[c];
  for (dk_tctr *t = g_blocks; t; t = t->next) s += atomic_load_explicit(&t->v[c], memory_order_relaxed);
  pthread_mutex_unlock(&g_lock);
  return s;
}
