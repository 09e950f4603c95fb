import NIOCore

/// Splits bytes into MQTT control packets. The remaining length is bounded by
/// `maxPacketSize` as soon as the fixed header is in, before the body is waited for.
/// A server-side decoder starts without a version and learns it from CONNECT.
public struct MQTTDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = MQTTPacket

    public var version: MQTTProtocolVersion?
    public var maxPacketSize: Int

    public init(version: MQTTProtocolVersion? = nil, maxPacketSize: Int = 1 << 20) {
        self.version = version
        self.maxPacketSize = maxPacketSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> MQTTPacket? {
        guard let first: UInt8 = buffer.getInteger(at: buffer.readerIndex) else { return nil }
        var remaining: UInt32 = 0
        var headerLength = 1
        while true {
            guard let byte: UInt8 = buffer.getInteger(at: buffer.readerIndex + headerLength) else { return nil }
            remaining |= UInt32(byte & 0x7F) << (7 * UInt32(headerLength - 1))
            headerLength += 1
            if byte & 0x80 == 0 { break }
            if headerLength == 5 { throw MQTTProtocolError.malformed("remaining length longer than 4 bytes") }
        }
        let total = headerLength + Int(remaining)
        guard total <= maxPacketSize else {
            throw MQTTProtocolError(
                0x95, "packet of \(total) bytes exceeds the maximum packet size of \(maxPacketSize)")
        }
        guard buffer.readableBytes >= total else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        var body = buffer.readSlice(length: Int(remaining))!
        let packet = try parse(type: first >> 4, flags: first & 0x0F, body: &body)
        if case .connect(let connect) = packet { version = connect.version }
        return packet
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> MQTTPacket? {
        try decode(buffer: &buffer)
    }

    private func requireFlags(_ flags: UInt8, _ expected: UInt8, _ name: String) throws(MQTTProtocolError) {
        guard flags == expected else { throw .malformed("\(name) with fixed-header flags \(flags)") }
    }

    private func parse(type: UInt8, flags: UInt8, body: inout ByteBuffer) throws(MQTTProtocolError) -> MQTTPacket {
        if type == 1 { return .connect(try parseConnect(flags: flags, body: &body)) }
        guard let version else { throw .protocolError("the first packet must be CONNECT") }
        let v5 = version == .v5
        let packet: MQTTPacket
        switch type {
        case 2:
            try requireFlags(flags, 0, "CONNACK")
            let acknowledge: UInt8 = try body.readMQTTInteger()
            guard acknowledge & 0xFE == 0 else { throw .malformed("CONNACK acknowledge flags \(acknowledge)") }
            let code: UInt8 = try body.readMQTTInteger()
            packet = .connack(
                MQTTPacket.Connack(
                    sessionPresent: acknowledge == 1, reasonCode: code,
                    properties: v5 ? try MQTTProperties.read(from: &body, packet: 2) : []))
        case 3:
            let qos = (flags >> 1) & 0x03
            guard qos < 3 else { throw .malformed("PUBLISH with QoS 3") }
            let dup = flags & 0x08 != 0
            if qos == 0 && dup { throw .malformed("PUBLISH with QoS 0 and DUP set") }
            let topic = try body.readMQTTString()
            var packetID: UInt16?
            if qos > 0 {
                let id: UInt16 = try body.readMQTTInteger()
                guard id != 0 else { throw .malformed("PUBLISH with packet identifier 0") }
                packetID = id
            }
            let properties = v5 ? try MQTTProperties.read(from: &body, packet: 3) : []
            packet = .publish(
                MQTTPacket.Publish(
                    topic: topic, qos: qos, retain: flags & 0x01 != 0, dup: dup, packetID: packetID,
                    properties: properties, payload: body))
            body.moveReaderIndex(to: body.writerIndex)
        case 4, 5, 6, 7:
            try requireFlags(flags, type == 6 ? 0x02 : 0, "acknowledgement type \(type)")
            let ack = try parseAck(body: &body, type: type, v5: v5)
            packet = [4: .puback(ack), 5: .pubrec(ack), 6: .pubrel(ack), 7: .pubcomp(ack)][type]!
        case 8:
            try requireFlags(flags, 0x02, "SUBSCRIBE")
            let id = try readPacketID(&body)
            let properties = v5 ? try MQTTProperties.read(from: &body, packet: 8) : []
            var subscriptions: [MQTTPacket.Subscription] = []
            repeat {
                let filter = try body.readMQTTString()
                let options: UInt8 = try body.readMQTTInteger()
                let qos = options & 0x03
                let retainHandling = (options >> 4) & 0x03
                guard qos < 3, retainHandling < 3, options & 0xC0 == 0, v5 || options & 0xFC == 0 else {
                    throw .malformed("subscription options \(options)")
                }
                subscriptions.append(
                    MQTTPacket.Subscription(
                        filter: filter, qos: qos, noLocal: options & 0x04 != 0, retainAsPublished: options & 0x08 != 0,
                        retainHandling: retainHandling))
            } while body.readableBytes > 0
            packet = .subscribe(
                MQTTPacket.Subscribe(packetID: id, subscriptions: subscriptions, properties: properties))
        case 9, 11:
            try requireFlags(flags, 0, type == 9 ? "SUBACK" : "UNSUBACK")
            let id = try readPacketID(&body)
            let properties = v5 ? try MQTTProperties.read(from: &body, packet: type) : []
            let codes = body.readBytes(length: body.readableBytes) ?? []
            if type == 9 && codes.isEmpty { throw .malformed("SUBACK without reason codes") }
            let ack = MQTTPacket.SubscribeAck(packetID: id, reasonCodes: codes, properties: properties)
            packet = type == 9 ? .suback(ack) : .unsuback(ack)
        case 10:
            try requireFlags(flags, 0x02, "UNSUBSCRIBE")
            let id = try readPacketID(&body)
            let properties = v5 ? try MQTTProperties.read(from: &body, packet: 10) : []
            var filters: [String] = []
            repeat { filters.append(try body.readMQTTString()) } while body.readableBytes > 0
            packet = .unsubscribe(MQTTPacket.Unsubscribe(packetID: id, filters: filters, properties: properties))
        case 12, 13:
            try requireFlags(flags, 0, type == 12 ? "PINGREQ" : "PINGRESP")
            packet = type == 12 ? .pingreq : .pingresp
        case 14:
            try requireFlags(flags, 0, "DISCONNECT")
            var reason: UInt8 = 0
            var properties: MQTTProperties = []
            if v5 && body.readableBytes > 0 {
                reason = try body.readMQTTInteger()
                if body.readableBytes > 0 { properties = try MQTTProperties.read(from: &body, packet: 14) }
            }
            packet = .disconnect(MQTTPacket.Disconnect(reasonCode: reason, properties: properties))
        case 15 where v5:
            try requireFlags(flags, 0, "AUTH")
            var reason: UInt8 = 0
            var properties: MQTTProperties = []
            if body.readableBytes > 0 {
                reason = try body.readMQTTInteger()
                if body.readableBytes > 0 { properties = try MQTTProperties.read(from: &body, packet: 15) }
            }
            packet = .auth(MQTTPacket.Auth(reasonCode: reason, properties: properties))
        default:
            throw .malformed("reserved packet type \(type)")
        }
        guard body.readableBytes == 0 else {
            throw .malformed("\(body.readableBytes) bytes after a type \(type) packet")
        }
        return packet
    }

    private func readPacketID(_ body: inout ByteBuffer) throws(MQTTProtocolError) -> UInt16 {
        let id: UInt16 = try body.readMQTTInteger()
        guard id != 0 else { throw .malformed("packet identifier 0") }
        return id
    }

    private func parseAck(body: inout ByteBuffer, type: UInt8, v5: Bool) throws(MQTTProtocolError) -> MQTTPacket.Ack {
        let id = try readPacketID(&body)
        var reason: UInt8 = 0
        var properties: MQTTProperties = []
        if v5 && body.readableBytes > 0 {
            reason = try body.readMQTTInteger()
            if body.readableBytes > 0 { properties = try MQTTProperties.read(from: &body, packet: type) }
        }
        return MQTTPacket.Ack(packetID: id, reasonCode: reason, properties: properties)
    }

    private func parseConnect(flags: UInt8, body: inout ByteBuffer) throws(MQTTProtocolError) -> MQTTPacket.Connect {
        try requireFlags(flags, 0, "CONNECT")
        let name = try body.readMQTTString()
        let level: UInt8 = try body.readMQTTInteger()
        guard name == "MQTT" || name == "MQIsdp" else { throw .protocolError("protocol name \(name)") }
        // MQIsdp is 3.1's name (level 3); MQTT names 3.1.1 (4) and 5.0 (5).
        guard let version = MQTTProtocolVersion(rawValue: level), (name == "MQIsdp") == (version == .v31) else {
            throw MQTTProtocolError(0x84, "unsupported protocol \(name) level \(level)")
        }
        let connectFlags: UInt8 = try body.readMQTTInteger()
        guard connectFlags & 0x01 == 0 else { throw .malformed("CONNECT reserved flag set") }
        let willFlag = connectFlags & 0x04 != 0
        let willQoS = (connectFlags >> 3) & 0x03
        let willRetain = connectFlags & 0x20 != 0
        let hasPassword = connectFlags & 0x40 != 0
        let hasUsername = connectFlags & 0x80 != 0
        guard willQoS < 3, willFlag || (willQoS == 0 && !willRetain) else {
            throw .malformed("CONNECT will flags \(connectFlags)")
        }
        if version != .v5 && hasPassword && !hasUsername {
            throw .malformed("CONNECT with a password but no user name")
        }
        let keepAlive: UInt16 = try body.readMQTTInteger()
        let properties = version == .v5 ? try MQTTProperties.read(from: &body, packet: 1) : []
        let clientID = try body.readMQTTString()
        var will: MQTTPacket.Will?
        if willFlag {
            let willProperties = version == .v5 ? try MQTTProperties.read(from: &body, packet: 0) : []
            let topic = try body.readMQTTString()
            // A will is published like any message: its topic must be a valid topic name
            // (not empty, no wildcards), or the will could never be delivered correctly.
            guard MQTTTopic.isValidName(topic) else {
                throw .malformed("CONNECT will topic '\(topic)' is not a topic name")
            }
            let payload = try body.readMQTTBinary()
            will = MQTTPacket.Will(
                topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = hasUsername ? try body.readMQTTString() : nil
        let password = hasPassword ? try body.readMQTTBinary() : nil
        // Bytes the flags do not announce (a user name with the user name flag clear, …): the
        // packet is malformed and the connection closes without CONNACK [MQTT-3.1.4-1].
        guard body.readableBytes == 0 else {
            throw .malformed("CONNECT payload has \(body.readableBytes) bytes its flags do not announce")
        }
        return MQTTPacket.Connect(
            version: version, clientID: clientID, cleanStart: connectFlags & 0x02 != 0, keepAlive: keepAlive,
            username: username, password: password, will: will, properties: properties)
    }
}
