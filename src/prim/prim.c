/* src/prim/prim.c: the system-call table, its fault injector and its live-resource counters.
 * Nothing else in dmakit includes <sys/mman.h> for calls or issues a syscall directly. */
#include "prim/prim.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- defaults ------------------------------------------------------------------------ */
static int sys_open(const char *path, int flags, mode_t mode) { return open(path, flags | O_CLOEXEC, mode); }
static int sys_memfd_create(const char *name, unsigned flags) { return memfd_create(name, flags); }
static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
  return (int)syscall(__NR_io_uring_setup, entries, p);
}
static int sys_io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr)
{
  return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}
static int sys_getrlimit(int resource, struct rlimit *rl) { return getrlimit(resource, rl); }
static int sys_socket(int d, int t, int p) { return socket(d, t | SOCK_CLOEXEC, p); }
static int sys_bind(int fd, const struct sockaddr *a, unsigned l) { return bind(fd, a, l); }
static int sys_accept4(int fd, struct sockaddr *a, unsigned *l, int f) { return accept4(fd, a, l, f); }
static int sys_connect(int fd, const struct sockaddr *a, unsigned l) { return connect(fd, a, l); }
static int sys_poll(struct pollfd *f, unsigned long n, int t) { return poll(f, (nfds_t)n, t); }
static int sys_getsockopt(int fd, int lv, int n, void *v, unsigned *l) { return getsockopt(fd, lv, n, v, l); }
static int sys_fcntl(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
static int sys_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
static int sys_ioctl(int fd, unsigned long req, void *arg) { return ioctl(fd, req, arg); }
static int sys_umount(const char *t) { return umount2(t, UMOUNT_NOFOLLOW); }
static int sys_fcntl_lock(int fd, int cmd, struct flock *l) { return fcntl(fd, cmd, l); }
static int sys_thread_create(pthread_t *t, void *(*fn)(void *), void *arg) { return pthread_create(t, NULL, fn, arg); }
static int sys_thread_join(pthread_t t) { return pthread_join(t, NULL); }
static void *sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr)
{
  return mremap(old, old_len, new_len, flags, new_addr);
}

#define DK_PRIM_DEFAULTS {\
  .mmap = mmap, .munmap = munmap, .mprotect = mprotect, .madvise = madvise,\
  .mlock = mlock, .munlock = munlock, .memfd_create = sys_memfd_create,\
  .ftruncate = ftruncate, .fallocate = fallocate, .open = sys_open, .close = close,\
  .pread = pread, .read = read, .write = write, .io_uring_setup = sys_io_uring_setup,\
  .io_uring_register = sys_io_uring_register, .getrlimit = sys_getrlimit,\
  .process_vm_readv = process_vm_readv,\
  .socket = sys_socket, .bind = sys_bind, .listen = listen, .accept4 = sys_accept4,\
  .connect = sys_connect, .sendmsg = sendmsg, .recvmsg = recvmsg, .poll = sys_poll,\
  .getsockopt = sys_getsockopt, .shutdown = shutdown, .fchmod = fchmod, .fcntl = sys_fcntl,\
  .unlink = unlink, .pipe2 = sys_pipe2, .lstat = lstat, .ioctl = sys_ioctl, .readlink = readlink, .fstat = fstat,\
  .mkdir = mkdir, .kill = kill, .opendir = opendir,\
  .mount = mount, .umount = sys_umount, .rename = rename, .fcntl_lock = sys_fcntl_lock, .statfs = statfs,\
  .chmod = chmod, .mremap = sys_mremap,\
  .thread_create = sys_thread_create, .thread_join = sys_thread_join,\
  .malloc = malloc, .calloc = calloc, .realloc = realloc, .free = free,\
}

const dk_prim_table dk__prim_default = DK_PRIM_DEFAULTS;
dk_prim_table dk__prim = DK_PRIM_DEFAULTS;   /* the live table tests may overwrite */

static const char *const call_names[DK_PRIM__COUNT] = {
  "mmap", "munmap", "mprotect", "madvise", "mlock", "munlock", "memfd_create", "ftruncate",
  "fallocate", "open", "close", "pread", "read", "write", "io_uring_setup", "io_uring_register",
  "getrlimit", "process_vm_readv", "thread_create", "malloc", "calloc", "realloc",
  "socket", "bind", "listen", "accept", "connect", "sendmsg", "recvmsg", "poll", "getsockopt",
  "shutdown", "fchmod", "fcntl", "unlink", "pipe", "lstat", "ioctl", "readlink", "fstat",
  "mkdir", "kill", "opendir",
  "mount", "umount", "rename", "fcntl_lock", "statfs",
  "chmod", "mremap",
};
const char *dk__prim_call_name(dk_prim_call call)
{
  return (unsigned)call < DK_PRIM__COUNT ? call_names[call] : "?";
}

/* The errno each call most typically fails with. */
static const int default_errno[DK_PRIM__COUNT] = {
  [DK_PRIM_MMAP] = ENOMEM, [DK_PRIM_MUNMAP] = EINVAL, [DK_PRIM_MPROTECT] = ENOMEM,
  [DK_PRIM_MADVISE] = EAGAIN, [DK_PRIM_MLOCK] = ENOMEM, [DK_PRIM_MUNLOCK] = ENOMEM,
  [DK_PRIM_MEMFD_CREATE] = EMFILE, [DK_PRIM_FTRUNCATE] = ENOSPC, [DK_PRIM_FALLOCATE] = ENOSPC,
  [DK_PRIM_OPEN] = EMFILE, [DK_PRIM_CLOSE] = EIO, [DK_PRIM_PREAD] = EIO, [DK_PRIM_READ] = EIO, [DK_PRIM_WRITE] = EIO,
  [DK_PRIM_IO_URING_SETUP] = ENOMEM, [DK_PRIM_IO_URING_REGISTER] = ENOMEM,
  [DK_PRIM_GETRLIMIT] = EFAULT, [DK_PRIM_PROCESS_VM_READV] = EFAULT, [DK_PRIM_THREAD_CREATE] = EAGAIN, [DK_PRIM_MALLOC] = ENOMEM, [DK_PRIM_CALLOC] = ENOMEM,
  [DK_PRIM_REALLOC] = ENOMEM, [DK_PRIM_SOCKET] = EMFILE, [DK_PRIM_BIND] = EADDRINUSE,
  [DK_PRIM_LISTEN] = EADDRINUSE, [DK_PRIM_ACCEPT] = EMFILE, [DK_PRIM_CONNECT] = ECONNREFUSED,
  [DK_PRIM_SENDMSG] = ENOBUFS, [DK_PRIM_RECVMSG] = ENOMEM, [DK_PRIM_POLL] = ENOMEM,
  [DK_PRIM_GETSOCKOPT] = ENOBUFS, [DK_PRIM_SHUTDOWN] = ENOTCONN, [DK_PRIM_FCHMOD] = EPERM,
  [DK_PRIM_FCNTL] = EPERM, [DK_PRIM_UNLINK] = EACCES, [DK_PRIM_PIPE] = EMFILE, [DK_PRIM_LSTAT] = EACCES, [DK_PRIM_IOCTL] = ENOMEM, [DK_PRIM_READLINK] = ENOENT, [DK_PRIM_FSTAT] = EIO,
  [DK_PRIM_MKDIR] = EACCES, [DK_PRIM_KILL] = EPERM, [DK_PRIM_OPENDIR] = EMFILE,
  [DK_PRIM_MOUNT] = ENOMEM, [DK_PRIM_UMOUNT] = EBUSY, [DK_PRIM_RENAME] = ENOSPC,
  [DK_PRIM_FCNTL_LOCK] = ENOLCK, [DK_PRIM_STATFS] = EIO,
  [DK_PRIM_CHMOD] = EPERM, [DK_PRIM_MREMAP] = ENOMEM,
};

/* ---- fault injection ---------------------------------------------------------------- */
#define RELEASE_CALLS (DK_PRIM_BIT(DK_PRIM_MUNMAP) | DK_PRIM_BIT(DK_PRIM_MUNLOCK) | DK_PRIM_BIT(DK_PRIM_CLOSE) | \
                       DK_PRIM_BIT(DK_PRIM_SHUTDOWN) | DK_PRIM_BIT(DK_PRIM_UNLINK) | DK_PRIM_BIT(DK_PRIM_UMOUNT))

/* The settings are atomics too: a test may arm while the library's own threads (a server's,
 * a client connection's) keep making calls; they see the old or the new settings. */
static _Atomic int           fault_armed;
static _Atomic unsigned long fault_seen;
static _Atomic unsigned long fault_nth;
static _Atomic int           fault_forever, fault_err;
static _Atomic int           fault_fired_flag;           /* any thread of the operation sets it */
static _Atomic uint64_t      fault_calls;
#define RELAXED(x) atomic_load_explicit(&(x), memory_order_relaxed)

void dk__fault_arm(unsigned long nth, int forever, uint64_t calls, int err)
{
  atomic_store_explicit(&fault_nth, nth, memory_order_relaxed);
  atomic_store_explicit(&fault_forever, forever, memory_order_relaxed);
  atomic_store_explicit(&fault_calls, calls ? calls : ((DK_PRIM_BIT(DK_PRIM__COUNT) - 1) & ~RELEASE_CALLS),
                        memory_order_relaxed);
  atomic_store_explicit(&fault_err, err, memory_order_relaxed);
  atomic_store(&fault_fired_flag, 0);
  atomic_store(&fault_seen, 0);
  atomic_store(&fault_armed, 1);
}
void dk__fault_disarm(void) { atomic_store(&fault_armed, 0); }
unsigned long dk__fault_calls_seen(void) { return atomic_load(&fault_seen); }
int dk__fault_fired(void) { return atomic_load(&fault_fired_flag); }

/* True when this call must fail; errno is then set. One relaxed load when disarmed. */
static inline int fault(dk_prim_call call)
{
  if (__builtin_expect(!atomic_load_explicit(&fault_armed, memory_order_relaxed), 1))
    return 0;
  if (!(RELAXED(fault_calls) & DK_PRIM_BIT(call)))
    return 0;
  unsigned long n = atomic_fetch_add(&fault_seen, 1) + 1, nth = RELAXED(fault_nth);
  if (n == nth || (RELAXED(fault_forever) && n > nth)) {
    atomic_store(&fault_fired_flag, 1);
    int err = RELAXED(fault_err);
    errno = err ? err : default_errno[call];
    return 1;
  }
  return 0;
}

/* ---- counters ------------------------------------------------------------------------ */
static _Atomic long c_fds, c_map, c_lock, c_heap, c_cache;

dk_prim_counters dk__prim_counters(void)
{
  dk_prim_counters c = { atomic_load(&c_fds), atomic_load(&c_map), atomic_load(&c_lock),
                         atomic_load(&c_heap), atomic_load(&c_cache) };
  return c;
}
#define COUNT(ctr, d) atomic_fetch_add_explicit(&(ctr), (d), memory_order_relaxed)

void dk__prim_count_adopted(size_t len) { COUNT(c_map, (long)len); }
void dk__prim_count_within(size_t len) { COUNT(c_map, -(long)len); }
void dk__prim_count_cache(long delta)
{
  COUNT(c_map, -delta);
  COUNT(c_cache, delta);
}

/* ---- wrappers ------------------------------------------------------------------------ */
void *dk__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
  if (fault(DK_PRIM_MMAP)) return MAP_FAILED;
  void *p = dk__prim.mmap(addr, len, prot, flags, fd, off);
  /* MAP_FIXED replaces address space already counted (a reservation); it adds nothing. */
  if (p != MAP_FAILED && !(flags & MAP_FIXED)) COUNT(c_map, (long)len);
  return p;
}
int dk__munmap(void *addr, size_t len)
{
  if (fault(DK_PRIM_MUNMAP)) return -1;
  int r = dk__prim.munmap(addr, len);
  if (r == 0) COUNT(c_map, -(long)len);
  return r;
}
void *dk__mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr)
{
  if (fault(DK_PRIM_MREMAP)) return MAP_FAILED;
  return dk__prim.mremap(old, old_len, new_len, flags, new_addr);
}
int dk__mprotect(void *addr, size_t len, int prot)
{
  if (fault(DK_PRIM_MPROTECT)) return -1;
  return dk__prim.mprotect(addr, len, prot);
}
/* Populating (madvise) and allocating file pages (fallocate) stop with EINTR when the thread
 * has a signal or io_uring task work pending (TIF_NOTIFY_SIGNAL: an io_uring buffer just
 * unregistered is enough); both are safe to repeat, so the wrapper repeats them. */
int dk__madvise(void *addr, size_t len, int advice)
{
  if (fault(DK_PRIM_MADVISE)) return -1;
  int r, tries = 0;
  while ((r = dk__prim.madvise(addr, len, advice)) < 0 && errno == EINTR && ++tries < DK_EINTR_RETRIES) {}
  return r;
}
int dk__mlock(const void *addr, size_t len)
{
  if (fault(DK_PRIM_MLOCK)) return -1;
  int r = dk__prim.mlock(addr, len);
  if (r == 0) COUNT(c_lock, (long)len);
  return r;
}
int dk__munlock(const void *addr, size_t len)
{
  if (fault(DK_PRIM_MUNLOCK)) return -1;
  int r = dk__prim.munlock(addr, len);
  if (r == 0) COUNT(c_lock, -(long)len);
  return r;
}
int dk__memfd_create(const char *name, unsigned flags)
{
  if (fault(DK_PRIM_MEMFD_CREATE)) return -1;
  int fd = dk__prim.memfd_create(name, flags);
  if (fd >= 0) COUNT(c_fds, 1);
  return fd;
}
int dk__ftruncate(int fd, off_t len)
{
  if (fault(DK_PRIM_FTRUNCATE)) return -1;
  return dk__prim.ftruncate(fd, len);
}
int dk__fallocate(int fd, int mode, off_t off, off_t len)
{
  if (fault(DK_PRIM_FALLOCATE)) return -1;
  int r, tries = 0;
  while ((r = dk__prim.fallocate(fd, mode, off, len)) < 0 && errno == EINTR && ++tries < DK_EINTR_RETRIES) {}
  return r;
}
int dk__open(const char *path, int flags) { return dk__open_mode(path, flags, 0); }
int dk__open_mode(const char *path, int flags, mode_t mode)
{
  if (fault(DK_PRIM_OPEN)) return -1;
  int fd = dk__prim.open(path, flags, mode);
  if (fd >= 0) COUNT(c_fds, 1);
  return fd;
}
int dk__close(int fd)
{
  if (fault(DK_PRIM_CLOSE)) return -1;
  int r = dk__prim.close(fd);
  COUNT(c_fds, -1);     /* Linux releases the descriptor even when close reports an error */
  return r;
}
ssize_t dk__pread(int fd, void *buf, size_t len, off_t off)
{
  if (fault(DK_PRIM_PREAD)) return -1;
  return dk__prim.pread(fd, buf, len, off);
}
ssize_t dk__read(int fd, void *buf, size_t len)
{
  if (fault(DK_PRIM_READ)) return -1;
  return dk__prim.read(fd, buf, len);
}
ssize_t dk__write(int fd, const void *buf, size_t len)
{
  if (fault(DK_PRIM_WRITE)) return -1;
  return dk__prim.write(fd, buf, len);
}
int dk__io_uring_setup(unsigned entries, struct io_uring_params *p)
{
  if (fault(DK_PRIM_IO_URING_SETUP)) return -1;
  int fd = dk__prim.io_uring_setup(entries, p);
  if (fd >= 0) COUNT(c_fds, 1);
  return fd;
}
int dk__io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr)
{
  if (fault(DK_PRIM_IO_URING_REGISTER)) return -1;
  return dk__prim.io_uring_register(fd, opcode, arg, nr);
}
int dk__getrlimit(int resource, struct rlimit *rl)
{
  if (fault(DK_PRIM_GETRLIMIT)) return -1;
  return dk__prim.getrlimit(resource, rl);
}
ssize_t dk__copy_checked(void *dst, const void *src, size_t len)
{
  if (fault(DK_PRIM_PROCESS_VM_READV)) return -1;
  struct iovec l = { dst, len }, r = { (void *)(uintptr_t)src, len };
  return dk__prim.process_vm_readv(getpid(), &l, 1, &r, 1, 0);
}
int dk__socket(int domain, int type, int protocol)
{
  if (fault(DK_PRIM_SOCKET)) return -1;
  int fd = dk__prim.socket(domain, type, protocol);
  if (fd >= 0) COUNT(c_fds, 1);
  return fd;
}
int dk__bind(int fd, const struct sockaddr *addr, unsigned len)
{
  if (fault(DK_PRIM_BIND)) return -1;
  return dk__prim.bind(fd, addr, len);
}
int dk__listen(int fd, int backlog)
{
  if (fault(DK_PRIM_LISTEN)) return -1;
  return dk__prim.listen(fd, backlog);
}
int dk__accept(int fd)
{
  if (fault(DK_PRIM_ACCEPT)) return -1;
  int c = dk__prim.accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c >= 0) COUNT(c_fds, 1);
  return c;
}
int dk__connect(int fd, const struct sockaddr *addr, unsigned len)
{
  if (fault(DK_PRIM_CONNECT)) return -1;
  return dk__prim.connect(fd, addr, len);
}
ssize_t dk__sendmsg(int fd, const struct msghdr *msg, int flags)
{
  if (fault(DK_PRIM_SENDMSG)) return -1;
  return dk__prim.sendmsg(fd, msg, flags | MSG_NOSIGNAL);
}
ssize_t dk__recvmsg(int fd, struct msghdr *msg, int flags)
{
  if (fault(DK_PRIM_RECVMSG)) return -1;
  return dk__prim.recvmsg(fd, msg, flags | MSG_CMSG_CLOEXEC);
}
void dk__prim_count_received(int nfds) { COUNT(c_fds, nfds); }
int dk__poll(struct pollfd *fds, unsigned long nfds, int timeout)
{
  if (fault(DK_PRIM_POLL)) return -1;
  return dk__prim.poll(fds, nfds, timeout);
}
int dk__getsockopt(int fd, int level, int name, void *val, unsigned *len)
{
  if (fault(DK_PRIM_GETSOCKOPT)) return -1;
  return dk__prim.getsockopt(fd, level, name, val, len);
}
int dk__shutdown(int fd, int how)
{
  if (fault(DK_PRIM_SHUTDOWN)) return -1;
  return dk__prim.shutdown(fd, how);
}
int dk__fchmod(int fd, mode_t mode)
{
  if (fault(DK_PRIM_FCHMOD)) return -1;
  return dk__prim.fchmod(fd, mode);
}
int dk__fcntl(int fd, int cmd, int arg)
{
  if (fault(DK_PRIM_FCNTL)) return -1;
  int r = dk__prim.fcntl(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) COUNT(c_fds, 1);   /* a new descriptor */
  return r;
}
int dk__unlink(const char *path)
{
  if (fault(DK_PRIM_UNLINK)) return -1;
  return dk__prim.unlink(path);
}
int dk__pipe(int fds[2])
{
  if (fault(DK_PRIM_PIPE)) return -1;
  int r = dk__prim.pipe2(fds, O_CLOEXEC | O_NONBLOCK);
  if (r == 0) COUNT(c_fds, 2);
  return r;
}
int dk__lstat(const char *path, struct stat *st)
{
  if (fault(DK_PRIM_LSTAT)) return -1;
  return dk__prim.lstat(path, st);
}
int dk__chmod(const char *path, mode_t mode)
{
  if (fault(DK_PRIM_CHMOD)) return -1;
  return dk__prim.chmod(path, mode);
}
int dk__ioctl(int fd, unsigned long request, void *arg)
{
  if (fault(DK_PRIM_IOCTL)) return -1;
  return dk__prim.ioctl(fd, request, arg);
}
ssize_t dk__readlink(const char *path, char *buf, size_t cap)
{
  if (fault(DK_PRIM_READLINK)) return -1;
  if (cap == 0) { errno = ENAMETOOLONG; return -1; }
  ssize_t n = dk__prim.readlink(path, buf, cap);
  if (n < 0) return -1;
  if ((size_t)n >= cap) { errno = ENAMETOOLONG; return -1; }
  buf[n] = '\0';
  return n;
}
int dk__fstat(int fd, struct stat *st)
{
  if (fault(DK_PRIM_FSTAT)) return -1;
  return dk__prim.fstat(fd, st);
}
void dk__sleep_ms(unsigned ms)
{
  struct timespec t = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
  while (nanosleep(&t, &t) < 0 && errno == EINTR) {}
}
int dk__mount(const char *src, const char *target, const char *type, unsigned long flags, const void *data)
{
  if (fault(DK_PRIM_MOUNT)) return -1;
  return dk__prim.mount(src, target, type, flags, data);
}
int dk__umount(const char *target)
{
  if (fault(DK_PRIM_UMOUNT)) return -1;
  return dk__prim.umount(target);
}
int dk__mkdir(const char *path, mode_t mode)
{
  if (fault(DK_PRIM_MKDIR)) return -1;
  return dk__prim.mkdir(path, mode);
}
int dk__kill(pid_t pid, int sig)
{
  if (fault(DK_PRIM_KILL)) return -1;
  return dk__prim.kill(pid, sig);
}
DIR *dk__opendir(const char *path)
{
  if (fault(DK_PRIM_OPENDIR)) return NULL;
  DIR *d = dk__prim.opendir(path);
  if (d) COUNT(c_fds, 1);
  return d;
}
const char *dk__readdir(DIR *d)
{
  struct dirent *e = readdir(d);     /* reads what opendir opened: it fails only as opendir does */
  return e ? e->d_name : NULL;
}
void dk__closedir(DIR *d)
{
  if (!d) return;
  COUNT(c_fds, -1);
  closedir(d);
}
int dk__rename(const char *from, const char *to)
{
  if (fault(DK_PRIM_RENAME)) return -1;
  return dk__prim.rename(from, to);
}
int dk__fcntl_lock(int fd, int cmd, struct flock *lock)
{
  if (fault(DK_PRIM_FCNTL_LOCK)) return -1;
  return dk__prim.fcntl_lock(fd, cmd, lock);
}
int dk__statfs(const char *path, struct statfs *st)
{
  if (fault(DK_PRIM_STATFS)) return -1;
  return dk__prim.statfs(path, st);
}
int dk__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
  if (fault(DK_PRIM_THREAD_CREATE)) return errno;
  return dk__prim.thread_create(t, fn, arg);
}
int dk__thread_join(pthread_t t) { return dk__prim.thread_join(t); }
void *dk__malloc(size_t n)
{
  if (fault(DK_PRIM_MALLOC)) return NULL;
  void *p = dk__prim.malloc(n);
  if (p) COUNT(c_heap, 1);
  return p;
}
void *dk__calloc(size_t n, size_t size)
{
  if (fault(DK_PRIM_CALLOC)) return NULL;
  void *p = dk__prim.calloc(n, size);
  if (p) COUNT(c_heap, 1);
  return p;
}
void *dk__alloc_persistent(size_t align, size_t n)
{
  if (fault(DK_PRIM_MALLOC)) return NULL;
  if (n + align < n) { errno = ENOMEM; return NULL; }
  uint8_t *raw = dk__prim.malloc(n + align);
  if (!raw) return NULL;
  uint8_t *p = raw + ((align - ((uintptr_t)raw & (align - 1))) & (align - 1));
  memset(p, 0, n);
  return p;
}
void dk__free(void *p)
{
  if (!p) return;
  COUNT(c_heap, -1);
  dk__prim.free(p);
}

ssize_t dk__read_text(const char *path, char *buf, size_t cap)
{
  int fd = dk__open(path, O_RDONLY);
  if (fd < 0) return -1;
  size_t got = 0;
  int interrupted = 0;
  while (got + 1 < cap) {
    ssize_t n = dk__read(fd, buf + got, cap - 1 - got);
    if (n < 0) {
      if (errno == EINTR && ++interrupted < DK_EINTR_RETRIES) continue;
      int e = errno;
      dk__close(fd);
      errno = e;
      return -1;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  buf[got] = '\0';
  dk__close(fd);
  return (ssize_t)got;
}

int dk__write_text(const char *path, const char *text)
{
  int fd = dk__open(path, O_WRONLY);
  if (fd < 0) return -1;
  size_t n = strlen(text);
  ssize_t w = dk__write(fd, text, n);
  int e = w < 0 ? errno : EIO;
  dk__close(fd);
  if (w == (ssize_t)n) return 0;
  errno = e;
  return -1;
}
