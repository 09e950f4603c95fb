import NIOCore
import StrataJournal
import StrataWire

/// What a persistent session leaves in the journal (namespace `mqtt.sessions`, key = client
/// id, a binary `KVRecord`; JSON from earlier gateways is still read) when its connection ends, and what a reconnect with clean start 0 resumes from.
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
    /// Who the session belongs to: only that user (nil: an anonymous client) may resume it,
    /// end it or take its client id over. Nil for records stored before sessions had owners
    /// (version 1 and JSON), which any user may resume, as before.
    var owner: Owner?

    struct Owner: Codable, Sendable, Hashable {
        var user: String?
    }

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

/// The binary record (`KVRecord`), version 2 (version 1 had no owner). JSON records of earlier
/// gateways are still read.
extension MQTTSessionRecord: KVRecord {
    static let recordVersion: UInt8 = 2

    func write(to buffer: inout ByteBuffer) {
        buffer.writeWireList(subscriptions) { buffer, subscription in
            buffer.writeWireString(subscription.filter)
            buffer.writeInteger(subscription.qos)
            buffer.writeWireBool(subscription.noLocal)
            buffer.writeWireBool(subscription.retainAsPublished)
            buffer.writeWireOptional(subscription.identifier) { $0.writeInteger($1) }
        }
        buffer.writeWireList(positions.sorted { $0.key < $1.key }) { buffer, position in
            buffer.writeWireString(position.key)
            buffer.writeInteger(position.value)
        }
        buffer.writeWireOptional(complete) { $0.writeWireBool($1) }
        buffer.writeWireList(inflight) { buffer, stored in
            buffer.writeWireBytes(stored.packet)
            buffer.writeWireBool(stored.released)
            buffer.writeWireOptional(stored.share) { buffer, lease in
                buffer.writeWireString(lease.queue)
                buffer.writeInteger(lease.source)
                buffer.writeInteger(lease.offset)
                buffer.writeInteger(lease.delivery)
            }
        }
        buffer.writeWireList(waiting) { $0.writeWireBytes($1) }
        buffer.writeWireList(inboundQoS2) { $0.writeInteger($1) }
        buffer.writeInteger(nextPacketID)
        buffer.writeWireOptional(expiryInterval) { $0.writeInteger($1) }
        buffer.writeInteger(disconnectedAt)
        buffer.writeWireOptional(owner) { buffer, owner in
            buffer.writeWireOptional(owner.user) { $0.writeWireString($1) }
        }
    }

    init(reading buffer: inout ByteBuffer, version: UInt8) throws(JournalError) {
        subscriptions = try buffer.readWireList { buffer throws(JournalError) in
            MQTTSession.Subscription(
                filter: try buffer.readWireString(), qos: try buffer.readWireInteger(),
                noLocal: try buffer.readWireBool(), retainAsPublished: try buffer.readWireBool(),
                identifier: try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireInteger() })
        }
        let pairs = try buffer.readWireList { buffer throws(JournalError) in
            (try buffer.readWireString(), try buffer.readWireInteger(as: UInt64.self))
        }
        positions = Dictionary(pairs, uniquingKeysWith: max)
        complete = try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireBool() }
        inflight = try buffer.readWireList { buffer throws(JournalError) in
            StoredPublish(
                packet: try buffer.readWireBytes(), released: try buffer.readWireBool(),
                share: try buffer.readWireOptional { buffer throws(JournalError) in
                    MQTTShareLease(
                        queue: try buffer.readWireString(),
                        receipt: QueueReceipt(
                            source: try buffer.readWireInteger(), offset: try buffer.readWireInteger(),
                            delivery: try buffer.readWireInteger()))
                })
        }
        waiting = try buffer.readWireList { buffer throws(JournalError) in try buffer.readWireBytes() }
        inboundQoS2 = try buffer.readWireList { buffer throws(JournalError) in try buffer.readWireInteger() }
        nextPacketID = try buffer.readWireInteger()
        expiryInterval = try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireInteger() }
        disconnectedAt = try buffer.readWireInteger()
        owner =
            version >= 2
            ? try buffer.readWireOptional { buffer throws(JournalError) in
                Owner(user: try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireString() })
            } : nil
    }
}
