import Foundation
import NIOCore
import Synchronization

/// Queues over the log (docs/queues.md): every gateway process reaches the same queue through
/// the journal, which alone decides who gets which message, so two gateways never hand one
/// message to two consumers.
extension Journal {
    /// Creates the queue, or updates its definition: sources may be added (never removed or
    /// reordered, since receipts name them by index); the other settings are replaced.
    public func declareQueue(_ name: String, definition: QueueDefinition) async throws -> QueueStatus {
        try Self.checkQueueName(name)
        guard Set(definition.sources.map(\.shard)).count == definition.sources.count else {
            throw JournalError(.invalidArgument, "queue \(name): a source shard is named twice")
        }
        let queue = try await queueActor(name, creating: definition)
        return try await queue.declare(definition)
    }

    /// Removes the queue and its state; its sources are untouched.
    public func deleteQueue(_ name: String) async throws {
        try Self.checkQueueName(name)
        let queue = queues.withLock { $0.removeValue(forKey: name) }
        await queue?.close()
        defer {
            // An actor loaded meanwhile (a describe racing the delete) is dropped too.
            if let late = queues.withLock({ $0.removeValue(forKey: name) }) { Task { await late.close() } }
        }
        try await blocking { [self] in
            guard try db.get(StorageKeys.queueDefinition(name)) != nil else {
                throw JournalError(.unknownQueue, "queue \(name) does not exist")
            }
            let batch = RocksDB.WriteBatch()
            batch.delete(StorageKeys.queueDefinition(name))
            db.scan(prefix: StorageKeys.queueLedgerPrefix(name)) { key, _ in
                batch.delete(Array(key))
                return true
            }
            try db.write(batch, durable: true)
        }
    }

    /// The queues there are, with their state.
    public func listQueues() async throws -> [QueueStatus] {
        var result: [QueueStatus] = []
        for name in try await queueNames() { result.append(try await describeQueue(name)) }
        return result
    }

    /// The names of the queues there are.
    public func queueNames() async throws -> [String] {
        try await blocking { [db] in
            var names: [String] = []
            db.scan(prefix: StorageKeys.queueDefinitionPrefix) { key, _ in
                names.append(String(decoding: key.dropFirst(StorageKeys.queueDefinitionPrefix.count), as: UTF8.self))
                return true
            }
            return names
        }
    }

    public func describeQueue(_ name: String) async throws -> QueueStatus {
        try Self.checkQueueName(name)
        return try await queueActor(name, creating: nil).status()
    }

    /// Up to `max` messages for `consumer` (and about `maxBytes` of keys and values, at least
    /// one message), waiting up to `wait` for one. Each is leased for
    /// `visibilityMilliseconds` (0: held until settled or released). With `resume`, the
    /// consumer's own leases come first, delivered again (a session that came back).
    public func receive(
        queue name: String, consumer: String, max: Int, maxBytes: Int = 1 << 20, visibilityMilliseconds: UInt32,
        resume: Bool = false, wait: Duration = .zero
    ) async throws -> [QueueDelivery] {
        try await receive(
            queue: name, consumer: consumer, max: max, maxBytes: maxBytes,
            visibilityMilliseconds: visibilityMilliseconds, options: resume ? .resume : [], wait: wait)
    }

    /// `receive` with its options: `.resume`, and `.oneOff` (AMQP basic.get: a receive that is
    /// not a consumer of the queue, never held back by a single active consumer or a priority);
    /// and the consumer's `priority` (AMQP x-priority): while a consumer of a higher priority
    /// could take messages, this one waits (see docs/queues.md).
    public func receive(
        queue name: String, consumer: String, max: Int, maxBytes: Int = 1 << 20, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, priority: Int32 = 0, wait: Duration = .zero
    ) async throws -> [QueueDelivery] {
        try Self.checkQueueName(name)
        guard max >= 0, !consumer.isEmpty else {
            throw JournalError(
                .invalidArgument, "a receive names its consumer and a count of messages (0: expire only)")
        }
        let queue = try await queueActor(name, creating: nil)
        return try await queue.receive(
            consumer: consumer, max: max, maxBytes: maxBytes, visibility: visibilityMilliseconds, options: options,
            priority: priority, wait: wait)
    }

    /// Settles the deliveries `receipts` name, when `consumer` still holds them. Returns how
    /// many it did (a receipt whose lease ran out and went to another consumer does nothing).
    @discardableResult
    public func settle(
        queue name: String, consumer: String, receipts: [QueueReceipt], as settlement: QueueSettlement
    ) async throws -> Int {
        try Self.checkQueueName(name)
        let queue = try await queueActor(name, creating: nil)
        return try await queue.settle(consumer: consumer, receipts: receipts, as: settlement)
    }

    /// Every lease `consumer` holds goes back to the queue for others (its session ended), and
    /// it is no longer a consumer of the queue. `keepingLeases`: only the latter (a consumer
    /// cancelled while its deliveries are unacknowledged: a single active consumer hands over,
    /// and what it holds is still its own to settle).
    @discardableResult
    public func releaseConsumer(queue name: String, consumer: String, keepingLeases: Bool = false) async throws -> Int {
        try Self.checkQueueName(name)
        let queue = try await queueActor(name, creating: nil)
        return try await queue.release(consumer: consumer, keepingLeases: keepingLeases)
    }

    private static func checkQueueName(_ name: String) throws(JournalError) {
        guard !name.isEmpty, name.utf8.count <= 1024, !name.utf8.contains(0) else {
            throw JournalError(.invalidArgument, "a queue name is 1 to 1024 bytes of UTF-8 without NUL")
        }
    }

    /// The queue's actor, loaded from storage on first use; a new queue with `definition`.
    private func queueActor(_ name: String, creating definition: QueueDefinition?) async throws -> QueueActor {
        if let queue = queues.withLock({ $0[name] }) { return queue }
        let stored = try await blocking { [self] () -> (QueueDefinition, [QueueLedger?])? in
            guard let bytes = try db.get(StorageKeys.queueDefinition(name)) else { return nil }
            let definition: QueueDefinition
            do {
                definition = try JSONDecoder().decode(QueueDefinition.self, from: Data(bytes))
            } catch {
                throw JournalError(.corruptData, "queue \(name): definition does not parse: \(error)")
            }
            var ledgers: [QueueLedger?] = []
            for index in definition.sources.indices {
                ledgers.append(
                    try db.get(StorageKeys.queueLedger(name, source: UInt32(index))).map {
                        try QueueLedger(decoding: $0)
                    })
            }
            return (definition, ledgers)
        }
        guard let (loaded, ledgers) = stored ?? definition.map({ ($0, []) }) else {
            throw JournalError(.unknownQueue, "queue \(name) does not exist")
        }
        let fresh = QueueActor(journal: self, name: name, definition: loaded, ledgers: ledgers, stored: stored != nil)
        return queues.withLock { queues in
            if let existing = queues[name] { return existing }
            queues[name] = fresh
            return fresh
        }
    }
}

/// One queue's state and its only writer. Every change runs inside `exclusive` (the journal
/// reads it makes must not interleave with another change) and is stored before the caller
/// hears of it; concurrent changes share one write.
actor QueueActor {
    private unowned let journal: Journal
    let name: String
    private var definition: QueueDefinition
    private var ledgers: [QueueLedger?]
    private var stored: Bool
    /// Records read past each source's cursor and not yet taken (nil record: an offset that holds
    /// nothing to deliver).
    private var lookahead: [[(offset: UInt64, record: Record?)]]
    /// Where each source's lookahead continues.
    private var readPosition: [UInt64]
    private var busy = false
    private var queued: [CheckedContinuation<Void, Never>] = []
    /// Changes made, and the sources whose ledgers changed since the last store.
    private var changes = 0
    private var dirty = Set<Int>()
    private var storedChanges = 0
    private var storing = false
    private var storeWaiters: [CheckedContinuation<Void, Never>] = []
    private let wakeup = QueueWakeup()
    private var closed = false
    /// With a single active consumer: the consumers in the order they first received, the
    /// first the active one, each with when it was last heard from and how long it may be silent.
    private var consumers: [ActiveConsumer] = []
    /// Consumers by name and priority: how many of their receives are under way, and until when
    /// they are taken to have room after taking fewer messages than they asked for.
    private var appetites: [RankedConsumer: Appetite] = [:]
    /// The receives under way, and those whose consumer was released since they began.
    private var receivesUnderWay: [Int: String] = [:]
    private var releasedReceives = Set<Int>()
    private var nextReceive = 0
    private struct RankedConsumer: Hashable {
        let name: String
        let priority: Int32
    }
    private struct Appetite {
        var receiving = 0
        var hungryUntil: Int64 = 0
    }
    private struct ActiveConsumer {
        let name: String
        var heard: Int64
        var patience: Int64
    }
    /// For a queue with a length limit in bytes, each source's value sizes: of the records past the
    /// cursor (in offset order from `unreadSizesStart`, known up to `sizedUpTo`, summing to
    /// `unreadBytes`), and of the messages read once (so waiting ones are counted unread).
    private var unreadSizes: [[(offset: UInt64, bytes: Int)]] = []
    private var unreadSizesStart: [Int] = []
    private var unreadBytes: [Int] = []
    private var sizedUpTo: [UInt64] = []
    private var readSizes: [[UInt64: Int]] = []

    init(journal: Journal, name: String, definition: QueueDefinition, ledgers: [QueueLedger?], stored: Bool) {
        self.journal = journal
        self.name = name
        self.definition = definition
        self.ledgers = ledgers + Array(repeating: nil, count: max(0, definition.sources.count - ledgers.count))
        self.stored = stored
        lookahead = Array(repeating: [], count: definition.sources.count)
        readPosition = self.ledgers.map { $0?.cursor ?? 0 }
        let count = definition.sources.count
        unreadSizes = Array(repeating: [], count: count)
        unreadSizesStart = Array(repeating: 0, count: count)
        unreadBytes = Array(repeating: 0, count: count)
        sizedUpTo = readPosition
        readSizes = Array(repeating: [:], count: count)
    }

    /// The size bookkeeping has an entry per source.
    private func growSizes() {
        for index in unreadSizes.count..<definition.sources.count {
            unreadSizes.append([])
            unreadSizesStart.append(0)
            unreadBytes.append(0)
            sizedUpTo.append(ledgers[index]?.cursor ?? 0)
            readSizes.append([:])
        }
    }

    /// Ends the queue (deleted): waiting receives return, later changes are refused, and the
    /// store in flight, if any, has landed when this returns (so a delete after it is the last
    /// word on the queue's keys).
    func close() async {
        closed = true
        wakeup.fire()
        while storing { await withCheckedContinuation { storeWaiters.append($0) } }
    }

    func declare(_ declared: QueueDefinition) async throws -> QueueStatus {
        try await exclusive {
            // Receipts name sources by index: the known ones keep theirs (a declaration may
            // update their subject root), sources new to the queue are appended in the declared
            // order, and a declaration naming fewer removes none. So gateways that declare one
            // queue with the sources each knows of, in any order, agree. (`declareQueue` refused
            // a declaration naming a shard twice.)
            var new = declared
            let byShard = Dictionary(uniqueKeysWithValues: declared.sources.map { ($0.shard, $0) })
            let known = Set(definition.sources.map(\.shard))
            new.sources =
                definition.sources.map { source in
                    var kept = source
                    if let given = byShard[source.shard] { kept.subjectRoot = given.subjectRoot }
                    return kept
                } + declared.sources.filter { !known.contains($0.shard) }
            if new != definition || !stored {
                let bytes = Array(try JSONEncoder().encode(new))
                try await journal.blocking { [journal, name] in
                    try journal.db.put(StorageKeys.queueDefinition(name), bytes, durable: true)
                }
                stored = true
                let added = new.sources.count - definition.sources.count
                definition = new
                ledgers += Array(repeating: nil, count: max(0, added))
                lookahead += Array(repeating: [], count: max(0, added))
                readPosition += Array(repeating: 0, count: max(0, added))
                growSizes()
            }
            try await startLedgers()
        }
        try await storeChanges()
        wakeup.fire()
        return try await status()
    }

    func status() async throws -> QueueStatus {
        var sources: [QueueStatus.Source] = []
        var depth: UInt64 = 0
        var ready: UInt64 = 0
        for (index, source) in definition.sources.enumerated() {
            let ledger = ledgers[index]
            let end = (try? journal.describeShard(source.shard).endOffset) ?? 0
            let cursor = ledger?.cursor ?? end
            sources.append(.init(shard: source.shard, floor: ledger?.floor ?? cursor, cursor: cursor, end: end))
            let waiting = UInt64(ledger?.waiting.count ?? 0) + (end > cursor ? end - cursor : 0)
            ready += waiting
            depth += UInt64(ledger?.leases.count ?? 0) + waiting
        }
        var readyBytes: UInt64?
        if definition.lengthLimit?.bytes != nil {
            readyBytes = try await exclusive { () async throws -> UInt64 in
                var bytes: UInt64 = 0
                for index in ledgers.indices where ledgers[index] != nil { bytes += try await readyLoad(index).bytes }
                return bytes
            }
            try await storeChanges()
        }
        let now = WallClock.milliseconds()
        let present = ledgers.compactMap { $0 }
        return QueueStatus(
            name: name, sources: sources, inFlight: present.reduce(0) { $0 + $1.leases.count },
            waiting: present.reduce(0) { $0 + $1.waiting.count },
            delayed: present.reduce(0) { $0 + $1.waiting.values.filter { $0.visibleAt > now }.count }, depth: depth,
            ready: ready, readyBytes: readyBytes,
            deadLettered: present.reduce(0) { $0 + $1.deadLettered },
            discarded: present.reduce(0) { $0 + $1.discarded },
            lostToRetention: present.reduce(0) { $0 + $1.lostToRetention },
            activeConsumer: definition.singleActiveConsumer == true ? activeConsumer(now: now) : nil)
    }

    func receive(
        consumer: String, max: Int, maxBytes: Int, visibility: UInt32, options: QueueReceiveOptions, priority: Int32,
        wait: Duration
    ) async throws -> [QueueDelivery] {
        if max == 0 {
            // Leases nothing: expires what is due at the head of each source.
            try await exclusive {
                try await startLedgers()
                let now = WallClock.milliseconds()
                try await expireHead(now: now)
                try await trim(now: now)
            }
            try await storeChanges()
            return []
        }
        let waitEnd = ContinuousClock.now + wait
        let limits = TakeLimits(count: max, bytes: maxBytes)
        let ranked = options.contains(.oneOff) ? nil : RankedConsumer(name: consumer, priority: priority)
        if let ranked { appetites[ranked, default: Appetite()].receiving += 1 }
        var receiving = ranked != nil
        nextReceive += 1
        let token = nextReceive
        receivesUnderWay[token] = consumer
        defer {
            if let ranked, receiving { appetites[ranked]?.receiving -= 1 }
            receivesUnderWay[token] = nil
            releasedReceives.remove(token)
        }
        while true {
            let generation = wakeup.generation
            // Its consumer was released meanwhile: this receive ends, and neither takes nor puts
            // the consumer back in line.
            if releasedReceives.contains(token) { return [] }
            if let ranked, !isActive(consumer, visibility: visibility) || outranked(ranked) {
                // Standing by (behind the active consumer, or below a consumer of a higher
                // priority with room): woken when it leaves or fills up, or at the end of the wait
                // (when it may have gone silent).
                if closed || ContinuousClock.now >= waitEnd { return [] }
                try await standBy(after: generation, until: waitEnd)
                continue
            }
            let taken = try await exclusive {
                try await take(
                    consumer: consumer, limits: limits, visibility: visibility, resume: options.contains(.resume))
            }
            if let ranked {
                if !taken.isEmpty, receiving {
                    // Returning with messages: no longer in a receive from here on (the store
                    // below may let others run, and a consumer that filled up must not hold
                    // back those it woke).
                    appetites[ranked]?.receiving -= 1
                    receiving = false
                }
                took(ranked, full: taken.count >= max)
            }
            try await storeChanges()
            if !taken.isEmpty || closed || ContinuousClock.now >= waitEnd { return taken }
            try await waitForWork(after: generation, until: waitEnd)
        }
    }

    func settle(consumer: String, receipts: [QueueReceipt], as settlement: QueueSettlement) async throws -> Int {
        let count = try await exclusive { () async throws -> Int in
            let now = WallClock.milliseconds()
            var count = 0
            heard(consumer)
            for receipt in receipts {
                let index = Int(receipt.source)
                guard index < ledgers.count, let lease = ledgers[index]?.leases[receipt.offset],
                    lease.consumer == consumer, lease.delivery == receipt.delivery
                else { continue }
                switch settlement {
                case .ack:
                    ledgers[index]!.settle(receipt.offset)
                case .requeue(let delay):
                    ledgers[index]!.requeue(receipt.offset, visibleAt: now + Int64(delay))
                case .reject:
                    try await deadLetter(source: index, offset: receipt.offset, reason: "rejected", record: nil)
                case .extend(let visibility):
                    ledgers[index]!.extend(receipt.offset, deadline: visibility == 0 ? nil : now + Int64(visibility))
                }
                count += 1
                touch(index)
            }
            return count
        }
        try await storeChanges()
        if count > 0 { wakeup.fire() }
        return count
    }

    func release(consumer: String, keepingLeases: Bool) async throws -> Int {
        if let index = consumers.firstIndex(where: { $0.name == consumer }) {
            consumers.remove(at: index)
            if index == 0 { wakeup.fire() }
        }
        for ranked in appetites.keys where ranked.name == consumer {
            appetites[ranked]!.hungryUntil = 0
            wakeup.fire()
        }
        for (token, name) in receivesUnderWay where name == consumer {
            releasedReceives.insert(token)
            wakeup.fire()
        }
        if keepingLeases { return 0 }
        let count = try await exclusive { () -> Int in
            let now = WallClock.milliseconds()
            var count = 0
            for index in ledgers.indices where ledgers[index] != nil {
                let released = ledgers[index]!.release(consumer: consumer, now: now)
                if released > 0 { touch(index) }
                count += released
            }
            return count
        }
        try await storeChanges()
        if count > 0 { wakeup.fire() }
        return count
    }

    // MARK: A single active consumer

    /// Whether `consumer` may take messages: in a queue with a single active consumer, only the
    /// first of its consumers heard from recently enough; it becomes one (last) by receiving.
    private func isActive(_ consumer: String, visibility: UInt32) -> Bool {
        guard definition.singleActiveConsumer == true else { return true }
        let now = WallClock.milliseconds()
        let patience = Int64(visibility == 0 ? 60_000 : visibility)
        consumers.removeAll { $0.name != consumer && now > $0.heard + $0.patience }
        if let index = consumers.firstIndex(where: { $0.name == consumer }) {
            consumers[index].heard = now
            consumers[index].patience = patience
        } else {
            consumers.append(ActiveConsumer(name: consumer, heard: now, patience: patience))
        }
        return consumers.first?.name == consumer
    }

    /// The active consumer, if one was heard from recently enough.
    private func activeConsumer(now: Int64) -> String? {
        consumers.first { now <= $0.heard + $0.patience }?.name
    }

    /// A settle from a consumer counts as hearing from it (one that holds its prefetch and
    /// renews its leases is alive).
    private func heard(_ consumer: String) {
        guard let index = consumers.firstIndex(where: { $0.name == consumer }) else { return }
        consumers[index].heard = WallClock.milliseconds()
    }

    /// Waits for the queue's wake-up (an active consumer left) or `end`, not for new records.
    private func standBy(after generation: UInt64, until end: ContinuousClock.Instant) async throws {
        let wakeup = self.wakeup
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await wakeup.wait(after: generation) }
            group.addTask { try? await Task.sleep(until: end) }
            await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
    }

    // MARK: Consumer priorities

    /// Whether a consumer of a higher priority could take messages now: it is in a receive, or
    /// its last receive got fewer than it asked for (so it has room and is coming back) less
    /// than a second ago. A consumer that got all it asked for is full until it asks again.
    private func outranked(_ ranked: RankedConsumer) -> Bool {
        let now = WallClock.milliseconds()
        var outranked = false
        for (other, appetite) in appetites {
            if appetite.receiving <= 0 && appetite.hungryUntil < now {
                appetites[other] = nil  // neither receiving nor hungry: forgotten
                continue
            }
            if other.priority > ranked.priority { outranked = true }
        }
        return outranked
    }

    /// A receive took what it took: `full` (as many as it asked for) leaves room to the
    /// consumers below it, which are woken to look again; fewer, and it will soon ask again.
    private func took(_ ranked: RankedConsumer, full: Bool) {
        guard appetites[ranked] != nil else { return }
        appetites[ranked]!.hungryUntil =
            full ? 0 : WallClock.milliseconds() + journal.configuration.queueRoomMilliseconds
        if full, appetites.keys.contains(where: { $0.priority < ranked.priority }) { wakeup.fire() }
    }

    // MARK: Taking messages

    private struct TakeLimits {
        var count: Int
        var bytes: Int
    }

    /// What one receive has taken so far.
    private struct Taking {
        let consumer: String
        let limits: TakeLimits
        let now: Int64
        let deadline: Int64?
        let maxInFlight: Int
        var deliveries: [QueueDelivery] = []
        var bytes = 0
        var inFlight = 0

        /// No more for this receive: its limits, or the queue's in-flight limit, are reached.
        var full: Bool {
            deliveries.count >= limits.count || bytes >= limits.bytes || inFlight >= maxInFlight
        }

        mutating func add(_ delivery: QueueDelivery) {
            deliveries.append(delivery)
            bytes += (delivery.record.key?.count ?? 0) + (delivery.record.value?.count ?? 0)
        }
    }

    /// Leases up to the limits to `consumer`: its own leases first (resume), then messages
    /// waiting to go again, oldest first, then records not read yet from a rotating source (in
    /// a prioritized queue: each source's waiting and unread messages, the first source first).
    private func take(consumer: String, limits: TakeLimits, visibility: UInt32, resume: Bool) async throws
        -> [QueueDelivery]
    {
        try await startLedgers()
        let now = WallClock.milliseconds()
        var taking = Taking(
            consumer: consumer, limits: limits, now: now, deadline: visibility == 0 ? nil : now + Int64(visibility),
            maxInFlight: Int(definition.maxInFlight))
        for index in ledgers.indices where ledgers[index] != nil {
            if ledgers[index]!.expireLeases(now: now) > 0 { touch(index) }
        }
        if resume {
            // All of them, whatever the limits: a consumer that resumes gets back everything it
            // holds in one answer (it bounds what it holds), new messages only within the limits.
            for index in ledgers.indices where ledgers[index] != nil {
                for offset in ledgers[index]!.leases(of: consumer) {
                    guard let record = try await fetch(source: index, offset: offset) else { continue }
                    let delivery = ledgers[index]!.renewLease(offset, deadline: taking.deadline)!
                    taking.add(self.delivery(index, offset, delivery, resumed: true, record))
                    touch(index)
                }
            }
        }
        try await trim(now: now)
        taking.inFlight = ledgers.reduce(0) { $0 + ($1?.leases.count ?? 0) }
        if definition.prioritized == true {
            // Strictly by priority: a source is taken from once those before it are empty.
            for index in ledgers.indices where ledgers[index] != nil {
                try await takeWaiting(index, &taking)
                while !taking.full, try await takeUnread(index, &taking) {}
            }
            return taking.deliveries
        }
        for index in ledgers.indices where ledgers[index] != nil { try await takeWaiting(index, &taking) }
        var exhausted = Set<Int>()
        var source = Int.random(in: 0..<Swift.max(1, ledgers.count))
        while !taking.full, exhausted.count < ledgers.count {
            defer { source = (source + 1) % ledgers.count }
            guard !exhausted.contains(source), ledgers[source] != nil else {
                exhausted.insert(source)
                continue
            }
            if try await !takeUnread(source, &taking) { exhausted.insert(source) }
        }
        return taking.deliveries
    }

    private func delivery(_ source: Int, _ offset: UInt64, _ delivery: UInt32, resumed: Bool, _ record: Record)
        -> QueueDelivery
    {
        QueueDelivery(
            receipt: QueueReceipt(source: UInt32(source), offset: offset, delivery: delivery),
            shard: definition.sources[source].shard, record: record, resumed: resumed)
    }

    /// The source's messages waiting to go again, oldest first, within the limits.
    private func takeWaiting(_ index: Int, _ taking: inout Taking) async throws {
        for offset in ledgers[index]!.ready(now: taking.now, orderedGroups: definition.orderedGroups) {
            guard !taking.full else { break }
            touch(index)
            let deliveries = ledgers[index]!.waiting[offset]!.deliveries
            if definition.maxDeliveries > 0 && deliveries >= definition.maxDeliveries {
                try await deadLetter(source: index, offset: offset, reason: "delivery-limit", record: nil)
                continue
            }
            guard let record = try await fetch(source: index, offset: offset) else { continue }
            let number = ledgers[index]!.leaseWaiting(offset, to: taking.consumer, deadline: taking.deadline)!
            taking.add(delivery(index, offset, number, resumed: false, record))
            taking.inFlight += 1
        }
    }

    /// The source's next record not read yet, leased when it is to be delivered now; false when
    /// the source has none.
    private func takeUnread(_ source: Int, _ taking: inout Taking) async throws -> Bool {
        guard let (offset, record) = try await nextUnread(source) else { return false }
        touch(source)
        if case .deliver(let record, let group) = try await admit(
            source: source, offset: offset, record: record, now: taking.now)
        {
            ledgers[source]!.leaseNew(offset, to: taking.consumer, deadline: taking.deadline, group: group)
            taking.add(delivery(source, offset, 1, resumed: false, record))
            taking.inFlight += 1
        }
        return true
    }

    // MARK: Length limits

    /// Drop-head: while the queue holds more ready messages (or value bytes) than its limits
    /// allow, its head, the message a receive would take next, is dead-lettered (or discarded)
    /// with reason `max-length`. Leased messages do not count, as in RabbitMQ.
    private func trim(now: Int64) async throws {
        guard let limit = definition.lengthLimit, limit.dropHead, limit.messages != nil || limit.bytes != nil else {
            return
        }
        var count: UInt64 = 0
        var bytes: UInt64 = 0
        for index in ledgers.indices where ledgers[index] != nil {
            let load = try await readyLoad(index)
            count += load.count
            bytes += load.bytes
        }
        let maxCount = limit.messages ?? .max
        let maxBytes = limit.bytes ?? .max
        var source = 0
        while count > maxCount || bytes > maxBytes, source < ledgers.count {
            guard ledgers[source] != nil else {
                source += 1
                continue
            }
            if let offset = ledgers[source]!.waiting.keys.min() {
                let size = try await deadLetter(source: source, offset: offset, reason: "max-length", record: nil)
                count -= 1
                bytes -= Swift.min(bytes, UInt64(size ?? 0))
                continue
            }
            let before = ledgers[source]!.cursor
            guard let (offset, record) = try await nextUnread(source) else {
                source += 1
                continue
            }
            touch(source)
            if let record, matches(record, source: source) {
                bytes -= Swift.min(bytes, UInt64(record.value?.count ?? 0))
                ledgers[source]!.holdNew(offset, visibleAt: now, group: nil)
                try await deadLetter(source: source, offset: offset, reason: "max-length", record: record)
            } else {
                ledgers[source]!.passOver(upTo: offset + 1)
            }
            count -= Swift.min(count, ledgers[source]!.cursor - before)
        }
    }

    /// The source's ready messages: waiting ones and those not read yet; with a limit in bytes,
    /// their value bytes too (scanning what was appended since the last count).
    private func readyLoad(_ source: Int) async throws -> (count: UInt64, bytes: UInt64) {
        let ledger = ledgers[source]!
        let shard = definition.sources[source].shard
        guard let end = try? journal.describeShard(shard).endOffset else { return (0, 0) }
        let count = UInt64(ledger.waiting.count) + (end > ledger.cursor ? end - ledger.cursor : 0)
        guard definition.lengthLimit?.bytes != nil else { return (count, 0) }
        // Sizes of records the cursor passed move to the read ones.
        var start = unreadSizesStart[source]
        while start < unreadSizes[source].count, unreadSizes[source][start].offset < ledgers[source]!.cursor {
            let (offset, size) = unreadSizes[source][start]
            readSizes[source][offset] = size
            unreadBytes[source] -= size
            start += 1
        }
        if start > 1024, start * 2 > unreadSizes[source].count {
            unreadSizes[source].removeFirst(start)
            start = 0
        }
        unreadSizesStart[source] = start
        // Records appended since.
        sizedUpTo[source] = Swift.max(sizedUpTo[source], ledgers[source]!.cursor)
        while sizedUpTo[source] < end {
            let result: ReadResult
            do {
                result = try await journal.read(shard: shard, from: sizedUpTo[source], maxBytes: 1 << 20)
            } catch let error as JournalError where error.code == .unknownShard {
                break
            }
            guard result.nextOffset > sizedUpTo[source] else { break }
            for batch in result.batches {
                guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex), !header.isControl else {
                    continue
                }
                for record in try RecordBatch.decode(batch) {
                    guard let offset = record.offset, offset >= sizedUpTo[source] else { continue }
                    let size = record.value?.count ?? 0
                    unreadSizes[source].append((offset, size))
                    unreadBytes[source] += size
                }
            }
            sizedUpTo[source] = result.nextOffset
        }
        // Waiting messages: read once before, or read again (after a restart).
        var waitingBytes = 0
        for offset in ledgers[source]!.waiting.keys {
            if let size = readSizes[source][offset] {
                waitingBytes += size
            } else if let record = try await fetch(source: source, offset: offset) {
                readSizes[source][offset] = record.value?.count ?? 0
                waitingBytes += record.value?.count ?? 0
            }
        }
        let held = ledgers[source]!.leases.count + ledgers[source]!.waiting.count
        if readSizes[source].count > 2 * held + 1024 {
            readSizes[source] = readSizes[source].filter {
                ledgers[source]!.leases[$0.key] != nil || ledgers[source]!.waiting[$0.key] != nil
            }
        }
        return (count, UInt64(Swift.max(0, unreadBytes[source] + waitingBytes)))
    }

    private enum Admission {
        case deliver(Record, group: String?)
        /// Settled, dead-lettered or left waiting: nothing to deliver now.
        case settled
    }

    /// What becomes of a record read for the first time.
    private func admit(source: Int, offset: UInt64, record: Record?, now: Int64) async throws -> Admission {
        guard let record, matches(record, source: source) else {
            ledgers[source]!.passOver(upTo: offset + 1)
            return .settled
        }
        let headers = Self.headerValues(record)
        if let ttl = headers.ttl, record.timestamp >= 0,
            record.timestamp.addingReportingOverflow(ttl).partialValue <= now
        {
            ledgers[source]!.holdNew(offset, visibleAt: now, group: nil)
            try await deadLetter(source: source, offset: offset, reason: "expired", record: record)
            return .settled
        }
        let group =
            definition.orderedGroups ? headers.group ?? record.key.map { String(decoding: $0, as: UTF8.self) } : nil
        if let at = headers.deliverAt, at > now {
            ledgers[source]!.holdNew(offset, visibleAt: at, group: group)
            return .settled
        }
        if let group, ledgers[source]!.groupIsBusy(group) {
            ledgers[source]!.holdNew(offset, visibleAt: now, group: group)
            return .settled
        }
        return .deliver(record, group: group)
    }

    private func matches(_ record: Record, source: Int) -> Bool {
        guard let first = definition.filters.first else { return true }
        let root = definition.sources[source].subjectRoot
        let subject: String =
            if let root { first.subject(ofKey: record.key, root: root) } else {
                record.key.map { String(decoding: $0, as: UTF8.self) } ?? ""
            }
        return definition.filters.contains { $0.matches(subject) }
    }

    private static func headerValues(_ record: Record) -> (deliverAt: Int64?, ttl: Int64?, group: String?) {
        var result: (deliverAt: Int64?, ttl: Int64?, group: String?) = (nil, nil, nil)
        for header in record.headers {
            guard let value = header.value else { continue }
            switch header.key {
            case QueueDefinition.deliverAtHeader: result.deliverAt = Int64(String(decoding: value, as: UTF8.self))
            case QueueDefinition.ttlHeader: result.ttl = Int64(String(decoding: value, as: UTF8.self))
            case QueueDefinition.groupHeader: result.group = String(decoding: value, as: UTF8.self)
            default: break
            }
        }
        return result
    }

    /// The next record past the source's cursor, reading ahead from the journal when needed.
    /// Dead-letters (or discards) the expired records at the head of each source's unread
    /// records, stopping at the first that is not expired (RabbitMQ expires at a queue's head
    /// too), so a queue nobody reads still moves what expired to its dead-letter shard. Records
    /// no filter matches on the way are passed over as a receive would.
    private func expireHead(now: Int64) async throws {
        for source in ledgers.indices where ledgers[source] != nil {
            while true {
                if lookahead[source].isEmpty {
                    guard try await readAhead(source) else { break }
                }
                let next = lookahead[source][0]
                if next.offset < ledgers[source]!.cursor {
                    lookahead[source].removeFirst()
                    continue
                }
                if let record = next.record, matches(record, source: source) {
                    guard let ttl = Self.headerValues(record).ttl, record.timestamp >= 0,
                        record.timestamp.addingReportingOverflow(ttl).partialValue <= now
                    else { break }
                }
                lookahead[source].removeFirst()
                touch(source)
                _ = try await admit(source: source, offset: next.offset, record: next.record, now: now)
            }
        }
    }

    private func nextUnread(_ source: Int) async throws -> (UInt64, Record?)? {
        while true {
            if lookahead[source].isEmpty {
                guard try await readAhead(source) else { return nil }
            }
            let next = lookahead[source].removeFirst()
            if next.offset >= ledgers[source]!.cursor { return next }
        }
    }

    /// Fills the source's lookahead from the journal; false when there is nothing to read.
    private func readAhead(_ source: Int) async throws -> Bool {
        let shard = definition.sources[source].shard
        let from = Swift.max(readPosition[source], ledgers[source]!.cursor)
        let result: ReadResult
        do {
            result = try await journal.read(shard: shard, from: from, maxBytes: 256 << 10)
        } catch let error as JournalError where error.code == .unknownShard {
            return false
        }
        if result.startOffset > ledgers[source]!.cursor {
            ledgers[source]!.skip(below: result.startOffset)
            touch(source)
        }
        var entries: [(offset: UInt64, record: Record?)] = []
        for batch in result.batches {
            guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex) else { continue }
            let records = header.isControl ? [] : try RecordBatch.decode(batch)
            var byOffset: [UInt64: Record] = [:]
            for record in records { if let offset = record.offset { byOffset[offset] = record } }
            for offset in UInt64(header.baseOffset)...UInt64(header.lastOffset) where offset >= from {
                entries.append((offset, byOffset[offset]))
            }
        }
        readPosition[source] = result.nextOffset
        lookahead[source] = entries
        return !entries.isEmpty
    }

    /// The record at `offset`, read again (a redelivery); nil when retention removed it.
    private func fetch(source: Int, offset: UInt64) async throws -> Record? {
        let result = try await journal.read(shard: definition.sources[source].shard, from: offset, maxBytes: 1)
        for batch in result.batches {
            if let record = try RecordBatch.decode(batch).first(where: { $0.offset == offset }) { return record }
        }
        if ledgers[source]!.settle(offset) {
            ledgers[source]!.lostToRetention += 1
            touch(source)
        }
        return nil
    }

    /// Moves the message to the dead-letter shard (or discards it when there is none) and
    /// settles it; returns its value bytes (nil: retention had removed it).
    @discardableResult
    private func deadLetter(source: Int, offset: UInt64, reason: String, record: Record?) async throws -> Int? {
        var fetched = record
        if fetched == nil { fetched = try await fetch(source: source, offset: offset) }
        guard let record = fetched else { return nil }
        if let target = definition.deadLetterShard {
            var letter = record
            letter.offset = nil
            // A dead letter is kept, not expired or held back again in the dead-letter shard.
            letter.headers.removeAll {
                $0.key == QueueDefinition.ttlHeader || $0.key == QueueDefinition.deliverAtHeader
            }
            letter.headers += [
                RecordHeader(key: "strata.dead-letter.queue", value: Array(name.utf8)),
                RecordHeader(key: "strata.dead-letter.reason", value: Array(reason.utf8)),
                RecordHeader(key: "strata.dead-letter.shard", value: Array(definition.sources[source].shard.utf8)),
                RecordHeader(key: "strata.dead-letter.offset", value: Array(String(offset).utf8)),
                RecordHeader(
                    key: "strata.dead-letter.deliveries",
                    value: Array(String(ledgers[source]!.deliveries(of: offset)).utf8)),
            ]
            _ = try await journal.append(shard: target, batch: RecordBatch.encode([letter]))
            ledgers[source]!.deadLettered += 1
        } else {
            ledgers[source]!.discarded += 1
        }
        ledgers[source]!.settle(offset)
        touch(source)
        return record.value?.count ?? 0
    }

    /// Sources without a ledger get one, at their end or their start as declared.
    private func startLedgers() async throws {
        for (index, source) in definition.sources.enumerated() where ledgers[index] == nil {
            guard let info = try? journal.describeShard(source.shard) else { continue }
            let start = source.fromStart ? info.startOffset : info.endOffset
            ledgers[index] = QueueLedger(startingAt: start)
            readPosition[index] = start
            touch(index)
        }
    }

    // MARK: Storage and waiting

    private func touch(_ source: Int) {
        dirty.insert(source)
        changes += 1
    }

    /// Stores every ledger changed so far, or waits for the store that does.
    private func storeChanges() async throws {
        let target = changes
        while storedChanges < target {
            guard !closed else { throw JournalError(.unknownQueue, "queue \(name) was deleted") }
            if storing {
                await withCheckedContinuation { storeWaiters.append($0) }
                continue
            }
            storing = true
            let upTo = changes
            let sources = dirty
            dirty.removeAll()
            let records = sources.compactMap { index in
                ledgers[index].map { (StorageKeys.queueLedger(name, source: UInt32(index)), $0.encoded()) }
            }
            defer {
                storing = false
                let waiters = storeWaiters
                storeWaiters.removeAll()
                waiters.forEach { $0.resume() }
            }
            do {
                try await journal.blocking { [journal] in
                    let batch = RocksDB.WriteBatch()
                    for (key, value) in records { batch.put(key, value) }
                    try journal.db.write(batch, durable: true)
                }
            } catch {
                dirty.formUnion(sources)
                throw error
            }
            storedChanges = upTo
        }
    }

    /// Runs `body` with no other change of this queue in between.
    private func exclusive<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { queued.append($0) }
        } else {
            busy = true
        }
        defer {
            if queued.isEmpty { busy = false } else { queued.removeFirst().resume() }
        }
        guard !closed else { throw JournalError(.unknownQueue, "queue \(name) was deleted") }
        return try await body()
    }

    /// Waits until a source grows, a message is settled back, a timer of the ledger is due, or
    /// `end`.
    private func waitForWork(after generation: UInt64, until end: ContinuousClock.Instant) async throws {
        var until = end
        let now = WallClock.milliseconds()
        if let timer = ledgers.compactMap({ $0?.nextTimer() }).min() {
            until = Swift.min(until, ContinuousClock.now + .milliseconds(Swift.max(0, timer - now) + 1))
        }
        let watched = definition.sources.indices.compactMap { index -> (String, UInt64)? in
            guard let ledger = ledgers[index], lookahead[index].isEmpty else { return nil }
            return (definition.sources[index].shard, Swift.max(readPosition[index], ledger.cursor))
        }
        let journal = self.journal
        let wakeup = self.wakeup
        let sleepUntil = until
        await withTaskGroup(of: Void.self) { group in
            for (shard, offset) in watched {
                group.addTask { try? await journal.waitForData(shard: shard, beyond: offset, timeout: nil) }
            }
            group.addTask { await wakeup.wait(after: generation) }
            group.addTask { try? await Task.sleep(until: sleepUntil) }
            await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
    }
}

/// Wakes a queue's waiting receives when a message comes back to it.
final class QueueWakeup: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var cancelled: Set<Int> = []
        var next = 0
    }

    private let state = Mutex(State())

    var generation: UInt64 { state.withLock { $0.generation } }

    func fire() {
        let waiters = state.withLock { state in
            state.generation += 1
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once `fire` is called after `generation` was read, or the task is cancelled.
    func wait(after generation: UInt64) async {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let parked = state.withLock { state in
                    guard state.generation == generation, state.cancelled.remove(id) == nil else { return false }
                    state.waiters[id] = continuation
                    return true
                }
                if !parked { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { state in
                guard let continuation = state.waiters.removeValue(forKey: id) else {
                    state.cancelled.insert(id)
                    return nil as CheckedContinuation<Void, Never>?
                }
                return continuation
            }
            continuation?.resume()
        }
        state.withLock { _ = $0.cancelled.remove(id) }
    }
}
