import Logging
import StrataClient
import StrataJournal
import StrataTopics
import Synchronization

/// A shared-subscription message a session holds: the queue delivery it settles.
struct MQTTShareLease: Sendable, Hashable, Codable {
    /// The message itself, whichever delivery of it this is.
    struct Key: Sendable, Hashable {
        var queue: String
        var source: UInt32
        var offset: UInt64
    }

    var queue: String
    var source: UInt32
    var offset: UInt64
    var delivery: UInt32

    init(queue: String, receipt: QueueReceipt) {
        self.queue = queue
        source = receipt.source
        offset = receipt.offset
        delivery = receipt.delivery
    }

    var receipt: QueueReceipt { QueueReceipt(source: source, offset: offset, delivery: delivery) }
    var key: Key { Key(queue: queue, source: source, offset: offset) }
}

/// What a session holds of shared subscriptions: its shared subscriptions' queues and its
/// leases, each with its delivery QoS and whether it was sent (in flight) rather than waiting.
/// A session that ends gives them back (`MQTTGateway.endShares`).
struct MQTTHeldShares: Sendable {
    typealias Held = (lease: MQTTShareLease, qos: UInt8, sent: Bool)
    var queues: Set<String>
    var leases: [Held]

    var isEmpty: Bool { queues.isEmpty && leases.isEmpty }
}

/// Settles shared-subscription leases in their queues. Settlements are batched per queue and
/// kind, with one journal request per batch and one batch at a time, so a member acknowledging
/// thousands of messages a second costs a few journal writes. An acknowledgement the journal
/// does not take is logged; its message comes back (at least once) when the session resumes
/// or its lease runs out.
final class MQTTShareSettler: Sendable {
    private struct Batch: Hashable {
        var queue: String
        var settlement: QueueSettlement
    }

    private struct State {
        var pending: [Batch: [QueueReceipt]] = [:]
        var running = false
        var idle: [CheckedContinuation<Void, Never>] = []
    }

    private let journal: any JournalClient
    private let consumer: String
    private let logger: Logger
    private let state = Mutex(State())

    init(journal: any JournalClient, consumer: String, logger: Logger) {
        self.journal = journal
        self.consumer = consumer
        self.logger = logger
    }

    func settle(_ leases: [MQTTShareLease], as settlement: QueueSettlement) {
        guard !leases.isEmpty else { return }
        let start = state.withLock { state -> Bool in
            for lease in leases {
                state.pending[Batch(queue: lease.queue, settlement: settlement), default: []].append(lease.receipt)
            }
            defer { state.running = true }
            return !state.running
        }
        if start { Task { await drain() } }
    }

    /// Returns once every settlement asked for so far was answered.
    func flush() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard state.running else { return true }
                state.idle.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }

    private func drain() async {
        while true {
            let (batches, idle) = state.withLock {
                state -> ([Batch: [QueueReceipt]], [CheckedContinuation<Void, Never>]) in
                defer { state.pending = [:] }
                guard state.pending.isEmpty else { return (state.pending, []) }
                state.running = false
                defer { state.idle = [] }
                return ([:], state.idle)
            }
            guard !batches.isEmpty else {
                idle.forEach { $0.resume() }
                return
            }
            for (batch, receipts) in batches {
                do {
                    _ = try await journal.settle(
                        queue: batch.queue, consumer: consumer, receipts: receipts, as: batch.settlement)
                } catch {
                    logger.warning(
                        "mqtt shared subscription settlement not stored",
                        metadata: [
                            "mqtt.client": "\(consumer)", "mqtt.queue": "\(batch.queue)",
                            "mqtt.settlement": "\(batch.settlement)", "mqtt.messages": "\(receipts.count)",
                            "error": "\(error)",
                        ])
                }
            }
        }
    }
}

/// One connection's shared-subscription pullers, one per shared subscription it has, and the
/// settler of their leases. A puller runs while its subscription does; whether it goes on is
/// decided under the same lock that `start` takes, so a filter subscribed again just as its
/// puller ends always has one.
final class MQTTSharePullers: Sendable {
    private let gateway: MQTTGateway
    private let session: MQTTSession
    /// Filters with a puller, and the renewal of the session's leases once there is one (a
    /// connection without shared subscriptions costs neither a task nor a settler).
    private let running = Mutex<Set<String>>([])
    private let renewing = Mutex<Task<Void, Never>?>(nil)

    init(gateway: MQTTGateway, session: MQTTSession) {
        self.gateway = gateway
        self.session = session
    }

    /// The settler of the client's leases (one per client id while it is connected here).
    var settler: MQTTShareSettler { gateway.shareSettler(for: session.clientID) }

    /// Starts pulling for a shared subscription of the session unless a puller runs for it.
    /// `resume`: the session came back (its queue's leases to it are delivered first).
    func start(_ filter: String, resume: Bool) {
        let new = running.withLock { $0.insert(filter).inserted }
        guard new else { return }
        let settler = self.settler
        if !gateway.holdsShares(session) {
            renewing.withLock { renewing in
                guard renewing == nil else { return }
                renewing = Task { [gateway, session] in await gateway.renewShares(of: session, settler: settler) }
            }
        }
        Task { [gateway, session] in
            await gateway.pullShare(filter, for: session, resume: resume, settler: settler) {
                self.running.withLock { running in
                    guard session.subscription(filter) == nil || session.isClosed else { return true }
                    running.remove(filter)
                    return false
                }
            }
        }
    }

    /// The connection ended: lease renewal stops (the pullers end with the session).
    func stop() {
        renewing.withLock { $0 }?.cancel()
    }
}

/// Shared subscriptions (`$share/GROUP/FILTER`) are queues in the journal (docs/queues.md), one
/// per group and filter, over every shard the router follows that can hold a matching message.
/// Each member is a consumer named by its client id, whichever gateway it is connected to, so
/// the journal alone decides which member gets a message: once per group, across gateway
/// processes, kept while every member is away. Messages a member has not acknowledged stay
/// leased to it while its session lives and go out again, DUP set, when it resumes; when the
/// session ends they go back to the group — a QoS 2 one only with `sharedRedispatch`
/// ([MQTT-4.8.2-5]), which also returns them when the connection drops (docs/mqtt.md).
extension MQTTGateway {
    /// The most messages of one shared subscription a member holds unacknowledged (also bounded
    /// by its receive maximum): what it has not taken yet stays available to the other members.
    static let shareWindow = 64
    /// The most messages one receive takes, so that members waiting together share a burst.
    static let shareBatch = 32
    /// Lease of a message to a member whose session ends with its connection (or with
    /// `sharedRedispatch`), renewed while connected: a gateway that dies does not keep it.
    static let shareVisibilityMilliseconds: UInt32 = 60_000
    static let shareRenewal: Duration = .seconds(20)
    /// How long one receive waits for a message before the puller looks around again.
    static let shareWait: Duration = .seconds(5)
    /// Which sessions are members of which shared subscription: key `<queue> NUL <client id>`,
    /// value the holding gateway's id for a session that ends with its connection, empty for a
    /// persistent one.
    static let shareMembersNamespace = "mqtt.share-members"

    /// The queue of a shared subscription (nil for any other filter).
    func shareQueue(_ filter: String) -> String? {
        MQTTTopic.sharedSubscription(filter).map { "mqtt/\(configuration.tenant)/$share/\($0.group)/\($0.filter)" }
    }

    /// Whether a session's shared messages stay leased to it until it settles them (a persistent
    /// session without `sharedRedispatch`) rather than for a renewed visibility timeout.
    func holdsShares(_ session: MQTTSession) -> Bool {
        session.persistent && !configuration.sharedRedispatch
    }

    /// Whether `filter` can match the MQTT topics a registry topic with MQTT root `root` holds
    /// (the root and the topics below it): by first level, the filter doing the rest.
    private static func filter(_ filter: String, mayMatchBelow root: String) -> Bool {
        func first(_ text: String) -> Substring? {
            text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first
        }
        let level = first(filter)
        return level == "+" || level == "#" || level == first(root)
    }

    /// The shards that can hold messages `filter` matches: every bucket, and the partitions of
    /// the registry topics its first level can name.
    private func shareSources(_ filter: String, in streams: Streams) -> [(shard: String, root: String?)] {
        var sources: [(String, String?)] = (0..<configuration.buckets).map { (shardName(bucket: $0), nil) }
        for (name, topic) in streams.topics.sorted(by: { $0.key < $1.key }) {
            // A topic's records are MQTT topics at or below its root (its name or its prefix).
            let root = streams.roots.root(of: name)
            guard Self.filter(filter, mayMatchBelow: root) else { continue }
            for partition in 0..<topic.partitions { sources.append((TopicRegistry.shardName(name, partition), root)) }
        }
        return sources
    }

    /// Declares a shared subscription's queue with the shards followed now. A source new to an
    /// existing queue (a topic created since) is read from its start; a new queue, or one whose
    /// group had no member left (`member` is the first), starts at the ends.
    func declareShare(_ filter: String, firstMember: Bool = false, newSourcesFromStart: Bool = true) async throws {
        guard let queue = shareQueue(filter), let inner = MQTTTopic.sharedSubscription(filter)?.filter else { return }
        let sources = streams.withLock { streams in
            streams.shares[queue] = filter
            return shareSources(inner, in: streams)
        }
        var existing: QueueStatus?
        do {
            existing = try await journal.describeQueues(queue).first
        } catch let error as JournalError where error.code == .unknownQueue {
            existing = nil
        }
        if existing != nil && firstMember {
            // MQTT: a shared subscription exists while a session has it; a group formed again
            // gets what is published from now on, not what waited since its last member left.
            do {
                try await journal.deleteQueue(queue)
            } catch let error as JournalError where error.code == .unknownQueue {
                // Deleted by another gateway meanwhile.
            }
            existing = nil
        }
        let known = Set(existing?.sources.map(\.shard) ?? [])
        let definition = QueueDefinition(
            sources: sources.map {
                .init(
                    shard: $0.shard, subjectRoot: $0.root,
                    fromStart: newSourcesFromStart && existing != nil && !known.contains($0.shard))
            },
            filters: [.mqtt(inner)])
        _ = try await journal.declareQueue(queue, definition: definition)
    }

    /// Declares again the shared queues this gateway declared that can hold messages of a
    /// registry topic the router began to follow (created or grown since).
    /// `fromStart` false: the topic's MQTT root changed (`strata.mqtt.prefix`), and every shared
    /// queue is declared again — the ones that can read it now take it from its end (its old
    /// records were not published under the new root), the others get its new subject root.
    func redeclareShares(for topic: String, fromStart: Bool) async {
        let filters = streams.withLock { streams in
            streams.shares.values.filter { filter in
                !fromStart
                    || Self.filter(
                        MQTTTopic.sharedSubscription(filter)?.filter ?? "", mayMatchBelow: streams.roots.root(of: topic)
                    )
            }
        }
        for filter in filters {
            do {
                try await declareShare(filter, newSourcesFromStart: fromStart)
            } catch {
                logger.warning(
                    "mqtt shared subscription queue not extended to a new topic",
                    metadata: ["mqtt.filter": "\(filter)", "topic.name": "\(topic)", "error": "\(error)"])
            }
        }
    }

    /// Records a session as a member of a shared subscription; with `scanning`, returns whether
    /// it is the only live one (the group forms anew). A member is live while its session is
    /// persistent, or while the gateway holding it is.
    @discardableResult
    func joinShare(_ filter: String, of session: MQTTSession, scanning: Bool = true) async throws -> Bool {
        guard let queue = shareQueue(filter) else { return false }
        let members = members.withLock { $0 }
        let me = members.map { String($0.me.id) } ?? ""
        let prefix = Array((queue + "\u{0}").utf8)
        // Stored before the others are looked at: of two members joining at once, at least
        // one sees the other.
        try await journal.put(
            namespace: Self.shareMembersNamespace, key: prefix + Array(session.clientID.utf8),
            value: session.persistent ? [] : Array(me.utf8))
        guard scanning else { return false }
        let live = Set((members?.live ?? []).map { String($0.id) }).union([me])
        let others = try await journal.scan(namespace: Self.shareMembersNamespace, prefix: prefix).filter { pair in
            let client = String(decoding: pair.key.dropFirst(prefix.count), as: UTF8.self)
            let holder = String(decoding: pair.value, as: UTF8.self)
            return client != session.clientID && (holder.isEmpty || live.contains(holder))
        }
        return others.isEmpty
    }

    /// A SUBSCRIBE to a shared subscription: the session joins its group and the group's queue
    /// is declared (anew when the session is its only live member and did not have it). A
    /// session that did not have the subscription leaves again when the declaration fails.
    func joinAndDeclareShare(_ filter: String, of session: MQTTSession) async throws {
        let had = session.subscription(filter) != nil
        let first = try await joinShare(filter, of: session)
        do {
            try await declareShare(filter, firstMember: first && !had)
        } catch {
            if !had, let queue = shareQueue(filter) { await leaveShare(queue, clientID: session.clientID) }
            throw error
        }
    }

    func leaveShare(_ queue: String, clientID: String) async {
        try? await journal.delete(
            namespace: Self.shareMembersNamespace, key: Array((queue + "\u{0}" + clientID).utf8))
    }

    /// Takes a shared subscription's messages for `session` from its queue while the session has
    /// the subscription, at most `shareWindow` unacknowledged at a time. `resume`: the session
    /// came back, and what its queue still leases to it is delivered first (DUP=1).
    func pullShare(
        _ filter: String, for session: MQTTSession, resume: Bool, settler: MQTTShareSettler,
        goOn: () -> Bool
    ) async {
        guard let queue = shareQueue(filter) else { return }
        if resume {
            // The queue reads the topics created while the session was away, from their start;
            // acknowledgements an earlier connection of the client left land before the queue
            // hands its leases over again.
            do {
                try await declareShare(filter)
                try await joinShare(filter, of: session, scanning: false)
            } catch {
                logger.warning(
                    "mqtt shared subscription queue not declared on resume",
                    metadata: ["mqtt.client": "\(session.clientID)", "mqtt.queue": "\(queue)", "error": "\(error)"])
            }
            await settler.flush()
        }
        let window = max(1, min(session.receiveMaximum, Self.shareWindow))
        let visibility = holdsShares(session) ? 0 : Self.shareVisibilityMilliseconds
        var resuming = resume
        var backoff: Duration = .milliseconds(100)
        while !Task.isCancelled, goOn() {
            // A resume takes back everything the session holds, whatever its window says (its
            // restored messages wait for it), then only what the window leaves room for.
            let room = resuming ? window : await session.waitForShareRoom(queue, window: window)
            guard room > 0, goOn() else { break }
            do {
                let deliveries = try await journal.receive(
                    queue: queue, consumer: session.clientID, max: min(room, Self.shareBatch), maxBytes: 1 << 20,
                    visibilityMilliseconds: visibility, resume: resuming, wait: resuming ? .zero : Self.shareWait)
                handOut(deliveries, of: filter, queue: queue, to: session, settler: settler)
                if resuming { session.dropUnconfirmed(queue) }
                resuming = false
                backoff = .milliseconds(100)
            } catch let error as JournalError where error.code == .unknownQueue {
                // Deleted meanwhile (a group formed anew elsewhere, an operator): declared again.
                try? await declareShare(filter)
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "mqtt shared subscription receive failed",
                    metadata: ["mqtt.client": "\(session.clientID)", "mqtt.queue": "\(queue)", "error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Hands received messages to the session — or, when it closed meanwhile, to the session of
    /// the same client that replaced it here. Messages that went out at QoS 0 or cannot be
    /// delivered to the client are acknowledged; those never sent go back to the group.
    private func handOut(
        _ deliveries: [QueueDelivery], of filter: String, queue: String, to session: MQTTSession,
        settler: MQTTShareSettler
    ) {
        var done: [MQTTShareLease] = []
        var unsent: [MQTTShareLease] = []
        let inner = MQTTTopic.sharedSubscription(filter)?.filter ?? filter
        var roots: [String: String?] = [:]  // per source shard, looked up once per receive
        for delivery in deliveries {
            let lease = MQTTShareLease(queue: queue, receipt: delivery.receipt)
            let root =
                roots[delivery.shard]
                ?? {
                    let root = mqttRoot(of: TopicRegistry.partition(ofShard: delivery.shard)?.topic)
                    roots[delivery.shard] = .some(root)
                    return root
                }()
            let message = MQTTMessage(record: delivery.record, root: root)
            // The queue matched the record under the subject root it was declared with; a root
            // changed since (`strata.mqtt.prefix`) can put it on a topic the filter does not match.
            guard MQTTTopic.matches(filter: inner, topic: message.topic) else {
                done.append(lease)
                continue
            }
            var outcome = MQTTSession.ShareOutcome.closed
            for target in [session, successor(of: session)].compactMap({ $0 }) {
                guard let subscription = target.subscription(filter) else { continue }
                outcome = target.deliverShared(
                    message, qos: min(message.qos, subscription.qos),
                    identifiers: subscription.identifier.map { [$0] } ?? [], lease: lease, dup: delivery.resumed)
                if outcome != .closed { break }
            }
            switch outcome {
            case .held: break
            case .done: done.append(lease)
            // One the session held before (resumed) stays leased to it: the client may have it.
            case .closed: if !delivery.resumed { unsent.append(lease) }
            }
        }
        settler.settle(done, as: .ack)
        settler.settle(unsent, as: .requeue(delayMilliseconds: 0))
    }

    /// The session registered now for the client of `session`, when it is another one.
    private func successor(of session: MQTTSession) -> MQTTSession? {
        registry.withLock { registry in
            registry.sessions[session.clientID].flatMap { $0 === session ? nil : $0 }
        }
    }

    /// Renews the leases of a session whose shared messages are leased for a visibility
    /// timeout, every `shareRenewal`, while it is connected.
    func renewShares(of session: MQTTSession, settler: MQTTShareSettler) async {
        guard !holdsShares(session) else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.shareRenewal)
            guard !Task.isCancelled, !session.isClosed else { return }
            settler.settle(
                session.shareLeases.map(\.lease), as: .extend(visibilityMilliseconds: Self.shareVisibilityMilliseconds))
        }
    }

    /// What a session's shared subscriptions do when its connection ended. `sessionEnded`: the
    /// session is gone (not persistent, expiry 0, replaced by a clean start). Its unacknowledged
    /// messages go back to the group when the session ended — a QoS 2 one that was sent is
    /// dropped instead unless `sharedRedispatch` ([MQTT-4.8.2-5]) — and with `sharedRedispatch`
    /// also when only the connection ended.
    func endShares(clientID: String, _ held: MQTTHeldShares, sessionEnded: Bool, settler: MQTTShareSettler) async {
        guard !held.isEmpty else { return }
        let (queues, leases) = (held.queues, held.leases)
        if sessionEnded || configuration.sharedRedispatch {
            if sessionEnded && !configuration.sharedRedispatch {
                let dropped = leases.filter { $0.sent && $0.qos == 2 }.map(\.lease)
                if !dropped.isEmpty {
                    MQTTMetrics.sharedDropped.increment(by: dropped.count)
                    logger.info(
                        "mqtt shared QoS 2 messages of an ended session not sent to another member",
                        metadata: ["mqtt.client": "\(clientID)", "mqtt.messages": "\(dropped.count)"])
                }
                settler.settle(dropped, as: .ack)
            }
            await settler.flush()
            for queue in queues.union(leases.map(\.lease.queue)) {
                do {
                    _ = try await journal.releaseConsumer(queue: queue, consumer: clientID)
                } catch let error as JournalError where error.code == .unknownQueue {
                    continue
                } catch {
                    logger.warning(
                        "mqtt shared subscription messages not released to the group",
                        metadata: ["mqtt.client": "\(clientID)", "mqtt.queue": "\(queue)", "error": "\(error)"])
                }
            }
        } else {
            await settler.flush()
        }
        if sessionEnded {
            for queue in queues { await leaveShare(queue, clientID: clientID) }
        }
    }

    /// The settler of a client's leases, one per client id while it has connections here, so
    /// that a connection replacing another settles after the acknowledgements the other left.
    func shareSettler(for clientID: String) -> MQTTShareSettler {
        registry.withLock { registry in
            if let settler = registry.settlers[clientID] { return settler }
            let settler = MQTTShareSettler(journal: journal, consumer: clientID, logger: logger)
            registry.settlers[clientID] = settler
            return settler
        }
    }

    /// Waits for the client's settlements in flight, if it has a settler here (a connection
    /// without shared subscriptions never made one).
    func flushShareSettler(_ clientID: String) async {
        await registry.withLock { $0.settlers[clientID] }?.flush()
    }

    /// Forgets a client's settler once no session of it is registered here.
    func forgetShareSettler(_ clientID: String) {
        registry.withLock { registry in
            if registry.sessions[clientID] == nil { registry.settlers[clientID] = nil }
        }
    }

    /// The shared subscriptions' queues among `subscriptions`.
    func shareQueues(_ subscriptions: [MQTTSession.Subscription]) -> Set<String> {
        Set(subscriptions.compactMap { shareQueue($0.filter) })
    }

    /// What a connected session holds of shared subscriptions.
    func heldShares(of session: MQTTSession) -> MQTTHeldShares {
        MQTTHeldShares(queues: shareQueues(session.subscriptions), leases: session.shareLeases)
    }

    /// What a stored session held: the leases of its in-flight messages (its waiting ones are
    /// not in the record; the queue still leases them to it).
    func heldShares(of record: MQTTSessionRecord) -> MQTTHeldShares {
        MQTTHeldShares(
            queues: shareQueues(record.subscriptions),
            leases: record.inflight.compactMap { stored in
                stored.share.map { ($0, MQTTSessionRecord.decode(stored.packet)?.qos ?? 1, true) }
            })
    }

    /// Ends the stored sessions whose expiry passed (MQTT 3.1.2.11.2), every minute: the record
    /// is deleted and its shared subscriptions' messages go back to their groups. A session is
    /// ended by the gateway that holds it, or by any gateway once its holder is gone.
    func sweepExpiredSessions() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(60))
            guard let members = members.withLock({ $0 }),
                let stored = try? await journal.scan(namespace: Self.sessionNamespace)
            else { continue }
            let me = members.me.id
            let live = Set(members.live.map(\.id))
            for pair in stored {
                let clientID = String(decoding: pair.key, as: UTF8.self)
                guard let record = try? MQTTSessionRecord(stored: pair.value), record.isExpired,
                    registry.withLock({ $0.sessions[clientID] == nil })
                else { continue }
                let holder = try? await journal.get(namespace: Self.holderNamespace, key: pair.key)
                    .flatMap { Int32(String(decoding: $0, as: UTF8.self)) }
                if let holder, holder != me, live.contains(holder) { continue }
                // Read again just before: a client that came back meanwhile renewed its record.
                guard let current = try? await storedSession(clientID), current.isExpired,
                    current.disconnectedAt == record.disconnectedAt,
                    registry.withLock({ $0.sessions[clientID] == nil })
                else { continue }
                logger.debug("mqtt session expired", metadata: ["mqtt.client": "\(clientID)"])
                await endStoredSession(clientID, current)
                try? await journal.delete(namespace: Self.holderNamespace, key: pair.key)
            }
        }
    }

    /// Ends a stored session that is not connected: its shared subscriptions' messages go back
    /// to their groups, and its record is deleted.
    func endStoredSession(_ clientID: String, _ record: MQTTSessionRecord) async {
        await endShares(
            clientID: clientID, heldShares(of: record), sessionEnded: true, settler: shareSettler(for: clientID))
        try? await forgetSession(clientID)
    }
}
