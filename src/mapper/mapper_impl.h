/* src/mapper/mapper_impl.h: the IOMapper object, shared by the dispatcher (mapper.c) and its
 * backends (vfio.c; the software backend in mapper.c). Nothing outside src/mapper sees it. */
#ifndef DK_MAPPER_IMPL_H
#define DK_MAPPER_IMPL_H

#include "mapper/iova.h"
#include "mapper/mapper.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct dk_mapper_ops {
  /* map [va, va+len) at [iova, iova+len), device read and write; 0, or -1 with errno */
  int  (*map)(IOMapper *m, uint64_t va, uint64_t iova, uint64_t len);
  int  (*unmap)(IOMapper *m, uint64_t iova, uint64_t len);
  void (*close)(IOMapper *m);
} dk_mapper_ops;

/* One kernel mapping: whole granules of this process's address space at one IOVA range, in
 * the mapper's tree by address (node.start/end = [va, va+len)), so the mapping that covers a
 * new range is found in O(log n). */
typedef struct dk_iova_region {
  dk_xnode node;
  uint64_t iova;
  uint32_t uses;
} dk_iova_region;

struct IOMapper {
  uint32_t             magic;
  uint32_t             epoch;         /* dk__fork_epoch() when it was made: a parent's mapper
                                         (its container is shared) is never programmed here */
  dk_mapper_kind       kind;
  bool                 is_static;     /* the identity mapper: never freed */
  _Atomic int          refs;          /* the opener's, the system setting's, each buffer's use */
  pthread_mutex_t      lock;          /* regions (and their use counts), space, info */
  const dk_mapper_ops *ops;           /* NULL: identity (nothing to map) */
  int                  container_fd, group_fd, device_fd;
  dk_iova_space        space;
  dk_mapper_info       info;
  dk_xtree             regions;
};

/* A mapper of `kind` over the apertures `ranges` (inclusive ends), one reference. NULL with
 * the failure recorded. */
IOMapper *dk__mapper_new(dk_mapper_kind kind, const dk_mapper_ops *ops, const uint64_t (*ranges)[2], size_t n);
/* The software backend (tests): IOVAs are allocated and tracked, nothing is programmed. */
IOMapper *dk__mapper_create_soft(const uint64_t (*ranges)[2], size_t n, uint32_t dma_limit);

#endif
