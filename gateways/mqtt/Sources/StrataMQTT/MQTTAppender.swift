import NIOCore
import StrataClient
import StrataJournal
import StrataWire
import Synchronization

/// Coalesces the publishes bound for one bucket shard into RecordBatches: whatever was
/// submitted while the appender was busy goes out as the next batch, so small messages share
/// batch headers and journal round trips. Up to `maxInflight` batches are queued in the journal
/// at once (they share its group commits) and settle in queue order — FIFO per bucket, which
/// keeps per-topic order; retained-message updates follow in the same order.
final class MQTTAppender: Sendable {
    typealias Completion = @Sendable (Result<Void, any Error>) -> Void

    private let shard: String
    private let journal: any JournalClient
    private let queue = Mutex<[(MQTTMessage, Completion)]>([])
    private let nudges: AsyncStream<Void>
    private let nudge: AsyncStream<Void>.Continuation
    /// Batches queued in the journal, settled in order by `settle`.
    private let settling: AsyncStream<(PendingAppend?, any Error, [(MQTTMessage, Completion)])>
    private let toSettle: AsyncStream<(PendingAppend?, any Error, [(MQTTMessage, Completion)])>.Continuation
    private let slots: InflightLimiter
    /// The shard's batch limit (a registry topic's max.message.bytes), nil: the node's.
    private let shardLimit = Mutex<Int?>(nil)
    /// Most messages and bytes in one batch, and batches in flight.
    static let maxMessages = 1000
    static let maxBytes = 1 << 20
    /// One batch in flight: measured on this 2-core machine, more (8) made smaller batches and
    /// cut QoS 1 throughput from 66,905 to 55,604 msg/s (`compare-mqtt.sh 8`); the journal's
    /// ordered queueing is kept so that a remote journal can be given more.
    static let maxInflight = 1

    init(shard: String, journal: any JournalClient) {
        self.shard = shard
        self.journal = journal
        (nudges, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (settling, toSettle) = AsyncStream.makeStream()
        slots = InflightLimiter(limit: Self.maxInflight)
    }

    /// Queues a message; `completion` runs once it is in the journal (and, when retained,
    /// in the retained set) or failed.
    func submit(_ message: MQTTMessage, completion: @escaping Completion) {
        queue.withLock { $0.append((message, completion)) }
        nudge.yield()
    }

    func finish() { nudge.finish() }

    /// Sets the shard's batch limit: batches are cut to fit it, and a message that does not fit
    /// alone is refused by the journal (batch_too_large).
    func limit(_ bytes: Int?) { shardLimit.withLock { $0 = bytes } }

    /// The appender's loop; runs as a child task of the gateway until `finish()`.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.settle() }
            for await _ in nudges {
                while true {
                    let limit = shardLimit.withLock { $0 }
                    let target = min(Self.maxBytes, limit ?? .max)
                    var batch = queue.withLock { queue -> [(MQTTMessage, Completion)] in
                        var taken = 0
                        var bytes = 0
                        while taken < queue.count, taken < Self.maxMessages, bytes < target {
                            bytes += queue[taken].0.payload.readableBytes + queue[taken].0.topic.utf8.count + 64
                            taken += 1
                        }
                        defer { queue.removeFirst(taken) }
                        return Array(queue.prefix(taken))
                    }
                    if batch.isEmpty { break }
                    var encoded = RecordBatch.encode(batch.map(\.0.record))
                    // Over the shard's limit: the later half goes back to the front of the queue
                    // (in order) until the batch fits or is one message.
                    while let limit, encoded.readableBytes > limit, batch.count > 1 {
                        let back = batch[(batch.count / 2)...]
                        queue.withLock { $0.insert(contentsOf: back, at: 0) }
                        batch.removeLast(back.count)
                        encoded = RecordBatch.encode(batch.map(\.0.record))
                    }
                    await slots.acquire()
                    do {
                        let pending = try await journal.queueAppend(shard: shard, batch: encoded)
                        toSettle.yield((pending, CancellationError(), batch))
                    } catch {
                        toSettle.yield((nil, error, batch))
                    }
                }
            }
            toSettle.finish()
        }
        // Shutting down: nothing queued is left without an answer.
        let left = queue.withLock { queue in
            defer { queue.removeAll() }
            return queue
        }
        for (_, completion) in left { completion(.failure(JournalError(.closed, "the gateway is shutting down"))) }
    }

    /// Settles queued batches in queue order: retained updates, then the publishers' completions.
    private func settle() async {
        for await (pending, queueError, batch) in settling {
            defer { slots.release() }
            do {
                guard let pending else { throw queueError }
                _ = try await pending.result
                for (message, _) in batch where message.retain {
                    if message.payload.readableBytes == 0 {
                        try await journal.delete(
                            namespace: MQTTGateway.retainedNamespace, key: Array(message.topic.utf8))
                    } else {
                        try await journal.put(
                            namespace: MQTTGateway.retainedNamespace, key: Array(message.topic.utf8),
                            value: message.retainedValue)
                    }
                }
                for (_, completion) in batch { completion(.success(())) }
            } catch {
                for (_, completion) in batch { completion(.failure(error)) }
            }
        }
    }
}
