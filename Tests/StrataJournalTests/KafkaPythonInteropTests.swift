import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

/// The project's venv (made by `make test`) has kafka-python; its RecordBatch builder and reader
/// are an independent implementation of the format the journal stores.
@Suite struct KafkaPythonInteropTests {
    static let python: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".venv/bin/python").path
    }()

    static func runPython(_ script: String, input: Data = Data()) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw JournalError(.invalidArgument, "python exited with \(process.terminationStatus)")
        }
        return output
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: python), "run `make venv` first"))
    func kafkaPythonBuildsTheSameBytes() throws {
        let script = """
            import sys
            from kafka.record.default_records import DefaultRecordBatchBuilder
            b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                producer_id=7, producer_epoch=1, base_sequence=100, batch_size=1 << 20)
            for i in range(50):
                b.append(i, timestamp=1700000000000 + i * 3, key=(b"key%d" % i) if i % 2 else None,
                         value=bytes([i % 256]) * (i * 7), headers=[("h%d" % i, b"x" * i)] if i % 3 == 0 else [])
            sys.stdout.buffer.write(bytes(b.build()))
            """
        let theirs = try Self.runPython(script)
        let records = (0..<50).map { i in
            Record(
                timestamp: 1_700_000_000_000 + Int64(i * 3), key: i % 2 == 1 ? Array("key\(i)".utf8) : nil,
                value: [UInt8](repeating: UInt8(i % 256), count: i * 7),
                headers: i % 3 == 0
                    ? [RecordHeader(key: "h\(i)", value: [UInt8](repeating: UInt8(ascii: "x"), count: i))] : [])
        }
        let ours = RecordBatch.encode(
            records, producerID: 7, producerEpoch: 1, baseSequence: 100, partitionLeaderEpoch: 0)
        #expect(Array(ours.readableBytesView) == Array(theirs))
        #expect(
            try RecordBatch.decode(ByteBuffer(bytes: theirs))
                == records.enumerated().map { i, record in
                    var record = record
                    record.offset = UInt64(i)
                    return record
                })
    }

    /// A batch stored by the journal, with its rewritten base offset, reads back in kafka-python
    /// with the right offsets and a valid CRC.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: python), "run `make venv` first"))
    func storedBatchesReadInKafkaPython() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("kafka/t/0")
            _ = try await journal.append(shard: "kafka/t/0", batch: makeBatch("first", count: 5))
            _ = try await journal.append(shard: "kafka/t/0", batch: makeBatch("second", count: 4))
            let read = try await journal.read(shard: "kafka/t/0", from: 5, maxBytes: 1 << 20)
            journal.close()
            var bytes = Data()
            for batch in read.batches { bytes.append(contentsOf: batch.readableBytesView) }
            let script = """
                import sys
                from kafka.record.default_records import DefaultRecordBatch
                batch = DefaultRecordBatch(sys.stdin.buffer.read())
                assert batch.validate_crc(), "bad crc"
                for r in batch:
                    print(r.offset, r.value.decode())
                """
            let output = String(decoding: try Self.runPython(script, input: bytes), as: UTF8.self)
            #expect(output == (0..<4).map { "\(5 + $0) second-\($0)\n" }.joined())
        }
    }

    /// Batches kafka-python compressed with each of Kafka's codecs (snappy in the Java client's
    /// xerial framing) decode to the records it was given.
    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: python), "run `make venv` first"),
        arguments: [1, 2, 3, 4])
    func compressedBatchesDecode(codec: Int) throws {
        let script = """
            import sys
            from kafka.record.default_records import DefaultRecordBatchBuilder
            b = DefaultRecordBatchBuilder(magic=2, compression_type=\(codec), is_transactional=False,
                producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 24)
            for i in range(300):
                b.append(i, timestamp=1700000000000 + i, key=b"sensors/room%d" % (i % 7),
                         value=(b"reading %d " % i) * (i % 50), headers=[("unit", b"C")] if i % 2 else [])
            sys.stdout.buffer.write(bytes(b.build()))
            """
        let batch = ByteBuffer(bytes: try Self.runPython(script))
        #expect(RecordBatch.Header.peek(batch, at: 0)?.compression?.rawValue == UInt8(codec))
        let records = try RecordBatch.decode(batch)
        #expect(records.count == 300)
        for (i, record) in records.enumerated() {
            #expect(record.offset == UInt64(i))
            #expect(record.key == Array("sensors/room\(i % 7)".utf8))
            #expect(record.value == Array(String(repeating: "reading \(i) ", count: i % 50).utf8))
            #expect(record.headers == (i % 2 == 1 ? [RecordHeader(key: "unit", value: Array("C".utf8))] : []))
        }
    }

    /// A small batch that expands beyond `maxDecompressedBytes` is refused before it is all held.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: python), "run `make venv` first"))
    func decompressionIsBounded() throws {
        let bomb = try Self.runPython("import sys, gzip; sys.stdout.buffer.write(gzip.compress(bytes(65 << 20)))")
        var batch = RecordBatch.encode([Record(timestamp: 1, key: nil, value: [1])])
        batch.moveWriterIndex(to: RecordBatch.headerSize)
        batch.writeBytes(bomb)
        batch.setInteger(Int32(batch.readableBytes - 12), at: 8)  // batch length
        batch.setInteger(Int16(1), at: 21)  // attributes: gzip
        #expect(bomb.count < 1 << 20)
        let error = #expect(throws: JournalError.self) { try RecordBatch.decode(batch) }
        #expect(error?.message.contains("expands beyond") == true)
    }
}
