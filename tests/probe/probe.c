/* A static probe run inside test containers: tries one attack or system call that
 * busybox cannot make, and prints "NAME: ok" or "NAME: <errno name>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    case ETXTBSY: return "ETXTBSY";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case EINVAL: return "EINVAL";
    default: return strerror(e);
    }
}

static int report(const char *name, long rc) {
    if (rc < 0)
        printf("%s: %s\n", name, err(errno));
    else
        printf("%s: ok\n", name);
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long rc;
        if (!strcmp(a, "ptrace1")) {
            rc = ptrace(PTRACE_ATTACH, 1, 0, 0);
            if (rc == 0) {
                waitpid(1, 0, __WALL);
                ptrace(PTRACE_DETACH, 1, 0, 0);
            }
            report(a, rc);
        } else if (!strcmp(a, "exe1-write")) {
            report(a, open("/proc/1/exe", O_WRONLY));
        } else if (!strcmp(a, "exe1-read")) {
            report(a, open("/proc/1/exe", O_RDONLY));
        } else if (!strcmp(a, "mem1")) {
            report(a, open("/proc/1/mem", O_RDWR));
        } else if (!strcmp(a, "keyctl")) {
            /* KEYCTL_JOIN_SESSION_KEYRING with an anonymous keyring */
            report(a, syscall(SYS_keyctl, 1, 0));
        } else if (!strcmp(a, "add_key")) {
            report(a, syscall(SYS_add_key, "user", "k", "v", 1, -3 /* session */));
        } else if (!strcmp(a, "userns")) {
            report(a, unshare(CLONE_NEWUSER));
        } else if (!strcmp(a, "io_uring")) {
            struct io_uring_params p;
            memset(&p, 0, sizeof p);
            report(a, syscall(SYS_io_uring_setup, 1, &p));
        } else if (!strcmp(a, "clone3")) {
            struct { unsigned long long f[11]; } args;
            memset(&args, 0, sizeof args);
            args.f[4] = SIGCHLD; /* exit_signal */
            rc = syscall(SYS_clone3, &args, sizeof args);
            if (rc == 0)
                _exit(0);
            if (rc > 0)
                waitpid(rc, 0, 0);
            report(a, rc);
        } else if (!strcmp(a, "clone-newns")) {
            rc = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
            if (rc == 0)
                _exit(0);
            if (rc > 0)
                waitpid(rc, 0, 0);
            report(a, rc);
        } else if (!strcmp(a, "mknod-block")) {
            unlink("/tmp/probe-blk");
            rc = mknod("/tmp/probe-blk", S_IFBLK | 0600, makedev(7, 0));
            report("mknod-block", rc);
            report("open-block", open("/tmp/probe-blk", O_RDONLY));
        } else if (!strcmp(a, "mknod-null")) {
            unlink("/tmp/probe-null");
            report(a, mknod("/tmp/probe-null", S_IFCHR | 0666, makedev(1, 3)));
            report("open-null", open("/tmp/probe-null", O_WRONLY));
        } else if (!strcmp(a, "core_pattern")) {
            report(a, open("/proc/sys/kernel/core_pattern", O_WRONLY));
        } else if (!strcmp(a, "chroot-escape")) {
            /* The classic: chroot into a subdirectory while keeping the cwd outside it,
             * climb, chroot to where we ended up. */
            mkdir("/tmp/jail", 0755);
            rc = chroot("/tmp/jail");
            if (rc == 0) {
                for (int k = 0; k < 64; k++)
                    chdir("..");
                rc = chroot(".");
            }
            report("chroot", rc);
            report("host-marker", open(argc > i + 1 ? argv[++i] : "/nonexistent", O_RDONLY));
        } else {
            printf("%s: unknown probe\n", a);
        }
    }
    return 0;
}
