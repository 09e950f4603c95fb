import Prometheus
import StrataJournal
import StrataObjects
import StrataTopics
import Synchronization

/// The node's Prometheus metrics, created once. Engine counters are copied from the journal's
/// statistics when `/metrics` is scraped.
public final class NodeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// The gauges of things that come and go (queues, group offsets), by name and labels, as
    /// the last scrape set them: those missing from the next one are unregistered.
    private let dynamicGauges = Mutex<[String: Gauge]>([:])
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
    private let segmentCount: Gauge
    private let segmentBytes: Gauge
    private let segmentLiveBytes: Gauge
    private let indexCache: Gauge
    private let indexTableReaders: Gauge
    private let indexMemtables: Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = Self.gauge(registry, "strata_node_connections", "Open journal protocol connections")
        appends = Self.counter(registry, "strata_node_appends_total", "Appends acknowledged over the network")
        appendedBytes = Self.counter(
            registry, "strata_node_append_bytes_total", "Batch bytes acknowledged over the network")
        requestErrors = Self.counter(registry, "strata_node_request_errors_total", "Requests answered with an error")
        protocolErrors = Self.counter(
            registry, "strata_node_protocol_errors_total", "Malformed frames and protocol violations")
        walBytes = Self.gauge(registry, "strata_journal_wal_bytes_written", "Bytes written to WAL segments")
        walSyncs = Self.gauge(registry, "strata_journal_wal_syncs", "WAL fdatasync calls")
        journalAppendedBytes = Self.gauge(registry, "strata_journal_appended_bytes", "Batch bytes appended")
        journalAppendedBatches = Self.gauge(registry, "strata_journal_appended_batches", "Batches appended")
        compactedBytes = Self.gauge(registry, "strata_journal_compacted_bytes", "Bytes copied by compaction")
        segmentCount = Self.gauge(registry, "strata_journal_segments", "WAL segment files")
        segmentBytes = Self.gauge(registry, "strata_journal_segment_bytes", "Frame bytes in WAL segments")
        segmentLiveBytes = Self.gauge(
            registry, "strata_journal_segment_live_bytes", "Frame bytes the index still points at")
        shards = Self.gauge(registry, "strata_journal_shards", "Shards in the catalog")
        indexCache = Self.gauge(
            registry, "strata_journal_index_cache_bytes", "Index database block cache in use (data blocks)")
        indexTableReaders = Self.gauge(
            registry, "strata_journal_index_table_readers_bytes",
            "Index database table readers, with their index blocks")
        indexMemtables = Self.gauge(registry, "strata_journal_index_memtables_bytes", "Index database memtables")
    }

    /// The engine's pre-aggregated histogram in the Prometheus text format.
    static func histogramText(_ name: String, _ help: String, _ histogram: LatencyHistogram) -> [UInt8] {
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative: Int64 = 0
        for (bound, count) in zip(LatencyHistogram.bounds, histogram.counts) {
            cumulative += count
            text += "\(name)_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(histogram.count)\n"
        text += "\(name)_sum \(histogram.sum)\n\(name)_count \(histogram.count)\n"
        return Array(text.utf8)
    }

    private static func gauge(_ registry: PrometheusCollectorRegistry, _ full: String, _ help: String) -> Gauge {
        registry.makeGauge(descriptor: name(full, help))
    }

    private static func counter(_ registry: PrometheusCollectorRegistry, _ full: String, _ help: String) -> Counter {
        registry.makeCounter(descriptor: name(full, help))
    }

    /// A descriptor for a full metric name (its last `_` part is the unit, as Prometheus names go).
    private static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        let cut = full.lastIndex(of: "_")!
        return MetricNameDescriptor(
            metricName: String(full[..<cut]), unitName: String(full[full.index(after: cut)...]), helpText: help)
    }

    /// Refreshes the scrape-time gauges from the journal and renders the text format.
    public func render(
        journal: Journal, tier: TierOffloader.Status? = nil, queues: [QueueStatus] = [],
        committed: [(group: String, shard: String, offset: UInt64)] = []
    ) -> [UInt8] {
        let statistics = journal.statistics
        walBytes.set(Double(statistics.walBytesWritten))
        walSyncs.set(Double(statistics.walSyncs))
        journalAppendedBytes.set(Double(statistics.appendedBytes))
        journalAppendedBatches.set(Double(statistics.appendedBatches))
        compactedBytes.set(Double(statistics.compactedBytes))
        let memory = journal.indexMemory
        indexCache.set(Double(memory.cacheBytes))
        indexTableReaders.set(Double(memory.tableReaderBytes))
        indexMemtables.set(Double(memory.memtableBytes))
        registry.makeGauge(
            descriptor: Self.name(
                "strata_journal_failed", "1 once a WAL or index I/O error stopped the journal (restart it)")
        ).set(Double(journal.health.status == .failed ? 1 : 0))
        let segments = journal.segmentInfos()
        segmentCount.set(Double(segments.count))
        segmentBytes.set(Double(segments.reduce(0) { $0 + $1.bytes }))
        segmentLiveBytes.set(Double(segments.reduce(0) { $0 + $1.liveBytes }))
        let infos = journal.listShards()
        shards.set(Double(infos.count))
        let ends = Dictionary(infos.map { ($0.name, $0.endOffset) }, uniquingKeysWith: max)
        var emitted: [String: Gauge] = [:]
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) {
            let gauge = registry.makeGauge(descriptor: Self.name(name, help), labels: labels)
            gauge.set(value)
            emitted[name + labels.map { "\u{0}\($0.0)=\($0.1)" }.joined()] = gauge
        }
        for commit in committed {
            guard let end = ends[commit.shard] else { continue }  // a deleted shard's leftover commit
            let lag = Double(end > commit.offset ? end - commit.offset : 0)
            if commit.group.hasPrefix("kafka/"), let partition = TopicRegistry.partition(ofShard: commit.shard) {
                // A Kafka group's, in Kafka's terms (docs/kafka.md, "Metrics").
                gauge(
                    "strata_kafka_consumer_lag",
                    "Records between a Kafka group's committed offset and the partition's end",
                    [
                        ("group", String(commit.group.dropFirst("kafka/".count))), ("topic", partition.topic),
                        ("partition", String(partition.partition)),
                    ], lag)
            } else {
                gauge(
                    "strata_consumer_lag", "Records between a group's committed offset and the shard's end",
                    [("group", commit.group), ("shard", commit.shard)], lag)
            }
        }
        for info in infos {
            let labels = [("shard", info.name)]
            gauge("strata_shard_end_offset", "One past the last offset", labels, Double(info.endOffset))
            gauge("strata_shard_stored_bytes", "Batch bytes stored", labels, Double(info.storedBytes))
        }
        renderQueues(queues, into: gauge)
        // Series of shards, queues and groups that are gone are removed, not left at their last value.
        let vanished = dynamicGauges.withLock { previous in
            defer { previous = emitted }
            return previous.filter { emitted[$0.key] == nil }.map(\.value)
        }
        for gone in vanished { registry.unregisterGauge(gone) }
        if let tier { renderTier(tier) }
        return registry.emitToBuffer()
            + Self.histogramText(
                "strata_journal_wal_sync_seconds", "Synced WAL writes (write + fdatasync), seconds",
                statistics.walSyncLatency)
    }

    /// Per queue (docs/queues.md): what it holds and what became of what it could not deliver.
    private func renderQueues(
        _ queues: [QueueStatus], into gauge: (String, String, [(String, String)], Double) -> Void
    ) {
        for queue in queues {
            let labels = [("queue", queue.name)]
            let values: [(String, String, Double)] = [
                (
                    "strata_queue_depth", "Messages not settled: not read yet, waiting and in flight",
                    Double(queue.depth)
                ),
                ("strata_queue_in_flight", "Messages leased to a consumer and not settled", Double(queue.inFlight)),
                ("strata_queue_waiting", "Messages read and waiting to be delivered (again)", Double(queue.waiting)),
                (
                    "strata_queue_delayed", "Waiting messages not visible yet (scheduled or requeued with a delay)",
                    Double(queue.delayed)
                ),
                (
                    "strata_queue_dead_lettered_total", "Messages appended to the dead-letter shard",
                    Double(queue.deadLettered)
                ),
                (
                    "strata_queue_discarded_total", "Dead letters dropped for want of a dead-letter shard",
                    Double(queue.discarded)
                ),
                (
                    "strata_queue_lost_to_retention_total", "Messages retention removed before they were settled",
                    Double(queue.lostToRetention)
                ),
            ]
            for (name, help, value) in values { gauge(name, help, labels, value) }
        }
    }

    private func renderTier(_ tier: TierOffloader.Status) {
        let totals: [(String, String, Int64)] = [
            ("strata_tier_uploaded_objects", "Objects uploaded to the object tier", tier.uploadedObjects),
            ("strata_tier_uploaded_bytes", "Object bytes uploaded", tier.uploadedBytes),
            ("strata_tier_upload_failures", "Failed offload passes (retried with backoff)", tier.uploadFailures),
            ("strata_tier_deleted_objects", "Objects deleted from the object tier by retention", tier.deletedObjects),
        ]
        for (name, help, value) in totals { registry.makeGauge(descriptor: Self.name(name, help)).set(Double(value)) }
        for shard in tier.shards {
            let labels = [("shard", shard.name)]
            registry.makeGauge(
                descriptor: Self.name(
                    "strata_tier_offload_lag_bytes", "Local bytes past local retention, not yet offloaded"),
                labels: labels
            )
            .set(Double(shard.offloadLagBytes))
            registry.makeGauge(
                descriptor: Self.name("strata_tier_offload_lag_seconds", "How long the oldest of them has waited"),
                labels: labels
            )
            .set(shard.offloadLagSeconds)
            registry.makeGauge(
                descriptor: Self.name("strata_tier_shard_bytes", "Batch bytes in the object tier"), labels: labels
            )
            .set(Double(shard.tierBytes))
            registry.makeGauge(
                descriptor: Self.name("strata_tier_shard_objects", "Objects in the object tier"), labels: labels
            )
            .set(Double(shard.tierObjects))
        }
    }
}
