import NIOCore
import StrataJournal
import StrataTopics

/// An application message as the gateway stores and routes it: in the journal, one record of a
/// RecordBatch (`record`; docs/topics.md describes the mapping).
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

    /// The message as a record of the journal (docs/topics.md, "One record"): key = topic,
    /// value = payload, timestamp = arrival; headers `mqtt.qos` and `mqtt.retain` (ASCII digits),
    /// `mqtt.client`,
    /// the forwarded 5.0 properties under the envelope's names, and each user property as a
    /// header of its name, in order.
    public var record: Record {
        var headers = [
            RecordHeader(key: "mqtt.qos", value: [UInt8(ascii: "0") + qos]),
            RecordHeader(key: "mqtt.retain", value: [UInt8(ascii: retain ? "1" : "0")]),
            RecordHeader(key: "mqtt.client", value: Array(publisher.utf8)),
        ]
        for property in properties {
            switch property {
            case .payloadFormatIndicator(let format) where format == 1:
                headers.append(RecordHeader(key: RecordEnvelope.payloadFormat, value: Array("utf-8".utf8)))
            case .messageExpiryInterval(let seconds):
                headers.append(RecordHeader(key: RecordEnvelope.ttl, value: Array(String(UInt64(seconds) * 1000).utf8)))
            case .contentType(let type):
                headers.append(RecordHeader(key: RecordEnvelope.contentType, value: Array(type.utf8)))
            case .responseTopic(let topic):
                headers.append(RecordHeader(key: RecordEnvelope.replyTo, value: Array(topic.utf8)))
            case .correlationData(let data):
                headers.append(RecordHeader(key: RecordEnvelope.correlationID, value: data))
            case .userProperty(let name, let value):
                headers.append(
                    RecordHeader(key: RecordEnvelope.header(forApplicationProperty: name), value: Array(value.utf8)))
            default:
                break  // hop by hop (MQTT 3.3.2.3)
            }
        }
        return Record(
            timestamp: timestamp, key: Array(topic.utf8), value: Array(payload.readableBytesView), headers: headers)
    }

    /// Reads a record of the journal as a message. `root`: the MQTT root of the registry topic the
    /// record belongs to (`MQTTTopicRoots.root(of:)`: its name or its prefix; nil: one of the
    /// gateway's bucket shards, whose keys are MQTT topics), which with the key names the topic.
    /// A record another protocol wrote has QoS 1 (it was stored before it was acknowledged),
    /// retain 0 and no publisher; what of its headers MQTT cannot carry (a name or value that is
    /// no MQTT UTF-8 string) is counted in `strata_mqtt_unmapped_headers_total` and left out.
    public init(record: Record, root: String? = nil) {
        topic =
            if let root { TopicMapping.mqttTopic(ofKey: record.key, in: root) } else {
                String(decoding: record.key ?? [], as: UTF8.self)
            }
        payload = ByteBuffer(bytes: record.value ?? [])
        timestamp = record.timestamp
        var qos: UInt8 = 1
        var retain = false
        var publisher = ""
        var envelope: [MQTTProperty] = []
        var user: [MQTTProperty] = []
        var legacy: MQTTProperties?
        var unmapped = 0
        for header in record.headers {
            let value = header.value ?? []
            let text = Self.mqttString(value)
            switch header.key {
            // An ASCII digit (binary 0–2 in records stored before the envelope).
            case "mqtt.qos": qos = min(2, (value.first ?? 0) & 0x0F)
            case "mqtt.retain": retain = (value.first ?? 0) & 0x0F == 1
            case "mqtt.client": publisher = String(decoding: value, as: UTF8.self)
            case "mqtt.props":
                // Records stored before the envelope: the forwarded properties in MQTT's encoding.
                var buffer = ByteBuffer(bytes: value)
                legacy = (try? MQTTProperties.read(from: &buffer, packet: 3)) ?? []
            case RecordEnvelope.payloadFormat:
                if text == "utf-8" { envelope.append(.payloadFormatIndicator(1)) }
            case RecordEnvelope.ttl:
                if let text, let milliseconds = UInt64(text) {
                    envelope.append(
                        .messageExpiryInterval(UInt32(min(UInt64(UInt32.max), (milliseconds + 999) / 1000))))
                } else {
                    unmapped += 1
                }
            case RecordEnvelope.contentType:
                if let text { envelope.append(.contentType(text)) } else { unmapped += 1 }
            case RecordEnvelope.replyTo:
                if let text, MQTTTopic.isValidName(text) {
                    envelope.append(.responseTopic(text))
                } else {
                    unmapped += 1
                }
            case RecordEnvelope.correlationID:
                envelope.append(.correlationData(value))
            default:
                guard let name = RecordEnvelope.applicationProperty(ofHeader: header.key) else { continue }
                if Self.mqttString(Array(name.utf8)) != nil, let text {
                    user.append(.userProperty(name, text))
                } else {
                    unmapped += 1
                }
            }
        }
        if unmapped > 0 { MQTTMetrics.unmappedHeaders.increment(by: Int64(unmapped)) }
        self.qos = qos
        self.retain = retain
        self.publisher = publisher
        self.properties = legacy ?? MQTTProperties(envelope + user)
    }

    /// `bytes` as an MQTT UTF-8 string (valid UTF-8, no U+0000, at most 65,535 bytes), or nil.
    static func mqttString(_ bytes: [UInt8]) -> String? {
        guard bytes.count <= 65_535, !bytes.contains(0) else { return nil }
        return String(validating: bytes, as: UTF8.self)
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

/// The MQTT gateway's way into a shard: the kit's appender of MQTT messages.
typealias MQTTAppender = ShardAppender<MQTTMessage>

extension MQTTMessage: ShardAppendItem {
    public var batchBytes: Int { payload.readableBytes + topic.utf8.count + 64 }
}
