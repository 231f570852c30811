/* src/iokit/userclient.c: what sharing needs from the IOKit layer (share/share.h's hooks):
 * IOUserClient::clientMemoryForType (the policy names a descriptor, the IOKit rules map it
 * into the client), and the two notes from the client's side: where a mapping landed, and
 * that the server lets go of a mapping it held for a client. */
#include "iokit/internal.h"

static void published(void *obj, dk_share_kind kind, uint64_t id)
{
  if (kind == DK_SHARE_BUFFER) {
    dk__md_ext_peek(obj)->user_id = id;    /* a client task's buffer always has one */
    return;
  }
  IOMemoryMap *m = obj;
  m->share_id = id;
  if (kind == DK_SHARE_MAP_OWNED) {
    OSObject_retain(m);                  /* the entry's reference, given back by drop() */
    m->server_owned = true;
  }
}

static void set_address(void *obj, dk_share_kind kind, uint64_t address)
{
  if (kind == DK_SHARE_BUFFER) {
    /* the buffer's address in its task stays what it was when the client gives it back */
    if (address) __atomic_store_n(&dk__md_ext_peek(obj)->user_address, address, __ATOMIC_RELEASE);
    return;
  }
  __atomic_store_n(&((IOMemoryMap *)obj)->address, address, __ATOMIC_RELEASE);
}

static void drop(void *obj, dk_share_kind kind)
{
  (void)kind;
  OSObject_release(obj);
}

static IOReturn map_for_type(const dk_server_policy *policy, task_t client, uint32_t type, IOOptionBits options,
                             uint32_t seq)
{
  IOOptionBits opts = 0;
  IOMemoryDescriptor *given = NULL;
  IOReturn rc = policy->memory_for_type(policy->ctx, client, type, &opts, &given);
  dk__enter("clientMemoryForType");
  if (rc != kIOReturnSuccess) {
    OSObject_release(given);
    return dk__fail(rc, DK_CONSTRAINT_PEER, "the driver refused memory type %u (%s)", type, dk_ioreturn_name(rc));
  }
  IOMemoryDescriptor *md = dk__md(given);
  if (!md) {
    OSObject_release(given);             /* whatever it was, it was handed over retained */
    return dk__fail(kIOReturnInternalError, DK_CONSTRAINT_ARGUMENT,
                    "the driver's memory_for_type gave no descriptor for memory type %u", type);
  }
  /* a fresh mapping per request (each is the client's to give back). As in XNU's
   * mapClientMemory64, the client's user options (kIOMapUserOptionsMask: kIOMapAnywhere, the
   * cache mode, kIOMapDefaultCache included) replace the driver's; beyond XNU, the mapping is
   * read-only, or prefaulted, when either side asks for it */
  IOOptionBits o = kIOMapAnywhere | kIOMapUnique | ((opts | options) & kIOMapReadOnly) | (options & kIOMapCacheMask) |
                   ((opts | options) & kIOMapPrefault);
  dk__share_reply_begin(seq, type);
  IOMemoryMap *m = dk__create_mapping(md, client, 0, o, 0, 0);
  dk__share_reply_end();
  OSObject_release(md);
  if (!m) return dk_last_failure()->code ? dk_last_failure()->code : kIOReturnError;
  bool sent = m->server_owned;           /* the entry holds its own reference now */
  OSObject_release(m);
  if (!sent)                             /* cannot happen with kIOMapUnique; never leave it waiting */
    return dk__fail(kIOReturnInternalError, DK_CONSTRAINT_STATE, "memory type %u was not mapped into the client", type);
  return kIOReturnSuccess;
}

const dk_share_hooks dk__share_hooks = { published, set_address, drop, map_for_type };
