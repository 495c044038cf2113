// Linux interfaces Glibc's Swift module does not bring in: extended attributes, and the
// device-number macros as functions.
#ifndef UMOCI_CLINUX_SHIM_H
#define UMOCI_CLINUX_SHIM_H
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/sysmacros.h>
#include <malloc.h>
#include <stdio.h>
#include <stdio_ext.h>

static inline dev_t umoci_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
static inline unsigned int umoci_major(dev_t dev) { return major(dev); }
static inline unsigned int umoci_minor(dev_t dev) { return minor(dev); }
/// For a long-running server whose large buffers come and go: few arenas, and every block of
/// 128 KiB or more mmapped (glibc's adaptive threshold would otherwise keep freed megabyte
/// buffers in the heap, counted in the resident size).
static inline void umoci_tune_malloc_for_server(void) {
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
}
/// stderr without stdio's lock. libfuse reports a failed read of /dev/fuse with perror() in the
/// part of its worker loop where the thread may be cancelled, and cancels the workers when the
/// loop ends: one cancelled inside perror() left stderr's lock held, and the server then hung
/// in exit() (seen when an aborted connection ended the loop). The server writes its own log
/// with write(2), so perror() and exit() are stderr's only users there.
static inline void umoci_stderr_without_lock(void) {
    __fsetlocking(stderr, FSETLOCKING_BYCALLER);
}
/// syncfs(2), a GNU extension glibc declares only with _GNU_SOURCE: flushes the one file system
/// holding fd (sync(2) flushes them all).
int syncfs(int fd);
static inline int umoci_syncfs(int fd) { return syncfs(fd); }

// ---- FuseFS: kernel interfaces the mount server needs (openat2, renameat2, fallocate, their
// flags). Glibc's Swift module is built without _GNU_SOURCE, so it has neither these functions
// (GNU extensions, or only reachable through the variadic syscall(2) Swift cannot call) nor
// their flags. The flags are literals here, so that Swift imports them as constants; shim.c
// includes the system headers with _GNU_SOURCE and checks every value with _Static_assert,
// so a wrong one does not build.

/// open(2) flags: O_PATH (a descriptor that only names an object: *at() calls, fstat,
/// /proc/self/fd links), O_TMPFILE (an unnamed file in a directory: the orphan copy of a file
/// unlinked while open), with its O_DIRECTORY bit as the kernel wants it.
#define UMOCI_O_PATH 0x200000
#define UMOCI_O_TMPFILE 0x410000
/// *at() flag: act on the descriptor itself (an empty path), O_PATH descriptors included.
#define UMOCI_AT_EMPTY_PATH 0x1000
/// renameat2(2) flags.
#define UMOCI_RENAME_NOREPLACE 1u
#define UMOCI_RENAME_EXCHANGE 2u
#define UMOCI_RENAME_WHITEOUT 4u
/// openat2(2) resolve flags: the upper directory is opened beneath its root, no symlink or
/// /proc magic link followed on the way.
#define UMOCI_RESOLVE_NO_MAGICLINKS 0x02ull
#define UMOCI_RESOLVE_NO_SYMLINKS 0x04ull
#define UMOCI_RESOLVE_BENEATH 0x08ull
/// utimensat(2) tv_nsec values: set to now, leave as is.
#define UMOCI_UTIME_NOW 0x3fffffffl
#define UMOCI_UTIME_OMIT 0x3ffffffel

/// openat2(2) (a system call glibc has no wrapper for) with `struct open_how` {flags, mode 0,
/// resolve}; retried on EINTR and EAGAIN. -1 with errno (ENOSYS before Linux 5.6).
int umoci_openat2(int dirfd, const char *path, int flags, unsigned long long resolve);
/// renameat2(2), a GNU extension of glibc (RENAME_EXCHANGE, RENAME_NOREPLACE).
int umoci_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
/// fallocate(2), a GNU extension of glibc (FUSE's fallocate is passed on as is).
int umoci_fallocate(int fd, int mode, long long offset, long long length);
// ---- end of FuseFS's kernel interfaces
#endif
