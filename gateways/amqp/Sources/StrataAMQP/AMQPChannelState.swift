import DequeModule

/// One channel's delivery and publishing bookkeeping, as a value (no I/O): consumers, delivery
/// tags and what is unacknowledged, prefetch limits, publisher-confirm sequence numbers with
/// coalesced acks, and whether the channel is transactional. `Handle` is
/// what the gateway needs to settle a delivery in its queue (a queue name and message id).
public struct AMQPChannelState<Handle: Sendable & Hashable>: Sendable {
    public enum Mode: Sendable, Hashable {
        case plain
        case confirm
        case transaction
    }

    public struct Consumer: Sendable, Hashable {
        public var tag: String
        public var queue: String
        public var noAck: Bool
        public var exclusive: Bool
        /// basic.qos prefetch-count (global=false) in force when it was created; 0: unlimited.
        public var prefetch: UInt16
        /// Its queue has a single active consumer: of this channel's consumers on the queue,
        /// only the earliest is sent messages (the queue chooses among channels).
        public var singleActive = false
        /// The order consumers were created in.
        public var sequence = 0
    }

    public struct Unacked: Sendable, Hashable {
        public var consumer: String?
        public var handle: Handle
    }

    /// What acknowledging (or rejecting) settled: each delivery and its handle.
    public struct Settlement: Sendable, Hashable {
        public var tag: UInt64
        public var handle: Handle
    }

    public private(set) var mode = Mode.plain
    public private(set) var consumers: [String: Consumer] = [:]
    /// basic.qos with global=false: the prefetch of consumers created after it.
    public private(set) var consumerPrefetch: UInt16 = 0
    /// basic.qos with global=true: the channel's limit over all its consumers.
    public private(set) var channelPrefetch: UInt16 = 0
    private var nextTag: UInt64 = 1
    /// Unacknowledged deliveries by tag, in tag order.
    private var unacked: [UInt64: Unacked] = [:]
    private var unackedOrder = Deque<UInt64>()
    private var unackedByConsumer: [String: Int] = [:]
    private var generatedTags = 0
    private var consumersCreated = 0

    // Confirms: the next sequence number, the ones not answered yet in order, and answers
    // held back until everything before them is answered (so acks coalesce).
    private var nextSequence: UInt64 = 1
    private var outstanding = Deque<UInt64>()
    private var answered: [UInt64: Bool] = [:]

    public init() {}

    // MARK: Consumers and prefetch

    /// basic.qos. A byte-size limit is not implemented (RabbitMQ refuses it too: 540).
    public mutating func qos(prefetchSize: UInt32, prefetchCount: UInt16, global: Bool) throws(AMQPError) {
        guard prefetchSize == 0 else {
            throw AMQPError(
                AMQPError.notImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (\(prefetchSize))", classID: 60,
                methodID: 10)
        }
        if global { channelPrefetch = prefetchCount } else { consumerPrefetch = prefetchCount }
    }

    /// basic.consume: an empty tag gets a generated one; a tag in use is 530.
    public mutating func consume(
        tag requested: String, queue: String, noAck: Bool, exclusive: Bool, singleActive: Bool = false
    ) throws(AMQPError) -> Consumer {
        var tag = requested
        if tag.isEmpty {
            repeat {
                generatedTags += 1
                tag = "amq.ctag-\(generatedTags)"
            } while consumers[tag] != nil
        }
        guard consumers[tag] == nil else {
            throw AMQPError(
                AMQPError.notAllowed, "NOT_ALLOWED - attempt to reuse consumer tag '\(tag)'", classID: 60, methodID: 20)
        }
        consumersCreated += 1
        let consumer = Consumer(
            tag: tag, queue: queue, noAck: noAck, exclusive: exclusive, prefetch: consumerPrefetch,
            singleActive: singleActive, sequence: consumersCreated)
        consumers[tag] = consumer
        return consumer
    }

    /// basic.cancel (or the queue went away): the consumer stops; its unacknowledged deliveries
    /// stay on the channel until acknowledged or the channel closes, as in RabbitMQ.
    public mutating func cancel(tag: String) -> Consumer? { consumers.removeValue(forKey: tag) }

    /// Whether `consumer` may be sent another message now (prefetch-count per consumer and
    /// per channel; deliveries without acknowledgement count for neither).
    public func canDeliver(to tag: String) -> Bool {
        guard let consumer = consumers[tag], !standsBy(consumer) else { return false }
        if consumer.noAck { return true }
        if consumer.prefetch > 0, unackedByConsumer[tag, default: 0] >= Int(consumer.prefetch) { return false }
        if channelPrefetch > 0, unacked.count >= Int(channelPrefetch) { return false }
        return true
    }

    /// How many more messages `consumer` may be sent now: what its prefetch-count and the
    /// channel's leave, at most `cap` (consumers without acknowledgements and unlimited ones get
    /// `cap`); 0 for a consumer that does not exist.
    public func credit(for tag: String, cap: Int) -> Int {
        guard let consumer = consumers[tag], !standsBy(consumer) else { return 0 }
        if consumer.noAck { return cap }
        var credit = cap
        if consumer.prefetch > 0 { credit = min(credit, Int(consumer.prefetch) - unackedByConsumer[tag, default: 0]) }
        if channelPrefetch > 0 { credit = min(credit, Int(channelPrefetch) - unacked.count) }
        return max(0, credit)
    }

    /// A consumer of a single-active-consumer queue behind an earlier one of this channel.
    private func standsBy(_ consumer: Consumer) -> Bool {
        consumer.singleActive
            && consumers.values.contains { $0.queue == consumer.queue && $0.sequence < consumer.sequence }
    }

    /// Whether another consumer of this channel still consumes from `queue`.
    public func consumes(from queue: String) -> Bool { consumers.values.contains { $0.queue == queue } }

    /// The handles of every unacknowledged delivery, in tag order (to keep their leases alive).
    public var unackedHandles: [Handle] { unackedOrder.map { unacked[$0]!.handle } }

    /// A delivery (basic.deliver to `consumer`, or basic.get-ok with nil): its tag; one that
    /// needs acknowledgement is kept until it gets one.
    public mutating func deliver(_ handle: Handle, consumer: String?, needsAck: Bool) -> UInt64 {
        let tag = nextTag
        nextTag += 1
        if needsAck {
            unacked[tag] = Unacked(consumer: consumer, handle: handle)
            unackedOrder.append(tag)
            if let consumer { unackedByConsumer[consumer, default: 0] += 1 }
        }
        return tag
    }

    public var unacknowledged: Int { unacked.count }

    // MARK: Acknowledgements

    /// basic.ack, basic.nack and basic.reject: `multiple` takes every delivery up to `tag`
    /// (tag 0 with multiple: all of them). An unknown tag is 406, which closes the channel.
    public mutating func settle(tag: UInt64, multiple: Bool, methodID: UInt16) throws(AMQPError) -> [Settlement] {
        if multiple {
            let upTo = tag == 0 ? UInt64.max : tag
            guard tag == 0 || unacked[tag] != nil || (unackedOrder.first ?? .max) < tag else {
                throw unknown(tag, methodID)
            }
            let taken = Array(unackedOrder.prefix { $0 <= upTo })
            unackedOrder.removeFirst(taken.count)
            var settled: [Settlement] = []
            for tag in taken { settled.append(take(tag)) }
            return settled
        }
        guard unacked[tag] != nil, let index = Self.position(of: tag, in: unackedOrder) else {
            throw unknown(tag, methodID)
        }
        unackedOrder.remove(at: index)
        return [take(tag)]
    }

    /// basic.recover and a closing channel: every unacknowledged delivery, to be requeued.
    public mutating func takeAllUnacked() -> [Settlement] {
        var all: [Settlement] = []
        for tag in unackedOrder { all.append(take(tag)) }
        unackedOrder = []
        return all
    }

    private mutating func take(_ tag: UInt64) -> Settlement {
        let entry = unacked.removeValue(forKey: tag)!
        if let consumer = entry.consumer {
            unackedByConsumer[consumer]! -= 1
            if unackedByConsumer[consumer] == 0 { unackedByConsumer[consumer] = nil }
        }
        return Settlement(tag: tag, handle: entry.handle)
    }

    private func unknown(_ tag: UInt64, _ methodID: UInt16) -> AMQPError {
        AMQPError(
            AMQPError.preconditionFailed, "PRECONDITION_FAILED - unknown delivery tag \(tag)", classID: 60,
            methodID: methodID)
    }

    // MARK: Confirms and transactions

    /// confirm.select; a transactional channel cannot (406).
    public mutating func selectConfirms() throws(AMQPError) { try select(.confirm, classID: 85) }

    /// tx.select; a channel in confirm mode cannot (406).
    public mutating func selectTransactions() throws(AMQPError) { try select(.transaction, classID: 90) }

    /// Confirm and tx mode exclude each other: a channel keeps the one it chose.
    private mutating func select(_ wanted: Mode, classID: UInt16) throws(AMQPError) {
        guard mode == .plain || mode == wanted else {
            let names: (Mode) -> String = { $0 == .confirm ? "confirm" : "tx" }
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - cannot switch from \(names(mode)) to \(names(wanted)) mode", classID: classID,
                methodID: 10)
        }
        mode = wanted
    }

    /// A publish in confirm mode: its sequence number, to be answered with `answered`.
    public mutating func published() -> UInt64? {
        guard mode == .confirm else { return nil }
        let sequence = nextSequence
        nextSequence += 1
        outstanding.append(sequence)
        return sequence
    }

    /// A confirm-mode publish is stored (`ok`) or could not be: the basic.ack / basic.nack
    /// methods to send now. Acks wait for every earlier publish and go as one `multiple` ack;
    /// a nack goes at once for its own message.
    public mutating func answered(_ sequence: UInt64, ok: Bool) -> [AMQPMethod] { answered([(sequence, ok)]) }

    /// Several answers at once (in any order): the nacks among them, then one ack for every
    /// publish they let through.
    public mutating func answered(_ answers: [(sequence: UInt64, ok: Bool)]) -> [AMQPMethod] {
        var methods: [AMQPMethod] = []
        var acked = 0
        var last: UInt64 = 0
        for (sequence, ok) in answers {
            guard let index = Self.position(of: sequence, in: outstanding), answered[sequence] == nil else { continue }
            if !ok {
                outstanding.remove(at: index)
                methods.append(.basicNack(deliveryTag: sequence, multiple: false, requeue: false))
            } else {
                answered[sequence] = true
            }
            while let first = outstanding.first, answered[first] == true {
                outstanding.removeFirst()
                answered[first] = nil
                acked += 1
                last = first
            }
        }
        if acked > 0 { methods.append(.basicAck(deliveryTag: last, multiple: acked > 1)) }
        return methods
    }

    /// Where `value` is in the ascending `values`, nil when it is not there.
    private static func position(of value: UInt64, in values: Deque<UInt64>) -> Int? {
        var low = values.startIndex
        var high = values.endIndex
        while low < high {
            let middle = (low + high) / 2
            if values[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low < values.endIndex && values[low] == value ? low : nil
    }

    /// Publishes still waiting for their confirm.
    public var unconfirmed: Int { outstanding.count }
}
