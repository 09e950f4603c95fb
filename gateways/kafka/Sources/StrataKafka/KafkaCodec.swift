import NIOCore
import StrataWire

/// A request the gateway cannot read: the connection is closed with a log line.
public struct KafkaProtocolError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Kafka's length-prefixed frames (a 4-byte big-endian size, then the request). A size above
/// the limit is refused from the prefix, before anything is buffered for it.
struct KafkaFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrameSize: Int
    /// A lower limit in force for now (before SASL authentication), when given.
    var gate: FrameSizeGate?

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let limit = gate.map { min($0.current, maxFrameSize) } ?? maxFrameSize
        guard let frame = try Self.frame(from: &buffer, maxFrameSize: limit) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    /// One whole frame's body, or nil while it is not all there.
    static func frame(from buffer: inout ByteBuffer, maxFrameSize: Int) throws -> ByteBuffer? {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return nil }
        guard size >= 8, Int(size) <= maxFrameSize else {
            throw KafkaProtocolError("request size \(size) outside 8...\(maxFrameSize)")
        }
        guard buffer.readableBytes >= 4 + Int(size) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(size))
    }
}

/// Reads Kafka's primitive types from a request body. `flexible` versions (KIP-482) use
/// compact strings, arrays and bytes (unsigned varint lengths, + 1) and tagged fields.
/// Every length and count is checked against the bytes left before anything is allocated.
struct KafkaReader {
    var buffer: ByteBuffer
    let flexible: Bool

    private static func truncated(_ what: String) -> KafkaProtocolError { KafkaProtocolError("truncated \(what)") }

    mutating func int8() throws -> Int8 {
        guard let value = buffer.readInteger(as: Int8.self) else { throw Self.truncated("int8") }
        return value
    }
    mutating func int16() throws -> Int16 {
        guard let value = buffer.readInteger(as: Int16.self) else { throw Self.truncated("int16") }
        return value
    }
    mutating func int32() throws -> Int32 {
        guard let value = buffer.readInteger(as: Int32.self) else { throw Self.truncated("int32") }
        return value
    }
    mutating func int64() throws -> Int64 {
        guard let value = buffer.readInteger(as: Int64.self) else { throw Self.truncated("int64") }
        return value
    }
    mutating func bool() throws -> Bool { try int8() != 0 }

    mutating func uuid() throws -> [UInt8] {
        guard let bytes = buffer.readBytes(length: 16) else { throw Self.truncated("uuid") }
        return bytes
    }

    mutating func unsignedVarint() throws -> UInt32 {
        var value: UInt32 = 0
        for shift in stride(from: 0, through: 28, by: 7) {
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw Self.truncated("varint") }
            value |= UInt32(byte & 0x7F) << UInt32(shift)
            if byte & 0x80 == 0 { return value }
        }
        throw KafkaProtocolError("varint longer than 5 bytes")
    }

    /// A length: -1 (or compact 0) is null.
    private mutating func length(compact: Bool, wide: Bool) throws -> Int? {
        let length: Int
        if compact {
            length = Int(try unsignedVarint()) - 1
        } else {
            length = wide ? Int(try int32()) : Int(try int16())
        }
        if length < 0 { return nil }
        guard length <= buffer.readableBytes else {
            throw KafkaProtocolError("length \(length) beyond the \(buffer.readableBytes) bytes left")
        }
        return length
    }

    mutating func nullableString() throws -> String? {
        guard let length = try length(compact: flexible, wide: false) else { return nil }
        return buffer.readString(length: length)
    }

    mutating func string() throws -> String {
        guard let value = try nullableString() else { throw KafkaProtocolError("null where a string is required") }
        return value
    }

    /// A request header's client id: always the classic (int16) encoding, even in header v2.
    mutating func classicNullableString() throws -> String? {
        guard let length = try length(compact: false, wide: false) else { return nil }
        return buffer.readString(length: length)
    }

    mutating func nullableBytes() throws -> ByteBuffer? {
        guard let length = try length(compact: flexible, wide: true) else { return nil }
        return buffer.readSlice(length: length)
    }

    /// An array's element count (null: nil). Each element takes at least one byte, so a count
    /// above the bytes left is refused before anything is allocated for it.
    mutating func count() throws -> Int? {
        let count: Int
        if flexible {
            count = Int(try unsignedVarint()) - 1
        } else {
            count = Int(try int32())
        }
        if count < 0 { return nil }
        guard count <= buffer.readableBytes else {
            throw KafkaProtocolError("array of \(count) beyond the \(buffer.readableBytes) bytes left")
        }
        return count
    }

    /// An array (a null array reads as empty); `element` reads one entry, its tagged fields included.
    mutating func array<T>(_ element: (inout KafkaReader) throws -> T) throws -> [T] {
        try nullableArray(element) ?? []
    }

    mutating func nullableArray<T>(_ element: (inout KafkaReader) throws -> T) throws -> [T]? {
        guard let count = try count() else { return nil }
        var items: [T] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try element(&self)) }
        return items
    }

    /// The `[topic name, [partition…]]` arrays most requests carry: `partition` reads one
    /// partition entry (its own tagged fields included); each topic's tagged fields are read here.
    mutating func topics<T>(_ partition: (inout KafkaReader) throws -> T) throws -> [(name: String, partitions: [T])] {
        try array { reader in
            let name = try reader.string()
            let partitions = try reader.array(partition)
            try reader.taggedFields()
            return (name, partitions)
        }
    }

    /// Skips a struct's tagged fields (flexible versions only).
    mutating func taggedFields() throws {
        guard flexible else { return }
        let count = try unsignedVarint()
        for _ in 0..<count {
            _ = try unsignedVarint()  // tag
            let size = Int(try unsignedVarint())
            guard buffer.readableBytes >= size else { throw Self.truncated("tagged field") }
            buffer.moveReaderIndex(forwardBy: size)
        }
    }
}

/// Writes Kafka's primitive types into a response body (see `KafkaReader` for `flexible`).
/// Record batches are not copied in: the body is a list of buffers (`parts`), the fetched
/// batches among them as the journal returned them, written to the socket one after another.
struct KafkaWriter {
    var buffer: ByteBuffer
    let flexible: Bool
    /// Finished parts of the body before `buffer`.
    private var finished: [ByteBuffer] = []

    /// The whole body, in order.
    var parts: [ByteBuffer] { finished + [buffer] }

    init(flexible: Bool, capacity: Int = 256) {
        buffer = ByteBuffer()
        buffer.reserveCapacity(capacity)
        self.flexible = flexible
    }

    mutating func int8(_ value: Int8) { buffer.writeInteger(value) }
    mutating func int16(_ value: Int16) { buffer.writeInteger(value) }
    mutating func int32(_ value: Int32) { buffer.writeInteger(value) }
    mutating func int64(_ value: Int64) { buffer.writeInteger(value) }
    mutating func bool(_ value: Bool) { buffer.writeInteger(Int8(value ? 1 : 0)) }
    mutating func uuid(_ bytes: [UInt8]) {
        precondition(bytes.count == 16)
        buffer.writeBytes(bytes)
    }

    mutating func unsignedVarint(_ value: UInt32) {
        var value = value
        while value >= 0x80 {
            buffer.writeInteger(UInt8(value & 0x7F | 0x80))
            value >>= 7
        }
        buffer.writeInteger(UInt8(value))
    }

    private mutating func length(_ length: Int?, wide: Bool) {
        if flexible {
            unsignedVarint(UInt32((length ?? -1) + 1))
        } else if wide {
            int32(Int32(length ?? -1))
        } else {
            int16(Int16(length ?? -1))
        }
    }

    mutating func nullableString(_ value: String?) {
        guard var value else { return length(nil, wide: false) }
        if !flexible && value.utf8.count > Int(Int16.max) {
            // A classic string holds at most 32767 bytes: cut at a character boundary.
            var utf8 = value.utf8.prefix(Int(Int16.max))
            while !utf8.isEmpty, String(utf8) == nil { utf8 = utf8.dropLast() }
            value = String(utf8) ?? ""
        }
        length(value.utf8.count, wide: false)
        buffer.writeString(value)
    }

    mutating func string(_ value: String) { nullableString(value) }

    mutating func nullableBytes(_ value: ByteBuffer?) {
        length(value?.readableBytes, wide: true)
        if var value { buffer.writeBuffer(&value) }
    }

    /// Record batches as fetched: the bytes go out as they were stored, without a copy.
    mutating func records(_ batches: [ByteBuffer]) {
        length(batches.reduce(0) { $0 + $1.readableBytes }, wide: true)
        guard !batches.isEmpty else { return }
        finished.append(buffer)
        finished.append(contentsOf: batches)
        buffer = ByteBuffer()
        buffer.reserveCapacity(256)
    }

    mutating func count(_ count: Int?) {
        if flexible {
            unsignedVarint(UInt32((count ?? -1) + 1))
        } else {
            int32(Int32(count ?? -1))
        }
    }

    mutating func array<T>(_ items: [T], _ element: (inout KafkaWriter, T) -> Void) {
        count(items.count)
        for item in items { element(&self, item) }
    }

    /// The `[topic name, [partition…]]` arrays most responses carry (see `KafkaReader.topics`).
    mutating func topics<T>(_ topics: [(String, [T])], _ partition: (inout KafkaWriter, T) -> Void) {
        array(topics) { writer, topic in
            writer.string(topic.0)
            writer.array(topic.1, partition)
            writer.taggedFields()
        }
    }

    /// No tagged fields (flexible versions only).
    mutating func taggedFields() {
        if flexible { unsignedVarint(0) }
    }
}
