// zlib for LayerStore. inflateInit2 and deflateInit2 are macros in zlib.h, which Swift cannot
// call; these static inline wrappers give Swift a function with the same meaning.
#ifndef UMOCI_CZLIB_SHIM_H
#define UMOCI_CZLIB_SHIM_H
#include <zlib.h>

static inline int umoci_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}

static inline int umoci_deflateInit2(z_streamp strm, int level, int windowBits, int memLevel, int strategy) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, memLevel, strategy);
}
#endif
