import Foundation
import NIOCore
import StrataJournal
import Testing

@testable import StrataMQTT

/// A session's side of shared subscriptions: the queue leases of the messages it holds, its
/// window, and what a resumed session does with the leases its record names.
@Suite struct MQTTShareSessionTests {
    static func session(_ id: String = "member") -> MQTTSession {
        MQTTSession(
            clientID: id, version: .v5, persistent: true, receiveMaximum: 2, maxQueued: 10, clientMaxPacketSize: nil,
            overflow: {})
    }

    static func message(_ payload: String, qos: UInt8 = 1) -> MQTTMessage {
        MQTTMessage(
            topic: "jobs/1", payload: ByteBuffer(string: payload), qos: qos, retain: false, publisher: "p",
            properties: [], timestamp: WallClock.milliseconds())
    }

    static func lease(_ offset: UInt64, delivery: UInt32 = 1) -> MQTTShareLease {
        MQTTShareLease(queue: "q", receipt: QueueReceipt(source: 0, offset: offset, delivery: delivery))
    }

    @Test func aRecordWhoseKeyIsNoTopicNameIsNotDelivered() {
        let session = Self.session()
        for key in [Array(repeating: UInt8(ascii: "a"), count: 70_000), Array("a/+".utf8), [0x61, 0x00], []] {
            let record = Record(timestamp: WallClock.milliseconds(), key: key, value: Array("v".utf8))
            let outcome = session.deliverNow(MQTTMessage(record: record), qos: 1, retain: false, identifiers: [])
            #expect(outcome == .done)
        }
        #expect(session.record(positions: [:], expiryInterval: nil).inflight.isEmpty)
    }

    @Test func leasesAreHeldUntilAcknowledgedAndCountAgainstTheWindow() async {
        let session = Self.session()
        #expect(await session.waitForShareRoom("q", window: 4) == 4)
        for offset in 0..<3 {
            let outcome = session.deliverShared(
                Self.message("m\(offset)"), qos: 1, identifiers: [], lease: Self.lease(UInt64(offset)), dup: false)
            #expect(outcome == .held)
        }
        // Two in flight (receive maximum 2), one waiting: all three held, one room left.
        #expect(await session.waitForShareRoom("q", window: 4) == 1)
        #expect(session.shareLeases.filter(\.sent).count == 2)
        // The same message again (a resume renewed its lease) is not sent twice; its lease
        // takes the newer receipt, which its acknowledgement settles.
        let again = session.deliverShared(
            Self.message("m0"), qos: 1, identifiers: [], lease: Self.lease(0, delivery: 2), dup: true)
        #expect(again == .held)
        #expect(session.shareLeases.count == 3)
        let acknowledged = session.acknowledged(1)
        #expect(acknowledged == Self.lease(0, delivery: 2))
        // The waiting one went out in the freed slot.
        #expect(session.shareLeases.filter(\.sent).count == 2)
        #expect(await session.waitForShareRoom("q", window: 4) == 2)
        let qos0 = session.deliverShared(
            Self.message("z", qos: 0), qos: 0, identifiers: [], lease: Self.lease(9), dup: false)
        #expect(qos0 == .done, "sent at most once: to be acknowledged in the queue at once")
        session.close()
        let closed = session.deliverShared(
            Self.message("c"), qos: 1, identifiers: [], lease: Self.lease(10), dup: false)
        #expect(closed == .closed)
        #expect(await session.waitForShareRoom("q", window: 4) == 0)
    }

    @Test func aResumedSessionKeepsPacketIdsOfConfirmedLeasesAndDropsTheRest() throws {
        let first = Self.session()
        _ = first.deliverShared(Self.message("a"), qos: 1, identifiers: [], lease: Self.lease(5), dup: false)
        _ = first.deliverShared(Self.message("b"), qos: 1, identifiers: [], lease: Self.lease(6), dup: false)
        _ = first.deliverShared(Self.message("c"), qos: 1, identifiers: [], lease: Self.lease(7), dup: false)
        let record = first.record(positions: [:], expiryInterval: 60)
        // Only what was sent is in the record; the waiting one stays leased in its queue.
        #expect(record.inflight.compactMap(\.share).map(\.offset) == [5, 6])
        let stored = try JSONDecoder().decode(MQTTSessionRecord.self, from: JSONEncoder().encode(record))

        let resumed = Self.session()
        #expect(resumed.restore(stored).isEmpty, "shared messages wait for their queue's confirmation")
        // The queue's resume hands over offset 6 (delivery 2) and 7 (never sent); 5 was settled.
        let confirmed = resumed.deliverShared(
            Self.message("b"), qos: 1, identifiers: [], lease: Self.lease(6, delivery: 2), dup: true)
        #expect(confirmed == .held)
        let fresh = resumed.deliverShared(
            Self.message("c"), qos: 1, identifiers: [], lease: Self.lease(7, delivery: 2), dup: true)
        #expect(fresh == .held)
        resumed.dropUnconfirmed("q")
        #expect(Set(resumed.shareLeases.map(\.lease.offset)) == [6, 7])
        let allSent = resumed.shareLeases.allSatisfy { $0.sent }
        #expect(allSent, "offset 7 took the slot offset 5 freed")
        // Offset 6 kept its packet id (2) and settles with its new delivery number.
        let settled = resumed.acknowledged(2)
        #expect(settled == Self.lease(6, delivery: 2))
        #expect(resumed.acknowledged(1) == nil, "offset 5's packet id was freed")
    }

    @Test func unsubscribedWaitingMessagesGoBackAndReceivedOnesAreCompleted() throws {
        let session = Self.session()
        for offset in 0..<3 {
            _ = session.deliverShared(
                Self.message("m\(offset)"), qos: 2, identifiers: [], lease: Self.lease(UInt64(offset)), dup: false)
        }
        #expect(session.takeWaitingShares("q") == [Self.lease(2)], "the one never sent")
        #expect(session.received(1))  // PUBREC for offset 0
        let record = try JSONDecoder().decode(
            MQTTSessionRecord.self, from: JSONEncoder().encode(session.record(positions: [:], expiryInterval: 60)))
        let resumed = Self.session()
        _ = resumed.restore(record)
        // The queue hands back neither: offset 0 was received by the client, so it is completed
        // with PUBREL (its packet id stays taken until PUBCOMP); offset 1 is forgotten.
        resumed.dropUnconfirmed("q")
        #expect(resumed.shareLeases.isEmpty)
        #expect(resumed.received(1), "packet id 1 still in flight, awaiting PUBCOMP")
        #expect(!resumed.received(2))
    }
}
