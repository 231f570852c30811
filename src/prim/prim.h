/* src/prim/prim.h: the only door to the operating system. Every system call and every heap
 * allocation of the library goes through dk__prim (a table of function pointers tests may
 * swap) and through the wrappers below, which add fault injection (fail the Nth call, once or
 * for ever, with a chosen errno) and live-resource counters (fds, mapped bytes, locked bytes,
 * heap blocks) so that tests can prove nothing leaked. Internal convention: -1/MAP_FAILED/NULL
 * with errno set, exactly as the system call; translation to IOReturn happens above. */
#ifndef DK_PRIM_H
#define DK_PRIM_H

#include <dirent.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>

struct io_uring_params;
struct rlimit;
struct iovec;
struct sockaddr;
struct msghdr;
struct pollfd;
struct stat;
struct statfs;
struct flock;

typedef struct dk_prim_table {
  void   *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
  int     (*munmap)(void *addr, size_t len);
  int     (*mprotect)(void *addr, size_t len, int prot);
  int     (*madvise)(void *addr, size_t len, int advice);
  int     (*mlock)(const void *addr, size_t len);
  int     (*munlock)(const void *addr, size_t len);
  int     (*memfd_create)(const char *name, unsigned flags);
  int     (*ftruncate)(int fd, off_t len);
  int     (*fallocate)(int fd, int mode, off_t off, off_t len);
  int     (*open)(const char *path, int flags, mode_t mode);
  int     (*close)(int fd);
  ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
  ssize_t (*read)(int fd, void *buf, size_t len);
  ssize_t (*write)(int fd, const void *buf, size_t len);
  int     (*io_uring_setup)(unsigned entries, struct io_uring_params *p);
  int     (*io_uring_register)(int fd, unsigned opcode, void *arg, unsigned nr);
  int     (*getrlimit)(int resource, struct rlimit *rl);
  ssize_t (*process_vm_readv)(pid_t pid, const struct iovec *local, unsigned long nl,
                              const struct iovec *remote, unsigned long nr, unsigned long flags);
  int     (*socket)(int domain, int type, int protocol);
  int     (*bind)(int fd, const struct sockaddr *addr, unsigned len);
  int     (*listen)(int fd, int backlog);
  int     (*accept4)(int fd, struct sockaddr *addr, unsigned *len, int flags);
  int     (*connect)(int fd, const struct sockaddr *addr, unsigned len);
  ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
  ssize_t (*recvmsg)(int fd, struct msghdr *msg, int flags);
  int     (*poll)(struct pollfd *fds, unsigned long nfds, int timeout);
  int     (*getsockopt)(int fd, int level, int name, void *val, unsigned *len);
  int     (*shutdown)(int fd, int how);
  int     (*fchmod)(int fd, mode_t mode);
  int     (*fcntl)(int fd, int cmd, int arg);
  int     (*unlink)(const char *path);
  int     (*lstat)(const char *path, struct stat *st);
  int     (*ioctl)(int fd, unsigned long request, void *arg);
  ssize_t (*readlink)(const char *path, char *buf, size_t cap);
  int     (*fstat)(int fd, struct stat *st);
  int     (*mount)(const char *src, const char *target, const char *type, unsigned long flags, const void *data);
  int     (*umount)(const char *target);
  int     (*rename)(const char *from, const char *to);
  int     (*fcntl_lock)(int fd, int cmd, struct flock *lock);
  int     (*statfs)(const char *path, struct statfs *st);
  int     (*chmod)(const char *path, mode_t mode);
  int     (*pipe2)(int fds[2], int flags);
  int     (*mkdir)(const char *path, mode_t mode);
  int     (*kill)(pid_t pid, int sig);
  DIR    *(*opendir)(const char *path);
  void   *(*mremap)(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
  int     (*thread_create)(pthread_t *t, void *(*fn)(void *), void *arg);
  int     (*thread_join)(pthread_t t);
  void   *(*malloc)(size_t n);
  void   *(*calloc)(size_t n, size_t size);
  void   *(*realloc)(void *p, size_t n);
  void    (*free)(void *p);
} dk_prim_table;

/* Call identifiers, for fault injection and counters. */
typedef enum dk_prim_call {
  DK_PRIM_MMAP, DK_PRIM_MUNMAP, DK_PRIM_MPROTECT, DK_PRIM_MADVISE, DK_PRIM_MLOCK,
  DK_PRIM_MUNLOCK, DK_PRIM_MEMFD_CREATE, DK_PRIM_FTRUNCATE, DK_PRIM_FALLOCATE, DK_PRIM_OPEN,
  DK_PRIM_CLOSE, DK_PRIM_PREAD, DK_PRIM_READ, DK_PRIM_WRITE, DK_PRIM_IO_URING_SETUP, DK_PRIM_IO_URING_REGISTER,
  DK_PRIM_GETRLIMIT, DK_PRIM_PROCESS_VM_READV, DK_PRIM_THREAD_CREATE, DK_PRIM_MALLOC, DK_PRIM_CALLOC, DK_PRIM_REALLOC,
  DK_PRIM_SOCKET, DK_PRIM_BIND, DK_PRIM_LISTEN, DK_PRIM_ACCEPT, DK_PRIM_CONNECT, DK_PRIM_SENDMSG,
  DK_PRIM_RECVMSG, DK_PRIM_POLL, DK_PRIM_GETSOCKOPT, DK_PRIM_SHUTDOWN, DK_PRIM_FCHMOD, DK_PRIM_FCNTL,
  DK_PRIM_UNLINK, DK_PRIM_PIPE, DK_PRIM_LSTAT, DK_PRIM_IOCTL, DK_PRIM_READLINK, DK_PRIM_FSTAT,
  DK_PRIM_MKDIR, DK_PRIM_KILL, DK_PRIM_OPENDIR,
  DK_PRIM_MOUNT, DK_PRIM_UMOUNT, DK_PRIM_RENAME, DK_PRIM_FCNTL_LOCK, DK_PRIM_STATFS,
  DK_PRIM_CHMOD, DK_PRIM_MREMAP,
  DK_PRIM__COUNT
} dk_prim_call;

extern dk_prim_table dk__prim;                 /* current entries; tests may replace them */
extern const dk_prim_table dk__prim_default;   /* the real system calls */
const char *dk__prim_call_name(dk_prim_call call);

/* ---- fault injection ---------------------------------------------------------------- */
/* Fail the `nth` (1-based) eligible call from now on; `forever` keeps failing every eligible
 * call after it. `calls` is a bit mask of DK_PRIM_BIT(dk_prim_call), 0 = every call except the
 * release-type calls (munmap, munlock, close, shutdown, unlink, umount, free), which cannot
 * meaningfully fail.
 * `err` is the errno to report; 0 picks the call's most typical error. */
#define DK_PRIM_BIT(call) (1ull << (call))
void dk__fault_arm(unsigned long nth, int forever, uint64_t calls, int err);
void dk__fault_disarm(void);
/* How many eligible calls were seen since arming, and whether a fault has fired. */
unsigned long dk__fault_calls_seen(void);
int  dk__fault_fired(void);

/* ---- live-resource counters --------------------------------------------------------- */
typedef struct dk_prim_counters {
  long fds;            /* descriptors opened and not closed */
  long map_bytes;      /* bytes mapped and not unmapped (MAP_FIXED over a reservation adds 0) */
  long lock_bytes;     /* bytes mlock'ed and not munlock'ed */
  long heap_blocks;    /* malloc/calloc blocks not freed */
  long cache_bytes;    /* of the mapped bytes, those the object allocator keeps as its cache (empty
                        * descriptor arenas stay mapped until dk_pool_trim); not in map_bytes */
} dk_prim_counters;
dk_prim_counters dk__prim_counters(void);
/* A MAP_FIXED mapping over address space dmakit did not reserve (kIOMapOverwrite) becomes
 * dmakit's: count it, so its munmap balances. */
void dk__prim_count_adopted(size_t len);
/* The opposite: a fixed mapping counted as adopted landed inside dmakit's own reservation,
 * which is counted already. */
void dk__prim_count_within(size_t len);
/* Bytes of a mapping the allocator starts (delta > 0) or stops (delta < 0) keeping as a cache:
 * they move between map_bytes and cache_bytes, so a leak check sees what callers hold. */
void dk__prim_count_cache(long delta);

/* ---- wrappers: the library calls these, never the table directly -------------------- */
void   *dk__mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int     dk__munmap(void *addr, size_t len);
int     dk__mprotect(void *addr, size_t len, int prot);
/* mremap with a new address (MREMAP_FIXED); with old_len 0 a second mapping of the same shared
 * pages. Counted like a MAP_FIXED mmap: it replaces address space already counted. */
void   *dk__mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);
int     dk__madvise(void *addr, size_t len, int advice);
int     dk__mlock(const void *addr, size_t len);
int     dk__munlock(const void *addr, size_t len);
int     dk__memfd_create(const char *name, unsigned flags);
int     dk__ftruncate(int fd, off_t len);
int     dk__fallocate(int fd, int mode, off_t off, off_t len);
int     dk__open(const char *path, int flags);
int     dk__open_mode(const char *path, int flags, mode_t mode);   /* with O_CREAT */
int     dk__close(int fd);
ssize_t dk__pread(int fd, void *buf, size_t len, off_t off);
ssize_t dk__read(int fd, void *buf, size_t len);
ssize_t dk__write(int fd, const void *buf, size_t len);
int     dk__io_uring_setup(unsigned entries, struct io_uring_params *p);
int     dk__io_uring_register(int fd, unsigned opcode, void *arg, unsigned nr);
int     dk__getrlimit(int resource, struct rlimit *rl);
/* Copy from this process's own memory without faulting: EFAULT for an unmapped source. */
ssize_t dk__copy_checked(void *dst, const void *src, size_t len);
/* A helper thread (returns 0, or an error number as pthread_create does). */
/* Sockets and descriptors for src/share. Descriptors they create are counted as fds. Every
 * socket and pipe is created close-on-exec; accept4 and recvmsg add CLOEXEC themselves. */
int     dk__socket(int domain, int type, int protocol);
int     dk__bind(int fd, const struct sockaddr *addr, unsigned len);
int     dk__listen(int fd, int backlog);
int     dk__accept(int fd);
int     dk__connect(int fd, const struct sockaddr *addr, unsigned len);
ssize_t dk__sendmsg(int fd, const struct msghdr *msg, int flags);
/* recvmsg with MSG_CMSG_CLOEXEC; descriptors received are counted. */
ssize_t dk__recvmsg(int fd, struct msghdr *msg, int flags);
/* A descriptor that arrived in a message (now the library's to close) is counted once. */
void    dk__prim_count_received(int nfds);
int     dk__poll(struct pollfd *fds, unsigned long nfds, int timeout);
int     dk__getsockopt(int fd, int level, int name, void *val, unsigned *len);
int     dk__shutdown(int fd, int how);
int     dk__fchmod(int fd, mode_t mode);
int     dk__fcntl(int fd, int cmd, int arg);
int     dk__unlink(const char *path);
int     dk__pipe(int fds[2]);
int     dk__lstat(const char *path, struct stat *st);
int     dk__chmod(const char *path, mode_t mode);
/* ioctl with a pointer argument (VFIO); EINTR is retried by the caller. */
int     dk__ioctl(int fd, unsigned long request, void *arg);
/* readlink, NUL-terminated; -1 with errno (ENAMETOOLONG when it does not fit). */
ssize_t dk__readlink(const char *path, char *buf, size_t cap);
int     dk__fstat(int fd, struct stat *st);
/* Sleep this many milliseconds (a wait for memory on its way back; never fails). */
void    dk__sleep_ms(unsigned ms);
int     dk__mkdir(const char *path, mode_t mode);
/* kill(pid, 0) asks whether a process exists: 0, or -1 with ESRCH when it does not. */
int     dk__kill(pid_t pid, int sig);
/* The names in a directory, one at a time (a directory stream counts as a descriptor). */
DIR    *dk__opendir(const char *path);
const char *dk__readdir(DIR *d);
void    dk__closedir(DIR *d);
/* For reservations (src/phys/reserve.c): mounting hugetlbfs, their directories and records,
 * and open-file-description byte-range locks (fcntl F_OFD_SETLK/SETLKW/GETLK). */
int     dk__mount(const char *src, const char *target, const char *type, unsigned long flags, const void *data);
int     dk__umount(const char *target);
int     dk__rename(const char *from, const char *to);
int     dk__fcntl_lock(int fd, int cmd, struct flock *lock);
int     dk__statfs(const char *path, struct statfs *st);
int     dk__thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
int     dk__thread_join(pthread_t t);
void   *dk__malloc(size_t n);
void   *dk__calloc(size_t n, size_t size);
void    dk__free(void *p);
/* Metadata that lives as long as the process and is reused rather than freed (slab records,
 * slab heaps): through the fault injector like malloc, zeroed, aligned to `align` (a power of
 * two), and not counted as a live heap block (nothing ever frees it). */
void   *dk__alloc_persistent(size_t align, size_t n);

/* Retries of a call interrupted by a signal before its EINTR is reported as a failure. */
#define DK_EINTR_RETRIES 16

/* Read a small text file (sysctl, /proc) into buf, NUL-terminated; -1 on error. */
ssize_t dk__read_text(const char *path, char *buf, size_t cap);
/* Write `text` to an existing file (a sysctl, a sysfs knob) in one write; 0, or -1 with errno. */
int     dk__write_text(const char *path, const char *text);

#endif
