import Foundation
import NIOCore
import StrataJournal
import Synchronization

/// What the gateway counts for its `$SYS` topics: PUBLISH packets and their payload bytes in
/// and out since it started (beside the swift-metrics counters, which cannot be read back).
enum MQTTTraffic {
    private static let receivedCount = Atomic<Int>(0)
    private static let sentCount = Atomic<Int>(0)
    private static let receivedBytes = Atomic<Int>(0)
    private static let sentBytes = Atomic<Int>(0)

    static func received(bytes: Int) {
        MQTTMetrics.messagesIn.increment()
        MQTTMetrics.bytesIn.increment(by: bytes)
        receivedCount.wrappingAdd(1, ordering: .relaxed)
        receivedBytes.wrappingAdd(bytes, ordering: .relaxed)
    }

    static func sent(bytes: Int) {
        MQTTMetrics.messagesOut.increment()
        MQTTMetrics.bytesOut.increment(by: bytes)
        sentCount.wrappingAdd(1, ordering: .relaxed)
        sentBytes.wrappingAdd(bytes, ordering: .relaxed)
    }

    static var totals: (received: Int, sent: Int, bytesReceived: Int, bytesSent: Int) {
        (
            receivedCount.load(ordering: .relaxed), sentCount.load(ordering: .relaxed),
            receivedBytes.load(ordering: .relaxed), sentBytes.load(ordering: .relaxed)
        )
    }
}

/// mosquitto's `$SYS/broker/…` topics, published by each gateway process every `interval` to
/// its own subscribers (as each mosquitto broker publishes its own), retained: a subscription
/// gets the latest values at once. They are not written to the journal. Load figures are
/// mosquitto's: per-minute rates as exponentially weighted averages over 1, 5 and 15 minutes.
struct MQTTSysTopics {
    static let version = "Strata MQTT gateway"

    private let started = ContinuousClock.now
    private var last: (received: Int, sent: Int, at: ContinuousClock.Instant)?
    private var load: [String: Double] = [:]

    /// The topics and values as of now, given the connected clients.
    mutating func values(connected: Int) -> [(String, String)] {
        let now = ContinuousClock.now
        let totals = MQTTTraffic.totals
        var values: [(String, String)] = [
            ("$SYS/broker/version", Self.version),
            ("$SYS/broker/uptime", "\(Int((now - started).components.seconds)) seconds"),
            ("$SYS/broker/clients/connected", "\(connected)"),
            ("$SYS/broker/publish/messages/received", "\(totals.received)"),
            ("$SYS/broker/publish/messages/sent", "\(totals.sent)"),
            ("$SYS/broker/publish/bytes/received", "\(totals.bytesReceived)"),
            ("$SYS/broker/publish/bytes/sent", "\(totals.bytesSent)"),
        ]
        if let last {
            let seconds = max(
                0.001,
                Double((now - last.at).components.seconds) + Double((now - last.at).components.attoseconds) / 1e18)
            for (name, count) in [("received", totals.received - last.received), ("sent", totals.sent - last.sent)] {
                let perMinute = Double(count) * 60 / seconds
                for minutes in [1, 5, 15] {
                    let key = "$SYS/broker/load/publish/\(name)/\(minutes)min"
                    let factor = exp(-seconds / Double(minutes * 60))
                    let average = (load[key] ?? perMinute) * factor + perMinute * (1 - factor)
                    load[key] = average
                    values.append((key, String(format: "%.2f", average)))
                }
            }
        }
        last = (totals.received, totals.sent, now)
        return values
    }

    static func message(_ topic: String, _ value: String) -> MQTTMessage {
        MQTTMessage(
            topic: topic, payload: ByteBuffer(string: value), qos: 0, retain: true, publisher: "",
            properties: [], timestamp: WallClock.milliseconds())
    }
}
