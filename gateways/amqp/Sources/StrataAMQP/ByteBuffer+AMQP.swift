import NIOCore

/// AMQP 0-9-1's field encodings (§4.2.5): big-endian integers, short strings (1-byte length,
/// at most 255 bytes), long strings (4-byte length) and packed bits. Reads are bounds-checked
/// and throw a syntax error (502), which closes the connection.
extension ByteBuffer {
    mutating func readAMQPInteger<T: FixedWidthInteger>(as: T.Type = T.self) throws(AMQPError) -> T {
        guard let value: T = readInteger() else { throw .syntax("frame ends inside a \(T.bitWidth)-bit integer") }
        return value
    }

    mutating func readShortString() throws(AMQPError) -> String {
        let length: UInt8 = try readAMQPInteger()
        guard let string = readString(length: Int(length)) else { throw .syntax("frame ends inside a short string") }
        return string
    }

    /// A long string's bytes; its length is bounded by what the frame holds before anything
    /// is allocated.
    mutating func readLongBytes() throws(AMQPError) -> [UInt8] {
        let length: UInt32 = try readAMQPInteger()
        guard Int(length) <= readableBytes, let bytes = readBytes(length: Int(length)) else {
            throw .syntax("long string of \(length) bytes runs past the frame")
        }
        return bytes
    }

    mutating func readLongString() throws(AMQPError) -> String {
        String(decoding: try readLongBytes(), as: UTF8.self)
    }

    /// Writes a short string; the caller keeps it to 255 bytes (longer ones are cut, which
    /// only happens to texts the server wrote, never to names, which are checked).
    mutating func writeShortString(_ string: String) {
        var utf8 = Array(string.utf8)
        if utf8.count > 255 { utf8 = Array(utf8.prefix(255)) }
        writeInteger(UInt8(utf8.count))
        writeBytes(utf8)
    }

    mutating func writeLongString(_ bytes: some Collection<UInt8>) {
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }

    /// Up to 8 bits packed into one octet, the first in the lowest bit (§4.2.5.2).
    mutating func writeBits(_ bits: Bool...) {
        var octet: UInt8 = 0
        for (index, bit) in bits.enumerated() where bit { octet |= 1 << UInt8(index) }
        writeInteger(octet)
    }

    mutating func readBits(_ count: Int) throws(AMQPError) -> [Bool] {
        let octet: UInt8 = try readAMQPInteger()
        return (0..<count).map { octet & (1 << UInt8($0)) != 0 }
    }
}
