/* libkern/c++/OSObject.h (dmakit C++ layer): OSObject, the base of every dmakit object class:
 * IOKit's reference counting (retain, release, getRetainCount) over the C library's counts.
 * The object types are declared as classes by the C headers (DK_OBJECT_TYPEDEF), so an
 * OSObject * here is the same type C code receives. Also DriverKit's OSDispatchMethod, the
 * type of the `supermethod` argument its members end with (accepted and ignored: there is no
 * IPC dispatch to bypass). */
#ifndef DMAKIT_COMPAT_OSOBJECT_H
#define DMAKIT_COMPAT_OSOBJECT_H

#include <dmakit/compat/libkern/c++/OSMetaClass.h>

class OSObject : public OSMetaClassBase {
public:
  static constexpr const char dk_class_name[] = "OSObject";

protected:
  ~OSObject() = default;
};

/* DriverKit: how a subclass's method calls its superclass's implementation over IPC. */
struct IORPC;
typedef kern_return_t (*OSDispatchMethod)(OSObject *self, const IORPC rpc);

#endif
