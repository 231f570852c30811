/* tests/test_server.c: the driver side of sharing (src/share/server.c) against a client this
 * test plays by hand on the socket: a request with options a client may not ask for, a
 * mapping the client answers with a failure (the push gets a mapping error, never the
 * client's own word), a client that hangs up while a push waits for it; and dk_server_create
 * with each of its system calls failing in turn (the Nth, once), a path that is no socket, and
 * nothing left behind (descriptors, heap blocks, the socket file); its refusals (bind's errno,
 * a stale file's probe that cannot tell, the path no longer its socket). Records that find the
 * client's socket full, scripted by swapping sendmsg (and malloc, fcntl, poll) in the prim
 * table: queued in order, retried, failing to queue. Clients left waiting for accept when the
 * server goes; two threads in dk_server_accept. Needs no privilege. */
#include "dk_test.h"
#include "prim/prim.h"
#include "share/proto.h"

#include <dmakit/dmakit.h>
#include <dmakit/share.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#define WAIT_MS 10000

static char g_dir[64], g_path[108];

static void paths(void)
{
  snprintf(g_dir, sizeof g_dir, "/tmp/dk-server.XXXXXX");
  assert_non_null(mkdtemp(g_dir));
  snprintf(g_path, sizeof g_path, "%s/driver.sock", g_dir);
}

static void paths_gone(void)
{
  unlink(g_path);
  rmdir(g_dir);
}

/* A raw client: connected, its WELCOME read. */
static int raw_client(void)
{
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  dk_msg m;
  struct pollfd p = { .fd = fd, .events = POLLIN };
  assert_int_equal(poll(&p, 1, WAIT_MS), 1);
  assert_true(recv(fd, &m, sizeof m, 0) > 0);
  assert_int_equal(m.hdr.type, DK_MSG_WELCOME);
  return fd;
}

/* The next record; its descriptor (if any) closed. false when nothing came within ms. */
static bool raw_next(int fd, dk_msg *m, int ms)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  if (poll(&p, 1, ms) != 1) return false;
  union { struct cmsghdr h; char b[CMSG_SPACE(4 * sizeof(int))]; } u;
  struct iovec io = { m, sizeof *m };
  struct msghdr mh = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b };
  ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  if (n <= 0) return false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) close(((int *)CMSG_DATA(c))[k]);
  return true;
}

/* A server on a fresh path with policy `pol`, a raw client connected to it, and its task. */
static dk_server *serve_one(const dk_server_policy *pol, int *fd, task_t *t)
{
  paths();
  dk_server *s = NULL;
  assert_int_equal(dk_server_create(g_path, pol, &s), kIOReturnSuccess);
  *fd = raw_client();
  *t = NULL;
  assert_int_equal(dk_server_accept(s, WAIT_MS, t), kIOReturnSuccess);
  return s;
}

static IOBufferMemoryDescriptor *g_mem;

static IOReturn memory_for_type(void *ctx, task_t client, uint32_t type, IOOptionBits *options, IOMemoryDescriptor **memory)
{
  (void)ctx;
  (void)client;
  (void)type;
  *options = 0;
  OSObject_retain(g_mem);
  *memory = (IOMemoryDescriptor *)g_mem;
  return kIOReturnSuccess;
}

/* A request with an option a client may not ask for is refused with BadArgument. */
static void server_refuses_bad_request_options(void **state)
{
  (void)state;
  g_mem = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared, 4096, 0);
  assert_non_null(g_mem);
  dk_server_policy pol = { .memory_for_type = memory_for_type, .timeout_ms = WAIT_MS };
  int fd;
  task_t t;
  dk_server *s = serve_one(&pol, &fd, &t);
  dk_task_retain(t);   /* a second reference, given back below */
  dk_msg m;
  dk__proto_init(&m, DK_MSG_MAP_REQ, 1);
  m.u.map_req.type = 1;
  m.u.map_req.options = kIOMapAnywhere | kIOMapUnique;
  assert_true(send(fd, &m, m.hdr.size, 0) > 0);
  dk_msg r;
  assert_true(raw_next(fd, &r, WAIT_MS));
  assert_int_equal(r.hdr.type, DK_MSG_RESULT);
  assert_int_equal(r.hdr.seq, 1);
  assert_int_equal(r.u.result.code, kIOReturnBadArgument);
  assert_non_null(strstr(r.u.result.text, "only kIOMapAnywhere, a cache mode, kIOMapReadOnly and kIOMapPrefault"));
  assert_true(dk_task_is_connected(t));   /* a refused request does not cut the client off */
  dk_task_release(t);
  dk_task_release(t);
  close(fd);
  dk_server_destroy(s);
  OSObject_release(g_mem);
  paths_gone();
}

typedef struct push { IOMemoryDescriptor *md; task_t task; IOMemoryMap *map; IOReturn rc; char text[sizeof(((dk_failure *)0)->text)]; } push;

static void *push_main(void *arg)
{
  push *p = arg;
  p->map = IOMemoryDescriptor_createMappingInTask(p->md, p->task, 0, kIOMapAnywhere, 0, 0);
  p->rc = p->map ? kIOReturnSuccess : dk_last_failure()->code;
  snprintf(p->text, sizeof p->text, "%s", dk_last_failure()->text);
  return NULL;
}

/* A push the client answers with a failure: the driver's call fails with a mapping error (the
 * client's NoMemory stays NoMemory, any other word becomes VMError), the client stays
 * connected; a client that hangs up while a push waits makes it NotAttached. */
static void server_push_answered_with_failure(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared, 4096, 0);
  assert_non_null(b);
  dk_server_policy pol = { .timeout_ms = WAIT_MS };
  int fd;
  task_t t;
  dk_server *s = serve_one(&pol, &fd, &t);
  static const struct { int32_t answer; IOReturn want; } cases[] = {
    { (int32_t)kIOReturnNoMemory, kIOReturnNoMemory },
    { (int32_t)kIOReturnIPCError, kIOReturnVMError },
    { 0, kIOReturnNotAttached },   /* the client hangs up instead of answering */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    push p = { .md = (IOMemoryDescriptor *)b, .task = t };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, push_main, &p), 0);
    dk_msg m;
    assert_true(raw_next(fd, &m, WAIT_MS));
    assert_int_equal(m.hdr.type, DK_MSG_MAP);
    if (cases[i].answer) {
      dk_msg a;
      dk__proto_init(&a, DK_MSG_MAP_ACK, 0);
      a.u.map_ack.id = m.u.map.id;
      a.u.map_ack.code = cases[i].answer;
      assert_true(send(fd, &a, a.hdr.size, 0) > 0);
    } else {
      close(fd);
      fd = -1;
    }
    pthread_join(th, NULL);
    if (p.rc != cases[i].want)
      fail_msg("client answer 0x%x: the push gave %s (%s), expected %s", (unsigned)cases[i].answer, dk_ioreturn_name(p.rc),
               p.text, dk_ioreturn_name(cases[i].want));
    assert_null(p.map);
    if (cases[i].answer) assert_true(dk_task_is_connected(t));
  }
  assert_true(DKT_WAIT_UNTIL(!dk_task_is_connected(t), WAIT_MS));
  dk_task_release(t);
  dk_server_destroy(s);
  OSObject_release(b);
  paths_gone();
}

static dk_access admit_read_only(void *ctx, const dk_peer *peer)
{
  (void)ctx;
  (void)peer;
  return DK_ACCESS_READ;
}

/* A push whose own calls fail (the mapping record's memory, sealing the memfd, its mode, the
 * read-only file description, the send) fails with the reason, sends nothing, leaves no
 * descriptor or heap block behind and keeps the client connected; a send that finds the
 * client gone (EPIPE) is NotAttached and cuts it off. */
static void server_push_calls_fail(void **state)
{
  (void)state;
  dk_server_policy pol = { .admit = admit_read_only, .timeout_ms = WAIT_MS };
  int fd;
  task_t t;
  dk_server *s = serve_one(&pol, &fd, &t);
  static const struct { dk_prim_call call; unsigned long nth; int err; IOReturn want; const char *needle; } cases[] = {
    { DK_PRIM_CALLOC, 2, 0, kIOReturnNoMemory, "mapping record" },   /* the 1st: the map object */
    { DK_PRIM_FCNTL, 2, 0, kIOReturnNotPermitted, "sealed" },
    { DK_PRIM_FCHMOD, 1, 0, kIOReturnNotPermitted, "chmod" },
    { DK_PRIM_OPEN, 1, 0, kIOReturnNoResources, "read-only file description" },
    { DK_PRIM_SENDMSG, 1, EIO, kIOReturnNoResources, "on this side" },
    { DK_PRIM_SENDMSG, 1, EPIPE, kIOReturnNotAttached, "sending the mapping" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared, 4096, 0);
    assert_non_null(b);
    dk_prim_counters c0 = dk__prim_counters();
    dk__fault_arm(cases[i].nth, 0, DK_PRIM_BIT(cases[i].call), cases[i].err);
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)b, t, 0, kIOMapAnywhere | kIOMapReadOnly, 0, 0);
    int fired = dk__fault_fired();
    dk__fault_disarm();
    if (m || !fired || dk_last_failure()->code != cases[i].want || !strstr(dk_last_failure()->text, cases[i].needle))
      fail_msg("%s failing (errno %d): map %p, fired %d, %s \"%s\"; expected %s with \"%s\"", dk__prim_call_name(cases[i].call),
               cases[i].err, (void *)m, fired, dk_ioreturn_name(dk_last_failure()->code), dk_last_failure()->text,
               dk_ioreturn_name(cases[i].want), cases[i].needle);
    dk_msg msg;
    assert_false(raw_next(fd, &msg, 50));          /* nothing reached the client */
    dk_prim_counters c1 = dk__prim_counters();
    if (c1.fds != c0.fds || c1.heap_blocks != c0.heap_blocks)
      fail_msg("%s failing: left fds %+ld, heap %+ld", dk__prim_call_name(cases[i].call), c1.fds - c0.fds,
               c1.heap_blocks - c0.heap_blocks);
    if (cases[i].err != EPIPE) assert_true(dk_task_is_connected(t));
    else assert_true(DKT_WAIT_UNTIL(!dk_task_is_connected(t), WAIT_MS));
    OSObject_release(b);
  }
  close(fd);
  dk_task_release(t);
  dk_server_destroy(s);
  paths_gone();
}

/* dk_server_create: a path that is no socket; each system call failing in turn. */
static void server_create_failures(void **state)
{
  (void)state;
  paths();
  dk_server *s = (dk_server *)&s;
  int f = open(g_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  assert_true(f >= 0);
  close(f);
  assert_int_equal(dk_server_create(g_path, NULL, &s), kIOReturnExclusiveAccess);
  assert_null(s);
  assert_non_null(strstr(dk_last_failure()->text, "not a socket"));
  unlink(g_path);

  /* a stale socket file (nobody listens) is replaced, so the probe's calls run too */
  dk_prim_counters c0 = dk__prim_counters();
  unsigned failed = 0;
  for (int stale = 0; stale < 2; stale++)
    for (unsigned long n = 1; n < 100; n++) {
      if (stale) {
        int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
        assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
        close(l);   /* the file stays, nobody listens */
      }
      s = NULL;
      dk__fault_arm(n, 0, 0, 0);
      IOReturn rc = dk_server_create(g_path, NULL, &s);
      int fired = dk__fault_fired();
      dk__fault_disarm();
      if (rc == kIOReturnSuccess) {
        dk_server_destroy(s);
      } else {
        failed++;
        assert_null(s);
        if (!dk_last_failure()->text[0]) fail_msg("call %lu: %s without a reason", n, dk_ioreturn_name(rc));
        struct stat st;
        if (stat(g_path, &st) == 0 && !stale) fail_msg("call %lu (%s): the socket file was left behind", n, dk_ioreturn_name(rc));
      }
      unlink(g_path);
      dk_prim_counters c1 = dk__prim_counters();
      if (c1.fds != c0.fds || c1.heap_blocks != c0.heap_blocks)
        fail_msg("call %lu: left fds %+ld, heap %+ld", n, c1.fds - c0.fds, c1.heap_blocks - c0.heap_blocks);
      if (!fired) break;
    }
  assert_true(failed >= 6);   /* socket, bind, listen, pipe, the thread, and the probe's socket */
  paths_gone();
}

/* ---- the server's side of a socket with no room ------------------------------------------ */

/* Records the server sends its clients (the socket accepted from g_path) meet, in turn, the
 * errnos of q_script (0: sent for real); after the script, every one is sent. A scripted
 * EAGAIN with q_nomem set makes the same thread's next heap block fail (the queued record's). */
static _Atomic int q_script[4], q_n;
static _Atomic int q_pos;
static _Atomic bool q_nomem;
static _Thread_local bool q_fail_malloc;
static _Atomic bool q_no_dup;

static bool to_client(int fd)
{
  struct sockaddr_un a;
  socklen_t len = sizeof a;
  return getsockname(fd, (struct sockaddr *)&a, &len) == 0 && len > offsetof(struct sockaddr_un, sun_path) &&
         strcmp(a.sun_path, g_path) == 0;
}

static ssize_t q_sendmsg(int fd, const struct msghdr *mh, int flags)
{
  if (to_client(fd)) {
    int i = atomic_fetch_add(&q_pos, 1);
    if (i < q_n && q_script[i]) {
      if (q_script[i] == EAGAIN && q_nomem) q_fail_malloc = true;
      errno = q_script[i];
      return -1;
    }
  }
  return dk__prim_default.sendmsg(fd, mh, flags);
}

static void *q_malloc(size_t n)
{
  if (q_fail_malloc) {
    q_fail_malloc = false;
    errno = ENOMEM;
    return NULL;
  }
  return dk__prim_default.malloc(n);
}

static int q_fcntl(int fd, int cmd, int arg)
{
  if (cmd == F_DUPFD_CLOEXEC && q_no_dup) {
    errno = EMFILE;
    return -1;
  }
  return dk__prim_default.fcntl(fd, cmd, arg);
}

/* The server thread's polls (the only ones watching 2 or more descriptors). A client that
 * connects wakes the thread: the poll it makes after admitting it comes after it let go of
 * every other connection (a send to one in progress has ended). Returns that client. */
static _Atomic unsigned q_polls;
static int q_poll(struct pollfd *fds, unsigned long n, int timeout)
{
  if (n >= 2) atomic_fetch_add(&q_polls, 1);
  return dk__prim_default.poll(fds, n, timeout);
}
static int q_server_idle(dk_server *s)
{
  unsigned n = atomic_load(&q_polls);
  int other = raw_client();
  assert_true(DKT_WAIT_UNTIL(atomic_load(&q_polls) > n, WAIT_MS));
  task_t t = NULL;                               /* accepted: the next accept is the next client's */
  assert_int_equal(dk_server_accept(s, WAIT_MS, &t), kIOReturnSuccess);
  dk_task_release(t);
  return other;
}

/* The wrappers go in before the server exists and out after it is gone (the table is read
 * without locks); while they are in, q_start and q_stop change only the script. */
static void q_install(void)
{
  dk__prim.sendmsg = q_sendmsg;
  dk__prim.malloc = q_malloc;
  dk__prim.fcntl = q_fcntl;
  dk__prim.poll = q_poll;
}

static void q_uninstall(void)
{
  dk__prim.sendmsg = dk__prim_default.sendmsg;
  dk__prim.malloc = dk__prim_default.malloc;
  dk__prim.fcntl = dk__prim_default.fcntl;
  dk__prim.poll = dk__prim_default.poll;
}

static void q_start(int a, int b, bool nomem)
{
  q_n = 0;
  q_script[0] = a;
  q_script[1] = b;
  atomic_store(&q_pos, 0);
  q_nomem = nomem;
  q_n = 2;
}

static void q_stop(void)
{
  q_n = 0;
  q_nomem = false;
  q_no_dup = false;
}

static void bad_request(int fd, uint32_t seq)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_MAP_REQ, seq);
  m.u.map_req.options = kIOMapUnique;   /* refused: an answer comes for each */
  assert_true(send(fd, &m, m.hdr.size, 0) > 0);
}

/* Answers that find the client's socket full wait in order and leave when it has room; a send
 * that fails on the driver's own side (ENOBUFS) is tried again. A client gone while records
 * wait (EPIPE) is cut off. A record that cannot be queued (no memory, no duplicate of its
 * descriptor) fails a push with NoResources and leaves the client connected, and cuts off a
 * client whose answer it was (told why, in a BYE). Nothing leaks. */
static void server_queue_when_socket_full(void **state)
{
  (void)state;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared, 4096, 0);
  assert_non_null(b);
  dk_server_policy pol = { .timeout_ms = WAIT_MS };
  int fd;
  task_t t;
  q_install();
  dk_server *s = serve_one(&pol, &fd, &t);

  /* answers queued, the first flush failing on this side, then all leave in order */
  q_start(EAGAIN, ENOBUFS, false);
  for (uint32_t seq = 1; seq <= 3; seq++) bad_request(fd, seq);
  for (uint32_t seq = 1; seq <= 3; seq++) {
    dk_msg r;
    assert_true(raw_next(fd, &r, WAIT_MS));
    assert_int_equal(r.hdr.type, DK_MSG_RESULT);
    assert_int_equal(r.hdr.seq, seq);
    assert_int_equal(r.u.result.code, kIOReturnBadArgument);
  }
  assert_true(atomic_load(&q_pos) >= 3);
  dk_server_stats st = { .size = sizeof st };
  assert_int_equal(dk_server_get_stats(s, &st), kIOReturnSuccess);
  assert_true(st.queued_max >= 1);
  assert_int_equal(st.queued, 0);
  assert_true(dk_task_is_connected(t));

  /* a push while the socket is full: its queued record cannot be made. The server thread
   * has let go of the connection (else the push would queue behind its send) */
  int others[2];
  for (int why = 0; why < 2; why++) {
    q_start(0, 0, false);
    others[why] = q_server_idle(s);
    dk_prim_counters c0 = dk__prim_counters();
    q_start(EAGAIN, 0, why == 0);
    q_no_dup = why == 1;
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask((IOMemoryDescriptor *)b, t, 0, kIOMapAnywhere, 0, 0);
    q_stop();
    if (m || dk_last_failure()->code != kIOReturnNoResources || !strstr(dk_last_failure()->text, "on this side") ||
        !strstr(dk_last_failure()->text, why == 0 ? strerror(ENOMEM) : strerror(EMFILE)))
      fail_msg("push, %s: map %p, %s \"%s\"", why == 0 ? "no memory" : "no duplicate", (void *)m,
               dk_ioreturn_name(dk_last_failure()->code), dk_last_failure()->text);
    dk_msg r;
    assert_false(raw_next(fd, &r, 50));          /* nothing reached the client */
    assert_true(dk_task_is_connected(t));
    dk_prim_counters c1 = dk__prim_counters();
    if (c1.fds != c0.fds || c1.heap_blocks != c0.heap_blocks)
      fail_msg("a record not queued left fds %+ld, heap %+ld", c1.fds - c0.fds, c1.heap_blocks - c0.heap_blocks);
  }

  /* an answer that cannot be queued: the client is cut off, and told */
  q_start(EAGAIN, 0, true);
  bad_request(fd, 9);
  dk_msg r;
  assert_true(raw_next(fd, &r, WAIT_MS));
  q_stop();
  assert_int_equal(r.hdr.type, DK_MSG_BYE);
  assert_int_equal(r.u.bye.code, kIOReturnNoResources);
  assert_non_null(strstr(r.u.bye.text, "could not queue a message"));
  assert_true(DKT_WAIT_UNTIL(!dk_task_is_connected(t), WAIT_MS));
  close(fd);
  dk_task_release(t);

  /* a client found gone (EPIPE) while its answer waited: cut off, no BYE */
  fd = raw_client();
  t = NULL;
  assert_int_equal(dk_server_accept(s, WAIT_MS, &t), kIOReturnSuccess);
  q_start(EAGAIN, EPIPE, false);
  bad_request(fd, 1);
  if (!DKT_WAIT_UNTIL(!dk_task_is_connected(t), WAIT_MS)) {
    dk_server_get_stats(s, &st);
    fail_msg("EPIPE while an answer waited: still connected (%d sends seen, %llu queued)", atomic_load(&q_pos),
             (unsigned long long)st.queued);
  }
  q_stop();
  assert_false(raw_next(fd, &r, 50));
  assert_int_equal(dk_server_get_stats(s, &st), kIOReturnSuccess);
  assert_true(DKT_WAIT_UNTIL((dk_server_get_stats(s, &st), st.disconnected == 2), WAIT_MS));
  assert_int_equal(st.queued, 0);
  close(fd);
  dk_task_release(t);
  dk_server_destroy(s);                          /* the two clients never accepted go with it */
  q_uninstall();
  for (int i = 0; i < 2; i++) close(others[i]);
  OSObject_release(b);
  paths_gone();
}

/* Clients admitted but never accepted: at most 64 wait (the 65th is refused even below
 * max_clients), and dk_server_destroy tells each and releases them. */
static void server_destroy_with_clients_waiting(void **state)
{
  (void)state;
  paths();
  dk_prim_counters c0 = dk__prim_counters();
  dk_server_policy pol = { .max_clients = 100, .timeout_ms = WAIT_MS };
  dk_server *s = NULL;
  assert_int_equal(dk_server_create(g_path, &pol, &s), kIOReturnSuccess);
  int fds[64];
  for (int i = 0; i < 64; i++) fds[i] = raw_client();
  int extra = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
  assert_int_equal(connect(extra, (struct sockaddr *)&a, sizeof a), 0);
  dk_msg m;
  assert_true(raw_next(extra, &m, WAIT_MS));
  assert_int_equal(m.hdr.type, DK_MSG_RESULT);
  assert_int_equal(m.u.result.code, kIOReturnNoResources);
  assert_non_null(strstr(m.u.result.text, "64 clients wait for the driver to accept them"));   /* not max_clients */
  close(extra);
  assert_int_equal(dk_server_client_count(s), 64);
  /* the wake-up's write failing once is tried again (else the thread would sleep on) */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_WRITE), EIO);
  dk_server_destroy(s);
  int fired = dk__fault_fired();
  dk__fault_disarm();
  assert_true(fired);
  for (int i = 0; i < 64; i++) {
    assert_true(raw_next(fds[i], &m, WAIT_MS));
    assert_int_equal(m.hdr.type, DK_MSG_BYE);
    assert_non_null(strstr(m.u.bye.text, "shutting down"));
    close(fds[i]);
  }
  dk_prim_counters c1 = dk__prim_counters();
  if (c1.fds != c0.fds || c1.heap_blocks != c0.heap_blocks)
    fail_msg("a destroyed server with waiting clients left fds %+ld, heap %+ld", c1.fds - c0.fds, c1.heap_blocks - c0.heap_blocks);
  paths_gone();
}

typedef struct waiter_arg { dk_server *s; task_t task; IOReturn rc; _Atomic int *done; } waiter_arg;

static void *accept_main(void *arg)
{
  waiter_arg *w = arg;
  w->rc = dk_server_accept(w->s, -1, &w->task);
  atomic_fetch_add(w->done, 1);
  return NULL;
}

/* Two threads wait in dk_server_accept without a deadline: one gets the client (admitted
 * after an interrupted accept), the other returns NotAttached when the server is destroyed.
 * Tasks that are not clients: no peer, never connected, disconnecting them cuts nobody. */
static void server_two_accepting_threads(void **state)
{
  (void)state;
  paths();
  dk_server *s = NULL;
  assert_int_equal(dk_server_create(g_path, NULL, &s), kIOReturnSuccess);
  _Atomic int done = 0;
  waiter_arg w[2] = { { s, NULL, 0, &done }, { s, NULL, 0, &done } };
  pthread_t th[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, accept_main, &w[i]), 0);
  struct timespec pause = { 0, 100 * 1000000L };
  nanosleep(&pause, NULL);
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_ACCEPT), EINTR);
  int fd = raw_client();
  assert_true(dk__fault_fired());
  dk__fault_disarm();
  assert_true(DKT_WAIT_UNTIL(atomic_load(&done) == 1, WAIT_MS));
  task_t t = w[0].task ? w[0].task : w[1].task;
  assert_non_null(t);
  dk_peer peer;
  dk_access access;
  assert_false(dk_task_get_peer(kernel_task, &peer, &access));
  assert_false(dk_task_is_connected(kernel_task));
  dk_task_disconnect(kernel_task);
  dk_task_disconnect(NULL);
  assert_true(dk_task_get_peer(t, NULL, NULL));
  assert_true(dk_task_get_peer(t, &peer, &access));
  assert_int_equal(peer.pid, getpid());
  assert_int_equal(access, DK_ACCESS_READ_WRITE);
  assert_true(dk_task_is_connected(t));
  dk_server_destroy(s);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  assert_true((w[0].rc == kIOReturnSuccess && w[1].rc == kIOReturnNotAttached) ||
              (w[1].rc == kIOReturnSuccess && w[0].rc == kIOReturnNotAttached));
  assert_false(dk_task_is_connected(t));
  dk_task_release(t);
  close(fd);
  paths_gone();
}

static int l_call, l_mode;
static int l_lstat(const char *path, struct stat *st)
{
  int r = dk__prim_default.lstat(path, st);
  if (++l_call == 2 && r == 0) {   /* the 1st: is the path taken; the 2nd: after bind */
    if (l_mode == 1) st->st_mode = (st->st_mode & ~(mode_t)S_IFMT) | S_IFREG;
    else st->st_uid = geteuid() + 1;
  }
  return r;
}

/* dk_server_create refusing: no out pointer; bind failing as if the address were in use
 * (ExclusiveAccess) or not permitted; a stale socket file whose probe cannot tell whether it
 * is in use; the path no longer the socket it just bound (another file, another owner). */
static void server_create_refusals(void **state)
{
  (void)state;
  paths();
  dk_prim_counters c0 = dk__prim_counters();
  assert_int_equal(dk_server_create(g_path, NULL, NULL), kIOReturnBadArgument);
  static const struct { int err; IOReturn want; } binds[] = {
    { EADDRINUSE, kIOReturnExclusiveAccess },
    { EACCES, kIOReturnNotPermitted },
  };
  for (size_t i = 0; i < sizeof binds / sizeof binds[0]; i++) {
    dk_server *s = (dk_server *)&s;
    dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_BIND), binds[i].err);
    IOReturn rc = dk_server_create(g_path, NULL, &s);
    dk__fault_disarm();
    assert_int_equal(rc, binds[i].want);
    assert_null(s);
    assert_non_null(strstr(dk_last_failure()->text, strerror(binds[i].err)));
  }
  /* a stale socket file, and connect of the probe failing with EACCES */
  int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  close(l);
  dk_server *s = (dk_server *)&s;
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_CONNECT), EACCES);
  IOReturn rc = dk_server_create(g_path, NULL, &s);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnExclusiveAccess);
  assert_null(s);
  assert_non_null(strstr(dk_last_failure()->text, "cannot tell whether it is in use"));
  struct stat st;
  assert_int_equal(stat(g_path, &st), 0);       /* not replaced */
  unlink(g_path);
  for (l_mode = 1; l_mode <= 2; l_mode++) {
    l_call = 0;
    dk__prim.lstat = l_lstat;
    rc = dk_server_create(g_path, NULL, &s);
    dk__prim.lstat = dk__prim_default.lstat;
    assert_int_equal(rc, kIOReturnNotPermitted);
    assert_null(s);
    assert_non_null(strstr(dk_last_failure()->text, "it is no longer the socket just bound"));
    assert_int_not_equal(stat(g_path, &st), 0);  /* the file it bound is removed */
  }
  dk_prim_counters c1 = dk__prim_counters();
  if (c1.fds != c0.fds || c1.heap_blocks != c0.heap_blocks)
    fail_msg("refused creates left fds %+ld, heap %+ld", c1.fds - c0.fds, c1.heap_blocks - c0.heap_blocks);
  paths_gone();
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  (void)dk_capabilities();   /* made once: before any baseline */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(server_refuses_bad_request_options),
    cmocka_unit_test(server_push_answered_with_failure),
    cmocka_unit_test(server_push_calls_fail),
    cmocka_unit_test(server_create_failures),
    cmocka_unit_test(server_queue_when_socket_full),
    cmocka_unit_test(server_destroy_with_clients_waiting),
    cmocka_unit_test(server_two_accepting_threads),
    cmocka_unit_test(server_create_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
