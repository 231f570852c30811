/* libkern/c++/OSSharedPtr.h (dmakit C++ layer): OSSharedPtr<T>, libkern's intrusive smart
 * pointer: it holds one reference (retain()/release() of the object) and gives it up when it
 * goes. The constructors and resets say whether the pointer they take is already a reference
 * to own (OSNoRetain: a +1 result such as a factory's) or one to retain (OSRetain). detach()
 * hands the reference back as a raw pointer; attach() (DriverKit) lends the slot to a call that
 * returns a +1 object through a T ** argument. The casts: OSStaticPtrCast, OSConstPtrCast,
 * OSDynamicPtrCast. XNU's type is trivial_abi (passed like a raw pointer); GCC has no such
 * attribute, so here it is an ordinary class of one pointer. */
#ifndef DMAKIT_COMPAT_OSSHAREDPTR_H
#define DMAKIT_COMPAT_OSSHAREDPTR_H

#include <dmakit/compat/libkern/c++/OSMetaClass.h>

#include <cstddef>
#include <type_traits>

namespace libkern {
struct no_retain_t {
  explicit constexpr no_retain_t() {}
};
struct retain_t {
  explicit constexpr retain_t() {}
};
inline constexpr no_retain_t no_retain{};
inline constexpr retain_t retain{};
} // namespace libkern

inline constexpr auto OSNoRetain = libkern::no_retain;
inline constexpr auto OSRetain = libkern::retain;

template <typename T>
class OSSharedPtr {
  template <typename U> friend class OSSharedPtr;
  template <typename U>
  static constexpr bool convertible = std::is_convertible<U *, T *>::value;

public:
  using pointer = T *;
  using element_type = T;

  constexpr OSSharedPtr() noexcept : ptr_(nullptr) {}
  constexpr OSSharedPtr(std::nullptr_t) noexcept : ptr_(nullptr) {}
  explicit OSSharedPtr(pointer p, libkern::retain_t) noexcept : ptr_(p)
  {
    if (ptr_) ptr_->retain();
  }
  explicit constexpr OSSharedPtr(pointer p, libkern::no_retain_t) noexcept : ptr_(p) {}
  OSSharedPtr(const OSSharedPtr &other) noexcept : ptr_(other.ptr_)
  {
    if (ptr_) ptr_->retain();
  }
  template <typename U, typename = typename std::enable_if<convertible<U>>::type>
  OSSharedPtr(const OSSharedPtr<U> &other) noexcept : ptr_(other.ptr_)
  {
    if (ptr_) ptr_->retain();
  }
  constexpr OSSharedPtr(OSSharedPtr &&other) noexcept : ptr_(other.ptr_) { other.ptr_ = nullptr; }
  constexpr OSSharedPtr(OSSharedPtr &&other, libkern::no_retain_t) noexcept : ptr_(other.ptr_) { other.ptr_ = nullptr; }
  template <typename U, typename = typename std::enable_if<convertible<U>>::type>
  constexpr OSSharedPtr(OSSharedPtr<U> &&other) noexcept : ptr_(other.ptr_)
  {
    other.ptr_ = nullptr;
  }
  ~OSSharedPtr() { reset(); }

  OSSharedPtr &operator=(const OSSharedPtr &other) noexcept { return reset(other.ptr_, libkern::retain); }
  template <typename U, typename = typename std::enable_if<convertible<U>>::type>
  OSSharedPtr &operator=(const OSSharedPtr<U> &other) noexcept
  {
    return reset(other.ptr_, libkern::retain);
  }
  OSSharedPtr &operator=(OSSharedPtr &&other) noexcept
  {
    if (this != &other) {
      reset(other.ptr_, libkern::no_retain);
      other.ptr_ = nullptr;
    }
    return *this;
  }
  template <typename U, typename = typename std::enable_if<convertible<U>>::type>
  OSSharedPtr &operator=(OSSharedPtr<U> &&other) noexcept
  {
    reset(other.ptr_, libkern::no_retain);
    other.ptr_ = nullptr;
    return *this;
  }
  OSSharedPtr &operator=(std::nullptr_t) noexcept { return reset(); }

  constexpr T &operator*() const noexcept { return *ptr_; }
  constexpr pointer operator->() const noexcept { return ptr_; }
  explicit constexpr operator bool() const noexcept { return ptr_ != nullptr; }

  /* Give up the reference held (if any). */
  OSSharedPtr &reset() noexcept
  {
    pointer old = ptr_;
    ptr_ = nullptr;
    if (old) old->release();
    return *this;
  }
  /* Hold `p`, whose reference the caller gives up. */
  OSSharedPtr &reset(pointer p, libkern::no_retain_t) noexcept
  {
    pointer old = ptr_;
    ptr_ = p;
    if (old) old->release();
    return *this;
  }
  /* Hold `p`, retained. */
  OSSharedPtr &reset(pointer p, libkern::retain_t) noexcept
  {
    pointer old = ptr_;
    ptr_ = p;
    if (ptr_) ptr_->retain();
    if (old) old->release();
    return *this;
  }

  constexpr pointer get() const &noexcept { return ptr_; }
  constexpr pointer get() const && noexcept = delete;   /* a temporary's pointer would dangle */
  /* The reference, now the caller's; this pointer is left empty. */
  constexpr pointer detach() noexcept
  {
    pointer p = ptr_;
    ptr_ = nullptr;
    return p;
  }

  /* DriverKit: the slot for a call that returns a +1 object through a T ** (or an
   * OSSharedPtr<T> *) argument, as in IOBufferMemoryDescriptor::Create(..., buf.attach()).
   * What the pointer held is released first. */
  struct attacher {
    OSSharedPtr<T> &sp;
    attacher(OSSharedPtr<T> &s) noexcept : sp(s) {}
    operator OSSharedPtr<T> *() const { return &sp; }
    operator pointer *() const { return &sp.ptr_; }
  };
  attacher attach() noexcept
  {
    reset();
    return attacher(*this);
  }

  friend constexpr void swap(OSSharedPtr &a, OSSharedPtr &b) noexcept
  {
    pointer t = a.ptr_;
    a.ptr_ = b.ptr_;
    b.ptr_ = t;
  }

private:
  pointer ptr_;
};

template <typename T, typename U>
bool operator==(const OSSharedPtr<T> &x, const OSSharedPtr<U> &y) { return x.get() == y.get(); }
template <typename T, typename U>
bool operator!=(const OSSharedPtr<T> &x, const OSSharedPtr<U> &y) { return x.get() != y.get(); }
template <typename T, typename U>
bool operator==(const OSSharedPtr<T> &x, U *y) { return x.get() == y; }
template <typename T, typename U>
bool operator!=(const OSSharedPtr<T> &x, U *y) { return x.get() != y; }
template <typename T, typename U>
bool operator==(T *x, const OSSharedPtr<U> &y) { return x == y.get(); }
template <typename T, typename U>
bool operator!=(T *x, const OSSharedPtr<U> &y) { return x != y.get(); }
template <typename T>
bool operator==(const OSSharedPtr<T> &x, std::nullptr_t) noexcept { return x.get() == nullptr; }
template <typename T>
bool operator==(std::nullptr_t, const OSSharedPtr<T> &x) noexcept { return x.get() == nullptr; }
template <typename T>
bool operator!=(const OSSharedPtr<T> &x, std::nullptr_t) noexcept { return x.get() != nullptr; }
template <typename T>
bool operator!=(std::nullptr_t, const OSSharedPtr<T> &x) noexcept { return x.get() != nullptr; }

template <typename To, typename From>
OSSharedPtr<To> OSStaticPtrCast(const OSSharedPtr<From> &ptr) noexcept
{
  return OSSharedPtr<To>(static_cast<To *>(ptr.get()), OSRetain);
}
template <typename To, typename From>
OSSharedPtr<To> OSStaticPtrCast(OSSharedPtr<From> &&ptr) noexcept
{
  return OSSharedPtr<To>(static_cast<To *>(ptr.detach()), OSNoRetain);
}
template <typename To, typename From>
OSSharedPtr<To> OSConstPtrCast(const OSSharedPtr<From> &ptr) noexcept
{
  return OSSharedPtr<To>(const_cast<To *>(ptr.get()), OSRetain);
}
template <typename To, typename From>
OSSharedPtr<To> OSConstPtrCast(OSSharedPtr<From> &&ptr) noexcept
{
  return OSSharedPtr<To>(const_cast<To *>(ptr.detach()), OSNoRetain);
}
/* NULL when the object is not a Destination; the source keeps its reference then. */
template <typename Destination, typename Source>
OSSharedPtr<Destination> OSDynamicPtrCast(const OSSharedPtr<Source> &source)
{
  Destination *raw = OSDynamicCast(Destination, source.get());
  return raw ? OSSharedPtr<Destination>(raw, OSRetain) : OSSharedPtr<Destination>(nullptr);
}
template <typename Destination, typename Source>
OSSharedPtr<Destination> OSDynamicPtrCast(OSSharedPtr<Source> &&source)
{
  Destination *raw = OSDynamicCast(Destination, source.get());
  if (!raw) return nullptr;
  source.detach();   /* the reference moves into the result */
  return OSSharedPtr<Destination>(raw, OSNoRetain);
}

#endif
