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
        try Self.checkQueueName(name)
        guard max >= 0, !consumer.isEmpty else {
            throw JournalError(
                .invalidArgument, "a receive names its consumer and a count of messages (0: expire only)")
        }
        let queue = try await queueActor(name, creating: nil)
        return try await queue.receive(
            consumer: consumer, max: max, maxBytes: maxBytes, visibility: visibilityMilliseconds, resume: resume,
            wait: wait)
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

    /// Every lease `consumer` holds goes back to the queue for others (its session ended).
    @discardableResult
    public func releaseConsumer(queue name: String, consumer: String) async throws -> Int {
        try Self.checkQueueName(name)
        let queue = try await queueActor(name, creating: nil)
        return try await queue.release(consumer: consumer)
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

    init(journal: Journal, name: String, definition: QueueDefinition, ledgers: [QueueLedger?], stored: Bool) {
        self.journal = journal
        self.name = name
        self.definition = definition
        self.ledgers = ledgers + Array(repeating: nil, count: max(0, definition.sources.count - ledgers.count))
        self.stored = stored
        lookahead = Array(repeating: [], count: definition.sources.count)
        readPosition = self.ledgers.map { $0?.cursor ?? 0 }
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
        for (index, source) in definition.sources.enumerated() {
            let ledger = ledgers[index]
            let end = (try? journal.describeShard(source.shard).endOffset) ?? 0
            let cursor = ledger?.cursor ?? end
            sources.append(.init(shard: source.shard, floor: ledger?.floor ?? cursor, cursor: cursor, end: end))
            depth +=
                UInt64((ledger?.leases.count ?? 0) + (ledger?.waiting.count ?? 0)) + (end > cursor ? end - cursor : 0)
        }
        let now = WallClock.milliseconds()
        let present = ledgers.compactMap { $0 }
        return QueueStatus(
            name: name, sources: sources, inFlight: present.reduce(0) { $0 + $1.leases.count },
            waiting: present.reduce(0) { $0 + $1.waiting.count },
            delayed: present.reduce(0) { $0 + $1.waiting.values.filter { $0.visibleAt > now }.count }, depth: depth,
            deadLettered: present.reduce(0) { $0 + $1.deadLettered },
            discarded: present.reduce(0) { $0 + $1.discarded },
            lostToRetention: present.reduce(0) { $0 + $1.lostToRetention })
    }

    func receive(consumer: String, max: Int, maxBytes: Int, visibility: UInt32, resume: Bool, wait: Duration)
        async throws -> [QueueDelivery]
    {
        if max == 0 {
            // Leases nothing: expires what is due at the head of each source.
            try await exclusive {
                try await startLedgers()
                try await expireHead(now: WallClock.milliseconds())
            }
            try await storeChanges()
            return []
        }
        let waitEnd = ContinuousClock.now + wait
        let limits = TakeLimits(count: max, bytes: maxBytes)
        while true {
            let generation = wakeup.generation
            let taken = try await exclusive {
                try await take(consumer: consumer, limits: limits, visibility: visibility, resume: resume)
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

    func release(consumer: String) async throws -> Int {
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

    // MARK: Taking messages

    private struct TakeLimits {
        var count: Int
        var bytes: Int
    }

    /// Leases up to the limits to `consumer`: its own leases first (resume), then messages
    /// waiting to go again, oldest first, then records not read yet from a rotating source.
    private func take(consumer: String, limits: TakeLimits, visibility: UInt32, resume: Bool) async throws
        -> [QueueDelivery]
    {
        try await startLedgers()
        let now = WallClock.milliseconds()
        let deadline: Int64? = visibility == 0 ? nil : now + Int64(visibility)
        var deliveries: [QueueDelivery] = []
        var bytes = 0
        var full: Bool { deliveries.count >= limits.count || bytes >= limits.bytes }
        func add(_ source: Int, _ offset: UInt64, _ delivery: UInt32, _ resumed: Bool, _ record: Record) {
            let receipt = QueueReceipt(source: UInt32(source), offset: offset, delivery: delivery)
            deliveries.append(
                QueueDelivery(
                    receipt: receipt, shard: definition.sources[source].shard, record: record, resumed: resumed))
            bytes += (record.key?.count ?? 0) + (record.value?.count ?? 0)
        }
        for index in ledgers.indices where ledgers[index] != nil {
            if ledgers[index]!.expireLeases(now: now) > 0 { touch(index) }
        }
        if resume {
            // All of them, whatever the limits: a consumer that resumes gets back everything it
            // holds in one answer (it bounds what it holds), new messages only within the limits.
            for index in ledgers.indices where ledgers[index] != nil {
                for offset in ledgers[index]!.leases(of: consumer) {
                    guard let record = try await fetch(source: index, offset: offset) else { continue }
                    add(index, offset, ledgers[index]!.renewLease(offset, deadline: deadline)!, true, record)
                    touch(index)
                }
            }
        }
        var inFlight = ledgers.reduce(0) { $0 + ($1?.leases.count ?? 0) }
        let limit = Int(definition.maxInFlight)
        for index in ledgers.indices where ledgers[index] != nil {
            for offset in ledgers[index]!.ready(now: now, orderedGroups: definition.orderedGroups) {
                guard !full, inFlight < limit else { break }
                touch(index)
                let deliveries = ledgers[index]!.waiting[offset]!.deliveries
                if definition.maxDeliveries > 0 && deliveries >= definition.maxDeliveries {
                    try await deadLetter(source: index, offset: offset, reason: "delivery-limit", record: nil)
                    continue
                }
                guard let record = try await fetch(source: index, offset: offset) else { continue }
                add(
                    index, offset, ledgers[index]!.leaseWaiting(offset, to: consumer, deadline: deadline)!, false,
                    record)
                inFlight += 1
            }
        }
        var exhausted = Set<Int>()
        var source = Int.random(in: 0..<Swift.max(1, ledgers.count))
        while !full, inFlight < limit, exhausted.count < ledgers.count {
            defer { source = (source + 1) % ledgers.count }
            guard !exhausted.contains(source), ledgers[source] != nil else {
                exhausted.insert(source)
                continue
            }
            guard let (offset, record) = try await nextUnread(source) else {
                exhausted.insert(source)
                continue
            }
            touch(source)
            if case .deliver(let record, let group) = try await admit(
                source: source, offset: offset, record: record, now: now)
            {
                ledgers[source]!.leaseNew(offset, to: consumer, deadline: deadline, group: group)
                add(source, offset, 1, false, record)
                inFlight += 1
            }
        }
        return deliveries
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
    /// settles it.
    private func deadLetter(source: Int, offset: UInt64, reason: String, record: Record?) async throws {
        var fetched = record
        if fetched == nil { fetched = try await fetch(source: source, offset: offset) }
        guard let record = fetched else { return }
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
