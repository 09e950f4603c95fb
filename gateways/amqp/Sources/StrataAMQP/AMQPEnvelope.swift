import NIOCore
import StrataJournal
import StrataTopics

/// An AMQP message as a record of the one envelope (docs/topics.md, "One record"), and back.
/// The shared fields use the envelope's headers (content-type, correlation-id, reply-to,
/// ttl-ms), so MQTT and Kafka readers see them as they see their own; what only AMQP has goes
/// under `amqp.` headers; the headers table becomes one header per entry, readable by every
/// protocol (strings as they are, numbers in decimal, booleans as true/false), with the exact
/// AMQP types of the entries that are not long strings kept in `amqp.types` so an AMQP reader
/// gets back the table that was published.
public enum AMQPEnvelope {
    public static let exchange = "amqp.exchange"
    public static let routingKey = "amqp.routing-key"
    public static let contentEncoding = "amqp.content-encoding"
    public static let deliveryMode = "amqp.delivery-mode"
    public static let priority = "amqp.priority"
    public static let messageID = "amqp.message-id"
    public static let timestamp = "amqp.timestamp"
    public static let type = "amqp.type"
    public static let userID = "amqp.user-id"
    public static let appID = "amqp.app-id"
    public static let clusterID = "amqp.cluster-id"
    /// An AMQP table of the headers-table entries whose type is not a long string.
    public static let types = "amqp.types"

    /// The headers of a record for a message published to `exchange` with `routingKey`.
    public static func headers(
        exchange: String, routingKey: String, properties p: AMQPProperties
    ) -> [RecordHeader] {
        var headers: [RecordHeader] = []
        func add(_ key: String, _ text: String?) {
            if let text { headers.append(RecordHeader(key: key, value: Array(text.utf8))) }
        }
        add(Self.exchange, exchange)
        add(Self.routingKey, routingKey)
        add(RecordEnvelope.contentType, p.contentType)
        add(Self.contentEncoding, p.contentEncoding)
        add(Self.deliveryMode, p.deliveryMode.map { String($0) })
        add(Self.priority, p.priority.map { String($0) })
        add(RecordEnvelope.correlationID, p.correlationID)
        add(RecordEnvelope.replyTo, p.replyTo)
        add(RecordEnvelope.ttl, p.expiration)
        add(Self.messageID, p.messageID)
        add(Self.timestamp, p.timestamp.map { String($0) })
        add(Self.type, p.type)
        add(Self.userID, p.userID)
        add(Self.appID, p.appID)
        add(Self.clusterID, p.clusterID)
        if let table = p.headers {
            var typed = AMQPTable()
            for entry in table.entries {
                let name = RecordEnvelope.header(forApplicationProperty: entry.key)
                headers.append(RecordHeader(key: name, value: text(of: entry.value)))
                if case .longString = entry.value { continue }
                typed.entries.append(entry)
            }
            if !typed.isEmpty {
                var encoded = ByteBuffer()
                encoded.writeAMQPTable(typed)
                headers.append(RecordHeader(key: Self.types, value: Array(encoded.readableBytesView)))
            }
        }
        return headers
    }

    /// How a table value reads to other protocols; nil (a null header) for nested tables,
    /// arrays and void, whose form only AMQP keeps (in `amqp.types`).
    static func text(of value: AMQPFieldValue) -> [UInt8]? {
        switch value {
        case .longString(let bytes), .bytes(let bytes): bytes
        case .bool(let flag): Array((flag ? "true" : "false").utf8)
        case .float(let number): Array(String(number).utf8)
        case .double(let number): Array(String(number).utf8)
        case .decimal(let scale, let digits):
            Array(Self.decimalText(scale: scale, digits: digits).utf8)
        default: value.integerValue.map { Array(String($0).utf8) }
        }
    }

    static func decimalText(scale: UInt8, digits: UInt32) -> String {
        guard scale > 0 else { return String(digits) }
        var text = String(digits)
        while text.count <= Int(scale) { text = "0" + text }
        text.insert(".", at: text.index(text.endIndex, offsetBy: -Int(scale)))
        return text
    }

    /// A record as an AMQP message: its properties, and the exchange and routing key it was
    /// published with (nil for records other protocols wrote). Headers of other protocols
    /// (`mqtt.`, `strata.`) are not AMQP headers; application headers become the headers
    /// table, as long strings unless `amqp.types` says otherwise.
    public static func message(
        of headers: [RecordHeader]
    ) -> (properties: AMQPProperties, exchange: String?, routingKey: String?) {
        var p = AMQPProperties()
        var exchange: String?
        var routingKey: String?
        var typed = AMQPTable()
        var table = AMQPTable()
        func text(_ value: [UInt8]?) -> String? { value.map { String(decoding: $0, as: UTF8.self) } }
        for header in headers {
            switch header.key {
            case Self.exchange: exchange = text(header.value)
            case Self.routingKey: routingKey = text(header.value)
            case RecordEnvelope.contentType: p.contentType = text(header.value)
            case Self.contentEncoding: p.contentEncoding = text(header.value)
            case Self.deliveryMode: p.deliveryMode = text(header.value).flatMap { UInt8($0) }
            case Self.priority: p.priority = text(header.value).flatMap { UInt8($0) }
            case RecordEnvelope.correlationID: p.correlationID = text(header.value)
            case RecordEnvelope.replyTo: p.replyTo = text(header.value)
            case RecordEnvelope.ttl: p.expiration = text(header.value).flatMap { UInt64($0) }.map { String($0) }
            case Self.messageID: p.messageID = text(header.value)
            case Self.timestamp: p.timestamp = text(header.value).flatMap { UInt64($0) }
            case Self.type: p.type = text(header.value)
            case Self.userID: p.userID = text(header.value)
            case Self.appID: p.appID = text(header.value)
            case Self.clusterID: p.clusterID = text(header.value)
            case Self.types:
                if let value = header.value {
                    // (A damaged one leaves the entries as the text every protocol reads.)
                    var buffer = ByteBuffer(bytes: value)
                    typed = (try? buffer.readAMQPTable()) ?? AMQPTable()
                }
            default:
                guard let name = RecordEnvelope.applicationProperty(ofHeader: header.key) else { continue }
                table.entries.append(.init(key: name, value: header.value.map { .longString($0) } ?? .void))
            }
        }
        for index in table.entries.indices {
            if let exact = typed[table.entries[index].key] { table.entries[index].value = exact }
        }
        // Entries other protocols cannot show (tables, arrays, void) exist only in amqp.types.
        for entry in typed.entries where table[entry.key] == nil { table.entries.append(entry) }
        if !table.isEmpty { p.headers = table }
        return (p, exchange, routingKey)
    }
}
