/* fuzz/fuzz_proto.c: libFuzzer harness for the sharing protocol (src/share/proto.h).
 * Input: one configuration byte, then records, each a 2-byte little-endian length (bit 15:
 * send a descriptor with it) and that many bytes.
 *  (a) dk__proto_check, the gate every received record passes, gets each record and the whole
 *      input in both directions, with a descriptor count and page size from the configuration
 *      byte. Whatever it accepts must hold what a consumer relies on (exact size, known type
 *      for that direction, terminated text, page-multiple spans, ranges that fit and do not
 *      overflow); a rejection must say why.
 *  (b) One driver (dk_server, made once, socket in a temporary directory; memory type 1 is a
 *      4 KiB kIOMemoryKernelUserShared buffer, every other type kIOReturnBadArgument) gets the
 *      records from a raw SOCK_SEQPACKET connection, as a hostile client would send them. The
 *      harness answers each MAP with a MAP_ACK, closes every descriptor it receives, checks
 *      every record the driver sends with dk__proto_check, and ends each input with a request
 *      whose answer shows that everything before it was handled. Every 100 inputs a
 *      well-behaved dk_client must still connect, map type 1, be refused type 2, and the
 *      driver's descriptor count must be back where it was (nothing leaked).
 * Any violation traps with a message. Built and run by scripts/fuzz.sh. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dmakit/dmakit.h>
#include <dmakit/share.h>

#include "share/proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_RECORDS  64
#define SENTINEL_SEQ 0xfee1f00du
#define SENTINEL_TYPE 0x7ffffff0u
#define CHECK_EVERY  100

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "\n==== fuzz_proto: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  const dk_failure *f = dk_last_failure();
  fprintf(stderr, "\nlast failure: %s: %s\n", dk_ioreturn_name(f->code), f->text);
  fflush(stderr);
  __builtin_trap();
}
#define CHECK(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

/* ---- (a) the gate ------------------------------------------------------------------------ */

/* `buf` was accepted: everything a consumer reads from it must be sound. */
static void accepted_invariants(const uint8_t *buf, size_t n, int nfds, dk_proto_dir dir, size_t page)
{
  dk_msg m;
  CHECK(n >= sizeof m.hdr && n <= sizeof m, "accepted a record of %zu bytes", n);
  memset(&m, 0, sizeof m);
  memcpy(&m, buf, n);
  CHECK(m.hdr.magic == DK_PROTO_MAGIC && m.hdr.version == DK_PROTO_VERSION,
        "accepted magic 0x%x version %u", m.hdr.magic, m.hdr.version);
  int body = dk__proto_body_size(m.hdr.type);
  CHECK(body >= 0, "accepted unknown type %u", m.hdr.type);
  CHECK(m.hdr.size == n && n == sizeof m.hdr + (size_t)body,
        "accepted type %u: %zu bytes, header says %u, type has %d body bytes", m.hdr.type, n,
        m.hdr.size, body);
  bool to_driver = m.hdr.type == DK_MSG_MAP_REQ || m.hdr.type == DK_MSG_UNMAP_REQ ||
                   m.hdr.type == DK_MSG_MAP_ACK;
  CHECK(to_driver == (dir == DK_PROTO_TO_DRIVER), "accepted type %u travelling the wrong way",
        m.hdr.type);
  CHECK(nfds == (m.hdr.type == DK_MSG_MAP ? 1 : 0), "accepted type %u with %d descriptors",
        m.hdr.type, nfds);
  uint64_t pg = page ? page : 4096;
  switch (m.hdr.type) {
  case DK_MSG_RESULT:
    CHECK(memchr(m.u.result.text, 0, sizeof m.u.result.text), "accepted unterminated result text");
    break;
  case DK_MSG_BYE:
    CHECK(memchr(m.u.bye.text, 0, sizeof m.u.bye.text), "accepted unterminated goodbye text");
    break;
  case DK_MSG_WELCOME:
    CHECK(m.u.welcome.access == DK_ACCESS_READ || m.u.welcome.access == DK_ACCESS_READ_WRITE,
          "accepted welcome access %u", m.u.welcome.access);
    break;
  case DK_MSG_MAP: {
    const dk_msg_map *p = &m.u.map;
    /* The client mmaps [file_offset, +span) and uses [in_page, +length) of it. */
    CHECK(p->id != 0, "accepted map id 0");
    CHECK(p->span != 0 && p->span % pg == 0 && p->file_offset % pg == 0,
          "accepted span 0x%llx at 0x%llx, page 0x%llx", (unsigned long long)p->span,
          (unsigned long long)p->file_offset, (unsigned long long)pg);
    CHECK(p->file_offset + p->span > p->file_offset, "accepted an overflowing file range");
    CHECK(p->file_offset + p->span <= (uint64_t)INT64_MAX, "accepted a range past off_t");
    CHECK(p->length != 0 && p->in_page + p->length > p->in_page && p->in_page + p->length <= p->span,
          "accepted range 0x%llx+0x%llx in span 0x%llx", (unsigned long long)p->in_page,
          (unsigned long long)p->length, (unsigned long long)p->span);
    CHECK(p->writable <= 1 && p->populate <= 1, "accepted map flags %u %u", p->writable, p->populate);
    break;
  }
  case DK_MSG_UNMAP:
  case DK_MSG_UNMAP_REQ:
    CHECK(m.u.id.id != 0, "accepted mapping id 0");
    break;
  case DK_MSG_MAP_ACK:
    CHECK(m.u.map_ack.id != 0, "accepted ack of mapping id 0");
    break;
  default:
    break;
  }
}

static void gate(const uint8_t *buf, size_t n, int nfds, size_t page, size_t cap)
{
  static const dk_proto_dir dirs[2] = { DK_PROTO_TO_CLIENT, DK_PROTO_TO_DRIVER };
  for (int d = 0; d < 2; d++) {
    char why[256];
    memset(why, 'x', sizeof why);
    int r = dk__proto_check(buf, n, nfds, dirs[d], page, cap ? why : NULL, cap);
    CHECK(r == 0 || r == -1, "dk__proto_check returned %d", r);
    if (r == 0) {
      accepted_invariants(buf, n, nfds, dirs[d], page);
    } else if (cap) {
      CHECK(memchr(why, 0, cap) != NULL, "a rejection's reason is not terminated within %zu", cap);
      CHECK(cap == 1 || why[0] != 0, "a rejection without a reason");
    }
  }
}

/* ---- (b) the driver ---------------------------------------------------------------------- */

static char g_dir[64];
static char g_path[128];
static dk_server *g_server;
static int g_devnull = -1;
static int g_fd_baseline = -1;
static unsigned long g_runs;

static IOReturn memory_for_type(void *ctx, task_t client, uint32_t type, IOOptionBits *options,
                                IOMemoryDescriptor **memory)
{
  if (type != 1) return kIOReturnBadArgument;
  IOBufferMemoryDescriptor *b = IOBufferMemoryDescriptor_inTaskWithOptions(
      kernel_task, kIOMemoryKernelUserShared | kIODirectionInOut, 4096, 4096);
  if (!b) return dk_last_failure()->code ? dk_last_failure()->code : kIOReturnNoMemory;
  *options = 0;
  *memory = (IOMemoryDescriptor *)b;
  return kIOReturnSuccess;
}

static void teardown(void)
{
  dk_server_destroy(g_server);
  g_server = NULL;
  unlink(g_path);
  rmdir(g_dir);
  if (g_devnull >= 0) close(g_devnull);
}

static void setup(void)
{
  snprintf(g_dir, sizeof g_dir, "/tmp/dk-fuzz-proto.XXXXXX");
  CHECK(mkdtemp(g_dir), "mkdtemp: %s", strerror(errno));
  snprintf(g_path, sizeof g_path, "%s/driver.sock", g_dir);
  static const dk_server_policy policy = {
    .memory_for_type = memory_for_type,
    .timeout_ms = 1000,
  };
  IOReturn r = dk_server_create(g_path, &policy, &g_server);
  CHECK(r == kIOReturnSuccess, "dk_server_create: %s", dk_ioreturn_name(r));
  g_devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(g_devnull >= 0, "open /dev/null");
  atexit(teardown);
}

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void send_record(int s, const void *buf, size_t n, bool with_fd)
{
  struct iovec iov = { (void *)buf, n };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
  union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
  if (with_fd) {
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.b;
    mh.msg_controllen = sizeof ctl.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &g_devnull, sizeof(int));
  }
  /* never block: a driver that stopped reading must not hang the harness */
  (void)sendmsg(s, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

typedef struct conn {
  int s;
  bool ack_error;      /* answer MAPs with a failure code */
  bool done;           /* the sentinel's answer came, or the driver hung up */
  size_t page;
} conn;

/* Read one record the driver sent, if any within timeout_ms; check it, close its descriptors,
 * answer a MAP. */
static void receive(conn *c, int timeout_ms)
{
  struct pollfd p = { c->s, POLLIN, 0 };
  if (poll(&p, 1, timeout_ms) <= 0) return;
  dk_msg m;
  union { char b[CMSG_SPACE(8 * sizeof(int))]; struct cmsghdr align; } ctl;
  struct iovec iov = { &m, sizeof m };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                       .msg_controllen = sizeof ctl.b };
  ssize_t n = recvmsg(c->s, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) c->done = true;   /* reset */
    return;
  }
  int nfds = 0;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
      close(fd);
      nfds++;
    }
  }
  if (n == 0) {   /* the driver hung up */
    c->done = true;
    return;
  }
  CHECK(!(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)), "the driver sent a record larger than any message");
  char why[200];
  CHECK(dk__proto_check(&m, (size_t)n, nfds, DK_PROTO_TO_CLIENT, c->page, why, sizeof why) == 0,
        "the driver sent a record its own client would refuse: %s", why);
  switch (m.hdr.type) {
  case DK_MSG_MAP: {
    dk_msg ack;
    dk__proto_init(&ack, DK_MSG_MAP_ACK, m.hdr.seq);
    ack.u.map_ack.id = m.u.map.id;
    ack.u.map_ack.address = 0x7f0000000000ull + m.u.map.id * c->page;   /* a claim, never used */
    ack.u.map_ack.code = c->ack_error ? kIOReturnNoMemory : kIOReturnSuccess;
    send_record(c->s, &ack, ack.hdr.size, false);
    break;
  }
  case DK_MSG_RESULT:
    if (m.hdr.seq == SENTINEL_SEQ) c->done = true;
    break;
  case DK_MSG_BYE:
    c->done = true;
    break;
  default:
    break;
  }
}

static void drive(const uint8_t *cfg_and_records, size_t size, uint8_t cfg)
{
  conn c = { .ack_error = (cfg & 0x40) != 0, .page = (size_t)sysconf(_SC_PAGESIZE) };
  c.s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  CHECK(c.s >= 0, "socket: %s", strerror(errno));
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
  CHECK(connect(c.s, (struct sockaddr *)&a, sizeof a) == 0, "connect %s: %s", g_path, strerror(errno));

  const uint8_t *p = cfg_and_records;
  size_t left = size;
  for (int i = 0; i < MAX_RECORDS && left >= 2 && !c.done; i++) {
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    p += 2;
    left -= 2;
    size_t n = h & 0x7fff;
    if (n > left) n = left;
    send_record(c.s, p, n, (h & 0x8000) != 0);
    p += n;
    left -= n;
    receive(&c, 0);
  }
  /* The sentinel: a request the driver refuses with a RESULT carrying its seq. Requests on one
   * connection are answered in order, so once it is answered everything before was handled. */
  dk_msg req;
  dk__proto_init(&req, DK_MSG_MAP_REQ, SENTINEL_SEQ);
  req.u.map_req.type = SENTINEL_TYPE;
  send_record(c.s, &req, req.hdr.size, false);
  uint64_t deadline = now_ms() + 5000;
  while (!c.done) {
    CHECK(now_ms() < deadline, "the driver answered nothing for 5 s (run %lu)", g_runs);
    receive(&c, 100);
  }
  close(c.s);
}

/* The server queues every admitted client for dk_server_accept (retained); this harness
 * serves through the policy only, so it takes and releases them, as a driver must. */
static void drain_accepts(void)
{
  task_t t;
  while (dk_server_accept(g_server, 0, &t) == kIOReturnSuccess) dk_task_release(t);
}

/* What the driver could leak: sockets, memfds and other anonymous files. (Pipes are left
 * out: the sanitizers' symbolizer opens and keeps some.) With `print`, list them. */
static int count_fds(bool print)
{
  DIR *d = opendir("/proc/self/fd");
  CHECK(d, "opendir /proc/self/fd");
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    char path[300], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(path, target, sizeof target - 1);
    target[k > 0 ? k : 0] = 0;
    if (strncmp(target, "socket:", 7) && strncmp(target, "/memfd:", 7) && strncmp(target, "anon_inode:", 11))
      continue;
    n++;
    if (print) fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
  }
  closedir(d);
  return n;
}

/* A client that follows the protocol must still be served, and nothing may have leaked. */
static void well_behaved(void)
{
  dk_client_options o = { .timeout_ms = 5000 };
  dk_client *cl = NULL;
  IOReturn r = dk_client_connect(g_path, &o, &cl);
  CHECK(r == kIOReturnSuccess, "run %lu: a well-behaved client cannot connect: %s", g_runs,
        dk_ioreturn_name(r));
  mach_vm_address_t addr = 0;
  mach_vm_size_t len = 0;
  r = dk_client_map_memory(cl, 1, 0, &addr, &len);
  CHECK(r == kIOReturnSuccess && addr && len == 4096,
        "run %lu: a well-behaved client cannot map type 1: %s (0x%llx, %llu bytes)", g_runs,
        dk_ioreturn_name(r), (unsigned long long)addr, (unsigned long long)len);
  volatile uint8_t *b = (volatile uint8_t *)(uintptr_t)addr;
  for (size_t i = 0; i < len; i++) CHECK(b[i] == 0, "run %lu: type 1 memory is not zeroed", g_runs);
  b[0] = 0x5a;
  b[len - 1] = 0xa5;
  CHECK(b[0] == 0x5a && b[len - 1] == 0xa5, "run %lu: type 1 memory does not hold a write", g_runs);
  mach_vm_address_t a2 = 0;
  mach_vm_size_t l2 = 0;
  r = dk_client_map_memory(cl, 2, 0, &a2, &l2);
  CHECK(r == kIOReturnBadArgument, "run %lu: type 2 gave %s, not kIOReturnBadArgument", g_runs,
        dk_ioreturn_name(r));
  r = dk_client_unmap_memory(cl, addr);
  CHECK(r == kIOReturnSuccess, "run %lu: unmap: %s", g_runs, dk_ioreturn_name(r));
  dk_client_close(cl);

  uint64_t deadline = now_ms() + 5000;
  while (drain_accepts(), dk_server_client_count(g_server) != 0) {
    CHECK(now_ms() < deadline, "run %lu: %u clients still connected 5 s after all closed", g_runs,
          dk_server_client_count(g_server));
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
  }
  int fds = count_fds(false);
  if (g_fd_baseline < 0) g_fd_baseline = fds;
  if (fds > g_fd_baseline) {
    count_fds(true);
    die("run %lu: %d sockets and memfds open with no client, %d at the start", g_runs, fds, g_fd_baseline);
  }
}

/* ---- entry ------------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!g_server) {
    setup();
    well_behaved();   /* the first run sets the descriptor baseline */
  }
  g_runs++;
  if (size == 0) return 0;
  /* configuration: bits 0-1 descriptors, bits 2-4 page size (0: the default), bit 5 a short
   * reason buffer, bit 6 answer MAPs with an error */
  uint8_t cfg = data[0];
  int nfds = cfg & 3;
  unsigned shift = (cfg >> 2) & 7;
  size_t page = shift == 0 ? 0 : (size_t)1 << (11 + shift);   /* 4 KiB .. 256 KiB */
  size_t cap = (cfg & 0x20) ? (size_t)(size % 8) : 200;

  /* (a): the whole input, then each record */
  gate(data + 1, size - 1, nfds, page, cap);
  const uint8_t *p = data + 1;
  size_t left = size - 1;
  for (int i = 0; i < MAX_RECORDS && left >= 2; i++) {
    size_t n = (size_t)(p[0] | p[1] << 8) & 0x7fff;
    p += 2;
    left -= 2;
    if (n > left) n = left;
    gate(p, n, nfds, page, cap);
    gate(p, n, n == sizeof(dk_msg_hdr) + sizeof(dk_msg_map) ? 1 : 0, page, cap);
    p += n;
    left -= n;
  }

  /* (b) */
  drive(data + 1, size - 1, cfg);
  drain_accepts();
  if (g_runs % CHECK_EVERY == 0) well_behaved();
  return 0;
}
