import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct RecordBatchTests {
    @Test func encodeDecodeRoundTrip() throws {
        let records = [
            Record(timestamp: 1_700_000_000_000, key: nil, value: Array("one".utf8)),
            Record(
                timestamp: 1_700_000_000_005, key: Array("k".utf8), value: nil,
                headers: [RecordHeader(key: "h1", value: [1, 2, 3]), RecordHeader(key: "h2", value: nil)]),
            Record(timestamp: 1_699_999_999_999, key: [], value: [UInt8](repeating: 7, count: 300)),
        ]
        let batch = RecordBatch.encode(records, producerID: 42, producerEpoch: 3, baseSequence: 17)
        let header = try RecordBatch.validate(batch)
        #expect(header.magic == 2)
        #expect(header.recordCount == 3)
        #expect(header.lastOffsetDelta == 2)
        #expect(header.baseTimestamp == 1_699_999_999_999)
        #expect(header.maxTimestamp == 1_700_000_000_005)
        #expect(header.producerID == 42 && header.producerEpoch == 3 && header.baseSequence == 17)
        #expect(header.totalSize == batch.readableBytes)
        let decoded = try RecordBatch.decode(batch)
        #expect(decoded.map(\.offset) == [0, 1, 2])
        #expect(decoded.map(\.timestamp) == records.map(\.timestamp))
        #expect(decoded.map(\.key) == records.map(\.key))
        #expect(decoded.map(\.value) == records.map(\.value))
        #expect(decoded[1].headers == records[1].headers)
    }

    /// A batch produced by kafka-python 3.0's DefaultRecordBatchBuilder (magic 2, no compression)
    /// for two records: (key b"k", value b"hello", ts 1700000000000) and (key None, value b"world",
    /// ts 1700000000001, header ("h", b"v")). Strata must accept and decode it byte for byte, and
    /// its own encoder must produce the same bytes.
    @Test func matchesKafkaPythonBytes() throws {
        let records = [
            Record(timestamp: 1_700_000_000_000, key: Array("k".utf8), value: Array("hello".utf8)),
            Record(
                timestamp: 1_700_000_000_001, key: nil, value: Array("world".utf8),
                headers: [RecordHeader(key: "h", value: Array("v".utf8))]),
        ]
        let ours = RecordBatch.encode(records, partitionLeaderEpoch: 0)
        let golden = Self.kafkaPythonGolden
        #expect(Array(ours.readableBytesView) == golden)
        let decoded = try RecordBatch.decode(ByteBuffer(bytes: golden))
        #expect(decoded.map(\.value) == records.map(\.value))
    }

    static let kafkaPythonGolden: [UInt8] = hexBytes(
        "00000000000000000000004e0000000002507addb40000000000010000018bcfe568000000018bcfe56801ffffffffff"
            + "ffffffffffffffffff0000000218000000026b0a68656c6c6f001e000202010a776f726c640202680276")

    @Test func validateRejectsDamage() throws {
        let good = RecordBatch.encode([Record(timestamp: 1, value: Array("x".utf8))])
        #expect(throws: Never.self) { try RecordBatch.validate(good) }

        var flipped = good
        flipped.setInteger(flipped.getInteger(at: 64, as: UInt8.self)! ^ 0x40, at: 64)
        #expect(throws: JournalError.self) { try RecordBatch.validate(flipped) }
        do {
            _ = try RecordBatch.validate(flipped)
        } catch {
            #expect(error.code == .invalidBatch)
            #expect(error.message.contains("CRC"))
        }

        var badMagic = good
        badMagic.setInteger(Int8(1), at: 16)
        #expect(throws: JournalError.self) { try RecordBatch.validate(badMagic) }

        var truncated = good
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        #expect(throws: JournalError.self) { try RecordBatch.validate(truncated) }

        #expect(throws: JournalError.self) { try RecordBatch.validate(ByteBuffer(bytes: [1, 2, 3])) }

        do {
            _ = try RecordBatch.validate(good, maxBytes: 10)
            Issue.record("an oversize batch was accepted")
        } catch {
            #expect(error.code == .batchTooLarge)
        }
    }

    /// Found by the seeded fuzzer: a record whose offset delta is negative (or past the batch's
    /// last offset delta), or whose timestamp delta overflows, behind a valid CRC, trapped in
    /// decode. Now it is an invalid-batch error.
    @Test(arguments: [Int64(-1), 5, 1 << 40])
    func recordsWithImpossibleDeltasAreRejected(offsetDelta: Int64) throws {
        var record = ByteBuffer()
        record.writeInteger(Int8(0))
        record.writeVarint(offsetDelta == 1 << 40 ? .max : 0)  // timestamp delta
        record.writeVarint(offsetDelta == 1 << 40 ? 0 : offsetDelta)
        record.writeVarint(-1)  // key
        record.writeVarint(-1)  // value
        record.writeVarint(0)  // headers
        var batch = RecordBatch.encode([Record(timestamp: 1, value: nil)])
        batch.moveWriterIndex(to: batch.readerIndex + RecordBatch.headerSize)
        batch.writeVarint(Int64(record.readableBytes))
        batch.writeBuffer(&record)
        batch.setInteger(Int32(batch.readableBytes - 12), at: 8)
        batch.setInteger(Int64(1), at: 27)  // a base timestamp that the delta overflows
        batch.setInteger(
            CRC32C.checksum(batch, offset: RecordBatch.attributesOffset, length: batch.readableBytes - RecordBatch.attributesOffset),
            at: RecordBatch.crcOffset)
        _ = try RecordBatch.validate(batch)
        #expect(throws: JournalError.self) { try RecordBatch.decode(batch) }
    }

    @Test func varintsRoundTripAndRejectOverlongInput() {
        var buffer = ByteBuffer()
        let values: [Int64] = [0, 1, -1, 63, -64, 64, 300, -300, .max, .min, 1 << 40]
        for value in values { buffer.writeVarint(value) }
        for value in values { #expect(buffer.readVarint() == value) }
        var overlong = ByteBuffer(bytes: [UInt8](repeating: 0xff, count: 11))
        #expect(overlong.readVarint() == nil)
        #expect(overlong.readerIndex == 0)
    }
}

func hexBytes(_ hex: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var iterator = hex.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
        bytes.append(UInt8(String([high, low]), radix: 16)!)
    }
    return bytes
}
