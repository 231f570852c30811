/* dmakit/share.h: buffers shared with other processes. The driver (this process) listens on
 * a Unix socket; each connected client process is, to the driver, a task_t. A buffer reaches
 * a client as its memfd (SCM_RIGHTS), which the client library maps at an address of its own
 * choosing. Read-only clients receive a read-only file description: the kernel refuses their
 * writes, mprotect and writable mmap. Memory lives while the driver or any client holds it.
 *
 * Driver side (IOKit's user-client model):
 *   dk_server_create()                      listen, with a policy: who may connect, with which rights
 *   dk_server_accept()                      the next client that connected, as a task_t
 *   IOMemoryDescriptor_createMappingInTask(md, client, 0, kIOMapAnywhere [| kIOMapReadOnly], off, len)
 *                                           map a buffer into the client (IOMemoryMap_getAddress is the
 *                                           client's address); releasing the map unmaps it there
 *   IOBufferMemoryDescriptor_inTaskWithOptions(client, kIOMemoryPageable | kIOMemoryKernelUserShared | ...)
 *                                           a buffer that lives in the client (XNU: a user task's buffer
 *                                           is pageable; getBytesNoCopy is the client's address)
 *   policy.memory_for_type                  IOUserClient::clientMemoryForType: what a client gets when
 *                                           it asks for memory type N (dk_client_map_memory)
 * Client side (IOConnectMapMemory64 and friends):
 *   dk_client_connect(), dk_client_map_memory(), dk_client_unmap_memory(), dk_client_next_mapping(),
 *   dk_client_close().
 * A client library thread answers the driver's mapping requests, so a client need not poll. */
#ifndef DMAKIT_SHARE_H
#define DMAKIT_SHARE_H

#include <dmakit/IOMemoryDescriptor.h>

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- driver side -------------------------------------------------------------------------- */

/* Who is on the other end of a connection, from SO_PEERCRED (the kernel's word, not the
 * client's). */
typedef struct dk_peer {
  pid_t pid;
  uid_t uid;
  gid_t gid;
} dk_peer;

/* What a client may do. */
typedef enum dk_access {
  DK_ACCESS_NONE = 0,         /* refused at connect */
  DK_ACCESS_READ = 1,         /* mappings are read-only (a read-only file description) */
  DK_ACCESS_READ_WRITE = 3,   /* read-write mappings allowed (read-only ones too) */
} dk_access;

typedef struct dk_server dk_server;

typedef struct dk_server_policy {
  /* Decide a connecting peer's access. NULL: the same effective uid as the driver, or uid 0,
   * gets DK_ACCESS_READ_WRITE, everybody else DK_ACCESS_NONE. Called on the server thread, only
   * for a connection still open that could be served (below max_clients); every peer admitted
   * is reported to `disconnected` once, even if it left before it was welcomed. The socket
   * file is mode 0666: this callback, not the file system, decides who gets in. */
  dk_access (*admit)(void *ctx, const dk_peer *peer);
  /* IOUserClient::clientMemoryForType: the descriptor a client gets for memory type `type`,
   * returned retained (the server releases it), and map options (kIOMapReadOnly, cache mode)
   * in *options. Return an error to refuse; NULL means every request is refused with
   * kIOReturnUnsupported. Called on the server thread. */
  IOReturn (*memory_for_type)(void *ctx, task_t client, uint32_t type, IOOptionBits *options,
                              IOMemoryDescriptor **memory);
  /* A client went away (closed, crashed, killed, or was disconnected for misbehaving or for
   * not responding). Its mappings are already gone; the task_t stays valid while references
   * to it remain. */
  void (*disconnected)(void *ctx, task_t client);
  void *ctx;
  /* Clients connected at once; 0 means 64. More are refused (kIOReturnNoResources). */
  unsigned max_clients;
  /* A client is cut off as unresponsive (kIOReturnNotResponding) when it takes nothing from
   * its socket for this long while records wait for it, or leaves a MAP (pushed, or answering
   * its own request) unanswered this long; 0 means DK_OPTION_SHARE_TIMEOUT_MS. Nothing sent to
   * a client is dropped: what does not fit in its socket waits, in order. */
  int timeout_ms;
} dk_server_policy;

/* Listen on the Unix socket `path` (created with mode 0666, whatever the umask: the policy is
 * the access control; an existing socket file there is replaced only if nobody listens on
 * it). `policy` may be NULL (the default policy). The server's own thread accepts clients
 * and serves their requests. */
DK_API IOReturn dk_server_create(const char *path, const dk_server_policy *policy, dk_server **out);
/* The next client that connected and was admitted, waiting up to timeout_ms (-1: for ever).
 * The task comes retained: dk_task_release it. kIOReturnTimeout when none came;
 * kIOReturnNotAttached when dk_server_destroy was called meanwhile. */
DK_API IOReturn dk_server_accept(dk_server *server, int timeout_ms, task_t *client);
/* Disconnect every client (they are told; their mappings stay valid in them), stop the
 * thread, remove the socket file, free the server. Tasks still referenced stay valid (dead). */
DK_API void dk_server_destroy(dk_server *server);
/* Clients connected now. */
DK_API unsigned dk_server_client_count(dk_server *server);

/* What a server has seen since it was created. Every connection taken from the socket is
 * vanished (closed before the server got to it: the policy is not asked), refused (with a
 * RESULT saying why: the policy, or max_clients) or admitted; every admitted one is reported
 * to `disconnected` once when it ends. */
typedef struct dk_server_stats {
  uint32_t size;               /* sizeof(dk_server_stats): set it before the call */
  uint32_t version;            /* 1 */
  uint64_t connections;        /* taken from the listening socket */
  uint64_t vanished;           /* closed before the policy was asked */
  uint64_t refused;            /* by the policy, or over max_clients (or the accept queue's 64) */
  uint64_t admitted;
  uint64_t disconnected;       /* admitted clients that ended (`disconnected` was called) */
  uint64_t cut_unresponsive;   /* of which cut off (kIOReturnNotResponding) for taking nothing
                                  from their socket, or leaving a MAP unanswered, for timeout_ms */
  uint64_t bad_records;        /* records the protocol gate refused (each answered with a RESULT) */
  uint64_t queued;             /* records waiting now for room in clients' sockets */
  uint64_t queued_max;         /* the most that waited for one client at once */
  uint64_t read_pauses;        /* times a client's requests were left unread while 64 records
                                  waited for room in its socket */
} dk_server_stats;

/* The server's counters (stats->size must be set; a smaller, older struct gets its fields). */
DK_API IOReturn dk_server_get_stats(dk_server *server, dk_server_stats *stats);

/* A client task's handle: counted references (dk_server_accept's is one). */
DK_API void dk_task_retain(task_t task);
DK_API void dk_task_release(task_t task);
/* The peer's credentials and access; false for kernel_task, NULL or a bad handle. */
DK_API bool dk_task_get_peer(task_t task, dk_peer *peer, dk_access *access);
/* Still connected. */
DK_API bool dk_task_is_connected(task_t task);
/* Cut a client off: it is told (BYE) and its connection closed; the driver's records of its
 * mappings are dropped (maps into it read address 0) and further calls into it fail with
 * kIOReturnNotAttached. What the client already mapped stays mapped in it until it unmaps or
 * closes: no process can unmap another's memory. */
DK_API void dk_task_disconnect(task_t task);

/* ---- client side -------------------------------------------------------------------------- */

typedef struct dk_client dk_client;

/* One mapping in the client. */
typedef struct dk_client_mapping {
  uint64_t          id;        /* the driver's name for it, unique per connection */
  mach_vm_address_t address;   /* where the range starts in this process */
  mach_vm_size_t    length;    /* bytes of the range */
  uint32_t          tag;       /* the descriptor's getTag() when the driver mapped it in */
  uint32_t          type;      /* the memory type asked for (dk_client_map_memory), else 0 */
  bool              writable;
  bool              pushed;    /* the driver mapped it in on its own (createMappingInTask) */
} dk_client_mapping;

typedef struct dk_client_options {
  /* Called on the library's thread when the driver has mapped a buffer in (the mapping is
   * usable), when it took one back (the address is no longer mapped), and once when the
   * driver went away (mappings stay valid until dk_client_close or unmap). Any may be NULL.
   * The mapping is listed (dk_client_next_mapping, dk_client_find_mapping) before `mapped`
   * runs: a thread that unmaps it meanwhile races the callback, so unmap what the callback
   * has finished with. */
  void (*mapped)(void *ctx, const dk_client_mapping *mapping);
  void (*unmapped)(void *ctx, const dk_client_mapping *mapping);
  void (*driver_gone)(void *ctx);
  void *ctx;
  int timeout_ms;   /* waits for the driver's answers; 0 means DK_OPTION_SHARE_TIMEOUT_MS */
} dk_client_options;

/* Connect to the driver listening on `path`. options may be NULL. kIOReturnNotPermitted when
 * the driver's policy refused this process, or the file system did (the socket's mode or a
 * directory on the path); dk_last_failure says which and why. kIOReturnNotFound: nobody
 * listens there; kIOReturnIPCError: the socket failed otherwise. */
DK_API IOReturn dk_client_connect(const char *path, const dk_client_options *options, dk_client **out);
/* IOConnectMapMemory64: ask for memory type `type`. options: kIOMapAnywhere (the address is
 * always this library's choice), a cache mode, kIOMapReadOnly, kIOMapPrefault; anything else
 * is kIOReturnBadArgument. The driver decides what the memory is. A client with read-only
 * access must ask with kIOMapReadOnly (else kIOReturnNotPrivileged). */
DK_API IOReturn dk_client_map_memory(dk_client *client, uint32_t type, IOOptionBits options,
                                     mach_vm_address_t *address, mach_vm_size_t *length);
/* IOConnectUnmapMemory64: give back a mapping made at `address` (by either side). */
DK_API IOReturn dk_client_unmap_memory(dk_client *client, mach_vm_address_t address);
/* The oldest mapping the driver pushed and this call has not returned yet, waiting up to
 * timeout_ms (-1: for ever). kIOReturnTimeout if none came, kIOReturnNotAttached if the
 * driver is gone and none is left. */
DK_API IOReturn dk_client_next_mapping(dk_client *client, int timeout_ms, dk_client_mapping *mapping);
/* The mapping that contains `address`, if any. */
DK_API bool dk_client_find_mapping(dk_client *client, mach_vm_address_t address, dk_client_mapping *mapping);
/* Still connected to a live driver. */
DK_API bool dk_client_is_connected(dk_client *client);
/* Disconnect, unmap every mapping this connection made, free everything. It may be called from
 * the connection's own callbacks (the library's thread then frees it when the callback
 * returns); the handle is invalid once it returns either way. */
DK_API void dk_client_close(dk_client *client);

#ifdef __cplusplus
}
#endif
#endif
