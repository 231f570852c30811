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
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int forbid_io_uring(void)
{
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { (unsigned short)(sizeof f / sizeof f[0]), f };
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) ? -1 : 0;
}

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
    if (forbid_io_uring()) {
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
