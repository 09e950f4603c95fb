#include "CStrataShims.h"

#include <string.h>

// Slicing-by-8 tables for the reflected Castagnoli polynomial 0x82F63B78.
static uint32_t crc_table[8][256];
static int crc_tables_ready = 0;

static void crc_build_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[t][n] = c;
        }
    }
    __atomic_store_n(&crc_tables_ready, 1, __ATOMIC_RELEASE);
}

uint32_t strata_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&crc_tables_ready, __ATOMIC_ACQUIRE)) crc_build_tables();
    const uint8_t *p = (const uint8_t *)data;
    uint32_t c = ~crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= c;
        c = crc_table[7][word & 0xff] ^ crc_table[6][(word >> 8) & 0xff] ^
            crc_table[5][(word >> 16) & 0xff] ^ crc_table[4][(word >> 24) & 0xff] ^
            crc_table[3][(word >> 32) & 0xff] ^ crc_table[2][(word >> 40) & 0xff] ^
            crc_table[1][(word >> 48) & 0xff] ^ crc_table[0][word >> 56];
        p += 8;
        length -= 8;
    }
    while (length--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
#include <cpuid.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t c = (uint32_t)~crc;
    while (length && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        length--;
    }
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        length -= 8;
    }
    while (length--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

static int has_sse42 = -1;

int strata_crc32c_hardware(void) {
    int v = __atomic_load_n(&has_sse42, __ATOMIC_RELAXED);
    if (v < 0) {
        unsigned a, b, c, d;
        v = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 1 : 0;
        __atomic_store_n(&has_sse42, v, __ATOMIC_RELAXED);
    }
    return v;
}

uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length) {
    if (strata_crc32c_hardware()) return crc32c_sse42(crc, data, length);
    return strata_crc32c_portable(crc, data, length);
}

#else

int strata_crc32c_hardware(void) { return 0; }

uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length) {
    return strata_crc32c_portable(crc, data, length);
}

#endif
