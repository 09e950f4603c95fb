import Foundation
import NIOCore
import StrataJournal
import StrataTestSupport
import Testing

/// The ledger alone: events in, state out.
@Suite struct QueueLedgerTests {
    @Test func settlingMovesTheFloorOverEveryContiguousOffset() {
        var ledger = QueueLedger(startingAt: 10)
        ledger.leaseNew(10, to: "a", deadline: nil, group: nil)
        ledger.leaseNew(11, to: "a", deadline: nil, group: nil)
        ledger.passOver(upTo: 13)  // 12 filtered out
        ledger.leaseNew(13, to: "b", deadline: nil, group: nil)
        #expect(ledger.floor == 10 && ledger.cursor == 14)
        let result1 = ledger.settle(11)
        #expect(result1)
        #expect(ledger.floor == 10)
        #expect(ledger.settled == [11..<13])
        let result2 = ledger.settle(10)
        #expect(result2)
        #expect(ledger.floor == 13 && ledger.settled.isEmpty)
        let result3 = ledger.settle(10)
        #expect(!result3, "settled twice")
        let result4 = ledger.settle(13)
        #expect(result4)
        #expect(ledger.floor == 14)
    }

    @Test func leasesRunOutAndComeBackCountingDeliveries() {
        var ledger = QueueLedger(startingAt: 0)
        ledger.leaseNew(0, to: "a", deadline: 1_000, group: nil)
        ledger.leaseNew(1, to: "a", deadline: nil, group: nil)
        let result5 = ledger.expireLeases(now: 999)
        #expect(result5 == 0)
        let result6 = ledger.expireLeases(now: 1_000)
        #expect(result6 == 1)
        #expect(ledger.ready(now: 1_000, orderedGroups: false) == [0])
        let result7 = ledger.leaseWaiting(0, to: "b", deadline: nil)
        #expect(result7 == 2)
        #expect(ledger.leases(of: "b") == [0])
        let result8 = ledger.release(consumer: "a", now: 5)
        #expect(result8 == 1)
        #expect(ledger.waiting[1]?.deliveries == 1 && ledger.waiting[1]?.visibleAt == 5)
        let result9 = ledger.renewLease(0, deadline: 9)
        #expect(result9 == 3)
    }

    @Test func orderedGroupsHoldBackLaterMessagesOfABusyGroup() {
        var ledger = QueueLedger(startingAt: 0)
        ledger.leaseNew(0, to: "a", deadline: nil, group: "g")
        #expect(ledger.groupIsBusy("g"))
        ledger.holdNew(1, visibleAt: 0, group: "g")
        ledger.holdNew(2, visibleAt: 0, group: "h")
        #expect(ledger.ready(now: 10, orderedGroups: true) == [2])
        #expect(ledger.ready(now: 10, orderedGroups: false) == [1, 2])
        ledger.settle(0)
        #expect(ledger.ready(now: 10, orderedGroups: true) == [1, 2])
        ledger.settle(1)
        ledger.settle(2)
        #expect(!ledger.groupIsBusy("g") && !ledger.groupIsBusy("h"))
    }

    @Test func retentionBelowTheFloorCountsWhatWasLost() {
        var ledger = QueueLedger(startingAt: 0)
        ledger.leaseNew(0, to: "a", deadline: nil, group: nil)
        ledger.holdNew(1, visibleAt: 0, group: nil)
        ledger.leaseNew(2, to: "a", deadline: nil, group: nil)
        ledger.settle(2)
        ledger.skip(below: 5)
        #expect(ledger.floor == 5 && ledger.cursor == 5)
        #expect(ledger.lostToRetention == 4)  // 0 and 1 unsettled, 3 and 4 never read
        #expect(ledger.leases.isEmpty && ledger.waiting.isEmpty && ledger.settled.isEmpty)
    }

    @Test func theStoredFormRoundTripsAndRefusesDamage() throws {
        var ledger = QueueLedger(startingAt: 7)
        ledger.leaseNew(7, to: "consumer-é", deadline: 123, group: "g1")
        ledger.holdNew(9, visibleAt: 456, group: nil)
        ledger.leaseNew(10, to: "b", deadline: nil, group: nil)
        ledger.settle(10)
        ledger.deadLettered = 3
        let bytes = ledger.encoded()
        let decoded = try QueueLedger(decoding: bytes)
        #expect(decoded == ledger)
        #expect(decoded.groupIsBusy("g1"))
        #expect(throws: JournalError.self) { try QueueLedger(decoding: Array(bytes.dropLast())) }
        #expect(throws: JournalError.self) { try QueueLedger(decoding: [2] + bytes.dropFirst()) }
        // A million settled messages take a few bytes: ranges, not keys.
        var long = QueueLedger(startingAt: 0)
        long.passOver(upTo: 1_000_000)
        #expect(long.encoded().count < 64)
    }
}

/// Queues over real shards of a journal on disk.
@Suite struct QueueTests {
    private func records(_ values: [String], key: (Int) -> String? = { _ in nil }, headers: [RecordHeader] = [])
        -> ByteBuffer
    {
        RecordBatch.encode(
            values.enumerated().map { index, value in
                Record(
                    timestamp: nowMilliseconds(), key: key(index).map { Array($0.utf8) }, value: Array(value.utf8),
                    headers: headers)
            })
    }

    private func value(_ delivery: QueueDelivery) -> String {
        String(decoding: delivery.record.value ?? [], as: UTF8.self)
    }

    private func withQueueJournal(
        room: Int64 = 1000, _ body: (Journal, String) async throws -> Void
    ) async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir)
            configuration.queueRoomMilliseconds = room
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            defer { journal.close() }
            try await body(journal, dir)
        }
    }

    @Test func everyMessageGoesToOneConsumerAndAcksAreKept() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("t/0")
            _ = try await journal.createShard("t/1")
            _ = try await journal.append(shard: "t/0", batch: records(["early"]))
            _ = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "t/0"), .init(shard: "t/1")]))
            let values = (0..<200).map { "m\($0)" }
            for chunk in stride(from: 0, to: values.count, by: 20) {
                _ = try await journal.append(
                    shard: chunk % 40 == 0 ? "t/0" : "t/1", batch: records(Array(values[chunk..<chunk + 20])))
            }
            // Four consumers racing: each message exactly once, "early" (before the queue) never.
            let seen = try await withThrowingTaskGroup(of: [String].self) { group in
                for consumer in 0..<4 {
                    group.addTask {
                        var mine: [String] = []
                        while true {
                            let got = try await journal.receive(
                                queue: "q", consumer: "c\(consumer)", max: 7, visibilityMilliseconds: 30_000)
                            if got.isEmpty { return mine }
                            mine += got.map(value)
                            try await journal.settle(
                                queue: "q", consumer: "c\(consumer)", receipts: got.map(\.receipt), as: .ack)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(seen.sorted() == values.sorted())
            let status = try await journal.describeQueue("q")
            #expect(status.depth == 0 && status.inFlight == 0)
            #expect(status.sources.map(\.floor) == status.sources.map(\.end))
        }
    }

    @Test func aLeaseThatRunsOutIsDeliveredAgainAndTheOldReceiptIsStale() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "s")]))
            _ = try await journal.append(shard: "s", batch: records(["one"]))
            let first = try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 2_000)
            #expect(first.map(\.receipt.delivery) == [1])
            #expect(
                try await journal.receive(queue: "q", consumer: "b", max: 10, visibilityMilliseconds: 2_000).isEmpty)
            let second = try await journal.receive(
                queue: "q", consumer: "b", max: 10, visibilityMilliseconds: 10_000, wait: .seconds(20))
            #expect(second.map(value) == ["one"] && second.map(\.receipt.delivery) == [2])
            #expect(try await journal.settle(queue: "q", consumer: "a", receipts: first.map(\.receipt), as: .ack) == 0)
            #expect(try await journal.settle(queue: "q", consumer: "b", receipts: second.map(\.receipt), as: .ack) == 1)
        }
    }

    @Test func requeueDelayDeadLetterAfterTheLimitAndReject() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.createShard("dlq")
            _ = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "s")], maxDeliveries: 2, deadLetterShard: "dlq")
            )
            _ = try await journal.append(shard: "s", batch: records(["poison", "bad"]))
            var got = try await journal.receive(queue: "q", consumer: "a", max: 2, visibilityMilliseconds: 0)
            #expect(got.map(value) == ["poison", "bad"])
            try await journal.settle(queue: "q", consumer: "a", receipts: [got[1].receipt], as: .reject)
            try await journal.settle(
                queue: "q", consumer: "a", receipts: [got[0].receipt], as: .requeue(delayMilliseconds: 3_000))
            #expect(try await journal.receive(queue: "q", consumer: "a", max: 1, visibilityMilliseconds: 0).isEmpty)
            #expect(try await journal.describeQueue("q").delayed == 1)
            got = try await journal.receive(
                queue: "q", consumer: "a", max: 1, visibilityMilliseconds: 0, wait: .seconds(20))
            try #require(got.map(\.receipt.delivery) == [2])
            try await journal.settle(
                queue: "q", consumer: "a", receipts: got.map(\.receipt), as: .requeue(delayMilliseconds: 0))
            // Two deliveries and no settlement: the third attempt dead-letters it instead.
            #expect(try await journal.receive(queue: "q", consumer: "a", max: 1, visibilityMilliseconds: 0).isEmpty)
            let letters = try (try await journal.read(shard: "dlq", from: 0, maxBytes: 1 << 20)).batches.flatMap {
                try RecordBatch.decode($0)
            }
            let reasons = letters.map { record in
                record.headers.first { $0.key == "strata.dead-letter.reason" }.map {
                    String(decoding: $0.value!, as: UTF8.self)
                }
            }
            #expect(letters.map { String(decoding: $0.value!, as: UTF8.self) } == ["bad", "poison"])
            #expect(reasons == ["rejected", "delivery-limit"])
            let status = try await journal.describeQueue("q")
            #expect(status.deadLettered == 2 && status.depth == 0)
        }
    }

    @Test func scheduledAndExpiredMessages() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "s")]))
            let later = nowMilliseconds() + 3_000
            _ = try await journal.append(
                shard: "s",
                batch: records(
                    ["later"], headers: [RecordHeader(key: "deliver-at-ms", value: Array(String(later).utf8))]))
            _ = try await journal.append(
                shard: "s",
                batch: RecordBatch.encode([
                    Record(
                        timestamp: nowMilliseconds() - 10_000, value: Array("stale".utf8),
                        headers: [RecordHeader(key: "ttl-ms", value: Array("1000".utf8))])
                ]))
            _ = try await journal.append(shard: "s", batch: records(["now"]))
            #expect(
                try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0).map(value) == [
                    "now"
                ])
            let delayed = try await journal.receive(
                queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0, wait: .seconds(20))
            #expect(delayed.map(value) == ["later"])
            #expect(nowMilliseconds() >= later)
            #expect(try await journal.describeQueue("q").discarded == 1)  // expired, no dead-letter shard
        }
    }

    @Test func aReceiveOfNoMessagesExpiresTheHeadAndLeavesTheRestUnread() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.createShard("dlq")
            _ = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "s", fromStart: true)], deadLetterShard: "dlq"))
            func stale(_ text: String, ttl: String) -> ByteBuffer {
                RecordBatch.encode([
                    Record(
                        timestamp: nowMilliseconds() - 10_000, value: Array(text.utf8),
                        headers: [RecordHeader(key: "ttl-ms", value: Array(ttl.utf8))])
                ])
            }
            _ = try await journal.append(shard: "s", batch: stale("old-1", ttl: "1000"))
            _ = try await journal.append(shard: "s", batch: stale("old-2", ttl: "1000"))
            _ = try await journal.append(shard: "s", batch: records(["fresh"]))
            _ = try await journal.append(shard: "s", batch: stale("old-behind-fresh", ttl: "1000"))
            #expect(
                try await journal.receive(queue: "q", consumer: "sweeper", max: 0, visibilityMilliseconds: 0).isEmpty)
            let status = try await journal.describeQueue("q")
            // The two at the head went to the dead-letter shard; "fresh" stops the sweep, so it
            // and what follows it are still unread, leased to nobody.
            #expect(status.deadLettered == 2 && status.inFlight == 0 && status.waiting == 0)
            #expect(try await journal.read(shard: "dlq", from: 0, maxBytes: 1 << 20).batches.count == 2)
            let next = try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0)
            #expect(next.map(value) == ["fresh"] && next[0].receipt.delivery == 1)
            #expect(try await journal.describeQueue("q").deadLettered == 3)
        }
    }

    @Test func lengthLimitsDropTheHeadAndLeasedMessagesDoNotCount() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
                defer { journal.close() }
                _ = try await journal.createShard("s")
                _ = try await journal.createShard("dlq")
                _ = try await journal.declareQueue(
                    "q",
                    definition: QueueDefinition(
                        sources: [.init(shard: "s", fromStart: true)], deadLetterShard: "dlq",
                        lengthLimit: .init(messages: 3, dropHead: true)))
                _ = try await journal.append(shard: "s", batch: records(["m0", "m1"]))
                let held = try await journal.receive(queue: "q", consumer: "a", max: 1, visibilityMilliseconds: 0)
                #expect(held.map(value) == ["m0"])
                _ = try await journal.append(shard: "s", batch: records(["m2", "m3", "m4", "m5"]))
                // Five ready (m1..m5), three kept: m1 and m2 go, the leased m0 does not count.
                #expect(try await journal.describeQueue("q").ready == 5)
                #expect(
                    try await journal.receive(queue: "q", consumer: "sweep", max: 0, visibilityMilliseconds: 0)
                        .isEmpty)
                let status = try await journal.describeQueue("q")
                #expect(status.ready == 3 && status.inFlight == 1 && status.deadLettered == 2)
                let dead = try RecordBatch.decode(
                    try await journal.read(shard: "dlq", from: 0, maxBytes: 1 << 20).batches.first!)
                #expect(dead.first.map { String(decoding: $0.value ?? [], as: UTF8.self) } == "m1")
                #expect(
                    dead.first?.headers.contains {
                        $0.key == "strata.dead-letter.reason" && $0.value == Array("max-length".utf8)
                    } == true)
                // A requeued message is ready again, and the oldest: it goes first.
                _ = try await journal.settle(
                    queue: "q", consumer: "a", receipts: held.map(\.receipt), as: .requeue(delayMilliseconds: 0))
                let rest = try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0)
                #expect(rest.map(value) == ["m3", "m4", "m5"])
                #expect(try await journal.describeQueue("q").deadLettered == 3)
                _ = try await journal.settle(queue: "q", consumer: "a", receipts: rest.map(\.receipt), as: .ack)

                // Bytes: values of 10 bytes, at most 25 bytes ready.
                _ = try await journal.createShard("b")
                _ = try await journal.declareQueue(
                    "bytes",
                    definition: QueueDefinition(
                        sources: [.init(shard: "b", fromStart: true)], lengthLimit: .init(bytes: 25, dropHead: true)))
                _ = try await journal.append(shard: "b", batch: records(["aaaaaaaaa0", "aaaaaaaaa1", "aaaaaaaaa2"]))
                #expect(try await journal.describeQueue("bytes").readyBytes == 30)
                let first = try await journal.receive(
                    queue: "bytes", consumer: "a", max: 1, visibilityMilliseconds: 0)
                #expect(first.map(value) == ["aaaaaaaaa1"])  // a0 dropped
                _ = try await journal.settle(
                    queue: "bytes", consumer: "a", receipts: first.map(\.receipt),
                    as: .requeue(delayMilliseconds: 0))
                _ = try await journal.append(shard: "b", batch: records(["aaaaaaaaa3"]))

                // A limit that does not drop only counts, for writers that refuse.
                _ = try await journal.createShard("r")
                _ = try await journal.declareQueue(
                    "counts",
                    definition: QueueDefinition(
                        sources: [.init(shard: "r", fromStart: true)],
                        lengthLimit: .init(messages: 1, bytes: 1, dropHead: false)))
                _ = try await journal.append(shard: "r", batch: records(["x", "yy", "zzz"]))
                _ = try await journal.receive(queue: "counts", consumer: "sweep", max: 0, visibilityMilliseconds: 0)
                let counted = try await journal.describeQueue("counts")
                #expect(counted.ready == 3 && counted.readyBytes == 6 && counted.discarded == 0)
            }
            // After a restart the waiting message's size is read again: a1 (waiting), a2 and
            // a3 are 30 bytes; a1 goes.
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            defer { journal.close() }
            #expect(try await journal.describeQueue("bytes").readyBytes == 30)
            let got = try await journal.receive(queue: "bytes", consumer: "b", max: 10, visibilityMilliseconds: 0)
            #expect(got.map(value) == ["aaaaaaaaa2", "aaaaaaaaa3"])
            let status = try await journal.describeQueue("bytes")
            #expect(status.discarded == 2 && status.readyBytes == 0)
        }
    }

    @Test func prioritizedSourcesAreTakenHighestFirst() async throws {
        try await withQueueJournal { journal, _ in
            for level in 0..<3 { _ = try await journal.createShard("p/\(level)") }
            _ = try await journal.declareQueue(
                "q",
                definition: QueueDefinition(
                    sources: (0..<3).reversed().map { .init(shard: "p/\($0)", fromStart: true) }, prioritized: true))
            _ = try await journal.append(shard: "p/0", batch: records(["low-1", "low-2"]))
            _ = try await journal.append(shard: "p/2", batch: records(["high-1"]))
            _ = try await journal.append(shard: "p/1", batch: records(["mid-1"]))
            _ = try await journal.append(shard: "p/2", batch: records(["high-2"]))
            let first = try await journal.receive(queue: "q", consumer: "a", max: 3, visibilityMilliseconds: 0)
            #expect(first.map(value) == ["high-1", "high-2", "mid-1"])
            // A requeued high message goes before the low ones still unread.
            _ = try await journal.settle(
                queue: "q", consumer: "a", receipts: [first[0].receipt], as: .requeue(delayMilliseconds: 0))
            _ = try await journal.append(shard: "p/1", batch: records(["mid-2"]))
            let next = try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0)
            #expect(next.map(value) == ["high-1", "mid-2", "low-1", "low-2"])
        }
    }

    @Test func aSingleActiveConsumerHandsOverInOrder() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.declareQueue(
                "q",
                definition: QueueDefinition(sources: [.init(shard: "s", fromStart: true)], singleActiveConsumer: true))
            _ = try await journal.append(shard: "s", batch: records((1...6).map { "m\($0)" }))
            func take(_ consumer: String, visibility: UInt32 = 60_000) async throws -> [String] {
                try await journal.receive(queue: "q", consumer: consumer, max: 2, visibilityMilliseconds: visibility)
                    .map(value)
            }
            let first = try await journal.receive(queue: "q", consumer: "a", max: 2, visibilityMilliseconds: 60_000)
            #expect(first.map(value) == ["m1", "m2"])
            // b and c stand by (in that order), even with a wait: nothing until a leaves.
            let started = ContinuousClock.now
            #expect(
                try await journal.receive(
                    queue: "q", consumer: "b", max: 2, visibilityMilliseconds: 60_000, wait: .milliseconds(150)
                ).isEmpty)
            #expect(ContinuousClock.now - started >= .milliseconds(140))
            #expect(try await take("c").isEmpty)
            #expect(try await journal.describeQueue("q").activeConsumer == "a")
            // A one-off receive (basic.get) is not held back.
            #expect(
                try await journal.receive(
                    queue: "q", consumer: "get", max: 1, visibilityMilliseconds: 60_000, options: .oneOff
                ).map(value) == ["m3"])
            // a stops consuming and keeps what it holds: b is next, and a may still settle.
            try await journal.releaseConsumer(queue: "q", consumer: "a", keepingLeases: true)
            #expect(try await take("b") == ["m4", "m5"])
            #expect(try await take("a").isEmpty)  // back in line, behind c
            #expect(try await journal.settle(queue: "q", consumer: "a", receipts: first.map(\.receipt), as: .ack) == 2)
            #expect(try await journal.describeQueue("q").activeConsumer == "b")
            // A standby waiting for its turn is woken when the active consumer leaves.
            async let waited = journal.receive(
                queue: "q", consumer: "c", max: 2, visibilityMilliseconds: 60_000, wait: .seconds(5))
            try await Task.sleep(for: .milliseconds(100))
            let released = try await journal.releaseConsumer(queue: "q", consumer: "b")
            #expect(released == 2)
            #expect(try await waited.map(value) == ["m4", "m5"])
            // c falls silent beyond its last receive's visibility: a, next in line, takes over.
            #expect(try await take("c", visibility: 1500) == ["m6"])
            #expect(try await take("a").isEmpty)
            try await Task.sleep(for: .milliseconds(1700))
            #expect(try await take("a") == ["m6"])
            #expect(try await journal.describeQueue("q").activeConsumer == "a")
            // A receive under way when its consumer is released ends, and does not put it back
            // in line.
            let began = ContinuousClock.now
            async let ghost = journal.receive(
                queue: "q", consumer: "z", max: 1, visibilityMilliseconds: 60_000, wait: .seconds(5))
            try await Task.sleep(for: .milliseconds(100))
            try await journal.releaseConsumer(queue: "q", consumer: "z")
            #expect(try await ghost.isEmpty && ContinuousClock.now - began < .seconds(4))
            try await journal.releaseConsumer(queue: "q", consumer: "a", keepingLeases: true)
            #expect(try await journal.describeQueue("q").activeConsumer == nil)
        }
    }

    @Test func aConsumerOfHigherPriorityWithRoomGoesFirst() async throws {
        // Room counts for 3 s here: the steps between run well within it on a loaded machine.
        try await withQueueJournal(room: 3000) { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "s")]))
            func take(_ consumer: String, _ priority: Int32, max: Int, wait: Duration = .zero) async throws -> [String]
            {
                try await journal.receive(
                    queue: "q", consumer: consumer, max: max, visibilityMilliseconds: 60_000, options: [],
                    priority: priority, wait: wait
                ).map(value)
            }
            _ = try await journal.append(shard: "s", batch: records(["m1", "m2"]))
            // h got fewer than it asked for: it has room, and l (lower) waits.
            #expect(try await take("h", 5, max: 10) == ["m1", "m2"])
            _ = try await journal.append(shard: "s", batch: records(["m3", "m4"]))
            #expect(try await take("l", 0, max: 10).isEmpty)
            // h fills up (all it asked for): l may take.
            #expect(try await take("h", 5, max: 1) == ["m3"])
            #expect(try await take("l", 0, max: 10) == ["m4"])
            // A waiting l is woken when h fills up.
            #expect(try await take("h", 5, max: 10).isEmpty)
            let started = ContinuousClock.now
            async let waited = take("l", 0, max: 10, wait: .seconds(5))
            try await Task.sleep(for: .milliseconds(100))
            _ = try await journal.append(shard: "s", batch: records(["m5", "m6"]))
            #expect(try await take("h", 5, max: 1) == ["m5"])
            // Woken, not at the end of its 5 s wait (which would have returned nothing).
            #expect(try await waited == ["m6"])
            #expect(ContinuousClock.now - started < .seconds(4))
            // h, silent for 3 s after it last had room, no longer holds l back; a one-off
            // receive is never held back.
            #expect(try await take("h", 5, max: 10).isEmpty)
            _ = try await journal.append(shard: "s", batch: records(["m7", "m8"]))
            #expect(try await take("l", 0, max: 1).isEmpty)
            #expect(
                try await journal.receive(
                    queue: "q", consumer: "get", max: 1, visibilityMilliseconds: 60_000, options: .oneOff
                ).map(value) == ["m7"])
            try await Task.sleep(for: .milliseconds(3100))
            #expect(try await take("l", 0, max: 10) == ["m8"])
        }
    }

    @Test func orderedGroupsDeliverOneAtATimeInOrder() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("s")
            _ = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "s")], orderedGroups: true))
            _ = try await journal.append(
                shard: "s", batch: records(["a1", "b1", "a2", "b2", "a3"], key: { ["a", "b", "a", "b", "a"][$0] }))
            let first = try await journal.receive(queue: "q", consumer: "x", max: 10, visibilityMilliseconds: 0)
            #expect(first.map(value) == ["a1", "b1"])
            try await journal.settle(queue: "q", consumer: "x", receipts: [first[0].receipt], as: .ack)
            let second = try await journal.receive(queue: "q", consumer: "y", max: 10, visibilityMilliseconds: 0)
            #expect(second.map(value) == ["a2"])
            try await journal.settle(
                queue: "q", consumer: "x", receipts: [first[1].receipt], as: .requeue(delayMilliseconds: 0))
            // b1 came back: it goes again before b2.
            #expect(
                try await journal.receive(queue: "q", consumer: "y", max: 10, visibilityMilliseconds: 0).map(value) == [
                    "b1"
                ])
        }
    }

    @Test func filtersMatchTheSubjectOfEachRecord() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("sensors/0")
            _ = try await journal.declareQueue(
                "q",
                definition: QueueDefinition(
                    sources: [.init(shard: "sensors/0", subjectRoot: "sensors")],
                    filters: [.mqtt("sensors/+/temp"), .mqtt("sensors")]))
            let keys: [String?] = ["sensors/a/temp", "sensors/a/hum", "elsewhere/x", nil, "sensors/b/temp"]
            _ = try await journal.append(
                shard: "sensors/0", batch: records(["1", "2", "3", "4", "5"], key: { keys[$0] }))
            let got = try await journal.receive(queue: "q", consumer: "a", max: 10, visibilityMilliseconds: 0)
            // "elsewhere/x" and no key fall back to the topic's own name, which a filter names.
            #expect(got.map(value) == ["1", "3", "4", "5"])
        }
    }

    @Test func heldLeasesSurviveARestartAndResumeToTheirConsumer() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
                _ = try await journal.createShard("s")
                _ = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "s")]))
                _ = try await journal.append(shard: "s", batch: records(["m0", "m1", "m2", "m3"]))
                let got = try await journal.receive(queue: "q", consumer: "member-1", max: 3, visibilityMilliseconds: 0)
                try await journal.settle(queue: "q", consumer: "member-1", receipts: [got[0].receipt], as: .ack)
                journal.close()
            }
            let journal = try Journal(configuration: testConfiguration(dir), logger: quietLogger)
            defer { journal.close() }
            // Another member gets only what nobody holds; the holder gets its own back.
            #expect(
                try await journal.receive(queue: "q", consumer: "member-2", max: 10, visibilityMilliseconds: 0).map(
                    value) == ["m3"])
            let resumed = try await journal.receive(
                queue: "q", consumer: "member-1", max: 10, visibilityMilliseconds: 0, resume: true)
            #expect(resumed.map(value) == ["m1", "m2"] && resumed.allSatisfy(\.resumed))
            #expect(resumed.map(\.receipt.delivery) == [2, 2])
            // Its session ends: what it held goes to the others.
            #expect(try await journal.releaseConsumer(queue: "q", consumer: "member-1") == 2)
            #expect(
                try await journal.receive(queue: "q", consumer: "member-2", max: 10, visibilityMilliseconds: 0).map(
                    value) == ["m1", "m2"])
        }
    }

    @Test func declarationsAddSourcesAndUnknownQueuesAreRefused() async throws {
        try await withQueueJournal { journal, _ in
            _ = try await journal.createShard("a")
            _ = try await journal.createShard("b")
            _ = try await journal.createShard("c")
            _ = try await journal.append(shard: "b", batch: records(["old-b"]))
            _ = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "a")]))
            let grown = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "a"), .init(shard: "b", fromStart: true)]))
            #expect(grown.sources.map(\.shard) == ["a", "b"])
            #expect(
                try await journal.receive(queue: "q", consumer: "c", max: 5, visibilityMilliseconds: 0).map(value) == [
                    "old-b"
                ])
            // Sources keep their indices whatever a declaration names: two gateways declaring
            // with the sources each knows of, in any order, agree.
            let same = try await journal.declareQueue("q", definition: QueueDefinition(sources: [.init(shard: "b")]))
            #expect(same.sources.map(\.shard) == ["a", "b"])
            let merged = try await journal.declareQueue(
                "q", definition: QueueDefinition(sources: [.init(shard: "c"), .init(shard: "a")]))
            #expect(merged.sources.map(\.shard) == ["a", "b", "c"])
            await #expect(throws: JournalError.self) {
                try await journal.declareQueue(
                    "q", definition: QueueDefinition(sources: [.init(shard: "c"), .init(shard: "c")]))
            }
            await #expect(throws: JournalError.self) {
                try await journal.receive(queue: "nope", consumer: "c", max: 1, visibilityMilliseconds: 0)
            }
            #expect(try await journal.listQueues().map(\.name) == ["q"])
            try await journal.deleteQueue("q")
            #expect(try await journal.listQueues().isEmpty)
        }
    }
}
