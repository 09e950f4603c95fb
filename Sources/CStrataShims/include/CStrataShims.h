#pragma once
#include <stddef.h>
#include <stdint.h>

/// Extends a CRC-32C (Castagnoli) over `length` bytes. Start with crc = 0; the
/// pre- and post-inversion is done inside, so calls chain: crc(a+b) ==
/// strata_crc32c(strata_crc32c(0, a), b).
uint32_t strata_crc32c(uint32_t crc, const void *data, size_t length);

/// The same function computed with the portable table, whatever the CPU offers.
uint32_t strata_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// 1 when strata_crc32c uses the CPU's CRC-32C instruction (SSE4.2 on x86-64, CRC on AArch64).
int strata_crc32c_hardware(void);

/// libFuzzer's driver, for harnesses whose `main` is provided by their build system (declared
/// here, defined only when linking with -sanitize=fuzzer).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
