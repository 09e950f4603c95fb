import NIOCore

/// A packet part with properties (acknowledgements, AUTH), for what applies to all of them.
protocol MQTTPropertyCarrier {
    var properties: MQTTProperties { get set }
}

extension MQTTPacket.Ack: MQTTPropertyCarrier {}
extension MQTTPacket.SubscribeAck: MQTTPropertyCarrier {}
extension MQTTPacket.Auth: MQTTPropertyCarrier {}

/// MQTT protocol levels the gateway speaks (CONNECT's protocol level byte).
public enum MQTTProtocolVersion: UInt8, Sendable, Hashable {
    /// MQTT 3.1 (protocol name MQIsdp): 3.1.1's packets, with 3.1's CONNECT and CONNACK rules.
    case v31 = 3
    case v311 = 4
    case v5 = 5
}

/// Every MQTT 3.1.1 / 5.0 control packet, in both directions. Properties are empty in 3.1.1.
public enum MQTTPacket: Sendable, Hashable {
    case connect(Connect)
    case connack(Connack)
    case publish(Publish)
    case puback(Ack)
    case pubrec(Ack)
    case pubrel(Ack)
    case pubcomp(Ack)
    case subscribe(Subscribe)
    case suback(SubscribeAck)
    case unsubscribe(Unsubscribe)
    case unsuback(SubscribeAck)
    case pingreq
    case pingresp
    case disconnect(Disconnect)
    case auth(Auth)

    /// The packet type number of the fixed header.
    public var typeNumber: UInt8 {
        switch self {
        case .connect: 1
        case .connack: 2
        case .publish: 3
        case .puback: 4
        case .pubrec: 5
        case .pubrel: 6
        case .pubcomp: 7
        case .subscribe: 8
        case .suback: 9
        case .unsubscribe: 10
        case .unsuback: 11
        case .pingreq: 12
        case .pingresp: 13
        case .disconnect: 14
        case .auth: 15
        }
    }

    public struct Will: Sendable, Hashable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: UInt8
        public var retain: Bool
        public var properties: MQTTProperties

        public init(topic: String, payload: [UInt8], qos: UInt8, retain: Bool, properties: MQTTProperties = []) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }

    public struct Connect: Sendable, Hashable {
        public var version: MQTTProtocolVersion
        public var clientID: String
        /// Clean Session (3.1.1) / Clean Start (5.0).
        public var cleanStart: Bool
        public var keepAlive: UInt16
        public var username: String?
        public var password: [UInt8]?
        public var will: Will?
        public var properties: MQTTProperties

        public init(
            version: MQTTProtocolVersion, clientID: String, cleanStart: Bool, keepAlive: UInt16,
            username: String? = nil, password: [UInt8]? = nil, will: Will? = nil, properties: MQTTProperties = []
        ) {
            self.version = version
            self.clientID = clientID
            self.cleanStart = cleanStart
            self.keepAlive = keepAlive
            self.username = username
            self.password = password
            self.will = will
            self.properties = properties
        }
    }

    public struct Connack: Sendable, Hashable {
        public var sessionPresent: Bool
        /// 5.0 reason code, or the 3.1.1 return code (0-5).
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(sessionPresent: Bool, reasonCode: UInt8, properties: MQTTProperties = []) {
            self.sessionPresent = sessionPresent
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }

    public struct Publish: Sendable, Hashable {
        /// May be empty in 5.0 when a topic alias stands for it.
        public var topic: String
        public var qos: UInt8
        public var retain: Bool
        public var dup: Bool
        /// Present for QoS 1 and 2.
        public var packetID: UInt16?
        public var properties: MQTTProperties
        public var payload: ByteBuffer

        public init(
            topic: String, qos: UInt8, retain: Bool = false, dup: Bool = false, packetID: UInt16? = nil,
            properties: MQTTProperties = [], payload: ByteBuffer
        ) {
            self.topic = topic
            self.qos = qos
            self.retain = retain
            self.dup = dup
            self.packetID = packetID
            self.properties = properties
            self.payload = payload
        }
    }

    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    public struct Ack: Sendable, Hashable {
        public var packetID: UInt16
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(packetID: UInt16, reasonCode: UInt8 = 0, properties: MQTTProperties = []) {
            self.packetID = packetID
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }

    public struct Subscription: Sendable, Hashable {
        public var filter: String
        public var qos: UInt8
        public var noLocal: Bool
        public var retainAsPublished: Bool
        /// 0 send retained on subscribe, 1 only if the subscription is new, 2 never.
        public var retainHandling: UInt8

        public init(
            filter: String, qos: UInt8, noLocal: Bool = false, retainAsPublished: Bool = false,
            retainHandling: UInt8 = 0
        ) {
            self.filter = filter
            self.qos = qos
            self.noLocal = noLocal
            self.retainAsPublished = retainAsPublished
            self.retainHandling = retainHandling
        }
    }

    public struct Subscribe: Sendable, Hashable {
        public var packetID: UInt16
        public var subscriptions: [Subscription]
        public var properties: MQTTProperties

        public init(packetID: UInt16, subscriptions: [Subscription], properties: MQTTProperties = []) {
            self.packetID = packetID
            self.subscriptions = subscriptions
            self.properties = properties
        }
    }

    /// SUBACK (one reason code per filter) and UNSUBACK (5.0: one per filter; 3.1.1: none).
    public struct SubscribeAck: Sendable, Hashable {
        public var packetID: UInt16
        public var reasonCodes: [UInt8]
        public var properties: MQTTProperties

        public init(packetID: UInt16, reasonCodes: [UInt8], properties: MQTTProperties = []) {
            self.packetID = packetID
            self.reasonCodes = reasonCodes
            self.properties = properties
        }
    }

    public struct Unsubscribe: Sendable, Hashable {
        public var packetID: UInt16
        public var filters: [String]
        public var properties: MQTTProperties

        public init(packetID: UInt16, filters: [String], properties: MQTTProperties = []) {
            self.packetID = packetID
            self.filters = filters
            self.properties = properties
        }
    }

    public struct Disconnect: Sendable, Hashable {
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(reasonCode: UInt8 = 0, properties: MQTTProperties = []) {
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }

    public struct Auth: Sendable, Hashable {
        public var reasonCode: UInt8
        public var properties: MQTTProperties

        public init(reasonCode: UInt8, properties: MQTTProperties = []) {
            self.reasonCode = reasonCode
            self.properties = properties
        }
    }
}

/// Bad bytes from a peer: the 5.0 reason code to send (in CONNACK or DISCONNECT) and a message.
/// A 3.1.1 connection is simply closed.
public struct MQTTProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reasonCode: UInt8
    public var message: String

    public init(_ reasonCode: UInt8, _ message: String) {
        self.reasonCode = reasonCode
        self.message = message
    }

    public static func malformed(_ message: String) -> MQTTProtocolError { MQTTProtocolError(0x81, message) }
    public static func protocolError(_ message: String) -> MQTTProtocolError { MQTTProtocolError(0x82, message) }

    public var description: String { "reason 0x\(String(reasonCode, radix: 16)): \(message)" }
}
