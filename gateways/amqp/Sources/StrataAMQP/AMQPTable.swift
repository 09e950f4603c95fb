import NIOCore

/// A field value of an AMQP table or array, with RabbitMQ's type letters (the 0-9-1 errata
/// that every RabbitMQ client follows, not the spec's original list).
public indirect enum AMQPFieldValue: Sendable, Hashable {
    case bool(Bool)  // t
    case int8(Int8)  // b
    case uint8(UInt8)  // B
    case int16(Int16)  // s
    case uint16(UInt16)  // u
    case int32(Int32)  // I
    case uint32(UInt32)  // i
    case int64(Int64)  // l
    case float(Float)  // f
    case double(Double)  // d
    case decimal(scale: UInt8, value: UInt32)  // D
    case longString([UInt8])  // S
    case array([AMQPFieldValue])  // A
    case timestamp(UInt64)  // T
    case table(AMQPTable)  // F
    case void  // V
    case bytes([UInt8])  // x

    public static func string(_ string: String) -> AMQPFieldValue { .longString(Array(string.utf8)) }

    /// The value as text, when it is a string (S or x).
    public var stringValue: String? {
        switch self {
        case .longString(let bytes), .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// The value as an integer, when it is one of the integer types.
    public var integerValue: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .timestamp(let v): v <= UInt64(Int64.max) ? Int64(v) : nil
        default: nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }
}

/// An AMQP field table: named values in the order they came (RabbitMQ keeps the order, and
/// headers-exchange matching and x-death rewriting depend on names, not positions).
public struct AMQPTable: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    public struct Entry: Sendable, Hashable {
        public var key: String
        public var value: AMQPFieldValue
    }

    public var entries: [Entry]

    public init(_ entries: [Entry] = []) { self.entries = entries }

    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) {
        entries = elements.map { Entry(key: $0.0, value: $0.1) }
    }

    public var isEmpty: Bool { entries.isEmpty }

    public subscript(key: String) -> AMQPFieldValue? {
        get { entries.first { $0.key == key }?.value }
        set {
            if let index = entries.firstIndex(where: { $0.key == key }) {
                if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
            } else if let newValue {
                entries.append(Entry(key: key, value: newValue))
            }
        }
    }

    /// Tables nest (F and A inside F); deeper than this is refused rather than recursed into.
    static let maxDepth = 32
}

extension ByteBuffer {
    public mutating func writeAMQPTable(_ table: AMQPTable) {
        let sizeIndex = writerIndex
        writeInteger(UInt32(0))
        for entry in table.entries {
            writeShortString(entry.key)
            writeAMQPFieldValue(entry.value)
        }
        setInteger(UInt32(writerIndex - sizeIndex - 4), at: sizeIndex)
    }

    mutating func writeAMQPFieldValue(_ value: AMQPFieldValue) {
        func tag(_ letter: Character) { writeInteger(letter.asciiValue!) }
        switch value {
        case .bool(let v):
            tag("t")
            writeInteger(UInt8(v ? 1 : 0))
        case .int8(let v):
            tag("b")
            writeInteger(v)
        case .uint8(let v):
            tag("B")
            writeInteger(v)
        case .int16(let v):
            tag("s")
            writeInteger(v)
        case .uint16(let v):
            tag("u")
            writeInteger(v)
        case .int32(let v):
            tag("I")
            writeInteger(v)
        case .uint32(let v):
            tag("i")
            writeInteger(v)
        case .int64(let v):
            tag("l")
            writeInteger(v)
        case .float(let v):
            tag("f")
            writeInteger(v.bitPattern)
        case .double(let v):
            tag("d")
            writeInteger(v.bitPattern)
        case .decimal(let scale, let v):
            tag("D")
            writeInteger(scale)
            writeInteger(v)
        case .longString(let bytes):
            tag("S")
            writeLongString(bytes)
        case .array(let values):
            tag("A")
            let sizeIndex = writerIndex
            writeInteger(UInt32(0))
            for value in values { writeAMQPFieldValue(value) }
            setInteger(UInt32(writerIndex - sizeIndex - 4), at: sizeIndex)
        case .timestamp(let v):
            tag("T")
            writeInteger(v)
        case .table(let table):
            tag("F")
            writeAMQPTable(table)
        case .void:
            tag("V")
        case .bytes(let bytes):
            tag("x")
            writeLongString(bytes)
        }
    }

    public mutating func readAMQPTable() throws(AMQPError) -> AMQPTable {
        try readAMQPTable(depth: 0)
    }

    mutating func readAMQPTable(depth: Int) throws(AMQPError) -> AMQPTable {
        var body = try readSizedSlice("table")
        var table = AMQPTable()
        while body.readableBytes > 0 {
            let key = try body.readShortString()
            table.entries.append(.init(key: key, value: try body.readAMQPFieldValue(depth: depth)))
        }
        return table
    }

    /// The next `UInt32`-sized section (a table or an array), checked against what remains.
    private mutating func readSizedSlice(_ what: String) throws(AMQPError) -> ByteBuffer {
        let size: UInt32 = try readAMQPInteger()
        guard Int(size) <= readableBytes, let slice = readSlice(length: Int(size)) else {
            throw .syntax("\(what) of \(size) bytes runs past the frame")
        }
        return slice
    }

    mutating func readAMQPFieldValue(depth: Int) throws(AMQPError) -> AMQPFieldValue {
        guard depth < AMQPTable.maxDepth else { throw .syntax("field tables nested deeper than \(AMQPTable.maxDepth)") }
        let letter: UInt8 = try readAMQPInteger()
        switch Character(Unicode.Scalar(letter)) {
        case "t": return .bool(try readAMQPInteger(as: UInt8.self) != 0)
        case "b": return .int8(try readAMQPInteger())
        case "B": return .uint8(try readAMQPInteger())
        case "s": return .int16(try readAMQPInteger())
        case "u": return .uint16(try readAMQPInteger())
        case "I": return .int32(try readAMQPInteger())
        case "i": return .uint32(try readAMQPInteger())
        case "l": return .int64(try readAMQPInteger())
        case "f": return .float(Float(bitPattern: try readAMQPInteger()))
        case "d": return .double(Double(bitPattern: try readAMQPInteger()))
        case "D": return .decimal(scale: try readAMQPInteger(), value: try readAMQPInteger())
        case "S": return .longString(try readLongBytes())
        case "x": return .bytes(try readLongBytes())
        case "T": return .timestamp(try readAMQPInteger())
        case "V": return .void
        case "F": return .table(try readAMQPTable(depth: depth + 1))
        case "A":
            var body = try readSizedSlice("array")
            var values: [AMQPFieldValue] = []
            while body.readableBytes > 0 { values.append(try body.readAMQPFieldValue(depth: depth + 1)) }
            return .array(values)
        default:
            throw .syntax("unknown field type '\(Character(Unicode.Scalar(letter)))' (0x\(String(letter, radix: 16)))")
        }
    }
}
