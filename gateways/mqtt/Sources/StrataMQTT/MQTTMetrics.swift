import Metrics

/// The MQTT gateway's counters, through swift-metrics (journal-node exports them on /metrics).
enum MQTTMetrics {
    /// Connected sessions (after CONNACK, until the connection ends).
    static let connections = Meter(label: "strata_mqtt_connections")
    /// PUBLISH packets taken from clients, and their payload bytes.
    static let messagesIn = Counter(label: "strata_mqtt_messages_in_total")
    static let bytesIn = Counter(label: "strata_mqtt_bytes_in_total")
    /// PUBLISH packets written to subscribers, and their payload bytes.
    static let messagesOut = Counter(label: "strata_mqtt_messages_out_total")
    static let bytesOut = Counter(label: "strata_mqtt_bytes_out_total")
    /// Publishes refused: not stored by the journal, or refused by the ACL.
    static let notStored = Counter(label: "strata_mqtt_publish_errors_total", dimensions: [("reason", "not_stored")])
    static let refused = Counter(label: "strata_mqtt_publish_errors_total", dimensions: [("reason", "acl")])
    /// Connections closed on a malformed packet or a protocol violation.
    static let protocolErrors = Counter(label: "strata_mqtt_protocol_errors_total")
    /// From a QoS 1/2 PUBLISH's arrival to its acknowledgement's turn (stored, in order).
    static let publishAck = Timer(label: "strata_mqtt_publish_ack_seconds", preferredDisplayUnit: .seconds)

    /// Headers of records another protocol wrote that MQTT cannot carry (a name or value that is
    /// no MQTT UTF-8 string), left out of the PUBLISH (docs/topics.md).
    static let unmappedHeaders = Counter(label: "strata_mqtt_unmapped_headers_total")
    /// Records whose key is no MQTT topic name (written by another protocol: longer than 65,535
    /// bytes, U+0000, wildcards), not delivered.
    static let undeliverable = Counter(label: "strata_mqtt_undeliverable_records_total")
    /// Batches the router could not decode (docs/topics.md), whose records it did not deliver.
    static let unreadableBatches = Counter(label: "strata_mqtt_unreadable_batches_total")

    /// Sent QoS 2 messages of shared subscriptions whose member's session ended before it
    /// completed them, not given to another member ([MQTT-4.8.2-5]; `sharedRedispatch` off).
    static let sharedDropped = Counter(label: "strata_mqtt_shared_dropped_total")

    /// Session resumptions that found the session's position in a bucket (one or more) below
    /// that bucket's retention floor.
    static let retentionSkips = Counter(label: "strata_mqtt_session_retention_skips_total")
    /// Offsets those sessions lost that way (every message of the bucket removed unread, whether
    /// or not it matched the session's subscriptions).
    static let retentionSkippedOffsets = Counter(label: "strata_mqtt_session_retention_skipped_offsets_total")
}
