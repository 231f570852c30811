/* src/share/server.c: the driver's side of sharing. A server listens on a Unix SOCK_SEQPACKET
 * socket; its thread admits peers by their kernel credentials (SO_PEERCRED) and the policy,
 * and serves their requests. Each admitted peer is a connection, which is its task_t: counted
 * references (the server holds one while connected, every mapping into it one more), a table
 * of the mappings the client holds (entries), and the state of the conversation. Memory leaves
 * as a memfd: sealed against shrinking and growing, mode 0600, and for read-only access as a
 * read-only file description, so the kernel, not the client, enforces what it may do.
 * Lock order: server->lock before conn->lock; hooks' set_address runs under conn->lock. */
#include "share/proto.h"
#include "share/share.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef enum entry_state { ENTRY_PENDING, ENTRY_MAPPED, ENTRY_FAILED } entry_state;

typedef struct entry {
  struct entry *next;
  uint64_t      id;
  void         *obj;
  dk_share_kind kind;
  entry_state   state;
  bool          waited;       /* a thread waits for the answer (else set_address fills it) */
  bool          given_back;   /* the client gave it back before the waiting thread woke */
  IOReturn      code;         /* the client's failure, when FAILED */
  uint64_t      address;
} entry;

typedef struct dk_conn {
  struct dk_task   task;        /* first: a task_t points here */
  _Atomic int      refs;
  dk_server       *server;
  int              fd;
  dk_peer          peer;
  dk_access        access;
  pthread_mutex_t  lock;
  pthread_cond_t   cond;        /* an entry changed state, or the connection died */
  bool             dead;        /* no more traffic; entries were revoked */
  unsigned         nentries;    /* mappings the client holds or is being sent (capped) */
  unsigned         npending;    /* of which not yet answered */
  bool             finalized;   /* the server let go of it */
  uint64_t         next_id;
  entry           *entries;
  struct dk_conn  *next;        /* in server->conns */
  char             name[48];
} dk_conn;

struct dk_server {
  pthread_mutex_t  lock;
  pthread_cond_t   accepted;    /* a client joined the accept queue */
  dk_server_policy policy;
  int              listen_fd;
  int              wake[2];     /* wakes the thread: a connection died, or stop */
  pthread_t        thread;
  bool             stopping;
  dk_conn         *conns;       /* connected (and dead, until the thread finalizes them) */
  unsigned         count;       /* connected */
  task_t           queue[64];   /* admitted, not yet returned by dk_server_accept (retained) */
  unsigned         queued;
  unsigned         accepting;   /* threads inside dk_server_accept */
  pthread_cond_t   idle;        /* the last of them left (destroy waits for it) */
  char             path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

#define g_hooks dk__share_hooks

/* What one client may hold: mappings (answered or not) and mappings not yet answered. A
 * client that asks for more is refused (kIOReturnNoResources), so a hostile one cannot make
 * the driver keep unbounded records or descriptors in flight. */
#define CONN_MAX_ENTRIES 4096u
#define CONN_MAX_PENDING 64u

/* The server thread, and the request it is answering (DK_SHARE_MAP_OWNED, reply seq). */
static _Thread_local dk_server *tl_server;
static _Thread_local uint32_t   tl_reply_seq, tl_reply_type;
void dk__share_reply_begin(uint32_t seq, uint32_t type)
{
  tl_reply_seq = seq;
  tl_reply_type = type;
}
void dk__share_reply_end(void) { tl_reply_seq = tl_reply_type = 0; }

static int timeout_of(const dk_server *s)
{
  int t = s ? s->policy.timeout_ms : 0;
  return t > 0 ? t : (int)dk__option(DK_OPTION_SHARE_TIMEOUT_MS);
}

/* ---- tasks ---------------------------------------------------------------------------------- */

static dk_conn *as_conn(task_t t)
{
  if (!t || t == kernel_task || t->magic != DK_CLIENT_TASK_MAGIC) return NULL;
  return (dk_conn *)t;
}

bool dk__task_is_client(task_t task) { return as_conn(task) != NULL; }

void dk__task_retain(task_t task)
{
  dk_conn *c = as_conn(task);
  if (c) atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void dk__task_release(task_t task)
{
  dk_conn *c = as_conn(task);
  if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
  /* the last reference: the server finalized it long ago, nothing refers to it */
  dk__close(c->fd);
  pthread_cond_destroy(&c->cond);
  pthread_mutex_destroy(&c->lock);
  c->task.magic = 0;
  dk__free(c);
}

void dk_task_retain(task_t task) { dk__task_retain(task); }
void dk_task_release(task_t task) { dk__task_release(task); }

bool dk_task_get_peer(task_t task, dk_peer *peer, dk_access *access)
{
  dk_conn *c = as_conn(task);
  if (!c) return false;
  if (peer) *peer = c->peer;
  if (access) *access = c->access;
  return true;
}

bool dk_task_is_connected(task_t task)
{
  dk_conn *c = as_conn(task);
  if (!c) return false;
  pthread_mutex_lock(&c->lock);
  bool up = !c->dead;
  pthread_mutex_unlock(&c->lock);
  return up;
}

/* ---- messages ------------------------------------------------------------------------------- */

/* A send error as IOReturn: the client's fault (gone, or not reading), or the driver's own
 * (descriptors in flight over its limit, no buffers), which must not cut the client off. */
static bool client_fault(int err) { return err == ETIMEDOUT || err == EPIPE || err == ECONNRESET || err == ENOTCONN; }

static void send_result(int fd, uint32_t seq, IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
  __attribute__((format(printf, 5, 6)));
static void send_result(int fd, uint32_t seq, IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_RESULT, seq);
  m.u.result.code = code;
  m.u.result.constraint = (uint32_t)kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m.u.result.text, sizeof m.u.result.text, fmt, ap);
  va_end(ap);
  (void)dk__share_send(fd, &m, -1, 0);   /* best effort: a client that cannot take it is cut off elsewhere */
}

static void send_bye(int fd, IOReturn code, const char *text)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_BYE, 0);
  m.u.bye.code = code;
  snprintf(m.u.bye.text, sizeof m.u.bye.text, "%s", text);
  (void)dk__share_send(fd, &m, -1, 0);
}

static void wake_server(dk_server *s)
{
  char b = 1;
  (void)dk__write(s->wake[1], &b, 1);   /* a full pipe already wakes it */
}

/* Cut a connection: no more traffic, every entry revoked (owned maps dropped), the server
 * thread told. Safe from any thread, once or many times. */
static void conn_kill(dk_conn *c, IOReturn code, const char *why)
{
  pthread_mutex_lock(&c->lock);
  if (c->dead) {
    pthread_mutex_unlock(&c->lock);
    return;
  }
  c->dead = true;
  entry *list = c->entries;
  c->entries = NULL;
  c->nentries = c->npending = 0;
  for (entry *e = list; e; e = e->next)
    if (g_hooks.set_address) g_hooks.set_address(e->obj, e->kind, 0);
  pthread_cond_broadcast(&c->cond);
  if (why) send_bye(c->fd, code, why);
  (void)dk__shutdown(c->fd, SHUT_RDWR);
  /* woken under the lock: reap() clears c->server under it before the server is freed */
  if (c->server) wake_server(c->server);
  pthread_mutex_unlock(&c->lock);
  while (list) {
    entry *e = list;
    list = e->next;
    if (e->kind == DK_SHARE_MAP_OWNED && g_hooks.drop) g_hooks.drop(e->obj, e->kind);
    dk__free(e);
  }
}

void dk_task_disconnect(task_t task)
{
  dk_conn *c = as_conn(task);
  if (c) conn_kill(c, kIOReturnNotAttached, "the driver disconnected this client");
}

static entry *find_entry(dk_conn *c, uint64_t id, entry ***link)
{
  for (entry **pp = &c->entries; *pp; pp = &(*pp)->next)
    if ((*pp)->id == id) {
      if (link) *link = pp;
      return *pp;
    }
  return NULL;
}

/* ---- mapping into a client ------------------------------------------------------------------ */

/* The descriptor that leaves for the client: the memfd sealed against resizing and closed to
 * other users (mode 0600), itself for read-write access, a read-only reopening otherwise.
 * Returns the fd to send and whether it must be closed after; -1 with the failure recorded. */
static int outgoing_fd(int memfd, bool writable, bool *close_after)
{
  *close_after = false;
  /* F_SEAL_SEAL too: a read-write client must not add a write seal that would stop the
   * driver and every other client from mapping the buffer writable */
  int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  int seals = dk__fcntl(memfd, F_GET_SEALS, 0);
  if (seals < 0 || (seals & want) != want) {
    /* another thread sharing the same buffer may have sealed it (F_SEAL_SEAL then refuses) */
    if (dk__fcntl(memfd, F_ADD_SEALS, want) != 0 &&
        !(errno == EPERM && (seals = dk__fcntl(memfd, F_GET_SEALS, 0)) >= 0 && (seals & want) == want)) {
      dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_RESOURCE,
               "the buffer's memfd cannot be sealed against resizing (%s); it is not shared", strerror(errno));
      return -1;
    }
  }
  if (dk__fchmod(memfd, 0600) != 0) {
    dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_RESOURCE, "chmod of the buffer's memfd failed: %s", strerror(errno));
    return -1;
  }
  if (writable) return memfd;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
  int ro = dk__open(path, O_RDONLY);
  if (ro < 0) {
    dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "a read-only file description of the buffer: %s: %s",
             path, strerror(errno));
    return -1;
  }
  *close_after = true;
  return ro;
}

IOReturn dk__share_map(task_t task, const dk_share_req *r, uint64_t *id_out, uint64_t *address)
{
  dk_conn *c = as_conn(task);
  *id_out = 0;
  *address = 0;
  if (!c) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_TASK, "not a client task");
  if (r->writable && c->access != DK_ACCESS_READ_WRITE)
    return dk__fail(kIOReturnNotPrivileged, DK_CONSTRAINT_PEER,
                    "client %s has read-only access: a writable mapping needs kIOMapReadOnly", c->name);
  entry *e = dk__calloc(1, sizeof *e);
  if (!e) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for a mapping record");
  bool close_after;
  int fd = outgoing_fd(r->memfd, r->writable, &close_after);
  if (fd < 0) {
    dk__free(e);
    return dk_last_failure()->code;
  }
  uint32_t seq = 0, reply_type = 0;
  IOReturn rc = kIOReturnSuccess;
  dk_msg m;
  /* 1. publish the entry (before the message: the answer may come at once) */
  pthread_mutex_lock(&c->lock);
  bool on_server = tl_server && tl_server == c->server;
  int timeout = timeout_of(c->server);
  if (on_server) {
    seq = tl_reply_seq;
    reply_type = tl_reply_type;
    tl_reply_seq = 0;                                  /* one answer per request */
  }
  if (c->dead) {
    rc = dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "client %s is gone", c->name);
  } else if (c->nentries >= CONN_MAX_ENTRIES || c->npending >= CONN_MAX_PENDING) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                  "client %s holds %u mappings (%u unanswered); at most %u (%u unanswered)", c->name, c->nentries,
                  c->npending, CONN_MAX_ENTRIES, CONN_MAX_PENDING);
  } else {
    e->obj = r->obj;
    e->kind = seq ? DK_SHARE_MAP_OWNED : r->kind;
    e->state = ENTRY_PENDING;
    e->waited = !on_server;
    e->id = ++c->next_id;
    e->next = c->entries;
    c->entries = e;
    c->nentries++;
    c->npending++;
    /* the object learns its id now, and a server-owned map its own reference (it must
     * outlive a disconnect that drops the entry while the server still builds it) */
    if (g_hooks.published) g_hooks.published(e->obj, e->kind, e->id);
    dk__proto_init(&m, DK_MSG_MAP, seq);
    m.u.map.id = e->id;
    m.u.map.file_offset = r->file_offset;
    m.u.map.span = r->span;
    m.u.map.in_page = r->in_page;
    m.u.map.length = r->length;
    m.u.map.writable = r->writable;
    m.u.map.populate = r->populate;
    m.u.map.tag = r->tag;
    m.u.map.type = seq ? reply_type : 0;
  }
  pthread_mutex_unlock(&c->lock);
  if (rc != kIOReturnSuccess) {
    dk__free(e);
    if (close_after) dk__close(fd);
    return rc;
  }
  uint64_t id = e->id;
  /* 2. the message. No lock is held while it waits for room: the server thread must go on
   * serving everyone else. Messages need no other order: an UNMAP of this id can only follow
   * this send (the map is not the caller's to release until it returns), and one record is
   * one sendmsg. */
  int sent = dk__share_send(c->fd, &m, fd, on_server ? 0 : timeout);
  int err = errno;
  if (close_after) dk__close(fd);
  if (sent != 0) {
    entry *gone = NULL;
    pthread_mutex_lock(&c->lock);
    entry **link = NULL;
    if (!c->dead && find_entry(c, id, &link) && link) {
      gone = *link;
      *link = gone->next;
      c->nentries--;
      c->npending--;
      if (g_hooks.set_address) g_hooks.set_address(gone->obj, gone->kind, 0);
    }
    pthread_mutex_unlock(&c->lock);
    if (gone && gone->kind == DK_SHARE_MAP_OWNED && g_hooks.drop) g_hooks.drop(gone->obj, gone->kind);
    dk__free(gone);
    if (client_fault(err)) {
      conn_kill(c, kIOReturnNotResponding, err == ETIMEDOUT ? "the client does not read its socket" : NULL);
      return dk__fail(err == ETIMEDOUT ? kIOReturnNotResponding : kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION,
                      "sending the mapping to client %s failed: %s", c->name, strerror(err));
    }
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                    "sending the mapping to client %s failed on this side: %s", c->name, strerror(err));
  }
  *id_out = id;
  if (on_server) return kIOReturnSuccess;              /* the answer fills the address */
  /* 3. wait for the client's answer; the entry may be freed meanwhile (revoked): look it up */
  pthread_mutex_lock(&c->lock);
  struct timespec until = dk__share_deadline(timeout);
  entry *w;
  for (;;) {
    w = c->dead ? NULL : find_entry(c, id, NULL);
    if (!w || w->state != ENTRY_PENDING) break;
    if (pthread_cond_timedwait(&c->cond, &c->lock, &until) == ETIMEDOUT) {
      w = find_entry(c, id, NULL);
      if (w && w->state == ENTRY_PENDING) {
        pthread_mutex_unlock(&c->lock);
        conn_kill(c, kIOReturnNotResponding, "the client did not answer a mapping in time");
        *id_out = 0;
        return dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                        "client %s did not answer within %d ms; it was disconnected", c->name, timeout);
      }
    }
  }
  if (!w) {
    pthread_mutex_unlock(&c->lock);
    *id_out = 0;
    return dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "client %s went away before it mapped the buffer",
                    c->name);
  }
  if (w->state == ENTRY_FAILED) {
    IOReturn code = w->code;
    entry **link = NULL;
    if (find_entry(c, id, &link) && link) *link = w->next;
    c->nentries--;
    pthread_mutex_unlock(&c->lock);
    dk__free(w);
    *id_out = 0;
    /* the client's word is not the driver's error code: only what a mapping can fail with */
    if (code != kIOReturnNoMemory && code != kIOReturnNoResources) code = kIOReturnVMError;
    return dk__fail(code, DK_CONSTRAINT_RESOURCE, "client %s could not map the buffer (%s)", c->name,
                    dk_ioreturn_name(code));
  }
  w->waited = false;                                   /* answered: from now on an ordinary entry */
  if (w->given_back) {
    /* the client mapped it and gave it back already: a map into it that reads 0 */
    entry **link = NULL;
    if (find_entry(c, id, &link) && link) *link = w->next;
    c->nentries--;
    pthread_mutex_unlock(&c->lock);
    dk__free(w);
    return kIOReturnSuccess;
  }
  *address = w->address;
  /* stored under the lock: a revoke that follows sets 0 after it, never before */
  if (g_hooks.set_address) g_hooks.set_address(w->obj, w->kind, w->address);
  pthread_mutex_unlock(&c->lock);
  return kIOReturnSuccess;
}

void dk__share_unmap(task_t task, uint64_t id)
{
  dk_conn *c = as_conn(task);
  if (!c || !id) return;
  pthread_mutex_lock(&c->lock);
  entry **link = NULL;
  entry *e = find_entry(c, id, &link);
  bool tell = false;
  int timeout = timeout_of(c->server);
  bool on_server = tl_server && tl_server == c->server;
  if (e) {
    *link = e->next;
    c->nentries--;
    if (e->state == ENTRY_PENDING) c->npending--;
    tell = !c->dead;
  }
  pthread_mutex_unlock(&c->lock);
  dk__free(e);
  if (!tell) return;
  dk_msg m;
  dk__proto_init(&m, DK_MSG_UNMAP, 0);
  m.u.id.id = id;
  int sent = dk__share_send(c->fd, &m, -1, on_server ? 0 : timeout);
  int err = errno;
  /* a client that takes no UNMAP keeps a mapping the driver let go: it is cut off */
  if (sent != 0 && client_fault(err))
    conn_kill(c, kIOReturnNotResponding, err == ETIMEDOUT ? "the client does not read its socket" : NULL);
}

/* ---- the server thread: requests ------------------------------------------------------------ */

#define MAP_REQ_OPTIONS (kIOMapAnywhere | kIOMapCacheMask | kIOMapReadOnly | kIOMapPrefault)

static void handle_map_req(dk_server *s, dk_conn *c, const dk_msg *m)
{
  uint32_t seq = m->hdr.seq;
  IOOptionBits opts = m->u.map_req.options;
  if (opts & ~(IOOptionBits)MAP_REQ_OPTIONS) {
    send_result(c->fd, seq, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                "map options 0x%x: only kIOMapReadOnly, a cache mode and kIOMapPrefault may be asked for", opts);
    return;
  }
  if (!(opts & kIOMapReadOnly) && c->access != DK_ACCESS_READ_WRITE) {
    send_result(c->fd, seq, kIOReturnNotPrivileged, DK_CONSTRAINT_PEER,
                "this client has read-only access: ask with kIOMapReadOnly");
    return;
  }
  if (!s->policy.memory_for_type) {
    send_result(c->fd, seq, kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
                "the driver gives no memory types (no memory_for_type in its policy)");
    return;
  }
  dk__enter("clientMemoryForType");
  IOReturn rc = g_hooks.map_for_type ? g_hooks.map_for_type(&s->policy, &c->task, m->u.map_req.type, opts, seq)
                                     : kIOReturnUnsupported;
  if (rc != kIOReturnSuccess) {
    /* the hook or the mapping said why; the MAP message would have been the answer */
    const dk_failure *f = dk_last_failure();
    send_result(c->fd, seq, f->code ? f->code : kIOReturnError, f->constraint, "memory type %u: %s",
                m->u.map_req.type, f->text[0] ? f->text : "refused by the driver");
  }
  /* else: the server owns the map through its entry; the MAP message answered the request */
}

static void handle_unmap_req(dk_conn *c, const dk_msg *m)
{
  uint64_t id = m->u.id.id;
  pthread_mutex_lock(&c->lock);
  entry **link = NULL;
  entry *e = find_entry(c, id, &link);
  if (e && e->waited && !e->given_back) {
    /* mapped and given back before the driver's thread saw the answer: it finds the entry,
     * learns the mapping is gone, and removes it */
    e->given_back = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    send_result(c->fd, m->hdr.seq, kIOReturnSuccess, DK_CONSTRAINT_NONE, "unmapped");
    return;
  }
  if (e) {
    *link = e->next;
    c->nentries--;
    if (e->state == ENTRY_PENDING) c->npending--;
    if (g_hooks.set_address && e->kind != DK_SHARE_BUFFER) g_hooks.set_address(e->obj, e->kind, 0);
  }
  pthread_mutex_unlock(&c->lock);
  if (!e) {
    send_result(c->fd, m->hdr.seq, kIOReturnNotFound, DK_CONSTRAINT_ARGUMENT,
                "mapping %llu was never granted to this client (or was already given back)",
                (unsigned long long)id);
    return;
  }
  if (e->kind == DK_SHARE_MAP_OWNED && g_hooks.drop) g_hooks.drop(e->obj, e->kind);
  dk__free(e);
  send_result(c->fd, m->hdr.seq, kIOReturnSuccess, DK_CONSTRAINT_NONE, "unmapped");
}

static void handle_map_ack(dk_conn *c, const dk_msg *m)
{
  const dk_msg_map_ack *a = &m->u.map_ack;
  pthread_mutex_lock(&c->lock);
  entry **link = NULL;
  entry *e = find_entry(c, a->id, &link);
  bool ok = e && e->state == ENTRY_PENDING;
  if (ok) {
    c->npending--;
    if (a->code == kIOReturnSuccess) {
      e->state = ENTRY_MAPPED;
      e->address = a->address;
      if (!e->waited && g_hooks.set_address) g_hooks.set_address(e->obj, e->kind, a->address);
    } else {
      e->state = ENTRY_FAILED;
      e->code = a->code;
    }
    pthread_cond_broadcast(&c->cond);
  }
  entry *failed = NULL;
  if (ok && !e->waited && e->state == ENTRY_FAILED) {   /* nobody waits: forget it here */
    *link = e->next;
    c->nentries--;
    failed = e;
  }
  pthread_mutex_unlock(&c->lock);
  if (failed) {
    if (failed->kind == DK_SHARE_MAP_OWNED && g_hooks.drop) g_hooks.drop(failed->obj, failed->kind);
    dk__free(failed);
  }
  if (!ok)
    send_result(c->fd, m->hdr.seq, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                "an answer for mapping %llu, which is not waiting for one", (unsigned long long)a->id);
}

/* Read and serve what one client sent. Returns false when the connection ended. */
static bool serve_conn(dk_server *s, dk_conn *c)
{
  for (int rounds = 0; rounds < 64; rounds++) {
    dk_msg m;
    char extra[sizeof m + 1];
    int nfds, mflags;
    ssize_t n = dk__share_recv(c->fd, extra, sizeof extra, MSG_DONTWAIT, NULL, &nfds, &mflags);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) return false;                                  /* closed, reset, or killed */
    /* clients never send descriptors: any that came were closed, and the gate refuses them */
    char why[160];
    uint32_t seq = 0;
    if (n >= (ssize_t)sizeof m.hdr) memcpy(&seq, extra + offsetof(dk_msg_hdr, seq), sizeof seq);
    if ((mflags & (MSG_TRUNC | MSG_CTRUNC)) ||
        dk__proto_check(extra, (size_t)n, nfds, DK_PROTO_TO_DRIVER, dk__caps()->page_size, why, sizeof why) != 0) {
      if (mflags & (MSG_TRUNC | MSG_CTRUNC)) snprintf(why, sizeof why, "the record or its descriptors were truncated");
      send_result(c->fd, seq, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "message refused: %s", why);
      continue;
    }
    memcpy(&m, extra, (size_t)n);
    switch (m.hdr.type) {
    case DK_MSG_MAP_REQ:   handle_map_req(s, c, &m); break;
    case DK_MSG_UNMAP_REQ: handle_unmap_req(c, &m); break;
    case DK_MSG_MAP_ACK:   handle_map_ack(c, &m); break;
    default: break;                                            /* proto_check admits no other */
    }
    pthread_mutex_lock(&c->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&c->lock);
    if (dead) return false;
  }
  return true;
}

/* ---- the server thread: admission ----------------------------------------------------------- */

static dk_access default_admit(const dk_peer *peer)
{
  return peer->uid == 0 || peer->uid == geteuid() ? DK_ACCESS_READ_WRITE : DK_ACCESS_NONE;
}

static void admit_one(dk_server *s, int fd)
{
  struct ucred cr;
  unsigned len = sizeof cr;
  if (dk__getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    dk__close(fd);
    return;
  }
  dk_peer peer = { cr.pid, cr.uid, cr.gid };
  dk_access access = s->policy.admit ? s->policy.admit(s->policy.ctx, &peer) : default_admit(&peer);
  if (access != DK_ACCESS_READ && access != DK_ACCESS_READ_WRITE) {
    send_result(fd, 0, kIOReturnNotPermitted, DK_CONSTRAINT_PEER,
                "the driver's policy does not admit pid %d (uid %u, gid %u)", (int)cr.pid, (unsigned)cr.uid,
                (unsigned)cr.gid);
    dk__close(fd);
    return;
  }
  unsigned max = s->policy.max_clients ? s->policy.max_clients : 64;
  pthread_mutex_lock(&s->lock);
  /* the accept queue holds connected clients only (reap() drops the dead), at most `max` */
  bool full = s->count >= max || s->queued >= sizeof s->queue / sizeof s->queue[0];
  pthread_mutex_unlock(&s->lock);
  dk_conn *c = full ? NULL : dk__calloc(1, sizeof *c);
  if (!c) {
    send_result(fd, 0, kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                full ? "the driver serves %u clients already, its most" : "the driver is out of memory (%u)", max);
    dk__close(fd);
    return;
  }
  c->task.magic = DK_CLIENT_TASK_MAGIC;
  c->task.name = c->name;
  snprintf(c->name, sizeof c->name, "pid %d (uid %u)", (int)cr.pid, (unsigned)cr.uid);
  atomic_init(&c->refs, 2);               /* the server's, and the accept queue's */
  c->server = s;
  c->fd = fd;
  c->peer = peer;
  c->access = access;
  pthread_mutex_init(&c->lock, NULL);
  dk__share_cond_init(&c->cond);
  dk_msg m;
  dk__proto_init(&m, DK_MSG_WELCOME, 0);
  m.u.welcome.access = (uint32_t)access;
  m.u.welcome.page_size = dk__caps()->page_size;
  m.u.welcome.client_id = (uint64_t)cr.pid;
  if (dk__share_send(fd, &m, -1, 0) != 0) {
    c->server = NULL;
    atomic_store(&c->refs, 1);
    dk__task_release(&c->task);
    return;
  }
  pthread_mutex_lock(&s->lock);
  c->next = s->conns;
  s->conns = c;
  s->count++;
  s->queue[s->queued++] = &c->task;
  pthread_cond_broadcast(&s->accepted);
  pthread_mutex_unlock(&s->lock);
}

/* Remove dead connections from the set: the policy hears of each once, the server's
 * reference goes. */
static void reap(dk_server *s)
{
  for (;;) {
    dk_conn *gone = NULL;
    pthread_mutex_lock(&s->lock);
    for (dk_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
      dk_conn *c = *pp;
      pthread_mutex_lock(&c->lock);
      bool dead = c->dead;
      pthread_mutex_unlock(&c->lock);
      if (dead) {
        *pp = c->next;
        s->count--;
        gone = c;
        break;
      }
    }
    /* a client that left before the driver accepted it leaves the queue too */
    bool queued = false;
    for (unsigned i = 0; gone && i < s->queued; i++)
      if (s->queue[i] == &gone->task) {
        memmove(s->queue + i, s->queue + i + 1, (s->queued - i - 1) * sizeof s->queue[0]);
        s->queued--;
        queued = true;
        break;
      }
    pthread_mutex_unlock(&s->lock);
    if (!gone) return;
    if (queued) dk__task_release(&gone->task);
    if (s->policy.disconnected) s->policy.disconnected(s->policy.ctx, &gone->task);
    pthread_mutex_lock(&gone->lock);
    gone->finalized = true;
    gone->server = NULL;          /* the server may be destroyed before the task is released */
    pthread_mutex_unlock(&gone->lock);
    dk__task_release(&gone->task);
  }
}

static void *server_main(void *arg)
{
  dk_server *s = arg;
  tl_server = s;
  struct pollfd *fds = NULL;
  dk_conn **who = NULL;
  size_t cap = 0;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    bool stop = s->stopping;
    size_t n = 2;
    for (dk_conn *c = s->conns; c; c = c->next) n++;
    if (n > cap) {
      dk__free(fds);
      dk__free(who);
      cap = n + 16;
      fds = dk__calloc(cap, sizeof *fds);
      who = dk__calloc(cap, sizeof *who);
      if (!fds || !who) {      /* cannot watch everyone: serve the socket and wake pipe only */
        dk__free(fds);
        dk__free(who);
        fds = NULL;
        who = NULL;
        cap = 0;
      }
    }
    struct pollfd small[2];
    struct pollfd *pf = fds ? fds : small;
    pf[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    pf[1] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
    size_t k = 2;
    if (fds)
      for (dk_conn *c = s->conns; c; c = c->next) {
        pf[k] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
        who[k++] = c;
      }
    pthread_mutex_unlock(&s->lock);
    if (stop) break;
    int r = dk__poll(pf, k, fds ? -1 : 100);
    if (r < 0) {
      if (errno != EINTR) {
        struct timespec t = { 0, 10 * 1000000L };
        nanosleep(&t, NULL);
      }
      continue;
    }
    if (pf[0].revents) {
      char buf[64];
      while (dk__read(s->wake[0], buf, sizeof buf) > 0) {}
    }
    if (pf[1].revents & POLLIN) {
      for (int i = 0; i < 16; i++) {
        int fd = dk__accept(s->listen_fd);
        if (fd < 0) {
          /* out of descriptors or memory: the connection stays queued and the socket readable,
           * so back off instead of spinning */
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            struct timespec t = { 0, 50 * 1000000L };
            nanosleep(&t, NULL);
          }
          break;
        }
        admit_one(s, fd);
      }
    }
    for (size_t i = 2; i < k; i++) {
      if (!pf[i].revents) continue;
      dk_conn *c = who[i];
      /* the set only shrinks in reap(), on this thread: c is alive */
      if (!serve_conn(s, c)) conn_kill(c, kIOReturnSuccess, NULL);
    }
    reap(s);
  }
  dk__free(fds);
  dk__free(who);
  return NULL;
}

/* ---- the public server ---------------------------------------------------------------------- */

IOReturn dk_server_create(const char *path, const dk_server_policy *policy, dk_server **out)
{
  dk__enter("dk_server_create");
  if (out) *out = NULL;
  struct sockaddr_un sa;
  IOReturn bad = dk__share_sockaddr(out ? path : NULL, &sa);
  if (bad != kIOReturnSuccess) return bad;
  dk_server *s = dk__calloc(1, sizeof *s);
  if (!s) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the server");
  if (policy) s->policy = *policy;
  strcpy(s->path, path);
  s->listen_fd = -1;
  s->wake[0] = s->wake[1] = -1;
  pthread_mutex_init(&s->lock, NULL);
  dk__share_cond_init(&s->accepted);
  dk__share_cond_init(&s->idle);
  IOReturn rc;
  /* a stale socket file (its driver died) is replaced; a live one, or anything else, is not */
  struct stat st;
  if (dk__lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      rc = dk__fail(kIOReturnExclusiveAccess, DK_CONSTRAINT_ARGUMENT, "%s exists and is not a socket", path);
      goto fail;
    }
    int probe = dk__socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (probe < 0) {
      rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "socket: %s", strerror(errno));
      goto fail;
    }
    int live = dk__connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
    int e = errno;
    dk__close(probe);
    if (live || (e != ECONNREFUSED && e != ENOENT)) {
      rc = dk__fail(kIOReturnExclusiveAccess, DK_CONSTRAINT_ARGUMENT,
                    live ? "another driver listens on %s" : "%s: cannot tell whether it is in use", path);
      goto fail;
    }
    (void)dk__unlink(path);
  }
  s->listen_fd = dk__socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
  if (s->listen_fd < 0) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "socket: %s", strerror(errno));
    goto fail;
  }
  if (dk__bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    rc = dk__fail(errno == EADDRINUSE ? kIOReturnExclusiveAccess : kIOReturnNotPermitted, DK_CONSTRAINT_RESOURCE,
                  "bind %s: %s", path, strerror(errno));
    goto fail;
  }
  if (dk__listen(s->listen_fd, 64) != 0) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "listen %s: %s", path, strerror(errno));
    goto unlink_fail;
  }
  if (dk__pipe(s->wake) != 0) {
    s->wake[0] = s->wake[1] = -1;
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "pipe: %s", strerror(errno));
    goto unlink_fail;
  }
  int err = dk__thread_create(&s->thread, server_main, s);
  if (err) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the server thread: %s", strerror(err));
    goto unlink_fail;
  }
  *out = s;
  return kIOReturnSuccess;
unlink_fail:
  (void)dk__unlink(path);
fail:
  if (s->wake[0] >= 0) { dk__close(s->wake[0]); dk__close(s->wake[1]); }
  if (s->listen_fd >= 0) dk__close(s->listen_fd);
  pthread_cond_destroy(&s->accepted);
  pthread_cond_destroy(&s->idle);
  pthread_mutex_destroy(&s->lock);
  dk__free(s);
  return rc;
}

IOReturn dk_server_accept(dk_server *s, int timeout_ms, task_t *client)
{
  dk__enter("dk_server_accept");
  if (client) *client = NULL;
  if (!s || !client) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a server and an out pointer are needed");
  struct timespec until = dk__share_deadline(timeout_ms < 0 ? 0 : timeout_ms);
  pthread_mutex_lock(&s->lock);
  s->accepting++;
  while (!s->queued && !s->stopping) {
    int r = timeout_ms < 0 ? pthread_cond_wait(&s->accepted, &s->lock)
                           : pthread_cond_timedwait(&s->accepted, &s->lock, &until);
    if (r == ETIMEDOUT) break;
  }
  IOReturn rc = kIOReturnSuccess;
  if (s->stopping) {
    rc = dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "the server is being destroyed");
  } else if (!s->queued) {
    rc = dk__fail(kIOReturnTimeout, DK_CONSTRAINT_CONNECTION, "no client connected within %d ms", timeout_ms);
  } else {
    *client = s->queue[0];
    memmove(s->queue, s->queue + 1, (s->queued - 1) * sizeof s->queue[0]);
    s->queued--;
  }
  if (--s->accepting == 0) pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->lock);
  return rc;
}

unsigned dk_server_client_count(dk_server *s)
{
  if (!s) return 0;
  pthread_mutex_lock(&s->lock);
  unsigned n = s->count;
  pthread_mutex_unlock(&s->lock);
  return n;
}

void dk_server_destroy(dk_server *s)
{
  if (!s) return;
  pthread_mutex_lock(&s->lock);
  s->stopping = true;
  pthread_cond_broadcast(&s->accepted);         /* threads in dk_server_accept return */
  while (s->accepting) pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);
  wake_server(s);
  dk__thread_join(s->thread);
  /* every client is told and cut off; the policy hears of each */
  pthread_mutex_lock(&s->lock);
  dk_conn *list = s->conns;
  pthread_mutex_unlock(&s->lock);
  for (dk_conn *c = list; c; c = c->next) conn_kill(c, kIOReturnNotAttached, "the driver is shutting down");
  reap(s);
  for (unsigned i = 0; i < s->queued; i++) dk__task_release(s->queue[i]);
  dk__close(s->listen_fd);
  (void)dk__unlink(s->path);
  dk__close(s->wake[0]);
  dk__close(s->wake[1]);
  pthread_cond_destroy(&s->accepted);
  pthread_cond_destroy(&s->idle);
  pthread_mutex_destroy(&s->lock);
  dk__free(s);
}
