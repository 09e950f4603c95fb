import NIOCore
import StrataJournal
import StrataKit
import Synchronization

/// One connected client: its subscriptions, the packets waiting to be written to it, and the
/// QoS 1/2 state in both directions. Thread-safe; the router and the connection share it.
final class MQTTSession: Sendable {
    struct Subscription: Sendable, Hashable, Codable {
        /// As the client wrote it (`$share/GROUP/FILTER` for a shared subscription).
        var filter: String
        var qos: UInt8
        var noLocal: Bool
        var retainAsPublished: Bool
        var identifier: UInt32?

        /// The group and the filter proper of a shared subscription.
        var shared: (group: String, filter: String)? { MQTTTopic.sharedSubscription(filter) }
    }

    private struct State {
        var subscriptions: [String: Subscription] = [:]
        var nextPacketID: UInt16 = 1
        /// Outbound QoS 1/2 publishes not yet acknowledged (PUBACK / PUBCOMP), in sending order.
        var inflight: [UInt16: MQTTPacket.Publish] = [:]
        var inflightOrder: [UInt16] = []
        /// Packet ids whose PUBREC came back (only PUBREL / PUBCOMP remain).
        var released: Set<UInt16> = []
        /// While a resumed session catches up from the journal, live messages wait here.
        var replaying = false
        /// Packets handed to the writer and not yet written to the socket.
        var unwritten = 0
        var heldLive: [(MQTTMessage, UInt8, Bool, [UInt32])] = []
        /// More live messages arrived during the replay than the queue limit: they were dropped
        /// and the replay reads them from the journal instead.
        var heldOverflow = false
        /// Outbound publishes waiting for room under the client's receive maximum (with the
        /// queue lease of a shared subscription's message).
        var waiting: [(publish: MQTTPacket.Publish, lease: MQTTShareLease?)] = []
        /// The queue leases of the shared-subscription messages in flight, by packet id.
        var leases: [UInt16: MQTTShareLease] = [:]
        /// Every shared-subscription message the session holds (in flight, waiting, or restored
        /// and not yet confirmed by its queue).
        var shareKeys: Set<MQTTShareLease.Key> = []
        /// Restored in-flight messages of shared subscriptions, by lease, until the queue's
        /// resume confirms that the session still holds them (`confirmShared`).
        var unconfirmed: [MQTTShareLease.Key: UInt16] = [:]
        /// A shared subscription's puller waiting for the session to hold fewer of its messages.
        var shareRoomWaiters: [String: CheckedContinuation<Void, Never>] = [:]
        /// Inbound QoS 2 packet ids acknowledged with PUBREC, waiting for PUBREL.
        var inboundQoS2: Set<UInt16> = []
        var closed = false
        /// The last write handed to the channel (the socket closes after it).
        var lastWrite: EventLoopFuture<Void>?
        /// Topic aliases this connection gave the client, by topic (MQTT 3.3.2.3.4; they live as
        /// long as the connection).
        var outboundAliases: [String: UInt16] = [:]
        /// Counts changes worth a new session record (deliveries, acknowledgements, subscriptions).
        var changes: UInt64 = 0
        /// A replay from the journal waiting for the client to take what it was sent.
        var roomWaiter: CheckedContinuation<Void, Never>?

        /// How many messages of `queue` the session holds (a puller's window is at most 64).
        func held(_ queue: String) -> Int { shareKeys.lazy.filter { $0.queue == queue }.count }

        /// The packet that completes in-flight message `id` again: PUBREL once the client
        /// received it (PUBREC), else the PUBLISH with DUP set (MQTT 4.4).
        func resend(_ id: UInt16) -> MQTTPacket? {
            if released.contains(id) { return .pubrel(.init(packetID: id)) }
            guard var publish = inflight[id] else { return nil }
            publish.dup = true
            return .publish(publish)
        }

        /// Room for more replayed messages: the backlog fell to half the queue limit.
        mutating func takeRoomWaiter(limit: Int) -> CheckedContinuation<Void, Never>? {
            guard roomWaiter != nil, closed || waiting.count + unwritten <= limit / 2 else { return nil }
            defer { roomWaiter = nil }
            return roomWaiter
        }
    }

    let clientID: String
    /// The authenticated user name (nil: anonymous).
    let user: String?
    private let acl: MQTTACL?
    let version: MQTTProtocolVersion
    /// Kept after the connection ends (clean start 0 in 3.1.1, session expiry > 0 in 5.0).
    let persistent: Bool
    let expiryInterval: UInt32?
    let receiveMaximum: Int
    let maxQueued: Int
    /// The largest packet the client accepts (5.0 CONNECT property), nil = no limit.
    let clientMaxPacketSize: Int?
    private let state = Mutex(State())
    /// Where packets for the client go (nil: nowhere, for tests of the session logic).
    private let channel: (any Channel)?
    /// The channel's writes: those made before the event loop gets to them share one flush.
    private let writer: CoalescingWriter?
    /// Called when the client fell too far behind (the connection is then closed).
    private let overflow: @Sendable () -> Void
    /// Topic aliases the gateway gives a 5.0 client for the topics it sends it: the client's
    /// Topic Alias Maximum, at most `maxOutboundAliases` (0: none).
    private let outboundAliasLimit: Int
    static let maxOutboundAliases = 64
    /// The 5.0 client's Request Problem Information (false: it sent 0): without it no Reason
    /// String or User Property goes out on anything but PUBLISH, CONNACK and DISCONNECT
    /// [MQTT-3.1.2-29].
    private let problemInformation: Bool

    init(
        clientID: String, user: String? = nil, acl: MQTTACL? = nil, version: MQTTProtocolVersion,
        persistent: Bool = false, expiryInterval: UInt32? = nil, receiveMaximum: Int, maxQueued: Int,
        clientMaxPacketSize: Int?, clientTopicAliasMaximum: UInt16 = 0, problemInformation: Bool = true,
        channel: (any Channel)? = nil, overflow: @escaping @Sendable () -> Void
    ) {
        self.problemInformation = problemInformation
        outboundAliasLimit = version == .v5 ? min(Int(clientTopicAliasMaximum), Self.maxOutboundAliases) : 0
        self.clientID = clientID
        self.user = user
        self.acl = acl
        self.version = version
        self.persistent = persistent
        self.expiryInterval = expiryInterval
        self.receiveMaximum = receiveMaximum
        self.maxQueued = maxQueued
        self.clientMaxPacketSize = clientMaxPacketSize
        self.overflow = overflow
        self.channel = channel
        writer = channel.map(CoalescingWriter.init)
    }

    /// Writes a packet to the client. Packets go to the channel in the order of these calls
    /// (handed over under the session's lock) — no writer task or queue of its own per
    /// connection; what the socket has not taken yet counts as unwritten.
    func send(_ packet: MQTTPacket) {
        guard let channel, let writer else { return }
        if case .publish(let publish) = packet {
            MQTTTraffic.sent(bytes: publish.payload.readableBytes)
        }
        let written = state.withLock { state -> EventLoopFuture<Void>? in
            guard !state.closed else { return nil }
            var packet = packet
            if outboundAliasLimit > 0, case .publish(var publish) = packet {
                // Aliases are given in the order packets are written (under this lock): a topic's
                // first PUBLISH names it with its new alias, later ones carry the alias alone.
                if let alias = state.outboundAliases[publish.topic] {
                    publish.properties.append(.topicAlias(alias))
                    publish.topic = ""
                } else if state.outboundAliases.count < outboundAliasLimit {
                    let alias = UInt16(state.outboundAliases.count + 1)
                    state.outboundAliases[publish.topic] = alias
                    publish.properties.append(.topicAlias(alias))
                }
                packet = .publish(publish)
            }
            if !problemInformation { packet = Self.withoutProblemInformation(packet) }
            var encoded = channel.allocator.buffer(capacity: 64)
            packet.write(version: version, into: &encoded)
            let buffer = encoded
            state.unwritten += 1
            // Handed to the event loop, even from the loop itself (the writer always is): a write
            // there could complete earlier writes at once, whose callbacks take this lock.
            let promise = channel.eventLoop.makePromise(of: Void.self)
            writer.write(buffer, promise: promise)
            state.lastWrite = promise.futureResult
            return promise.futureResult
        }
        written?.whenComplete { _ in self.didWrite() }
    }

    /// `packet` without Reason Strings and User Properties where a client that asked for no
    /// problem information must not get them (all but PUBLISH, CONNACK and DISCONNECT).
    static func withoutProblemInformation(_ packet: MQTTPacket) -> MQTTPacket {
        func stripped<Carrier: MQTTPropertyCarrier>(_ carrier: Carrier) -> Carrier {
            var carrier = carrier
            carrier.properties.items.removeAll {
                switch $0 {
                case .reasonString, .userProperty: true
                default: false
                }
            }
            return carrier
        }
        return switch packet {
        case .puback(let ack): .puback(stripped(ack))
        case .pubrec(let ack): .pubrec(stripped(ack))
        case .pubrel(let ack): .pubrel(stripped(ack))
        case .pubcomp(let ack): .pubcomp(stripped(ack))
        case .suback(let ack): .suback(stripped(ack))
        case .unsuback(let ack): .unsuback(stripped(ack))
        case .auth(let auth): .auth(stripped(auth))
        default: packet
        }
    }

    /// The session record that an acknowledgement waits for could not be stored: the
    /// connection ends instead (DISCONNECT 0x80 for 5.0), and the client sends again.
    func endForUnstoredRecord() {
        if version == .v5 { send(.disconnect(.init(reasonCode: 0x80))) }
        close()
    }

    /// The writer wrote one packet.
    func didWrite() {
        state.withLock {
            $0.unwritten -= 1
            return $0.takeRoomWaiter(limit: maxQueued)
        }?.resume()
    }

    /// Ends the session's output: the socket closes once what was sent is written (which also
    /// ends the connection's reader).
    func close() {
        let (waiter, last, first, pullers) = state.withLock { state in
            let first = !state.closed
            state.closed = true
            defer { state.shareRoomWaiters = [:] }
            return (
                state.takeRoomWaiter(limit: maxQueued), state.lastWrite, first, Array(state.shareRoomWaiters.values)
            )
        }
        waiter?.resume()
        pullers.forEach { $0.resume() }
        guard first, let channel else { return }
        if let last {
            last.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    /// Waits until the messages queued for the client (unwritten or behind the receive
    /// maximum) are at most half the queue limit, or the session closed: a replay of an
    /// offline backlog goes no faster than the client takes it.
    func waitForRoom() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.closed || state.waiting.count + state.unwritten <= maxQueued / 2 { return true }
                state.roomWaiter = waiter
                return false
            }
            if ready { waiter.resume() }
        }
    }

    var isReplaying: Bool { state.withLock { $0.replaying } }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Whether the ACL (if any) lets this client read or write `topic`.
    func permits(_ access: MQTTACL.Access, _ topic: String) -> Bool {
        acl?.allows(access, user: user, clientID: clientID, topic: topic) ?? true
    }

    // MARK: Subscriptions

    /// Adds or replaces a subscription; returns the one it replaced. (The gateway's
    /// `subscribe` calls this and indexes it.)
    func subscribe(_ subscription: Subscription) -> Subscription? {
        state.withLock {
            $0.changes &+= 1
            return $0.subscriptions.updateValue(subscription, forKey: subscription.filter)
        }
    }

    func unsubscribe(_ filter: String) -> Subscription? {
        state.withLock {
            $0.changes &+= 1
            return $0.subscriptions.removeValue(forKey: filter)
        }
    }

    var subscriptions: [Subscription] {
        state.withLock { Array($0.subscriptions.values) }
    }

    func subscription(_ filter: String) -> Subscription? {
        state.withLock { $0.subscriptions[filter] }
    }

    /// What a message gets from this session's (non-shared) subscriptions matching its topic:
    /// the delivery QoS is the highest granted one, and all their identifiers go along (MQTT
    /// 3.3.4); a no-local subscription skips the client's own messages.
    typealias Match = (qos: UInt8, retainAsPublished: Bool, identifiers: [UInt32])

    func combine(_ matching: some Sequence<Subscription>, publisher: String) -> Match? {
        var best: Match?
        for subscription in matching where !(subscription.noLocal && publisher == clientID) {
            var current = best ?? (0, false, [])
            current.qos = max(current.qos, subscription.qos)
            current.retainAsPublished = current.retainAsPublished || subscription.retainAsPublished
            if let id = subscription.identifier { current.identifiers.append(id) }
            best = current
        }
        return best
    }

    /// `combine` over every subscription of the session matching `topic` (replay from the journal).
    func match(_ topic: String, publisher: String) -> Match? {
        combine(
            subscriptions.filter { $0.shared == nil && MQTTTopic.matches(filter: $0.filter, topic: topic) },
            publisher: publisher)
    }

    // MARK: Outbound delivery

    /// Delivers a live message; held back while the session replays what it missed. Beyond
    /// the queue limit the held messages are dropped: the replay goes on to read them from the
    /// journal (see `MQTTGateway.replay`).
    func deliver(_ message: MQTTMessage, qos: UInt8, retain: Bool, identifiers: [UInt32]) {
        let held = state.withLock { state -> Bool in
            guard state.replaying else { return false }
            if state.heldOverflow { return true }
            if state.heldLive.count >= maxQueued {
                state.heldOverflow = true
                state.heldLive = []
                return true
            }
            state.heldLive.append((message, qos, retain, identifiers))
            return true
        }
        if !held { deliverNow(message, qos: qos, retain: retain, identifiers: identifiers) }
    }

    func beginReplay() {
        state.withLock { $0.replaying = true }
    }

    /// Ends the replay if no held message was dropped: the held ones go out, in order, and
    /// live delivery resumes; returns false (and clears the overflow) when the replay must go
    /// on. Called under the gateway's registry lock, so that no live message arrives meanwhile.
    func endReplay() -> Bool {
        let held = state.withLock { state -> [(MQTTMessage, UInt8, Bool, [UInt32])]? in
            if state.heldOverflow {
                state.heldOverflow = false
                return nil
            }
            defer {
                state.heldLive = []
                state.replaying = false
            }
            return state.heldLive
        }
        guard let held else { return false }
        for (message, qos, retain, identifiers) in held {
            deliverNow(message, qos: qos, retain: retain, identifiers: identifiers)
        }
        return true
    }

    /// What became of a message handed to the session.
    enum ShareOutcome {
        /// The session holds it until the client acknowledges it (or had it already).
        case held
        /// Sent at QoS 0, or not deliverable to this client (expired, too large, not permitted):
        /// done with, to be acknowledged in the queue.
        case done
        /// The session is closed: never sent.
        case closed
    }

    /// Delivers a shared subscription's message under its queue lease (see `deliverNow`). A
    /// message the session holds already is not sent again (its lease takes the newer
    /// receipt); a restored in-flight one the queue confirmed goes out again with its packet id
    /// (DUP=1, or PUBREL when the client had received it).
    func deliverShared(
        _ message: MQTTMessage, qos: UInt8, identifiers: [UInt32], lease: MQTTShareLease, dup: Bool
    ) -> ShareOutcome {
        enum Step {
            case done(ShareOutcome)
            case resend(MQTTPacket)
            case deliver
        }
        let step = state.withLock { state -> Step in
            guard !state.closed else { return .done(.closed) }
            if let id = state.unconfirmed.removeValue(forKey: lease.key) {
                state.leases[id] = lease
                return state.resend(id).map { .resend($0) } ?? .done(.held)
            }
            guard state.shareKeys.contains(lease.key) else { return .deliver }
            Self.renew(lease, &state)
            return .done(.held)
        }
        switch step {
        case .done(let outcome): return outcome
        case .resend(let packet):
            send(packet)
            return .held
        case .deliver:
            return deliverNow(message, qos: qos, retain: false, identifiers: identifiers, lease: lease, dup: dup)
        }
    }

    /// A held message delivered again (a resume renewed its lease): it settles with the newer receipt.
    private static func renew(_ lease: MQTTShareLease, _ state: inout State) {
        if let id = state.leases.first(where: { $0.value.key == lease.key })?.key {
            if state.leases[id]!.delivery < lease.delivery { state.leases[id] = lease }
        } else if let index = state.waiting.firstIndex(where: { $0.lease?.key == lease.key }),
            state.waiting[index].lease!.delivery < lease.delivery
        {
            state.waiting[index].lease = lease
        }
    }

    /// After a resume of `queue`: the restored in-flight messages it did not hand back are not
    /// the session's any more (settled, or released to the group). One the client had received
    /// (PUBREC) is completed with PUBREL; the others are forgotten and their slots go to the
    /// messages waiting.
    func dropUnconfirmed(_ queue: String) {
        let (packets, waiters) = state.withLock { state -> ([MQTTPacket], [CheckedContinuation<Void, Never>]) in
            var packets: [MQTTPacket] = []
            for (key, id) in state.unconfirmed where key.queue == queue {
                state.changes &+= 1
                state.unconfirmed[key] = nil
                state.leases[id] = nil
                state.shareKeys.remove(key)
                if state.released.contains(id) {
                    packets.append(.pubrel(.init(packetID: id)))  // stays in flight until PUBCOMP
                } else {
                    state.inflight[id] = nil
                    state.inflightOrder.removeAll { $0 == id }
                }
            }
            packets += Self.promoteWaiting(&state, receiveMaximum: receiveMaximum)
            var waiters = [state.takeRoomWaiter(limit: maxQueued)].compactMap { $0 }
            if let waiter = state.shareRoomWaiters.removeValue(forKey: queue) { waiters.append(waiter) }
            return (packets, waiters)
        }
        packets.forEach { send($0) }
        waiters.forEach { $0.resume() }
    }

    /// Restored in-flight messages of queues the session no longer subscribes (`subscribed` are
    /// the ones it does): no resume will confirm them. With `keep` (held leases stay the
    /// session's) they go out again under their recorded leases; otherwise they are dropped as
    /// `dropUnconfirmed` does.
    func settleOrphans(subscribed: Set<String>, keep: Bool) {
        let orphaned = state.withLock { state in Set(state.unconfirmed.keys.map(\.queue)).subtracting(subscribed) }
        for queue in orphaned {
            guard keep else {
                dropUnconfirmed(queue)
                continue
            }
            let packets = state.withLock { state -> [MQTTPacket] in
                let ids = state.unconfirmed.filter { $0.key.queue == queue }
                for key in ids.keys { state.unconfirmed[key] = nil }
                return ids.values.compactMap { state.resend($0) }
            }
            packets.forEach { send($0) }
        }
    }

    /// Takes the messages of `queue` that wait behind the receive maximum (never sent): the
    /// subscription was removed, so they go back to the group.
    func takeWaitingShares(_ queue: String) -> [MQTTShareLease] {
        state.withLock { state in
            var taken: [MQTTShareLease] = []
            state.waiting.removeAll { entry in
                guard let lease = entry.lease, lease.queue == queue else { return false }
                taken.append(lease)
                return true
            }
            for lease in taken { state.shareKeys.remove(lease.key) }
            return taken
        }
    }

    /// Waits until the session holds fewer than `window` messages of `queue`; returns how many
    /// more it may take, 0 once the session is closed.
    func waitForShareRoom(_ queue: String, window: Int) async -> Int {
        while true {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.closed || state.held(queue) < window { return true }
                    state.shareRoomWaiters[queue]?.resume()
                    state.shareRoomWaiters[queue] = waiter
                    return false
                }
                if ready { waiter.resume() }
            }
            let room = state.withLock { $0.closed ? 0 : window - $0.held(queue) }
            if room > 0 || isClosed { return max(0, room) }
        }
    }

    /// Wakes a shared subscription's puller (its subscription was removed).
    func wakeSharePuller(_ queue: String) {
        state.withLock { $0.shareRoomWaiters.removeValue(forKey: queue) }?.resume()
    }

    /// The shared-subscription messages the session holds: each lease, its delivery QoS, and
    /// whether it was sent to the client (in flight) rather than waiting.
    var shareLeases: [MQTTHeldShares.Held] {
        state.withLock { state in
            state.leases.compactMap { id, lease in state.inflight[id].map { (lease, $0.qos, true) } }
                + state.waiting.compactMap { entry in entry.lease.map { ($0, entry.publish.qos, false) } }
        }
    }

    /// Moves waiting messages into free slots under the receive maximum; returns them to send.
    private static func promoteWaiting(_ state: inout State, receiveMaximum: Int) -> [MQTTPacket] {
        var packets: [MQTTPacket] = []
        while state.inflight.count < receiveMaximum, !state.waiting.isEmpty {
            var (publish, lease) = state.waiting.removeFirst()
            publish.packetID = takePacketID(&state)
            state.inflight[publish.packetID!] = publish
            state.inflightOrder.append(publish.packetID!)
            if let lease { state.leases[publish.packetID!] = lease }
            packets.append(.publish(publish))
        }
        return packets
    }

    /// Delivers `message` at `qos` (already the minimum of publish and subscription QoS).
    /// `bounded` applies the queue limit; a replay from the journal is not bounded by it.
    /// With a shared subscription's `lease`, says whether the session holds the message now
    /// (in flight or waiting), is done with it (sent at QoS 0, or not delivered), or is closed.
    @discardableResult
    func deliverNow(
        _ message: MQTTMessage, qos: UInt8, retain: Bool, identifiers: [UInt32], bounded: Bool = true,
        lease: MQTTShareLease? = nil, dup: Bool = false
    ) -> ShareOutcome {
        // A record another protocol wrote can carry a key that is no MQTT topic name (longer
        // than 65,535 bytes, U+0000, wildcards): not deliverable, and never encoded.
        guard MQTTTopic.isValidName(message.topic), !message.topic.utf8.contains(0) else {
            MQTTMetrics.undeliverable.increment()
            return .done
        }
        guard permits(.read, message.topic) else { return .done }
        var properties = message.forwardedProperties
        for id in identifiers { properties.append(.subscriptionIdentifier(id)) }
        if let expiry = message.properties.messageExpiryInterval {
            // Saturating: a record's timestamp is whatever its batch says.
            let age = UInt32(clamping: max(0, WallClock.milliseconds().minusSaturating(message.timestamp) / 1000))
            guard age < expiry else { return .done }  // expired: not delivered (MQTT 3.3.2.3.3)
            properties.items.removeAll { if case .messageExpiryInterval = $0 { true } else { false } }
            properties.append(.messageExpiryInterval(expiry - age))
        }
        var publish = MQTTPacket.Publish(
            topic: message.topic, qos: qos, retain: retain, properties: version == .v5 ? properties : [],
            payload: message.payload)
        publish.dup = dup && qos > 0
        if let limit = clientMaxPacketSize, publish.encodedSize(version: version) > limit {
            return .done  // the client cannot take it: discarded (MQTT 3.1.2.11.4)
        }
        if qos == 0 {
            // At most once: a subscriber that does not keep up loses QoS 0 messages beyond
            // `maxQueued` unwritten packets instead of growing the gateway's memory.
            let (full, closed) = state.withLock {
                $0.changes &+= 1
                return ($0.unwritten >= maxQueued, $0.closed)
            }
            if closed { return .closed }
            if !full { send(.publish(publish)) }
            return .done
        }
        let (packet, overflowed, outcome) = state.withLock { state -> (MQTTPacket?, Bool, ShareOutcome) in
            if lease != nil && state.closed { return (nil, false, .closed) }
            state.changes &+= 1
            if let lease {
                // Bounded by the puller's window, not by the queue limit.
                state.shareKeys.insert(lease.key)
            }
            if state.inflight.count >= receiveMaximum {
                if bounded && lease == nil && state.waiting.count >= maxQueued { return (nil, true, .done) }
                state.waiting.append((publish, lease))
                return (nil, false, .held)
            }
            publish.packetID = Self.takePacketID(&state)
            state.inflight[publish.packetID!] = publish
            state.inflightOrder.append(publish.packetID!)
            if let lease { state.leases[publish.packetID!] = lease }
            return (.publish(publish), false, .held)
        }
        if let packet { send(packet) }
        if overflowed { overflow() }
        return outcome
    }

    private static func takePacketID(_ state: inout State) -> UInt16 {
        while state.inflight[state.nextPacketID] != nil {
            state.nextPacketID = state.nextPacketID == .max ? 1 : state.nextPacketID + 1
        }
        defer { state.nextPacketID = state.nextPacketID == .max ? 1 : state.nextPacketID + 1 }
        return state.nextPacketID
    }

    /// PUBACK or PUBCOMP from the client: the slot frees, the next waiting message goes out.
    /// Returns the queue lease of a shared subscription's message, to be acknowledged there.
    @discardableResult
    func acknowledged(_ packetID: UInt16) -> MQTTShareLease? {
        let (next, waiters, lease) = state.withLock {
            state -> ([MQTTPacket], [CheckedContinuation<Void, Never>], MQTTShareLease?) in
            guard state.inflight.removeValue(forKey: packetID) != nil else { return ([], [], nil) }
            state.changes &+= 1
            state.inflightOrder.removeAll { $0 == packetID }
            state.released.remove(packetID)
            var waiters: [CheckedContinuation<Void, Never>] = []
            let lease = state.leases.removeValue(forKey: packetID)
            if let lease {
                state.unconfirmed[lease.key] = nil
                state.shareKeys.remove(lease.key)
                if let waiter = state.shareRoomWaiters.removeValue(forKey: lease.queue) { waiters.append(waiter) }
            }
            let next = Self.promoteWaiting(&state, receiveMaximum: receiveMaximum)
            guard !next.isEmpty else { return ([], waiters, lease) }
            if let waiter = state.takeRoomWaiter(limit: maxQueued) { waiters.append(waiter) }
            return (next, waiters, lease)
        }
        next.forEach { send($0) }
        waiters.forEach { $0.resume() }
        return lease
    }

    /// PUBREC from the client: answer PUBREL (the message stays in flight until PUBCOMP).
    func received(_ packetID: UInt16) -> Bool {
        state.withLock { state in
            guard state.inflight[packetID] != nil else { return false }
            state.changes &+= 1
            state.released.insert(packetID)
            return true
        }
    }

    // MARK: Persistence

    /// Grows with every change a session record would show.
    var changeCount: UInt64 { state.withLock { $0.changes } }

    /// The session's state for its record (positions are filled in by the gateway).
    func record(positions: [String: UInt64], expiryInterval: UInt32?) -> MQTTSessionRecord {
        state.withLock { state in
            MQTTSessionRecord(
                subscriptions: Array(state.subscriptions.values),
                positions: positions, complete: true,
                inflight: state.inflightOrder.compactMap { id in
                    state.inflight[id].map {
                        .init(
                            packet: MQTTSessionRecord.encode($0), released: state.released.contains(id),
                            share: state.leases[id])
                    }
                },
                // A shared subscription's waiting messages stay leased to the session in their
                // queue, which hands them over again when it resumes.
                waiting: state.waiting.compactMap { $0.lease == nil ? MQTTSessionRecord.encode($0.publish) : nil },
                inboundQoS2: Array(state.inboundQoS2), nextPacketID: state.nextPacketID,
                expiryInterval: expiryInterval, disconnectedAt: WallClock.milliseconds(), owner: .init(user: user))
        }
    }

    /// Takes over a stored session: subscriptions and QoS state. Returns the packets to send
    /// again once CONNACK went out: unacknowledged messages with DUP set, PUBREL for those
    /// already received (MQTT 4.4).
    func restore(_ record: MQTTSessionRecord) -> [MQTTPacket] {
        state.withLock { state -> [MQTTPacket] in
            for subscription in record.subscriptions { state.subscriptions[subscription.filter] = subscription }
            state.nextPacketID = max(1, record.nextPacketID)
            state.inboundQoS2 = Set(record.inboundQoS2)
            // The ACL is checked again: what the user may no longer read is not sent (the ACL
            // file may have changed while the session was away).
            state.waiting = record.waiting.compactMap(MQTTSessionRecord.decode).filter { permits(.read, $0.topic) }
                .map { ($0, nil) }
            var packets: [MQTTPacket] = []
            for stored in record.inflight {
                guard var publish = MQTTSessionRecord.decode(stored.packet), let id = publish.packetID else { continue }
                if !stored.released, stored.share == nil, !permits(.read, publish.topic) { continue }
                if version != .v5 { publish.properties = [] }
                state.inflight[id] = publish
                state.inflightOrder.append(id)
                if stored.released { state.released.insert(id) }
                if let lease = stored.share {
                    // Sent again once its queue confirms the session still holds it.
                    state.leases[id] = lease
                    state.unconfirmed[lease.key] = id
                    state.shareKeys.insert(lease.key)
                } else if let packet = state.resend(id) {
                    packets.append(packet)
                }
            }
            return packets
        }
    }

    // MARK: Inbound QoS 2

    /// The inbound QoS 2 packet ids accepted and not yet released.
    var inboundQoS2IDs: [UInt16] { state.withLock { Array($0.inboundQoS2) } }
    var inboundQoS2Count: Int { state.withLock { $0.inboundQoS2.count } }

    /// Whether this QoS 2 packet id was already accepted (a resend: do not store it again).
    func inboundQoS2Seen(_ packetID: UInt16) -> Bool {
        state.withLock { $0.inboundQoS2.contains(packetID) }
    }

    func inboundQoS2Accepted(_ packetID: UInt16) {
        state.withLock {
            $0.changes &+= 1
            $0.inboundQoS2.insert(packetID)
        }
    }

    /// PUBREL: releases the id; false when it was not known.
    func inboundQoS2Released(_ packetID: UInt16) -> Bool {
        state.withLock {
            $0.changes &+= 1
            return $0.inboundQoS2.remove(packetID) != nil
        }
    }
}
