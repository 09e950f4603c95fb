#pragma once
#include <sys/types.h>
#include <sys/select.h>
#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: typed wrappers.
static inline CURLcode strata_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode strata_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode strata_curl_setopt_pointer(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}
typedef size_t (*strata_curl_data_callback)(char *data, size_t size, size_t count, void *context);
static inline CURLcode strata_curl_setopt_callback(CURL *handle, CURLoption option, strata_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}
static inline long strata_curl_response_code(CURL *handle) {
    long code = 0;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
