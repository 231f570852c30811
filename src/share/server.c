/* src/share/server.c: the driver's side of sharing. A server listens on a Unix SOCK_SEQPACKET
 * socket; its thread admits peers by their kernel credentials (SO_PEERCRED) and the policy,
 * and serves their requests. Each admitted peer is a connection, which is its task_t: counted
 * references (the server holds one while connected, every mapping into it one more), a table
 * of the mappings the client holds (entries), and the state of the conversation. Memory leaves
 * as a memfd: sealed against shrinking and growing, mode 0600, and for read-only access as a
 * read-only file description, so the kernel, not the client, enforces what it may do.
 * Nothing sent to a client is dropped and no thread waits for room in its socket: a record
 * that does not fit waits in the connection's queue, in order, and the server thread sends it
 * when the socket has room. A client that takes nothing from its socket, or leaves a MAP
 * unanswered, for timeout_ms is cut off; while 64 records wait for it, its requests are left
 * unread (what waits for one client stays bounded).
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
  uint64_t      sent_ms;      /* when its MAP left for the client (0: still queued) */
} entry;

/* A record waiting for room in the client's socket. */
typedef struct outrec {
  struct outrec *next;
  int            fd;          /* the descriptor it carries (its own duplicate), or -1 */
  uint64_t       map_id;      /* a MAP: its entry, stamped with the time it leaves */
  uint32_t       len;
  unsigned char  rec[];
} outrec;

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
  IOReturn         cut_code;    /* why it was cut off (kIOReturnNotResponding ...), 0 if it ended */
  uint64_t         next_id;
  entry           *entries;
  outrec          *out_head, *out_tail;   /* waiting for room in the client's socket, oldest first */
  unsigned         nout;
  bool             sending;     /* a thread has a record in sendmsg (the lock dropped) */
  uint64_t         out_since;   /* ms: when the queue last moved (or started) */
  uint64_t         out_retry;   /* ms: the driver's own side could not send; not before then */
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
  /* dk_server_stats */
  _Atomic uint64_t st_connections, st_vanished, st_refused, st_admitted, st_disconnected;
  _Atomic uint64_t st_cut, st_bad, st_queued_max, st_pauses;
};

#define g_hooks dk__share_hooks

/* What one client may hold: mappings (answered or not) and mappings not yet answered. A
 * client that asks for more is refused (kIOReturnNoResources), so a hostile one cannot make
 * the driver keep unbounded records or descriptors in flight. */
#define CONN_MAX_ENTRIES 4096u
#define CONN_MAX_PENDING 64u
/* Records waiting for room in one client's socket: at OUT_PAUSE its requests are left unread
 * (each answers with at most one record), beyond OUT_MAX (UNMAPs of everything it holds, MAPs
 * of what is pending, and the answers) it is cut off. */
#define OUT_PAUSE 64u
#define OUT_MAX   (CONN_MAX_ENTRIES + CONN_MAX_PENDING + OUT_PAUSE)

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

static void result_init(dk_msg *m, uint32_t seq, IOReturn code, dk_constraint_kind kind, const char *fmt, va_list ap)
{
  dk__proto_init(m, DK_MSG_RESULT, seq);
  m->u.result.code = code;
  m->u.result.constraint = (uint32_t)kind;
  vsnprintf(m->u.result.text, sizeof m->u.result.text, fmt, ap);
}

/* A refusal on a socket that is not (yet) a connection: fresh, so it has room. */
static void refuse(int fd, IOReturn code, dk_constraint_kind kind, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(int fd, IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
{
  dk_msg m;
  va_list ap;
  va_start(ap, fmt);
  result_init(&m, 0, code, kind, fmt, ap);
  va_end(ap);
  (void)dk__share_send(fd, &m, -1, 0);
}

static void wake_server(dk_server *s)
{
  char b = 1;
  /* A full pipe already wakes it (EAGAIN). Any other failure is tried again: a lost wake-up
   * would leave the thread asleep in poll with no deadline, and dk_server_destroy joins it. */
  for (int i = 0; i < DK_EINTR_RETRIES; i++)
    if (dk__write(s->wake[1], &b, 1) == 1 || errno == EAGAIN || errno == EWOULDBLOCK) return;
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

/* A MAP left for the client: its answer is due timeout_ms from now. */
static void stamp_sent(dk_conn *c, uint64_t map_id, uint64_t now)
{
  entry *e = find_entry(c, map_id, NULL);
  if (e && e->state == ENTRY_PENDING && !e->sent_ms) e->sent_ms = now ? now : 1;
}

/* Append a record to the queue (its own duplicate of `fd`). Under c->lock. 0, or -1 with
 * errno (ETIMEDOUT: the queue is full, the client takes nothing; or the driver's own). */
static int queue_record(dk_conn *c, const dk_msg *m, int fd, uint64_t map_id)
{
  if (c->nout >= OUT_MAX) {
    errno = ETIMEDOUT;
    return -1;
  }
  outrec *o = dk__malloc(sizeof *o + m->hdr.size);
  if (!o) {
    errno = ENOMEM;
    return -1;
  }
  o->fd = fd >= 0 ? dk__fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (fd >= 0 && o->fd < 0) {
    int e = errno;
    dk__free(o);
    errno = e;
    return -1;
  }
  o->next = NULL;
  o->map_id = map_id;
  o->len = m->hdr.size;
  memcpy(o->rec, m, m->hdr.size);
  if (c->out_tail) c->out_tail->next = o;
  else c->out_head = o;
  c->out_tail = o;
  if (c->nout++ == 0) {
    c->out_since = dk__share_now_ms();
    if (c->server) wake_server(c->server);   /* it watches the socket for room from now on */
  }
  if (c->server && c->nout > atomic_load_explicit(&c->server->st_queued_max, memory_order_relaxed))
    atomic_store_explicit(&c->server->st_queued_max, c->nout, memory_order_relaxed);
  return 0;
}

static void free_record(outrec *o)
{
  if (o->fd >= 0) dk__close(o->fd);
  dk__free(o);
}

/* Put a record that could not leave back at the head of the queue. Under c->lock. */
static void requeue_head(dk_conn *c, outrec *o)
{
  o->next = c->out_head;
  c->out_head = o;
  if (!c->out_tail) c->out_tail = o;
  if (c->nout++ == 0) {
    c->out_since = dk__share_now_ms();
    if (c->server) wake_server(c->server);
  }
}

/* Send a record to the client, or queue it behind those already waiting for room in its
 * socket: records leave in the order they were sent, and nobody waits for room. Called under
 * c->lock, which it drops while the record is in sendmsg (one sender at a time, so the order
 * holds, and a disconnect never waits for a send); returns with it held. `fd` (or -1) goes
 * with it; a queued record keeps its own duplicate. `map_id`: the record is that mapping's
 * MAP. 0, or -1 with errno: ENOTCONN (cut off), the client's fault (client_fault: gone;
 * ETIMEDOUT when its queue is full, it takes nothing), or the driver's own. */
static int conn_send_locked(dk_conn *c, const dk_msg *m, int fd, uint64_t map_id)
{
  if (c->dead) {
    errno = ENOTCONN;
    return -1;
  }
  if (c->out_head || c->sending) return queue_record(c, m, fd, map_id);
  c->sending = true;
  pthread_mutex_unlock(&c->lock);
  int r = dk__share_send_once(c->fd, m, m->hdr.size, fd);
  int e = errno;
  pthread_mutex_lock(&c->lock);
  c->sending = false;
  if (r == 0) {
    if (map_id) stamp_sent(c, map_id, dk__share_now_ms());
    if (c->out_head && c->server) wake_server(c->server);   /* queued meanwhile: the server thread sends it */
    return 0;
  }
  if (c->dead) {
    errno = ENOTCONN;
    return -1;
  }
  /* no room: it waits, ahead of what was queued meanwhile. So does a record without a
   * descriptor that the driver's own side could not send now (kernel buffers); a MAP the
   * driver cannot send fails instead */
  if (e != EAGAIN && e != EWOULDBLOCK && (fd >= 0 || client_fault(e))) {
    errno = e;
    return -1;
  }
  outrec *tail = c->out_tail;
  if (queue_record(c, m, fd, map_id) != 0) return -1;
  if (tail) {                                /* move it from the tail to the head */
    outrec *o = c->out_tail;
    tail->next = NULL;
    c->out_tail = tail;
    c->nout--;
    requeue_head(c, o);
  }
  if (c->server) wake_server(c->server);     /* it left the socket to this thread meanwhile */
  return 0;
}

/* Send what waits, oldest first, as far as the client's socket takes it; the server thread's
 * part. Under c->lock, dropped around each sendmsg. false when the client is gone (the socket
 * refused for its own reasons). A failure on the driver's own side (descriptors in flight,
 * kernel buffers) is tried again 10 ms later. */
static bool conn_flush_locked(dk_conn *c)
{
  while (c->out_head && !c->sending && !c->dead) {
    outrec *o = c->out_head;
    c->out_head = o->next;
    if (!c->out_head) c->out_tail = NULL;
    c->nout--;
    c->sending = true;
    pthread_mutex_unlock(&c->lock);
    int r = dk__share_send_once(c->fd, o->rec, o->len, o->fd);
    int e = errno;
    pthread_mutex_lock(&c->lock);
    c->sending = false;
    if (r != 0 && c->dead) {                 /* cut off meanwhile: the rest is gone too */
      free_record(o);
      return true;
    }
    if (r != 0) {
      requeue_head(c, o);
      if (client_fault(e)) return false;
      if (e != EAGAIN && e != EWOULDBLOCK) c->out_retry = dk__share_now_ms() + 10;
      return true;
    }
    uint64_t now = dk__share_now_ms();
    c->out_since = now;
    if (o->map_id) stamp_sent(c, o->map_id, now);
    free_record(o);
  }
  return true;
}

static void conn_kill(dk_conn *c, IOReturn code, const char *why);

/* A record could not be sent or queued (errno `err`): what the client was sent must not be
 * lost, so it is cut off, with the reason. */
static void cut_for_send(dk_conn *c, int err)
{
  if (err == ENOTCONN) return;                                     /* cut off already */
  if (err == ETIMEDOUT) conn_kill(c, kIOReturnNotResponding, "the client does not read its socket");
  else if (client_fault(err)) conn_kill(c, kIOReturnSuccess, NULL);  /* it is gone */
  else conn_kill(c, kIOReturnNoResources, "the driver could not queue a message for this client");
}

/* Answer a request (a RESULT for `seq`). A client that cannot be answered is cut off. */
static void answer(dk_conn *c, uint32_t seq, IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
  __attribute__((format(printf, 5, 6)));
static void answer(dk_conn *c, uint32_t seq, IOReturn code, dk_constraint_kind kind, const char *fmt, ...)
{
  dk_msg m;
  va_list ap;
  va_start(ap, fmt);
  result_init(&m, seq, code, kind, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&c->lock);
  int sent = conn_send_locked(c, &m, -1, 0);
  int err = errno;
  pthread_mutex_unlock(&c->lock);
  if (sent != 0) cut_for_send(c, err);
}

/* Cut a connection: no more traffic, every entry revoked (owned maps dropped), what waited
 * for room dropped, the server thread told. `why`: the client is told (BYE) if its socket has
 * room. Safe from any thread, once or many times. */
static void conn_kill(dk_conn *c, IOReturn code, const char *why)
{
  pthread_mutex_lock(&c->lock);
  if (c->dead) {
    pthread_mutex_unlock(&c->lock);
    return;
  }
  c->dead = true;
  c->cut_code = code;
  entry *list = c->entries;
  c->entries = NULL;
  c->nentries = c->npending = 0;
  outrec *out = c->out_head;
  c->out_head = c->out_tail = NULL;
  c->nout = 0;
  for (entry *e = list; e; e = e->next)
    g_hooks.set_address(e->obj, e->kind, 0);
  pthread_cond_broadcast(&c->cond);
  if (why) {
    dk_msg m;
    dk__proto_init(&m, DK_MSG_BYE, 0);
    m.u.bye.code = code;
    snprintf(m.u.bye.text, sizeof m.u.bye.text, "%s", why);
    (void)dk__share_send_once(c->fd, &m, m.hdr.size, -1);
  }
  (void)dk__shutdown(c->fd, SHUT_RDWR);
  if (c->server) {
    if (code == kIOReturnNotResponding) atomic_fetch_add(&c->server->st_cut, 1);
    /* woken under the lock: reap() clears c->server under it before the server is freed */
    wake_server(c->server);
  }
  pthread_mutex_unlock(&c->lock);
  while (out) {
    outrec *o = out;
    out = o->next;
    free_record(o);
  }
  while (list) {
    entry *e = list;
    list = e->next;
    if (e->kind == DK_SHARE_MAP_OWNED) g_hooks.drop(e->obj, e->kind);
    dk__free(e);
  }
}

void dk_task_disconnect(task_t task)
{
  dk_conn *c = as_conn(task);
  if (c) conn_kill(c, kIOReturnNotAttached, "the driver disconnected this client");
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
  int sent = 0, err = 0;
  uint64_t id = 0;
  entry *gone = NULL;
  /* publish the entry, then send its MAP (or queue it): the answer may come at once, and an
   * UNMAP of this id can only follow (the map is not the caller's to release until this
   * returns). From the send on, a disconnect may free the entry: it is found by its id */
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
    g_hooks.published(e->obj, e->kind, e->id);
    dk_msg m;
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
    id = e->id;
    sent = conn_send_locked(c, &m, fd, id);
    err = errno;
    entry **link = NULL;
    if (sent != 0 && find_entry(c, id, &link)) {      /* never reached the client: unpublish */
      gone = *link;
      *link = gone->next;
      c->nentries--;
      if (gone->state == ENTRY_PENDING) c->npending--;
      g_hooks.set_address(gone->obj, gone->kind, 0);
    }
  }
  pthread_mutex_unlock(&c->lock);
  if (close_after) dk__close(fd);
  if (rc != kIOReturnSuccess) {
    dk__free(e);
    return rc;
  }
  if (sent != 0) {
    if (gone && gone->kind == DK_SHARE_MAP_OWNED) g_hooks.drop(gone->obj, gone->kind);
    dk__free(gone);                                    /* NULL when a disconnect took it meanwhile */
    if (client_fault(err)) {
      cut_for_send(c, err);
      return dk__fail(err == ETIMEDOUT ? kIOReturnNotResponding : kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION,
                      "sending the mapping to client %s failed: %s", c->name,
                      err == ETIMEDOUT ? "it takes nothing from its socket" : strerror(err));
    }
    return dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
                    "sending the mapping to client %s failed on this side: %s", c->name, strerror(err));
  }
  *id_out = id;
  if (on_server) return kIOReturnSuccess;              /* the answer fills the address */
  /* wait for the client's answer; the entry may be freed meanwhile (revoked): look it up.
   * The answer is due timeout_ms after the MAP left; while it waits in the queue, the client
   * has timeout_ms from the queue's last move (as the server thread counts it) */
  uint64_t start = dk__share_now_ms();
  pthread_mutex_lock(&c->lock);
  entry *w;
  for (;;) {
    w = c->dead ? NULL : find_entry(c, id, NULL);
    if (!w || w->state != ENTRY_PENDING) break;
    uint64_t since = w->sent_ms ? w->sent_ms : (c->out_since > start ? c->out_since : start);
    uint64_t due = since + (uint64_t)timeout, now = dk__share_now_ms();
    if (now >= due) {
      bool unsent = !w->sent_ms;
      pthread_mutex_unlock(&c->lock);
      conn_kill(c, kIOReturnNotResponding, unsent ? "the client does not read its socket"
                                                   : "the client did not answer a mapping in time");
      *id_out = 0;
      return dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                      "client %s did not %s within %d ms; it was disconnected", c->name,
                      unsent ? "take the mapping from its socket" : "answer the mapping", timeout);
    }
    struct timespec until = dk__share_deadline((int)(due - now));
    pthread_cond_timedwait(&c->cond, &c->lock, &until);
  }
  if (!w) {
    IOReturn cut = c->cut_code;
    pthread_mutex_unlock(&c->lock);
    *id_out = 0;
    if (cut == kIOReturnNotResponding)
      return dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                      "client %s stopped taking what the driver sends; it was disconnected", c->name);
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
  g_hooks.set_address(w->obj, w->kind, w->address);
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
  int sent = 0, err = 0;
  if (e) {
    *link = e->next;
    c->nentries--;
    if (e->state == ENTRY_PENDING) c->npending--;
    if (!c->dead) {
      /* queued behind what waits, if anything does: the releasing thread never waits */
      dk_msg m;
      dk__proto_init(&m, DK_MSG_UNMAP, 0);
      m.u.id.id = id;
      sent = conn_send_locked(c, &m, -1, 0);
      err = errno;
    }
  }
  pthread_mutex_unlock(&c->lock);
  dk__free(e);
  /* a client that cannot be told keeps a mapping the driver let go: it is cut off */
  if (sent != 0) cut_for_send(c, err);
}

/* ---- the server thread: requests ------------------------------------------------------------ */

/* What IOConnectMapMemory64 callers pass: kIOMapAnywhere (the client library always chooses
 * the address), a cache mode, and, beyond IOKit's user options, kIOMapReadOnly and
 * kIOMapPrefault, which dmakit honours. */
#define MAP_REQ_OPTIONS (kIOMapAnywhere | kIOMapCacheMask | kIOMapReadOnly | kIOMapPrefault)

static void handle_map_req(dk_server *s, dk_conn *c, const dk_msg *m)
{
  uint32_t seq = m->hdr.seq;
  IOOptionBits opts = m->u.map_req.options;
  if (opts & ~(IOOptionBits)MAP_REQ_OPTIONS) {
    answer(c, seq, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
           "map options 0x%x: only kIOMapAnywhere, a cache mode, kIOMapReadOnly and kIOMapPrefault may be asked for",
           opts);
    return;
  }
  if (!(opts & kIOMapReadOnly) && c->access != DK_ACCESS_READ_WRITE) {
    answer(c, seq, kIOReturnNotPrivileged, DK_CONSTRAINT_PEER,
           "this client has read-only access: ask with kIOMapReadOnly");
    return;
  }
  if (!s->policy.memory_for_type) {
    answer(c, seq, kIOReturnUnsupported, DK_CONSTRAINT_ARGUMENT,
           "the driver gives no memory types (no memory_for_type in its policy)");
    return;
  }
  dk__enter("clientMemoryForType");
  IOReturn rc = g_hooks.map_for_type(&s->policy, &c->task, m->u.map_req.type, opts, seq);
  if (rc != kIOReturnSuccess) {
    /* the hook or the mapping said why; the MAP message would have been the answer */
    const dk_failure *f = dk_last_failure();
    answer(c, seq, f->code ? f->code : kIOReturnError, f->constraint, "memory type %u: %s",
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
    answer(c, m->hdr.seq, kIOReturnSuccess, DK_CONSTRAINT_NONE, "unmapped");
    return;
  }
  if (e) {
    *link = e->next;
    c->nentries--;
    if (e->state == ENTRY_PENDING) c->npending--;
    if (e->kind != DK_SHARE_BUFFER) g_hooks.set_address(e->obj, e->kind, 0);
  }
  pthread_mutex_unlock(&c->lock);
  if (!e) {
    answer(c, m->hdr.seq, kIOReturnNotFound, DK_CONSTRAINT_ARGUMENT,
           "mapping %llu was never granted to this client (or was already given back)", (unsigned long long)id);
    return;
  }
  if (e->kind == DK_SHARE_MAP_OWNED) g_hooks.drop(e->obj, e->kind);
  dk__free(e);
  answer(c, m->hdr.seq, kIOReturnSuccess, DK_CONSTRAINT_NONE, "unmapped");
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
      if (!e->waited) g_hooks.set_address(e->obj, e->kind, a->address);
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
    if (failed->kind == DK_SHARE_MAP_OWNED) g_hooks.drop(failed->obj, failed->kind);
    dk__free(failed);
  }
  if (!ok)
    answer(c, m->hdr.seq, kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
           "an answer for mapping %llu, which is not waiting for one", (unsigned long long)a->id);
}

/* Read and serve what one client sent: until nothing is left, 64 records were served (the
 * others get their turn), or OUT_PAUSE records wait for room in its socket (the rest stays
 * unread until they leave). false when the connection ended. */
static bool serve_conn(dk_server *s, dk_conn *c)
{
  for (int rounds = 0; rounds < 64; rounds++) {
    dk_msg m;
    char extra[sizeof m + 1];
    int nfds, mflags;
    ssize_t n = dk__share_recv(c->fd, extra, sizeof extra, MSG_DONTWAIT, NULL, &nfds, &mflags);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    bool empty = n < 0 && errno == EBADMSG;
    if (n <= 0 && !empty) return false;                        /* closed, reset, or killed */
    /* clients never send descriptors: any that came were closed, and the gate refuses them */
    char why[160];
    uint32_t seq = 0;
    if (n >= (ssize_t)sizeof m.hdr) memcpy(&seq, extra + offsetof(dk_msg_hdr, seq), sizeof seq);
    if (empty || (mflags & (MSG_TRUNC | MSG_CTRUNC)) ||
        dk__proto_check(extra, (size_t)n, nfds, DK_PROTO_TO_DRIVER, dk__caps()->page_size, why, sizeof why) != 0) {
      if (empty) snprintf(why, sizeof why, "an empty record (%d descriptors)", nfds);
      else if (mflags & (MSG_TRUNC | MSG_CTRUNC)) snprintf(why, sizeof why, "the record or its descriptors were truncated");
      atomic_fetch_add(&s->st_bad, 1);
      answer(c, seq, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "message refused: %s", why);
    } else {
      memcpy(&m, extra, (size_t)n);
      switch (m.hdr.type) {
      case DK_MSG_MAP_REQ:   handle_map_req(s, c, &m); break;
      case DK_MSG_UNMAP_REQ: handle_unmap_req(c, &m); break;
      case DK_MSG_MAP_ACK:   handle_map_ack(c, &m); break;
      default: break;                                          /* proto_check admits no other */
      }
    }
    pthread_mutex_lock(&c->lock);
    bool dead = c->dead, full = c->nout >= OUT_PAUSE;
    pthread_mutex_unlock(&c->lock);
    if (dead) return false;
    if (full) {
      atomic_fetch_add(&s->st_pauses, 1);
      return true;
    }
  }
  return true;
}

/* Cut off clients that took nothing from their socket, or left a MAP unanswered, for the
 * whole timeout. Returns the milliseconds until the next such deadline, -1 if none. */
static int check_deadlines(dk_server *s)
{
  uint64_t t = (uint64_t)timeout_of(s);
  for (;;) {
    uint64_t now = dk__share_now_ms(), next = UINT64_MAX, late_id = 0;
    dk_conn *late = NULL;
    pthread_mutex_lock(&s->lock);
    for (dk_conn *c = s->conns; c && !late; c = c->next) {
      pthread_mutex_lock(&c->lock);
      if (!c->dead && c->nout) {
        if (now >= c->out_since + t) late = c;
        else if (c->out_since + t < next) next = c->out_since + t;
      }
      for (entry *e = c->npending && !c->dead && !late ? c->entries : NULL; e; e = e->next) {
        if (e->state != ENTRY_PENDING || !e->sent_ms) continue;
        if (now >= e->sent_ms + t) {
          late = c;
          late_id = e->id;
          break;
        }
        if (e->sent_ms + t < next) next = e->sent_ms + t;
      }
      pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&s->lock);
    if (!late) return next == UINT64_MAX ? -1 : (int)(next - now) + 1;
    /* the set only shrinks in reap(), on this thread: late is alive */
    char why[120];
    if (late_id)
      snprintf(why, sizeof why, "the client did not answer mapping %llu within %llu ms", (unsigned long long)late_id,
               (unsigned long long)t);
    else
      snprintf(why, sizeof why, "the client took nothing from its socket for %llu ms", (unsigned long long)t);
    conn_kill(late, kIOReturnNotResponding, why);
  }
}

/* ---- the server thread: admission ----------------------------------------------------------- */

static dk_access default_admit(const dk_peer *peer)
{
  return peer->uid == 0 || peer->uid == geteuid() ? DK_ACCESS_READ_WRITE : DK_ACCESS_NONE;
}

/* A connection taken from the socket. One that closed before the server got to it is not shown
 * to the policy (counted as vanished); the policy is asked only when the client can be served
 * (below max_clients, room in the accept queue); an admitted client becomes a task, queued
 * for dk_server_accept, and from then on ends only through reap(), which tells `disconnected`
 * (even when it closed before its WELCOME could be sent). */
static void admit_one(dk_server *s, int fd)
{
  atomic_fetch_add(&s->st_connections, 1);
  struct pollfd pf = { .fd = fd, .events = POLLRDHUP };
  struct ucred cr;
  unsigned len = sizeof cr;
  if ((dk__poll(&pf, 1, 0) == 1 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) ||
      dk__getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    atomic_fetch_add(&s->st_vanished, 1);
    dk__close(fd);
    return;
  }
  dk_peer peer = { cr.pid, cr.uid, cr.gid };
  unsigned max = s->policy.max_clients ? s->policy.max_clients : 64;
  pthread_mutex_lock(&s->lock);
  /* the accept queue holds connected clients only (reap() drops the dead), at most `max` */
  const unsigned qmax = sizeof s->queue / sizeof s->queue[0];
  bool at_max = s->count >= max, queue_full = s->queued >= qmax;
  pthread_mutex_unlock(&s->lock);
  if (at_max || queue_full) {
    atomic_fetch_add(&s->st_refused, 1);
    if (at_max)
      refuse(fd, kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the driver serves %u clients already, its most", max);
    else
      refuse(fd, kIOReturnNoResources, DK_CONSTRAINT_RESOURCE,
             "%u clients wait for the driver to accept them (dk_server_accept), the most that may", qmax);
    dk__close(fd);
    return;
  }
  dk_access access = s->policy.admit ? s->policy.admit(s->policy.ctx, &peer) : default_admit(&peer);
  if (access != DK_ACCESS_READ && access != DK_ACCESS_READ_WRITE) {
    atomic_fetch_add(&s->st_refused, 1);
    refuse(fd, kIOReturnNotPermitted, DK_CONSTRAINT_PEER, "the driver's policy does not admit pid %d (uid %u, gid %u)",
           (int)cr.pid, (unsigned)cr.uid, (unsigned)cr.gid);
    dk__close(fd);
    return;
  }
  dk_conn *c = dk__calloc(1, sizeof *c);
  if (!c) {
    atomic_fetch_add(&s->st_refused, 1);
    refuse(fd, kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the driver is out of memory");
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
  atomic_fetch_add(&s->st_admitted, 1);
  /* the WELCOME goes first, before anyone can send the client anything else */
  dk_msg m;
  dk__proto_init(&m, DK_MSG_WELCOME, 0);
  m.u.welcome.access = (uint32_t)access;
  m.u.welcome.page_size = dk__caps()->page_size;
  m.u.welcome.client_id = (uint64_t)cr.pid;
  pthread_mutex_lock(&c->lock);
  int sent = conn_send_locked(c, &m, -1, 0);
  int err = errno;
  pthread_mutex_unlock(&c->lock);
  if (sent != 0) cut_for_send(c, err);    /* gone already: it is published dead, reap() reports it */
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
    atomic_fetch_add(&s->st_disconnected, 1);
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
    uint64_t now = dk__share_now_ms();
    int retry = -1;
    if (fds)
      for (dk_conn *c = s->conns; c; c = c->next) {
        /* its requests while few records wait for room in its socket; room while any do */
        pthread_mutex_lock(&c->lock);
        bool room = c->nout && now >= c->out_retry && !c->sending;   /* a sender wakes it when done */
        if (c->nout && !room && (retry < 0 || c->out_retry - now < (uint64_t)retry)) retry = (int)(c->out_retry - now);
        short ev = (short)((c->nout < OUT_PAUSE ? POLLIN : 0) | (room ? POLLOUT : 0));
        pthread_mutex_unlock(&c->lock);
        pf[k] = (struct pollfd){ .fd = c->fd, .events = ev };
        who[k++] = c;
      }
    pthread_mutex_unlock(&s->lock);
    if (stop) break;
    int due = check_deadlines(s);
    if (retry >= 0 && (due < 0 || retry < due)) due = retry;
    int r = dk__poll(pf, k, fds ? due : (due >= 0 && due < 100 ? due : 100));
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
      pthread_mutex_lock(&c->lock);
      bool up = c->dead || conn_flush_locked(c), paused = c->nout >= OUT_PAUSE;
      pthread_mutex_unlock(&c->lock);
      if (!up || (!paused && !serve_conn(s, c))) conn_kill(c, kIOReturnSuccess, NULL);
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
  /* the policy is the access control: every user may reach it, whatever the umask */
  struct stat made;
  errno = 0;
  bool ours = dk__lstat(path, &made) == 0 && S_ISSOCK(made.st_mode) && made.st_uid == geteuid();
  if (!ours || dk__chmod(path, 0666) != 0) {
    rc = dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_RESOURCE, "making %s reachable by every user (mode 0666): %s",
                  path, !ours && !errno ? "it is no longer the socket just bound" : strerror(errno));
    goto unlink_fail;
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

IOReturn dk_server_get_stats(dk_server *s, dk_server_stats *stats)
{
  dk__enter("dk_server_get_stats");
  if (!s || !stats || stats->size < 2 * sizeof(uint32_t))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a server and stats with their size set are needed");
  dk_server_stats st = { .size = sizeof st, .version = 1 };
  st.connections = atomic_load(&s->st_connections);
  st.vanished = atomic_load(&s->st_vanished);
  st.refused = atomic_load(&s->st_refused);
  st.admitted = atomic_load(&s->st_admitted);
  st.disconnected = atomic_load(&s->st_disconnected);
  st.cut_unresponsive = atomic_load(&s->st_cut);
  st.bad_records = atomic_load(&s->st_bad);
  st.queued_max = atomic_load(&s->st_queued_max);
  st.read_pauses = atomic_load(&s->st_pauses);
  pthread_mutex_lock(&s->lock);
  for (dk_conn *c = s->conns; c; c = c->next) {
    pthread_mutex_lock(&c->lock);
    st.queued += c->nout;
    pthread_mutex_unlock(&c->lock);
  }
  pthread_mutex_unlock(&s->lock);
  size_t n = stats->size < sizeof st ? stats->size : sizeof st;
  memcpy(stats, &st, n);
  stats->size = (uint32_t)n;
  return kIOReturnSuccess;
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
