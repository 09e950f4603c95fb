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
            expiryInterval: 3600, disconnectedAt: 1_700_000_000_000)
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
        let json = try JSONEncoder().encode(record)
        #expect(bytes.count * 2 < json.count, "binary \(bytes.count) bytes, JSON \(json.count)")
    }

    @Test func jsonRecordsOfEarlierGatewaysStillLoad() throws {
        let json = Array(try JSONEncoder().encode(Self.record()))
        let back = try MQTTSessionRecord(stored: json)
        #expect(back.subscriptions.count == 2 && back.inflight.count == 10)
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
