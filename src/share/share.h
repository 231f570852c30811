/* src/share/share.h: the driver side of sharing, as the iokit layer sees it. A client task is a
 * connection (struct dk_conn, whose first member is its struct dk_task); each mapping the
 * client holds is an entry keyed by a per-connection id. The iokit layer maps and unmaps
 * through dk__share_map/dk__share_unmap and learns of the client's side through two hooks:
 * set_address (called under the connection's lock: an atomic store, nothing more) and drop
 * (the server's own reference on a mapping it made for a client request, released without
 * locks). server.c owns connections, the socket and the server thread; client.c is the
 * client library. */
#ifndef DK_SHARE_H
#define DK_SHARE_H

#include "base/base.h"

#include <dmakit/share.h>

#include <pthread.h>
#include <sys/types.h>
#include <time.h>

struct sockaddr_un;

struct dk_task {
  uint32_t    magic;
  const char *name;
};
#define DK_TASK_MAGIC        0x7a5c7a5cu   /* kernel_task */
#define DK_CLIENT_TASK_MAGIC 0x7a5cc11eu   /* a connected client (struct dk_conn) */

/* What an entry refers to, for the hooks. */
typedef enum dk_share_kind {
  DK_SHARE_MAP,        /* an IOMemoryMap the driver holds (createMappingInTask) */
  DK_SHARE_MAP_OWNED,  /* an IOMemoryMap the server holds for a client's request */
  DK_SHARE_BUFFER,     /* a buffer created in the client task: its own mapping there */
} dk_share_kind;

typedef struct dk_share_hooks {
  /* Under the connection's lock, when the entry is published: the object learns its id; a
   * DK_SHARE_MAP_OWNED map takes the server's own reference (dropped by `drop`) and is marked
   * as the server's, so that no other request shares it. An atomic store or two, no locks. */
  void (*published)(void *obj, dk_share_kind kind, uint64_t id);
  void (*set_address)(void *obj, dk_share_kind kind, uint64_t address);
  void (*drop)(void *obj, dk_share_kind kind);
  /* IOUserClient::clientMemoryForType and the mapping of it, on the server thread: success
   * when the MAP went out (the server holds the map through its entry), else the failure
   * recorded. */
  IOReturn (*map_for_type)(const dk_server_policy *policy, task_t client, uint32_t type, IOOptionBits options,
                           uint32_t seq);
} dk_share_hooks;
/* Supplied by the iokit layer (src/iokit/userclient.c): sharing calls up only through it.
 * Every hook is set: server.c calls them without checking. */
extern const dk_share_hooks dk__share_hooks;
/* Around the mapping made for a client's request (server thread), inside map_for_type after
 * the policy chose the memory: the next dk__share_map answers request `seq` (for memory type
 * `type`) and its entry is DK_SHARE_MAP_OWNED. */
void dk__share_reply_begin(uint32_t seq, uint32_t type);
void dk__share_reply_end(void);

/* The task as a client connection, or false (kernel_task, NULL, not a task). */
bool dk__task_is_client(task_t task);
void dk__task_retain(task_t task);
void dk__task_release(task_t task);

typedef struct dk_share_req {
  int      memfd;        /* the buffer's memfd (sealed and chmod'ed here before it leaves) */
  uint64_t file_offset;  /* page-aligned */
  uint64_t span;         /* page multiple */
  uint64_t in_page;
  uint64_t length;
  bool     writable;
  bool     populate;
  uint32_t tag;
  void    *obj;
  dk_share_kind kind;
} dk_share_req;

/* Map a range of a memfd into the client and wait for its address. On the server thread (a
 * policy callback, a client's request) it does not wait: *address is 0 and set_address fills
 * it when the client answers. Returns kIOReturnSuccess with the entry's id, or an error with
 * the failure recorded (kIOReturnNotAttached: gone; kIOReturnNotPrivileged: a read-only
 * client; kIOReturnNotResponding: no answer in time, the client is cut off). */
IOReturn dk__share_map(task_t task, const dk_share_req *req, uint64_t *id, uint64_t *address);
/* Take mapping `id` back from the client (no wait). Nothing when it is already gone. */
void dk__share_unmap(task_t task, uint64_t id);

/* util.c: the address for `path` (1 to 107 bytes), or kIOReturnBadArgument recorded; a
 * condition variable on CLOCK_MONOTONIC; that clock `ms` from now. */
IOReturn dk__share_sockaddr(const char *path, struct sockaddr_un *sa);
void dk__share_cond_init(pthread_cond_t *cond);
struct timespec dk__share_deadline(int ms);
/* Send one record of `len` bytes (and at most one descriptor, -1 for none) without blocking:
 * 0, or -1 with errno (EAGAIN: no room in the other side's socket now). */
int dk__share_send_once(int fd, const void *rec, size_t len, int pass_fd);
/* The same, waiting up to timeout_ms for room when the other side's socket is full (0: not at
 * all). 0, or -1 with errno (ETIMEDOUT: no room in time). */
struct dk_msg;
int dk__share_send(int fd, const struct dk_msg *m, int pass_fd, int timeout_ms);
/* Receive one record (EINTR retried) into buf: the first descriptor that came with it in
 * *keep_fd (-1 if none; with keep_fd NULL every one is closed), the others closed, how many
 * came in *nfds, the message flags (MSG_TRUNC, MSG_CTRUNC) in *flags. Bytes; 0 only at the end
 * of the stream (the peer closed); -1 with errno, EBADMSG for an empty record (which
 * SOCK_SEQPACKET otherwise reads as 0: the peer is still connected). */
ssize_t dk__share_recv(int fd, void *buf, size_t cap, int msg_flags, int *keep_fd, int *nfds, int *flags);
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t dk__share_now_ms(void);

#endif
