// Debian's libcurl (libcurl4-openssl-dev, OpenSSL for TLS) for the Registry target: every HTTP
// request and all of TLS go through it.
// curl_easy_setopt and curl_easy_getinfo are C variadic functions, which Swift cannot call; the
// typed wrappers below each pass exactly one argument type, so the compiler checks what Swift
// hands to libcurl. Every symbol here starts with umoci_curl_ so none can collide with libcurl's.
#ifndef UMOCI_CCURL_SHIM_H
#define UMOCI_CCURL_SHIM_H
#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

/// A write, header or read callback: (buffer, size, count, context) -> bytes handled.
typedef size_t (*umoci_curl_data_fn)(char *buffer, size_t size, size_t count, void *context);

static inline CURLcode umoci_curl_set_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode umoci_curl_set_offset(CURL *curl, CURLoption option, int64_t value) {
    return curl_easy_setopt(curl, option, (curl_off_t)value);
}

/// A string option; libcurl copies the string (CURLOPT_* string options since 7.17).
static inline CURLcode umoci_curl_set_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode umoci_curl_set_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode umoci_curl_set_list(CURL *curl, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(curl, option, value);
}

static inline CURLcode umoci_curl_set_callback(CURL *curl, CURLoption option, umoci_curl_data_fn value) {
    return curl_easy_setopt(curl, option, value);
}

/// CURLOPT_CAINFO_BLOB: PEM certificates held in memory (libcurl copies them, CURL_BLOB_COPY).
static inline CURLcode umoci_curl_set_blob(CURL *curl, CURLoption option, const void *data, size_t length) {
    struct curl_blob blob = { (void *)data, length, CURL_BLOB_COPY };
    return curl_easy_setopt(curl, option, &blob);
}

static inline CURLcode umoci_curl_get_long(CURL *curl, CURLINFO info, long *value) {
    return curl_easy_getinfo(curl, info, value);
}

static inline CURLcode umoci_curl_get_offset(CURL *curl, CURLINFO info, int64_t *value) {
    curl_off_t v = 0;
    CURLcode rc = curl_easy_getinfo(curl, info, &v);
    *value = (int64_t)v;
    return rc;
}

static inline CURLcode umoci_curl_get_string(CURL *curl, CURLINFO info, const char **value) {
    char *s = NULL;
    CURLcode rc = curl_easy_getinfo(curl, info, &s);
    *value = s;
    return rc;
}

/// CURL_ERROR_SIZE, which Swift does not import as a constant.
static inline size_t umoci_curl_error_size(void) { return CURL_ERROR_SIZE; }

/// CURL_READFUNC_ABORT: what a read callback returns to stop an upload (a macro Swift does not import).
static inline size_t umoci_curl_read_abort(void) { return CURL_READFUNC_ABORT; }
#endif
