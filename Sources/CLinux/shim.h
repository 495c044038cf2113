// Linux interfaces Glibc's Swift module does not bring in: extended attributes, and the
// device-number macros as functions.
#ifndef UMOCI_CLINUX_SHIM_H
#define UMOCI_CLINUX_SHIM_H
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/sysmacros.h>

static inline dev_t umoci_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
static inline unsigned int umoci_major(dev_t dev) { return major(dev); }
static inline unsigned int umoci_minor(dev_t dev) { return minor(dev); }
#endif
