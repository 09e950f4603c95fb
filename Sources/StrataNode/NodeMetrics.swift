import Prometheus
import StrataJournal

/// The node's Prometheus metrics, created once. Engine counters are copied from the journal's
/// statistics when `/metrics` is scraped.
public final class NodeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let appends: Counter
    let appendedBytes: Counter
    let requestErrors: Counter
    let protocolErrors: Counter
    private let walBytes: Gauge
    private let walSyncs: Gauge
    private let journalAppendedBytes: Gauge
    private let journalAppendedBatches: Gauge
    private let compactedBytes: Gauge
    private let shards: Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(descriptor: Self.name("strata_node_connections", "Open journal protocol connections"))
        appends = registry.makeCounter(descriptor: Self.name("strata_node_appends_total", "Appends acknowledged over the network"))
        appendedBytes = registry.makeCounter(descriptor: Self.name("strata_node_append_bytes_total", "Batch bytes acknowledged over the network"))
        requestErrors = registry.makeCounter(descriptor: Self.name("strata_node_request_errors_total", "Requests answered with an error"))
        protocolErrors = registry.makeCounter(descriptor: Self.name("strata_node_protocol_errors_total", "Malformed frames and protocol violations"))
        walBytes = registry.makeGauge(descriptor: Self.name("strata_journal_wal_bytes_written", "Bytes written to WAL segments"))
        walSyncs = registry.makeGauge(descriptor: Self.name("strata_journal_wal_syncs", "WAL fdatasync calls"))
        journalAppendedBytes = registry.makeGauge(descriptor: Self.name("strata_journal_appended_bytes", "Batch bytes appended"))
        journalAppendedBatches = registry.makeGauge(descriptor: Self.name("strata_journal_appended_batches", "Batches appended"))
        compactedBytes = registry.makeGauge(descriptor: Self.name("strata_journal_compacted_bytes", "Bytes copied by compaction"))
        shards = registry.makeGauge(descriptor: Self.name("strata_journal_shards", "Shards in the catalog"))
    }

    /// A descriptor for a full metric name (its last `_` part is the unit, as Prometheus names go).
    private static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        let cut = full.lastIndex(of: "_")!
        return MetricNameDescriptor(
            metricName: String(full[..<cut]), unitName: String(full[full.index(after: cut)...]), helpText: help)
    }

    /// Refreshes the scrape-time gauges from the journal and renders the text format.
    public func render(journal: Journal) -> [UInt8] {
        let statistics = journal.statistics
        walBytes.set(Double(statistics.walBytesWritten))
        walSyncs.set(Double(statistics.walSyncs))
        journalAppendedBytes.set(Double(statistics.appendedBytes))
        journalAppendedBatches.set(Double(statistics.appendedBatches))
        compactedBytes.set(Double(statistics.compactedBytes))
        let infos = journal.listShards()
        shards.set(Double(infos.count))
        for info in infos {
            let labels = [("shard", info.name)]
            registry.makeGauge(descriptor: Self.name("strata_shard_end_offset", "One past the last offset"), labels: labels)
                .set(Double(info.endOffset))
            registry.makeGauge(descriptor: Self.name("strata_shard_stored_bytes", "Batch bytes stored"), labels: labels)
                .set(Double(info.storedBytes))
        }
        return registry.emitToBuffer()
    }
}
