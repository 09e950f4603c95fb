import NIOCore
import NIOTestUtils
import StrataJournal
import StrataTestSupport
import StrataWire
import Testing

@Suite struct JournalWireTests {
    static let requests: [JournalRequest] = [
        .hello(minVersion: 1, maxVersion: 3, client: "test"),
        .createShard(
            name: "kafka/t/0", config: ShardConfig(durability: .async, retentionMilliseconds: 5, retentionBytes: nil)),
        .alterShard(
            name: "mqtt/default/3",
            config: ShardConfig(durability: .fsync, retentionMilliseconds: 1000, retentionBytes: 1 << 30)),
        .alterShard(name: "t/1", config: ShardConfig(maxBatchBytes: 4096)),
        .deleteShard(name: "x"),
        .describeShard(name: "ü/名"),
        .listShards,
        .append(shard: "s", batch: makeBatch("a")),
        .read(shard: "s", offset: 7, maxBytes: 1000, maxWaitMilliseconds: 250),
        .offsetForTimestamp(shard: "s", timestamp: -5),
        .subscribe(shard: "s", offset: 9, maxBytes: 4096, credits: 8),
        .unsubscribe(subscription: 3),
        .credit(subscription: 3, credits: 4),
        .commitOffset(group: "g", shard: "s", offset: 11),
        .fetchOffset(group: "g", shard: "s"),
        .kvGet(namespace: "n", key: [1, 2]),
        .kvPut(namespace: "n", key: [1, 2], value: [3]),
        .kvDelete(namespace: "n", key: []),
        .kvScan(namespace: "n", prefix: [9], limit: 10),
        .status,
    ]

    /// Every request survives encode → frame bytes → decoder → decode, however the bytes are split.
    @Test func decoderHandlesEverySplitOfEveryRequest() throws {
        let encoder = JournalFrameEncoder()
        let frames = Self.requests.enumerated().map { $1.frame(correlationID: UInt32($0 + 1)) }
        let pairs: [(ByteBuffer, [JournalFrame])] = frames.map { frame in
            var bytes = ByteBuffer()
            encoder.encode(data: frame, out: &bytes)
            return (bytes, [frame])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { JournalFrameDecoder() }
        for frame in frames {
            let decoded = try JournalRequest.decode(frame)
            #expect(decoded.frame(correlationID: frame.correlationID) == frame)
        }
    }

    private func decode(_ bytes: [UInt8], maxFrameBytes: Int = 1 << 20) throws -> JournalFrame? {
        var decoder = JournalFrameDecoder(maxFrameBytes: maxFrameBytes)
        var buffer = ByteBuffer(bytes: bytes)
        return try decoder.decode(buffer: &buffer)
    }

    @Test func oversizeLengthIsRefusedBeforeTheBytesArrive() {
        // Only the 4 length bytes: the decoder must refuse without waiting for (or allocating) 4 GiB.
        #expect(throws: JournalError.self) { try decode([0xff, 0xff, 0xff, 0xff]) }
        #expect(throws: JournalError.self) { try decode([0x00, 0x10, 0x00, 0x01], maxFrameBytes: 1 << 20) }
    }

    @Test func shortAndUnknownFramesAreProtocolErrors() {
        #expect(throws: JournalError.self) { try decode([0, 0, 0, 4, 0x01, 0, 0, 0]) }
        #expect(throws: JournalError.self) { try decode([0, 0, 0, 5, 0x7e, 0, 0, 0, 1]) }
        #expect((try? decode([0, 0, 0, 9, 0x01])) == .some(nil), "a partial frame waits for more bytes")
    }

    @Test func malformedPayloadsAreProtocolErrors() {
        // A describe whose string length runs past the end.
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(50))
        payload.writeString("abc")
        let frame = JournalFrame(type: .describeShard, correlationID: 1, payload: payload)
        #expect(throws: JournalError.self) { try JournalRequest.decode(frame) }
        // Extra bytes after a complete request.
        var extra = JournalRequest.status.frame(correlationID: 2)
        extra.payload.writeInteger(UInt8(1))
        #expect(throws: JournalError.self) { try JournalRequest.decode(extra) }
        // Answers are not requests.
        #expect(throws: JournalError.self) { try JournalRequest.decode(JournalFrame(type: .ok, correlationID: 3)) }
        // A read result claiming more batches than bytes.
        var result = ByteBuffer()
        for _ in 0..<3 { result.writeInteger(UInt64(0)) }
        result.writeInteger(UInt32.max)
        #expect(throws: JournalError.self) { try result.readReadResult() }
    }

    @Test func errorsKeepTheirCodes() {
        for code in JournalError.Code.all {
            let frame = JournalResponse.error(9, JournalError(code, "m-\(code)"))
            #expect(JournalResponse.decodeError(frame) == JournalError(code, "m-\(code)"))
        }
    }
}
