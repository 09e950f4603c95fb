import Testing

@testable import StrataAMQP

@Suite struct AMQPQueueArgumentsTests {
    @Test func documentedArgumentsAreParsed() throws {
        let arguments = try AMQPQueueArguments([
            "x-message-ttl": .int32(60_000), "x-expires": .int64(1_800_000), "x-max-length": .int16(10),
            "x-max-length-bytes": .int64(1 << 20), "x-overflow": .string("reject-publish"),
            "x-dead-letter-exchange": .string("dlx"), "x-dead-letter-routing-key": .string("dead"),
            "x-max-priority": .uint8(10), "x-single-active-consumer": .bool(true), "x-queue-type": .string("quorum"),
        ])
        #expect(arguments.messageTTL == 60_000 && arguments.expires == 1_800_000 && arguments.maxLength == 10)
        #expect(arguments.maxLengthBytes == 1 << 20 && arguments.overflow == .rejectPublish)
        #expect(arguments.deadLetterExchange == "dlx" && arguments.deadLetterRoutingKey == "dead")
        #expect(arguments.maxPriority == 10 && arguments.singleActiveConsumer && arguments.queueType == .quorum)
        #expect(try AMQPQueueArguments([:]) == AMQPQueueArguments())
    }

    @Test(
        arguments: [
            ["x-message-ttl": AMQPFieldValue.int32(-1)], ["x-message-ttl": .string("10")], ["x-expires": .int32(0)],
            ["x-max-length": .int64(-5)], ["x-overflow": .string("drop-tail")], ["x-max-priority": .int32(256)],
            ["x-max-priority": .int32(0)], ["x-single-active-consumer": .int8(1)], ["x-queue-type": .string("stream")],
            ["x-dead-letter-routing-key": .string("k")], ["x-unknown": .bool(true)],
        ] as [AMQPTable])
    func badArgumentsAre406(_ table: AMQPTable) {
        #expect {
            _ = try AMQPQueueArguments(table)
        } throws: { error in
            (error as? AMQPError)?.code == AMQPError.preconditionFailed
        }
    }
}
