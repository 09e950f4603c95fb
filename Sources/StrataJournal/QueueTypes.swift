/// A queue: a consumer group over shards with per-message delivery (docs/queues.md). Its
/// definition is small and JSON; its progress is a `QueueLedger` per source shard.
public struct QueueDefinition: Sendable, Hashable, Codable {
    /// One shard the queue takes records from.
    public struct Source: Sendable, Hashable, Codable {
        public var shard: String
        /// The topic name subjects of this shard's records fall back to (`SubjectPattern.subject`);
        /// nil: a record's subject is its key.
        public var subjectRoot: String?
        /// Where a source new to the queue starts: at its end (records appended from now on) or
        /// at its first retained record.
        public var fromStart: Bool

        public init(shard: String, subjectRoot: String? = nil, fromStart: Bool = false) {
            self.shard = shard
            self.subjectRoot = subjectRoot
            self.fromStart = fromStart
        }
    }

    public var sources: [Source]
    /// Records whose subject matches none of these are settled unseen; empty: every record.
    public var filters: [SubjectPattern]
    /// Deliveries after which an unsettled message is dead-lettered instead of delivered again;
    /// 0: no limit.
    public var maxDeliveries: UInt32
    /// Where dead letters are appended (a shard that exists); nil: they are discarded, counted.
    public var deadLetterShard: String?
    /// At most one message of a message group in flight at a time, in offset order per shard.
    public var orderedGroups: Bool
    /// Messages leased and not settled, at most (a receive returns fewer when it is reached).
    public var maxInFlight: UInt32
    /// How many ready messages (waiting and not read yet; leased ones do not count) the queue
    /// holds at most. Nil: no limit.
    public var lengthLimit: LengthLimit?
    /// Sources are priorities, the first the highest: a receive takes from a source only when
    /// every source before it has nothing ready. Nil or false: sources are taken in rotation.
    public var prioritized: Bool?
    /// One consumer at a time: the first of the consumers that receive (in the order they
    /// first did) gets messages; the others wait until it releases the queue or stays silent
    /// (no receive and no settle) for the visibility of its last receive (RabbitMQ's
    /// single-active-consumer). One-off receives take no part. Nil or false: every consumer.
    public var singleActiveConsumer: Bool?

    public init(
        sources: [Source], filters: [SubjectPattern] = [], maxDeliveries: UInt32 = 0,
        deadLetterShard: String? = nil, orderedGroups: Bool = false, maxInFlight: UInt32 = 10_000,
        lengthLimit: LengthLimit? = nil, prioritized: Bool = false, singleActiveConsumer: Bool = false
    ) {
        self.sources = sources
        self.filters = filters
        self.maxDeliveries = maxDeliveries
        self.deadLetterShard = deadLetterShard
        self.orderedGroups = orderedGroups
        self.maxInFlight = maxInFlight
        self.lengthLimit = lengthLimit
        self.prioritized = prioritized ? true : nil
        self.singleActiveConsumer = singleActiveConsumer ? true : nil
    }

    /// A queue's most ready messages and value bytes.
    public struct LengthLimit: Sendable, Hashable, Codable {
        public var messages: UInt64?
        public var bytes: UInt64?
        /// True: beyond the limit the head, the message a receive would take next, is
        /// dead-lettered with reason `max-length`. False: the queue only counts (`ready`,
        /// `readyBytes` in its status) and its writers refuse messages while it is full.
        public var dropHead: Bool

        public init(messages: UInt64? = nil, bytes: UInt64? = nil, dropHead: Bool) {
            self.messages = messages
            self.bytes = bytes
            self.dropHead = dropHead
        }
    }

    /// Headers the queue reads: when a record becomes visible, how long it lives, its group.
    public static let deliverAtHeader = "deliver-at-ms"
    public static let ttlHeader = "ttl-ms"
    public static let groupHeader = "message-group"
}

/// Which message of a queue a delivery was: a receipt settles only the delivery it names.
public struct QueueReceipt: Sendable, Hashable {
    /// The index of the source in the queue's definition.
    public var source: UInt32
    public var offset: UInt64
    /// 1 for the first delivery, counting up with each redelivery.
    public var delivery: UInt32

    public init(source: UInt32, offset: UInt64, delivery: UInt32) {
        self.source = source
        self.offset = offset
        self.delivery = delivery
    }
}

/// One message handed to a consumer.
public struct QueueDelivery: Sendable, Hashable {
    public var receipt: QueueReceipt
    /// The source shard's name.
    public var shard: String
    public var record: Record
    /// Leased to this consumer before (a resumed session's message, sent again).
    public var resumed: Bool

    public init(receipt: QueueReceipt, shard: String, record: Record, resumed: Bool) {
        self.receipt = receipt
        self.shard = shard
        self.record = record
        self.resumed = resumed
    }
}

/// What a consumer does with messages it holds.
public enum QueueSettlement: Sendable, Hashable {
    /// Done with: never delivered again.
    case ack
    /// Back to the queue, visible again after `delayMilliseconds` (a nack with requeue).
    case requeue(delayMilliseconds: UInt32)
    /// Dead-lettered now (a nack without requeue, RocketMQ's forward to the DLQ).
    case reject
    /// Kept by the consumer for `visibilityMilliseconds` from now (0: until settled or released).
    case extend(visibilityMilliseconds: UInt32)
}

/// A queue's state at a glance, for metrics, the admin API and tests.
public struct QueueStatus: Sendable, Hashable, Codable {
    public struct Source: Sendable, Hashable, Codable {
        public var shard: String
        /// Every offset below is settled.
        public var floor: UInt64
        /// Every offset below has been read once.
        public var cursor: UInt64
        /// The shard's end: `end - cursor` records not read yet.
        public var end: UInt64
    }

    public var name: String
    public var sources: [Source]
    /// Leased, not settled.
    public var inFlight: Int
    /// Read and waiting to be delivered (again), visible now or later.
    public var waiting: Int
    /// Of those, not visible yet (delayed or requeued with a delay).
    public var delayed: Int
    /// Messages not yet settled: waiting, in flight and not read yet.
    public var depth: UInt64
    /// Of those, the ones not leased (waiting and not read yet).
    public var ready: UInt64
    /// Their value bytes; only counted for a queue whose length limit has bytes (nil otherwise).
    public var readyBytes: UInt64?
    public var deadLettered: UInt64
    public var discarded: UInt64
    /// Messages retention removed before they were settled.
    public var lostToRetention: UInt64
    /// With a single active consumer: the one that gets messages now (nil: none yet).
    public var activeConsumer: String? = nil
}

/// How a receive takes part in its queue.
public struct QueueReceiveOptions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The consumer's own leases come first, delivered again (a session that came back).
    public static let resume = QueueReceiveOptions(rawValue: 1)
    /// A receive of its own (AMQP basic.get): not a consumer of the queue, so it takes no part
    /// in choosing a single active consumer.
    public static let oneOff = QueueReceiveOptions(rawValue: 2)
}
