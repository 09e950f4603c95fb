import NIOCore
import StrataJournal
import StrataWire

/// The journal in this process: every call goes straight to the engine.
public struct InProcessJournalClient: JournalClient {
    public let journal: Journal
    public let node: String
    private let started = ContinuousClock.now
    /// The bytes appends in flight may hold, shared with the node's journal-protocol connections
    /// (`JournalServer.queuedBytes`): gateways in the node's process are held back like remote
    /// clients when the journal falls behind. Nil: no limit (tests, tools).
    private let appendBudget: ByteBudget?

    public init(journal: Journal, node: String = "in-process", appendBudget: ByteBudget? = nil) {
        self.journal = journal
        self.node = node
        self.appendBudget = appendBudget
    }

    public func createShard(_ name: String, config: ShardConfig) async throws -> ShardInfo {
        try await journal.createShard(name, config: config)
    }

    public func alterShard(_ name: String, config: ShardConfig) async throws -> ShardInfo {
        try await journal.alterShard(name, config: config)
    }

    public func deleteShard(_ name: String) async throws { try await journal.deleteShard(name) }
    public func describeShard(_ name: String) async throws -> ShardInfo { try journal.describeShard(name) }
    public func listShards() async throws -> [ShardInfo] { journal.listShards() }

    public func append(shard: String, batch: ByteBuffer) async throws -> AppendResult {
        try await queueAppend(shard: shard, batch: batch).result
    }

    /// Takes the batch's bytes from the append budget first (waiting, in order, while appends
    /// already in flight hold it), and gives them back once the journal answered.
    public func queueAppend(shard: String, batch: ByteBuffer) async throws -> PendingAppend {
        let bytes = batch.readableBytes
        if let appendBudget, !(await appendBudget.acquire(bytes)) { throw CancellationError() }
        let pending = PendingAppend()
        journal.enqueueAppend(shard: shard, batch: batch) { [appendBudget] outcome in
            appendBudget?.release(bytes)
            pending.complete(outcome.mapError { $0 })
        }
        return pending
    }

    public func read(shard: String, from offset: UInt64, maxBytes: Int, maxWait: Duration) async throws -> ReadResult {
        try await journal.read(shard: shard, from: offset, maxBytes: maxBytes, maxWait: maxWait)
    }

    public func offset(shard: String, atOrAfter timestamp: Int64) async throws -> UInt64? {
        try await journal.offset(shard: shard, atOrAfter: timestamp)
    }

    public func subscribe(shard: String, from offset: UInt64, maxBytes: Int) async throws -> RecordSubscription {
        _ = try journal.describeShard(shard)
        return RecordSubscription(source: .local(journal.subscribe(shard: shard, from: offset, maxBytes: maxBytes)))
    }

    public func commitOffset(group: String, shard: String, offset: UInt64) async throws {
        try await journal.commitOffset(group: group, shard: shard, offset: offset)
    }

    public func committedOffset(group: String, shard: String) async throws -> UInt64? {
        try await journal.committedOffset(group: group, shard: shard)
    }

    public func get(namespace: String, key: [UInt8]) async throws -> [UInt8]? {
        try await journal.get(namespace: namespace, key: key)
    }

    public func put(namespace: String, key: [UInt8], value: [UInt8]) async throws {
        try await journal.put(namespace: namespace, key: key, value: value)
    }

    public func delete(namespace: String, key: [UInt8]) async throws {
        try await journal.delete(namespace: namespace, key: key)
    }

    public func scan(namespace: String, prefix: [UInt8], limit: Int) async throws -> [KeyValue] {
        try await journal.scan(namespace: namespace, prefix: prefix, limit: limit)
    }

    public func status() async throws -> NodeStatus {
        NodeStatus(
            node: node, version: StrataVersion.current, uptimeSeconds: (ContinuousClock.now - started).seconds,
            shards: journal.listShards().count, connections: 0, statistics: journal.statistics, health: journal.health)
    }

    public func declareQueue(_ name: String, definition: QueueDefinition) async throws -> QueueStatus {
        try await journal.declareQueue(name, definition: definition)
    }

    public func deleteQueue(_ name: String) async throws { try await journal.deleteQueue(name) }

    public func describeQueues(_ name: String?) async throws -> [QueueStatus] {
        if let name { return [try await journal.describeQueue(name)] }
        return try await journal.listQueues()
    }

    public func receive(
        queue: String, consumer: String, max: Int, maxBytes: Int, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, priority: Int32, wait: Duration
    ) async throws -> [QueueDelivery] {
        try await journal.receive(
            queue: queue, consumer: consumer, max: max, maxBytes: maxBytes,
            visibilityMilliseconds: visibilityMilliseconds, options: options, priority: priority, wait: wait)
    }

    public func settle(queue: String, consumer: String, receipts: [QueueReceipt], as settlement: QueueSettlement)
        async throws -> Int
    {
        try await journal.settle(queue: queue, consumer: consumer, receipts: receipts, as: settlement)
    }

    public func releaseConsumer(queue: String, consumer: String, keepingLeases: Bool) async throws -> Int {
        try await journal.releaseConsumer(queue: queue, consumer: consumer, keepingLeases: keepingLeases)
    }
}
