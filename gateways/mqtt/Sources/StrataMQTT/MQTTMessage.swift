import NIOCore
import StrataJournal

/// An application message as the gateway stores and routes it. In the journal it is one record
/// of a RecordBatch: key = topic, value = payload, headers `mqtt.qos`, `mqtt.retain`,
/// `mqtt.client` (the publisher, for no-local) and `mqtt.props` (the 5.0 properties in their
/// wire encoding), timestamp = arrival time. docs/mqtt.md describes the mapping.
public struct MQTTMessage: Sendable, Hashable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: UInt8
    public var retain: Bool
    public var publisher: String
    public var properties: MQTTProperties
    /// Milliseconds since the epoch when the gateway accepted it.
    public var timestamp: Int64

    public init(
        topic: String, payload: ByteBuffer, qos: UInt8, retain: Bool, publisher: String,
        properties: MQTTProperties = [], timestamp: Int64
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.publisher = publisher
        self.properties = properties
        self.timestamp = timestamp
    }

    /// Properties that travel from publisher to subscriber (MQTT 3.3.2.3); the rest are hop-by-hop.
    var forwardedProperties: MQTTProperties {
        MQTTProperties(
            properties.items.filter {
                switch $0 {
                case .payloadFormatIndicator, .messageExpiryInterval, .contentType, .responseTopic, .correlationData,
                    .userProperty:
                    true
                default:
                    false
                }
            })
    }

    public var record: Record {
        var props = ByteBuffer()
        forwardedProperties.write(to: &props)
        return Record(
            timestamp: timestamp, key: Array(topic.utf8), value: Array(payload.readableBytesView),
            headers: [
                RecordHeader(key: "mqtt.qos", value: [qos]),
                RecordHeader(key: "mqtt.retain", value: [retain ? 1 : 0]),
                RecordHeader(key: "mqtt.client", value: Array(publisher.utf8)),
                RecordHeader(key: "mqtt.props", value: Array(props.readableBytesView)),
            ])
    }

    /// Reads a record written by `record` (or by another protocol: then QoS 0, no properties).
    public init(record: Record) {
        topic = String(decoding: record.key ?? [], as: UTF8.self)
        payload = ByteBuffer(bytes: record.value ?? [])
        timestamp = record.timestamp
        var qos: UInt8 = 0
        var retain = false
        var publisher = ""
        var properties: MQTTProperties = []
        for header in record.headers {
            switch header.key {
            case "mqtt.qos": qos = min(2, header.value?.first ?? 0)
            case "mqtt.retain": retain = header.value?.first == 1
            case "mqtt.client": publisher = String(decoding: header.value ?? [], as: UTF8.self)
            case "mqtt.props":
                var buffer = ByteBuffer(bytes: header.value ?? [])
                properties = (try? MQTTProperties.read(from: &buffer, packet: 3)) ?? []
            default: break
            }
        }
        self.qos = qos
        self.retain = retain
        self.publisher = publisher
        self.properties = properties
    }

    /// The encoded form kept for a retained message (the record's bytes in a one-record batch).
    public var retainedValue: [UInt8] {
        Array(RecordBatch.encode([record]).readableBytesView)
    }

    public init?(retainedValue: [UInt8]) {
        guard let record = try? RecordBatch.decode(ByteBuffer(bytes: retainedValue)).first else { return nil }
        self.init(record: record)
    }
}
