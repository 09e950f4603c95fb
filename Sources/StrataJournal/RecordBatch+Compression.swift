import CLZ4
import CSnappy
import CZlib
import CZstd
import NIOCore

extension RecordBatch {
    /// The most bytes a compressed batch's records may decompress to: a batch that claims more
    /// is refused rather than allocated (a small batch can expand a thousandfold).
    public static let maxDecompressedBytes = 64 << 20

    /// The records section of a batch compressed with `compression`, decompressed (Kafka's four
    /// codecs: gzip, snappy raw or in xerial framing as the Java client writes it, lz4 frames,
    /// zstd frames).
    static func decompress(_ compressed: ByteBuffer, _ compression: Compression) throws(JournalError) -> ByteBuffer {
        let input = Array(compressed.readableBytesView)
        let output: [UInt8]
        switch compression {
        case .none: return compressed
        case .gzip: output = try inflate(input)
        case .snappy: output = try unsnappy(input)
        case .lz4: output = try unlz4(input)
        case .zstd: output = try unzstd(input)
        }
        return ByteBuffer(bytes: output)
    }

    private static func tooLarge(_ codec: String) -> JournalError {
        JournalError(.invalidBatch, "a \(codec)-compressed batch expands beyond \(maxDecompressedBytes) bytes")
    }

    private static func corrupt(_ codec: String, _ detail: String) -> JournalError {
        JournalError(.invalidBatch, "cannot decompress a \(codec)-compressed batch: \(detail)")
    }

    /// Runs a streaming decoder step by step into 64 KiB chunks, bounded by `maxDecompressedBytes`.
    /// `step(input offset, output buffer) -> (input consumed, output produced, finished)`.
    private static func drain(
        _ input: [UInt8], codec: String,
        _ step: (UnsafeBufferPointer<UInt8>, UnsafeMutableBufferPointer<UInt8>) throws(JournalError) -> (Int, Int, Bool)
    ) throws(JournalError) -> [UInt8] {
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var consumed = 0
        while true {
            let result = try input.withUnsafeBufferPointer { (all) throws(JournalError) -> (Int, Int, Bool) in
                try chunk.withUnsafeMutableBufferPointer { (out) throws(JournalError) -> (Int, Int, Bool) in
                    try step(UnsafeBufferPointer(rebasing: all[consumed...]), out)
                }
            }
            consumed += result.0
            output.append(contentsOf: chunk[0..<result.1])
            guard output.count <= maxDecompressedBytes else { throw tooLarge(codec) }
            if result.2 && consumed >= input.count { return output }
            if result.0 == 0 && result.1 == 0 {
                if consumed >= input.count { throw corrupt(codec, "truncated") }
                if result.2 { continue }
                throw corrupt(codec, "no progress")
            }
        }
    }

    private static func inflate(_ input: [UInt8]) throws(JournalError) -> [UInt8] {
        var stream = z_stream()
        guard strata_inflate_init(&stream) == Z_OK else { throw corrupt("gzip", "inflateInit failed") }
        defer { inflateEnd(&stream) }
        return try drain(input, codec: "gzip") { (input, output) throws(JournalError) -> (Int, Int, Bool) in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = UInt32(input.count)
            stream.next_out = output.baseAddress
            stream.avail_out = UInt32(output.count)
            let status = CZlib.inflate(&stream, Z_NO_FLUSH)
            let used = (input.count - Int(stream.avail_in), output.count - Int(stream.avail_out))
            switch status {
            case Z_OK, Z_BUF_ERROR: return (used.0, used.1, false)
            case Z_STREAM_END:
                // Concatenated gzip members are one stream (as GZIPInputStream reads them).
                inflateReset(&stream)
                return (used.0, used.1, true)
            default: throw corrupt("gzip", "zlib error \(status)")
            }
        }
    }

    private static func unzstd(_ input: [UInt8]) throws(JournalError) -> [UInt8] {
        guard let context = ZSTD_createDStream() else { throw corrupt("zstd", "no context") }
        defer { ZSTD_freeDStream(context) }
        return try drain(input, codec: "zstd") { (input, output) throws(JournalError) -> (Int, Int, Bool) in
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            let status = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            if ZSTD_isError(status) != 0 { throw corrupt("zstd", String(cString: ZSTD_getErrorName(status))) }
            return (inBuffer.pos, outBuffer.pos, status == 0)
        }
    }

    private static func unlz4(_ input: [UInt8]) throws(JournalError) -> [UInt8] {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw corrupt("lz4", "no context")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        return try drain(input, codec: "lz4") { (input, output) throws(JournalError) -> (Int, Int, Bool) in
            var inSize = input.count
            var outSize = output.count
            let hint = LZ4F_decompress(context, output.baseAddress, &outSize, input.baseAddress, &inSize, nil)
            if LZ4F_isError(hint) != 0 { throw corrupt("lz4", String(cString: LZ4F_getErrorName(hint))) }
            return (inSize, outSize, hint == 0)
        }
    }

    /// The xerial framing Kafka's Java client writes around snappy blocks.
    private static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]

    private static func unsnappy(_ input: [UInt8]) throws(JournalError) -> [UInt8] {
        guard input.count >= 16, Array(input[0..<8]) == xerialMagic else { return try unsnappyBlock(input[...]) }
        var output: [UInt8] = []
        var position = 16  // magic, version, compatible version
        while position < input.count {
            guard position + 4 <= input.count else { throw corrupt("snappy", "truncated xerial block length") }
            let length = input[position..<position + 4].reduce(0) { $0 << 8 | Int($1) }
            position += 4
            guard length <= input.count - position else { throw corrupt("snappy", "truncated xerial block") }
            output += try unsnappyBlock(input[position..<position + length])
            guard output.count <= maxDecompressedBytes else { throw tooLarge("snappy") }
            position += length
        }
        return output
    }

    private static func unsnappyBlock(_ block: ArraySlice<UInt8>) throws(JournalError) -> [UInt8] {
        try block.withUnsafeBufferPointer { (input) throws(JournalError) -> [UInt8] in
            let source = UnsafeRawPointer(input.baseAddress!).assumingMemoryBound(to: CChar.self)
            var length = 0
            guard snappy_uncompressed_length(source, input.count, &length) == SNAPPY_OK else {
                throw corrupt("snappy", "bad block header")
            }
            guard length <= maxDecompressedBytes else { throw tooLarge("snappy") }
            var output = [UInt8](repeating: 0, count: length)
            let status = output.withUnsafeMutableBufferPointer { out in
                out.baseAddress!.withMemoryRebound(to: CChar.self, capacity: length) { target in
                    snappy_uncompress(source, input.count, target, &length)
                }
            }
            guard status == SNAPPY_OK else { throw corrupt("snappy", "bad block") }
            return Array(output[0..<length])
        }
    }
}
