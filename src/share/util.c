/* src/share/util.c: what both ends of a connection need alike: the socket address from a
 * path (checked), condition variables on the monotonic clock, and deadlines on it. */
#include "share/share.h"

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

struct timespec dk__share_deadline(int ms)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) { t.tv_sec++; t.tv_nsec -= 1000000000L; }
  return t;
}
