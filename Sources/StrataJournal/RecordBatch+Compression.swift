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
    /// zstd frames). The codecs read the batch's bytes in place and write into the result.
    static func decompress(_ compressed: ByteBuffer, _ compression: Compression) throws(JournalError) -> ByteBuffer {
        guard compression != .none else { return compressed }
        let result = compressed.withUnsafeReadableBytes { input -> Result<ByteBuffer, JournalError> in
            do throws(JournalError) {
                switch compression {
                case .none: return .success(compressed)
                case .gzip: return .success(try inflate(input))
                case .snappy: return .success(try unsnappy(input))
                case .lz4: return .success(try unlz4(input))
                case .zstd: return .success(try unzstd(input))
                }
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func tooLarge(_ codec: String) -> JournalError {
        JournalError(.invalidBatch, "a \(codec)-compressed batch expands beyond \(maxDecompressedBytes) bytes")
    }

    private static func corrupt(_ codec: String, _ detail: String) -> JournalError {
        JournalError(.invalidBatch, "cannot decompress a \(codec)-compressed batch: \(detail)")
    }

    /// What one step of a streaming decoder did: input bytes consumed, output bytes produced,
    /// and whether a frame (or stream) ended.
    private typealias Step = (consumed: Int, produced: Int, ended: Bool)

    /// Runs a streaming decoder step by step, writing straight into the result buffer (which
    /// grows as needed), bounded by `maxDecompressedBytes`.
    private static func drain(
        _ input: UnsafeRawBufferPointer, codec: String,
        _ step: (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer) throws(JournalError) -> Step
    ) throws(JournalError) -> ByteBuffer {
        var output = ByteBuffer()
        output.reserveCapacity(min(maxDecompressedBytes, max(64 << 10, 4 * input.count)))
        var consumed = 0
        while true {
            var result: Step = (0, 0, false)
            var failure: JournalError?
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: 64 << 10) { out in
                do throws(JournalError) {
                    result = try step(UnsafeRawBufferPointer(rebasing: input[consumed...]), out)
                } catch {
                    failure = error
                }
                return result.produced
            }
            if let failure { throw failure }
            consumed += result.consumed
            guard output.readableBytes <= maxDecompressedBytes else { throw tooLarge(codec) }
            if result.ended && consumed >= input.count { return output }
            if result.consumed == 0 && result.produced == 0 {
                if consumed >= input.count { throw corrupt(codec, "truncated") }
                if result.ended { continue }
                throw corrupt(codec, "no progress")
            }
        }
    }

    private static func inflate(_ input: UnsafeRawBufferPointer) throws(JournalError) -> ByteBuffer {
        var stream = z_stream()
        guard strata_inflate_init(&stream) == Z_OK else { throw corrupt("gzip", "inflateInit failed") }
        defer { inflateEnd(&stream) }
        return try drain(input, codec: "gzip") { (input, output) throws(JournalError) -> Step in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = UInt32(input.count)
            stream.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
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

    private static func unzstd(_ input: UnsafeRawBufferPointer) throws(JournalError) -> ByteBuffer {
        guard let context = ZSTD_createDStream() else { throw corrupt("zstd", "no context") }
        defer { ZSTD_freeDStream(context) }
        return try drain(input, codec: "zstd") { (input, output) throws(JournalError) -> Step in
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            let status = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            if ZSTD_isError(status) != 0 { throw corrupt("zstd", String(cString: ZSTD_getErrorName(status))) }
            return (inBuffer.pos, outBuffer.pos, status == 0)
        }
    }

    private static func unlz4(_ input: UnsafeRawBufferPointer) throws(JournalError) -> ByteBuffer {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw corrupt("lz4", "no context")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        return try drain(input, codec: "lz4") { (input, output) throws(JournalError) -> Step in
            var inSize = input.count
            var outSize = output.count
            let hint = LZ4F_decompress(context, output.baseAddress, &outSize, input.baseAddress, &inSize, nil)
            if LZ4F_isError(hint) != 0 { throw corrupt("lz4", String(cString: LZ4F_getErrorName(hint))) }
            return (inSize, outSize, hint == 0)
        }
    }

    /// The xerial framing Kafka's Java client writes around snappy blocks.
    private static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]

    private static func unsnappy(_ input: UnsafeRawBufferPointer) throws(JournalError) -> ByteBuffer {
        var output = ByteBuffer()
        guard input.count >= 16, input.prefix(8).elementsEqual(xerialMagic) else {
            try unsnappyBlock(input, into: &output)
            return output
        }
        var position = 16  // magic, version, compatible version
        while position < input.count {
            guard position + 4 <= input.count else { throw corrupt("snappy", "truncated xerial block length") }
            let length = input[position..<position + 4].reduce(0) { $0 << 8 | Int($1) }
            position += 4
            guard length <= input.count - position else { throw corrupt("snappy", "truncated xerial block") }
            try unsnappyBlock(UnsafeRawBufferPointer(rebasing: input[position..<position + length]), into: &output)
            position += length
        }
        return output
    }

    /// Appends one raw snappy block's contents to `output`.
    private static func unsnappyBlock(_ block: UnsafeRawBufferPointer, into output: inout ByteBuffer)
        throws(JournalError)
    {
        guard let base = block.baseAddress else { throw corrupt("snappy", "empty block") }
        let source = base.assumingMemoryBound(to: CChar.self)
        var length = 0
        guard snappy_uncompressed_length(source, block.count, &length) == SNAPPY_OK else {
            throw corrupt("snappy", "bad block header")
        }
        guard output.readableBytes + length <= maxDecompressedBytes else { throw tooLarge("snappy") }
        var status = SNAPPY_OK
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
            var written = length
            status = snappy_uncompress(
                source, block.count, out.baseAddress!.assumingMemoryBound(to: CChar.self), &written)
            return status == SNAPPY_OK ? written : 0
        }
        guard status == SNAPPY_OK else { throw corrupt("snappy", "bad block") }
    }
}
