import NIOCore
import StrataJournal
import StrataWire

/// The one API gateways and tools use to reach the journal, whether the node is another
/// process (`RemoteJournalClient`) or this one (`InProcessJournalClient`).
public protocol JournalClient: Sendable {
    func createShard(_ name: String, config: ShardConfig) async throws -> ShardInfo
    /// Replaces a shard's configuration (retention takes effect at the node's next maintenance round).
    func alterShard(_ name: String, config: ShardConfig) async throws -> ShardInfo
    func deleteShard(_ name: String) async throws
    func describeShard(_ name: String) async throws -> ShardInfo
    func listShards() async throws -> [ShardInfo]

    /// Appends one RecordBatch v2; returns once durable by the shard's policy. Appends issued
    /// one after another by one task get offsets in that order.
    func append(shard: String, batch: ByteBuffer) async throws -> AppendResult
    /// Queues an append and returns as soon as it is queued: an append queued after this call
    /// returned is stored after it. The outcome comes through the returned value — so a caller
    /// can keep many appends to a shard in flight and still control their order.
    func queueAppend(shard: String, batch: ByteBuffer) async throws -> PendingAppend
    /// Batches from `offset` on (whole batches, at least one when there is data); waits up to
    /// `maxWait` for an append when there is nothing to read.
    func read(shard: String, from offset: UInt64, maxBytes: Int, maxWait: Duration) async throws -> ReadResult
    /// The first offset whose record timestamp is at or after `timestamp` (nil: none).
    func offset(shard: String, atOrAfter timestamp: Int64) async throws -> UInt64?
    /// Non-empty reads from `offset` on, pushed as records are appended.
    func subscribe(shard: String, from offset: UInt64, maxBytes: Int) async throws -> RecordSubscription

    func commitOffset(group: String, shard: String, offset: UInt64) async throws
    func committedOffset(group: String, shard: String) async throws -> UInt64?

    func get(namespace: String, key: [UInt8]) async throws -> [UInt8]?
    func put(namespace: String, key: [UInt8], value: [UInt8]) async throws
    func delete(namespace: String, key: [UInt8]) async throws
    func scan(namespace: String, prefix: [UInt8], limit: Int) async throws -> [KeyValue]

    func status() async throws -> NodeStatus

    /// Queues (docs/queues.md): `Journal.declareQueue` and its neighbours, wherever the node is.
    func declareQueue(_ name: String, definition: QueueDefinition) async throws -> QueueStatus
    func deleteQueue(_ name: String) async throws
    /// The queue's status; nil name: every queue the principal may read.
    func describeQueues(_ name: String?) async throws -> [QueueStatus]
    func receive(
        queue: String, consumer: String, max: Int, maxBytes: Int, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, priority: Int32, wait: Duration
    ) async throws -> [QueueDelivery]
    func settle(queue: String, consumer: String, receipts: [QueueReceipt], as settlement: QueueSettlement)
        async throws -> Int
    /// The consumer's leases go back to the queue (not with `keepingLeases`: it stops taking
    /// part, and a single active consumer hands over, but what it holds stays its own).
    func releaseConsumer(queue: String, consumer: String, keepingLeases: Bool) async throws -> Int
}

extension JournalClient {
    public func receive(
        queue: String, consumer: String, max: Int, maxBytes: Int, visibilityMilliseconds: UInt32, resume: Bool,
        wait: Duration
    ) async throws -> [QueueDelivery] {
        try await receive(
            queue: queue, consumer: consumer, max: max, maxBytes: maxBytes,
            visibilityMilliseconds: visibilityMilliseconds, options: resume ? .resume : [], priority: 0, wait: wait)
    }

    public func receive(
        queue: String, consumer: String, max: Int, maxBytes: Int, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, wait: Duration
    ) async throws -> [QueueDelivery] {
        try await receive(
            queue: queue, consumer: consumer, max: max, maxBytes: maxBytes,
            visibilityMilliseconds: visibilityMilliseconds, options: options, priority: 0, wait: wait)
    }

    public func releaseConsumer(queue: String, consumer: String) async throws -> Int {
        try await releaseConsumer(queue: queue, consumer: consumer, keepingLeases: false)
    }
}

/// A subscription's reads, from either client. Iterating it keeps the subscription alive;
/// dropping the iterator (or cancelling the task) ends it.
public struct RecordSubscription: AsyncSequence, Sendable {
    public typealias Element = ReadResult

    enum Source: Sendable {
        case local(JournalSubscription)
        case remote(AsyncThrowingStream<ReadResult, any Error>, consumed: @Sendable () -> Void)
    }

    let source: Source

    public struct AsyncIterator: AsyncIteratorProtocol {
        var local: JournalSubscription.AsyncIterator?
        var remote: AsyncThrowingStream<ReadResult, any Error>.AsyncIterator?
        let consumed: (@Sendable () -> Void)?

        public mutating func next() async throws -> ReadResult? {
            if local != nil { return try await local!.next() }
            let result = try await remote!.next()
            if result != nil { consumed?() }
            return result
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        switch source {
        case .local(let subscription):
            AsyncIterator(local: subscription.makeAsyncIterator(), remote: nil, consumed: nil)
        case .remote(let stream, let consumed):
            AsyncIterator(local: nil, remote: stream.makeAsyncIterator(), consumed: consumed)
        }
    }
}

extension JournalClient {
    public func createShard(_ name: String) async throws -> ShardInfo {
        try await createShard(name, config: ShardConfig())
    }

    public func read(shard: String, from offset: UInt64, maxBytes: Int) async throws -> ReadResult {
        try await read(shard: shard, from: offset, maxBytes: maxBytes, maxWait: .zero)
    }

    public func subscribe(shard: String, from offset: UInt64) async throws -> RecordSubscription {
        try await subscribe(shard: shard, from: offset, maxBytes: 1 << 20)
    }

    public func scan(namespace: String, prefix: [UInt8] = []) async throws -> [KeyValue] {
        try await scan(namespace: namespace, prefix: prefix, limit: .max)
    }
}
