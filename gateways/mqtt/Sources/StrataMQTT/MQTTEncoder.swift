import NIOCore

extension MQTTPacket {
    /// Writes the packet (fixed header, remaining length, body) as `version` frames it.
    public func write(version: MQTTProtocolVersion, into out: inout ByteBuffer) {
        if case .publish(let publish) = self {
            publish.write(version: version, into: &out)  // the hot path: no intermediate body
            return
        }
        let v5 = version == .v5
        var body = ByteBuffer()
        var flags: UInt8 = 0
        switch self {
        case .connect(let c):
            body.writeMQTTString(c.version == .v31 ? "MQIsdp" : "MQTT")
            body.writeInteger(c.version.rawValue)
            var connectFlags: UInt8 = c.cleanStart ? 0x02 : 0
            if let will = c.will {
                connectFlags |= 0x04 | (will.qos << 3) | (will.retain ? 0x20 : 0)
            }
            if c.password != nil { connectFlags |= 0x40 }
            if c.username != nil { connectFlags |= 0x80 }
            body.writeInteger(connectFlags)
            body.writeInteger(c.keepAlive)
            if c.version == .v5 { c.properties.write(to: &body) }
            body.writeMQTTString(c.clientID)
            if let will = c.will {
                if c.version == .v5 { will.properties.write(to: &body) }
                body.writeMQTTString(will.topic)
                body.writeMQTTBinary(will.payload)
            }
            if let username = c.username { body.writeMQTTString(username) }
            if let password = c.password { body.writeMQTTBinary(password) }
        case .connack(let c):
            // 3.1's first CONNACK byte is reserved (it has no session present flag).
            body.writeInteger(c.sessionPresent && version != .v31 ? UInt8(1) : 0)
            body.writeInteger(c.reasonCode)
            if v5 { c.properties.write(to: &body) }
        case .publish:
            preconditionFailure("written above")
        case .puback(let a), .pubrec(let a), .pubrel(let a), .pubcomp(let a):
            if case .pubrel = self { flags = 0x02 }
            body.writeInteger(a.packetID)
            // 5.0 may leave out a success reason code without properties.
            if v5 && (a.reasonCode != 0 || !a.properties.isEmpty) {
                body.writeInteger(a.reasonCode)
                if !a.properties.isEmpty { a.properties.write(to: &body) }
            }
        case .subscribe(let s):
            flags = 0x02
            body.writeInteger(s.packetID)
            if v5 { s.properties.write(to: &body) }
            for sub in s.subscriptions {
                body.writeMQTTString(sub.filter)
                var options = sub.qos
                if v5 {
                    options |= (sub.noLocal ? 0x04 : 0) | (sub.retainAsPublished ? 0x08 : 0) | (sub.retainHandling << 4)
                }
                body.writeInteger(options)
            }
        case .suback(let a), .unsuback(let a):
            body.writeInteger(a.packetID)
            if v5 { a.properties.write(to: &body) }
            if case .suback = self {
                body.writeBytes(a.reasonCodes)
            } else if v5 {
                body.writeBytes(a.reasonCodes)
            }
        case .unsubscribe(let u):
            flags = 0x02
            body.writeInteger(u.packetID)
            if v5 { u.properties.write(to: &body) }
            for filter in u.filters { body.writeMQTTString(filter) }
        case .pingreq, .pingresp:
            break
        case .disconnect(let d):
            if v5 && (d.reasonCode != 0 || !d.properties.isEmpty) {
                body.writeInteger(d.reasonCode)
                if !d.properties.isEmpty { d.properties.write(to: &body) }
            }
        case .auth(let a):
            body.writeInteger(a.reasonCode)
            a.properties.write(to: &body)
        }
        out.writeInteger(typeNumber << 4 | flags)
        out.writeMQTTVarint(UInt32(body.readableBytes))
        out.writeBuffer(&body)
    }
}

extension MQTTPacket.Publish {
    /// The encoded properties (5.0) and the remaining length of this PUBLISH.
    private func layout(_ version: MQTTProtocolVersion) -> (properties: ByteBuffer?, remaining: Int) {
        var properties: ByteBuffer?
        if version == .v5 {
            var buffer = ByteBuffer()
            self.properties.write(to: &buffer)
            properties = buffer
        }
        let remaining =
            2 + topic.utf8.count + (packetID == nil ? 0 : 2) + (properties?.readableBytes ?? 0) + payload.readableBytes
        return (properties, remaining)
    }

    /// Writes the PUBLISH straight into `out`: the payload is copied once, not via a body buffer.
    func write(version: MQTTProtocolVersion, into out: inout ByteBuffer) {
        let (properties, remaining) = layout(version)
        out.writeInteger(UInt8(3 << 4) | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0))
        out.writeMQTTVarint(UInt32(remaining))
        out.writeMQTTString(topic)
        if let packetID { out.writeInteger(packetID) }
        if let properties { out.writeImmutableBuffer(properties) }
        out.writeImmutableBuffer(payload)
    }

    /// The bytes the packet takes on the wire, for a peer's maximum packet size, without
    /// encoding the payload.
    public func encodedSize(version: MQTTProtocolVersion) -> Int {
        let remaining = layout(version).remaining
        let lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4
        return 1 + lengthBytes + remaining
    }
}
