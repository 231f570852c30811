/* src/iokit/debug.c: the internal consistency check run after every fault-injection step: the
 * pin tables agree with their counts, the pool's free lists are sorted, coalesced and inside
 * their regions, and no live counter has gone negative. */
#include "iokit/internal.h"
#include "prim/prim.h"

#include <stdio.h>

int dk__debug_validate(char *why, size_t cap)
{
  if (dk__pin_validate(why, cap) < 0) return -1;
  if (dk__pool_validate(false, why, cap) < 0) return -1;
  dk_prim_counters c = dk__prim_counters();
  if (c.fds < 0 || c.map_bytes < 0 || c.lock_bytes < 0 || c.heap_blocks < 0) {
    snprintf(why, cap, "a live counter is negative: fds %ld map %ld lock %ld heap %ld", c.fds, c.map_bytes,
             c.lock_bytes, c.heap_blocks);
    return -1;
  }
  if (dk__objects_live() < 0) {
    snprintf(why, cap, "more objects freed than created (%ld)", dk__objects_live());
    return -1;
  }
  return 0;
}

void dk__thread_caches_flush(void)
{
  dk__objects_cache_flush();
  dk__pool_thread_flush();
}
