/*
 * e2e/runas.c: run a command in one of the situations the doctor guest test (e2e/init,
 * E2E_MODE=doctor) needs to reach each kind of fix line:
 *   runas user COMMAND [ARGS...]         as uid/gid 65534 with no groups (not root: "sudo ...")
 *   runas no-io-uring COMMAND [ARGS...]  with io_uring forbidden, as in a container whose
 *                                        seccomp profile blocks it (Docker's default does):
 *                                        io_uring_setup fails with ENOSYS, so dmakit cannot take
 *                                        its long-term pin ("echo 0 > .../compact_unevictable_allowed")
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "no_io_uring.h"   /* tests/support: dkt_forbid_io_uring */

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: runas user|no-io-uring COMMAND [ARGS...]\n");
    return 2;
  }
  if (!strcmp(argv[1], "user")) {
    if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) {
      perror("runas: dropping root");
      return 1;
    }
  } else if (!strcmp(argv[1], "no-io-uring")) {
    if (dkt_forbid_io_uring()) {
      perror("runas: seccomp");
      return 1;
    }
  } else {
    fprintf(stderr, "runas: unknown situation '%s'\n", argv[1]);
    return 2;
  }
  execvp(argv[2], argv + 2);
  perror("runas: exec");
  return 127;
}
