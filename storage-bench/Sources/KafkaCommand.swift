import ArgumentParser
import Foundation
import Histogram
import StrataJournal
import Synchronization

/// `storage-bench kafka`: a Kafka load generator for any Kafka-protocol broker. Produce mode:
/// producers (one connection each) send prebuilt batches round robin over the topic's
/// partitions with up to `--inflight` requests outstanding, for `--seconds`; latency is
/// request → response. Consume mode (`--consume`): reads the topic from offset 0 to the end
/// as fast as Fetch goes. Beside either, the disk's limit is measured in `--limit-dir` before
/// and after the run (the same disk as the broker's data, for the comparison to mean much).
struct KafkaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka", abstract: "Measures a Kafka-protocol broker: produce or consume MB/s, records/s, latency."
    )

    @Option(help: "Broker address, HOST:PORT.") var bootstrap: String
    @Option(help: "Topic (created with --partitions if missing; default: a new one per run).") var topic: String?
    @Option(help: "Producing connections.") var producers = 4
    @Option(help: "Partitions of the topic.") var partitions: Int32 = 4
    @Option(help: "Bytes of each record's value.") var size = 1024
    @Option(help: "Bytes of records per batch (records per batch = this / --size).") var batchBytes = 64 << 10
    @Option(help: "acks: all or 1.") var acks = "all"
    @Option(help: "Compression: none or zstd.") var compression = "none"
    @Option(help: "Produce requests each producer keeps outstanding.") var inflight = 5
    @Option(help: "Length of the timed produce run in seconds.") var seconds: Double = 10
    @Flag(help: "Consume the topic from offset 0 to its end instead of producing.") var consume = false
    @Option(help: "Directory on the broker's disk for the disk-limit measurement (default: /tmp).") var limitDir:
        String?
    @Flag(name: .customLong("no-limit"), help: "Skip measuring the disk's limit.") var noLimit = false
    @Flag(help: "Print one JSON object per result line.") var json = false

    func validate() throws {
        guard (try? endpoint()) != nil else { throw ValidationError("--bootstrap is HOST:PORT") }
        guard acks == "all" || acks == "1" else { throw ValidationError("--acks is all or 1") }
        guard compression == "none" || compression == "zstd" else {
            throw ValidationError("--compression is none or zstd")
        }
        guard producers >= 1, partitions >= 1, size >= 1, batchBytes >= size, inflight >= 1, seconds > 0 else {
            throw ValidationError("check --producers, --partitions, --size, --batch-bytes, --inflight, --seconds")
        }
        guard consume || topic == nil || partitions >= 1 else { throw ValidationError("--partitions") }
        if consume && topic == nil { throw ValidationError("--consume needs --topic") }
    }

    func endpoint() throws -> (String, Int) {
        guard let endpoint = parseHostPort(bootstrap[...]) else { throw ValidationError("--bootstrap is HOST:PORT") }
        return endpoint
    }

    func run() async throws {
        let (host, port) = try endpoint()
        let directory = try BenchDirectory(requested: limitDir)
        defer { directory.removeIfTemporary() }
        let limitName = consume ? DiskLimit.readName : DiskLimit.durableName
        func measureLimit() throws -> Double {
            guard !noLimit, !consume else { return 0 }
            let measured = try DiskLimit.measureWrites(in: directory.path, secondsPerTest: 2)
            measured.printReport(json: json)
            return measured.mbPerSec(limitName)
        }
        let before = try measureLimit()
        let topic = self.topic ?? "bench-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let admin = try await KafkaBenchConnection.open(host: host, port: port)
        defer { admin.close() }
        let result: KafkaBenchResult
        if consume {
            result = try await consumeAll(topic: topic, connection: admin)
        } else {
            try await admin.createTopic(topic, partitions: partitions)
            result = try await produce(topic: topic, host: host, port: port)
        }
        let after = try measureLimit()
        var final = result
        final.limitMBPerSec = consume ? 0 : (before + after) / 2
        final.print(json: json)
    }

    private func produce(topic: String, host: String, port: Int) async throws -> KafkaBenchResult {
        let perBatch = max(1, batchBytes / size)
        let zstd = compression == "zstd"
        let acksValue: Int16 = acks == "all" ? -1 : 1
        var connections: [KafkaBenchConnection] = []
        for _ in 0..<producers { connections.append(try await KafkaBenchConnection.open(host: host, port: port)) }
        defer { connections.forEach { $0.close() } }
        let batches = try (0..<producers).map { _ in
            try KafkaBenchConnection.batch(count: perBatch, size: size, zstd: zstd)
        }
        let stats = ProduceTally()
        let meter = ProgressMeter(label: "kafka produce")
        let start = ContinuousClock.now
        let deadline = start.advanced(by: .seconds(seconds))
        let partitions = self.partitions
        let inflight = self.inflight
        let producers = self.producers
        let end = try await meter.reporting {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    let batch = batches[index]
                    for slot in 0..<inflight {
                        group.addTask {
                            var turn = index + slot * producers
                            while ContinuousClock.now < deadline {
                                let partition = Int32(turn % Int(partitions))
                                turn += producers * inflight
                                let sent = ContinuousClock.now
                                let error = try await connection.produce(
                                    topic: topic, partition: partition, batch: batch, acks: acksValue)
                                let took = sent.duration(to: .now)
                                stats.state.withLock { stats in
                                    if error == 0 {
                                        stats.records += perBatch
                                        stats.wireBytes += batch.readableBytes
                                        stats.histogram.record(latency: took)
                                    } else {
                                        stats.errors += 1
                                    }
                                }
                                meter.add(records: error == 0 ? perBatch : 0, bytes: error == 0 ? perBatch * size : 0)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            return ContinuousClock.now
        }
        let final = stats.state.withLock { $0 }
        guard final.errors == 0 else { throw BenchError("\(final.errors) produce requests failed") }
        return KafkaBenchResult(
            mode: "kafka-produce", seconds: start.duration(to: end).seconds, records: final.records,
            bytes: final.records * size, wireBytes: final.wireBytes, latency: final.histogram, producers: producers,
            partitions: Int(partitions), size: size, acks: acks, compression: compression, perBatch: perBatch)
    }

    private func consumeAll(topic: String, connection: KafkaBenchConnection) async throws -> KafkaBenchResult {
        // The partitions and where they end, from a first fetch at offset 0.
        var offsets: [Int32: Int64] = Dictionary(uniqueKeysWithValues: (0..<partitions).map { ($0, Int64(0)) })
        let first = try await connection.fetch(topic: topic, offsets: offsets, maxBytes: 1)
        let ends = first.mapValues(\.end)
        var histogram = Histogram<UInt64>.latency()
        var records = 0
        var bytes = 0
        let meter = ProgressMeter(label: "kafka consume")
        let start = ContinuousClock.now
        try await meter.reporting {
            while offsets.contains(where: { $0.value < ends[$0.key] ?? 0 }) {
                let wanted = offsets.filter { $0.value < ends[$0.key] ?? 0 }
                let sent = ContinuousClock.now
                let fetched = try await connection.fetch(topic: topic, offsets: wanted, maxBytes: 8 << 20)
                histogram.record(latency: sent.duration(to: .now))
                for (partition, result) in fetched {
                    records += result.records
                    bytes += result.bytes
                    offsets[partition] = result.next
                    meter.add(records: result.records, bytes: result.bytes)
                }
            }
        }
        let elapsed = start.duration(to: .now).seconds
        return KafkaBenchResult(
            mode: "kafka-consume", seconds: elapsed, records: records, bytes: bytes, wireBytes: bytes,
            latency: histogram,
            producers: 1, partitions: Int(partitions), size: size, acks: "-", compression: "as stored", perBatch: 0)
    }
}

/// What the producer tasks count.
final class ProduceTally: Sendable {
    let state = Mutex((records: 0, wireBytes: 0, histogram: Histogram<UInt64>.latency(), errors: 0))
}

struct KafkaBenchResult {
    var mode: String
    var seconds: Double
    var records: Int
    /// Record value bytes (produce) or fetched batch bytes (consume).
    var bytes: Int
    /// Batch bytes on the wire.
    var wireBytes: Int
    var latency: Histogram<UInt64>
    var producers: Int
    var partitions: Int
    var size: Int
    var acks: String
    var compression: String
    var perBatch: Int
    var limitMBPerSec: Double = 0

    func print(json: Bool) {
        let mbPerSec = Double(bytes) / seconds / 1e6
        let ratio = limitMBPerSec > 0 ? Double(wireBytes) / seconds / 1e6 / limitMBPerSec : 0
        if json {
            var line = JSONLine()
            line.add("mode", mode)
            line.add("records_per_sec", Double(records) / seconds)
            line.add("mb_per_sec", mbPerSec)
            line.add("wire_mb_per_sec", Double(wireBytes) / seconds / 1e6)
            line.add("p50_us", Int(latency.valueAtPercentile(50)))
            line.add("p99_us", Int(latency.valueAtPercentile(99)))
            line.add("p999_us", Int(latency.valueAtPercentile(99.9)))
            line.add("max_us", Int(latency.max))
            line.add("limit_mb_per_sec", limitMBPerSec)
            line.add("ratio_to_limit", ratio)
            line.add("producers", producers)
            line.add("partitions", partitions)
            line.add("record_size", size)
            line.add("records_per_batch", perBatch)
            line.add("acks", acks)
            line.add("compression", compression)
            line.add("seconds", seconds)
            line.add("records", records)
            line.add("bytes", bytes)
            Swift.print(line.text)
        } else {
            let latencyName = mode == "kafka-consume" ? "fetch" : "produce"
            Swift.print(
                """
                \(mode): \(partitions) partitions, \(mode == "kafka-produce" ? "\(producers) producers, acks \(acks), \(compression), \(perBatch) × \(size) B per batch, " : "")\(seconds.fixed(1)) s
                records/s         \(Int(Double(records) / seconds))
                MB/s              \(mbPerSec.fixed(1)) (wire \((Double(wireBytes) / seconds / 1e6).fixed(1)))\(limitMBPerSec > 0 ? ", durable disk limit \(limitMBPerSec.fixed(1)), ratio \(ratio.fixed(2))" : "")
                \(latencyName) latency p50 / p99 / p999 / max (µs): \(latency.valueAtPercentile(50)) / \(latency.valueAtPercentile(99)) / \(latency.valueAtPercentile(99.9)) / \(latency.max)
                """)
        }
    }
}
