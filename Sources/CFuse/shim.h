// libfuse 3 low-level API for FuseFS. FUSE_USE_VERSION must be set before the header; some
// entry points are macros in newer libfuse releases, so FuseFS calls these wrappers instead,
// which keeps the Swift code independent of that.
#ifndef UMOCI_CFUSE_SHIM_H
#define UMOCI_CFUSE_SHIM_H
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

static inline struct fuse_session *umoci_fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *ops,
                                                          size_t size, void *userdata) {
    return fuse_session_new(args, ops, size, userdata);
}

static inline int umoci_fuse_session_loop_mt(struct fuse_session *se, int clone_fd, unsigned int max_idle_threads) {
    struct fuse_loop_config config = { .clone_fd = clone_fd, .max_idle_threads = max_idle_threads };
    return fuse_session_loop_mt(se, &config);
}
#endif
