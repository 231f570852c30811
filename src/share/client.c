/* src/share/client.c: the client library, the other end of server.c. A connection has one
 * thread that reads the driver's messages: it maps what the driver sends (the memfd is closed
 * once mapped: the mapping holds the memory), answers with the address, unmaps what the
 * driver takes back, and hands answers to the calls waiting for them (matched by request
 * number). When the driver goes away the mappings stay: the memory lives while they do. */
#include "share/proto.h"
#include "share/share.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct cmap {
  struct cmap      *next;
  dk_client_mapping m;
  void             *base;       /* the mmap'ed span */
  size_t            span;
  bool              announced;  /* returned by dk_client_next_mapping */
} cmap;

typedef struct waiter {
  struct waiter *next;
  uint32_t       seq;
  bool           done;
  IOReturn       code;
  dk_constraint_kind kind;
  char           text[DK_PROTO_TEXT];
  dk_client_mapping mapping;    /* for a map request answered by MAP */
} waiter;

struct dk_client {
  int               fd;
  pthread_t         thread;
  pthread_mutex_t   lock;
  pthread_cond_t    cond;       /* a waiter was answered, a mapping arrived, the driver left */
  bool              connected;
  bool              closing;
  bool              free_on_exit;  /* closed from its own thread (a callback): the thread frees */
  dk_access         access;
  size_t            page;
  uint32_t          seq;
  int               timeout_ms;
  dk_client_options opts;
  cmap             *maps;
  waiter           *waiters;
  char              gone_reason[DK_PROTO_TEXT];
};

static waiter *find_waiter(dk_client *c, uint32_t seq)
{
  for (waiter *w = c->waiters; w; w = w->next)
    if (w->seq == seq && !w->done) return w;
  return NULL;
}

/* The driver sent a mapping: map it, answer, and tell whoever waits for it. */
static void on_map(dk_client *c, const dk_msg *m, int fd)
{
  const dk_msg_map *p = &m->u.map;
  dk_msg ack;
  dk__proto_init(&ack, DK_MSG_MAP_ACK, 0);
  ack.u.map_ack.id = p->id;
  int prot = PROT_READ | (p->writable ? PROT_WRITE : 0);
  void *base = dk__mmap(NULL, (size_t)p->span, prot, MAP_SHARED | (p->populate ? MAP_POPULATE : 0), fd,
                        (off_t)p->file_offset);
  dk__close(fd);
  cmap *cm = base != MAP_FAILED ? dk__calloc(1, sizeof *cm) : NULL;
  if (!cm) {
    if (base != MAP_FAILED) dk__munmap(base, (size_t)p->span);
    ack.u.map_ack.code = base == MAP_FAILED ? kIOReturnVMError : kIOReturnNoMemory;
    (void)dk__share_send(c->fd, &ack, -1, c->timeout_ms);
    pthread_mutex_lock(&c->lock);
    waiter *w = m->hdr.seq ? find_waiter(c, m->hdr.seq) : NULL;
    if (w) {
      w->done = true;
      w->code = ack.u.map_ack.code;
      w->kind = DK_CONSTRAINT_RESOURCE;
      snprintf(w->text, sizeof w->text, "mapping the driver's buffer here failed");
      pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    return;
  }
  cm->base = base;
  cm->span = (size_t)p->span;
  cm->m.id = p->id;
  cm->m.address = (mach_vm_address_t)(uintptr_t)base + p->in_page;
  cm->m.length = p->length;
  cm->m.tag = p->tag;
  cm->m.type = p->type;
  cm->m.writable = p->writable != 0;
  cm->m.pushed = m->hdr.seq == 0;
  ack.u.map_ack.address = cm->m.address;
  ack.u.map_ack.code = kIOReturnSuccess;
  dk_client_mapping copy = cm->m;
  /* the answer goes before the mapping is listed: an UNMAP_REQ for it (once the application
   * sees it) then always follows the answer on the socket */
  (void)dk__share_send(c->fd, &ack, -1, c->timeout_ms);
  pthread_mutex_lock(&c->lock);
  cm->next = c->maps;
  c->maps = cm;
  waiter *w = m->hdr.seq ? find_waiter(c, m->hdr.seq) : NULL;
  if (w) {
    w->done = true;
    w->code = kIOReturnSuccess;
    w->mapping = copy;
    cm->announced = true;
  }
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  if (!w && c->opts.mapped) c->opts.mapped(c->opts.ctx, &copy);
}

static cmap *unlink_map(dk_client *c, bool (*match)(const cmap *, uint64_t), uint64_t key)
{
  for (cmap **pp = &c->maps; *pp; pp = &(*pp)->next)
    if (match(*pp, key)) {
      cmap *m = *pp;
      *pp = m->next;
      return m;
    }
  return NULL;
}
static bool by_id(const cmap *m, uint64_t id) { return m->m.id == id; }
static bool by_address(const cmap *m, uint64_t a) { return m->m.address == a; }

static void on_unmap(dk_client *c, uint64_t id)
{
  pthread_mutex_lock(&c->lock);
  cmap *m = unlink_map(c, by_id, id);
  pthread_mutex_unlock(&c->lock);
  if (!m) return;
  dk__munmap(m->base, m->span);
  if (c->opts.unmapped) c->opts.unmapped(c->opts.ctx, &m->m);
  dk__free(m);
}

static void on_result(dk_client *c, const dk_msg *m)
{
  pthread_mutex_lock(&c->lock);
  waiter *w = find_waiter(c, m->hdr.seq);
  if (w) {
    w->done = true;
    w->code = m->u.result.code;
    w->kind = (dk_constraint_kind)m->u.result.constraint;
    snprintf(w->text, sizeof w->text, "%s", m->u.result.text);
    pthread_cond_broadcast(&c->cond);
  }
  pthread_mutex_unlock(&c->lock);
}

static void client_free(dk_client *c);

static void *client_main(void *arg)
{
  dk_client *c = arg;
  char reason[DK_PROTO_TEXT] = "the driver closed the connection";
  for (;;) {
    dk_msg m;
    char buf[sizeof m + 1];
    int fd, nfds, flags;
    ssize_t n = dk__share_recv(c->fd, buf, sizeof buf, 0, &fd, &nfds, &flags);
    if (n < 0 && errno == EBADMSG) continue;           /* an empty record: not one the driver sends */
    if (n <= 0) break;                                 /* driver gone, or we are closing */
    char why[160];
    if ((flags & (MSG_TRUNC | MSG_CTRUNC)) ||
        dk__proto_check(buf, (size_t)n, nfds, DK_PROTO_TO_CLIENT, c->page, why, sizeof why) != 0) {
      if (fd >= 0) dk__close(fd);
      continue;                                        /* not something the driver sends: ignored */
    }
    memcpy(&m, buf, (size_t)n);
    switch (m.hdr.type) {
    case DK_MSG_MAP:    on_map(c, &m, fd); break;
    case DK_MSG_UNMAP:  on_unmap(c, m.u.id.id); break;
    case DK_MSG_RESULT: on_result(c, &m); break;
    case DK_MSG_BYE:    snprintf(reason, sizeof reason, "%s", m.u.bye.text); break;
    default: break;                                    /* a second WELCOME: nothing to do */
    }
  }
  pthread_mutex_lock(&c->lock);
  bool closing = c->closing;
  c->connected = false;
  snprintf(c->gone_reason, sizeof c->gone_reason, "%s", reason);
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  if (!closing && c->opts.driver_gone) c->opts.driver_gone(c->opts.ctx);
  pthread_mutex_lock(&c->lock);
  bool self_free = c->free_on_exit;
  pthread_mutex_unlock(&c->lock);
  if (self_free) client_free(c);                     /* dk_client_close ran on this thread */
  return NULL;
}

static void client_free(dk_client *c)
{
  while (c->maps) {
    cmap *m = c->maps;
    c->maps = m->next;
    dk__munmap(m->base, m->span);
    dk__free(m);
  }
  dk__close(c->fd);
  pthread_cond_destroy(&c->cond);
  pthread_mutex_destroy(&c->lock);
  dk__free(c);
}

IOReturn dk_client_connect(const char *path, const dk_client_options *options, dk_client **out)
{
  dk__enter("dk_client_connect");
  if (out) *out = NULL;
  struct sockaddr_un sa;
  IOReturn bad = dk__share_sockaddr(out ? path : NULL, &sa);
  if (bad != kIOReturnSuccess) return bad;
  dk_client *c = dk__calloc(1, sizeof *c);
  if (!c) return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the connection");
  if (options) c->opts = *options;
  c->timeout_ms = c->opts.timeout_ms > 0 ? c->opts.timeout_ms : (int)dk__option(DK_OPTION_SHARE_TIMEOUT_MS);
  c->page = dk__caps()->page_size;
  pthread_mutex_init(&c->lock, NULL);
  dk__share_cond_init(&c->cond);
  IOReturn rc;
  c->fd = dk__socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
  if (c->fd < 0) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "socket: %s", strerror(errno));
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    dk__free(c);
    return rc;
  }
  /* non-blocking: a driver whose backlog is full (stuck, or hostile) answers EAGAIN, and the
   * attempt is repeated until the deadline instead of blocking for ever */
  struct timespec until = dk__share_deadline(c->timeout_ms);
  for (;;) {
    if (dk__connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
    int e = errno;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    bool late = now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec);
    if ((e == EAGAIN || e == EINTR) && !late) {
      struct timespec t = { 0, 5 * 1000000L };
      nanosleep(&t, NULL);
      continue;
    }
    if (e == EAGAIN)
      rc = dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                    "the driver on %s accepted no connection within %d ms", path, c->timeout_ms);
    else if (e == ENOENT || e == ECONNREFUSED)
      rc = dk__fail(kIOReturnNotFound, DK_CONSTRAINT_CONNECTION, "no driver listens on %s: %s", path, strerror(e));
    else if (e == EACCES || e == EPERM)   /* the file system, before any driver was asked */
      rc = dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_PEER,
                    "%s cannot be reached by uid %u: %s (the socket's mode, or a directory above it that this "
                    "user may not search)", path, (unsigned)geteuid(), strerror(e));
    else
      rc = dk__fail(kIOReturnIPCError, DK_CONSTRAINT_CONNECTION, "connecting to %s failed: %s", path, strerror(e));
    goto fail;
  }
  int fl = dk__fcntl(c->fd, F_GETFL, 0);              /* the library's thread reads blocking */
  if (fl < 0 || dk__fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    rc = dk__fail(kIOReturnIPCError, DK_CONSTRAINT_CONNECTION, "fcntl: %s", strerror(errno));
    goto fail;
  }
  /* the driver's first word: WELCOME, or a refusal */
  struct pollfd pf = { .fd = c->fd, .events = POLLIN };
  int r;
  do r = dk__poll(&pf, 1, c->timeout_ms); while (r < 0 && errno == EINTR);
  if (r <= 0) {
    rc = dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                  "the driver on %s did not answer within %d ms", path, c->timeout_ms);
    goto fail;
  }
  dk_msg m;
  char buf[sizeof m + 1], why[160];
  int fd, nfds, flags;
  ssize_t n = dk__share_recv(c->fd, buf, sizeof buf, 0, &fd, &nfds, &flags);
  if (fd >= 0) dk__close(fd);
  if (n < 0 && errno == EBADMSG) {
    rc = dk__fail(kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "the driver's first message is an empty record");
    goto fail;
  }
  if (n <= 0) {
    rc = dk__fail(kIOReturnNotPermitted, DK_CONSTRAINT_PEER, "the driver on %s closed the connection at once", path);
    goto fail;
  }
  if (dk__proto_check(buf, (size_t)n, nfds, DK_PROTO_TO_CLIENT, c->page, why, sizeof why) != 0) {
    rc = dk__fail(kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "the driver's first message: %s", why);
    goto fail;
  }
  memcpy(&m, buf, (size_t)n);
  if (m.hdr.type == DK_MSG_RESULT) {
    rc = dk__fail(m.u.result.code ? m.u.result.code : kIOReturnNotPermitted, DK_CONSTRAINT_PEER,
                  "the driver refused this process: %s", m.u.result.text);
    goto fail;
  }
  if (m.hdr.type != DK_MSG_WELCOME) {
    rc = dk__fail(kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "the driver's first message has type %u",
                  m.hdr.type);
    goto fail;
  }
  c->access = (dk_access)m.u.welcome.access;
  c->connected = true;
  int err = dk__thread_create(&c->thread, client_main, c);
  if (err) {
    rc = dk__fail(kIOReturnNoResources, DK_CONSTRAINT_RESOURCE, "the connection's thread: %s", strerror(err));
    goto fail;
  }
  *out = c;
  return kIOReturnSuccess;
fail:
  client_free(c);
  return rc;
}

/* Send a request and wait for its answer (RESULT, or MAP for a map request). */
static IOReturn request(dk_client *c, dk_msg *m, waiter *w)
{
  memset(w, 0, sizeof *w);
  pthread_mutex_lock(&c->lock);
  if (!c->connected) {
    pthread_mutex_unlock(&c->lock);
    return dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "the driver is gone: %s", c->gone_reason);
  }
  if (++c->seq == 0) ++c->seq;
  w->seq = m->hdr.seq = c->seq;
  w->next = c->waiters;
  c->waiters = w;
  pthread_mutex_unlock(&c->lock);
  IOReturn rc = kIOReturnSuccess;
  if (dk__share_send(c->fd, m, -1, c->timeout_ms) != 0) {
    int e = errno;
    if (e == EPIPE || e == ECONNRESET || e == ENOTCONN)          /* the driver is gone */
      rc = dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "the driver is gone: %s", strerror(e));
    else if (e == ETIMEDOUT)
      rc = dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                    "the driver took no request within %d ms", c->timeout_ms);
    else
      rc = dk__fail(kIOReturnIPCError, DK_CONSTRAINT_CONNECTION, "sending to the driver failed: %s", strerror(e));
  }
  struct timespec until = dk__share_deadline(c->timeout_ms);
  pthread_mutex_lock(&c->lock);
  while (rc == kIOReturnSuccess && !w->done && c->connected)
    if (pthread_cond_timedwait(&c->cond, &c->lock, &until) == ETIMEDOUT) break;
  for (waiter **pp = &c->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) { *pp = w->next; break; }
  bool connected = c->connected;
  pthread_mutex_unlock(&c->lock);
  if (rc != kIOReturnSuccess) return rc;
  if (!w->done)
    return connected ? dk__fail(kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION,
                                "the driver did not answer within %d ms", c->timeout_ms)
                     : dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "the driver went away: %s",
                                c->gone_reason);
  if (w->code != kIOReturnSuccess)
    return dk__fail(w->code, w->kind, "the driver: %s", w->text);
  return kIOReturnSuccess;
}

static dk_client *live(dk_client *c) { return c && c->fd >= 0 ? c : NULL; }

IOReturn dk_client_map_memory(dk_client *client, uint32_t type, IOOptionBits options,
                              mach_vm_address_t *address, mach_vm_size_t *length)
{
  dk__enter("dk_client_map_memory");
  dk_client *c = live(client);
  if (address) *address = 0;
  if (length) *length = 0;
  if (!c || !address) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a connection and an address pointer are needed");
  dk_msg m;
  dk__proto_init(&m, DK_MSG_MAP_REQ, 0);
  m.u.map_req.type = type;
  m.u.map_req.options = options;
  waiter w;
  IOReturn rc = request(c, &m, &w);
  if (rc != kIOReturnSuccess) return rc;
  if (!w.mapping.id) return dk__fail(kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "the driver answered without a mapping");
  *address = w.mapping.address;
  if (length) *length = w.mapping.length;
  /* the type is this end's word for it */
  pthread_mutex_lock(&c->lock);
  for (cmap *cm = c->maps; cm; cm = cm->next)
    if (cm->m.id == w.mapping.id) cm->m.type = type;
  pthread_mutex_unlock(&c->lock);
  return kIOReturnSuccess;
}

IOReturn dk_client_unmap_memory(dk_client *client, mach_vm_address_t address)
{
  dk__enter("dk_client_unmap_memory");
  dk_client *c = live(client);
  if (!c) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "not a connection");
  pthread_mutex_lock(&c->lock);
  cmap *m = unlink_map(c, by_address, address);
  pthread_mutex_unlock(&c->lock);
  if (!m)
    return dk__fail(kIOReturnNotFound, DK_CONSTRAINT_ARGUMENT, "no mapping of this connection starts at 0x%llx",
                    (unsigned long long)address);
  dk__munmap(m->base, m->span);
  uint64_t id = m->m.id;
  dk__free(m);
  dk_msg req;
  dk__proto_init(&req, DK_MSG_UNMAP_REQ, 0);
  req.u.id.id = id;
  waiter w;
  IOReturn rc = request(c, &req, &w);
  /* with the driver gone there is nobody to tell: the local unmap is all there is */
  if (rc == kIOReturnNotAttached) {
    dk__enter("dk_client_unmap_memory");
    return kIOReturnSuccess;
  }
  return rc;
}

IOReturn dk_client_next_mapping(dk_client *client, int timeout_ms, dk_client_mapping *mapping)
{
  dk__enter("dk_client_next_mapping");
  dk_client *c = live(client);
  if (!c || !mapping) return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT, "a connection and an out pointer are needed");
  struct timespec until = dk__share_deadline(timeout_ms < 0 ? 0 : timeout_ms);
  pthread_mutex_lock(&c->lock);
  for (;;) {
    cmap *oldest = NULL;
    for (cmap *m = c->maps; m; m = m->next)          /* newest first: the last match is the oldest */
      if (!m->announced && m->m.pushed) oldest = m;
    if (oldest) {
      oldest->announced = true;
      *mapping = oldest->m;
      pthread_mutex_unlock(&c->lock);
      return kIOReturnSuccess;
    }
    if (!c->connected) {
      pthread_mutex_unlock(&c->lock);
      return dk__fail(kIOReturnNotAttached, DK_CONSTRAINT_CONNECTION, "the driver is gone: %s", c->gone_reason);
    }
    int r = timeout_ms < 0 ? pthread_cond_wait(&c->cond, &c->lock) : pthread_cond_timedwait(&c->cond, &c->lock, &until);
    if (r == ETIMEDOUT) {
      pthread_mutex_unlock(&c->lock);
      return dk__fail(kIOReturnTimeout, DK_CONSTRAINT_CONNECTION, "the driver mapped nothing new within %d ms", timeout_ms);
    }
  }
}

bool dk_client_find_mapping(dk_client *client, mach_vm_address_t address, dk_client_mapping *mapping)
{
  dk_client *c = live(client);
  if (!c) return false;
  bool found = false;
  pthread_mutex_lock(&c->lock);
  for (cmap *m = c->maps; m; m = m->next)
    if (address >= m->m.address && address - m->m.address < m->m.length) {
      if (mapping) *mapping = m->m;
      found = true;
      break;
    }
  pthread_mutex_unlock(&c->lock);
  return found;
}

bool dk_client_is_connected(dk_client *client)
{
  dk_client *c = live(client);
  if (!c) return false;
  pthread_mutex_lock(&c->lock);
  bool up = c->connected;
  pthread_mutex_unlock(&c->lock);
  return up;
}

void dk_client_close(dk_client *client)
{
  dk_client *c = live(client);
  if (!c) return;
  bool own_thread = pthread_equal(pthread_self(), c->thread);
  pthread_mutex_lock(&c->lock);
  c->closing = true;
  c->free_on_exit = own_thread;
  pthread_mutex_unlock(&c->lock);
  (void)dk__shutdown(c->fd, SHUT_RDWR);     /* the thread's read returns 0 */
  if (own_thread) {
    /* called from a callback: the thread frees everything once the callback returns */
    pthread_detach(pthread_self());
    return;
  }
  dk__thread_join(c->thread);
  client_free(c);
}
