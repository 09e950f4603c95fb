import Foundation
import NIOCore
import StrataJournal
import StrataWire
import Testing

@testable import StrataMQTT

/// Session records are binary `KVRecord`s; JSON ones written by earlier gateways still load.
@Suite struct MQTTSessionRecordTests {
    static func record() -> MQTTSessionRecord {
        let publish = MQTTPacket.Publish(
            topic: "sensors/room1/temp", qos: 1, packetID: 9, properties: [.userProperty("k", "v")],
            payload: ByteBuffer(bytes: Array(repeating: 7, count: 100)))
        return MQTTSessionRecord(
            subscriptions: [
                .init(filter: "sensors/#", qos: 1, noLocal: true, retainAsPublished: false, identifier: 42),
                .init(filter: "$share/g/jobs/+", qos: 2, noLocal: false, retainAsPublished: true, identifier: nil),
            ],
            positions: ["mqtt/default/0": 17, "kafka/sensors/0": 5], complete: true,
            inflight: Array(
                repeating: .init(
                    packet: MQTTSessionRecord.encode(publish), released: false,
                    share: MQTTShareLease(
                        queue: "mqtt/default/$share/g/jobs/+", receipt: .init(source: 3, offset: 99, delivery: 2))),
                count: 10),
            waiting: [MQTTSessionRecord.encode(publish)], inboundQoS2: [1, 65_535], nextPacketID: 10,
            expiryInterval: 3600, disconnectedAt: 1_700_000_000_000, owner: .init(user: "alice"))
    }

    @Test func binaryRoundTripsAndIsSmallerThanJSON() throws {
        let record = Self.record()
        let bytes = record.kvBytes
        let back = try MQTTSessionRecord(stored: bytes)
        #expect(back.subscriptions == record.subscriptions)
        #expect(back.positions == record.positions && back.complete == true)
        #expect(back.inflight.map(\.packet) == record.inflight.map(\.packet))
        #expect(back.inflight.map(\.share) == record.inflight.map(\.share))
        #expect(back.waiting == record.waiting && back.inboundQoS2 == record.inboundQoS2)
        #expect(back.nextPacketID == 10 && back.expiryInterval == 3600 && back.disconnectedAt == record.disconnectedAt)
        #expect(back.owner == .init(user: "alice"))
        let json = try JSONEncoder().encode(record)
        #expect(bytes.count * 2 < json.count, "binary \(bytes.count) bytes, JSON \(json.count)")
    }

    @Test func jsonRecordsOfEarlierGatewaysStillLoad() throws {
        let json = Array(try JSONEncoder().encode(Self.record()))
        let back = try MQTTSessionRecord(stored: json)
        #expect(back.subscriptions.count == 2 && back.inflight.count == 10)
    }

    @Test func ownersRoundTripAndVersionOneRecordsHaveNone() throws {
        var anonymous = Self.record()
        anonymous.owner = .init(user: nil)
        #expect(try MQTTSessionRecord(stored: anonymous.kvBytes).owner == .init(user: nil))
        // Version 1 is version 2 without the owner field (one absent-flag byte at the end).
        var unowned = Self.record()
        unowned.owner = nil
        let version1 = [1] + unowned.kvBytes.dropFirst().dropLast()
        let back = try MQTTSessionRecord(stored: Array(version1))
        #expect(back.owner == nil && back.subscriptions.count == 2)
    }

    @Test func aRestoredSessionSendsNothingItsUserMayNoLongerRead() throws {
        let acl = try MQTTACL(parsing: "user alice\ntopic read sensors/#\ntopic deny sensors/secret\n")
        let session = MQTTSession(
            clientID: "c", user: "alice", acl: acl, version: .v5, persistent: true, receiveMaximum: 10, maxQueued: 10,
            clientMaxPacketSize: nil, overflow: {})
        func stored(_ topic: String, _ id: UInt16) -> MQTTSessionRecord.StoredPublish {
            .init(
                packet: MQTTSessionRecord.encode(
                    .init(topic: topic, qos: 1, packetID: id, payload: ByteBuffer(string: topic))),
                released: false, share: nil)
        }
        var record = Self.record()
        record.inflight = [stored("sensors/1", 1), stored("sensors/secret", 2), stored("admin/x", 3)]
        record.waiting = [
            MQTTSessionRecord.encode(.init(topic: "sensors/secret", qos: 0, payload: ByteBuffer(string: "w"))),
            MQTTSessionRecord.encode(.init(topic: "sensors/2", qos: 0, payload: ByteBuffer(string: "w"))),
        ]
        let resent = session.restore(record)
        let topics = resent.compactMap { packet -> String? in
            if case .publish(let publish) = packet { return publish.topic }
            return nil
        }
        #expect(topics == ["sensors/1"])
        #expect(
            session.record(positions: [:], expiryInterval: nil).waiting.compactMap(MQTTSessionRecord.decode).map(
                \.topic) == ["sensors/2"])
    }

    @Test func damagedRecordsAreRefusedNotReadAsEmpty() {
        let bytes = Self.record().kvBytes
        for cut in [1, bytes.count / 2, bytes.count - 1] {
            #expect(throws: JournalError.self) { try MQTTSessionRecord(stored: Array(bytes.prefix(cut))) }
        }
        #expect(throws: JournalError.self) { try MQTTSessionRecord(stored: [9] + bytes.dropFirst()) }  // unknown version
        #expect(throws: JournalError.self) { try MQTTSessionRecord(stored: bytes + [0]) }  // trailing bytes
    }
}
