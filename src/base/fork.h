/* src/base/fork.h: what a forked child inherits, in one place. A child shares its parent's
 * hugepage memory (MAP_SHARED), io_uring rings (the pins) and locks on reservation pages, but
 * gets private copies of the bookkeeping: left as it is, it would hand out memory the parent
 * still owns, or unpin the parent's buffers. So in the child every module forgets what it
 * inherited (without giving back anything that is the parent's) and starts empty: its own
 * pool, rings and kept buffers from then on. Buffers inherited from the parent stay usable in
 * the child as they are; releasing them there gives nothing back (the parent owns the memory).
 * dk__fork_epoch() counts the forks this process is away from the one that made a thing. */
#ifndef DK_FORK_H
#define DK_FORK_H

#include <stdint.h>

typedef enum dk_fork_slot {
  DK_FORK_IOKIT = 0,  /* kept descriptors and cached objects: forgotten */
  DK_FORK_POOL,       /* the pool and the slab heaps: empty in the child */
  DK_FORK_HUGE,       /* hugepage limits the parent raised: not the child's to give back */
  DK_FORK_PIN,        /* the pin rings: the parent's; the child makes its own */
  DK_FORK__COUNT
} dk_fork_slot;

/* Run `in_child` (in slot order) in the child of every fork from now on. */
void dk__fork_register(dk_fork_slot slot, void (*in_child)(void));
/* Incremented in a child at each fork. */
uint32_t dk__fork_epoch(void);

#endif
