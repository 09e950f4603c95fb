import Foundation
import NIOCore
import StrataJournal

/// A record a gateway keeps in the journal's KV store, in binary: a version byte, then its
/// fields in the wire encodings of `ByteBuffer+Wire` (big-endian integers, u16-length strings,
/// u32-length byte strings, u32 counts before lists). One mechanism for every gateway's
/// records (MQTT sessions, Kafka groups): a byte string costs its length, not the 3.5× a JSON
/// array of numbers took. Every read is bounded by the bytes there are; a record that does not
/// parse, or of a version this build does not know, is refused as `corruptData`, never read as
/// empty.
public protocol KVRecord: Sendable {
    /// The version this build writes; it reads every version from 1 up to it.
    static var recordVersion: UInt8 { get }
    func write(to buffer: inout ByteBuffer)
    init(reading buffer: inout ByteBuffer, version: UInt8) throws(JournalError)
}

extension KVRecord {
    /// The stored form.
    public var kvBytes: [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.recordVersion)
        write(to: &buffer)
        return Array(buffer.readableBytesView)
    }

    public init(kvBytes bytes: [UInt8]) throws(JournalError) {
        var buffer = ByteBuffer(bytes: bytes)
        guard let version: UInt8 = buffer.readInteger(), (1...Self.recordVersion).contains(version) else {
            throw JournalError(
                .corruptData, "\(Self.self): record version \(bytes.first.map(String.init) ?? "none") is unknown")
        }
        do {
            try self.init(reading: &buffer, version: version)
            try buffer.expectFullyRead("a \(Self.self) record")
        } catch {
            throw JournalError(.corruptData, "\(Self.self): \(error.message)")
        }
    }
}

extension KVRecord where Self: Decodable {
    /// A stored record: binary, or JSON as written before binary records (it starts with `{`).
    public init(stored bytes: [UInt8]) throws {
        if bytes.first == UInt8(ascii: "{") {
            self = try JSONDecoder().decode(Self.self, from: Data(bytes))
        } else {
            try self.init(kvBytes: bytes)
        }
    }
}

extension ByteBuffer {
    public mutating func writeWireBool(_ value: Bool) {
        writeInteger(UInt8(value ? 1 : 0))
    }

    public mutating func readWireBool() throws(JournalError) -> Bool {
        switch try readWireInteger(as: UInt8.self) {
        case 0: return false
        case 1: return true
        case let other: throw JournalError(.protocolError, "a flag is \(other), not 0 or 1")
        }
    }

    /// A presence flag, then the value when there is one.
    public mutating func writeWireOptional<T>(_ value: T?, _ write: (inout ByteBuffer, T) -> Void) {
        writeWireBool(value != nil)
        if let value { write(&self, value) }
    }

    public mutating func readWireOptional<T>(_ read: (inout ByteBuffer) throws(JournalError) -> T) throws(JournalError)
        -> T?
    {
        try readWireBool() ? try read(&self) : nil
    }

    /// A u32 count, then each element.
    public mutating func writeWireList<C: Collection>(_ elements: C, _ write: (inout ByteBuffer, C.Element) -> Void) {
        writeInteger(UInt32(elements.count))
        for element in elements { write(&self, element) }
    }

    /// A u32 count, then each element; a count above the bytes left is refused before any is read.
    public mutating func readWireList<T>(_ read: (inout ByteBuffer) throws(JournalError) -> T) throws(JournalError)
        -> [T]
    {
        let count = Int(try readWireInteger(as: UInt32.self))
        guard count <= readableBytes else {
            throw JournalError(.protocolError, "a list of \(count) in \(readableBytes) bytes")
        }
        var elements: [T] = []
        for _ in 0..<count { elements.append(try read(&self)) }
        return elements
    }
}
