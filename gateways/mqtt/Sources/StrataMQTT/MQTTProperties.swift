import NIOCore

/// One MQTT 5.0 property.
public enum MQTTProperty: Sendable, Hashable {
    case payloadFormatIndicator(UInt8)
    case messageExpiryInterval(UInt32)
    case contentType(String)
    case responseTopic(String)
    case correlationData([UInt8])
    case subscriptionIdentifier(UInt32)
    case sessionExpiryInterval(UInt32)
    case assignedClientIdentifier(String)
    case serverKeepAlive(UInt16)
    case authenticationMethod(String)
    case authenticationData([UInt8])
    case requestProblemInformation(UInt8)
    case willDelayInterval(UInt32)
    case requestResponseInformation(UInt8)
    case responseInformation(String)
    case serverReference(String)
    case reasonString(String)
    case receiveMaximum(UInt16)
    case topicAliasMaximum(UInt16)
    case topicAlias(UInt16)
    case maximumQoS(UInt8)
    case retainAvailable(UInt8)
    case userProperty(String, String)
    case maximumPacketSize(UInt32)
    case wildcardSubscriptionAvailable(UInt8)
    case subscriptionIdentifierAvailable(UInt8)
    case sharedSubscriptionAvailable(UInt8)

    /// The property identifier.
    public var identifier: UInt8 {
        switch self {
        case .payloadFormatIndicator: 0x01
        case .messageExpiryInterval: 0x02
        case .contentType: 0x03
        case .responseTopic: 0x08
        case .correlationData: 0x09
        case .subscriptionIdentifier: 0x0B
        case .sessionExpiryInterval: 0x11
        case .assignedClientIdentifier: 0x12
        case .serverKeepAlive: 0x13
        case .authenticationMethod: 0x15
        case .authenticationData: 0x16
        case .requestProblemInformation: 0x17
        case .willDelayInterval: 0x18
        case .requestResponseInformation: 0x19
        case .responseInformation: 0x1A
        case .serverReference: 0x1C
        case .reasonString: 0x1F
        case .receiveMaximum: 0x21
        case .topicAliasMaximum: 0x22
        case .topicAlias: 0x23
        case .maximumQoS: 0x24
        case .retainAvailable: 0x25
        case .userProperty: 0x26
        case .maximumPacketSize: 0x27
        case .wildcardSubscriptionAvailable: 0x28
        case .subscriptionIdentifierAvailable: 0x29
        case .sharedSubscriptionAvailable: 0x2A
        }
    }
}

/// The property list of a 5.0 packet, in wire order.
public struct MQTTProperties: Sendable, Hashable, ExpressibleByArrayLiteral, Sequence {
    public var items: [MQTTProperty]

    public init(_ items: [MQTTProperty] = []) { self.items = items }
    public init(arrayLiteral elements: MQTTProperty...) { items = elements }

    public func makeIterator() -> IndexingIterator<[MQTTProperty]> { items.makeIterator() }
    public var isEmpty: Bool { items.isEmpty }
    public mutating func append(_ property: MQTTProperty) { items.append(property) }

    public var messageExpiryInterval: UInt32? {
        for case .messageExpiryInterval(let v) in items { return v }
        return nil
    }
    public var sessionExpiryInterval: UInt32? {
        for case .sessionExpiryInterval(let v) in items { return v }
        return nil
    }
    public var topicAlias: UInt16? {
        for case .topicAlias(let v) in items { return v }
        return nil
    }
    public var receiveMaximum: UInt16? {
        for case .receiveMaximum(let v) in items { return v }
        return nil
    }
    public var maximumPacketSize: UInt32? {
        for case .maximumPacketSize(let v) in items { return v }
        return nil
    }
    public var topicAliasMaximum: UInt16? {
        for case .topicAliasMaximum(let v) in items { return v }
        return nil
    }
    public var authenticationMethod: String? {
        for case .authenticationMethod(let v) in items { return v }
        return nil
    }
    public var authenticationData: [UInt8]? {
        for case .authenticationData(let v) in items { return v }
        return nil
    }
    public var subscriptionIdentifiers: [UInt32] {
        items.compactMap { if case .subscriptionIdentifier(let v) = $0 { v } else { nil } }
    }

    // MARK: Wire form

    /// Properties in the packet types where each may appear (MQTT 5.0 table 2-4), by identifier.
    static func isAllowed(_ identifier: UInt8, in packet: UInt8) -> Bool {
        switch identifier {
        case 0x01, 0x02, 0x03, 0x08, 0x09: return packet == 3 || packet == 0  // PUBLISH, will (0)
        case 0x0B: return packet == 3 || packet == 8
        case 0x11: return packet == 1 || packet == 2 || packet == 14
        case 0x12, 0x13, 0x1A, 0x24, 0x25, 0x28, 0x29, 0x2A: return packet == 2
        case 0x15, 0x16: return packet == 1 || packet == 2 || packet == 15
        case 0x17, 0x19: return packet == 1
        case 0x18: return packet == 0
        case 0x1C: return packet == 2 || packet == 14
        case 0x1F: return [2, 4, 5, 6, 7, 9, 11, 14, 15].contains(packet)
        case 0x21, 0x22, 0x27: return packet == 1 || packet == 2
        case 0x23: return packet == 3
        case 0x26: return true
        default: return false
        }
    }

    func write(to buffer: inout ByteBuffer) {
        var body = ByteBuffer()
        for property in items {
            body.writeMQTTVarint(UInt32(property.identifier))
            switch property {
            case .payloadFormatIndicator(let v), .requestProblemInformation(let v), .requestResponseInformation(let v),
                .maximumQoS(let v), .retainAvailable(let v), .wildcardSubscriptionAvailable(let v),
                .subscriptionIdentifierAvailable(let v), .sharedSubscriptionAvailable(let v):
                body.writeInteger(v)
            case .serverKeepAlive(let v), .receiveMaximum(let v), .topicAliasMaximum(let v), .topicAlias(let v):
                body.writeInteger(v)
            case .messageExpiryInterval(let v), .sessionExpiryInterval(let v), .willDelayInterval(let v),
                .maximumPacketSize(let v):
                body.writeInteger(v)
            case .subscriptionIdentifier(let v):
                body.writeMQTTVarint(v)
            case .contentType(let s), .responseTopic(let s), .assignedClientIdentifier(let s),
                .authenticationMethod(let s),
                .responseInformation(let s), .serverReference(let s), .reasonString(let s):
                body.writeMQTTString(s)
            case .correlationData(let b), .authenticationData(let b):
                body.writeMQTTBinary(b)
            case .userProperty(let key, let value):
                body.writeMQTTString(key)
                body.writeMQTTString(value)
            }
        }
        buffer.writeMQTTVarint(UInt32(body.readableBytes))
        buffer.writeBuffer(&body)
    }

    /// Reads a property list; `packet` is the packet type number (0 for will properties).
    static func read(from buffer: inout ByteBuffer, packet: UInt8) throws(MQTTProtocolError) -> MQTTProperties {
        let length = try buffer.readMQTTVarint()
        guard Int(length) <= buffer.readableBytes, var body = buffer.readSlice(length: Int(length)) else {
            throw .malformed("property length \(length) runs past the packet")
        }
        var items: [MQTTProperty] = []
        var seen = Set<UInt8>()
        while body.readableBytes > 0 {
            let raw = try body.readMQTTVarint()
            guard raw <= 0x7F, isAllowed(UInt8(raw), in: packet) else {
                throw .malformed("property 0x\(String(raw, radix: 16)) is not allowed in packet type \(packet)")
            }
            let identifier = UInt8(raw)
            // Only user properties and subscription identifiers (in PUBLISH) may repeat.
            if identifier != 0x26 && !(identifier == 0x0B && packet == 3) {
                guard seen.insert(identifier).inserted else {
                    throw .protocolError("property 0x\(String(identifier, radix: 16)) appears twice")
                }
            }
            let property: MQTTProperty
            switch identifier {
            case 0x01: property = .payloadFormatIndicator(try body.readMQTTByte(max: 1))
            case 0x17: property = .requestProblemInformation(try body.readMQTTByte(max: 1))
            case 0x19: property = .requestResponseInformation(try body.readMQTTByte(max: 1))
            case 0x24: property = .maximumQoS(try body.readMQTTByte(max: 1))
            case 0x25: property = .retainAvailable(try body.readMQTTByte(max: 1))
            case 0x28: property = .wildcardSubscriptionAvailable(try body.readMQTTByte(max: 1))
            case 0x29: property = .subscriptionIdentifierAvailable(try body.readMQTTByte(max: 1))
            case 0x2A: property = .sharedSubscriptionAvailable(try body.readMQTTByte(max: 1))
            case 0x13: property = .serverKeepAlive(try body.readMQTTInteger())
            case 0x21:
                let value: UInt16 = try body.readMQTTInteger()
                guard value > 0 else { throw .protocolError("receive maximum 0") }
                property = .receiveMaximum(value)
            case 0x22: property = .topicAliasMaximum(try body.readMQTTInteger())
            case 0x23:
                let value: UInt16 = try body.readMQTTInteger()
                guard value > 0 else { throw .protocolError("topic alias 0") }
                property = .topicAlias(value)
            case 0x02: property = .messageExpiryInterval(try body.readMQTTInteger())
            case 0x11: property = .sessionExpiryInterval(try body.readMQTTInteger())
            case 0x18: property = .willDelayInterval(try body.readMQTTInteger())
            case 0x27:
                let value: UInt32 = try body.readMQTTInteger()
                guard value > 0 else { throw .protocolError("maximum packet size 0") }
                property = .maximumPacketSize(value)
            case 0x0B:
                let value = try body.readMQTTVarint()
                guard value > 0 else { throw .protocolError("subscription identifier 0") }
                property = .subscriptionIdentifier(value)
            case 0x03: property = .contentType(try body.readMQTTString())
            case 0x08: property = .responseTopic(try body.readMQTTString())
            case 0x12: property = .assignedClientIdentifier(try body.readMQTTString())
            case 0x15: property = .authenticationMethod(try body.readMQTTString())
            case 0x1A: property = .responseInformation(try body.readMQTTString())
            case 0x1C: property = .serverReference(try body.readMQTTString())
            case 0x1F: property = .reasonString(try body.readMQTTString())
            case 0x09: property = .correlationData(try body.readMQTTBinary())
            case 0x16: property = .authenticationData(try body.readMQTTBinary())
            case 0x26: property = .userProperty(try body.readMQTTString(), try body.readMQTTString())
            default: throw .malformed("unknown property 0x\(String(identifier, radix: 16))")
            }
            items.append(property)
        }
        return MQTTProperties(items)
    }
}
