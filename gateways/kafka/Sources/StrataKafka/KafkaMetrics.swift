import Metrics

/// The Kafka gateway's metrics, through swift-metrics (journal-node exports them on /metrics).
enum KafkaMetrics {
    /// Open client connections.
    static let connections = Meter(label: "strata_kafka_connections")
    /// Requests read, per API; the time from reading one to its response being ready (a Fetch
    /// includes its wait for data); response bytes, per API.
    static let requests = perAPI { Counter(label: "strata_kafka_requests_total", dimensions: [("api", $0)]) }
    static let latency = perAPI {
        Timer(label: "strata_kafka_request_seconds", dimensions: [("api", $0)], preferredDisplayUnit: .seconds)
    }
    static let bytesOut = perAPI { Counter(label: "strata_kafka_response_bytes_total", dimensions: [("api", $0)]) }
    /// Record batches, records and batch bytes taken by Produce (acknowledged or not).
    static let batchesIn = Counter(label: "strata_kafka_produce_batches_total")
    static let recordsIn = Counter(label: "strata_kafka_produce_records_total")
    static let bytesIn = Counter(label: "strata_kafka_produce_bytes_total")
    /// Connections closed on a request that could not be read or is not served.
    static let protocolErrors = Counter(label: "strata_kafka_protocol_errors_total")

    /// A partition's produce outcome that was an error, by Kafka error name.
    static func produceError(_ code: KafkaError) {
        Counter(label: "strata_kafka_produce_errors_total", dimensions: [("error", "\(code)")]).increment()
    }

    private static func perAPI<T>(_ make: (String) -> T) -> [KafkaAPI: T] {
        Dictionary(uniqueKeysWithValues: KafkaAPI.allCases.map { ($0, make("\($0)")) })
    }
}
