import NIOCore

/// A queue's progress through one source shard: a value with no I/O, changed by events and
/// stored whole (binary, versioned) after each change.
///
/// Every offset in `[floor, cursor)` is in exactly one of: `settled` (as ranges), `leases` (held
/// by a consumer) or `waiting` (to be delivered, again or for the first time, at `visibleAt`).
/// Offsets below `floor` are settled; offsets from `cursor` on have not been read.
public struct QueueLedger: Sendable, Equatable {
    public struct Lease: Sendable, Equatable {
        public var consumer: String
        /// Deliveries so far, this one included.
        public var delivery: UInt32
        /// When the lease runs out (ms since the epoch); nil: held until settled or released.
        public var deadline: Int64?
        public var group: String?
    }

    public struct Waiting: Sendable, Equatable {
        /// Deliveries so far (0: never delivered: delayed, or behind its group).
        public var deliveries: UInt32
        public var visibleAt: Int64
        public var group: String?
    }

    public private(set) var floor: UInt64
    public private(set) var cursor: UInt64
    /// Settled offsets at or above `floor`, as sorted disjoint ranges.
    public private(set) var settled: [Range<UInt64>] = []
    public private(set) var leases: [UInt64: Lease] = [:]
    public private(set) var waiting: [UInt64: Waiting] = [:]
    public var deadLettered: UInt64 = 0
    public var discarded: UInt64 = 0
    public var lostToRetention: UInt64 = 0
    /// Leases and waiting messages per group (derived: rebuilt on decode).
    private var groupHolds: [String: Int] = [:]

    public init(startingAt offset: UInt64) {
        floor = offset
        cursor = offset
    }

    // MARK: Events

    /// The next unread record, at `offset` (at or past `cursor`; offsets between held no
    /// deliverable record), is leased to `consumer` as its first delivery.
    public mutating func leaseNew(_ offset: UInt64, to consumer: String, deadline: Int64?, group: String?) {
        passOver(upTo: offset)
        cursor = offset + 1
        leases[offset] = Lease(consumer: consumer, delivery: 1, deadline: deadline, group: group)
        hold(group)
    }

    /// The next unread record, at `offset`, waits: delayed until `visibleAt`, or behind its group.
    public mutating func holdNew(_ offset: UInt64, visibleAt: Int64, group: String?) {
        passOver(upTo: offset)
        cursor = offset + 1
        waiting[offset] = Waiting(deliveries: 0, visibleAt: visibleAt, group: group)
        hold(group)
    }

    /// Every unread offset below `offset` is settled without a delivery (filtered out, control
    /// records, dead-lettered on arrival).
    public mutating func passOver(upTo offset: UInt64) {
        guard offset > cursor else { return }
        insertSettled(cursor..<offset)
        cursor = offset
        advanceFloor()
    }

    /// A waiting message is leased to `consumer` (a redelivery, or a delayed one's first).
    public mutating func leaseWaiting(_ offset: UInt64, to consumer: String, deadline: Int64?) -> UInt32? {
        guard let entry = waiting.removeValue(forKey: offset) else { return nil }
        let delivery = entry.deliveries + 1
        leases[offset] = Lease(consumer: consumer, delivery: delivery, deadline: deadline, group: entry.group)
        return delivery
    }

    /// A consumer's lease is delivered again to it (a resumed session): one more delivery.
    public mutating func renewLease(_ offset: UInt64, deadline: Int64?) -> UInt32? {
        guard var lease = leases[offset] else { return nil }
        lease.delivery += 1
        lease.deadline = deadline
        leases[offset] = lease
        return lease.delivery
    }

    /// Settles `offset` (acknowledged, dead-lettered, discarded): it is never delivered again.
    /// False when it was not leased or waiting.
    @discardableResult
    public mutating func settle(_ offset: UInt64) -> Bool {
        let group: String??
        if let lease = leases.removeValue(forKey: offset) {
            group = lease.group
        } else if let entry = waiting.removeValue(forKey: offset) {
            group = entry.group
        } else {
            group = nil
        }
        guard let group else { return false }
        release(group)
        insertSettled(offset..<offset + 1)
        advanceFloor()
        return true
    }

    /// A lease ends without a settlement: the message waits again, visible at `visibleAt`.
    @discardableResult
    public mutating func requeue(_ offset: UInt64, visibleAt: Int64) -> Bool {
        guard let lease = leases.removeValue(forKey: offset) else { return false }
        waiting[offset] = Waiting(deliveries: lease.delivery, visibleAt: visibleAt, group: lease.group)
        return true
    }

    /// A lease is kept longer (or held, nil).
    @discardableResult
    public mutating func extend(_ offset: UInt64, deadline: Int64?) -> Bool {
        guard leases[offset] != nil else { return false }
        leases[offset]!.deadline = deadline
        return true
    }

    /// Leases that ran out by `now` wait again, visible at once. Returns how many.
    @discardableResult
    public mutating func expireLeases(now: Int64) -> Int {
        let expired = leases.filter { $0.value.deadline.map { $0 <= now } ?? false }.map(\.key)
        for offset in expired { requeue(offset, visibleAt: now) }
        return expired.count
    }

    /// Every lease `consumer` holds waits again, visible at `now`. Returns how many.
    @discardableResult
    public mutating func release(consumer: String, now: Int64) -> Int {
        let held = leases.filter { $0.value.consumer == consumer }.map(\.key)
        for offset in held { requeue(offset, visibleAt: now) }
        return held.count
    }

    /// Retention removed the shard's records below `start`: what was not settled is lost.
    public mutating func skip(below start: UInt64) {
        guard start > floor else { return }
        for offset in leases.keys where offset < start {
            lostToRetention += 1
            release(leases.removeValue(forKey: offset)!.group)
        }
        for offset in waiting.keys where offset < start {
            lostToRetention += 1
            release(waiting.removeValue(forKey: offset)!.group)
        }
        if start > cursor {
            lostToRetention += start - cursor
            cursor = start
        }
        settled = settled.compactMap { range in
            range.upperBound <= start ? nil : max(range.lowerBound, start)..<range.upperBound
        }
        floor = start
        advanceFloor()
    }

    // MARK: Questions

    /// The offsets of `consumer`'s leases, in order.
    public func leases(of consumer: String) -> [UInt64] {
        leases.filter { $0.value.consumer == consumer }.map(\.key).sorted()
    }

    /// Waiting messages that may be delivered at `now`, in offset order. With `orderedGroups`,
    /// a message whose group has a lease, or an earlier waiting message, is not.
    public func ready(now: Int64, orderedGroups: Bool) -> [UInt64] {
        let offsets = waiting.keys.sorted()
        guard orderedGroups else { return offsets.filter { waiting[$0]!.visibleAt <= now } }
        var blocked = Set(leases.values.compactMap(\.group))
        var result: [UInt64] = []
        for offset in offsets {
            let entry = waiting[offset]!
            if let group = entry.group {
                guard blocked.insert(group).inserted else { continue }
            }
            if entry.visibleAt <= now { result.append(offset) }
        }
        return result
    }

    /// Deliveries of `offset` so far (0 when it was never delivered or is settled).
    public func deliveries(of offset: UInt64) -> UInt32 {
        leases[offset]?.delivery ?? waiting[offset]?.deliveries ?? 0
    }

    /// Whether a new message of `group` must wait behind one already leased or waiting.
    public func groupIsBusy(_ group: String) -> Bool { groupHolds[group, default: 0] > 0 }

    /// The earliest time a waiting message becomes visible or a lease runs out, if any.
    public func nextTimer() -> Int64? {
        let visible = waiting.values.map(\.visibleAt).min()
        let deadline = leases.values.compactMap(\.deadline).min()
        return [visible, deadline].compactMap { $0 }.min()
    }

    // MARK: Storage

    private static let version: UInt8 = 1

    /// The ledger as stored: version, floor, cursor, counters, settled ranges, leases, waiting.
    public func encoded() -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.version)
        for value in [floor, cursor, deadLettered, discarded, lostToRetention] { buffer.writeInteger(value) }
        buffer.writeInteger(UInt32(settled.count))
        for range in settled {
            buffer.writeInteger(range.lowerBound)
            buffer.writeInteger(range.upperBound)
        }
        buffer.writeInteger(UInt32(leases.count))
        for (offset, lease) in leases.sorted(by: { $0.key < $1.key }) {
            buffer.writeInteger(offset)
            buffer.writeInteger(lease.delivery)
            buffer.writeInteger(lease.deadline ?? -1)
            Self.write(lease.consumer, to: &buffer)
            Self.write(lease.group, to: &buffer)
        }
        buffer.writeInteger(UInt32(waiting.count))
        for (offset, entry) in waiting.sorted(by: { $0.key < $1.key }) {
            buffer.writeInteger(offset)
            buffer.writeInteger(entry.deliveries)
            buffer.writeInteger(entry.visibleAt)
            Self.write(entry.group, to: &buffer)
        }
        return Array(buffer.readableBytesView)
    }

    public init(decoding bytes: [UInt8]) throws(JournalError) {
        var buffer = ByteBuffer(bytes: bytes)
        func fail() -> JournalError { JournalError(.corruptData, "queue ledger record does not parse") }
        guard let version: UInt8 = buffer.readInteger() else { throw fail() }
        guard version == Self.version else {
            throw JournalError(.corruptData, "queue ledger record version \(version) is not known")
        }
        guard let floor: UInt64 = buffer.readInteger(), let cursor: UInt64 = buffer.readInteger(),
            let deadLettered: UInt64 = buffer.readInteger(), let discarded: UInt64 = buffer.readInteger(),
            let lost: UInt64 = buffer.readInteger(), floor <= cursor
        else { throw fail() }
        self.init(startingAt: floor)
        self.cursor = cursor
        self.deadLettered = deadLettered
        self.discarded = discarded
        self.lostToRetention = lost
        guard let ranges: UInt32 = buffer.readInteger(), Int(ranges) <= buffer.readableBytes / 16 else { throw fail() }
        for _ in 0..<ranges {
            guard let lower: UInt64 = buffer.readInteger(), let upper: UInt64 = buffer.readInteger(),
                floor <= lower, lower < upper, upper <= cursor
            else { throw fail() }
            settled.append(lower..<upper)
        }
        guard let leaseCount: UInt32 = buffer.readInteger(), Int(leaseCount) <= buffer.readableBytes / 24 else {
            throw fail()
        }
        for _ in 0..<leaseCount {
            guard let offset: UInt64 = buffer.readInteger(), let delivery: UInt32 = buffer.readInteger(),
                let deadline: Int64 = buffer.readInteger(), let consumer = Self.read(&buffer),
                let group = Self.read(&buffer),
                let consumerName = consumer
            else { throw fail() }
            leases[offset] = Lease(
                consumer: consumerName, delivery: delivery, deadline: deadline < 0 ? nil : deadline, group: group)
            hold(group)
        }
        guard let waitingCount: UInt32 = buffer.readInteger(), Int(waitingCount) <= buffer.readableBytes / 22 else {
            throw fail()
        }
        for _ in 0..<waitingCount {
            guard let offset: UInt64 = buffer.readInteger(), let deliveries: UInt32 = buffer.readInteger(),
                let visibleAt: Int64 = buffer.readInteger(), let group = Self.read(&buffer)
            else { throw fail() }
            waiting[offset] = Waiting(deliveries: deliveries, visibleAt: visibleAt, group: group)
            hold(group)
        }
        guard buffer.readableBytes == 0 else { throw fail() }
    }

    private static func write(_ string: String?, to buffer: inout ByteBuffer) {
        guard let string else {
            buffer.writeInteger(UInt16.max)
            return
        }
        let bytes = Array(string.utf8.prefix(Int(UInt16.max) - 1))
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    /// nil: the record is short; .some(nil): an absent string.
    private static func read(_ buffer: inout ByteBuffer) -> String?? {
        guard let length: UInt16 = buffer.readInteger() else { return nil }
        if length == .max { return .some(nil) }
        guard let bytes = buffer.readBytes(length: Int(length)) else { return nil }
        return .some(String(decoding: bytes, as: UTF8.self))
    }

    // MARK: Bookkeeping

    private mutating func hold(_ group: String?) {
        if let group { groupHolds[group, default: 0] += 1 }
    }

    private mutating func release(_ group: String?) {
        guard let group, let count = groupHolds[group] else { return }
        groupHolds[group] = count > 1 ? count - 1 : nil
    }

    private mutating func insertSettled(_ range: Range<UInt64>) {
        let index = settled.partitionPoint { $0.upperBound < range.lowerBound }
        var merged = range
        while index < settled.count, settled[index].lowerBound <= merged.upperBound {
            merged =
                min(merged.lowerBound, settled[index].lowerBound)..<max(merged.upperBound, settled[index].upperBound)
            settled.remove(at: index)
        }
        settled.insert(merged, at: index)
    }

    private mutating func advanceFloor() {
        if let first = settled.first, first.lowerBound <= floor {
            floor = max(floor, first.upperBound)
            settled.removeFirst()
        }
    }
}

extension Array {
    /// The first index whose element fails `belongs`, for an array partitioned by it.
    fileprivate func partitionPoint(_ belongs: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if belongs(self[middle]) { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
