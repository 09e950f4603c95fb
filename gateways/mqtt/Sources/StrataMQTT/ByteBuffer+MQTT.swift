import NIOCore

/// MQTT's field encodings: variable byte integers (1-4 bytes), big-endian integers, UTF-8
/// strings and binary data with a 2-byte length. Reads are bounds-checked and throw the
/// reason code a bad field deserves.
extension ByteBuffer {
    /// The largest remaining length / variable byte integer (4 bytes).
    static let mqttVarintMax: UInt32 = 268_435_455

    mutating func writeMQTTVarint(_ value: UInt32) {
        precondition(value <= Self.mqttVarintMax)
        var rest = value
        repeat {
            var byte = UInt8(rest & 0x7F)
            rest >>= 7
            if rest > 0 { byte |= 0x80 }
            writeInteger(byte)
        } while rest > 0
    }

    /// Reads a variable byte integer; more than 4 bytes is malformed.
    mutating func readMQTTVarint() throws(MQTTProtocolError) -> UInt32 {
        var value: UInt32 = 0
        for index in 0..<4 {
            guard let byte: UInt8 = readInteger() else {
                throw .malformed("variable byte integer runs past the packet")
            }
            value |= UInt32(byte & 0x7F) << (7 * UInt32(index))
            if byte & 0x80 == 0 { return value }
        }
        throw .malformed("variable byte integer longer than 4 bytes")
    }

    mutating func readMQTTInteger<T: FixedWidthInteger>(as: T.Type = T.self) throws(MQTTProtocolError) -> T {
        guard let value: T = readInteger() else { throw .malformed("packet ends inside a \(T.bitWidth)-bit integer") }
        return value
    }

    mutating func readMQTTByte(max: UInt8) throws(MQTTProtocolError) -> UInt8 {
        let value: UInt8 = try readMQTTInteger()
        guard value <= max else { throw .protocolError("property value \(value) is above \(max)") }
        return value
    }

    mutating func writeMQTTString(_ string: String) {
        let utf8 = Array(string.utf8)
        precondition(utf8.count <= Int(UInt16.max), "MQTT strings are at most 65,535 bytes")
        writeInteger(UInt16(utf8.count))
        writeBytes(utf8)
    }

    /// A UTF-8 string: well-formed, without U+0000 (MQTT 1.5.4).
    mutating func readMQTTString() throws(MQTTProtocolError) -> String {
        let length: UInt16 = try readMQTTInteger()
        guard let bytes = readBytes(length: Int(length)) else { throw .malformed("string runs past the packet") }
        guard !bytes.contains(0), let string = String(validating: bytes, as: UTF8.self) else {
            throw .malformed("string is not valid UTF-8 or contains U+0000")
        }
        return string
    }

    mutating func writeMQTTBinary(_ bytes: [UInt8]) {
        precondition(bytes.count <= Int(UInt16.max))
        writeInteger(UInt16(bytes.count))
        writeBytes(bytes)
    }

    mutating func readMQTTBinary() throws(MQTTProtocolError) -> [UInt8] {
        let length: UInt16 = try readMQTTInteger()
        guard let bytes = readBytes(length: Int(length)) else { throw .malformed("binary data runs past the packet") }
        return bytes
    }
}
