/* src/iokit/refusal.h: the refusal of a request only the hugepage pool could meet (a
 * physically contiguous run longer than a page, alignment above a page) when the pool cannot
 * serve it. See refusal.c. */
#ifndef DK_REFUSAL_H
#define DK_REFUSAL_H

#include "base/base.h"

/* Record why the request is refused and return the code: kIOReturnNotPrivileged and
 * DK_CONSTRAINT_PRIVILEGE when the pool is out of reach for want of privilege (frame numbers
 * need root), else kIOReturnNoMemory and `kind` (the pool turned off, no hugetlb, or it could
 * not meet the request either). `what` says what was asked ("8192 physically contiguous
 * bytes"). */
IOReturn dk__refuse_pool_only(dk_constraint_kind kind, const char *what);

#endif
