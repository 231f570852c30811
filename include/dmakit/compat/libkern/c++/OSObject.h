/* libkern/c++/OSObject.h (dmakit C++ layer): OSObject, the base of every dmakit object class:
 * IOKit's reference counting (retain, release, getRetainCount) over the C library's counts.
 * The object types are declared as classes by the C headers (DK_OBJECT_TYPEDEF), so an
 * OSObject * here is the same type C code receives. */
#ifndef DMAKIT_COMPAT_OSOBJECT_H
#define DMAKIT_COMPAT_OSOBJECT_H

#include <dmakit/compat/libkern/c++/OSMetaClass.h>

class OSObject : public OSMetaClassBase {
public:
  static constexpr const char dk_class_name[] = "OSObject";

protected:
  ~OSObject() = default;
};

#endif
