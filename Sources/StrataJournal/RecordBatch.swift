import NIOCore

/// Kafka's RecordBatch v2 (magic 2): the one checked format that travels from a producer's
/// socket to the WAL, the segments, the object tier and a consumer's socket.
///
///     offset  size  field
///          0     8  baseOffset            (rewritten by the journal; not under the CRC)
///          8     4  batchLength           (bytes after this field)
///         12     4  partitionLeaderEpoch  (not under the CRC)
///         16     1  magic = 2
///         17     4  crc                   (CRC-32C of bytes 21..<end)
///         21     2  attributes            (bits 0-2 compression, 3 timestamp type,
///                                          4 transactional, 5 control)
///         23     4  lastOffsetDelta
///         27     8  baseTimestamp
///         35     8  maxTimestamp
///         43     8  producerId
///         51     2  producerEpoch
///         53     4  baseSequence
///         57     4  recordCount
///         61     …  records (varint-framed)
public enum RecordBatch {
    public static let headerSize = 61
    /// Bytes 0..<21 are the part the CRC does not cover but a WAL frame checksum must.
    public static let crcOffset = 17
    public static let attributesOffset = 21

    public enum Compression: UInt8, Sendable {
        case none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4
    }

    /// The fixed-size header of a batch.
    public struct Header: Sendable, Hashable {
        public var baseOffset: Int64
        public var batchLength: Int32
        public var partitionLeaderEpoch: Int32
        public var magic: Int8
        public var crc: UInt32
        public var attributes: Int16
        public var lastOffsetDelta: Int32
        public var baseTimestamp: Int64
        public var maxTimestamp: Int64
        public var producerID: Int64
        public var producerEpoch: Int16
        public var baseSequence: Int32
        public var recordCount: Int32

        /// Total size of the batch in bytes.
        public var totalSize: Int { Int(batchLength) + 12 }
        public var compression: Compression? { Compression(rawValue: UInt8(attributes & 0x7)) }
        public var isControl: Bool { attributes & 0x20 != 0 }
        public var isTransactional: Bool { attributes & 0x10 != 0 }
        public var lastOffset: Int64 { baseOffset + Int64(lastOffsetDelta) }

        /// Reads a header from `buffer` at absolute index `index` without moving the reader index.
        /// Returns nil when fewer than 61 bytes are there.
        public static func peek(_ buffer: ByteBuffer, at index: Int) -> Header? {
            guard index >= 0, buffer.writerIndex - index >= RecordBatch.headerSize else { return nil }
            return Header(
                baseOffset: buffer.getInteger(at: index)!,
                batchLength: buffer.getInteger(at: index + 8)!,
                partitionLeaderEpoch: buffer.getInteger(at: index + 12)!,
                magic: buffer.getInteger(at: index + 16)!,
                crc: buffer.getInteger(at: index + 17)!,
                attributes: buffer.getInteger(at: index + 21)!,
                lastOffsetDelta: buffer.getInteger(at: index + 23)!,
                baseTimestamp: buffer.getInteger(at: index + 27)!,
                maxTimestamp: buffer.getInteger(at: index + 35)!,
                producerID: buffer.getInteger(at: index + 43)!,
                producerEpoch: buffer.getInteger(at: index + 51)!,
                baseSequence: buffer.getInteger(at: index + 53)!,
                recordCount: buffer.getInteger(at: index + 57)!)
        }
    }

    /// Checks that `batch` (its readable bytes) is exactly one well-formed v2 batch whose CRC
    /// matches, and returns its header. `maxBytes` bounds the size.
    public static func validate(_ batch: ByteBuffer, maxBytes: Int = .max) throws(JournalError) -> Header {
        let size = batch.readableBytes
        guard size >= headerSize, let header = Header.peek(batch, at: batch.readerIndex) else {
            throw JournalError(.invalidBatch, "batch of \(size) bytes is shorter than the 61-byte RecordBatch header")
        }
        guard size <= maxBytes else {
            throw JournalError(.batchTooLarge, "batch of \(size) bytes exceeds the limit of \(maxBytes) bytes")
        }
        guard header.magic == 2 else {
            throw JournalError(
                .invalidBatch, "batch magic is \(header.magic), only RecordBatch v2 (magic 2) is accepted")
        }
        guard header.totalSize == size else {
            throw JournalError(
                .invalidBatch, "batchLength \(header.batchLength) does not match the \(size - 12) bytes that follow it")
        }
        guard header.recordCount > 0, header.lastOffsetDelta >= header.recordCount - 1 else {
            throw JournalError(
                .invalidBatch,
                "batch has recordCount \(header.recordCount) and lastOffsetDelta \(header.lastOffsetDelta)")
        }
        guard header.compression != nil else {
            throw JournalError(.invalidBatch, "unknown compression codec \(header.attributes & 0x7)")
        }
        for (name, timestamp) in [("baseTimestamp", header.baseTimestamp), ("maxTimestamp", header.maxTimestamp)]
        where !validTimestamps.contains(timestamp) {
            throw JournalError(
                .invalidBatch,
                "\(name) \(timestamp) is out of range: timestamps are milliseconds since the Unix epoch from 0 to "
                    + "\(validTimestamps.upperBound), or -1 for none")
        }
        let crc = CRC32C.checksum(batch, offset: attributesOffset, length: size - attributesOffset)
        guard crc == header.crc else {
            throw JournalError(
                .invalidBatch,
                "batch CRC-32C mismatch: header says \(hex(header.crc)), content gives \(hex(crc))")
        }
        return header
    }

    /// Timestamps a batch may carry: -1 (none, as Kafka producers send it) and milliseconds since
    /// the epoch up to 2^53 (about 285,000 years), so that arithmetic on them never overflows.
    public static let validTimestamps: ClosedRange<Int64> = -1...(1 << 53)

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}

/// One header of a record: a string key and an optional byte value.
public struct RecordHeader: Sendable, Hashable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// One record, as a producer gives it or as a consumer reads it back.
public struct Record: Sendable, Hashable {
    /// Absolute offset; nil until the journal assigned it (on encode it is ignored).
    public var offset: UInt64?
    /// Milliseconds since the Unix epoch.
    public var timestamp: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]

    public init(
        offset: UInt64? = nil, timestamp: Int64, key: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = []
    ) {
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }
}
