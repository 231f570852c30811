/* src/base/tld.h: the thread's exit, in one place. Every module that keeps per-thread state
 * (caches, the slab heap, counter blocks) arms its slot on the thread's first use; one
 * pthread key runs the armed slots when the thread exits, in the order of dk_tld_slot below,
 * which is the teardown order: what a later slot frees may not be needed by an earlier one. A
 * slot armed again during teardown (an application's own destructor that releases a buffer
 * late) runs again in the next destructor round. */
#ifndef DK_TLD_H
#define DK_TLD_H

#include <stdbool.h>

typedef enum dk_tld_slot {
  DK_TLD_READY = 0,   /* iokit's kept descriptors: their slots go back to the slab heap */
  DK_TLD_OBJECTS,     /* iokit's cached descriptor objects: back to the C heap */
  DK_TLD_HEAP,        /* the slab heap: its slabs pass to the threads still running */
  DK_TLD_COUNTERS,    /* the counter block: its counts fold into the retired totals */
  DK_TLD__COUNT
} dk_tld_slot;

extern _Thread_local unsigned dk__tl_armed __attribute__((tls_model("initial-exec")));
void dk__tld_arm_slow(dk_tld_slot slot, void (*teardown)(void));

/* Make sure `teardown` runs when this thread exits (cheap after the first call per round). */
static inline void dk__tld_arm(dk_tld_slot slot, void (*teardown)(void))
{
  if (__builtin_expect(!(dk__tl_armed & (1u << slot)), 0)) dk__tld_arm_slow(slot, teardown);
}

#endif
