/* src/mapper/mapper.h: IOMapper inside dmakit. One dispatcher over two backends: identity
 * (bus address = physical; nothing to map) and VFIO type1 (iova.c chooses I/O virtual
 * addresses, vfio.c programs the container). Each mapping covers whole granules of this
 * process's address space and is counted: a buffer range already covered by a mapping whose
 * IOVAs meet the new request's limit, alignment and boundary shares it, so thousands of small
 * buffers cost few of the kernel's 65,535 mappings. The debug tracker keeps every live
 * mapping and counts unmaps of what is not mapped; dk_mapper_close reports the leaks. */
#ifndef DK_MAPPER_H
#define DK_MAPPER_H

#include "alloc/xtree.h"
#include "base/base.h"

#include <dmakit/IOMapper.h>

/* What a device can reach, for one mapping request. */
typedef struct dk_iova_spec {
  uint64_t limit;       /* highest IOVA allowed (inclusive); 0 = no limit */
  uint64_t alignment;   /* of the IOVA of the first byte; power of two, 0/1 = none */
  uint64_t boundary;    /* the range crosses no multiple of it (when it is no longer); 0 = none */
  uint64_t low;         /* lowest IOVA allowed; 0 = none */
} dk_iova_spec;

/* One counted use of a mapping, kept by its user (a descriptor, a command): mapping and
 * unmapping it cost O(log n) and O(1) and never allocate. Zero-initialised it is not live. */
typedef struct dk_mapping {
  struct dk_iova_region *region;        /* NULL while not live */
  uint64_t               iova, len;     /* the IOVA of the range's first byte, its length */
} dk_mapping;
static inline bool dk__mapping_live(const dk_mapping *u) { return u->region != NULL; }

/* True for a mapper with its own IOVA space (VFIO); false for identity and NULL. */
bool dk__mapper_translates(const IOMapper *m);
void dk__mapper_retain(IOMapper *m);
void dk__mapper_release(IOMapper *m);
/* The system mapper now (retained), or NULL for none. dk__mapper_system_set is the cheap
 * test the create path makes first (one relaxed load, no call). */
IOMapper *dk__mapper_system_retain(void);
extern _Atomic(IOMapper *) dk__mapper_system_ptr;
static inline bool dk__mapper_system_set(void)
{
  return __atomic_load_n((IOMapper *const *)&dk__mapper_system_ptr, __ATOMIC_RELAXED) != NULL;
}

/* Map [va, va+len) (any alignment; mapped in this process) for the device. `granule` (a power
 * of two >= page) is the unit of the mapping: the hugepage for pool memory, so that buffers in
 * one hugepage share a mapping. On success `use` (the caller's, not live) is live: use->iova is
 * the IOVA of va, contiguous for len bytes; give it back with dk__mapper_unmap. Failure is
 * recorded (kIOReturnNoResources: IOVA space or the mapping limit; kIOReturnVMError: the
 * kernel refused the mapping; kIOReturnNoMemory: no memory for the mapping's record). */
IOReturn dk__mapper_map(IOMapper *m, const void *va, uint64_t len, uint64_t granule, const dk_iova_spec *spec,
                        dk_mapping *use);
/* Give a use back (it is not live after); the mapping goes with its last use. A use not live
 * is counted as a double unmap by the tracker (and otherwise ignored). Never allocates. */
void dk__mapper_unmap(IOMapper *m, dk_mapping *use);

/* ---- registry.c: mappers by device, and as objects --------------------------------------- */
/* A PCI address such as 0000:00:04.0 (hex digits, ':' and '.'; 7 to 31 characters). */
bool dk__pci_address_ok(const char *address);
/* `p` is an IOMapper: its first word is the mapper's magic. The magic is odd, and an OSObject
 * starts with a pointer to its (8-byte aligned) class, so neither is taken for the other. */
#define DK_MAPPER_MAGIC 0x10a99e55u
static inline bool dk__mapper_is(const void *p)
{
  uint32_t first;
  if (!p) return false;
  __builtin_memcpy(&first, p, sizeof first);
  return first == DK_MAPPER_MAGIC;
}
int  dk__mapper_refs(const IOMapper *m);
/* Record `m` as the mapper of the PCI function `address` (dk_mapper_open_vfio; tests). The
 * record goes when the mapper's last reference does (dk__mapper_unregister). */
IOReturn dk__mapper_register_device(IOMapper *m, const char *address);
void dk__mapper_unregister(IOMapper *m);
/* An IOMMU's page sizes (a bit per size): IOVMPageSize becomes its smallest if that is larger. */
void dk__mapper_note_page_sizes(uint64_t sizes);
/* The mapper recorded for `address`, retained, or NULL. */
IOMapper *dk__mapper_copy_for_device(const char *address);

#endif
