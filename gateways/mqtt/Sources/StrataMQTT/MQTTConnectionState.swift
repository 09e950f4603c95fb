/// MQTT's rules for one connection, as a value: events in (CONNECT, then each packet from the
/// client), actions out, no I/O. This is the kit's shape (docs/architecture.md): the rules are
/// tested as event → action tables (`MQTTConnectionStateTests`), and `MQTTConnection` is a thin
/// shell that carries the actions out (journal writes, session state, packets to the client).
struct MQTTConnectionState: Sendable {
    /// What the gateway allows a connection.
    struct Limits: Sendable {
        var topicAliasMaximum: UInt16
        var maxKeepAlive: UInt16
        var allowAnonymous: Bool
    }

    enum Phase: Sendable, Equatable {
        case awaitingConnect
        case connected
        case ended
    }

    /// What the client proved at CONNECT.
    enum Credentials: Sendable, Equatable {
        /// MQTT 5 enhanced authentication finished for this user.
        case enhanced(user: String)
        /// A user name and/or password, checked against the password file.
        case password(valid: Bool)
        /// Neither.
        case none
    }

    /// A CONNECT the gateway takes.
    struct Accepted: Sendable, Equatable {
        var clientID: String
        /// The gateway chose the client id (an empty one was sent): CONNACK tells a 5.0 client.
        var assigned: Bool
        /// Kept after the connection ends (clean session 0 in 3.1.1, session expiry > 0 in 5.0).
        var persistent: Bool
        /// The session expiry interval (5.0), nil in 3.1.1 (a persistent session lives forever).
        var expiry: UInt32?
        /// The keep-alive in force; `serverKeepAlive` when the gateway lowered a 5.0 client's.
        var keepAlive: UInt16
        var serverKeepAlive: UInt16?
    }

    enum ConnectAction: Sendable, Equatable {
        /// CONNACK with this return / reason code, then close.
        case refuse(code: UInt8)
        case accept(Accepted)
    }

    /// One filter of a SUBSCRIBE, checked.
    enum SubscriptionCheck: Sendable, Equatable {
        /// Refused with this reason code (invalid filter).
        case refused(UInt8)
        /// To be granted at `qos` unless the ACL says no.
        case valid(MQTTPacket.Subscription, qos: UInt8, shared: Bool)
    }

    enum Action: Sendable, Equatable {
        /// Store the PUBLISH (its topic alias resolved to `topic`); acknowledge it once stored.
        case store(topic: String, MQTTPacket.Publish)
        /// PUBACK, PUBCOMP, or a PUBREC with a failure reason (≥ 0x80, which ends the flow
        /// without PUBREL, MQTT 5 4.3.3): the outbound message is done.
        case completed(packetID: UInt16)
        /// PUBREC: answer PUBREL.
        case received(packetID: UInt16)
        /// PUBREL: release the inbound QoS 2 id and answer PUBCOMP.
        case release(packetID: UInt16)
        case subscribe(packetID: UInt16, [SubscriptionCheck], identifier: UInt32?)
        case unsubscribe(packetID: UInt16, filters: [String])
        case send(MQTTPacket)
        /// DISCONNECT: the conversation ends; `normal` unless the client asked for its will
        /// (5.0 reason 0x04); `expiry` a session expiry the client set at DISCONNECT.
        case end(normal: Bool, expiry: UInt32?)
        /// A protocol violation: a 5.0 client gets DISCONNECT with the reason, then close.
        case violation(MQTTProtocolError)
    }

    let limits: Limits
    private(set) var phase = Phase.awaitingConnect
    private(set) var version = MQTTProtocolVersion.v311
    /// The session expiry interval set at CONNECT (5.0).
    private var expiryAtConnect: UInt32?
    /// Topic aliases the client set (5.0), by alias.
    private var aliases: [UInt16: String] = [:]

    init(limits: Limits) {
        self.limits = limits
    }

    // MARK: CONNECT

    /// CONNECT (already decoded, and enhanced authentication done when the client asked for
    /// it). `assignedID` is the client id the gateway gives a client that sent an empty one.
    mutating func connect(
        _ connect: MQTTPacket.Connect, credentials: Credentials, assignedID: @autoclosure () -> String
    ) -> ConnectAction {
        guard phase == .awaitingConnect else { return .refuse(code: connect.version == .v5 ? 0x82 : 2) }
        version = connect.version
        let v5 = version == .v5
        var clientID = connect.clientID
        var assigned = false
        if version == .v31, clientID.isEmpty || clientID.utf8.count > 23 {
            // 3.1: a client id of 1 to 23 characters, else CONNACK 2 (identifier rejected).
            return refuse(v5: 0x85, v311: 2)
        }
        if clientID.isEmpty {
            // 3.1.1: an empty client id needs clean session 1 (MQTT-3.1.3-8), refused with 2.
            guard v5 || connect.cleanStart else { return refuse(v5: 0x85, v311: 2) }
            clientID = assignedID()
            assigned = true
        }
        switch credentials {
        case .enhanced: break
        case .password(let valid): guard valid else { return refuse(v5: 0x86, v311: 4) }
        case .none: guard limits.allowAnonymous else { return refuse(v5: 0x87, v311: 5) }
        }
        let expiry: UInt32? = v5 ? (connect.properties.sessionExpiryInterval ?? 0) : nil
        expiryAtConnect = expiry
        // More than the operator's maximum (0 is no keep-alive at all, more than any): a 5.0
        // client is told the maximum as server keep alive and must use it [MQTT-3.2.2-21]; 3.1
        // and 3.1.1 cannot be told, so the client is refused (mosquitto's rule).
        let tooLong =
            limits.maxKeepAlive != .max && (connect.keepAlive == 0 || connect.keepAlive > limits.maxKeepAlive)
        if tooLong, !v5 { return refuse(v5: 0x82, v311: 2) }
        let keepAlive = tooLong ? limits.maxKeepAlive : connect.keepAlive
        phase = .connected
        return .accept(
            Accepted(
                clientID: clientID, assigned: assigned, persistent: v5 ? expiry! > 0 : !connect.cleanStart,
                expiry: expiry, keepAlive: keepAlive,
                serverKeepAlive: tooLong ? limits.maxKeepAlive : nil))
    }

    private mutating func refuse(v5: UInt8, v311: UInt8) -> ConnectAction {
        phase = .ended
        return .refuse(code: version == .v5 ? v5 : v311)
    }

    // MARK: The conversation

    /// One packet from the client once connected.
    mutating func receive(_ packet: MQTTPacket) -> Action {
        guard phase == .connected else { return violation(.protocolError("a packet after the conversation ended")) }
        switch packet {
        case .publish(let publish):
            return store(publish)
        case .puback(let ack), .pubcomp(let ack):
            return .completed(packetID: ack.packetID)
        case .pubrec(let ack):
            // A failure reason releases the packet id: no PUBREL follows [MQTT-4.3.3].
            return ack.reasonCode >= 0x80 ? .completed(packetID: ack.packetID) : .received(packetID: ack.packetID)
        case .pubrel(let ack):
            return .release(packetID: ack.packetID)
        case .subscribe(let subscribe):
            var checks: [SubscriptionCheck] = []
            for subscription in subscribe.subscriptions {
                let shared = MQTTTopic.sharedSubscription(subscription.filter) != nil
                if shared && subscription.noLocal {
                    return violation(.protocolError("no-local on a shared subscription"))  // MQTT 3.8.3.1
                }
                guard MQTTTopic.isValidFilter(subscription.filter) else {
                    checks.append(.refused(version == .v5 ? 0x8F : 0x80))
                    continue
                }
                checks.append(.valid(subscription, qos: min(subscription.qos, 2), shared: shared))
            }
            return .subscribe(
                packetID: subscribe.packetID, checks, identifier: subscribe.properties.subscriptionIdentifiers.first)
        case .unsubscribe(let unsubscribe):
            return .unsubscribe(packetID: unsubscribe.packetID, filters: unsubscribe.filters)
        case .pingreq:
            return .send(.pingresp)
        case .disconnect(let disconnect):
            let expiry = disconnect.properties.sessionExpiryInterval
            if let expiry, expiry != 0, expiryAtConnect == 0 {
                // MQTT 3.14.2.2.2: a session that was to end with the connection cannot be kept now.
                return violation(.protocolError("session expiry set at DISCONNECT after 0 at CONNECT"))
            }
            phase = .ended
            return .end(normal: disconnect.reasonCode != 0x04, expiry: expiry)
        case .connect, .connack, .suback, .unsuback, .pingresp, .auth:
            return violation(.protocolError("unexpected \(packet.typeNumber) packet from a client"))
        }
    }

    private mutating func store(_ publish: MQTTPacket.Publish) -> Action {
        var topic = publish.topic
        if version == .v5, let alias = publish.properties.topicAlias {
            guard alias != 0, alias <= limits.topicAliasMaximum else {
                return violation(
                    MQTTProtocolError(0x94, "topic alias \(alias) outside 1...\(limits.topicAliasMaximum)"))
            }
            if topic.isEmpty {
                guard let known = aliases[alias] else {
                    return violation(.protocolError("unknown topic alias \(alias)"))
                }
                topic = known
            } else {
                aliases[alias] = topic
            }
        }
        guard MQTTTopic.isValidName(topic) else {
            return violation(MQTTProtocolError(0x90, "invalid topic name \(topic)"))
        }
        var stored = publish
        stored.properties.items.removeAll { if case .topicAlias = $0 { true } else { false } }
        return .store(topic: topic, stored)
    }

    private mutating func violation(_ error: MQTTProtocolError) -> Action {
        phase = .ended
        return .violation(error)
    }
}
