import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct RecoveryTests {
    /// Writes 10 batches of 3 records to shard "s" and returns the WAL file and its size.
    private func writeTen(_ dir: String) async throws -> (path: String, size: Int) {
        let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
        _ = try await journal.createShard("s")
        for n in 0..<10 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)")) }
        journal.close()
        let path = try #require(try segmentFiles(dir).last)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        return (path, size)
    }

    /// Writes 60 batches of 4 records of 500 bytes to shard "s" in 64 KiB segments.
    private func writeSixtyBatches(_ dir: String) async throws -> JournalConfiguration {
        let configuration = testConfiguration(dir, segmentBytes: 1 << 16)
        let journal = try Journal(configuration: configuration, logger: quietLogger)
        _ = try await journal.createShard("s")
        for n in 0..<60 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 4, size: 500)) }
        journal.close()
        return configuration
    }

    /// Any cut inside the last frame loses exactly that frame; the rest reads back and offsets continue densely.
    @Test(arguments: [1, 5, 16, 40, 80])
    func tornTailIsCut(bytesLost: Int) async throws {
        try await withTemporaryDirectory { dir in
            let (path, size) = try await writeTen(dir)
            // The checkpoint written at close would skip the scan: move it back to replay everything.
            try resetCheckpoint(dir)
            let handle = try #require(FileHandle(forUpdatingAtPath: path))
            try handle.truncate(atOffset: UInt64(size - bytesLost))
            try handle.close()
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            let read = try await readAll(journal, "s")
            #expect(read.count == 27)
            #expect(read.last?.1 == "b8-2")
            #expect(try await journal.append(shard: "s", batch: makeBatch("new")).baseOffset == 27)
            journal.close()
            let again = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(try await readAll(again, "s").map(\.1).suffix(3) == ["new-0", "new-1", "new-2"])
            again.close()
        }
    }

    /// A damaged frame in the middle of the last segment with valid batches after it is not a
    /// torn tail: the open stops naming file and position and cuts nothing. With
    /// quarantineDamagedWAL the damaged range is copied aside and the journal opens with what
    /// came before it.
    @Test func damageBeforeValidFramesStopsTheOpen() async throws {
        try await withTemporaryDirectory { dir in
            let (path, size) = try await writeTen(dir)
            try resetCheckpoint(dir)
            // Frames: the shard's control frame, then b0 ... b9. Damage b5 inside its records.
            let handle = try #require(FileHandle(forUpdatingAtPath: path))
            var position = UInt64(WALFormat.segmentHeaderSize)
            for _ in 0..<6 { position += UInt64(try handle.readLength(at: position)) }
            try handle.seek(toOffset: position + 70)
            let byte = try #require(try handle.read(upToCount: 1)).first!
            try handle.seek(toOffset: position + 70)
            try handle.write(contentsOf: Data([byte ^ 0x40]))
            try handle.close()
            do {
                _ = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
                Issue.record("the journal opened over damaged acknowledged data")
            } catch let error as JournalError {
                #expect(error.code == .corruptData)
                #expect(error.message.contains("\(path) position \(position)"), "\(error)")
                #expect(error.message.contains("valid data"), "\(error)")
            }
            #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == size)

            var configuration = testConfiguration(dir)
            configuration.quarantineDamagedWAL = true
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            #expect(try await readAll(journal, "s").map(\.1) == (0..<5).flatMap { n in (0..<3).map { "b\(n)-\($0)" } })
            let copy = path + ".damaged-\(position)"
            #expect(try FileManager.default.attributesOfItem(atPath: copy)[.size] as? Int == size - Int(position))
            #expect(try await journal.append(shard: "s", batch: makeBatch("next")).baseOffset == 15)
            journal.close()
        }
    }

    @Test func garbageAfterTheLastFrameIsCut() async throws {
        try await withTemporaryDirectory { dir in
            let (path, _) = try await writeTen(dir)
            try resetCheckpoint(dir)
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data((0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37) }))
            try handle.close()
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(try await readAll(journal, "s").count == 30)
            journal.close()
        }
    }

    /// A flipped byte inside a sealed, checkpointed segment is reported with file and position on read.
    @Test func corruptSealedSegmentIsReportedWithFileAndPosition() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = try await writeSixtyBatches(dir)
            let files = try segmentFiles(dir)
            #expect(files.count >= 2)
            // Damage a byte of the second batch of the first segment (inside the record data), past
            // the shard's control frame and its first batch.
            let handle = try #require(FileHandle(forUpdatingAtPath: files[0]))
            let control = UInt64(WALFormat.segmentHeaderSize)
            let frame = control + UInt64(try handle.readLength(at: control))
            let firstLength = try handle.readLength(at: frame)
            let target = frame + UInt64(firstLength) + 200
            try handle.seek(toOffset: target)
            let byte = try #require(try handle.read(upToCount: 1)).first!
            try handle.seek(toOffset: target)
            try handle.write(contentsOf: Data([byte ^ 0x01]))
            try handle.close()

            var reopenedConfiguration = configuration
            reopenedConfiguration.tailBytesPerShard = 1
            let reopened = try Journal(configuration: reopenedConfiguration, logger: quietLogger)
            // The first batch is intact; the second is not served.
            #expect(try await reopened.read(shard: "s", from: 0, maxBytes: 1).batches.count == 1)
            do {
                _ = try await reopened.read(shard: "s", from: 4, maxBytes: 1)
                Issue.record("a corrupt batch was served")
            } catch let error as JournalError {
                #expect(error.code == .corruptData)
                #expect(error.message.contains(files[0]))
                #expect(error.message.contains("position \(frame + UInt64(firstLength))"))
            }
            // Later batches are still served.
            #expect(try await reopened.read(shard: "s", from: 8, maxBytes: 1).batches.count == 1)
            reopened.close()
        }
    }

    /// Corruption inside a sealed segment that recovery must replay stops the open with file and position.
    @Test func corruptSealedSegmentDuringReplayFailsTheOpen() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = try await writeSixtyBatches(dir)
            try resetCheckpoint(dir)
            let files = try segmentFiles(dir)
            let handle = try #require(FileHandle(forUpdatingAtPath: files[0]))
            try handle.seek(toOffset: UInt64(WALFormat.segmentHeaderSize + 100))
            try handle.write(contentsOf: Data([0xAB, 0xCD]))
            try handle.close()
            do {
                _ = try Journal(configuration: configuration, logger: quietLogger)
                Issue.record("a corrupt sealed segment was silently accepted")
            } catch let error as JournalError {
                #expect(error.code == .corruptData)
                #expect(error.message.contains(files[0]))
                #expect(error.message.contains("position \(WALFormat.segmentHeaderSize)"))
            }
        }
    }

    /// Recovery from the WAL alone (index checkpoint at the start) rebuilds the same index.
    @Test func fullReplayRebuildsTheIndex() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards([("a", ShardConfig()), ("b", ShardConfig(durability: .async))])
            for n in 0..<40 {
                _ = try await journal.append(shard: n % 2 == 0 ? "a" : "b", batch: makeBatch("b\(n)", count: 2, size: 300))
            }
            let before = try await (readAll(journal, "a"), readAll(journal, "b"))
            journal.close()
            // Drop the whole index but the catalog: keep only the 'c' and 'm next-shard-id' keys.
            try dropIndex(dir)
            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            let after = try await (readAll(reopened, "a"), readAll(reopened, "b"))
            #expect(after.0.map(\.1) == before.0.map(\.1))
            #expect(after.1.map(\.1) == before.1.map(\.1))
            #expect(try await reopened.offset(shard: "a", atOrAfter: 0) == 0)
            reopened.close()
        }
    }
}

extension RecoveryTests {
    /// A replay longer than the scanner's 8 MiB read chunk, with frames straddling chunk edges.
    @Test func replayReadsSegmentsInChunks() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = testConfiguration(dir, segmentBytes: 64 << 20)
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("big", config: ShardConfig(durability: .async))
            for n in 0..<200 { _ = try await journal.append(shard: "big", batch: makeBatch("b\(n)", count: 3, size: 33_331)) }
            journal.close()
            #expect(try segmentFiles(dir).count == 1)
            try resetCheckpoint(dir)
            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            let values = try await readAll(reopened, "big").map(\.1)
            #expect(values.count == 600)
            #expect(values.last == "b199-2")
            reopened.close()
        }
    }
}

/// Points the index checkpoint at the first segment's start so that open replays the whole WAL.
func resetCheckpoint(_ dir: String) throws {
    let db = try RocksDB(path: dir + "/index", cacheBytes: 8 << 20)
    let first = try #require(try segmentFiles(dir).first)
    let id = try #require(WALFormat.segmentID(fileName: URL(fileURLWithPath: first).lastPathComponent))
    try db.put(StorageKeys.checkpoint, WALPosition(segment: id, position: UInt64(WALFormat.segmentHeaderSize)).encoded, durable: true)
}

/// Deletes every batch- and time-index key and resets the checkpoint.
func dropIndex(_ dir: String) throws {
    do {
        let db = try RocksDB(path: dir + "/index", cacheBytes: 8 << 20)
        let batch = RocksDB.WriteBatch()
        batch.deleteRange([UInt8(ascii: "t")], [UInt8(ascii: "u")])
        batch.deleteRange([UInt8(ascii: "x")], [UInt8(ascii: "y")])
        try db.write(batch, durable: true)
    }
    try resetCheckpoint(dir)
}

extension FileHandle {
    func readLength(at offset: UInt64) throws -> Int {
        try seek(toOffset: offset)
        let bytes = try read(upToCount: 4) ?? Data()
        return Int(UInt32(bigEndianBytes: bytes))
    }
}
