// Only what LayerStore needs from OpenSSL's libcrypto: the EVP digest interface.
#ifndef UMOCI_CCRYPTO_SHIM_H
#define UMOCI_CCRYPTO_SHIM_H
#include <openssl/evp.h>
#endif
