/* tests/test_share_faults.c: sharing (src/share: server, client, transport) under injected
 * system-call and heap failures. One operation runs the whole conversation in this process: a
 * server, a client connected to it, the client asking for memory (read-write and read-only) and
 * reading the driver's bytes through it, the driver pushing a mapping the client picks up, then
 * everything closed. The Nth eligible prim call fails (N = 1, 2, ... until the operation no
 * longer meets the fault), over all calls and over the calls sharing makes alone with the errnos
 * that steer its paths (a socket with no room, an interrupted call, a peer gone). The server's
 * and the client's threads count towards N as the caller does, so which call of which thread
 * fails differs from run to run; what is asserted holds for any of them: the operation succeeds
 * or ends in a documented IOReturn with a reason, and once it has closed everything, the
 * descriptors, mappings, heap blocks and objects are back where they were. Needs no privilege. */
#include "dk_test.h"
#include "iokit/internal.h"
#include "phys/phys.h"
#include "prim/prim.h"

#include <dmakit/dmakit.h>
#include <dmakit/share.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MD(b) ((IOMemoryDescriptor *)(void *)(b))
#define WAIT_MS 1500           /* every wait of the operation: answers that come, come at once */
#define LEN (3 * 4096u)

static char g_dir[64], g_path[108];
static IOBufferMemoryDescriptor *g_buf;
static char g_reason[sizeof(((dk_failure *)0)->text)];

static IOReturn memory_for_type(void *ctx, task_t client, uint32_t type, IOOptionBits *options,
                                IOMemoryDescriptor **memory)
{
  (void)ctx;
  (void)client;
  if (type > 1) return kIOReturnUnsupported;
  OSObject_retain(g_buf);
  *memory = MD(g_buf);
  *options = type == 1 ? kIOMapReadOnly : 0;
  return kIOReturnSuccess;
}

/* The first failure of the operation: its code, its reason kept. */
static IOReturn failed(IOReturn rc)
{
  if (rc == kIOReturnSuccess) rc = dk_last_failure()->code ? dk_last_failure()->code : kIOReturnError;
  snprintf(g_reason, sizeof g_reason, "%s", dk_last_failure()->text);
  return rc;
}

/* Ask for memory type `type` and check the driver's bytes arrive; give it back. */
static IOReturn ask(dk_client *c, uint32_t type)
{
  mach_vm_address_t a = 0;
  mach_vm_size_t len = 0;
  IOReturn rc = dk_client_map_memory(c, type, kIOMapAnywhere | (type == 1 ? kIOMapReadOnly : 0), &a, &len);
  if (rc != kIOReturnSuccess) return failed(rc);
  if (len != LEN || memcmp((void *)(uintptr_t)a, IOBufferMemoryDescriptor_getBytesNoCopy(g_buf), LEN) != 0) {
    snprintf(g_reason, sizeof g_reason, "type %u: the client's mapping is not the driver's bytes", type);
    return kIOReturnInternalError;
  }
  rc = dk_client_unmap_memory(c, a);
  return rc == kIOReturnSuccess ? rc : failed(rc);
}

static IOReturn op_conversation(void)
{
  dk_server_policy pol = { .memory_for_type = memory_for_type, .timeout_ms = WAIT_MS };
  dk_client_options copt = { .timeout_ms = WAIT_MS };
  dk_server *s = NULL;
  dk_client *c = NULL;
  task_t task = NULL;
  IOReturn rc = dk_server_create(g_path, &pol, &s);
  if (rc != kIOReturnSuccess) return failed(rc);
  rc = dk_client_connect(g_path, &copt, &c);
  if (rc != kIOReturnSuccess) rc = failed(rc);
  if (rc == kIOReturnSuccess && (rc = dk_server_accept(s, WAIT_MS, &task)) != kIOReturnSuccess) rc = failed(rc);
  if (rc == kIOReturnSuccess) rc = ask(c, 0);
  if (rc == kIOReturnSuccess) rc = ask(c, 1);
  if (rc == kIOReturnSuccess) {
    IOMemoryMap *m = IOMemoryDescriptor_createMappingInTask(MD(g_buf), task, 0, kIOMapAnywhere, 0, LEN);
    if (!m) rc = failed(kIOReturnSuccess);
    dk_client_mapping got;
    if (rc == kIOReturnSuccess && (rc = dk_client_next_mapping(c, WAIT_MS, &got)) != kIOReturnSuccess) rc = failed(rc);
    if (rc == kIOReturnSuccess && (got.address != IOMemoryMap_getAddress(m) || !got.pushed || got.length != LEN)) {
      snprintf(g_reason, sizeof g_reason, "the pushed mapping arrived as something else");
      rc = kIOReturnInternalError;
    }
    OSSafeReleaseNULL(m);
  }
  if (c) dk_client_close(c);
  if (task) dk_task_release(task);
  dk_server_destroy(s);
  return rc;
}

/* ---- the harness ------------------------------------------------------------------------- */

typedef struct snapshot { dk_prim_counters c; long objects, pins; } snapshot;

static snapshot snap(void)
{
  dk__thread_caches_flush();
  snapshot s = { dk__prim_counters(), dk__objects_live(), dk__pins_live() };
  return s;
}

/* What sharing documents (share.h) for a failure of its own or of the memory behind it. */
static bool documented(IOReturn rc)
{
  return rc == kIOReturnNoMemory || rc == kIOReturnNoResources || rc == kIOReturnIPCError ||
         rc == kIOReturnNotAttached || rc == kIOReturnNotResponding || rc == kIOReturnTimeout ||
         rc == kIOReturnNotFound || rc == kIOReturnVMError || rc == kIOReturnError ||
         rc == kIOReturnNotPermitted || rc == kIOReturnBadMessageID || rc == kIOReturnCannotWire ||
         rc == kIOReturnExclusiveAccess;   /* bind failing as if the address were in use */
}

static unsigned g_codes[64];   /* how often each failure code was seen (by its low bits) */

static unsigned long sweep(const char *what, const snapshot *base, uint64_t calls, int err, int forever)
{
  unsigned long n;
  for (n = 1; n < 2000; n++) {
    g_reason[0] = '\0';
    dk_clear_failure();
    dk__fault_arm(n, forever, calls, err);
    IOReturn rc = op_conversation();
    int fired = dk__fault_fired();
    dk__fault_disarm();
    snapshot now = snap();
    if (now.c.fds != base->c.fds || now.c.map_bytes != base->c.map_bytes || now.c.heap_blocks != base->c.heap_blocks ||
        now.c.lock_bytes != base->c.lock_bytes || now.objects != base->objects || now.pins != base->pins)
      fail_msg("%s, fault at call %lu (%s): leak: fds %ld->%ld map %ld->%ld lock %ld->%ld heap %ld->%ld objects "
               "%ld->%ld pins %ld->%ld (result %s: %s)",
               what, n, forever ? "forever" : "once", base->c.fds, now.c.fds, base->c.map_bytes, now.c.map_bytes,
               base->c.lock_bytes, now.c.lock_bytes, base->c.heap_blocks, now.c.heap_blocks, base->objects,
               now.objects, base->pins, now.pins, dk_ioreturn_name(rc), g_reason);
    if (rc != kIOReturnSuccess) {
      if (!fired) fail_msg("%s: failed (%s: %s) with no fault injected", what, dk_ioreturn_name(rc), g_reason);
      if (!documented(rc))
        fail_msg("%s, fault at call %lu (errno %d): undocumented %s: %s", what, n, err, dk_ioreturn_name(rc), g_reason);
      if (g_reason[0] == '\0') fail_msg("%s, fault at call %lu: %s without a reason", what, n, dk_ioreturn_name(rc));
      g_codes[(unsigned)rc & 63]++;
    }
    if (!fired) break;
  }
  assert_true(n < 2000);
  return n - 1;
}

static int setup(void **state)
{
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/dk-share-faults-XXXXXX");
  assert_non_null(mkdtemp(g_dir));
  snprintf(g_path, sizeof g_path, "%s/sock", g_dir);
  g_buf = IOBufferMemoryDescriptor_inTaskWithOptions(kernel_task, kIOMemoryKernelUserShared | kIODirectionInOut, LEN, 0);
  assert_non_null(g_buf);
  unsigned char *p = IOBufferMemoryDescriptor_getBytesNoCopy(g_buf);
  for (unsigned i = 0; i < LEN; i++) p[i] = (unsigned char)(i * 7 + 3);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  dk__fault_disarm();
  OSSafeReleaseNULL(g_buf);
  unlink(g_path);
  rmdir(g_dir);
  return 0;
}

typedef struct plan { const char *what; uint64_t calls; int err; int forever; } plan;

static void run(const plan *p, size_t n)
{
  assert_int_equal(op_conversation(), kIOReturnSuccess);   /* warm-up: it works, lazy state is made */
  snapshot base = snap();
  for (size_t i = 0; i < n; i++) {
    unsigned long points = sweep(p[i].what, &base, p[i].calls, p[i].err, p[i].forever);
    print_message("  %s (%s): %lu fault points\n", p[i].what, p[i].forever ? "forever" : "once", points);
    assert_true(points > 0);
  }
  assert_int_equal(op_conversation(), kIOReturnSuccess);   /* and it still works */
  snapshot end = snap();
  assert_int_equal(end.c.fds, base.c.fds);
  assert_int_equal(end.c.heap_blocks, base.c.heap_blocks);
}

#define B(call) DK_PRIM_BIT(DK_PRIM_##call)

/* Every call of the conversation, each failing once with its typical errno, then the heap. */
static void faults_any_call(void **state)
{
  (void)state;
  const plan p[] = {
    { "any call", 0, 0, 0 },
    { "heap", B(MALLOC) | B(CALLOC) | B(REALLOC), ENOMEM, 0 },
    { "heap", B(MALLOC) | B(CALLOC) | B(REALLOC), ENOMEM, 1 },
  };
  run(p, sizeof p / sizeof p[0]);
}

/* The transport's own errnos: a socket with no room (the record waits in the queue and the
 * server thread sends it later), an interrupted call (retried), a peer gone or reset. */
static void faults_transport(void **state)
{
  (void)state;
  const plan p[] = {
    { "sendmsg EAGAIN", B(SENDMSG), EAGAIN, 0 },
    { "sendmsg EINTR", B(SENDMSG), EINTR, 0 },
    { "sendmsg EPIPE", B(SENDMSG), EPIPE, 0 },
    { "sendmsg ENOBUFS", B(SENDMSG), ENOBUFS, 0 },
    { "recvmsg EINTR", B(RECVMSG), EINTR, 0 },
    { "recvmsg ECONNRESET", B(RECVMSG), ECONNRESET, 0 },
    { "recvmsg ENOMEM", B(RECVMSG), ENOMEM, 0 },
    { "poll EINTR", B(POLL), EINTR, 0 },
    { "poll ENOMEM", B(POLL), ENOMEM, 0 },
    { "accept EMFILE", B(ACCEPT), EMFILE, 0 },
    { "accept ECONNABORTED", B(ACCEPT), ECONNABORTED, 0 },
    { "getsockopt ENOBUFS", B(GETSOCKOPT), ENOBUFS, 0 },
    { "connect EINTR", B(CONNECT), EINTR, 0 },
    { "connect EAGAIN", B(CONNECT), EAGAIN, 0 },
    { "connect EACCES", B(CONNECT), EACCES, 0 },
    { "fcntl EBADF", B(FCNTL), EBADF, 0 },
    { "memfd/mmap ENOMEM", B(MEMFD_CREATE) | B(MMAP), ENOMEM, 0 },
  };
  run(p, sizeof p / sizeof p[0]);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(faults_any_call, setup, teardown),
    cmocka_unit_test_setup_teardown(faults_transport, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
