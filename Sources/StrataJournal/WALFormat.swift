import NIOCore

/// The on-disk layout of WAL segment files.
///
/// A segment starts with a 32-byte header:
///
///     "STRATAW2" (8) | version u32 = 2 | reserved u32 | segment id u64 | created ms i64
///
/// (version 1 segments, read as before, start "STRATAWL"; the magic changed with the salted
/// checksums so that a build that predates them refuses these segments instead of taking their
/// frames for a torn tail)
///
/// followed by frames, one per batch, back to back:
///
///     frameLength u32   whole frame, header included
///     frameCRC    u32   CRC-32C of frameLength, synced-through, shard id and the batch's first 21 bytes
///     synced      u32   how far this segment was synced when the frame's group was written
///                       (0 in frames written before this field existed, when these four bytes
///                       were the high half of a u64 shard id)
///     shard id    u32   (0: a control frame, see ControlFrame)
///     batch             RecordBatch v2, its own CRC-32C covering the rest
///
/// Together the two checksums cover every byte of the frame. In version 2 segments the frame
/// checksum is salted with the segment id (`salt`), so that the old frames left in a recycled
/// segment file (a deleted segment's file reused, so that syncs overwrite written blocks instead
/// of allocating new ones) never pass for frames of the new segment. The synced position lets recovery
/// tell damage in data that was synced (a valid frame written after the damage was synced
/// names a position past it) from the torn or reordered writes of a power cut, which only
/// touch what was not yet synced.
enum WALFormat {
    static let magic: [UInt8] = Array("STRATAW2".utf8)
    static let magicVersion1: [UInt8] = Array("STRATAWL".utf8)

    /// The format version a segment header declares, nil when it is not a Strata segment (or one
    /// of a newer format than this build reads).
    static func headerVersion(_ header: ByteBuffer) -> UInt32? {
        let magic = header.getBytes(at: header.readerIndex, length: 8)
        let version: UInt32? = header.getInteger(at: header.readerIndex + 8)
        if magic == Self.magic, version == 2 { return 2 }
        if magic == magicVersion1, version == 1 { return 1 }
        return nil
    }
    static let version: UInt32 = 2
    static let segmentHeaderSize = 32
    static let frameHeaderSize = 16

    static func segmentHeader(id: UInt64, createdMilliseconds: Int64) -> [UInt8] {
        magic + version.bigEndianBytes + UInt32(0).bigEndianBytes + id.bigEndianBytes
            + UInt64(bitPattern: createdMilliseconds).bigEndianBytes
    }

    static func segmentFileName(_ id: UInt64) -> String {
        let digits = String(id)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".wal"
    }

    static func segmentID(fileName: String) -> UInt64? {
        guard fileName.hasSuffix(".wal") else { return nil }
        return UInt64(fileName.dropLast(4))
    }

    /// Shard ids fit the frame's 32-bit field.
    static let maxShardID = UInt64(UInt32.max)

    /// Builds the frame for `batch`, unsealed: the writer stamps the synced position and the
    /// segment-salted checksum into its copy of the frame (`stampSynced`), the one checksum a
    /// frame gets.
    static func frame(shardID: UInt64, batch: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: frameHeaderSize + batch.readableBytes)
        frame.writeInteger(UInt32(frameHeaderSize + batch.readableBytes))
        frame.writeInteger(UInt32(0))
        frame.writeInteger(UInt32(0))
        frame.writeInteger(UInt32(truncatingIfNeeded: shardID))
        frame.writeImmutableBuffer(batch)
        return frame
    }

    /// The frame checksum salt of segment `id` written in format `version` (0 for version 1).
    static func salt(segment id: UInt64, version: UInt32) -> UInt32 {
        guard version >= 2 else { return 0 }
        return UInt32(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) | 1
    }

    static func frameChecksum(_ buffer: ByteBuffer, at index: Int) -> UInt32 {
        buffer.withUnsafeReadableBytes { raw in frameChecksum(raw.baseAddress! + (index - buffer.readerIndex)) }
    }

    /// The frame checksum of the frame whose header starts at `frame`.
    static func frameChecksum(_ frame: UnsafeRawPointer) -> UInt32 {
        let lengthCRC = CRC32C.checksum(UnsafeRawBufferPointer(start: frame, count: 4))
        return CRC32C.checksum(UnsafeRawBufferPointer(start: frame + 8, count: 8 + RecordBatch.attributesOffset))
            ^ lengthCRC &* 0x9E37_79B1
    }

    /// Sets the synced position of the frame at `frame` (in the writer's gather buffer) and
    /// reseals its checksum with the segment's salt.
    static func stampSynced(_ frame: UnsafeMutableRawPointer, _ synced: UInt32, salt: UInt32) {
        frame.storeBytes(of: synced.bigEndian, toByteOffset: 8, as: UInt32.self)
        frame.storeBytes(of: (frameChecksum(frame) ^ salt).bigEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// The synced position a checked frame at absolute index `index` carries.
    static func syncedThrough(_ buffer: ByteBuffer, at index: Int) -> UInt32 {
        buffer.getInteger(at: index + 8) ?? 0
    }

    enum FrameCheck {
        case frame(shardID: UInt64, header: RecordBatch.Header, length: Int)
        /// Not enough bytes for a whole frame (or zeros): the end of written data.
        case end
        /// Bytes that are not a valid frame.
        case corrupt(String)
    }

    /// Checks the frame at absolute index `index` of `buffer`, both checksums included.
    static func checkFrame(_ buffer: ByteBuffer, at index: Int, maxFrame: Int, salt: UInt32) -> FrameCheck {
        let available = buffer.writerIndex - index
        guard available >= frameHeaderSize, let length: UInt32 = buffer.getInteger(at: index) else { return .end }
        if length == 0 { return .end }
        guard length >= UInt32(frameHeaderSize + RecordBatch.headerSize), length <= UInt32(maxFrame) else {
            return .corrupt("frame length \(length) is out of range")
        }
        guard Int(length) <= available else { return .end }
        let stored: UInt32 = buffer.getInteger(at: index + 4)!
        guard stored == frameChecksum(buffer, at: index) ^ salt else {
            return .corrupt("frame checksum mismatch")
        }
        let shardID = UInt64(buffer.getInteger(at: index + 12, as: UInt32.self)!)
        let batchIndex = index + frameHeaderSize
        guard let header = RecordBatch.Header.peek(buffer, at: batchIndex),
            header.totalSize == Int(length) - frameHeaderSize, header.magic == 2
        else {
            return .corrupt("frame does not hold one RecordBatch v2")
        }
        let crc = CRC32C.checksum(
            buffer, offset: batchIndex - buffer.readerIndex + RecordBatch.attributesOffset,
            length: header.totalSize - RecordBatch.attributesOffset)
        guard crc == header.crc else {
            return .corrupt("batch CRC-32C mismatch (batch at offset \(header.baseOffset))")
        }
        return .frame(shardID: shardID, header: header, length: Int(length))
    }
}
