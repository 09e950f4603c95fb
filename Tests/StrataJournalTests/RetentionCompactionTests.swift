import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct RetentionCompactionTests {
    @Test func retentionByBytesMovesTheStartAndSurvivesRestart() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s", config: ShardConfig(retentionBytes: 5_000))
            for n in 0..<20 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 2, size: 400)) }
            let stored = try journal.describeShard("s").storedBytes
            #expect(stored > 5_000)
            try journal.runMaintenance()
            let info = try journal.describeShard("s")
            #expect(info.storedBytes <= 5_000)
            #expect(info.startOffset > 0 && info.startOffset % 2 == 0)
            #expect(info.endOffset == 40)
            do {
                _ = try await journal.read(shard: "s", from: 0, maxBytes: 100)
                Issue.record("a read below the start offset succeeded")
            } catch let error as JournalError {
                #expect(error.code == .offsetOutOfRange)
            }
            let remaining = try await readAll(journal, "s", from: info.startOffset)
            #expect(remaining.first?.0 == info.startOffset)
            #expect(remaining.last?.1.hasPrefix("b19-1") == true)
            journal.close()

            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(try reopened.describeShard("s").startOffset == info.startOffset)
            #expect(try await reopened.append(shard: "s", batch: makeBatch("x")).baseOffset == 40)
            reopened.close()
        }
    }

    @Test func retentionByAgeDropsOldBatchesOnly() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s", config: ShardConfig(retentionMilliseconds: 600_000))
            let hourAgo = nowMilliseconds() - 3_600_000
            for n in 0..<5 { _ = try await journal.append(shard: "s", batch: makeBatch("old\(n)", timestamp: hourAgo)) }
            for n in 0..<5 { _ = try await journal.append(shard: "s", batch: makeBatch("new\(n)")) }
            try journal.runMaintenance()
            #expect(try journal.describeShard("s").startOffset == 15)
            #expect(try await readAll(journal, "s", from: 15).first?.1 == "new0-0")
            journal.close()
        }
    }

    /// Everything expired: the shard is empty but its offsets never go back, even across a restart.
    @Test func fullyExpiredShardKeepsItsOffsets() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s", config: ShardConfig(retentionMilliseconds: 1000))
            for n in 0..<4 {
                _ = try await journal.append(shard: "s", batch: makeBatch("old\(n)", timestamp: nowMilliseconds() - 60_000))
            }
            try journal.runMaintenance()
            #expect(try journal.describeShard("s").startOffset == 12)
            journal.close()
            try dropIndex(dir)
            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            let info = try reopened.describeShard("s")
            #expect(info.startOffset == 12 && info.endOffset == 12)
            #expect(try await reopened.append(shard: "s", batch: makeBatch("n")).baseOffset == 12)
            reopened.close()
        }
    }

    /// Sealed segments mostly dead after retention are compacted: live batches are copied forward,
    /// the old files disappear, and everything live still reads back, before and after a restart.
    @Test func sparseSegmentsAreCompacted() async throws {
        try await withTemporaryDirectory { dir in
            let configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards([("keep", ShardConfig()), ("drop", ShardConfig(retentionBytes: 1))])
            let kept = try await appendInterleaved(journal, keepEvery: 4)
            let filesBefore = try segmentFiles(dir)
            #expect(filesBefore.count >= 5)
            try journal.runMaintenance()
            let filesAfter = try segmentFiles(dir)
            #expect(journal.statistics.compactedBytes > 0)
            #expect(filesAfter.count < filesBefore.count)
            #expect(!filesAfter.contains(filesBefore[0]))
            let afterCompaction = try await readAll(journal, "keep").map(\.1)
            #expect(afterCompaction == kept, "\(afterCompaction.prefix(5)) ... \(afterCompaction.count)")
            journal.close()

            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            #expect(try await readAll(reopened, "keep").map(\.1) == kept)
            reopened.close()
            try dropIndex(dir)
            let replayed = try Journal(configuration: configuration, logger: quietLogger)
            #expect(try await readAll(replayed, "keep").map(\.1) == kept)
            replayed.close()
        }
    }

    /// Compaction hands its copies to the writer in rounds of `compactionChunkBytes`, so a
    /// foreground append never waits behind a whole segment's copies (the soak's stalls).
    @Test func compactionCopiesInBoundedRounds() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            configuration.compactionChunkBytes = 4096
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards([("keep", ShardConfig()), ("drop", ShardConfig(retentionBytes: 1))])
            let kept = try await appendInterleaved(journal, keepEvery: 3)
            let before = journal.statistics
            try journal.runMaintenance()
            let after = journal.statistics
            let compacted = after.compactedBytes - before.compactedBytes
            let writes = after.walWrites - before.walWrites
            #expect(compacted > 40_000)
            // One write per round: at least compacted / (chunk + one frame) of them, where one
            // write per compacted segment was the old behaviour.
            #expect(writes >= compacted / (4096 + 1100), "\(writes) writes for \(compacted) bytes")
            #expect(try await readAll(journal, "keep").map(\.1) == kept)
            journal.close()
        }
    }

    /// 400 batches of 900 B, one in `keepEvery` to shard "keep" and the rest to "drop" (which
    /// retention empties), so every segment is left sparse; returns the kept records' values.
    private func appendInterleaved(_ journal: Journal, keepEvery: Int) async throws -> [String] {
        var kept: [String] = []
        for n in 0..<400 {
            if n % keepEvery == 0 {
                _ = try await journal.append(shard: "keep", batch: makeBatch("k\(n)", count: 1, size: 900))
                kept.append("k\(n)-0")
            } else {
                _ = try await journal.append(shard: "drop", batch: makeBatch("d\(n)", count: 1, size: 900))
            }
        }
        return kept
    }
}
