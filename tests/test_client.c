/* tests/test_client.c: the client library (src/share/client.c) against a driver this test
 * plays by hand on a SOCK_SEQPACKET socket, so that it can misbehave in ways dmakit's own
 * server never does: answer nothing, hang up at once, send garbage or the wrong first message,
 * refuse without a code, send a mapping this process cannot map, answer a request with a
 * RESULT refusal, never answer it, or go away while a request waits. Each gives the documented
 * IOReturn with a reason, and the client's descriptors, mappings and heap blocks are back
 * where they were after dk_client_close. System calls of connecting made to fail (socket,
 * fcntl, the connection's thread, an interrupted poll) fail cleanly too. Needs no privilege. */
#include "dk_test.h"
#include "prim/prim.h"
#include "share/proto.h"
#include "share/share.h"

#include <dmakit/dmakit.h>
#include <dmakit/share.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#define PG 4096u
#define TIMEOUT_MS 10000   /* answers that come: generous, a loaded machine may be slow */
#define SHORT_MS   300     /* answers that never come */

/* ---- the hand-played driver ------------------------------------------------------------- */
typedef struct fake {
  char dir[64], path[108];
  int lfd, cfd;
  void (*script)(struct fake *);
  pthread_t thread;
  int arg;
} fake;

/* The driver's records go out through the library's own sender (its transport is tested in
 * test_proto); the driver's misbehaviour is in what it sends, not how. */
static void fake_send(int fd, const dk_msg *m, int pass_fd) { (void)dk__share_send(fd, m, pass_fd, 5000); }

/* The next record from the client, 0 when none came within ms. */
static int fake_recv(int fd, dk_msg *m, int ms)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  if (poll(&p, 1, ms) <= 0) return 0;
  ssize_t n = recv(fd, m, sizeof *m, 0);
  return n > 0;
}

static void welcome(int fd)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_WELCOME, 0);
  m.u.welcome.access = 3;
  m.u.welcome.page_size = PG;
  m.u.welcome.client_id = 1;
  fake_send(fd, &m, -1);
}

/* A MAP of a fresh 2-page memfd for request `seq` (0: pushed). */
static void send_map(int fd, uint32_t seq, uint64_t id)
{
  int mfd = memfd_create("dk-test-client", MFD_CLOEXEC);
  assert_true(mfd >= 0);
  assert_int_equal(ftruncate(mfd, 2 * PG), 0);
  dk_msg m;
  dk__proto_init(&m, DK_MSG_MAP, seq);
  m.u.map = (dk_msg_map){ .id = id, .file_offset = 0, .span = 2 * PG, .in_page = 0, .length = 2 * PG, .writable = 1,
                          .populate = (uint32_t)(id & 1) };
  fake_send(fd, &m, mfd);
  close(mfd);
}

static void *fake_main(void *arg)
{
  fake *f = arg;
  struct pollfd p = { .fd = f->lfd, .events = POLLIN };
  if (poll(&p, 1, 5000) == 1) f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
  if (f->cfd >= 0 && f->script) f->script(f);
  return NULL;
}

static void fake_start(fake *f, void (*script)(fake *), int arg)
{
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/dk-client.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/driver.sock", f->dir);
  f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  assert_true(f->lfd >= 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", f->path);
  assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(f->lfd, 4), 0);
  f->cfd = -1;
  f->script = script;
  f->arg = arg;
  assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(fake *f)
{
  shutdown(f->lfd, SHUT_RDWR);   /* wakes a driver still waiting for a client that never came */
  pthread_join(f->thread, NULL);
  if (f->cfd >= 0) close(f->cfd);
  close(f->lfd);
  unlink(f->path);
  rmdir(f->dir);
}

/* ---- scripts ------------------------------------------------------------------------------ */
static void say_nothing(fake *f) { dk_msg m; (void)fake_recv(f->cfd, &m, SHORT_MS * 3); }
static void hang_up(fake *f) { close(f->cfd); f->cfd = -1; }
static void send_garbage(fake *f) { static const char junk[64] = "not a dmakit record"; (void)send(f->cfd, junk, sizeof junk, 0); }
static void unmap_first(fake *f)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_UNMAP, 0);
  m.u.id.id = 9;
  fake_send(f->cfd, &m, -1);
}
static void empty_first(fake *f) { (void)send(f->cfd, "", 0, 0); }
static void welcome_with_fd(fake *f)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_WELCOME, 0);
  m.u.welcome.access = 3;
  m.u.welcome.page_size = PG;
  int mfd = memfd_create("dk-test-welcome", MFD_CLOEXEC);
  fake_send(f->cfd, &m, mfd);
  close(mfd);
}
/* WELCOME, then after a pause a pushed mapping (id 7) and nothing more until the client leaves. */
static void push_later(fake *f)
{
  welcome(f->cfd);
  struct timespec t = { 0, 50 * 1000000L };
  nanosleep(&t, NULL);
  send_map(f->cfd, 0, 7);
  dk_msg m;
  while (fake_recv(f->cfd, &m, 5000)) {}
}
static void refuse_without_code(fake *f)
{
  dk_msg m;
  dk__proto_init(&m, DK_MSG_RESULT, 0);
  strcpy(m.u.result.text, "not you");
  fake_send(f->cfd, &m, -1);
}

/* After WELCOME: noise the client must ignore (a bad record with a descriptor, a second
 * WELCOME), then serve requests: arg 0 answers a MAP_REQ with a MAP, 1 with a RESULT refusal,
 * 2 never answers, 3 hangs up when the request comes, 4 answers with a successful RESULT (no
 * mapping); an UNMAP_REQ gets a RESULT. Before each MAP (arg 0) a RESULT for a request nobody
 * made; before the requests an empty record, an oversized one and an UNMAP of an unknown id. */
static void serve(fake *f)
{
  welcome(f->cfd);
  int mfd = memfd_create("dk-test-noise", MFD_CLOEXEC);
  dk_msg bad;
  dk__proto_init(&bad, DK_MSG_UNMAP, 0);   /* id 0 is refused by the gate; with a descriptor too */
  fake_send(f->cfd, &bad, mfd);
  close(mfd);
  welcome(f->cfd);
  (void)send(f->cfd, "", 0, 0);                         /* an empty record */
  static const char big[sizeof(dk_msg) * 2] = "longer than any message";
  (void)send(f->cfd, big, sizeof big, 0);               /* truncated on receipt */
  dk_msg stray;
  dk__proto_init(&stray, DK_MSG_UNMAP, 0);              /* a mapping this client never had */
  stray.u.id.id = 12345;
  fake_send(f->cfd, &stray, -1);
  dk_msg m;
  uint64_t id = 100;
  while (fake_recv(f->cfd, &m, 5000)) {
    if (m.hdr.type == DK_MSG_MAP_REQ) {
      if (f->arg == 0) {
        dk_msg r;                                       /* an answer to a request nobody made */
        dk__proto_init(&r, DK_MSG_RESULT, m.hdr.seq + 1000);
        fake_send(f->cfd, &r, -1);
        send_map(f->cfd, m.hdr.seq, id++);
      } else if (f->arg == 4) {
        dk_msg r;                                       /* "success", but no mapping */
        dk__proto_init(&r, DK_MSG_RESULT, m.hdr.seq);
        fake_send(f->cfd, &r, -1);
      } else if (f->arg == 1) {
        dk_msg r;
        dk__proto_init(&r, DK_MSG_RESULT, m.hdr.seq);
        r.u.result.code = kIOReturnNotPermitted;
        r.u.result.constraint = DK_CONSTRAINT_PEER;
        strcpy(r.u.result.text, "type refused");
        fake_send(f->cfd, &r, -1);
      } else if (f->arg == 3) {
        hang_up(f);
        return;
      }
    } else if (m.hdr.type == DK_MSG_UNMAP_REQ) {
      dk_msg r;
      dk__proto_init(&r, DK_MSG_RESULT, m.hdr.seq);
      fake_send(f->cfd, &r, -1);
    }
  }
}

/* ---- checks ------------------------------------------------------------------------------- */
static dk_prim_counters base;
static void mark(void) { base = dk__prim_counters(); }

/* A driver playing `script` with `arg`, the counters marked, and a client connected to it. */
/* Connected to a fake driver running `script`. The timeout also bounds the wait for the
 * driver's welcome, an answer that does come: with a short one (for a request that is never
 * answered) a machine busy enough to keep the driver's thread off a CPU that long could miss
 * it, so the connection is tried again then. */
static dk_client *connected(fake *f, void (*script)(fake *), int arg, int timeout_ms)
{
  dk_client_options o = { .timeout_ms = timeout_ms };
  for (int attempt = 0;; attempt++) {
    fake_start(f, script, arg);
    mark();
    dk_client *c = NULL;
    IOReturn rc = dk_client_connect(f->path, &o, &c);
    if (rc == kIOReturnNotResponding && timeout_ms < TIMEOUT_MS && attempt < 5) {
      print_message("  the welcome took over %d ms: connecting again\n", timeout_ms);
      fake_stop(f);
      continue;
    }
    assert_int_equal(rc, kIOReturnSuccess);
    return c;
  }
}
static void back(const char *what)
{
  dk_prim_counters c = dk__prim_counters();
  if (c.fds != base.fds || c.map_bytes != base.map_bytes || c.heap_blocks != base.heap_blocks)
    fail_msg("%s: left fds %+ld, mapped %+ld, heap %+ld", what, c.fds - base.fds, c.map_bytes - base.map_bytes,
             c.heap_blocks - base.heap_blocks);
}

static void connect_fails(void (*script)(fake *), IOReturn want, dk_constraint_kind kind, const char *needle)
{
  fake f;
  fake_start(&f, script, 0);
  mark();
  dk_client_options o = { .timeout_ms = script == say_nothing ? SHORT_MS : TIMEOUT_MS };
  dk_client *c = (dk_client *)&c;
  IOReturn rc = dk_client_connect(f.path, &o, &c);
  const dk_failure fc = *dk_last_failure();
  fake_stop(&f);
  if (rc != want || c != NULL || fc.constraint != kind || !strstr(fc.text, needle))
    fail_msg("connect: %s (%s) \"%s\", expected %s (%s) with \"%s\"", dk_ioreturn_name(rc), dk_constraint_name(fc.constraint),
             fc.text, dk_ioreturn_name(want), dk_constraint_name(kind), needle);
  back("a failed connect");
}

static void client_bad_drivers(void **state)
{
  (void)state;
  connect_fails(say_nothing, kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION, "did not answer");
  connect_fails(hang_up, kIOReturnNotPermitted, DK_CONSTRAINT_PEER, "closed the connection at once");
  connect_fails(send_garbage, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "first message");
  connect_fails(unmap_first, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "has type 4");
  connect_fails(refuse_without_code, kIOReturnNotPermitted, DK_CONSTRAINT_PEER, "not you");
  connect_fails(empty_first, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "first message is an empty record");
  connect_fails(welcome_with_fd, kIOReturnBadMessageID, DK_CONSTRAINT_CONNECTION, "first message");
}

/* Connecting where no driver can be reached: no out pointer, no socket file, a socket file
 * nobody listens on, connect refused by the file system (EPERM), a driver whose backlog stays
 * full (EAGAIN until the deadline). */
static void client_connect_errors(void **state)
{
  (void)state;
  fake f;
  fake_start(&f, NULL, 0);
  mark();
  dk_client_options o = { .timeout_ms = SHORT_MS };
  assert_int_equal(dk_client_connect(f.path, &o, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_last_failure()->constraint, DK_CONSTRAINT_ARGUMENT);
  static const struct { int err; int forever; IOReturn want; dk_constraint_kind kind; const char *needle; } cases[] = {
    { EPERM, 0, kIOReturnNotPermitted, DK_CONSTRAINT_PEER, "cannot be reached by uid" },
    { EAGAIN, 1, kIOReturnNotResponding, DK_CONSTRAINT_CONNECTION, "accepted no connection within 300 ms" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dk_client *c = (dk_client *)&c;
    dk__fault_arm(1, cases[i].forever, DK_PRIM_BIT(DK_PRIM_CONNECT), cases[i].err);
    IOReturn rc = dk_client_connect(f.path, &o, &c);
    dk__fault_disarm();
    const dk_failure *fl = dk_last_failure();
    if (rc != cases[i].want || c != NULL || fl->constraint != cases[i].kind || !strstr(fl->text, cases[i].needle))
      fail_msg("connect failing with errno %d: %s \"%s\", expected %s with \"%s\"", cases[i].err, dk_ioreturn_name(rc),
               fl->text, dk_ioreturn_name(cases[i].want), cases[i].needle);
  }
  fake_stop(&f);
  back("refused connects");
  /* the socket file without a listener, then no file at all */
  int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  assert_true(l >= 0);
  snprintf(f.dir, sizeof f.dir, "/tmp/dk-client.XXXXXX");
  assert_non_null(mkdtemp(f.dir));
  snprintf(f.path, sizeof f.path, "%s/driver.sock", f.dir);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", f.path);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  close(l);
  for (int gone = 0; gone < 2; gone++) {
    if (gone) unlink(f.path);
    dk_client *c = (dk_client *)&c;
    assert_int_equal(dk_client_connect(f.path, &o, &c), kIOReturnNotFound);
    assert_null(c);
    assert_non_null(strstr(dk_last_failure()->text, "no driver listens on"));
    assert_non_null(strstr(dk_last_failure()->text, gone ? "No such file" : "refused"));
  }
  rmdir(f.dir);
  back("connects to nobody");
}

static void client_connect_calls_fail(void **state)
{
  (void)state;
  static const struct { dk_prim_call call; int err; IOReturn want; } cases[] = {
    { DK_PRIM_SOCKET, 0, kIOReturnNoResources },
    { DK_PRIM_FCNTL, 0, kIOReturnIPCError },
    { DK_PRIM_THREAD_CREATE, 0, kIOReturnNoResources },
    { DK_PRIM_POLL, EINTR, kIOReturnSuccess },     /* interrupted once: polled again */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fake f;
    fake_start(&f, serve, 0);
    mark();
    dk_client_options o = { .timeout_ms = TIMEOUT_MS };
    dk_client *c = NULL;
    dk__fault_arm(1, 0, DK_PRIM_BIT(cases[i].call), cases[i].err);
    IOReturn rc = dk_client_connect(f.path, &o, &c);
    dk__fault_disarm();
    if (rc != cases[i].want)
      fail_msg("%s failing: %s, expected %s (%s)", dk__prim_call_name(cases[i].call), dk_ioreturn_name(rc),
               dk_ioreturn_name(cases[i].want), dk_last_failure()->text);
    if (c) dk_client_close(c);
    else assert_true(dk_last_failure()->text[0] != '\0');
    fake_stop(&f);
    back(dk__prim_call_name(cases[i].call));
  }
}

static void client_requests(void **state)
{
  (void)state;
  /* a served map, its unmap; noise before it ignored */
  fake f;
  dk_client *c = connected(&f, serve, 0, TIMEOUT_MS);
  mach_vm_address_t a = 0;
  mach_vm_size_t len = 0;
  assert_int_equal(dk_client_map_memory(c, 1, 0, &a, &len), kIOReturnSuccess);
  assert_true(a != 0);
  assert_int_equal(len, 2 * PG);
  memset((void *)(uintptr_t)a, 0x5a, (size_t)len);   /* really mapped, writable */
  /* the mapping cannot be made here (mmap fails; then the bookkeeping's calloc fails): the
   * request gets that answer, and the driver is told */
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_MMAP), 0);
  mach_vm_address_t b = 1;
  IOReturn rc = dk_client_map_memory(c, 1, 0, &b, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnVMError);
  assert_int_equal(b, 0);
  assert_non_null(strstr(dk_last_failure()->text, "mapping the driver's buffer here failed"));
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_CALLOC), 0);
  rc = dk_client_map_memory(c, 1, 0, &b, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnNoMemory);
  assert_int_equal(dk_client_unmap_memory(c, a), kIOReturnSuccess);
  b = 0;
  assert_int_equal(dk_client_map_memory(c, 1, 0, &b, NULL), kIOReturnSuccess);   /* the length not asked for */
  assert_true(b != 0);
  assert_int_equal(*(volatile unsigned char *)(uintptr_t)b, 0);
  assert_int_equal(dk_client_unmap_memory(c, b), kIOReturnSuccess);
  assert_int_equal(dk_client_map_memory(c, 1, 0, NULL, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_client_map_memory(NULL, 1, 0, &b, NULL), kIOReturnBadArgument);
  dk_client_close(c);
  fake_stop(&f);
  back("served requests");

  /* refused, unanswered, and the driver hanging up while a request waits */
  static const struct { int arg; IOReturn want; const char *needle; } cases[] = {
    { 1, kIOReturnNotPermitted, "type refused" },
    { 2, kIOReturnNotResponding, "did not answer" },
    { 3, kIOReturnNotAttached, "went away" },
    { 4, kIOReturnBadMessageID, "answered without a mapping" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    c = connected(&f, serve, cases[i].arg, cases[i].arg == 2 ? SHORT_MS : TIMEOUT_MS);
    rc = dk_client_map_memory(c, 7, 0, &b, &len);
    if (rc != cases[i].want || !strstr(dk_last_failure()->text, cases[i].needle))
      fail_msg("case %d: %s \"%s\", expected %s with \"%s\"", cases[i].arg, dk_ioreturn_name(rc), dk_last_failure()->text,
               dk_ioreturn_name(cases[i].want), cases[i].needle);
    if (cases[i].arg == 3) {
      /* gone: a new request is refused at once, an unknown address is not found */
      assert_int_equal(dk_client_map_memory(c, 7, 0, &b, &len), kIOReturnNotAttached);
      assert_false(dk_client_is_connected(c));
    }
    dk_client_close(c);
    fake_stop(&f);
    back("a refused request");
  }
}

/* A send that fails for a reason other than a gone driver is an IPC error. */
static void client_send_fails(void **state)
{
  (void)state;
  fake f;
  dk_client *c = connected(&f, serve, 0, TIMEOUT_MS);
  mach_vm_address_t b = 0;
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_SENDMSG), EIO);
  IOReturn rc = dk_client_map_memory(c, 1, 0, &b, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnIPCError);
  assert_non_null(strstr(dk_last_failure()->text, "sending to the driver failed"));
  static const int gone[] = { EPIPE, ECONNRESET, ENOTCONN };   /* the driver is gone */
  for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
    dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_SENDMSG), gone[i]);
    rc = dk_client_map_memory(c, 1, 0, &b, NULL);
    dk__fault_disarm();
    assert_int_equal(rc, kIOReturnNotAttached);
    assert_non_null(strstr(dk_last_failure()->text, "the driver is gone"));
  }
  dk_client_close(c);
  fake_stop(&f);
  back("failed sends");
  /* a driver that takes no request (its socket stays full) until the client's deadline */
  c = connected(&f, serve, 0, SHORT_MS);
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_SENDMSG), EAGAIN);
  rc = dk_client_map_memory(c, 1, 0, &b, NULL);
  dk__fault_disarm();
  assert_int_equal(rc, kIOReturnNotResponding);
  assert_non_null(strstr(dk_last_failure()->text, "took no request within 300 ms"));
  assert_true(dk_client_is_connected(c));   /* the driver did not go away: it was slow */
  dk_client_close(c);
  fake_stop(&f);
  back("a driver taking no request");
}

/* A mapping the driver pushes: waited for without a deadline, found by any address inside it
 * and by none outside; nothing more within a short wait; no out pointer refused. */
static void client_pushed_mapping(void **state)
{
  (void)state;
  fake f;
  dk_client *c = connected(&f, push_later, 0, TIMEOUT_MS);
  dk_client_mapping m;
  assert_int_equal(dk_client_next_mapping(c, 0, NULL), kIOReturnBadArgument);
  assert_int_equal(dk_client_next_mapping(c, -1, &m), kIOReturnSuccess);
  assert_int_equal(m.id, 7);
  assert_true(m.pushed);
  assert_int_equal(m.length, 2 * PG);
  assert_int_equal(*(volatile unsigned char *)(uintptr_t)(m.address + PG), 0);   /* populated, readable */
  dk_client_mapping found;
  memset(&found, 0, sizeof found);
  assert_true(dk_client_find_mapping(c, m.address + PG + 5, &found));
  assert_int_equal(found.id, 7);
  assert_true(dk_client_find_mapping(c, m.address, NULL));
  assert_false(dk_client_find_mapping(c, m.address - 1, &found));
  assert_false(dk_client_find_mapping(c, m.address + m.length, &found));
  assert_false(dk_client_find_mapping(NULL, m.address, &found));
  assert_int_equal(dk_client_next_mapping(c, 50, &m), kIOReturnTimeout);
  dk_client_close(c);
  fake_stop(&f);
  back("a pushed mapping");
}

static int setup(void **state)
{
  (void)state;
  signal(SIGPIPE, SIG_IGN);
  /* warm up what is made once (capabilities) before any baseline */
  (void)dk_capabilities();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(client_bad_drivers),
    cmocka_unit_test(client_connect_calls_fail),
    cmocka_unit_test(client_requests),
    cmocka_unit_test(client_send_fails),
    cmocka_unit_test(client_connect_errors),
    cmocka_unit_test(client_pushed_mapping),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
