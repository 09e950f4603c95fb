import Testing

@testable import StrataAMQP

@Suite struct AMQPChannelStateTests {
    typealias State = AMQPChannelState<String>

    @Test func deliveryTagsAcksAndPrefetch() throws {
        var state = State()
        try state.qos(prefetchSize: 0, prefetchCount: 2, global: false)
        let consumer = try state.consume(tag: "", queue: "q", noAck: false, exclusive: false)
        #expect(consumer.tag == "amq.ctag-1" && consumer.prefetch == 2)
        #expect(throws: AMQPError.self) {
            _ = try state.consume(tag: "amq.ctag-1", queue: "q", noAck: false, exclusive: false)
        }
        #expect(state.canDeliver(to: consumer.tag))
        #expect(state.deliver("m1", consumer: consumer.tag, needsAck: true) == 1)
        #expect(state.deliver("m2", consumer: consumer.tag, needsAck: true) == 2)
        // Two unacknowledged: the consumer's prefetch is reached.
        #expect(!state.canDeliver(to: consumer.tag))
        // basic.get deliveries do not count against a consumer.
        #expect(state.deliver("m3", consumer: nil, needsAck: true) == 3)
        #expect(try state.settle(tag: 1, multiple: false, methodID: 80) == [.init(tag: 1, handle: "m1")])
        #expect(state.canDeliver(to: consumer.tag))
        // Unknown and twice-acked tags are 406.
        for tag: UInt64 in [1, 9] {
            #expect(throws: AMQPError.self) { _ = try state.settle(tag: tag, multiple: false, methodID: 80) }
        }
        #expect(state.deliver("m4", consumer: consumer.tag, needsAck: true) == 4)
        #expect(try state.settle(tag: 3, multiple: true, methodID: 120).map(\.tag) == [2, 3])
        #expect(state.unacknowledged == 1)
        // multiple with tag 0: everything.
        _ = state.deliver("m5", consumer: consumer.tag, needsAck: true)
        #expect(try state.settle(tag: 0, multiple: true, methodID: 80).map(\.handle) == ["m4", "m5"])
        // No-ack deliveries are never held.
        let free = try state.consume(tag: "free", queue: "q", noAck: true, exclusive: false)
        #expect(state.deliver("m6", consumer: free.tag, needsAck: false) == 6 && state.unacknowledged == 0)
        #expect(throws: AMQPError.self) { try state.qos(prefetchSize: 1024, prefetchCount: 0, global: false) }
    }

    @Test func channelPrefetchCountsEveryConsumer() throws {
        var state = State()
        try state.qos(prefetchSize: 0, prefetchCount: 3, global: true)
        let a = try state.consume(tag: "a", queue: "q1", noAck: false, exclusive: false)
        let b = try state.consume(tag: "b", queue: "q2", noAck: false, exclusive: false)
        #expect(a.prefetch == 0)
        _ = state.deliver("1", consumer: "a", needsAck: true)
        _ = state.deliver("2", consumer: "a", needsAck: true)
        _ = state.deliver("3", consumer: "b", needsAck: true)
        #expect(!state.canDeliver(to: a.tag) && !state.canDeliver(to: b.tag))
        // Cancelled consumers keep their deliveries on the channel; a closing channel returns them all.
        #expect(state.cancel(tag: "a") != nil && !state.canDeliver(to: "a"))
        #expect(state.takeAllUnacked().map(\.handle) == ["1", "2", "3"] && state.unacknowledged == 0)
    }

    @Test func aChannelsLaterConsumersOfASingleActiveQueueStandBy() throws {
        var state = State()
        let first = try state.consume(tag: "a", queue: "q", noAck: false, exclusive: false, singleActive: true)
        let second = try state.consume(tag: "b", queue: "q", noAck: false, exclusive: false, singleActive: true)
        let other = try state.consume(tag: "c", queue: "r", noAck: false, exclusive: false, singleActive: true)
        #expect(state.credit(for: first.tag, cap: 10) == 10)
        #expect(state.credit(for: second.tag, cap: 10) == 0 && !state.canDeliver(to: second.tag))
        #expect(state.credit(for: other.tag, cap: 10) == 10)
        _ = state.cancel(tag: first.tag)
        #expect(state.credit(for: second.tag, cap: 10) == 10 && state.consumes(from: "q"))
        _ = state.cancel(tag: second.tag)
        #expect(!state.consumes(from: "q"))
    }

    @Test func confirmsCoalesceAndNackAtOnce() throws {
        var state = State()
        #expect(state.published() == nil)
        try state.selectConfirms()
        #expect(throws: AMQPError.self) { try state.selectTransactions() }
        let sequences = (0..<5).map { _ in state.published()! }
        #expect(sequences == [1, 2, 3, 4, 5])
        // 2 and 3 stored before 1: nothing yet; then 1 → one ack for 1–3.
        #expect(state.answered(2, ok: true) == [])
        #expect(state.answered(3, ok: true) == [])
        #expect(state.answered(1, ok: true) == [.basicAck(deliveryTag: 3, multiple: true)])
        // 5 stored, 4 failed: the nack for 4 goes at once, and 5's ack after it.
        #expect(state.answered(5, ok: true) == [])
        #expect(
            state.answered(4, ok: false)
                == [
                    .basicNack(deliveryTag: 4, multiple: false, requeue: false),
                    .basicAck(deliveryTag: 5, multiple: false),
                ])
        #expect(state.unconfirmed == 0)
        // A repeated or unknown answer sends nothing.
        #expect(state.answered(5, ok: true) == [] && state.answered(42, ok: false) == [])
    }

    @Test func transactionalChannelsCannotConfirm() throws {
        var state = State()
        try state.selectTransactions()
        #expect(state.mode == .transaction)
        #expect(throws: AMQPError.self) { try state.selectConfirms() }
        #expect(state.published() == nil)
    }
}
