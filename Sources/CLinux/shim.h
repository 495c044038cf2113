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
#endif
