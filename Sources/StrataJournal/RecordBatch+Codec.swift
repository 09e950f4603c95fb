import NIOCore

extension RecordBatch {
    /// Encodes uncompressed records as one v2 batch with base offset 0 (the journal assigns the
    /// real one). Record offsets are the positions in `records`.
    public static func encode(
        _ records: [Record], producerID: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1,
        partitionLeaderEpoch: Int32 = -1, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        precondition(!records.isEmpty, "a RecordBatch holds at least one record")
        let baseTimestamp = records.map(\.timestamp).min()!
        let maxTimestamp = records.map(\.timestamp).max()!
        var body = allocator.buffer(
            capacity: records.reduce(0) { $0 + 16 + ($1.value?.count ?? 0) + ($1.key?.count ?? 0) })
        var scratch = allocator.buffer(capacity: 64)
        for (delta, record) in records.enumerated() {
            scratch.clear()
            scratch.writeInteger(Int8(0))  // record attributes
            scratch.writeVarint(record.timestamp - baseTimestamp)
            scratch.writeVarint(Int64(delta))
            scratch.writeNullableBytes(record.key)
            scratch.writeNullableBytes(record.value)
            scratch.writeVarint(Int64(record.headers.count))
            for header in record.headers {
                scratch.writeNullableBytes(Array(header.key.utf8))
                scratch.writeNullableBytes(header.value)
            }
            body.writeVarint(Int64(scratch.readableBytes))
            body.writeImmutableBuffer(scratch)
        }
        var batch = allocator.buffer(capacity: headerSize + body.readableBytes)
        batch.writeInteger(Int64(0))
        batch.writeInteger(Int32(headerSize - 12 + body.readableBytes))
        batch.writeInteger(partitionLeaderEpoch)
        batch.writeInteger(Int8(2))
        batch.writeInteger(UInt32(0))  // CRC, filled below
        batch.writeInteger(Int16(0))  // attributes: no compression, create time
        batch.writeInteger(Int32(records.count - 1))
        batch.writeInteger(baseTimestamp)
        batch.writeInteger(maxTimestamp)
        batch.writeInteger(producerID)
        batch.writeInteger(producerEpoch)
        batch.writeInteger(baseSequence)
        batch.writeInteger(Int32(records.count))
        batch.writeBuffer(&body)
        let crc = CRC32C.checksum(batch, offset: attributesOffset, length: batch.readableBytes - attributesOffset)
        batch.setInteger(crc, at: batch.readerIndex + crcOffset)
        return batch
    }

    /// Decodes the records of one batch, with absolute offsets. A compressed batch (stored and
    /// served as the producer compressed it) is decompressed here, within `maxDecompressedBytes`.
    public static func decode(_ batch: ByteBuffer) throws(JournalError) -> [Record] {
        guard let header = Header.peek(batch, at: batch.readerIndex), header.totalSize <= batch.readableBytes else {
            throw JournalError(.invalidBatch, "truncated RecordBatch")
        }
        guard let compression = header.compression else {
            throw JournalError(.invalidBatch, "batch with unknown compression (attributes \(header.attributes))")
        }
        guard header.baseOffset >= 0, header.recordCount >= 0, header.totalSize >= headerSize else {
            throw JournalError(
                .invalidBatch,
                "batch header has base offset \(header.baseOffset), record count \(header.recordCount), length \(header.totalSize)"
            )
        }
        var body = try decompress(
            batch.getSlice(at: batch.readerIndex + headerSize, length: header.totalSize - headerSize)!, compression)
        var records: [Record] = []
        records.reserveCapacity(Int(min(header.recordCount, 65_536)))
        for _ in 0..<header.recordCount {
            guard let length = body.readVarint(), length >= 0, var record = body.readSlice(length: Int(length)) else {
                throw JournalError(.invalidBatch, "truncated record in batch at offset \(header.baseOffset)")
            }
            guard record.readInteger(as: Int8.self) != nil,
                let timestampDelta = record.readVarint(),
                let offsetDelta = record.readVarint(),
                let key = record.readNullableBytes(),
                let value = record.readNullableBytes(),
                let headerCount = record.readVarint(), headerCount >= 0, headerCount <= record.readableBytes
            else {
                throw JournalError(.invalidBatch, "malformed record in batch at offset \(header.baseOffset)")
            }
            var headers: [RecordHeader] = []
            for _ in 0..<headerCount {
                guard let headerKey = record.readNullableBytes() ?? nil, let headerValue = record.readNullableBytes()
                else {
                    throw JournalError(.invalidBatch, "malformed record header in batch at offset \(header.baseOffset)")
                }
                headers.append(RecordHeader(key: String(decoding: headerKey, as: UTF8.self), value: headerValue))
            }
            let (timestamp, overflow) = header.baseTimestamp.addingReportingOverflow(timestampDelta)
            guard offsetDelta >= 0, offsetDelta <= Int64(header.lastOffsetDelta), !overflow else {
                throw JournalError(
                    .invalidBatch,
                    "record with offset delta \(offsetDelta) / timestamp delta \(timestampDelta) in batch at offset \(header.baseOffset)"
                )
            }
            records.append(
                Record(
                    offset: UInt64(header.baseOffset) + UInt64(offsetDelta), timestamp: timestamp, key: key,
                    value: value,
                    headers: headers))
        }
        return records
    }
}

extension ByteBuffer {
    /// Writes a zigzag varint (Kafka's varint and varlong).
    @inlinable
    mutating func writeVarint(_ value: Int64) {
        var zigzag = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        while zigzag >= 0x80 {
            writeInteger(UInt8(truncatingIfNeeded: zigzag) | 0x80)
            zigzag >>= 7
        }
        writeInteger(UInt8(zigzag))
    }

    /// Reads a zigzag varint of at most 10 bytes; nil (reader index unchanged) when short or overlong.
    @inlinable
    mutating func readVarint() -> Int64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var index = readerIndex
        while shift < 64 {
            guard let byte: UInt8 = getInteger(at: index) else { return nil }
            index += 1
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 {
                moveReaderIndex(to: index)
                return Int64(bitPattern: result >> 1) ^ -Int64(bitPattern: result & 1)
            }
            shift += 7
        }
        return nil
    }

    /// Writes a varint length (-1 for nil) followed by the bytes.
    mutating func writeNullableBytes(_ bytes: [UInt8]?) {
        guard let bytes else {
            writeVarint(-1)
            return
        }
        writeVarint(Int64(bytes.count))
        writeBytes(bytes)
    }

    /// Reads varint-length-prefixed bytes: `.some(nil)` for length -1, nil when malformed or short.
    mutating func readNullableBytes() -> [UInt8]?? {
        let start = readerIndex
        guard let length = readVarint() else { return nil }
        if length == -1 { return .some(nil) }
        guard length >= 0, length <= readableBytes, let bytes = readBytes(length: Int(length)) else {
            moveReaderIndex(to: start)
            return nil
        }
        return .some(bytes)
    }
}
