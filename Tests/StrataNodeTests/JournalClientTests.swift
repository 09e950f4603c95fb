import Foundation
import NIOCore
import StrataClient
import StrataJournal
import StrataTestSupport
import StrataWire
import Testing

/// The same test bodies against the in-process client and the remote client (over TCP to a
/// JournalServer): gateways must not be able to tell them apart.
@Suite struct JournalClientTests {
    @Test(arguments: ClientKind.allCases)
    func shardLifecycle(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            let info = try await client.createShard(
                "kafka/t/0", config: ShardConfig(durability: .async, retentionBytes: 1000))
            #expect(info.name == "kafka/t/0" && info.config.retentionBytes == 1000 && info.config.durability == .async)
            _ = try await client.createShard("b")
            await #expect(throws: JournalError(.shardExists, "shard b exists already")) {
                try await client.createShard("b")
            }
            #expect(try await client.listShards().map(\.name) == ["b", "kafka/t/0"])
            #expect(try await client.describeShard("b").endOffset == 0)
            let altered = ShardConfig(
                durability: .fsync, retentionMilliseconds: 60_000, retentionBytes: nil, maxBatchBytes: 4096)
            #expect(try await client.alterShard("kafka/t/0", config: altered).config == altered)
            #expect(try await client.describeShard("kafka/t/0").config == altered)
            await #expect(throws: JournalError.self) { try await client.alterShard("nope", config: altered) }
            try await client.deleteShard("b")
            do {
                _ = try await client.describeShard("b")
                Issue.record("a deleted shard was described")
            } catch let error as JournalError {
                #expect(error.code == .unknownShard)
            }
        }
    }

    @Test(arguments: ClientKind.allCases)
    func aSingleActiveConsumerAndReceiveOptions(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            _ = try await client.createShard("s")
            _ = try await client.declareQueue(
                "q",
                definition: QueueDefinition(sources: [.init(shard: "s", fromStart: true)], singleActiveConsumer: true))
            _ = try await client.append(shard: "s", batch: makeBatch("m", count: 3))
            func take(_ consumer: String, _ options: QueueReceiveOptions = []) async throws -> Int {
                try await client.receive(
                    queue: "q", consumer: consumer, max: 1, maxBytes: 1 << 20, visibilityMilliseconds: 60_000,
                    options: options, wait: .zero
                ).count
            }
            #expect(try await take("a") == 1)
            #expect(try await take("b") == 0)
            #expect(try await take("get", .oneOff) == 1)
            #expect(try await client.describeQueues("q").first?.activeConsumer == "a")
            #expect(try await client.releaseConsumer(queue: "q", consumer: "a", keepingLeases: true) == 0)
            #expect(try await take("b") == 1)
            #expect(try await client.describeQueues("q").first?.activeConsumer == "b")
        }
    }

    @Test(arguments: ClientKind.allCases)
    func appendReadAndTimestamps(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            _ = try await client.createShard("s")
            for n in 0..<10 {
                let result = try await client.append(
                    shard: "s", batch: makeBatch("b\(n)", count: 2, timestamp: Int64(n) * 100))
                #expect(result == AppendResult(baseOffset: UInt64(2 * n), lastOffset: UInt64(2 * n + 1)))
            }
            let read = try await client.read(shard: "s", from: 5, maxBytes: 1 << 20)
            #expect(try values(read.batches, from: 5).first == "b2-1")
            #expect(read.nextOffset == 20 && read.endOffset == 20)
            #expect(try await client.offset(shard: "s", atOrAfter: 301) == 7)
            #expect(try await client.offset(shard: "s", atOrAfter: 10_000) == nil)
            var corrupt = makeBatch("x")
            corrupt.setInteger(UInt8(0x55), at: corrupt.writerIndex - 2)
            do {
                _ = try await client.append(shard: "s", batch: corrupt)
                Issue.record("a corrupt batch was accepted")
            } catch let error as JournalError {
                #expect(error.code == .invalidBatch)
            }
            do {
                _ = try await client.read(shard: "s", from: 99, maxBytes: 10)
                Issue.record("a read past the end succeeded")
            } catch let error as JournalError {
                #expect(error.code == .offsetOutOfRange)
            }
        }
    }

    /// Many appends in flight at once from one client: all acknowledged, offsets dense, and
    /// each task's own appends in the order it made them.
    @Test(arguments: ClientKind.allCases)
    func concurrentAppendsStayDenseAndOrdered(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            _ = try await client.createShard("s")
            let offsets = try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for task in 0..<8 {
                    group.addTask {
                        var mine: [UInt64] = []
                        for n in 0..<40 {
                            mine.append(
                                try await client.append(shard: "s", batch: makeBatch("t\(task)-\(n)", count: 1))
                                    .baseOffset)
                        }
                        return mine
                    }
                }
                var all: [[UInt64]] = []
                for try await mine in group { all.append(mine) }
                return all
            }
            for mine in offsets { #expect(mine == mine.sorted()) }
            #expect(offsets.flatMap { $0 }.sorted() == Array(0..<320))
        }
    }

    /// Queued appends: hundreds in flight from one caller, stored in the order they were queued.
    @Test(arguments: ClientKind.allCases)
    func queuedAppendsKeepQueueOrder(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            _ = try await client.createShard("q")
            var pending: [PendingAppend] = []
            for n in 0..<300 {
                pending.append(try await client.queueAppend(shard: "q", batch: makeBatch("q\(n)", count: 2)))
            }
            var offsets: [UInt64] = []
            for append in pending { offsets.append(try await append.result.baseOffset) }
            #expect(offsets == Array(stride(from: 0, to: 600, by: 2)))
            let read = try await client.read(shard: "q", from: 0, maxBytes: 1 << 20)
            #expect(try values(read.batches).prefix(4) == ["q0-0", "q0-1", "q1-0", "q1-1"])
            // A refused append is refused through its result, and what follows still goes in.
            var corrupt = makeBatch("bad", count: 1)
            corrupt.setInteger(UInt8(0xFF), at: corrupt.writerIndex - 1)
            let refused = try await client.queueAppend(shard: "q", batch: corrupt)
            let after = try await client.queueAppend(shard: "q", batch: makeBatch("after", count: 1))
            await #expect(throws: JournalError.self) { try await refused.result }
            #expect(try await after.result.baseOffset == 600)
        }
    }

    @Test(arguments: ClientKind.allCases)
    func longPollAndSubscriptionWakeOnAppend(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            _ = try await client.createShard("s")
            async let waited = client.read(shard: "s", from: 0, maxBytes: 1 << 20, maxWait: .seconds(20))
            try await Task.sleep(for: .milliseconds(50))
            _ = try await client.append(shard: "s", batch: makeBatch("first", count: 1))
            #expect(try values(try await waited.batches) == ["first-0"])

            let subscription = try await client.subscribe(shard: "s", from: 1)
            let appender = Task {
                for n in 0..<30 { _ = try await client.append(shard: "s", batch: makeBatch("n\(n)", count: 1)) }
            }
            var seen: [String] = []
            for try await result in subscription {
                seen += try values(result.batches, from: 1 + UInt64(seen.count))
                if seen.count >= 30 { break }
            }
            try await appender.value
            #expect(seen == (0..<30).map { "n\($0)-0" })
            do {
                for try await _ in try await client.subscribe(shard: "missing", from: 0) {}
                Issue.record("a subscription to a missing shard yielded")
            } catch let error as JournalError {
                #expect(error.code == .unknownShard)
            }
        }
    }

    @Test(arguments: ClientKind.allCases)
    func keyValueOffsetsAndStatus(kind: ClientKind) async throws {
        try await withJournalClient(kind) { client, _ in
            try await client.put(namespace: "mqtt", key: Array("a/1".utf8), value: [1])
            try await client.put(namespace: "mqtt", key: Array("a/2".utf8), value: [2])
            try await client.put(namespace: "mqtt", key: Array("b".utf8), value: [3])
            #expect(try await client.get(namespace: "mqtt", key: Array("a/2".utf8)) == [2])
            #expect(try await client.get(namespace: "mqtt", key: Array("zz".utf8)) == nil)
            #expect(try await client.scan(namespace: "mqtt", prefix: Array("a/".utf8)).map(\.value) == [[1], [2]])
            #expect(try await client.scan(namespace: "mqtt", prefix: [], limit: 1).count == 1)
            try await client.delete(namespace: "mqtt", key: Array("a/1".utf8))
            #expect(try await client.get(namespace: "mqtt", key: Array("a/1".utf8)) == nil)
            try await client.commitOffset(group: "g", shard: "s", offset: 42)
            #expect(try await client.committedOffset(group: "g", shard: "s") == 42)
            #expect(try await client.committedOffset(group: "h", shard: "s") == nil)
            _ = try await client.createShard("s")
            _ = try await client.append(shard: "s", batch: makeBatch("x"))
            let status = try await client.status()
            #expect(status.shards == 1 && status.appendedBatches == 1 && status.version == StrataVersion.current)
            #expect(status.health == JournalHealth(status: .ok, problems: []))
        }
    }
}
