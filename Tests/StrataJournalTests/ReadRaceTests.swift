import Foundation
import NIOCore
import StrataTestSupport
import Synchronization
import Testing

@testable import StrataJournal

/// Reads that race compaction (which moves batches and deletes their old segment) and
/// retention either get their data or `offset_out_of_range`, never an I/O error.
@Suite struct ReadRaceTests {
    final class Failures: Sendable {
        let list = Mutex<[String]>([])
        let reads = Mutex(0)
    }

    @Test func readsRacingCompactionAndRetentionGetDataOrOutOfRange() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            configuration.maxBatchBytes = 8 << 10
            configuration.tailBytesPerShard = 1  // every read goes to the segments
            configuration.compactionThreshold = 0.9
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards([
                (name: "keep", config: ShardConfig(durability: .async)),
                (name: "ret", config: ShardConfig(durability: .async, retentionBytes: 16 << 10)),
            ])
            let failures = Failures()
            let stop = Box(false)
            let maintenance = Thread {
                while !stop.value.withLock({ $0 }) { try? journal.runMaintenance() }
            }
            maintenance.start()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for n in 0..<3000 {
                        _ = try await journal.append(shard: n % 3 == 0 ? "keep" : "ret", batch: makeBatch("b\(n)", count: 2, size: 300))
                    }
                    stop.value.withLock { $0 = true }
                }
                for reader in 0..<2 {
                    group.addTask {
                        var random = SplitMix64(seed: UInt64(reader))
                        while !stop.value.withLock({ $0 }) {
                            let shard = random.next() & 1 == 0 ? "keep" : "ret"
                            let info = try journal.describeShard(shard)
                            guard info.endOffset > info.startOffset else { continue }
                            let offset = info.startOffset + random.next() % (info.endOffset - info.startOffset)
                            do {
                                let read = try await journal.read(shard: shard, from: offset, maxBytes: 16 << 10)
                                let first = try #require(read.batches.first)
                                let records = try RecordBatch.decode(first)
                                if !records.contains(where: { $0.offset == offset }) {
                                    failures.list.withLock { $0.append("\(shard)@\(offset): the first batch does not hold it") }
                                }
                                failures.reads.withLock { $0 += 1 }
                            } catch let error as JournalError where error.code == .offsetOutOfRange {
                                continue
                            } catch {
                                failures.list.withLock { $0.append("\(shard)@\(offset): \(error)") }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            while maintenance.isExecuting { try await Task.sleep(for: .milliseconds(1)) }
            #expect(journal.statistics.compactedBytes > 0, "nothing was compacted")
            #expect(failures.reads.withLock { $0 } > 100)
            let found = failures.list.withLock { $0 }
            #expect(found.isEmpty, "\(found.count) failed reads, first: \(found.prefix(3))")
            journal.close()
        }
    }

    /// The race made certain: a read planned on an index entry whose segment compaction has since
    /// copied forward and deleted reads the batch where it is now; one whose batch retention has
    /// removed finds nothing (and the caller answers offset_out_of_range).
    @Test func aReadPlannedBeforeACompactionFollowsTheBatch() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            configuration.maxBatchBytes = 8 << 10
            configuration.compactionThreshold = 0.9
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            let shards = try await journal.createShards([
                (name: "keep", config: ShardConfig()), (name: "ret", config: ShardConfig(retentionBytes: 1)),
            ])
            for n in 0..<400 {
                _ = try await journal.append(shard: n % 4 == 0 ? "keep" : "ret", batch: makeBatch("b\(n)", count: 1, size: 300))
            }
            let keepKey = StorageKeys.index(shards[0].id, 0)
            let retKey = StorageKeys.index(shards[1].id, 0)
            let planned = try #require(try journal.db.get(keepKey).flatMap(IndexEntry.init))
            let retPlanned = try #require(try journal.db.get(retKey).flatMap(IndexEntry.init))
            try journal.runMaintenance()
            try journal.runMaintenance()
            #expect(!FileManager.default.fileExists(atPath: journal.segments.path(planned.segment)), "not compacted")
            let maxFrame = configuration.maxBatchBytes + WALFormat.frameHeaderSize
            let batch = try #require(try journal.readMoving(keepKey, planned: planned, maxFrame: maxFrame))
            #expect(try RecordBatch.decode(batch).first?.offset == 0)
            #expect(try journal.readMoving(retKey, planned: retPlanned, maxFrame: maxFrame) == nil)
            await #expect(throws: JournalError.self) { try await journal.read(shard: "ret", from: 0, maxBytes: 1) }
            journal.close()
        }
    }
}
