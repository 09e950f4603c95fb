#pragma once
#include <zlib.h>

/// inflateInit2 is a macro: gzip or zlib framing, detected from the header.
static inline int strata_inflate_init(z_stream *stream) { return inflateInit2(stream, 15 + 32); }
