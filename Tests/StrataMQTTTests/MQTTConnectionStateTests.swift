import NIOCore
import Testing

@testable import StrataMQTT

/// The MQTT connection's rules as event → action tables: CONNECT outcomes, then packets in a
/// connected conversation. No sockets: `MQTTConnectionState` is a value.
@Suite struct MQTTConnectionStateTests {
    typealias State = MQTTConnectionState

    static let limits = State.Limits(topicAliasMaximum: 4, maxKeepAlive: 60, allowAnonymous: false)

    static func connect(
        _ version: MQTTProtocolVersion, id: String = "c", clean: Bool = true, keepAlive: UInt16 = 30,
        expiry: UInt32? = nil
    ) -> MQTTPacket.Connect {
        MQTTPacket.Connect(
            version: version, clientID: id, cleanStart: clean, keepAlive: keepAlive,
            properties: expiry.map { [.sessionExpiryInterval($0)] } ?? [])
    }

    static func connected(_ version: MQTTProtocolVersion = .v5, expiry: UInt32? = nil) -> State {
        var state = State(limits: limits)
        _ = state.connect(connect(version, expiry: expiry), credentials: .enhanced(user: "u"), assignedID: "x")
        return state
    }

    @Test func connectOutcomes() {
        let cases: [(MQTTPacket.Connect, State.Credentials, State.ConnectAction)] = [
            // Credentials: wrong password, none without anonymous access.
            (Self.connect(.v5), .password(valid: false), .refuse(code: 0x86)),
            (Self.connect(.v311), .password(valid: false), .refuse(code: 4)),
            (Self.connect(.v5), .none, .refuse(code: 0x87)),
            (Self.connect(.v311), .none, .refuse(code: 5)),
            // An empty client id: assigned with clean start, refused without in 3.1.1 (MQTT-3.1.3-8).
            (Self.connect(.v311, id: "", clean: false), .password(valid: true), .refuse(code: 2)),
            (
                Self.connect(.v311, id: "", clean: true), .password(valid: true),
                .accept(
                    .init(
                        clientID: "given", assigned: true, persistent: false, expiry: nil, keepAlive: 30,
                        serverKeepAlive: nil))
            ),
            (
                Self.connect(.v5, id: "", clean: false, expiry: 10), .enhanced(user: "u"),
                .accept(
                    .init(
                        clientID: "given", assigned: true, persistent: true, expiry: 10, keepAlive: 30,
                        serverKeepAlive: nil))
            ),
            // Persistence: clean session 0 in 3.1.1; a session expiry above 0 in 5.0.
            (
                Self.connect(.v311, clean: false), .password(valid: true),
                .accept(
                    .init(
                        clientID: "c", assigned: false, persistent: true, expiry: nil, keepAlive: 30,
                        serverKeepAlive: nil))
            ),
            (
                Self.connect(.v5, clean: false), .password(valid: true),
                .accept(
                    .init(
                        clientID: "c", assigned: false, persistent: false, expiry: 0, keepAlive: 30,
                        serverKeepAlive: nil))
            ),
            // A 5.0 keep-alive above the maximum, or none (0), is lowered and announced; 3.1 and
            // 3.1.1 have no way to be told, so they are refused (mosquitto's max_keepalive).
            (
                Self.connect(.v5, keepAlive: 600), .password(valid: true),
                .accept(
                    .init(
                        clientID: "c", assigned: false, persistent: false, expiry: 0, keepAlive: 60,
                        serverKeepAlive: 60))
            ),
            (
                Self.connect(.v5, keepAlive: 0), .password(valid: true),
                .accept(
                    .init(
                        clientID: "c", assigned: false, persistent: false, expiry: 0, keepAlive: 60,
                        serverKeepAlive: 60))
            ),
            (Self.connect(.v311, keepAlive: 600), .password(valid: true), .refuse(code: 2)),
            (Self.connect(.v311, keepAlive: 0), .password(valid: true), .refuse(code: 2)),
            (Self.connect(.v31, keepAlive: 61), .password(valid: true), .refuse(code: 2)),
            (
                Self.connect(.v311, keepAlive: 60), .password(valid: true),
                .accept(
                    .init(
                        clientID: "c", assigned: false, persistent: false, expiry: nil, keepAlive: 60,
                        serverKeepAlive: nil))
            ),
            // 3.1: client ids of 1 to 23 characters.
            (Self.connect(.v31, id: String(repeating: "x", count: 24)), .password(valid: true), .refuse(code: 2)),
            (Self.connect(.v31, id: ""), .password(valid: true), .refuse(code: 2)),
        ]
        for (packet, credentials, expected) in cases {
            var state = State(limits: Self.limits)
            let action = state.connect(packet, credentials: credentials, assignedID: "given")
            #expect(action == expected, "\(packet.version) \(credentials)")
            let accepted: Bool = if case .accept = expected { true } else { false }
            #expect(state.phase == (accepted ? .connected : .ended))
        }
        // Without a maximum (65535) every keep-alive is taken as asked, none (0) included.
        for version in [MQTTProtocolVersion.v31, .v311, .v5] {
            var unlimited = State(limits: .init(topicAliasMaximum: 4, maxKeepAlive: .max, allowAnonymous: false))
            guard
                case .accept(let accepted) = unlimited.connect(
                    Self.connect(version, keepAlive: 0), credentials: .password(valid: true), assignedID: "x")
            else {
                Issue.record("\(version) refused")
                continue
            }
            #expect(accepted.keepAlive == 0 && accepted.serverKeepAlive == nil)
        }
        var anonymous = State(limits: .init(topicAliasMaximum: 4, maxKeepAlive: 60, allowAnonymous: true))
        let allowed = anonymous.connect(Self.connect(.v5), credentials: .none, assignedID: "x")
        #expect(allowed != .refuse(code: 0x87))
        let again = anonymous.connect(Self.connect(.v5), credentials: .none, assignedID: "x")
        #expect(again == .refuse(code: 0x82), "a second CONNECT")
    }

    static func publish(_ topic: String, alias: UInt16? = nil, qos: UInt8 = 1) -> MQTTPacket {
        .publish(
            .init(
                topic: topic, qos: qos, packetID: qos > 0 ? 7 : nil,
                properties: alias.map { [.topicAlias($0), .userProperty("k", "v")] } ?? [], payload: ByteBuffer()))
    }

    static func stored(_ topic: String, wrote: String, qos: UInt8 = 1, user: Bool = false) -> State.Action {
        .store(
            topic: topic,
            .init(
                topic: wrote, qos: qos, packetID: qos > 0 ? 7 : nil, properties: user ? [.userProperty("k", "v")] : [],
                payload: ByteBuffer()))
    }

    @Test func publishesAndTopicAliases() {
        var state = Self.connected()
        let table: [(MQTTPacket, State.Action)] = [
            (Self.publish("a/b"), Self.stored("a/b", wrote: "a/b")),
            // An alias is set with a topic and stands for it afterwards (the alias itself is not stored).
            (Self.publish("a/c", alias: 2), Self.stored("a/c", wrote: "a/c", user: true)),
            (Self.publish("", alias: 2), Self.stored("a/c", wrote: "", user: true)),
            (Self.publish("a/d", alias: 2), Self.stored("a/d", wrote: "a/d", user: true)),
            (Self.publish("", alias: 2), Self.stored("a/d", wrote: "", user: true)),
        ]
        for (packet, expected) in table { #expect(state.receive(packet) == expected) }
        let violations: [(MQTTPacket, UInt8)] = [
            (Self.publish("", alias: 3), 0x82),  // never set
            (Self.publish("x", alias: 5), 0x94),  // above the maximum
            (Self.publish("x", alias: 0), 0x94),  // 0 is not an alias (MQTT-3.3.2-8)
            (Self.publish("a/+"), 0x90),  // wildcards in a topic name
            (Self.publish(""), 0x90),  // no topic and no alias
        ]
        for (packet, code) in violations {
            var fresh = Self.connected()
            guard case .violation(let error) = fresh.receive(packet) else {
                Issue.record("\(packet) was not refused")
                continue
            }
            #expect(error.reasonCode == code, "\(packet)")
            #expect(fresh.phase == .ended)
        }
    }

    @Test func acknowledgementsSubscriptionsAndTheRest() {
        var state = Self.connected()
        let table: [(MQTTPacket, State.Action)] = [
            (.puback(.init(packetID: 1)), .completed(packetID: 1)),
            (.pubcomp(.init(packetID: 2)), .completed(packetID: 2)),
            (.pubrec(.init(packetID: 3)), .received(packetID: 3)),
            // A PUBREC refusing the message ends the flow: no PUBREL (MQTT 5 4.3.3).
            (.pubrec(.init(packetID: 4, reasonCode: 0x87)), .completed(packetID: 4)),
            (.pubrel(.init(packetID: 5)), .release(packetID: 5)),
            (.pingreq, .send(.pingresp)),
            (.unsubscribe(.init(packetID: 6, filters: ["a/#"])), .unsubscribe(packetID: 6, filters: ["a/#"])),
            (
                .subscribe(
                    .init(
                        packetID: 8,
                        subscriptions: [
                            .init(filter: "a/#", qos: 2), .init(filter: "a/#/b", qos: 1),
                            .init(filter: "$share/g/x", qos: 1),
                        ], properties: [.subscriptionIdentifier(9)])),
                .subscribe(
                    packetID: 8,
                    [
                        .valid(.init(filter: "a/#", qos: 2), qos: 2, shared: false), .refused(0x8F),
                        .valid(.init(filter: "$share/g/x", qos: 1), qos: 1, shared: true),
                    ], identifier: 9)
            ),
        ]
        for (packet, expected) in table { #expect(state.receive(packet) == expected, "\(packet)") }
        // No-local on a shared subscription is a protocol error (MQTT 3.8.3.1).
        var shared = Self.connected()
        let noLocal = shared.receive(
            .subscribe(.init(packetID: 1, subscriptions: [.init(filter: "$share/g/x", qos: 1, noLocal: true)])))
        #expect(noLocal == .violation(.protocolError("no-local on a shared subscription")))
        // 3.1.1 refuses an invalid filter with 0x80.
        var old = Self.connected(.v311)
        #expect(
            old.receive(.subscribe(.init(packetID: 1, subscriptions: [.init(filter: "a#", qos: 0)])))
                == .subscribe(packetID: 1, [.refused(0x80)], identifier: nil))
        // Packets only a server sends.
        for packet: MQTTPacket in [
            .connack(.init(sessionPresent: false, reasonCode: 0)), .pingresp,
            .suback(.init(packetID: 1, reasonCodes: [0])),
        ] {
            var fresh = Self.connected()
            guard case .violation(let error) = fresh.receive(packet) else {
                Issue.record("\(packet) accepted")
                continue
            }
            #expect(error.reasonCode == 0x82)
        }
    }

    @Test func disconnectAndTheSessionExpiryRule() {
        var plain = Self.connected(expiry: 30)
        #expect(plain.receive(.disconnect(.init())) == .end(normal: true, expiry: nil))
        #expect(plain.phase == .ended)
        #expect(plain.receive(.pingreq) == .violation(.protocolError("a packet after the conversation ended")))
        var will = Self.connected(expiry: 30)
        #expect(
            will.receive(.disconnect(.init(reasonCode: 0x04, properties: [.sessionExpiryInterval(0)])))
                == .end(normal: false, expiry: 0))
        // A session that was to end with the connection cannot be kept at DISCONNECT (MQTT 3.14.2.2.2).
        var zero = Self.connected(expiry: nil)
        guard case .violation = zero.receive(.disconnect(.init(properties: [.sessionExpiryInterval(60)]))) else {
            Issue.record("expiry raised from 0 at DISCONNECT was accepted")
            return
        }
        var raised = Self.connected(expiry: 10)
        #expect(
            raised.receive(.disconnect(.init(properties: [.sessionExpiryInterval(60)])))
                == .end(normal: true, expiry: 60))
    }
}
