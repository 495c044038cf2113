// The functions shim.h declares that need glibc's GNU extensions (which Glibc's Swift module
// leaves out), and the checks of shim.h's literal kernel constants against the system headers.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>
#include "shim.h"

_Static_assert(UMOCI_O_PATH == O_PATH, "O_PATH");
_Static_assert(UMOCI_O_TMPFILE == O_TMPFILE, "O_TMPFILE");
_Static_assert(UMOCI_AT_EMPTY_PATH == AT_EMPTY_PATH, "AT_EMPTY_PATH");
_Static_assert(UMOCI_RENAME_NOREPLACE == RENAME_NOREPLACE, "RENAME_NOREPLACE");
_Static_assert(UMOCI_RENAME_EXCHANGE == RENAME_EXCHANGE, "RENAME_EXCHANGE");
_Static_assert(UMOCI_RENAME_WHITEOUT == RENAME_WHITEOUT, "RENAME_WHITEOUT");
_Static_assert(UMOCI_RESOLVE_NO_MAGICLINKS == RESOLVE_NO_MAGICLINKS, "RESOLVE_NO_MAGICLINKS");
_Static_assert(UMOCI_RESOLVE_NO_SYMLINKS == RESOLVE_NO_SYMLINKS, "RESOLVE_NO_SYMLINKS");
_Static_assert(UMOCI_RESOLVE_BENEATH == RESOLVE_BENEATH, "RESOLVE_BENEATH");
_Static_assert(UMOCI_UTIME_NOW == UTIME_NOW, "UTIME_NOW");
_Static_assert(UMOCI_UTIME_OMIT == UTIME_OMIT, "UTIME_OMIT");
// The first version of struct open_how, the one umoci_openat2 passes (OPEN_HOW_SIZE_VER0).
_Static_assert(sizeof(struct open_how) == 24, "struct open_how");
_Static_assert(sizeof(long long) == sizeof(off_t), "fallocate offsets are 64-bit");

int umoci_openat2(int dirfd, const char *path, int flags, unsigned long long resolve) {
    struct open_how how = {.flags = (unsigned int)flags, .mode = 0, .resolve = resolve};
    for (;;) {
        long r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (r == -1 && (errno == EINTR || errno == EAGAIN)) continue;
        return (int)r;
    }
}

int umoci_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int umoci_fallocate(int fd, int mode, long long offset, long long length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length);
}
