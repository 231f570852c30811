/* tests/support/no_io_uring.h: forbid io_uring to this process and what it executes, as a
 * container whose seccomp profile blocks it does (Docker's default): io_uring_setup fails with
 * ENOSYS, so dmakit cannot take its long-term pin. Header-only: test_pinning uses it in a forked
 * child, and the end-to-end guest's e2e/runas.c (a static program outside the test build). */
#ifndef DKT_NO_IO_URING_H
#define DKT_NO_IO_URING_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define DKT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define DKT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef DKT_AUDIT_ARCH
/* 0, or -1 with errno (prctl's). */
static inline int dkt_forbid_io_uring(void)
{
  struct sock_filter filt[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DKT_AUDIT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { (unsigned short)(sizeof filt / sizeof filt[0]), filt };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0 ? -1 : 0;
}
#endif

#endif
