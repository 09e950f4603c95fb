import NIOCore
import StrataJournal

/// Field encodings of the journal protocol: big-endian integers, strings as u16 length + UTF-8,
/// byte strings as u32 length + bytes. Every read is bounds-checked and throws a protocol error.
extension ByteBuffer {
    /// Writes a string; one longer than 65,535 UTF-8 bytes is cut at a character boundary.
    public mutating func writeWireString(_ string: String) {
        var utf8 = Array(string.utf8.prefix(Int(UInt16.max)))
        if utf8.count < string.utf8.count {
            while let last = utf8.last, last & 0xC0 == 0x80 { utf8.removeLast() }  // continuation bytes
            if let last = utf8.last, last >= 0xC0 { utf8.removeLast() }  // a lead byte without its tail
        }
        writeInteger(UInt16(utf8.count))
        writeBytes(utf8)
    }

    public mutating func writeWireBytes(_ bytes: [UInt8]) {
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }

    public mutating func writeWireBuffer(_ buffer: ByteBuffer) {
        writeInteger(UInt32(buffer.readableBytes))
        writeImmutableBuffer(buffer)
    }

    public mutating func readWireInteger<T: FixedWidthInteger>(as: T.Type = T.self) throws(JournalError) -> T {
        guard let value: T = readInteger() else { throw Self.truncated("a \(T.bitWidth)-bit integer") }
        return value
    }

    public mutating func readWireString() throws(JournalError) -> String {
        let length: UInt16 = try readWireInteger()
        guard let bytes = readBytes(length: Int(length)) else { throw Self.truncated("a string of \(length) bytes") }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw JournalError(.protocolError, "a string field is not valid UTF-8")
        }
        return string
    }

    public mutating func readWireBytes() throws(JournalError) -> [UInt8] {
        let length: UInt32 = try readWireInteger()
        guard Int(length) <= readableBytes, let bytes = readBytes(length: Int(length)) else {
            throw Self.truncated("\(length) bytes")
        }
        return bytes
    }

    /// A byte string as a slice of this buffer (no copy).
    public mutating func readWireBuffer() throws(JournalError) -> ByteBuffer {
        let length: UInt32 = try readWireInteger()
        guard Int(length) <= readableBytes, let slice = readSlice(length: Int(length)) else {
            throw Self.truncated("\(length) bytes")
        }
        return slice
    }

    /// Throws unless every byte was read.
    public func expectFullyRead(_ what: String) throws(JournalError) {
        if readableBytes != 0 {
            throw JournalError(.protocolError, "\(readableBytes) unexpected bytes after \(what)")
        }
    }

    static func truncated(_ what: String) -> JournalError {
        JournalError(.protocolError, "frame ends before \(what)")
    }
}
