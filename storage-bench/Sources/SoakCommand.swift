import ArgumentParser
import Foundation
import Histogram
import NIOCore
import StrataMQTT
import Synchronization

/// `storage-bench soak`: steady MQTT and Kafka load against a running Strata node for a long
/// time, with the node's RSS and each protocol's throughput and latency printed per interval,
/// then a verdict on whether memory, throughput and p99 stayed flat. The load is the one of
/// docs/benchmarks.md's soak: an MQTT QoS 1 publisher → subscriber pair and a Kafka acks=all
/// producer to a topic with `retention.bytes` per partition. storage-bench/soak.sh starts the
/// node and runs this against it.
struct SoakCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Long MQTT + Kafka load with retention: RSS, throughput, p50/p99/max per interval and a verdict.")

    @Option(help: "Process id of the node under load (its RSS is read from /proc).") var pid: Int32
    @Option(help: "MQTT broker URL, mqtt://HOST:PORT (omit for no MQTT load).") var mqttUrl: String?
    @Option(help: "Kafka bootstrap HOST:PORT (omit for no Kafka load).") var kafkaBootstrap: String?
    @Option(help: "Length of the run in seconds.") var seconds: Double = 3600
    @Option(help: "Seconds per reported interval.") var interval: Double = 60
    @Option(help: "MQTT messages per second (0: as fast as the window allows).") var mqttRate: Double = 0
    @Option(help: "MQTT QoS 1 publishes kept unacknowledged.") var mqttInflight = 16
    @Option(help: "MQTT payload bytes.") var mqttSize = 1024
    @Option(help: "Kafka records per second (0: as fast as acknowledgements come).") var kafkaRate: Double = 0
    @Option(help: "Partitions of the Kafka topic.") var kafkaPartitions: Int32 = 2
    @Option(help: "Bytes of each Kafka record.") var kafkaSize = 1024
    @Option(help: "Bytes of Kafka records per produce batch.") var kafkaBatchBytes = 16 << 10
    @Option(help: "Kafka produce requests kept outstanding.") var kafkaInflight = 5
    @Option(help: "retention.bytes of each Kafka partition (0: no retention).") var retentionBytes: Int64 = 256 << 20
    @Option(help: "The node's memory budget in MB: RSS above it fails the verdict.") var memoryBudgetMb = 1024
    @Option(help: "Seconds at the start and at the end compared by the verdict (default: 600, or a third of the run).")
    var window: Double?
    @Option(help: "Max append latency in ms of the same load without retention: the verdict wants at most twice it.")
    var baselineMaxMs: Double?
    @Flag(help: "Print one JSON object per interval and one for the verdict.") var json = false

    func validate() throws {
        guard mqttUrl != nil || kafkaBootstrap != nil else {
            throw ValidationError("give --mqtt-url, --kafka-bootstrap or both")
        }
        if mqttUrl != nil && mqttURL == nil { throw ValidationError("--mqtt-url is mqtt://HOST:PORT") }
        if let kafkaBootstrap, parseHostPort(kafkaBootstrap[...]) == nil {
            throw ValidationError("--kafka-bootstrap is HOST:PORT")
        }
        guard seconds > 0, interval > 0, interval <= seconds, mqttInflight >= 1, mqttSize >= 16, kafkaPartitions >= 1,
            kafkaSize >= 1, kafkaBatchBytes >= kafkaSize, kafkaInflight >= 1, retentionBytes >= 0, mqttRate >= 0,
            kafkaRate >= 0
        else { throw ValidationError("check --seconds, --interval, the rates, sizes and windows") }
        guard SoakSample.rss(of: pid) != nil else { throw ValidationError("no process \(pid) to read the RSS of") }
    }

    func run() async throws {
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let origin = ContinuousClock.now
        let end = origin + .seconds(seconds)
        var mqtt: SoakMQTT?
        if let url = mqttURL { mqtt = try await SoakMQTT.open(url: url, run: run) }
        var kafka: SoakKafka?
        if let kafkaBootstrap {
            kafka = try await SoakKafka.open(
                bootstrap: kafkaBootstrap, topic: "soak-\(run)", partitions: kafkaPartitions,
                retentionBytes: retentionBytes, size: kafkaSize, batchBytes: kafkaBatchBytes, inflight: kafkaInflight)
        }
        var samples: [SoakSample] = []
        let (mqttLoad, kafkaLoad) = (mqtt, kafka)
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let mqtt = mqttLoad {
                group.addTask {
                    try await mqtt.run(
                        until: end, origin: origin, size: mqttSize, inflight: mqttInflight,
                        perSecond: mqttRate > 0 ? mqttRate : nil)
                }
            }
            if let kafka = kafkaLoad {
                group.addTask { try await kafka.run(until: end, perSecond: kafkaRate > 0 ? kafkaRate : nil) }
            }
            var last = origin
            var index = 0
            while last < end {
                index += 1
                let next = min(origin + .seconds(interval * Double(index)), end)
                try await Task.sleep(until: next)
                let now = ContinuousClock.now
                let sample = SoakSample(
                    atSeconds: origin.duration(to: now).seconds, seconds: last.duration(to: now).seconds,
                    rssBytes: SoakSample.rss(of: pid) ?? 0, mqtt: mqttLoad?.stats.take(), kafka: kafkaLoad?.take())
                sample.print(json: json)
                samples.append(sample)
                last = now
            }
            try await group.waitForAll()
        }
        let verdict = SoakVerdict(
            samples: samples, window: window ?? min(600, seconds / 3), memoryBudgetBytes: memoryBudgetMb << 20,
            baselineMaxMicros: baselineMaxMs.map { UInt64($0 * 1000) },
            mqttPublished: mqtt.map { $0.published.load(ordering: .relaxed) },
            mqttDelivered: mqtt?.stats.delivered, kafkaErrors: kafka.map { $0.errors.load(ordering: .relaxed) })
        verdict.print(json: json)
        if !verdict.failures.isEmpty { throw ExitCode(1) }
    }

    private var mqttURL: (host: String, port: Int)? {
        guard let mqttUrl, mqttUrl.hasPrefix("mqtt://") else { return nil }
        return parseHostPort(mqttUrl.dropFirst("mqtt://".count))
    }
}

/// The MQTT half of the soak: one QoS 1 publisher and one subscriber of its topic.
final class SoakMQTT: Sendable {
    let publisher: MQTTBenchConnection
    let subscriber: MQTTBenchConnection
    let topic: String
    let stats = MQTTBenchStats()
    let published = Atomic<Int>(0)

    private init(publisher: MQTTBenchConnection, subscriber: MQTTBenchConnection, topic: String) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.topic = topic
    }

    static func open(url: (host: String, port: Int), run: String) async throws -> SoakMQTT {
        func connect(_ id: String) async throws -> MQTTBenchConnection {
            try await MQTTBenchConnection.open(
                host: url.host, port: url.port, version: .v311, clientID: id, username: nil, password: nil)
        }
        let subscriber = try await connect("soak-sub-\(run)")
        try await subscriber.subscribe("soak/\(run)", qos: 1)
        return SoakMQTT(publisher: try await connect("soak-pub-\(run)"), subscriber: subscriber, topic: "soak/\(run)")
    }

    func run(
        until end: ContinuousClock.Instant, origin: ContinuousClock.Instant, size: Int, inflight: Int,
        perSecond: Double?
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                try await subscriber.receive(origin: origin, stats: stats, meter: ProgressMeter(label: ""))
            }
            let sent = try await publisher.publishUntil(
                end, topics: [topic], first: 0, qos: 1, size: size, inflight: inflight, origin: origin,
                perSecond: perSecond)
            published.store(sent, ordering: .relaxed)
            let drained = ContinuousClock.now + .seconds(10)
            while stats.delivered < sent && ContinuousClock.now < drained {
                try await Task.sleep(for: .milliseconds(20))
            }
            publisher.close()
            subscriber.close()
            try await group.waitForAll()
        }
    }
}

/// The Kafka half of the soak: one producer connection with `inflight` produce requests
/// outstanding, round robin over the topic's partitions.
final class SoakKafka: Sendable {
    let connection: KafkaBenchConnection
    let topic: String
    let partitions: Int32
    let batch: ByteBuffer
    let perBatch: Int
    let inflight: Int
    let tally = ProduceTally()
    let errors = Atomic<Int>(0)
    /// Produce requests started, for the pacing of `--kafka-rate`.
    private let sent = Atomic<Int>(0)

    private init(
        connection: KafkaBenchConnection, topic: String, partitions: Int32, batch: ByteBuffer, perBatch: Int,
        inflight: Int
    ) {
        self.connection = connection
        self.topic = topic
        self.partitions = partitions
        self.batch = batch
        self.perBatch = perBatch
        self.inflight = inflight
    }

    static func open(
        bootstrap: String, topic: String, partitions: Int32, retentionBytes: Int64, size: Int, batchBytes: Int,
        inflight: Int
    ) async throws -> SoakKafka {
        guard let endpoint = parseHostPort(bootstrap[...]) else { throw BenchError("--kafka-bootstrap is HOST:PORT") }
        let connection = try await KafkaBenchConnection.open(host: endpoint.host, port: endpoint.port)
        try await connection.createTopic(
            topic, partitions: partitions,
            configs: retentionBytes > 0 ? [(name: "retention.bytes", value: "\(retentionBytes)")] : [])
        let perBatch = max(1, batchBytes / size)
        return SoakKafka(
            connection: connection, topic: topic, partitions: partitions,
            batch: try KafkaBenchConnection.batch(count: perBatch, size: size, zstd: false), perBatch: perBatch,
            inflight: inflight)
    }

    func run(until end: ContinuousClock.Instant, perSecond: Double?) async throws {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for slot in 0..<inflight {
                group.addTask { [self] in
                    var turn = slot
                    while ContinuousClock.now < end {
                        let number = sent.wrappingAdd(1, ordering: .relaxed).oldValue
                        if let perSecond {
                            let due = start + .seconds(Double(number * perBatch) / perSecond)
                            if due > ContinuousClock.now { try await Task.sleep(until: min(due, end)) }
                        }
                        let partition = Int32(turn % Int(partitions))
                        turn += inflight
                        let began = ContinuousClock.now
                        let error = try await connection.produce(
                            topic: topic, partition: partition, batch: batch, acks: -1)
                        let took = began.duration(to: .now)
                        if error != 0 {
                            errors.wrappingAdd(1, ordering: .relaxed)
                            continue
                        }
                        tally.state.withLock { state in
                            state.records += perBatch
                            state.histogram.record(latency: took)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        connection.close()
    }

    /// Records acknowledged and their produce latencies since the last call.
    func take() -> (delivered: Int, histogram: Histogram<UInt64>) {
        tally.state.withLock { state in
            defer {
                state.records = 0
                state.histogram.reset()
            }
            return (state.records, state.histogram)
        }
    }
}

/// One reported interval.
struct SoakSample {
    var atSeconds: Double
    var seconds: Double
    var rssBytes: Int
    var mqtt: (delivered: Int, histogram: Histogram<UInt64>)?
    var kafka: (delivered: Int, histogram: Histogram<UInt64>)?

    /// VmRSS of /proc/PID/status in bytes.
    static func rss(of pid: Int32) -> Int? {
        guard let text = ProcessStats.readSmallFile("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.dropFirst("VmRSS:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first
                .flatMap { Int($0) }
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }

    func print(json: Bool) {
        if json {
            var line = JSONLine()
            line.add("mode", "soak-interval")
            line.add("at_seconds", atSeconds)
            line.add("rss_mb", Double(rssBytes) / 1_048_576)
            for (name, part) in [("mqtt", mqtt), ("kafka", kafka)] {
                guard let part else { continue }
                line.add("\(name)_per_sec", Double(part.delivered) / seconds)
                line.add("\(name)_p50_us", Int(part.histogram.valueAtPercentile(50)))
                line.add("\(name)_p99_us", Int(part.histogram.valueAtPercentile(99)))
                line.add("\(name)_max_us", Int(part.histogram.max))
            }
            Console.out(line.text + "\n")
            return
        }
        var text =
            "\(String(Int(atSeconds.rounded())).padded(to: 6)) s  rss \((Double(rssBytes) / 1_048_576).fixed(0).padded(to: 5)) MiB"
        for (name, unit, part) in [("mqtt", "msg/s", mqtt), ("kafka", "rec/s", kafka)] {
            guard let part else { continue }
            let ms = { (value: UInt64) in (Double(value) / 1000).fixed(1) }
            text +=
                "  \(name) \(Int(Double(part.delivered) / seconds)) \(unit) p50/p99/max \(ms(part.histogram.valueAtPercentile(50)))/\(ms(part.histogram.valueAtPercentile(99)))/\(ms(part.histogram.max)) ms"
        }
        Console.out(text + "\n")
    }
}

/// Whether memory, throughput and p99 stayed flat: the first `window` seconds against the last.
struct SoakVerdict {
    var failures: [String] = []
    var lines: [(String, String)] = []

    init(
        samples: [SoakSample], window: Double, memoryBudgetBytes: Int, baselineMaxMicros: UInt64?, mqttPublished: Int?,
        mqttDelivered: Int?, kafkaErrors: Int?
    ) {
        guard let lastAt = samples.last?.atSeconds else {
            failures.append("no interval completed")
            return
        }
        let first = samples.filter { $0.atSeconds <= window + 0.5 }
        let last = samples.filter { $0.atSeconds > lastAt - window - 0.5 }
        let peak = samples.map(\.rssBytes).max() ?? 0
        let settled = first.last?.rssBytes ?? 0
        let lastPeak = last.map(\.rssBytes).max() ?? 0
        let lastFloor = last.map(\.rssBytes).min() ?? 0
        let mib = { (bytes: Int) in "\((Double(bytes) / 1_048_576).fixed(0)) MiB" }
        lines.append(
            (
                "rss",
                "\(mib(settled)) after the first window, \(mib(lastFloor))–\(mib(lastPeak)) in the last, \(mib(peak)) peak overall"
            ))
        if peak > memoryBudgetBytes {
            failures.append("RSS \(mib(peak)) above the budget of \(mib(memoryBudgetBytes))")
        }
        // Flat: the floor the last window keeps coming back to (its lowest sample) within 10 % (and
        // at least 32 MiB) of where the first window ended. A leak raises the floor; the peaks are
        // transient buffers (compaction rounds, reads) and answer to the budget above.
        if lastFloor > settled + max(settled / 10, 32 << 20) {
            failures.append("RSS grew from \(mib(settled)) to a floor of \(mib(lastFloor))")
        }
        for name in ["mqtt", "kafka"] {
            let part = { (sample: SoakSample) in name == "mqtt" ? sample.mqtt : sample.kafka }
            guard samples.contains(where: { part($0) != nil }) else { continue }
            func summary(_ chosen: [SoakSample]) -> (rate: Double, histogram: Histogram<UInt64>) {
                var histogram = Histogram<UInt64>.latency()
                var count = 0
                var seconds = 0.0
                for sample in chosen {
                    guard let values = part(sample) else { continue }
                    histogram.add(values.histogram)
                    count += values.delivered
                    seconds += sample.seconds
                }
                return (seconds > 0 ? Double(count) / seconds : 0, histogram)
            }
            let (firstRate, firstHistogram) = summary(first)
            let (lastRate, lastHistogram) = summary(last)
            let (_, all) = summary(samples)
            let ms = { (value: UInt64) in "\((Double(value) / 1000).fixed(1)) ms" }
            lines.append(
                (
                    name,
                    "\(Int(firstRate)) → \(Int(lastRate)) /s, p99 \(ms(firstHistogram.valueAtPercentile(99))) → \(ms(lastHistogram.valueAtPercentile(99))), max \(ms(all.max))"
                ))
            if lastRate < firstRate * 0.9 {
                failures.append("\(name) throughput fell from \(Int(firstRate))/s to \(Int(lastRate))/s")
            }
            let firstP99 = firstHistogram.valueAtPercentile(99)
            let lastP99 = lastHistogram.valueAtPercentile(99)
            // p99 within 1.5× (and 2 ms, the noise of a loaded two-core machine) of the first window's.
            if Double(lastP99) > Double(firstP99) * 1.5 + 2000 {
                failures.append("\(name) p99 rose from \(ms(firstP99)) to \(ms(lastP99))")
            }
            if let baselineMaxMicros, all.max > baselineMaxMicros * 2 {
                failures.append("\(name) max latency \(ms(all.max)) above twice the baseline \(ms(baselineMaxMicros))")
            }
        }
        if let mqttPublished, let mqttDelivered, mqttDelivered < mqttPublished {
            failures.append("MQTT delivered \(mqttDelivered) of \(mqttPublished) messages")
        }
        if let kafkaErrors, kafkaErrors > 0 { failures.append("\(kafkaErrors) Kafka produce requests failed") }
    }

    func print(json: Bool) {
        if json {
            var line = JSONLine()
            line.add("mode", "soak-verdict")
            line.add("verdict", failures.isEmpty ? "flat" : "failed")
            for (name, text) in lines { line.add(name, text) }
            line.add("failures", failures.joined(separator: "; "))
            Console.out(line.text + "\n")
            return
        }
        for (name, text) in lines { Console.out("\(name.padded(to: 6)) \(text)\n") }
        Console.out(failures.isEmpty ? "verdict: flat\n" : "verdict: FAILED: \(failures.joined(separator: "; "))\n")
    }
}
