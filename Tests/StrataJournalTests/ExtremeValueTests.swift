import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

/// Values from the wire never make the journal trap: out-of-range batch timestamps are refused
/// at append with a clear error, and arithmetic on what is accepted (or already on disk)
/// saturates.
@Suite struct ExtremeValueTests {
    @Test(arguments: [Int64.min, Int64.min + 1, -2, Int64(1 << 53) + 1, Int64.max] as [Int64])
    func outOfRangeTimestampsAreRefusedAtAppend(timestamp: Int64) async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            defer { journal.close() }
            _ = try await journal.createShard("s")
            let batch = RecordBatch.encode([Record(timestamp: timestamp, value: Array("x".utf8))])
            do {
                _ = try await journal.append(shard: "s", batch: batch)
                Issue.record("a batch with timestamp \(timestamp) was accepted")
            } catch let error as JournalError {
                #expect(error.code == .invalidBatch)
                #expect(error.message.contains("out of range"), "\(error)")
            }
            // The journal goes on serving.
            #expect(try await journal.append(shard: "s", batch: makeBatch("ok")).baseOffset == 0)
        }
    }

    /// A valid header whose records carry extreme timestamp deltas, retention and local
    /// retention at their extremes, offload planning and maintenance over it: nothing traps.
    @Test func arithmeticOnAcceptedExtremesSaturates() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            configuration.maxBatchBytes = 8 << 10
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            defer { journal.close() }
            _ = try await journal.createShard("max", config: ShardConfig(retentionMilliseconds: .max, localRetentionMilliseconds: .max))
            _ = try await journal.createShard("zero", config: ShardConfig(retentionMilliseconds: 0, localRetentionMilliseconds: 0))
            // Records at 0 and Int64.max, with the header's max timestamp set back into range.
            var batch = RecordBatch.encode([Record(timestamp: 0, value: [1]), Record(timestamp: .max, value: [2])])
            batch.setInteger(Int64(-1), at: 35)
            batch.setInteger(
                CRC32C.checksum(batch, offset: RecordBatch.attributesOffset, length: batch.readableBytes - RecordBatch.attributesOffset),
                at: 17)
            for shard in ["max", "zero"] {
                for _ in 0..<200 { _ = try await journal.append(shard: shard, batch: batch) }
                _ = try await journal.append(shard: shard, batch: makeBatch("normal", timestamp: 0))
            }
            let records = try RecordBatch.decode(try #require(try await journal.read(shard: "max", from: 0, maxBytes: 1).batches.first))
            #expect(records.map(\.timestamp) == [0, .max])
            for now in [Int64.min, -1, 0, WallClock.milliseconds(), Int64.max] {
                _ = try await journal.offloadRuns(defaultLocalRetention: .max, maxRunBytes: 1 << 20, now: now)
                _ = try await journal.offloadRuns(defaultLocalRetention: 0, maxRunBytes: 1 << 20, now: now)
            }
            try journal.runMaintenance()
            #expect(try journal.describeShard("max").startOffset == 0)
            #expect(try journal.describeShard("zero").startOffset > 0)
        }
    }
}
