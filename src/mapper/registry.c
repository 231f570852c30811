/* src/mapper/registry.c: which IOMapper serves which PCI function, and mappers as objects.
 * dk_mapper_open_vfio records each VFIO mapper under its device's PCI address until its last
 * reference goes, so that the device's IOService (iokit/service.c) finds the container already
 * open in this process (a VFIO group opens once) instead of failing to open it again. A mapper
 * found here is retained only while its count is above zero: one being torn down is skipped.
 * OSObject_retain/release reach a mapper's own count through dk__mapper_is. IOVMPageSize, the
 * unit of I/O mappings: the CPU page, or an IOMMU's smallest page where that is larger. */
#include "mapper/mapper_impl.h"
#include "prim/prim.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct entry {
  struct entry *next;
  IOMapper     *mapper;          /* not retained: the entry goes when the mapper does */
  char          address[32];
} entry;

uint64_t IOVMPageSize = 4096;

__attribute__((constructor)) static void vm_page_size_init(void)
{
  long ps = sysconf(_SC_PAGESIZE);        /* no system call: the kernel's auxiliary vector */
  if (ps > 0) IOVMPageSize = (uint64_t)ps;
}

void dk__mapper_note_page_sizes(uint64_t sizes)
{
  uint64_t smallest = sizes & (~sizes + 1);
  if (smallest > __atomic_load_n(&IOVMPageSize, __ATOMIC_RELAXED))
    __atomic_store_n(&IOVMPageSize, smallest, __ATOMIC_RELAXED);
}

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_entries;

bool dk__pci_address_ok(const char *a)
{
  size_t n = 0;
  for (const char *p = a; *p; p++, n++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.'))
      return false;
  return n >= 7 && n < 32;
}

int dk__mapper_refs(const IOMapper *m)
{
  return dk__mapper_is(m) ? atomic_load_explicit(&((IOMapper *)(uintptr_t)m)->refs, memory_order_relaxed) : 0;
}

static bool try_retain(IOMapper *m)
{
  if (m->is_static) return true;
  int n = atomic_load_explicit(&m->refs, memory_order_relaxed);
  while (n > 0)
    if (atomic_compare_exchange_weak_explicit(&m->refs, &n, n + 1, memory_order_acquire, memory_order_relaxed))
      return true;
  return false;
}

IOReturn dk__mapper_register_device(IOMapper *m, const char *address)
{
  if (!dk__mapper_is(m) || !address || !dk__pci_address_ok(address))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a mapper and a PCI address are needed");
  entry *e = dk__calloc(1, sizeof *e);
  if (!e) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the device's mapper record");
  e->mapper = m;
  snprintf(e->address, sizeof e->address, "%s", address);
  pthread_mutex_lock(&g_lock);
  e->next = g_entries;
  g_entries = e;
  pthread_mutex_unlock(&g_lock);
  return kIOReturnSuccess;
}

void dk__mapper_unregister(IOMapper *m)
{
  pthread_mutex_lock(&g_lock);
  for (entry **pp = &g_entries; *pp;) {
    entry *e = *pp;
    if (e->mapper == m) {
      *pp = e->next;
      dk__free(e);
    } else {
      pp = &e->next;
    }
  }
  pthread_mutex_unlock(&g_lock);
}

IOMapper *dk__mapper_copy_for_device(const char *address)
{
  IOMapper *found = NULL;
  pthread_mutex_lock(&g_lock);
  for (entry *e = g_entries; e && !found; e = e->next)
    if (!strcmp(e->address, address) && try_retain(e->mapper)) found = e->mapper;
  pthread_mutex_unlock(&g_lock);
  return found;
}
