/* tests/test_server.c: the driver side of sharing (src/share/server.c) against a client this
 * test plays by hand on the socket: a request with options a client may not ask for, a
 * mapping the client answers with a failure (the push gets a mapping error, never the
 * client's own word), a client that hangs up while a push waits for it; and dk_server_create
 * with each of its system calls failing in turn (the Nth, once), a path that is no socket, and
 * nothing left behind (descriptors, heap blocks, the socket file). Needs no privilege. */
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

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  (void)dk_capabilities();   /* made once: before any baseline */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(server_refuses_bad_request_options),
    cmocka_unit_test(server_push_answered_with_failure),
    cmocka_unit_test(server_push_calls_fail),
    cmocka_unit_test(server_create_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
