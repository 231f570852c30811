/* tests/test_proto.c: the sharing protocol's one gate (dk__proto_check) on its own, rule by
 * rule: a valid record of every type passes in its own direction only, and each mutation that
 * breaks one rule (size, magic, version, type, descriptor count, request number, text
 * termination, access rights, map geometry and flags, ids, a successful map at 0) is refused
 * with a reason naming it. Then the record transport (src/share/util.c) on a socket pair: the
 * socket path's bounds, sends retried on EINTR, a full socket waited for until the deadline, a
 * short send, receives retried on EINTR, descriptors kept or closed, other control messages
 * skipped. No privilege. */
#include "dk_test.h"
#include "prim/prim.h"
#include "share/proto.h"
#include "share/share.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/un.h>

#define PG 4096u

typedef struct rec { dk_msg m; size_t n; int nfds; dk_proto_dir dir; } rec;

static rec valid(dk_msg_type type)
{
  rec r;
  dk__proto_init(&r.m, type, type >= DK_MSG_MAP_REQ ? 7 : 0);
  r.n = r.m.hdr.size;
  r.nfds = type == DK_MSG_MAP ? 1 : 0;
  r.dir = type >= DK_MSG_MAP_REQ ? DK_PROTO_TO_DRIVER : DK_PROTO_TO_CLIENT;
  switch (type) {
  case DK_MSG_WELCOME: r.m.u.welcome.access = 3; r.m.u.welcome.page_size = PG; r.m.u.welcome.client_id = 1; break;
  case DK_MSG_RESULT: strcpy(r.m.u.result.text, "ok"); break;
  case DK_MSG_MAP:
    r.m.u.map = (dk_msg_map){ .id = 5, .file_offset = PG, .span = 2 * PG, .in_page = 16, .length = PG, .writable = 1 };
    break;
  case DK_MSG_UNMAP: case DK_MSG_UNMAP_REQ: r.m.u.id.id = 5; break;
  case DK_MSG_BYE: strcpy(r.m.u.bye.text, "bye"); break;
  case DK_MSG_MAP_REQ: r.m.u.map_req.type = 1; break;
  case DK_MSG_MAP_ACK: r.m.u.map_ack.id = 5; r.m.u.map_ack.address = 0x7f0000001000ull; break;
  }
  return r;
}

static int check(const rec *r, char *why, size_t cap)
{
  return dk__proto_check(&r->m, r->n, r->nfds, r->dir, PG, why, cap);
}

/* The record must be refused, with `needle` in the reason. */
static void refused(const rec *r, const char *needle)
{
  char why[256] = "";
  if (check(r, why, sizeof why) != -1) fail_msg("type %u accepted, expected a refusal about '%s'", r->m.hdr.type, needle);
  if (!strstr(why, needle)) fail_msg("type %u refused with '%s', expected '%s'", r->m.hdr.type, why, needle);
  assert_int_equal(check(r, NULL, 0), -1);   /* no room for a reason: still refused */
  char untouched[4] = "abc";
  assert_int_equal(check(r, untouched, 0), -1);   /* a buffer of no bytes is not written */
  assert_string_equal(untouched, "abc");
}

static const dk_msg_type all_types[] = { DK_MSG_WELCOME, DK_MSG_RESULT, DK_MSG_MAP, DK_MSG_UNMAP, DK_MSG_BYE,
                                         DK_MSG_MAP_REQ, DK_MSG_UNMAP_REQ, DK_MSG_MAP_ACK };

static void proto_valid_records_pass_one_way(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
    rec r = valid(all_types[i]);
    char why[256] = "";
    if (check(&r, why, sizeof why) != 0) fail_msg("type %u refused: %s", all_types[i], why);
    r.dir = r.dir == DK_PROTO_TO_DRIVER ? DK_PROTO_TO_CLIENT : DK_PROTO_TO_DRIVER;
    refused(&r, "not one this end receives");
  }
  assert_int_equal(dk__proto_body_size(0), -1);
  assert_int_equal(dk__proto_body_size(99), -1);
  /* a page size of 0 means 4096 */
  rec r = valid(DK_MSG_MAP);
  assert_int_equal(dk__proto_check(&r.m, r.n, 1, DK_PROTO_TO_CLIENT, 0, NULL, 0), 0);
}

static void proto_header_rules(void **state)
{
  (void)state;
  rec r = valid(DK_MSG_RESULT);
  r.n = sizeof r.m.hdr - 1;
  refused(&r, "shorter than");
  r = valid(DK_MSG_RESULT);
  r.n = sizeof r.m + 1;
  refused(&r, "longer than any message");
  r = valid(DK_MSG_RESULT);
  r.m.hdr.magic ^= 1;
  refused(&r, "bad magic");
  r = valid(DK_MSG_RESULT);
  r.m.hdr.version = 2;
  refused(&r, "protocol version 2");
  r = valid(DK_MSG_RESULT);
  r.m.hdr.type = 42;
  refused(&r, "not one this end receives");
  r = valid(DK_MSG_RESULT);
  r.m.hdr.size += 1;                           /* the header lies */
  refused(&r, "header says");
  r = valid(DK_MSG_RESULT);
  r.n -= 1;                                    /* short body, header and length agree */
  r.m.hdr.size -= 1;
  refused(&r, "the type has");
  r = valid(DK_MSG_MAP);
  r.nfds = 0;
  refused(&r, "came with 0 descriptors");
  r = valid(DK_MSG_UNMAP);
  r.nfds = 1;
  refused(&r, "came with 1 descriptors");
  r = valid(DK_MSG_MAP_REQ);
  r.m.hdr.seq = 0;
  refused(&r, "nonzero number");
  r = valid(DK_MSG_UNMAP_REQ);
  r.m.hdr.seq = 0;
  refused(&r, "nonzero number");
}

static void proto_body_rules(void **state)
{
  (void)state;
  rec r = valid(DK_MSG_RESULT);
  memset(r.m.u.result.text, 'x', sizeof r.m.u.result.text);
  refused(&r, "result text is not terminated");
  r = valid(DK_MSG_BYE);
  memset(r.m.u.bye.text, 'x', sizeof r.m.u.bye.text);
  refused(&r, "goodbye text is not terminated");
  r = valid(DK_MSG_WELCOME);
  r.m.u.welcome.access = 1;                    /* read-only: fine */
  assert_int_equal(check(&r, NULL, 0), 0);
  r.m.u.welcome.access = 2;
  refused(&r, "welcome with access 2");
  r.m.u.welcome.access = 0;
  refused(&r, "welcome with access 0");

  r = valid(DK_MSG_MAP); r.m.u.map.id = 0;                       refused(&r, "map with id 0");
  r = valid(DK_MSG_MAP); r.m.u.map.span = 0;                     refused(&r, "not whole pages");
  r = valid(DK_MSG_MAP); r.m.u.map.span = PG + 1;                refused(&r, "not whole pages");
  r = valid(DK_MSG_MAP); r.m.u.map.file_offset = 1;              refused(&r, "not whole pages");
  r = valid(DK_MSG_MAP); r.m.u.map.file_offset = UINT64_MAX - PG + 1; refused(&r, "overflows");
  r = valid(DK_MSG_MAP); r.m.u.map.file_offset = 1ull << 62;     refused(&r, "overflows");
  r = valid(DK_MSG_MAP); r.m.u.map.length = 0;                   refused(&r, "does not fit its span");
  r = valid(DK_MSG_MAP); r.m.u.map.in_page = PG;                 refused(&r, "does not fit its span");
  r = valid(DK_MSG_MAP); r.m.u.map.length = UINT64_MAX;          refused(&r, "does not fit its span");
  r = valid(DK_MSG_MAP); r.m.u.map.length = 2 * PG;              refused(&r, "does not fit its span");
  r = valid(DK_MSG_MAP); r.m.u.map.writable = 2;                 refused(&r, "flags out of range");
  r = valid(DK_MSG_MAP); r.m.u.map.populate = 2;                 refused(&r, "flags out of range");
  r = valid(DK_MSG_UNMAP); r.m.u.id.id = 0;                      refused(&r, "mapping id 0");
  r = valid(DK_MSG_UNMAP_REQ); r.m.u.id.id = 0;                  refused(&r, "mapping id 0");
  r = valid(DK_MSG_MAP_ACK); r.m.u.map_ack.id = 0;               refused(&r, "mapping id 0");
  r = valid(DK_MSG_MAP_ACK); r.m.u.map_ack.address = 0;          refused(&r, "at address 0");
  r = valid(DK_MSG_MAP_ACK); r.m.u.map_ack.address = 0; r.m.u.map_ack.code = -1;   /* a failed map */
  assert_int_equal(check(&r, NULL, 0), 0);
}

/* ---- the transport ---------------------------------------------------------------------- */
static void transport_socket_path(void **state)
{
  (void)state;
  struct sockaddr_un sa;
  char longp[sizeof sa.sun_path + 1];
  memset(longp, 'p', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  assert_int_equal(dk__share_sockaddr(NULL, &sa), kIOReturnBadArgument);
  assert_int_equal(dk__share_sockaddr("", &sa), kIOReturnBadArgument);
  assert_int_equal(dk__share_sockaddr(longp, &sa), kIOReturnBadArgument);
  longp[sizeof sa.sun_path - 1] = '\0';   /* the longest that fits */
  assert_int_equal(dk__share_sockaddr(longp, &sa), kIOReturnSuccess);
  assert_string_equal(sa.sun_path, longp);
}

static ssize_t short_sendmsg(int fd, const struct msghdr *m, int flags)
{
  (void)m;
  return dk__prim_default.sendmsg(fd, &(struct msghdr){ .msg_iov = &(struct iovec){ "x", 1 }, .msg_iovlen = 1 }, flags);
}

static void transport_send_and_receive(void **state)
{
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  long fds0 = dk__prim_counters().fds;
  rec r = valid(DK_MSG_RESULT);
  dk_msg got;
  int keep, nfds, flags;
  /* interrupted once: sent; interrupted for ever: given up with EINTR */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_SENDMSG), EINTR);
  assert_int_equal(dk__share_send(sv[0], &r.m, -1, 0), 0);
  dk__fault_disarm();
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_SENDMSG), EINTR);
  assert_int_equal(dk__share_send(sv[0], &r.m, -1, 0), -1);
  assert_int_equal(errno, EINTR);
  dk__fault_disarm();
  /* a receive interrupted once is retried */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_RECVMSG), EINTR);
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, &keep, &nfds, &flags), (ssize_t)r.n);
  dk__fault_disarm();
  assert_int_equal(keep, -1);
  assert_int_equal(nfds, 0);
  assert_string_equal(got.u.result.text, "ok");
  /* a short send is an error (EMSGSIZE), never half a record taken for a whole one */
  dk__prim.sendmsg = short_sendmsg;
  assert_int_equal(dk__share_send(sv[0], &r.m, -1, 0), -1);
  assert_int_equal(errno, EMSGSIZE);
  dk__prim.sendmsg = dk__prim_default.sendmsg;
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, NULL, &nfds, &flags), 1);   /* drain it */
  /* a descriptor travels: kept, or closed when nobody keeps it */
  int mfd = memfd_create("dk-test-proto", MFD_CLOEXEC);
  assert_true(mfd >= 0);
  assert_int_equal(dk__share_send(sv[0], &r.m, mfd, 0), 0);
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, &keep, &nfds, &flags), (ssize_t)r.n);
  assert_true(keep >= 0);
  assert_int_equal(nfds, 1);
  assert_int_equal(dk__prim_counters().fds, fds0 + 1);
  dk__close(keep);
  assert_int_equal(dk__share_send(sv[0], &r.m, mfd, 0), 0);
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, NULL, &nfds, &flags), (ssize_t)r.n);
  assert_int_equal(nfds, 1);
  assert_int_equal(dk__prim_counters().fds, fds0);   /* closed by the receiver */
  close(mfd);
  /* a full socket: waited for until the deadline, then ETIMEDOUT */
  int sndbuf = 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  int sent = 0, rc;
  while ((rc = dk__share_send(sv[0], &r.m, -1, 0)) == 0 && sent < 100000) sent++;
  assert_int_equal(rc, -1);
  assert_int_equal(errno, ETIMEDOUT);             /* no wait asked for: at once */
  assert_int_equal(dk__share_send(sv[0], &r.m, -1, 50), -1);
  assert_int_equal(errno, ETIMEDOUT);
  close(sv[0]);
  close(sv[1]);
}

/* A control message that is no SCM_RIGHTS (credentials) is skipped; descriptors beside it count. */
static void transport_other_control_messages(void **state)
{
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  int on = 1;
  assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
  rec r = valid(DK_MSG_RESULT);
  assert_int_equal(dk__share_send(sv[0], &r.m, -1, 0), 0);
  dk_msg got;
  int keep, nfds, flags;
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, &keep, &nfds, &flags), (ssize_t)r.n);
  assert_int_equal(nfds, 0);
  assert_int_equal(keep, -1);
  close(sv[0]);
  assert_int_equal(dk__share_recv(sv[1], &got, sizeof got, 0, &keep, &nfds, &flags), 0);   /* the end */
  close(sv[1]);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(proto_valid_records_pass_one_way),
    cmocka_unit_test(proto_header_rules),
    cmocka_unit_test(proto_body_rules),
    cmocka_unit_test(transport_socket_path),
    cmocka_unit_test(transport_send_and_receive),
    cmocka_unit_test(transport_other_control_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
