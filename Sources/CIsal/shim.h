// Intel's ISA-L (igzip and its CRC-32) for LayerStore.
#ifndef UMOCI_CISAL_SHIM_H
#define UMOCI_CISAL_SHIM_H
#include <isa-l.h>
#endif
