import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import StrataMQTT
import Synchronization

/// `storage-bench mqtt`: an MQTT load generator for any broker (Strata's gateway, mosquitto…).
/// Every subscriber subscribes to all the topics, so each message is delivered once per
/// subscriber; the payload carries its send time, so latency is publish → deliver.
struct MQTTCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt", abstract: "Measures an MQTT broker: delivered msg/s and publish → deliver latency.")

    @Option(help: "Broker URL, mqtt://HOST:PORT.")
    var url: String

    @Option(help: "Publishing connections.") var publishers = 4
    @Option(help: "Subscribing connections (each gets every message).") var subscribers = 4
    @Option(help: "QoS of publishes and subscriptions (0, 1 or 2).") var qos: UInt8 = 0
    @Option(help: "Payload bytes (at least 16).") var size = 128
    @Option(help: "Topics published to, round robin (bench/<run>/<i>).") var topics = 4
    @Option(help: "Length of the timed run in seconds.") var seconds: Double = 10
    @Option(help: "QoS 1/2 publishes each publisher keeps unacknowledged.") var inflight = 64
    @Option(help: "MQTT version: 3 (3.1.1) or 5.") var version = 3
    @Option(
        help:
            "Subscribe as one shared-subscription group of this name ($share/GROUP/...): each message is delivered once, to one subscriber."
    )
    var share: String?
    @Option(help: "User name.") var username: String?
    @Option(help: "Password.") var password: String?
    @Flag(help: "Print one JSON object per result line.") var json = false
    @Option(help: "Instead of the workload: open this many idle connections and hold them.")
    var idleConnections: Int?
    @Option(help: "Seconds to hold the idle connections.") var hold: Double = 10

    func validate() throws {
        guard url.hasPrefix("mqtt://"), (try? endpoint()) != nil else {
            throw ValidationError("--url is mqtt://HOST:PORT")
        }
        guard qos <= 2, size >= 16, publishers >= 1, subscribers >= 0, topics >= 1, inflight >= 1, seconds > 0 else {
            throw ValidationError("check --qos (0-2), --size (>= 16), --publishers, --topics, --inflight, --seconds")
        }
        guard version == 3 || version == 5 else { throw ValidationError("--version is 3 or 5") }
    }

    func endpoint() throws -> (String, Int) {
        guard let endpoint = parseHostPort(url.dropFirst("mqtt://".count)) else {
            throw ValidationError("--url is mqtt://HOST:PORT")
        }
        return endpoint
    }

    func run() async throws {
        let (host, port) = try endpoint()
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let mqttVersion: MQTTProtocolVersion = version == 5 ? .v5 : .v311
        if let idleConnections {
            // Memory per idle connection is read off the broker by the caller while they are held.
            var held: [MQTTBenchConnection] = []
            held.reserveCapacity(idleConnections)
            for index in 0..<idleConnections {
                held.append(
                    try await MQTTBenchConnection.open(
                        host: host, port: port, version: mqttVersion, clientID: "idle-\(run)-\(index)",
                        username: username,
                        password: password.map { Array($0.utf8) }))
            }
            Console.out("holding \(held.count) connections\n")
            try await Task.sleep(for: .seconds(hold))
            held.forEach { $0.close() }
            return
        }
        let stats = MQTTBenchStats()
        let origin = ContinuousClock.now
        let connect = { (id: String) in
            try await MQTTBenchConnection.open(
                host: host, port: port, version: mqttVersion, clientID: id, username: username,
                password: password.map { Array($0.utf8) })
        }
        var subscriberConnections: [MQTTBenchConnection] = []
        for s in 0..<subscribers {
            let connection = try await connect("bench-sub-\(run)-\(s)")
            try await connection.subscribe(share.map { "$share/\($0)/bench/\(run)/#" } ?? "bench/\(run)/#", qos: qos)
            subscriberConnections.append(connection)
        }
        var publisherConnections: [MQTTBenchConnection] = []
        for p in 0..<publishers { publisherConnections.append(try await connect("bench-pub-\(run)-\(p)")) }
        let expected = Mutex(0)
        let meter = ProgressMeter(label: "mqtt")
        let deadline = origin + .seconds(seconds) + .milliseconds(500)
        let started = ContinuousClock.now
        let (published, end) = try await meter.reporting {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for subscriber in subscriberConnections {
                    group.addTask {
                        try await subscriber.receive(origin: origin, stats: stats, meter: meter)
                        return 0
                    }
                }
                for (index, publisher) in publisherConnections.enumerated() {
                    group.addTask {
                        try await publisher.publishUntil(
                            started.advanced(by: .seconds(seconds)), topics: (0..<topics).map { "bench/\(run)/\($0)" },
                            first: index, qos: qos, size: size, inflight: inflight, origin: origin)
                    }
                }
                var sent = 0
                for _ in 0..<publishers { sent += try await group.next() ?? 0 }
                let publishedAt = ContinuousClock.now
                // A shared group gets each message once; plain subscribers each get all of them.
                let owed = share == nil ? sent * subscribers : (subscribers > 0 ? sent : 0)
                expected.withLock { $0 = owed }
                // Let deliveries drain (at most 5 s), then stop the subscribers.
                let drainDeadline = ContinuousClock.now + .seconds(5)
                while stats.delivered < owed && ContinuousClock.now < drainDeadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                for subscriber in subscriberConnections { subscriber.close() }
                for publisher in publisherConnections { publisher.close() }
                group.cancelAll()
                while (try? await group.next()) != nil {}
                return (sent, max(publishedAt, stats.lastDelivery ?? publishedAt))
            }
        }
        _ = deadline
        let elapsed = (end - started).seconds
        let delivered = stats.delivered
        let result = MQTTBenchResult(
            published: published, delivered: delivered, expected: expected.withLock { $0 }, seconds: elapsed,
            payloadBytes: size, latency: stats.histogram, qos: qos, publishers: publishers, subscribers: subscribers,
            topics: topics, version: version)
        result.print(json: json)
    }
}

/// Counts and latencies shared by the subscriber tasks.
final class MQTTBenchStats: Sendable {
    private struct State {
        var delivered = 0
        var histogram = Histogram<UInt64>.latency()
        var lastDelivery: ContinuousClock.Instant?
        var sinceTake = 0
        var histogramSinceTake = Histogram<UInt64>.latency()
    }

    private let state = Mutex(State())

    func record(latency: Duration, at instant: ContinuousClock.Instant) {
        state.withLock { state in
            state.delivered += 1
            state.histogram.record(latency: latency)
            state.lastDelivery = instant
            state.sinceTake += 1
            state.histogramSinceTake.record(latency: latency)
        }
    }

    /// The deliveries and their latencies since the last call (for per-interval reports).
    func take() -> (delivered: Int, histogram: Histogram<UInt64>) {
        state.withLock { state in
            defer {
                state.sinceTake = 0
                state.histogramSinceTake.reset()
            }
            return (state.sinceTake, state.histogramSinceTake)
        }
    }

    var delivered: Int { state.withLock { $0.delivered } }
    var histogram: Histogram<UInt64> { state.withLock { $0.histogram } }
    var lastDelivery: ContinuousClock.Instant? { state.withLock { $0.lastDelivery } }
}

struct MQTTBenchResult {
    var published: Int
    var delivered: Int
    var expected: Int
    var seconds: Double
    var payloadBytes: Int
    var latency: Histogram<UInt64>
    var qos: UInt8
    var publishers: Int
    var subscribers: Int
    var topics: Int
    var version: Int

    func print(json: Bool) {
        let rate = Double(delivered) / seconds
        if json {
            var line = JSONLine()
            line.add("mode", "mqtt")
            line.add("msgs_per_sec", rate)
            line.add("mb_per_sec", rate * Double(payloadBytes) / 1e6)
            line.add("p50_us", Int(latency.valueAtPercentile(50)))
            line.add("p99_us", Int(latency.valueAtPercentile(99)))
            line.add("p999_us", Int(latency.valueAtPercentile(99.9)))
            line.add("max_us", Int(latency.max))
            line.add("limit_mb_per_sec", 0)
            line.add("ratio_to_limit", 0)
            line.add("published", published)
            line.add("delivered", delivered)
            line.add("expected", expected)
            line.add("qos", Int(qos))
            line.add("publishers", publishers)
            line.add("subscribers", subscribers)
            line.add("topics", topics)
            line.add("size", payloadBytes)
            line.add("mqtt_version", version)
            line.add("seconds", seconds)
            Swift.print(line.text)
        } else {
            Swift.print(
                """
                mqtt: \(publishers) publishers → \(subscribers) subscribers, QoS \(qos), \(payloadBytes) B, \(topics) topics
                published         \(published) (\(Int(Double(published) / seconds))/s)
                delivered         \(delivered) of \(expected) (\(Int(rate)) msg/s)
                latency p50 / p99 / p999 / max (µs): \(latency.valueAtPercentile(50)) / \(latency.valueAtPercentile(99)) / \(latency.valueAtPercentile(99.9)) / \(latency.max)
                """)
        }
    }
}
