/* libkern/c++/OSMetaClass.h (dmakit C++ layer): the root of IOKit's object classes and libkern's
 * object macros. A C++ object type here is the C library's object seen as a class: no data
 * members, no virtual functions, never constructed; member functions forward `this` to the C
 * calls, so the same pointer is valid in C and C++ and a derived pointer converts to its base
 * unchanged. Runtime type checks (OSDynamicCast, metaCast) ask the library for the object's
 * class (dk_object_class_name) and walk IOKit's class tree. */
#ifndef DMAKIT_COMPAT_OSMETACLASS_H
#define DMAKIT_COMPAT_OSMETACLASS_H

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "dmakit's IOKit headers are C++17: compile with -std=c++17 or later (C code uses <dmakit/dmakit.h>)"
#endif

#include <dmakit/OSObject.h>

#include <cstddef>

namespace dk_cxx {
/* The object pointer a member function hands to the C library (whose calls take no const). */
template <typename T> constexpr T *mut(const T *p) noexcept { return const_cast<T *>(p); }

/* IOKit's class tree for the classes dmakit's objects can be (XNU's own intermediate classes
 * such as IOGeneralMemoryDescriptor and IOCommand are not modelled). */
inline const char *superclass_name(const char *name) noexcept
{
  struct edge { const char *cls, *super; };
  static constexpr edge tree[] = {
    { "IOBufferMemoryDescriptor", "IOMemoryDescriptor" },
    { "IOMemoryDescriptor", "OSObject" },
    { "IOMemoryMap", "OSObject" },
    { "IODMACommand", "OSObject" },
    { "IOService", "OSObject" },     /* XNU: IOService -> IORegistryEntry -> OSObject */
    { "IOMapper", "IOService" },
  };
  for (const edge &e : tree) {
    const char *a = e.cls, *b = name;
    while (*a && *a == *b) a++, b++;
    if (*a == *b) return e.super;
  }
  return nullptr;
}

inline bool same_name(const char *a, const char *b) noexcept
{
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}
} // namespace dk_cxx

class OSMetaClassBase {
public:
  void retain() const { OSObject_retain(dk_cxx::mut(this)); }
  void release() const { OSObject_release(dk_cxx::mut(this)); }
  int getRetainCount() const { return OSObject_getRetainCount(this); }
  /* Tags only help XNU's leak tracking; the count is the same one. */
  void taggedRetain(const void *tag = nullptr) const { (void)tag; retain(); }
  void taggedRelease(const void *tag = nullptr) const { (void)tag; release(); }

  /* `me` if its class is `toMeta` or derives from it, else NULL (NULL for NULL). */
  static OSMetaClassBase *safeMetaCast(const OSMetaClassBase *me, const char *toMeta) noexcept
  {
    if (!me || !toMeta) return nullptr;
    for (const char *n = dk_object_class_name(me); n; n = dk_cxx::superclass_name(n))
      if (dk_cxx::same_name(n, toMeta)) return const_cast<OSMetaClassBase *>(me);
    return nullptr;
  }
  OSMetaClassBase *metaCast(const char *toMeta) const noexcept { return safeMetaCast(this, toMeta); }

  OSMetaClassBase() = delete;
  OSMetaClassBase(const OSMetaClassBase &) = delete;
  OSMetaClassBase &operator=(const OSMetaClassBase &) = delete;

protected:
  ~OSMetaClassBase() = default;   /* objects end with their last release(), never with delete */
};

/* The class name OSDynamicCast compares with (XNU: OSTypeID(type), the class's metaclass). */
#define OSTypeID(type) (type::dk_class_name)

#define OSDynamicCast(type, inst) (static_cast<type *>(OSMetaClassBase::safeMetaCast((inst), OSTypeID(type))))

/* An object that IOKit would allocate for a later init...(): only IOBufferMemoryDescriptor has
 * a two-step creation in dmakit (then initWithPhysicalMask). */
#define OSTypeAlloc(type) (type::dk_alloc())

/* IOKit's spelling for C++ (the C header's spelling takes no const pointer). */
#undef OSSafeReleaseNULL
#define OSSafeReleaseNULL(inst) \
  do {                          \
    if ((inst) != nullptr) (inst)->release(); \
    (inst) = nullptr;           \
  } while (0)
#define OSSafeRelease(inst) \
  do {                      \
    if (inst) (inst)->release(); \
  } while (0)

#endif
