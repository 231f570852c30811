/* tests/test_prim.c: the system-call door (src/prim) on its own. Every wrapper fails when the
 * fault injector names it (with the call's typical errno, or the one asked for, the release
 * calls only when named), and otherwise passes the kernel's own answer through: a success
 * counts the resource it took (descriptors, mapped and locked bytes, heap blocks) and its
 * partner gives it back; a real failure counts nothing. The text reader retries EINTR a bounded
 * number of times. Needs no privilege. */
#include "dk_test.h"
#include "prim/prim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>
#include <sys/un.h>

static size_t PS;

/* One call through its wrapper, in a way that succeeds when no fault is armed; returns
 * whether it failed, and gives back whatever it took. */
static bool call_once(dk_prim_call call)
{
  int fd = -1, r = 0;
  ssize_t n = 0;
  char buf[64];
  switch (call) {
  case DK_PRIM_MMAP: {
    void *p = dk__mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return true;
    dk__munmap(p, PS);
    return false;
  }
  case DK_PRIM_MUNMAP: case DK_PRIM_MPROTECT: case DK_PRIM_MADVISE: case DK_PRIM_MLOCK: case DK_PRIM_MUNLOCK: {
    void *p = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    if (call == DK_PRIM_MUNMAP) {
      dk__prim_count_adopted(PS);            /* counted as the library's, so its munmap balances */
      r = dk__munmap(p, PS);
      if (r != 0) { dk__prim_count_adopted(-PS); munmap(p, PS); }   /* -PS: counted back out */
      return r != 0;
    }
    if (call == DK_PRIM_MPROTECT) r = dk__mprotect(p, PS, PROT_READ);
    if (call == DK_PRIM_MADVISE) r = dk__madvise(p, PS, MADV_NORMAL);
    if (call == DK_PRIM_MLOCK) { r = dk__mlock(p, PS); if (r == 0) dk__munlock(p, PS); }
    if (call == DK_PRIM_MUNLOCK) r = dk__munlock(p, 0);   /* nothing to unlock: works, counts 0 */
    munmap(p, PS);
    return r != 0;
  }
  case DK_PRIM_MEMFD_CREATE:
    fd = dk__memfd_create("dk-test-prim", MFD_CLOEXEC);
    if (fd >= 0) dk__close(fd);
    return fd < 0;
  case DK_PRIM_FTRUNCATE: case DK_PRIM_FALLOCATE:
    fd = memfd_create("dk-test-prim", MFD_CLOEXEC);
    assert_true(fd >= 0);
    r = call == DK_PRIM_FTRUNCATE ? dk__ftruncate(fd, (off_t)PS) : dk__fallocate(fd, 0, 0, (off_t)PS);
    close(fd);
    return r != 0;
  case DK_PRIM_OPEN:
    fd = dk__open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) dk__close(fd);
    return fd < 0;
  case DK_PRIM_CLOSE:
    fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    r = dk__close(fd);
    if (r != 0) close(fd);
    /* the counter counted a close of a descriptor it never counted open */
    return r != 0;
  case DK_PRIM_PREAD: case DK_PRIM_READ:
    fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    n = call == DK_PRIM_PREAD ? dk__pread(fd, buf, sizeof buf, 0) : dk__read(fd, buf, sizeof buf);
    close(fd);
    return n < 0;
  case DK_PRIM_WRITE:
    fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    n = dk__write(fd, "x", 1);
    close(fd);
    return n < 0;
  case DK_PRIM_IO_URING_SETUP: {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    fd = dk__io_uring_setup(1, &p);
    if (fd >= 0) { dk__close(fd); return false; }
    /* io_uring may be off on this kernel: only an injected fault says "failed" here */
    return dk__fault_fired();
  }
  case DK_PRIM_IO_URING_REGISTER:
    /* a descriptor that is no ring: the kernel refuses, so only the injected errno tells */
    r = dk__io_uring_register(-1, 0, NULL, 0);
    return r != 0 && dk__fault_fired();
  case DK_PRIM_GETRLIMIT: {
    struct rlimit rl;
    return dk__getrlimit(RLIMIT_MEMLOCK, &rl) != 0;
  }
  case DK_PRIM_PROCESS_VM_READV: {
    static const char src[8] = "dmakit!";
    n = dk__copy_checked(buf, src, sizeof src);
    if (n == (ssize_t)sizeof src) assert_memory_equal(buf, src, sizeof src);
    return n < 0;
  }
  case DK_PRIM_THREAD_CREATE: case DK_PRIM_REALLOC:
    return false;   /* below, on their own */
  case DK_PRIM_MALLOC: { void *p = dk__malloc(16); dk__free(p); return p == NULL; }
  case DK_PRIM_CALLOC: { void *p = dk__calloc(2, 8); dk__free(p); return p == NULL; }
  case DK_PRIM_SOCKET:
    fd = dk__socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) dk__close(fd);
    return fd < 0;
  case DK_PRIM_BIND: case DK_PRIM_LISTEN: case DK_PRIM_GETSOCKOPT: case DK_PRIM_SHUTDOWN: {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;   /* the abstract autobind address */
    if (call == DK_PRIM_BIND) r = dk__bind(s, (struct sockaddr *)&a, sizeof(sa_family_t));
    if (call == DK_PRIM_LISTEN) {
      assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(sa_family_t)), 0);
      r = dk__listen(s, 1);
    }
    if (call == DK_PRIM_GETSOCKOPT) {
      int v = 0;
      unsigned vl = sizeof v;
      r = dk__getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &vl);
    }
    if (call == DK_PRIM_SHUTDOWN) {
      int sv[2];
      assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
      r = dk__shutdown(sv[0], SHUT_RDWR);
      close(sv[0]);
      close(sv[1]);
    }
    close(s);
    return r != 0;
  }
  case DK_PRIM_ACCEPT: case DK_PRIM_CONNECT: case DK_PRIM_SENDMSG: case DK_PRIM_RECVMSG: case DK_PRIM_POLL: {
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0 && c >= 0);
    struct sockaddr_un a;
    socklen_t al = sizeof a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(sa_family_t)), 0);
    assert_int_equal(listen(l, 4), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    if (call == DK_PRIM_CONNECT) r = dk__connect(c, (struct sockaddr *)&a, al);
    else assert_int_equal(connect(c, (struct sockaddr *)&a, al), 0);
    if (call == DK_PRIM_ACCEPT) {
      fd = dk__accept(l);
      if (fd >= 0) dk__close(fd);
      r = fd < 0 ? -1 : 0;
    }
    if (call == DK_PRIM_SENDMSG || call == DK_PRIM_RECVMSG) {
      int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
      assert_true(s >= 0);
      char byte = 'k';
      struct iovec io = { &byte, 1 };
      struct msghdr m;
      memset(&m, 0, sizeof m);
      m.msg_iov = &io;
      m.msg_iovlen = 1;
      if (call == DK_PRIM_SENDMSG) n = dk__sendmsg(c, &m, 0);
      else { assert_int_equal(send(c, "k", 1, 0), 1); n = dk__recvmsg(s, &m, 0); }
      r = n == 1 ? 0 : -1;
      close(s);
    }
    if (call == DK_PRIM_POLL) {
      struct pollfd p = { .fd = c, .events = POLLOUT };
      r = dk__poll(&p, 1, 0) == 1 ? 0 : -1;
    }
    close(c);
    close(l);
    return r != 0;
  }
  case DK_PRIM_FCHMOD: case DK_PRIM_FCNTL:
    fd = memfd_create("dk-test-prim", MFD_CLOEXEC);
    assert_true(fd >= 0);
    r = call == DK_PRIM_FCHMOD ? dk__fchmod(fd, 0600) : (dk__fcntl(fd, F_GETFD, 0) < 0 ? -1 : 0);
    close(fd);
    return r != 0;
  case DK_PRIM_UNLINK: {
    char path[] = "/tmp/dk-test-prim.XXXXXX";
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    r = dk__unlink(path);
    if (r != 0) unlink(path);
    return r != 0;
  }
  case DK_PRIM_PIPE: {
    int p[2];
    r = dk__pipe(p);
    if (r == 0) { dk__close(p[0]); dk__close(p[1]); }
    return r != 0;
  }
  case DK_PRIM_LSTAT: {
    struct stat st;
    return dk__lstat("/proc/self", &st) != 0;
  }
  case DK_PRIM_IOCTL: {
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    int v = 0;
    r = dk__ioctl(fd, FIONREAD, &v);   /* /dev/null has no FIONREAD: only the fault's errno tells */
    close(fd);
    return r != 0 && dk__fault_fired();
  }
  case DK_PRIM_READLINK: {
    char link[64];
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = dk__readlink(link, buf, sizeof buf);
    if (n >= 0) assert_string_equal(buf, "/dev/null");
    close(fd);
    return n < 0;
  }
  case DK_PRIM_FSTAT: {
    struct stat st;
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    r = dk__fstat(fd, &st);
    close(fd);
    return r != 0;
  }
  case DK_PRIM_MKDIR: case DK_PRIM_RENAME: case DK_PRIM_CHMOD: case DK_PRIM_FCNTL_LOCK: {
    char dir[] = "/tmp/dk-test-prim.XXXXXX", a[64], b[64];
    assert_non_null(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    int e;
    if (call == DK_PRIM_MKDIR) {
      r = dk__mkdir(a, 0700);
      e = errno;
      rmdir(a);
    } else {
      fd = open(a, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      assert_true(fd >= 0);
      if (call == DK_PRIM_RENAME) {
        r = dk__rename(a, b);
      } else if (call == DK_PRIM_CHMOD) {
        r = dk__chmod(a, 0600);
      } else {
        struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
        r = dk__fcntl_lock(fd, F_OFD_SETLK, &l);
      }
      e = errno;
      close(fd);
      unlink(a);
      unlink(b);
    }
    rmdir(dir);
    errno = e;                           /* the call's, not the clean-up's */
    return r != 0;
  }
  case DK_PRIM_KILL:
    return dk__kill(getpid(), 0) != 0;
  case DK_PRIM_OPENDIR: {
    DIR *d = dk__opendir("/proc/self");
    bool found = false;
    for (const char *nm; d && (nm = dk__readdir(d));) found = found || !strcmp(nm, "status");
    if (d) assert_true(found);
    dk__closedir(d);
    return d == NULL;
  }
  case DK_PRIM_STATFS: {
    struct statfs st;
    return dk__statfs("/tmp", &st) != 0;
  }
  case DK_PRIM_MOUNT:     /* needs privilege and a place: only the fault's errno tells */
    r = dk__mount("none", "/nonexistent/dk-test-prim", "tmpfs", 0, NULL);
    return r != 0 && dk__fault_fired();
  case DK_PRIM_UMOUNT:
    r = dk__umount("/nonexistent/dk-test-prim");
    return r != 0 && dk__fault_fired();
  case DK_PRIM_MREMAP: {  /* a second view of a shared page over a page of reserved space */
    uint8_t *p = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    p[0] = 0x5a;
    void *q = dk__mremap(p, 0, PS, MREMAP_MAYMOVE | MREMAP_FIXED, p + PS);
    if (q != MAP_FAILED) assert_int_equal(p[PS], 0x5a);
    munmap(p, 2 * PS);
    return q == MAP_FAILED;
  }
  case DK_PRIM__COUNT:
    break;
  }
  fail_msg("no call for %d", (int)call);
  return false;
}

/* Each call fails when named (once: the next call works again), with its typical errno or the
 * one given; unnamed calls are untouched; nothing is left counted. */
static void prim_every_call_fails_when_named(void **state)
{
  (void)state;
  dk_prim_counters c0 = dk__prim_counters();
  for (int call = 0; call < DK_PRIM__COUNT; call++) {
    if (call == DK_PRIM_THREAD_CREATE || call == DK_PRIM_REALLOC) continue;
    const char *name = dk__prim_call_name((dk_prim_call)call);
    assert_string_not_equal(name, "?");
    /* with no fault armed the call works (io_uring and the two "only the fault tells" calls
     * report no failure on their own) */
    if (call_once((dk_prim_call)call)) fail_msg("%s failed with no fault armed: %s", name, strerror(errno));
    /* named: fails once with the typical errno, then works */
    dk__fault_arm(1, 0, DK_PRIM_BIT(call), 0);
    errno = 0;
    bool failed = call_once((dk_prim_call)call);
    int e = errno;
    bool fired = dk__fault_fired();
    unsigned long seen = dk__fault_calls_seen();
    dk__fault_disarm();
    if (!failed || !fired) fail_msg("%s: an armed fault did not make it fail", name);
    if (e == 0) fail_msg("%s: failed with errno 0", name);
    assert_true(seen >= 1);
    /* a chosen errno */
    dk__fault_arm(1, 1, DK_PRIM_BIT(call), ENOTRECOVERABLE);
    errno = 0;
    failed = call_once((dk_prim_call)call);
    e = errno;
    dk__fault_disarm();
    assert_true(failed);
    if (e != ENOTRECOVERABLE)
      fail_msg("%s: errno %d, not the one asked for", name, e);
    /* the second of two: the first passes */
    dk__fault_arm(2, 0, DK_PRIM_BIT(call), 0);
    if (call_once((dk_prim_call)call)) fail_msg("%s: the first call failed with the second armed", name);
    dk__fault_disarm();
  }
  /* an unknown call has a name too */
  assert_string_equal(dk__prim_call_name(DK_PRIM__COUNT), "?");
  assert_string_equal(dk__prim_call_name((dk_prim_call)-1), "?");
  /* everything given back; close's forced failure counted one close of an uncounted open */
  dk_prim_counters c1 = dk__prim_counters();
  assert_int_equal(c1.map_bytes, c0.map_bytes);
  assert_int_equal(c1.lock_bytes, c0.lock_bytes);
  assert_int_equal(c1.heap_blocks, c0.heap_blocks);
}

/* Arming with no call mask spares the release calls: munmap, munlock, close, shutdown, unlink. */
static void prim_default_mask_spares_release_calls(void **state)
{
  (void)state;
  void *p = dk__mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  int fd = dk__memfd_create("dk-test-prim", MFD_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(dk__mlock(p, PS), 0);
  dk__fault_arm(1, 1, 0, 0);
  assert_int_equal(dk__munlock(p, PS), 0);
  assert_int_equal(dk__munmap(p, PS), 0);
  assert_int_equal(dk__close(fd), 0);
  assert_false(dk__fault_fired());
  assert_null(dk__malloc(8));                 /* and fails the rest */
  assert_int_equal(errno, ENOMEM);
  dk__fault_disarm();
}

/* A real failure passes the kernel's errno through and counts nothing. */
static void prim_real_failures_count_nothing(void **state)
{
  (void)state;
  dk_prim_counters c0 = dk__prim_counters();
  assert_int_equal(dk__munmap((void *)1, PS), -1);                       /* unaligned */
  assert_int_equal(errno, EINVAL);
  void *hole = mmap(NULL, 2 * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(hole != MAP_FAILED);
  munmap(hole, 2 * PS);
  if (dkt_mlock_works()) {                                               /* ASan makes mlock a no-op */
    assert_int_equal(dk__mlock(hole, PS), -1);                           /* nothing mapped there */
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(dk__munlock(hole, PS), -1);
    assert_int_equal(errno, ENOMEM);
  }
  assert_int_equal(dk__memfd_create("dk-test-prim", 0x7fff0000u), -1);  /* unknown flags */
  assert_int_equal(errno, EINVAL);
  assert_int_equal(dk__open("/nonexistent/dmakit", O_RDONLY), -1);
  assert_int_equal(errno, ENOENT);
  assert_int_equal(dk__socket(-1, SOCK_STREAM, 0), -1);
  assert_int_equal(dk__accept(-1), -1);
  assert_int_equal(errno, EBADF);
  struct io_uring_params iop;
  memset(&iop, 0, sizeof iop);
  assert_int_equal(dk__io_uring_setup(0, &iop), -1);                     /* no entries (or no io_uring) */
  void *p = dk__mmap((void *)1, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  assert_true(p == MAP_FAILED);
  dk_prim_counters c1 = dk__prim_counters();
  assert_int_equal(c1.fds, c0.fds);
  assert_int_equal(c1.map_bytes, c0.map_bytes);
  assert_int_equal(c1.lock_bytes, c0.lock_bytes);
  /* a MAP_FIXED mapping over space already counted adds nothing */
  void *r = dk__mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(r != MAP_FAILED);
  assert_true(dk__mmap(r, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == r);
  assert_int_equal(dk__prim_counters().map_bytes, c0.map_bytes + (long)PS);
  assert_int_equal(dk__munmap(r, PS), 0);
  assert_int_equal(dk__prim_counters().map_bytes, c0.map_bytes);
  /* free(NULL) counts nothing */
  dk__free(NULL);
  assert_int_equal(dk__prim_counters().heap_blocks, c0.heap_blocks);
}

/* readlink: NUL-terminated, refused when it does not fit (or there is no room at all). */
static void prim_readlink_bounds(void **state)
{
  (void)state;
  char buf[4096], tiny[2];
  ssize_t n = dk__readlink("/proc/self/exe", buf, sizeof buf);
  assert_true(n > 0);
  assert_int_equal(strlen(buf), (size_t)n);
  assert_int_equal(dk__readlink("/proc/self/exe", tiny, sizeof tiny), -1);
  assert_int_equal(errno, ENAMETOOLONG);
  assert_int_equal(dk__readlink("/proc/self/exe", tiny, 0), -1);
  assert_int_equal(errno, ENAMETOOLONG);
  assert_int_equal(dk__readlink("/proc/self/stat", buf, sizeof buf), -1);   /* not a link */
  assert_int_equal(errno, EINVAL);
}

static void *nothing(void *arg) { return arg; }

/* thread_create reports its error as the return value (pthread's convention), not in errno. */
static void prim_thread_create(void **state)
{
  (void)state;
  pthread_t t;
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_THREAD_CREATE), 0);
  assert_int_equal(dk__thread_create(&t, nothing, NULL), EAGAIN);
  dk__fault_disarm();
  assert_int_equal(dk__thread_create(&t, nothing, NULL), 0);
  assert_int_equal(dk__thread_join(t), 0);
}

/* The text reader: whole files, truncated to the buffer, EINTR retried a bounded number of
 * times, other errors (and an open that fails) reported, the descriptor always closed. */
static void prim_read_text(void **state)
{
  (void)state;
  char buf[4096];
  long fds0 = dk__prim_counters().fds;
  ssize_t n = dk__read_text("/proc/self/status", buf, sizeof buf);
  assert_true(n > 0);
  assert_non_null(strstr(buf, "Name:"));
  char small[8];
  assert_int_equal(dk__read_text("/proc/self/status", small, sizeof small), (ssize_t)sizeof small - 1);
  assert_int_equal(strlen(small), sizeof small - 1);
  /* one EINTR: retried */
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_READ), EINTR);
  assert_true(dk__read_text("/proc/self/status", buf, sizeof buf) > 0);
  dk__fault_disarm();
  /* EINTR for ever: given up */
  dk__fault_arm(1, 1, DK_PRIM_BIT(DK_PRIM_READ), EINTR);
  assert_int_equal(dk__read_text("/proc/self/status", buf, sizeof buf), -1);
  assert_int_equal(errno, EINTR);
  dk__fault_disarm();
  dk__fault_arm(1, 0, DK_PRIM_BIT(DK_PRIM_READ), EIO);
  assert_int_equal(dk__read_text("/proc/self/status", buf, sizeof buf), -1);
  assert_int_equal(errno, EIO);
  dk__fault_disarm();
  assert_int_equal(dk__read_text("/nonexistent/dmakit", buf, sizeof buf), -1);
  assert_int_equal(errno, ENOENT);
  assert_int_equal(dk__prim_counters().fds, fds0);
}

static int setup(void **state)
{
  (void)state;
  PS = (size_t)sysconf(_SC_PAGESIZE);
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(prim_every_call_fails_when_named),
    cmocka_unit_test(prim_default_mask_spares_release_calls),
    cmocka_unit_test(prim_real_failures_count_nothing),
    cmocka_unit_test(prim_readlink_bounds),
    cmocka_unit_test(prim_thread_create),
    cmocka_unit_test(prim_read_text),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
