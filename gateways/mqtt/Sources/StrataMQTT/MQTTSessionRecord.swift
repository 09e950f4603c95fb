import NIOCore
import StrataJournal

/// What a persistent session leaves in the journal (namespace `mqtt.sessions`, key = client
/// id, JSON) when its connection ends, and what a reconnect with clean start 0 resumes from.
struct MQTTSessionRecord: Codable, Sendable {
    struct StoredPublish: Codable, Sendable {
        /// The PUBLISH as MQTT 5.0 encodes it (packet id included).
        var packet: [UInt8]
        /// PUBREC came back: only PUBREL/PUBCOMP remain.
        var released: Bool
        /// A shared subscription's message: the queue lease it settles (nil otherwise).
        var share: MQTTShareLease?
    }

    var subscriptions: [MQTTSession.Subscription]
    /// Per shard the router follows (bucket shards, registry topic partitions), the offset from
    /// which messages were not yet handed to the session.
    var positions: [String: UInt64]
    /// True when `positions` names every shard the router followed when the record was stored,
    /// so that a shard missing from it is one that began later (replayed from its start); nil
    /// in records from before registry topics, whose positions are bucket numbers.
    var complete: Bool?
    /// Outbound QoS 1/2 messages not yet acknowledged, and those waiting behind them.
    var inflight: [StoredPublish]
    var waiting: [[UInt8]]
    var inboundQoS2: [UInt16]
    var nextPacketID: UInt16
    /// Seconds after the disconnect that the session lives (nil: forever, the 3.1.1 way).
    var expiryInterval: UInt32?
    var disconnectedAt: Int64

    var isExpired: Bool {
        guard let expiryInterval, expiryInterval != .max else { return false }
        return WallClock.milliseconds() - disconnectedAt > Int64(expiryInterval) * 1000
    }

    static func encode(_ publish: MQTTPacket.Publish) -> [UInt8] {
        var buffer = ByteBuffer()
        MQTTPacket.publish(publish).write(version: .v5, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    static func decode(_ bytes: [UInt8]) -> MQTTPacket.Publish? {
        var decoder = MQTTDecoder(version: .v5, maxPacketSize: .max)
        var buffer = ByteBuffer(bytes: bytes)
        guard case .publish(let publish)? = try? decoder.decode(buffer: &buffer) else { return nil }
        return publish
    }
}
