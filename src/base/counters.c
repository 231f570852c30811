/* src/base/counters.c: registration and summing of the per-thread counter blocks. A block is
 * heap memory that is never freed: when its thread exits its counts are folded into the
 * retired totals and the block is left linked, zeroed and free for the next new thread. A
 * count made after the thread's last destructor round (an application's own destructor that
 * releases a buffer late) stays in a block nobody frees, so it is still summed, never lost
 * and never read from a dead thread's memory. */
#include "base/counters.h"
#include "base/tld.h"

#include <pthread.h>
#include <stdlib.h>

_Thread_local dk_tctr *dk__tl_ctr __attribute__((tls_model("initial-exec")));

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static dk_tctr *g_blocks;                 /* every block ever made */
static int64_t g_retired[DK_CTR__COUNT];
static _Thread_local dk_tctr tl_spare;     /* when no block can be had: counted, never summed */

/* A thread exits: fold its counts into the retired totals and free its block for reuse. A
 * later count by this thread (a later destructor) takes a block again. */
static void retire(void)
{
  dk_tctr *t = dk__tl_ctr;
  dk__tl_ctr = NULL;
  if (!t || t == &tl_spare) return;
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < DK_CTR__COUNT; i++) {
    g_retired[i] += atomic_load_explicit(&t->v[i], memory_order_relaxed);
    atomic_store_explicit(&t->v[i], 0, memory_order_relaxed);
  }
  t->in_use = 0;
  pthread_mutex_unlock(&g_lock);
}

dk_tctr *dk__ctr_register(void)
{
  pthread_mutex_lock(&g_lock);
  dk_tctr *t = g_blocks;
  while (t && t->in_use) t = t->next;
  if (!t && (t = calloc(1, sizeof *t))) {  /* plain calloc: lives as long as the process, */
    t->next = g_blocks;                     /* outside the heap accounting */
    g_blocks = t;
  }
  if (!t) {
    pthread_mutex_unlock(&g_lock);
    return dk__tl_ctr = &tl_spare;          /* no memory for 48 bytes: these counts are lost */
  }
  t->in_use = 1;
  pthread_mutex_unlock(&g_lock);
  dk__tl_ctr = t;
  dk__tld_arm(DK_TLD_COUNTERS, retire);
  return t;
}

int64_t dk__ctr_sum(dk_ctr c)
{
  pthread_mutex_lock(&g_lock);
  int64_t s = g_retired[c];
  for (dk_tctr *t = g_blocks; t; t = t->next) s += atomic_load_explicit(&t->v[c], memory_order_relaxed);
  pthread_mutex_unlock(&g_lock);
  return s;
}
