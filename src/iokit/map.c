/* src/iokit/map.c: IOMemoryMap and createMappingInTask (REFERENCE.md §4 "Mapping rules", §5).
 * A map is one view of a descriptor in a task: the identity shortcut (the buffer's own
 * address, kIOMapStatic), a real second mapping of the same memfd (read-only enforced by the
 * page tables), or a sub-range of an existing compatible map. Maps are kept in the
 * descriptor's set, unretained; each map retains its descriptor and unlinks itself when freed. */
#include "iokit/internal.h"
#include "prim/prim.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

static void map_free(OSObject *o);
const dk_class dk__map_class = { 0x1b3d0002u, "IOMemoryMap", map_free, true, NULL };

static IOMemoryMap *as_map(const void *p) { return dk__object_cast(p, &dk__map_class); }

#define SET_LOCKS 64
static pthread_mutex_t g_set_locks[SET_LOCKS] = { [0 ... SET_LOCKS - 1] = PTHREAD_MUTEX_INITIALIZER };

void dk__map_in_child(void)
{
  for (int i = 0; i < SET_LOCKS; i++) pthread_mutex_init(&g_set_locks[i], NULL);
}

pthread_mutex_t *dk__md_set_lock(const IOMemoryDescriptor *md)
{
  uintptr_t a = (uintptr_t)md;
  return &g_set_locks[((a >> 6) ^ (a >> 13)) % SET_LOCKS];
}

static void set_unlink(IOMemoryMap *m)
{
  pthread_mutex_t *lk = dk__md_set_lock(m->md);
  pthread_mutex_lock(lk);
  for (IOMemoryMap **pp = &m->md->maps; *pp; pp = &(*pp)->next)
    if (*pp == m) { *pp = m->next; break; }
  m->in_set = false;
  pthread_mutex_unlock(lk);
}

static void vm_release(IOMemoryMap *m)
{
  if (m->vm_base) dk__mem_unmap(m->vm_base, m->vm_len);
  m->vm_base = NULL;
  if (m->share_id) dk__share_unmap(m->task, m->share_id);   /* the client unmaps it */
  m->share_id = 0;
}

static void map_free(OSObject *o)
{
  IOMemoryMap *m = (IOMemoryMap *)o;
  if (m->in_set) set_unlink(m);
  vm_release(m);
  OSObject_release(m->super);
  OSObject_release(m->md);
  dk__task_release(m->task);
  dk__free(m);
}

/* Guard size on each side: 64 KiB for exactly kIOMapGuardedLarge, a page for any other guard
 * bits (as XNU decides it), 0 without guard bits. */
static size_t guard_bytes(IOOptionBits options)
{
  IOOptionBits g = options & kIOMapGuardedMask;
  if (!g) return 0;
  return g == kIOMapGuardedLarge ? 64 * 1024 : dk__caps()->page_size;
}

/* §4 mapping rule 3: an existing map this request may share. Called with the set's lock held. */
static bool compatible(const IOMemoryMap *m, task_t task, mach_vm_address_t at, IOOptionBits options,
                       mach_vm_size_t offset, mach_vm_size_t length)
{
  if (!dk__map_address(m) || m->task != task) return false;             /* unmapped, other task */
  if (m->server_owned) return false;                                     /* a client's own request */
  if (m->super && !dk__map_address(m->super)) return false;             /* its view went away */
  if ((m->options ^ options) & (kIOMapReadOnly | kIOMapGuardedMask)) return false;
  uint32_t want = options & kIOMapCacheMask;
  if (want != kIOMapDefaultCache && want != (m->options & kIOMapCacheMask)) return false;
  if (offset < m->offset || offset + length > m->offset + m->length) return false;
  if (!(options & kIOMapAnywhere) && at != dk__map_address(m) + (offset - m->offset)) return false;
  return true;
}

/* §4 mapping rule 3: an existing map this request may share, an exact one (same offset and
 * length) before one that contains the range. Called with the descriptor's lock held. */
static IOMemoryMap *find_compatible(IOMemoryDescriptor *md, task_t task, mach_vm_address_t at,
                                    IOOptionBits options, mach_vm_size_t offset, mach_vm_size_t length)
{
  for (int exact = 1; exact >= 0; exact--) {
    for (IOMemoryMap *m = md->maps; m; m = m->next) {
      if (exact && (m->offset != offset || m->length != length)) continue;
      if (!compatible(m, task, at, options, offset, length)) continue;
      if (!dk__object_try_retain(&m->obj)) continue;                     /* being freed */
      return m;
    }
  }
  return NULL;
}

static void set_add(IOMemoryMap *m);

static IOMemoryMap *new_map(IOMemoryDescriptor *md, task_t task, IOOptionBits options,
                            mach_vm_size_t offset, mach_vm_size_t length)
{
  IOMemoryMap *m = dk__calloc(1, sizeof *m);
  if (!m) {
    dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the map object");
    return NULL;
  }
  dk__object_init(&m->obj, &dk__map_class);
  OSObject_retain(md);
  m->md = md;
  dk__task_retain(task);
  m->task = task;
  m->options = options;
  m->offset = offset;
  m->length = length;
  return m;
}

/* A mapping in a client task: the file pages holding the range, sent there. Only memory with
 * a file of its own can go (4K pages); pool memory shares its file with other buffers. */
static bool map_into_client(IOMemoryMap *m, IOMemoryDescriptor *md, task_t task, IOOptionBits options,
                            mach_vm_size_t offset, mach_vm_size_t length)
{
  uint64_t file_off, span, in_page;
  int fd = dk__mem_share(&md->mem, (uint64_t)(md->buffer - dk__mem_va(&md->mem)) + offset, length, &file_off, &span,
                         &in_page);
  if (fd < 0) return false;
  dk_share_req r = {
    .memfd = fd,
    .file_offset = file_off,
    .span = span,
    .in_page = in_page,
    .length = length,
    .writable = !(options & kIOMapReadOnly),
    .populate = (options & kIOMapPrefault) != 0,
    .tag = md->tag,
    .obj = m,
    .kind = DK_SHARE_MAP,
  };
  uint64_t id, address;
  /* the id, and the address once the client answered, are stored by the sharing hooks under
   * the connection's lock (a revoke cannot be overtaken by a late store) */
  return dk__share_map(task, &r, &id, &address) == kIOReturnSuccess;
}

/* A mapping of a descriptor of another kind (memory the caller owns, sub-ranges,
 * concatenations, guard pages): a reservation of the range's pages, the guard pages around
 * them, each part mapped over it by its own kind; byte `offset` keeps its offset in the page. */
static bool view(IOMemoryMap *m, IOMemoryDescriptor *md, mach_vm_address_t at, IOOptionBits options,
                 mach_vm_size_t offset, mach_vm_size_t length, size_t guard)
{
  uint64_t mask = dk__caps()->page_size - 1;
  uint64_t in_page = dk__md_source(md, offset, NULL, NULL) & mask;
  size_t pages = (size_t)((in_page + length + mask) & ~mask), span = pages + 2 * guard;
  int how = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void *want = NULL;
  if (!(options & kIOMapAnywhere)) {
    want = (void *)(uintptr_t)(at & ~mask);
    how |= (options & kIOMapOverwrite) ? MAP_FIXED : MAP_FIXED_NOREPLACE;
  }
  uint8_t *res = dk__mmap(want, span, PROT_NONE, how, -1, 0);
  if (res == MAP_FAILED || (want && res != want)) {
    if (res != MAP_FAILED) dk__munmap(res, span);
    dk__fail(res != MAP_FAILED || errno == EEXIST ? kIOReturnNoSpace : kIOReturnVMError, DK_CONSTRAINT_RESOURCE,
             "no room for a mapping of 0x%llx bytes%s", (unsigned long long)length,
             want ? " at the address asked for" : "");
    return false;
  }
  if (want && (options & kIOMapOverwrite)) dk__prim_count_adopted(span);
  int prot = (options & kIOMapReadOnly) ? PROT_READ : PROT_READ | PROT_WRITE;
  uint8_t *a = res + guard + in_page;
  if (dk__md_map_at(md, offset, length, prot, a) != kIOReturnSuccess) {
    dk__munmap(res, span);
    return false;
  }
  m->vm_base = res;
  m->vm_len = span;
  m->address = (mach_vm_address_t)(uintptr_t)a;
  return true;
}

static void set_add(IOMemoryMap *m)
{
  pthread_mutex_t *lk = dk__md_set_lock(m->md);
  pthread_mutex_lock(lk);
  m->next = m->md->maps;
  m->md->maps = m;
  m->in_set = true;
  pthread_mutex_unlock(lk);
}

IOMemoryMap *dk__create_mapping(IOMemoryDescriptor *md, task_t task, mach_vm_address_t at,
                                IOOptionBits options, mach_vm_size_t offset, mach_vm_size_t length)
{
  /* rule 2: a task is required */
  if (!task) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_TASK, "cannot map into no task (NULL)");
    return NULL;
  }
  bool client = dk__task_is_client(task);
  if (task != kernel_task && !client) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_TASK,
             "not a task: kernel_task (this process) or a connected client can be mapped into");
    return NULL;
  }
  /* rule 1: length 0 means the current length */
  if (length == 0) length = md->length;
  /* rule 4: the range must lie inside the descriptor; a zero-length one cannot be mapped */
  if (offset >= md->length || offset + length < offset || offset + length > md->length) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE,
             "mapping range 0x%llx+0x%llx is outside the length 0x%llx", (unsigned long long)offset,
             (unsigned long long)length, (unsigned long long)md->length);
    return NULL;
  }
  /* rule 3: share a compatible mapping */
  dk_md_ext *x = dk__md_ext_peek(md);
  if (!(options & kIOMapUnique)) {
    pthread_mutex_t *lk = dk__md_set_lock(md);
    pthread_mutex_lock(lk);
    IOMemoryMap *old = find_compatible(md, task, at, options, offset, length);
    pthread_mutex_unlock(lk);
    if (old) {
      if (old->offset == offset && old->length == length) return old;   /* same object, +1 */
      IOMemoryMap *sub = new_map(md, task, options, offset, length);
      if (!sub) { OSObject_release(old); return NULL; }
      sub->super = old;                                                  /* holds old's +1 */
      sub->address = dk__map_address(old) + (offset - old->offset);
      set_add(sub);
      return sub;
    }
    if (options & kIOMapReference) {
      dk__fail(kIOReturnNotFound, DK_CONSTRAINT_STATE, "kIOMapReference: no compatible mapping exists");
      return NULL;
    }
  }
  size_t guard = guard_bytes(options);
  if (guard && !(options & kIOMapAnywhere)) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "guarded mappings need kIOMapAnywhere");
    return NULL;
  }
  /* XNU refuses an address outside the kernel map; here, below the lowest address Linux lets
   * a process map (vm.mmap_min_addr, and never below 64 KiB); in a client, the null page */
  uint64_t min_addr = client ? dk__caps()->page_size : dk__caps()->mmap_min_addr;
  if (!(options & kIOMapAnywhere) && at < min_addr) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
             "a placed mapping (no kIOMapAnywhere) at 0x%llx is below 0x%llx, the lowest address a mapping may "
             "take there (%s)", (unsigned long long)at, (unsigned long long)min_addr,
             client ? "the null page" : "vm.mmap_min_addr, at least 64 KiB");
    return NULL;
  }
  if (md->obj.cls->md && client) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
             "only an IOBufferMemoryDescriptor can be mapped into a client (its memory has a file to send)");
    return NULL;
  }
  if (client && (!(options & kIOMapAnywhere) || guard)) {
    dk__fail(kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
             "a client chooses where it maps a buffer: pass kIOMapAnywhere and no guard bits");
    return NULL;
  }
  IOMemoryMap *m = new_map(md, task, options, offset, length);
  if (!m) return NULL;
  /* rule 5: the identity shortcut (a buffer's own address, or the one range a general
   * descriptor describes) */
  /* a window of a buffer maps as the buffer at the window's offset (whole hugepages at an
   * address congruent with them for pool memory, as a buffer's own second mapping) */
  uint64_t shown_off = offset;
  IOMemoryDescriptor *shown = client ? md : dk__sub_innermost(md, &shown_off);
  uint64_t user_address = client && x ? __atomic_load_n(&x->user_address, __ATOMIC_ACQUIRE) : 0;
  uint64_t own = md->obj.cls->md ? dk__gmd_identity(md) : (uint64_t)(uintptr_t)md->buffer;
  if (task == md->task && (options & kIOMapAnywhere) && !(options & kIOMapUnique) && !guard &&
      offset == 0 && own && length <= md->length && (!client || user_address)) {
    m->address = client ? user_address : own;
    m->options |= kIOMapStatic;
  } else if (shown->obj.cls->md) {
    if (!view(m, md, at, options, offset, length, guard)) {
      OSObject_release(m);
      return NULL;
    }
  } else if (client) {
    if (!map_into_client(m, md, task, options, offset, length)) {
      OSObject_release(m);
      return NULL;
    }
  } else {
    /* rule 6: a real mapping of the same memory (its provider knows how: whole hugepages for
     * the pool, pages of its file for 4K pages) */
    int prot = (options & kIOMapReadOnly) ? PROT_READ : PROT_READ | PROT_WRITE;
    void *fixed = (options & kIOMapAnywhere) ? NULL : (void *)(uintptr_t)at;
    void *base = NULL;
    size_t span = 0;
    void *p = dk__mem_map(&shown->mem, (uint64_t)(shown->buffer - dk__mem_va(&shown->mem)) + shown_off, length, prot, guard, fixed,
                          (options & kIOMapOverwrite) != 0, (options & kIOMapPrefault) != 0, &base, &span);
    if (!p) {
      dk__fail(errno == EEXIST ? kIOReturnNoSpace : kIOReturnVMError, DK_CONSTRAINT_RESOURCE,
               "mapping 0x%llx bytes failed: %s", (unsigned long long)length, strerror(errno));
      OSObject_release(m);
      return NULL;
    }
    m->vm_base = base;
    m->vm_len = span;
    m->address = (mach_vm_address_t)(uintptr_t)p;
  }
  set_add(m);
  return m;
}

IOMemoryMap *IOMemoryDescriptor_createMappingInTask(IOMemoryDescriptor *p, task_t intoTask,
                                                    mach_vm_address_t atAddress, IOOptionBits options,
                                                    mach_vm_size_t offset, mach_vm_size_t length)
{
  dk__enter("createMappingInTask");
  IOMemoryDescriptor *md = dk__md(p);
  if (!md) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an initialized memory descriptor");
    return NULL;
  }
  return dk__create_mapping(md, intoTask, atAddress, options, offset, length);
}

IOMemoryMap *IOMemoryDescriptor_map(IOMemoryDescriptor *p, IOOptionBits options)
{
  dk__enter("map");
  IOMemoryDescriptor *md = dk__md(p);
  if (!md) {
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an initialized memory descriptor");
    return NULL;
  }
  return dk__create_mapping(md, kernel_task, 0, options | kIOMapAnywhere, 0, md->length);
}

/* ---- IOMemoryMap -------------------------------------------------------------------------- */

mach_vm_address_t IOMemoryMap_getAddress(IOMemoryMap *p)
{
  IOMemoryMap *m = as_map(p);
  return m ? dk__map_address(m) : 0;
}
IOVirtualAddress IOMemoryMap_getVirtualAddress(IOMemoryMap *p) { return IOMemoryMap_getAddress(p); }

mach_vm_size_t IOMemoryMap_getSize(IOMemoryMap *p)
{
  IOMemoryMap *m = as_map(p);
  return m ? m->length : 0;
}
IOByteCount IOMemoryMap_getLength(IOMemoryMap *p) { return IOMemoryMap_getSize(p); }

IOOptionBits IOMemoryMap_getMapOptions(IOMemoryMap *p)
{
  IOMemoryMap *m = as_map(p);
  return m ? m->options : 0;
}

task_t IOMemoryMap_getAddressTask(IOMemoryMap *p)
{
  IOMemoryMap *m = as_map(p);
  if (!m) return NULL;
  return m->super ? m->super->task : m->task;
}

IOMemoryDescriptor *IOMemoryMap_getMemoryDescriptor(IOMemoryMap *p)
{
  IOMemoryMap *m = as_map(p);
  return m ? m->md : NULL;
}

IOPhysicalAddress IOMemoryMap_getPhysicalSegment(IOMemoryMap *p, IOByteCount offset,
                                                 IOPhysicalLength *length, IOOptionBits options)
{
  IOMemoryMap *m = as_map(p);
  if (!m) {
    if (length) *length = 0;
    dk__enter("IOMemoryMap_getPhysicalSegment");
    dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an IOMemoryMap");
    return 0;
  }
  /* no check against the map's own length: only the descriptor's bounds it (§5) */
  return IOMemoryDescriptor_getPhysicalSegment(m->md, m->offset + offset, length, options);
}

IOPhysicalAddress IOMemoryMap_getPhysicalAddress(IOMemoryMap *p)
{
  return IOMemoryMap_getPhysicalSegment(p, 0, NULL, 0);
}

IOReturn IOMemoryMap_unmap(IOMemoryMap *p)
{
  dk__enter("unmap");
  IOMemoryMap *m = as_map(p);
  if (!m) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an IOMemoryMap");
  /* static and sub-range maps own no VM; a second unmap has nothing left to do */
  pthread_mutex_t *lk = dk__md_set_lock(m->md);
  pthread_mutex_lock(lk);
  vm_release(m);
  __atomic_store_n(&m->address, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(lk);
  return kIOReturnSuccess;
}

IOReturn IOMemoryMap_redirect(IOMemoryMap *p, IOMemoryDescriptor *newBackingMemory, IOOptionBits options,
                              mach_vm_size_t offset)
{
  (void)options;
  dk__enter("IOMemoryMap::redirect");
  IOMemoryMap *m = as_map(p);
  if (!m) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not an IOMemoryMap");
  IOMemoryDescriptor *md = newBackingMemory ? dk__md(newBackingMemory) : NULL;
  if (newBackingMemory && !md)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "the new backing is not a memory descriptor");
  if (!(m->options & kIOMapUnique) || !m->vm_base || m->super || m->task != kernel_task)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_STATE,
                    "only a kIOMapUnique mapping of this process can be redirected");
  if (md && (offset + m->length < offset || offset + m->length > md->length))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_RANGE,
                    "0x%llx bytes from offset 0x%llx do not fit the new backing's length 0x%llx",
                    (unsigned long long)m->length, (unsigned long long)offset, (unsigned long long)md->length);
  uint64_t mask = dk__caps()->page_size - 1;
  uint8_t *a = (uint8_t *)(uintptr_t)dk__map_address(m);
  uint8_t *first = (uint8_t *)((uintptr_t)a & ~mask);
  size_t pages = (size_t)((((uintptr_t)a & mask) + m->length + mask) & ~mask);
  if (!md) {
    /* blocked: any access faults until the mapping is redirected again */
    if (dk__mmap(first, pages, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
      return dk__fail_errno(errno, DK_CONSTRAINT_RESOURCE, "blocking the mapping");
    return kIOReturnSuccess;
  }
  int prot = (m->options & kIOMapReadOnly) ? PROT_READ : PROT_READ | PROT_WRITE;
  IOReturn rc = dk__md_map_at(md, offset, m->length, prot, a);
  if (rc != kIOReturnSuccess) return rc;
  /* the map now shows md: it moves to md's set */
  if (md != m->md) {
    if (m->in_set) set_unlink(m);
    OSObject_retain(md);
    OSObject_release(m->md);
    m->md = md;
    set_add(m);
  }
  m->offset = offset;
  return kIOReturnSuccess;
}
