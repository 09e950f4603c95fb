import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct JournalTests {
    @Test func shardCatalog() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            let created = try await journal.createShard("kafka/orders/0", config: ShardConfig(durability: .async))
            #expect(created.startOffset == 0 && created.endOffset == 0)
            _ = try await journal.createShard("mqtt/t/1")
            await #expect(throws: JournalError(.shardExists, "shard mqtt/t/1 exists already")) {
                try await journal.createShard("mqtt/t/1")
            }
            await #expect(throws: JournalError.self) { try await journal.createShard("") }
            #expect(journal.listShards().map(\.name) == ["kafka/orders/0", "mqtt/t/1"])
            #expect(try journal.describeShard("kafka/orders/0").config.durability == .async)
            try await journal.deleteShard("mqtt/t/1")
            #expect(throws: JournalError.self) { try journal.describeShard("mqtt/t/1") }
            await #expect(throws: JournalError.self) { try await journal.deleteShard("mqtt/t/1") }
            journal.close()

            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(reopened.listShards().map(\.name) == ["kafka/orders/0"])
            #expect(try reopened.describeShard("kafka/orders/0").config.durability == .async)
            reopened.close()
        }
    }

    @Test(arguments: [Durability.fsync, .async])
    func appendAssignsDenseOffsetsAndReadsBack(durability: Durability) async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s", config: ShardConfig(durability: durability))
            var expected: [(UInt64, String)] = []
            for n in 0..<20 {
                let result = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 3))
                #expect(result.baseOffset == UInt64(n * 3))
                #expect(result.lastOffset == UInt64(n * 3 + 2))
                expected += (0..<3).map { (UInt64(n * 3 + $0), "b\(n)-\($0)") }
            }
            let read = try await readAll(journal, "s")
            #expect(read.map(\.0) == expected.map(\.0))
            #expect(read.map(\.1) == expected.map(\.1))
            // From the middle of a batch: the whole batch comes back, the caller skips.
            let middle = try await journal.read(shard: "s", from: 31, maxBytes: 1)
            #expect(middle.batches.count == 1)
            #expect(RecordBatch.Header.peek(middle.batches[0], at: middle.batches[0].readerIndex)!.baseOffset == 30)
            #expect(middle.nextOffset == 33)
            await #expect(throws: JournalError.self) { try await journal.read(shard: "s", from: 61, maxBytes: 100) }
            await #expect(throws: JournalError.self) { try await journal.read(shard: "nope", from: 0, maxBytes: 100) }
            journal.close()

            // After a restart the same records come from the segments.
            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            let again = try await readAll(reopened, "s")
            #expect(again.map(\.1) == expected.map(\.1))
            let next = try await reopened.append(shard: "s", batch: makeBatch("after"))
            #expect(next.baseOffset == 60)
            reopened.close()
        }
    }

    @Test func appendRejectsBadInput() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir)
            configuration.maxBatchBytes = 4096
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            await #expect(throws: JournalError.self) { try await journal.append(shard: "missing", batch: makeBatch("x")) }
            var corrupt = makeBatch("x")
            corrupt.setInteger(UInt8(0xEE), at: corrupt.writerIndex - 1)
            do {
                _ = try await journal.append(shard: "s", batch: corrupt)
                Issue.record("a batch with a bad CRC was accepted")
            } catch let error as JournalError {
                #expect(error.code == .invalidBatch)
            }
            do {
                _ = try await journal.append(shard: "s", batch: makeBatch("big", count: 1, size: 8000))
                Issue.record("an oversize batch was accepted")
            } catch let error as JournalError {
                #expect(error.code == .batchTooLarge)
            }
            // Nothing was stored and offsets did not move.
            #expect(try journal.describeShard("s").endOffset == 0)
            #expect(try await journal.append(shard: "s", batch: makeBatch("ok")).baseOffset == 0)
            journal.close()
        }
    }

    @Test func readsFromDiskWhenTheMemoryTailIsSmall() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir)
            configuration.tailBytesPerShard = 1
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            for n in 0..<50 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 2, size: 200)) }
            let read = try await readAll(journal, "s")
            #expect(read.count == 100)
            #expect(read[57].0 == 57 && read[57].1.hasPrefix("b28-1"))
            // maxBytes bounds a disk read (but one batch always comes back).
            let bounded = try await journal.read(shard: "s", from: 0, maxBytes: 1000)
            #expect(bounded.batches.count == 2)
            journal.close()
        }
    }

    /// With many shards each one's memory tail shrinks so that all tails stay within the budget.
    @Test func memoryTailsShareANodeWideBudget() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir)
            configuration.tailBytesTotal = 100_000
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShards((0..<200).map { ("t/\($0)", ShardConfig(durability: .async)) })
            for round in 0..<5 {
                for shard in 0..<200 {
                    _ = try await journal.append(shard: "t/\(shard)", batch: makeBatch("r\(round)", count: 1, size: 300))
                }
            }
            let memory = journal.listShards().reduce(0) { $0 + $1.memoryBytes }
            #expect(memory <= 100_000)
            #expect(try await readAll(journal, "t/123").map(\.1) == (0..<5).map { "r\($0)-0" })
            journal.close()
        }
    }

    @Test func lookupByTimestamp() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s")
            // Batches at t=1000, 2000, ... each with records t, t+1, t+2.
            for n in 1...10 { _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 3, timestamp: Int64(n) * 1000)) }
            #expect(try await journal.offset(shard: "s", atOrAfter: 0) == 0)
            #expect(try await journal.offset(shard: "s", atOrAfter: 1000) == 0)
            #expect(try await journal.offset(shard: "s", atOrAfter: 1001) == 1)
            #expect(try await journal.offset(shard: "s", atOrAfter: 1003) == 3)
            #expect(try await journal.offset(shard: "s", atOrAfter: 5002) == 14)
            #expect(try await journal.offset(shard: "s", atOrAfter: 10_002) == 29)
            #expect(try await journal.offset(shard: "s", atOrAfter: 10_003) == nil)
            journal.close()
            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(try await reopened.offset(shard: "s", atOrAfter: 7001) == 19)
            reopened.close()
        }
    }

    @Test func liveReaderWakesOnAppend() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            _ = try await journal.createShard("s")
            async let waited = journal.read(shard: "s", from: 0, maxBytes: 1 << 20, maxWait: .seconds(30))
            try await Task.sleep(for: .milliseconds(50))
            let started = ContinuousClock.now
            _ = try await journal.append(shard: "s", batch: makeBatch("live"))
            let result = try await waited
            #expect(result.batches.count == 1)
            #expect(ContinuousClock.now - started < .seconds(20))
            // A wait with nothing appended ends at its timeout with no data.
            let empty = try await journal.read(shard: "s", from: 3, maxBytes: 100, maxWait: .milliseconds(20))
            #expect(empty.batches.isEmpty)

            var received: [String] = []
            let subscriber = Task {
                var values: [String] = []
                for try await result in journal.subscribe(shard: "s", from: 3) {
                    for batch in result.batches { values += try RecordBatch.decode(batch).map { String(decoding: $0.value!, as: UTF8.self) } }
                    if values.count >= 6 { break }
                }
                return values
            }
            _ = try await journal.append(shard: "s", batch: makeBatch("one"))
            _ = try await journal.append(shard: "s", batch: makeBatch("two"))
            received = try await subscriber.value
            #expect(received == ["one-0", "one-1", "one-2", "two-0", "two-1", "two-2"])
            journal.close()
        }
    }

    @Test func keyValueAndConsumerOffsetsSurviveRestart() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            try await journal.put(namespace: "mqtt.retained", key: Array("a/b".utf8), value: [1])
            try await journal.put(namespace: "mqtt.retained", key: Array("a/c".utf8), value: [2])
            try await journal.put(namespace: "mqtt.retained", key: Array("b".utf8), value: [3])
            try await journal.put(namespace: "other", key: Array("a/x".utf8), value: [9])
            try await journal.commitOffset(group: "g1", shard: "kafka/t/0", offset: 42)
            journal.close()
            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(try await reopened.get(namespace: "mqtt.retained", key: Array("a/c".utf8)) == [2])
            let scanned = try await reopened.scan(namespace: "mqtt.retained", prefix: Array("a/".utf8))
            #expect(scanned.map(\.key) == [Array("a/b".utf8), Array("a/c".utf8)])
            try await reopened.delete(namespace: "mqtt.retained", key: Array("a/b".utf8))
            #expect(try await reopened.get(namespace: "mqtt.retained", key: Array("a/b".utf8)) == nil)
            #expect(try await reopened.committedOffset(group: "g1", shard: "kafka/t/0") == 42)
            #expect(try await reopened.committedOffset(group: "g2", shard: "kafka/t/0") == nil)
            reopened.close()
        }
    }

    @Test func manyShardsShareOneSyncStream() async throws {
        try await withTemporaryDirectory { dir in
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            let count = 2000
            _ = try await journal.createShards((0..<count).map { ("many/\($0)", ShardConfig(durability: .fsync)) })
            let before = journal.statistics
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        for shard in stride(from: writer, to: count, by: 8) {
                            let result = try await journal.append(shard: "many/\(shard)", batch: makeBatch("m\(shard)", count: 1))
                            #expect(result.baseOffset == 0)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let after = journal.statistics
            #expect(after.appendedBatches - before.appendedBatches == Int64(count))
            // Group commit: never more syncs than batches, and every shard readable.
            #expect(after.walSyncs - before.walSyncs <= Int64(count))
            for shard in [0, 999, 1999] {
                #expect(try await readAll(journal, "many/\(shard)").map(\.1) == ["m\(shard)-0"])
            }
            journal.close()
            let reopened = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            #expect(reopened.listShards().count == count)
            #expect(reopened.listShards().allSatisfy { $0.endOffset == 1 })
            reopened.close()
        }
    }
}
