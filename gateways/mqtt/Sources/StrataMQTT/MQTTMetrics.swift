import Metrics

/// The MQTT gateway's counters, through swift-metrics (journal-node exports them on /metrics).
enum MQTTMetrics {
    /// Resumed sessions whose position in a bucket was below its retention floor.
    static let retentionSkips = Counter(label: "strata_mqtt_session_retention_skips_total")
    /// Offsets those sessions lost that way (every message of the bucket removed unread, whether
    /// or not it matched the session's subscriptions).
    static let retentionSkippedOffsets = Counter(label: "strata_mqtt_session_retention_skipped_offsets_total")
}
