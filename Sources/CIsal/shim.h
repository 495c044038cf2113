// Debian's ISA-L (libisal-dev) for LayerStore: inflate about twice and deflate (level 3) about
// ten times as fast as zlib's, and its CRC-32.
// The helpers give Swift what it cannot spell itself: the layout of struct inflate_state (an
// access point keeps a copy of it, see GzipInflation.swift) and which shared object is loaded.
#ifndef UMOCI_CISAL_SHIM_H
#define UMOCI_CISAL_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stddef.h>
#include <isa-l.h>

/// Bytes of struct inflate_state before the output history buffer (tmp_out_buffer).
static inline size_t umoci_isal_history_offset(void) {
    return offsetof(struct inflate_state, tmp_out_buffer);
}

/// The size of the output history buffer at the end of struct inflate_state.
static inline size_t umoci_isal_history_capacity(void) {
    return sizeof(((struct inflate_state *)0)->tmp_out_buffer);
}

/// The ISA-L version the headers describe (ISAL_VERSION).
static inline unsigned umoci_isal_header_version(void) {
    return ISAL_VERSION;
}

/// The path of the shared object that provides isal_inflate in this process, or "".
static inline const char *umoci_isal_library_path(void) {
    Dl_info info;
    if (dladdr((void *)isal_inflate, &info) && info.dli_fname) return info.dli_fname;
    return "";
}
#endif
