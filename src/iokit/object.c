/* src/iokit/object.c: OSObject reference counting and the task handles. Counts are atomic
 * (acquire/release), so retain/release are safe from any thread; the last release calls the
 * class's free. IOMappers, which count their own references (src/mapper), are told apart by
 * their first word and passed to their own retain and release. */
#include "base/counters.h"
#include "iokit/internal.h"

static struct dk_task g_self_task = { DK_TASK_MAGIC, "kernel_task (this process)" };
task_t kernel_task = &g_self_task;
vm_map_t kernel_map = &g_self_task;

dk_task_kind dk__task_kind(task_t t)
{
  if (t == NULL) return DK_TASK_NULL;
  if (t == kernel_task) return DK_TASK_KERNEL;
  return DK_TASK_OTHER;
}

long dk__objects_live(void) { return (long)dk__ctr_sum(DK_CTR_OBJECTS_LIVE); }

void *dk__object_cast(const void *p, const dk_class *cls)
{
  const OSObject *o = p;
  if (!o || o->cls != cls || o->cls->magic != cls->magic) return NULL;
  return (void *)(uintptr_t)p;
}

/* Every dmakit class's magic starts with DK_CLASS_MAGIC (internal.h). */
static OSObject *any_object(void *p)
{
  OSObject *o = p;
  if (!o || !o->cls || (o->cls->magic & 0xffff0000u) != DK_CLASS_MAGIC) return NULL;
  return o;
}

/* An IOMapper (IOMapper_copyMapperForDevice's result) keeps its own count: IOKit code releases
 * it as any object. */
void OSObject_retain(void *object)
{
  if (dk__mapper_is(object)) {
    dk__mapper_retain(object);
    return;
  }
  OSObject *o = any_object(object);
  if (o) atomic_fetch_add_explicit(&o->refcount, 1, memory_order_relaxed);
}

bool dk__object_try_retain(OSObject *o)
{
  int n = atomic_load_explicit(&o->refcount, memory_order_relaxed);
  while (n > 0)
    if (atomic_compare_exchange_weak_explicit(&o->refcount, &n, n + 1, memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  return false;
}

void OSObject_release(void *object)
{
  if (dk__mapper_is(object)) {
    dk__mapper_release(object);
    return;
  }
  OSObject *o = any_object(object);
  if (!o) return;
  /* The caller's reference is the only one: no other thread holds one to retain or release
   * with, and nothing revives the object, so the count is ours alone. The acquire load
   * orders the other owners' last writes (their releasing decrements) before the free. */
  if (!o->cls->revivable && atomic_load_explicit(&o->refcount, memory_order_acquire) == 1)
    atomic_store_explicit(&o->refcount, 0, memory_order_relaxed);
  else if (atomic_fetch_sub_explicit(&o->refcount, 1, memory_order_release) == 1)
    atomic_thread_fence(memory_order_acquire);
  else
    return;
  dk__ctr_add(DK_CTR_OBJECTS_LIVE, -1);
  o->cls->free(o);
}

const char *dk_object_class_name(const void *object)
{
  if (dk__mapper_is(object)) return "IOMapper";   /* its first word is no class pointer */
  OSObject *o = any_object((void *)(uintptr_t)object);
  return o ? o->cls->name : NULL;
}

int OSObject_getRetainCount(const void *object)
{
  if (dk__mapper_is(object)) return dk__mapper_refs(object);
  OSObject *o = any_object((void *)(uintptr_t)object);
  return o ? atomic_load_explicit(&o->refcount, memory_order_relaxed) : 0;
}
