import CZstd
import NIOCore
import StrataJournal

/// The layout of one offloaded object: one shard's batches, in offset order, cut into blocks
/// that are zstd-compressed each, then a trailer indexing the blocks, then a fixed footer.
///
///     block 0 | block 1 | … | trailer | footer (24 bytes)
///
/// - block: zstd frame of whole RecordBatch v2 batches as the journal stored them.
/// - trailer: magic "STRATIDX", version u16, shard name (u16 length + UTF-8), block count u32,
///   then per block: first offset u64, last offset u64, min timestamp i64, max timestamp i64,
///   position u64, compressed length u32, uncompressed length u32, CRC-32C of the compressed
///   bytes u32 (52 bytes).
/// - footer: trailer length u32, CRC-32C of the trailer u32, CRC-32C of everything before the
///   trailer u32 (the object checksum), magic "STRATOBJ" (8 bytes), version u32.
/// A reader takes the footer (last 24 bytes), then the trailer, then only the blocks it needs;
/// every block is checked against its CRC before it is decompressed, so a corrupt object is
/// reported with its key and block, never served.
public enum TierObject {
    public static let footerSize = 24
    static let trailerMagic = Array("STRATIDX".utf8)
    static let objectMagic = Array("STRATOBJ".utf8)
    static let version: UInt32 = 1
    static let entrySize = 52

    public struct Block: Sendable, Hashable {
        public var firstOffset: UInt64
        public var lastOffset: UInt64
        public var minTimestamp: Int64
        public var maxTimestamp: Int64
        public var position: Int
        public var compressedLength: Int
        public var uncompressedLength: Int
        public var crc: UInt32

        public var byteRange: Range<Int> { position..<(position + compressedLength) }
    }

    public struct Index: Sendable, Hashable {
        public var shard: String
        public var blocks: [Block]
        /// Bytes of the whole object.
        public var objectSize: Int

        public var firstOffset: UInt64? { blocks.first?.firstOffset }
        public var lastOffset: UInt64? { blocks.last?.lastOffset }

        /// The block holding `offset`, or the first after it.
        public func block(for offset: UInt64) -> Int? {
            blocks.firstIndex { $0.lastOffset >= offset }
        }

        /// The first block with a record at or after `timestamp`.
        public func block(atOrAfter timestamp: Int64) -> Int? {
            blocks.firstIndex { $0.maxTimestamp >= timestamp }
        }
    }

    // MARK: Writing

    /// Builds an object from one shard's batches (whole, in offset order), with blocks of
    /// about `blockBytes` uncompressed.
    public static func encode(
        shard: String, batches: [ByteBuffer], blockBytes: Int = 1 << 20, level: Int32 = 3
    ) throws -> (bytes: [UInt8], index: Index) {
        var bytes: [UInt8] = []
        var objectCRC: UInt32 = 0
        var blocks: [Block] = []
        var pending: [UInt8] = []
        var first: RecordBatch.Header?
        var last: RecordBatch.Header?
        var minTimestamp = Int64.max
        var maxTimestamp = Int64.min
        func flush() throws {
            guard let head = first, let tail = last else { return }
            let compressed = try compress(pending, level: level, appendingTo: &bytes)
            let crc = CRC32C.checksum(bytes[compressed])
            blocks.append(
                Block(
                    firstOffset: UInt64(head.baseOffset), lastOffset: UInt64(tail.lastOffset),
                    minTimestamp: minTimestamp,
                    maxTimestamp: maxTimestamp, position: compressed.lowerBound, compressedLength: compressed.count,
                    uncompressedLength: pending.count, crc: crc))
            objectCRC = CRC32C.checksum(bytes[compressed], continuing: objectCRC)
            pending.removeAll(keepingCapacity: true)
            (first, last, minTimestamp, maxTimestamp) = (nil, nil, .max, .min)
        }
        for batch in batches {
            guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex) else {
                throw ObjectStoreError.corrupt("\(shard): a batch shorter than its header")
            }
            if first == nil { first = header }
            last = header
            minTimestamp = min(minTimestamp, header.baseTimestamp)
            maxTimestamp = max(maxTimestamp, header.maxTimestamp)
            pending += batch.readableBytesView
            if pending.count >= blockBytes { try flush() }
        }
        try flush()
        var trailer = ByteBuffer()
        trailer.writeBytes(trailerMagic)
        trailer.writeInteger(UInt16(version))
        trailer.writeInteger(UInt16(shard.utf8.count))
        trailer.writeString(shard)
        trailer.writeInteger(UInt32(blocks.count))
        for block in blocks {
            trailer.writeInteger(block.firstOffset)
            trailer.writeInteger(block.lastOffset)
            trailer.writeInteger(block.minTimestamp)
            trailer.writeInteger(block.maxTimestamp)
            trailer.writeInteger(UInt64(block.position))
            trailer.writeInteger(UInt32(block.compressedLength))
            trailer.writeInteger(UInt32(block.uncompressedLength))
            trailer.writeInteger(block.crc)
        }
        let trailerBytes = Array(trailer.readableBytesView)
        var footer = ByteBuffer()
        footer.writeInteger(UInt32(trailerBytes.count))
        footer.writeInteger(CRC32C.checksum(trailerBytes))
        footer.writeInteger(objectCRC)
        footer.writeBytes(objectMagic)
        footer.writeInteger(version)
        bytes += trailerBytes
        bytes += footer.readableBytesView
        return (bytes, Index(shard: shard, blocks: blocks, objectSize: bytes.count))
    }

    // MARK: Reading

    /// The trailer's length (and checksums) from the object's last `footerSize` bytes.
    public static func footer(_ bytes: [UInt8], key: String) throws -> (
        trailerLength: Int, trailerCRC: UInt32, objectCRC: UInt32
    ) {
        var buffer = ByteBuffer(bytes: bytes)
        guard bytes.count == footerSize, let length = buffer.readInteger(as: UInt32.self),
            let trailerCRC = buffer.readInteger(as: UInt32.self), let objectCRC = buffer.readInteger(as: UInt32.self),
            buffer.readBytes(length: 8) == objectMagic, buffer.readInteger(as: UInt32.self) == version
        else {
            throw ObjectStoreError.corrupt("\(key): no Strata object footer")
        }
        return (Int(length), trailerCRC, objectCRC)
    }

    /// The index from the trailer's bytes, checked against the footer's CRC.
    public static func index(trailer bytes: [UInt8], crc: UInt32, objectSize: Int, key: String) throws -> Index {
        guard CRC32C.checksum(bytes) == crc else { throw ObjectStoreError.corrupt("\(key): trailer checksum mismatch") }
        var buffer = ByteBuffer(bytes: bytes)
        guard buffer.readBytes(length: 8) == trailerMagic, buffer.readInteger(as: UInt16.self) == UInt16(version),
            let nameLength = buffer.readInteger(as: UInt16.self),
            let shard = buffer.readString(length: Int(nameLength)),
            let count = buffer.readInteger(as: UInt32.self), buffer.readableBytes == Int(count) * entrySize
        else {
            throw ObjectStoreError.corrupt("\(key): malformed trailer")
        }
        var blocks: [Block] = []
        blocks.reserveCapacity(Int(count))
        for _ in 0..<count {
            let block = Block(
                firstOffset: buffer.readInteger()!, lastOffset: buffer.readInteger()!,
                minTimestamp: buffer.readInteger()!,
                maxTimestamp: buffer.readInteger()!, position: Int(buffer.readInteger(as: UInt64.self)!),
                compressedLength: Int(buffer.readInteger(as: UInt32.self)!),
                uncompressedLength: Int(buffer.readInteger(as: UInt32.self)!), crc: buffer.readInteger()!)
            guard block.position + block.compressedLength <= objectSize, block.uncompressedLength <= 64 << 20 else {
                throw ObjectStoreError.corrupt("\(key): block outside the object")
            }
            blocks.append(block)
        }
        return Index(shard: shard, blocks: blocks, objectSize: objectSize)
    }

    /// A block's batches, after its checksum.
    public static func batches(ofBlock bytes: [UInt8], _ block: Block, key: String, number: Int) throws -> [ByteBuffer]
    {
        guard bytes.count == block.compressedLength, CRC32C.checksum(bytes) == block.crc else {
            throw ObjectStoreError.corrupt("\(key): block \(number) checksum mismatch")
        }
        var buffer = try decompress(bytes, size: block.uncompressedLength, key: key, number: number)
        var batches: [ByteBuffer] = []
        while buffer.readableBytes > 0 {
            guard let header = RecordBatch.Header.peek(buffer, at: buffer.readerIndex),
                header.totalSize <= buffer.readableBytes
            else {
                throw ObjectStoreError.corrupt("\(key): block \(number) holds a truncated batch")
            }
            batches.append(buffer.readSlice(length: header.totalSize)!)
        }
        return batches
    }

    /// Reads an object's index from a store: the footer, then the trailer (two ranged GETs).
    public static func index(of key: String, size: Int, in store: any ObjectStore) async throws -> Index {
        guard size >= footerSize else { throw ObjectStoreError.corrupt("\(key): \(size) bytes, shorter than a footer") }
        let footer = try footer(try await store.get(key, range: (size - footerSize)..<size), key: key)
        let start = size - footerSize - footer.trailerLength
        guard start >= 0 else { throw ObjectStoreError.corrupt("\(key): trailer longer than the object") }
        let trailer = try await store.get(key, range: start..<(size - footerSize))
        return try index(trailer: trailer, crc: footer.trailerCRC, objectSize: size, key: key)
    }

    // MARK: zstd

    /// Compresses `input` onto the end of `output` (no intermediate copy); returns where it went.
    static func compress(_ input: [UInt8], level: Int32, appendingTo output: inout [UInt8]) throws -> Range<Int> {
        let start = output.count
        let bound = ZSTD_compressBound(input.count)
        output.append(contentsOf: repeatElement(0, count: bound))
        let written = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { ZSTD_compress(out.baseAddress! + start, bound, $0.baseAddress, $0.count, level) }
        }
        guard ZSTD_isError(written) == 0 else { throw ObjectStoreError.corrupt("zstd compression failed") }
        output.removeLast(bound - written)
        return start..<(start + written)
    }

    /// Decompresses a block straight into the buffer its batches are sliced from.
    static func decompress(_ input: [UInt8], size: Int, key: String, number: Int) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: size)
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            let written = input.withUnsafeBytes { ZSTD_decompress(out.baseAddress, size, $0.baseAddress, $0.count) }
            guard ZSTD_isError(written) == 0, written == size else {
                throw ObjectStoreError.corrupt("\(key): block \(number) does not decompress to its \(size) bytes")
            }
            return written
        }
        return buffer
    }
}
