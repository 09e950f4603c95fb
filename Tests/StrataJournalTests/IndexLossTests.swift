import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

#if canImport(Glibc)
    import Glibc
#endif

/// The catalog is recoverable from the WAL alone, and nothing the node cannot account for is
/// ever deleted.
@Suite struct IndexLossTests {
    private func configuration(_ dir: String) -> JournalConfiguration {
        var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
        configuration.maxBatchBytes = 8 << 10
        return configuration
    }

    /// Several shards over many segments, one deleted and its name reused, sparse segments
    /// compacted (control frames carried forward with the batches): with `index/` removed the
    /// journal rebuilds every shard under its name with every record at its offset, and the
    /// deleted shard stays deleted.
    @Test func catalogAndIndexAreRebuiltFromTheWALAlone() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = configuration(dir)
            configuration.compactionThreshold = 0.9
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards(["a", "b", "c"].map { (name: $0, config: ShardConfig()) })
            var expected: [String: [String]] = ["a": [], "b": [], "c": []]
            for n in 0..<60 {
                for shard in ["a", "b", "c"] {
                    _ = try await journal.append(shard: shard, batch: makeBatch("\(shard)\(n)", count: 2, size: 300))
                    expected[shard]! += ["\(shard)\(n)-0", "\(shard)\(n)-1"]
                }
            }
            try await journal.deleteShard("b")
            _ = try await journal.createShard("b", config: ShardConfig(durability: .async))
            expected["b"] = []
            for n in 0..<5 {
                _ = try await journal.append(shard: "b", batch: makeBatch("new\(n)", count: 1))
                expected["b"]! += ["new\(n)-0"]
            }
            try journal.runMaintenance()
            #expect(journal.statistics.compactedBytes > 0, "nothing was compacted")
            let before = journal.listShards()
            journal.close()
            try FileManager.default.removeItem(atPath: dir + "/index")

            for pass in 0..<2 {
                let reopened = try Journal(configuration: configuration, logger: quietLogger)
                let shards = reopened.listShards()
                #expect(shards.map(\.name) == ["a", "b", "c"], "pass \(pass)")
                #expect(shards.map(\.id) == before.map(\.id))
                #expect(shards.map(\.config) == before.map(\.config))
                for (shard, values) in expected {
                    let read = try await readAll(reopened, shard)
                    #expect(read.map(\.1) == values, "pass \(pass): \(shard)")
                    #expect(read.map(\.0) == Array(0..<UInt64(values.count)), "pass \(pass): \(shard)")
                }
                let next = try await reopened.append(shard: "a", batch: makeBatch("a-late\(pass)", count: 1))
                #expect(next.baseOffset == UInt64(expected["a"]!.count))
                expected["a"]! += ["a-late\(pass)-0"]
                // A new shard gets an id no earlier shard had.
                let fresh = try await reopened.createShard("fresh\(pass)")
                #expect(!before.map(\.id).contains(fresh.id))
                try await reopened.deleteShard("fresh\(pass)")
                reopened.close()
            }
        }
    }

    /// A changed configuration is in the WAL (a control frame replacing the shard's earlier one):
    /// retention and the batch limit follow it at once, and it outlives a restart and, after
    /// compaction moved the frames, the loss of `index/`.
    @Test func alteredConfigurationTakesEffectAndIsRebuiltFromTheWAL() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = configuration(dir)
            configuration.compactionThreshold = 0.9
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards(["kept", "trimmed"].map { (name: $0, config: ShardConfig()) })
            for n in 0..<200 {
                for shard in ["kept", "trimmed"] {
                    _ = try await journal.append(shard: shard, batch: makeBatch("\(shard)\(n)", count: 2, size: 300))
                }
            }
            let altered = ShardConfig(
                durability: .async, retentionMilliseconds: nil, retentionBytes: 4_000, maxBatchBytes: 1_000)
            let info = try await journal.alterShard("trimmed", config: altered)
            #expect(info.config == altered)
            // The limit holds for this shard only, and cannot exceed the node's (8 KiB here).
            let large = makeBatch("large", count: 4, size: 300)
            let refused1 = await #expect(throws: JournalError.self) {
                try await journal.append(shard: "trimmed", batch: large)
            }
            #expect(refused1?.code == .batchTooLarge, "\(refused1.map { "\($0)" } ?? "")")
            _ = try await journal.append(shard: "kept", batch: large)
            _ = try await journal.append(shard: "trimmed", batch: makeBatch("small", count: 1, size: 300))
            var tooLarge = altered
            tooLarge.maxBatchBytes = 16 << 10
            let refused2 = await #expect(throws: JournalError.self) {
                try await journal.alterShard("kept", config: tooLarge)
            }
            #expect(refused2?.code == .invalidArgument, "\(refused2.map { "\($0)" } ?? "")")
            let refused3 = await #expect(throws: JournalError.self) {
                try await journal.createShard("other", config: tooLarge)
            }
            #expect(refused3?.code == .invalidArgument, "\(refused3.map { "\($0)" } ?? "")")
            await #expect(throws: JournalError.self) { try await journal.alterShard("missing", config: altered) }
            try journal.runMaintenance()
            let trimmed = try journal.describeShard("trimmed")
            #expect(trimmed.startOffset > 0 && trimmed.storedBytes <= 4_000, "retention did not follow the change")
            #expect(try journal.describeShard("kept").startOffset == 0)
            #expect(journal.statistics.compactedBytes > 0, "nothing was compacted")
            journal.close()

            for indexLost in [false, true] {
                if indexLost { try FileManager.default.removeItem(atPath: dir + "/index") }
                let reopened = try Journal(configuration: configuration, logger: quietLogger)
                #expect(try reopened.describeShard("trimmed").config == altered, "index lost: \(indexLost)")
                let refused4 = await #expect(throws: JournalError.self) {
                    try await reopened.append(shard: "trimmed", batch: large)
                }
                #expect(refused4?.code == .batchTooLarge, "\(refused4.map { "\($0)" } ?? "")")
                #expect(try reopened.describeShard("kept").config == ShardConfig())
                let read = try await readAll(reopened, "kept")
                #expect(read.count == 404, "index lost: \(indexLost)")
                reopened.close()
            }
        }
    }

    /// A batch of a shard id that neither the catalog nor any control frame knows stops the open
    /// with file and position, with and without an index, and the segment is left as it was.
    @Test(arguments: [false, true])
    func aWALThatCannotBeAccountedForIsRefusedAndKept(indexLost: Bool) async throws {
        try await withTemporaryDirectory { dir in
            let configuration = configuration(dir)
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            for n in 0..<5 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)")) }
            journal.close()
            // A well-formed frame of shard id 77, appended after the last frame.
            let files = try segmentFiles(dir)
            let last = try #require(files.last)
            var batch = makeBatch("stray")
            batch.setInteger(Int64(0), at: 0)
            let frame = WALFormat.frame(shardID: 77, batch: batch, allocator: ByteBufferAllocator())
            var bytes = Array(frame.readableBytesView)
            let segment = try #require(WALFormat.segmentID(fileName: URL(fileURLWithPath: last).lastPathComponent))
            bytes.withUnsafeMutableBytes {
                WALFormat.stampSynced(
                    $0.baseAddress!, 0, salt: WALFormat.salt(segment: segment, version: WALFormat.version))
            }
            let handle = try #require(FileHandle(forWritingAtPath: last))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(bytes))
            try handle.close()
            if indexLost { try FileManager.default.removeItem(atPath: dir + "/index") }
            let sizes = try files.map { try FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int }

            do {
                _ = try Journal(configuration: configuration, logger: quietLogger)
                Issue.record("the journal opened")
            } catch let error as JournalError {
                #expect(error.code == .corruptData)
                #expect(error.message.contains(last), "\(error)")
                #expect(error.message.contains("shard id 77"), "\(error)")
            }
            #expect(try segmentFiles(dir) == files)
            #expect(try files.map { try FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int } == sizes)
        }
    }

    /// Maintenance checks through the index before it unlinks a segment: a segment whose live
    /// byte count says "empty" while the index still points into it is kept, and its data stays
    /// readable.
    @Test func aSegmentTheIndexStillPointsIntoIsNeverDeleted() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = configuration(dir)
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            var expected: [String] = []
            for n in 0..<300 {
                _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 1, size: 500))
                expected.append("b\(n)-0")
            }
            let first = try #require(journal.segmentInfos().first { !$0.active })
            // Accounting gone wrong (the defect this guards against): the segment looks dead.
            journal.core.withLock { $0.segmentLive[first.id] = 0 }
            try journal.runMaintenance()
            #expect(journal.segmentInfos().contains { $0.id == first.id }, "the segment was deleted")
            #expect(FileManager.default.fileExists(atPath: journal.segments.path(first.id)))
            #expect(try await readAll(journal, "s").map(\.1) == expected)
            journal.close()
        }
    }
}
