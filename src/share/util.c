/* src/share/util.c: what both ends of a connection need alike: the socket address from a
 * path (checked), condition variables on the monotonic clock, deadlines on it, sending one
 * record (with at most one descriptor) at once or within a deadline, and receiving one (an
 * empty record told apart from the end of the stream). */
#include "share/proto.h"
#include "share/share.h"
#include "prim/prim.h"

#include <errno.h>
#include <poll.h>

#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

IOReturn dk__share_sockaddr(const char *path, struct sockaddr_un *sa)
{
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!path || !*path || strlen(path) >= sizeof sa->sun_path)
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "a socket path of 1 to %zu bytes and an out pointer are needed", sizeof sa->sun_path - 1);
  strcpy(sa->sun_path, path);
  return kIOReturnSuccess;
}

void dk__share_cond_init(pthread_cond_t *cond)
{
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cond, &ca);
  pthread_condattr_destroy(&ca);
}

uint64_t dk__share_now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

struct timespec dk__share_deadline(int ms)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) { t.tv_sec++; t.tv_nsec -= 1000000000L; }
  return t;
}

int dk__share_send_once(int fd, const void *rec, size_t len, int pass_fd)
{
  struct iovec iov = { (void *)(uintptr_t)rec, len };
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
  if (pass_fd >= 0) {
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
  }
  for (int i = 0; i < DK_EINTR_RETRIES; i++) {
    ssize_t n = dk__sendmsg(fd, &mh, MSG_DONTWAIT);
    if (n == (ssize_t)len) return 0;
    if (n >= 0) { errno = EMSGSIZE; return -1; }
    if (errno != EINTR) return -1;
  }
  return -1;
}

int dk__share_send(int fd, const dk_msg *m, int pass_fd, int timeout_ms)
{
  struct timespec until = dk__share_deadline(timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    if (dk__share_send_once(fd, m, m->hdr.size, pass_fd) == 0) return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = (long)(until.tv_sec - now.tv_sec) * 1000 + (until.tv_nsec - now.tv_nsec) / 1000000;
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    struct pollfd pf = { .fd = fd, .events = POLLOUT };
    (void)dk__poll(&pf, 1, (int)(left < 100 ? left : 100));
  }
}

/* The peer closed (or shut down its sending side): what a read of 0 bytes then means. */
static bool hung_up(int fd)
{
  struct pollfd pf = { .fd = fd, .events = POLLIN | POLLRDHUP };
  int r;
  do r = dk__poll(&pf, 1, 0); while (r < 0 && errno == EINTR);
  return r < 0 || (pf.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

ssize_t dk__share_recv(int fd, void *buf, size_t cap, int msg_flags, int *keep_fd, int *nfds, int *flags)
{
  union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 8)]; } ctl;
  struct iovec iov = { buf, cap };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
  if (keep_fd) *keep_fd = -1;
  *nfds = 0;
  *flags = 0;
  ssize_t n;
  do n = dk__recvmsg(fd, &mh, msg_flags); while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    dk__prim_count_received(k);                  /* every descriptor is the library's to close */
    for (int i = 0; i < k; i++) {
      int f;
      memcpy(&f, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof f);
      if (keep_fd && *keep_fd < 0) *keep_fd = f;
      else dk__close(f);
    }
    *nfds += k;
  }
  *flags = mh.msg_flags;
  if (n == 0 && !hung_up(fd)) {
    /* SOCK_SEQPACKET reads an empty record as 0, like the end of the stream: the peer is
     * still there, so it sent one */
    errno = EBADMSG;
    return -1;
  }
  return n;
}
