// libzstd's streaming API for LayerStore.
#ifndef UMOCI_CZSTD_SHIM_H
#define UMOCI_CZSTD_SHIM_H
#include <zstd.h>
#endif
