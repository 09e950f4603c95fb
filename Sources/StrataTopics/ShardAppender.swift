import NIOCore
import StrataClient
import StrataJournal
import StrataWire
import Synchronization

/// What a gateway hands a `ShardAppender`: the record to store, and its size for cutting
/// batches.
public protocol ShardAppendItem: Sendable {
    var record: Record { get }
    /// About how many bytes the record takes in a batch.
    var batchBytes: Int { get }
}

extension Record: ShardAppendItem {
    public var record: Record { self }
    public var batchBytes: Int { (key?.count ?? 0) + (value?.count ?? 0) + 64 }
}

/// Every gateway's way to one shard (MQTT's bucket and topic shards, AMQP's queue topics):
/// coalesces the messages submitted for the shard into RecordBatches: whatever was submitted
/// while the appender was busy goes out as the next batch, so small messages share batch
/// headers and journal round trips. Up to `maxInflight` batches are queued in the journal at
/// once (they share its group commits) and settle in queue order — FIFO per shard, which keeps
/// per-topic order; `afterStore` (MQTT's retained-message updates) runs for each stored batch
/// before its completions.
public final class ShardAppender<Item: ShardAppendItem>: Sendable {
    public typealias Completion = @Sendable (Result<Void, any Error>) -> Void

    private let shard: String
    private let journal: any JournalClient
    private let queue = Mutex<[(Item, Completion)]>([])
    private let afterStore: @Sendable ([Item]) async throws -> Void
    private let nudges: AsyncStream<Void>
    private let nudge: AsyncStream<Void>.Continuation
    /// Batches queued in the journal, settled in order by `settle`.
    private let settling: AsyncStream<(PendingAppend?, any Error, [(Item, Completion)])>
    private let toSettle: AsyncStream<(PendingAppend?, any Error, [(Item, Completion)])>.Continuation
    private let slots: InflightLimiter
    /// The shard's batch limit (a registry topic's max.message.bytes), nil: the node's.
    private let shardLimit = Mutex<Int?>(nil)
    /// Most messages and bytes in one batch, and batches in flight.
    static var maxMessages: Int { 1000 }
    static var maxBytes: Int { 1 << 20 }
    /// One batch in flight: measured on this 2-core machine, more (8) made smaller batches and
    /// cut QoS 1 throughput from 66,905 to 55,604 msg/s (`compare-mqtt.sh 8`); the journal's
    /// ordered queueing is kept so that a remote journal can be given more.
    static var maxInflight: Int { 1 }

    public init(
        shard: String, journal: any JournalClient,
        afterStore: @escaping @Sendable ([Item]) async throws -> Void = { _ in }
    ) {
        self.shard = shard
        self.journal = journal
        self.afterStore = afterStore
        (nudges, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (settling, toSettle) = AsyncStream.makeStream()
        slots = InflightLimiter(limit: Self.maxInflight)
    }

    /// Queues an item; `completion` runs once it is in the journal (and `afterStore` ran for
    /// its batch) or failed.
    public func submit(_ item: Item, completion: @escaping Completion) {
        queue.withLock { $0.append((item, completion)) }
        nudge.yield()
    }

    /// Ends `run` once what is queued went out.
    public func finish() { nudge.finish() }

    /// Sets the shard's batch limit: batches are cut to fit it, and a message that does not fit
    /// alone is refused by the journal (batch_too_large).
    public func limit(_ bytes: Int?) { shardLimit.withLock { $0 = bytes } }

    /// The appender's loop; runs as a child task of the gateway until `finish()`.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.settle() }
            for await _ in nudges {
                while true {
                    let limit = shardLimit.withLock { $0 }
                    let target = min(Self.maxBytes, limit ?? .max)
                    var batch = queue.withLock { queue -> [(Item, Completion)] in
                        var taken = 0
                        var bytes = 0
                        while taken < queue.count, taken < Self.maxMessages, bytes < target {
                            bytes += queue[taken].0.batchBytes
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

    /// Settles queued batches in queue order: `afterStore`, then the submitters' completions.
    private func settle() async {
        for await (pending, queueError, batch) in settling {
            defer { slots.release() }
            do {
                guard let pending else { throw queueError }
                _ = try await pending.result
                try await afterStore(batch.map(\.0))
                for (_, completion) in batch { completion(.success(())) }
            } catch {
                for (_, completion) in batch { completion(.failure(error)) }
            }
        }
    }
}
