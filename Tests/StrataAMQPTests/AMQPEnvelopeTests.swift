import StrataJournal
import StrataTopics
import Testing

@testable import StrataAMQP

@Suite struct AMQPEnvelopeTests {
    static let properties = AMQPProperties(
        contentType: "application/json", contentEncoding: "gzip",
        headers: [
            "tenant": .string("acme"), "retries": .int32(3), "urgent": .bool(true), "ratio": .double(0.5),
            "price": .decimal(scale: 2, value: 1999), "trace": .table(["span": .int64(7)]),
            "tags": .array([.string("a"), .int8(1)]), "raw": .bytes([0, 1]), "content-type": .string("shadowed"),
        ], deliveryMode: 2, priority: 5, correlationID: "req-1", replyTo: "amq.gen-reply", expiration: "60000",
        messageID: "m-1", timestamp: 1_700_000_000, type: "order.created", userID: "alice", appID: "shop",
        clusterID: "c")

    @Test func anAMQPMessageComesBackAsItWasPublished() {
        let headers = AMQPEnvelope.headers(exchange: "orders", routingKey: "eu.new", properties: Self.properties)
        let (properties, exchange, routingKey) = AMQPEnvelope.message(of: headers)
        #expect(exchange == "orders" && routingKey == "eu.new")
        #expect(properties == Self.properties)
    }

    @Test func otherProtocolsReadTheSharedFieldsAndEveryHeader() {
        let headers = AMQPEnvelope.headers(exchange: "orders", routingKey: "eu.new", properties: Self.properties)
        func value(_ key: String) -> String? {
            headers.first { $0.key == key }?.value.map { String(decoding: $0, as: UTF8.self) }
        }
        // The envelope's own fields, as an MQTT subscriber or Kafka consumer reads them.
        #expect(value(RecordEnvelope.contentType) == "application/json")
        #expect(value(RecordEnvelope.correlationID) == "req-1")
        #expect(value(RecordEnvelope.replyTo) == "amq.gen-reply")
        #expect(value(RecordEnvelope.ttl) == "60000")
        // Headers-table entries, one header each, as text.
        #expect(value("tenant") == "acme" && value("retries") == "3" && value("urgent") == "true")
        #expect(value("price") == "19.99" && value("ratio") == "0.5")
        // An entry named like an envelope field is not taken for it.
        #expect(value("strata.user.content-type") == "shadowed")
        #expect(RecordEnvelope.applicationProperty(ofHeader: AMQPEnvelope.exchange) == nil)
    }

    @Test func recordsOfOtherProtocolsReadAsAMQPMessages() {
        // As the Kafka and MQTT gateways write them: envelope fields, application headers,
        // and their own prefixed headers (not AMQP headers).
        let headers = [
            RecordHeader(key: RecordEnvelope.contentType, value: Array("text/plain".utf8)),
            RecordHeader(key: RecordEnvelope.ttl, value: Array("5000".utf8)),
            RecordHeader(key: "unit", value: Array("C".utf8)), RecordHeader(key: "empty", value: nil),
            RecordHeader(key: "mqtt.qos", value: Array("1".utf8)),
            RecordHeader(key: "strata.user.amqp.exchange", value: Array("not mine".utf8)),
        ]
        let (properties, exchange, routingKey) = AMQPEnvelope.message(of: headers)
        #expect(exchange == nil && routingKey == nil)
        #expect(properties.contentType == "text/plain" && properties.expiration == "5000")
        #expect(
            properties.headers == ["unit": .string("C"), "empty": .void, "amqp.exchange": .string("not mine")])
        // An MQTT user property named like an AMQP field is escaped on the way in.
        #expect(RecordEnvelope.header(forApplicationProperty: "amqp.exchange") == "strata.user.amqp.exchange")
    }
}
