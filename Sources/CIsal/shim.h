// Debian's ISA-L (libisal-dev) for LayerStore: inflate about twice and deflate (level 3) about
// ten times as fast as zlib's, and its CRC-32.
// The helpers give Swift what it cannot spell itself: the layout of struct inflate_state (an
// access point keeps a copy of it, see GzipInflation.swift), which shared object is loaded,
// and the size of a deflate level buffer.
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

/// A deflate level buffer large enough for every level (ISAL_DEF_LVL3_DEFAULT, the largest of
/// the defaults; Swift does not import the macro).
static inline size_t umoci_isal_level_buffer_size(void) {
    return ISAL_DEF_LVL3_DEFAULT;
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
