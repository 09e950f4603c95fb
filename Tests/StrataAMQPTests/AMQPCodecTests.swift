import NIOCore
import NIOTestUtils
import StrataTestSupport
import Testing

@testable import StrataAMQP

private func bytes(_ hex: String) -> ByteBuffer {
    var buffer = ByteBuffer()
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        buffer.writeInteger(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return buffer
}

private func decodeAll(_ input: ByteBuffer, expectingHeader: Bool = false) throws -> [AMQPFrame] {
    var decoder = AMQPFrameDecoder(expectsProtocolHeader: expectingHeader)
    var buffer = input
    var frames: [AMQPFrame] = []
    while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
    #expect(buffer.readableBytes == 0)
    return frames
}

@Suite struct AMQPCodecTests {
    /// Frames as pika 1.3 marshals them (pika.frame.Method/Header/Body(...).marshal()).
    @Test func decodesWhatPikaWrites() throws {
        let publish = try decodeAll(bytes("01000100000015003c0028000009616d712e746f70696303612e6201ce"))
        var expected = AMQPMethod.BasicPublish(exchange: "amq.topic", routingKey: "a.b")
        expected.mandatory = true
        #expect(publish == [.method(channel: 1, .basicPublish(expected))])

        let declare = try decodeAll(
            bytes("0100010000001f0032000a0000017102000000120c782d6d61782d6c656e677468490000000ace"))
        var queue = AMQPMethod.QueueDeclare(queue: "q")
        queue.durable = true
        queue.arguments = ["x-max-length": .int32(10)]
        #expect(declare == [.method(channel: 1, .queueDeclare(queue))])

        let startOk = try decodeAll(
            bytes(
                "0100000000005c000a000b000000380770726f64756374530000000470696b610c6361706162696c69746965734600000015"
                    + "127075626c69736865725f636f6e6669726d73740105504c41494e0000000c00677565737400677565737405656e5f5553ce"
            ))
        let expectedStartOk = AMQPMethod.ConnectionStartOk(
            clientProperties: [
                "product": .string("pika"), "capabilities": .table(["publisher_confirms": .bool(true)]),
            ],
            mechanism: "PLAIN", response: [0] + Array("guest".utf8) + [0] + Array("guest".utf8))
        #expect(startOk == [.method(channel: 0, .connectionStartOk(expectedStartOk))])

        let header = try decodeAll(
            bytes(
                "0200010000006d003c00000000000000000005bc400a746578742f706c61696e00000044016e4900000001017353000000017801"
                    + "627401016c410000000b4900000001530000000161036269676c000001000000000001744600000008016b44010000000f"
                    + "01765602030163000000006553f100ce"))
        let properties = AMQPProperties(
            contentType: "text/plain",
            headers: [
                "n": .int32(1), "s": .string("x"), "b": .bool(true), "l": .array([.int32(1), .string("a")]),
                "big": .int64(1 << 40), "t": .table(["k": .decimal(scale: 1, value: 15)]), "v": .void,
            ], deliveryMode: 2, priority: 3, correlationID: "c", timestamp: 1_700_000_000)
        #expect(header == [.header(channel: 1, AMQPContentHeader(bodySize: 5, properties: properties))])

        #expect(try decodeAll(bytes("0300010000000568656c6c6fce")) == [.body(channel: 1, ByteBuffer(string: "hello"))])
    }

    static let methods: [AMQPMethod] = {
        var exchange = AMQPMethod.ExchangeDeclare(exchange: "logs", type: "topic")
        exchange.durable = true
        exchange.internal = true
        exchange.arguments = ["alternate-exchange": .string("ae")]
        var bind = AMQPMethod.ExchangeBind(destination: "d", source: "s", routingKey: "#")
        bind.noWait = true
        var queue = AMQPMethod.QueueDeclare(queue: "")
        queue.exclusive = true
        queue.autoDelete = true
        var queueBind = AMQPMethod.QueueBind(queue: "q", exchange: "amq.headers", routingKey: "")
        queueBind.arguments = ["x-match": .string("any"), "a": .int64(-1), "f": .double(0.25), "x": .bytes([0, 255])]
        var consume = AMQPMethod.BasicConsume(queue: "q", consumerTag: "ctag")
        consume.noAck = true
        consume.exclusive = true
        consume.arguments = ["x-priority": .int16(-3)]
        var publish = AMQPMethod.BasicPublish(exchange: "", routingKey: "q")
        publish.immediate = true
        return [
            .connectionStart(.init(serverProperties: ["product": .string("Strata")], mechanisms: "PLAIN AMQPLAIN")),
            .connectionStartOk(.init(clientProperties: [:], mechanism: "AMQPLAIN", response: [1, 2, 3])),
            .connectionSecure(challenge: [9]), .connectionSecureOk(response: []),
            .connectionTune(.init(channelMax: 2047, frameMax: 131_072, heartbeat: 60)),
            .connectionTuneOk(.init(channelMax: 0, frameMax: 4096, heartbeat: 0)),
            .connectionOpen(virtualHost: "/"), .connectionOpenOk,
            .connectionClose(.init(replyCode: 320, replyText: "CONNECTION_FORCED - shutdown", classID: 0, methodID: 0)),
            .connectionCloseOk, .connectionBlocked(reason: "low on disk"), .connectionUnblocked,
            .connectionUpdateSecret(newSecret: [1], reason: "r"), .connectionUpdateSecretOk,
            .channelOpen, .channelOpenOk, .channelFlow(active: false), .channelFlowOk(active: true),
            .channelClose(.init(replyCode: 404, replyText: "NOT_FOUND", classID: 50, methodID: 10)), .channelCloseOk,
            .exchangeDeclare(exchange), .exchangeDeclareOk,
            .exchangeDelete(exchange: "logs", ifUnused: true, noWait: false), .exchangeDeleteOk,
            .exchangeBind(bind), .exchangeBindOk, .exchangeUnbind(bind), .exchangeUnbindOk,
            .queueDeclare(queue), .queueDeclareOk(queue: "amq.gen-1", messageCount: 7, consumerCount: 1),
            .queueBind(queueBind), .queueBindOk, .queuePurge(queue: "q", noWait: true), .queuePurgeOk(messageCount: 3),
            .queueDelete(queue: "q", ifUnused: false, ifEmpty: true, noWait: false), .queueDeleteOk(messageCount: 0),
            .queueUnbind(AMQPMethod.QueueBind(queue: "q", exchange: "x", routingKey: "k")), .queueUnbindOk,
            .basicQos(prefetchSize: 0, prefetchCount: 10, global: true), .basicQosOk,
            .basicConsume(consume), .basicConsumeOk(consumerTag: "ctag"),
            .basicCancel(consumerTag: "ctag", noWait: false), .basicCancelOk(consumerTag: "ctag"),
            .basicPublish(publish),
            .basicReturn(.init(replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k")),
            .basicDeliver(
                .init(consumerTag: "c", deliveryTag: 1 << 40, redelivered: true, exchange: "", routingKey: "q")),
            .basicGet(queue: "q", noAck: false),
            .basicGetOk(.init(deliveryTag: 2, redelivered: false, exchange: "x", routingKey: "k", messageCount: 5)),
            .basicGetEmpty, .basicAck(deliveryTag: 9, multiple: true), .basicReject(deliveryTag: 3, requeue: false),
            .basicRecoverAsync(requeue: true), .basicRecover(requeue: false), .basicRecoverOk,
            .basicNack(deliveryTag: 4, multiple: false, requeue: true),
            .confirmSelect(noWait: false), .confirmSelectOk,
            .txSelect, .txSelectOk, .txCommit, .txCommitOk, .txRollback, .txRollbackOk,
        ]
    }()

    @Test func everyMethodRoundTrips() throws {
        for method in Self.methods {
            var buffer = ByteBuffer()
            AMQPFrameEncoder.write(.method(channel: 3, method), into: &buffer)
            #expect(try decodeAll(buffer) == [.method(channel: 3, method)], "\(method.name)")
        }
    }

    @Test func methodNamesAreRabbitMQs() {
        #expect(AMQPMethod.basicCancelOk(consumerTag: "").name == "basic.cancel-ok")
        #expect(
            AMQPMethod.connectionStartOk(.init(clientProperties: [:], mechanism: "", response: [])).name
                == "connection.start-ok")
        #expect(AMQPMethod.basicRecoverAsync(requeue: true).name == "basic.recover-async")
        #expect(AMQPMethod.txSelect.name == "tx.select")
    }

    @Test func decoderPassesNIOsVerifier() throws {
        // (The protocol header is taken once per connection, so the verifier, which feeds one
        // decoder the input several ways, sees frames only.)
        var input = ByteBuffer()
        var expected: [AMQPFrame] = []
        for method in Self.methods.prefix(20) {
            AMQPFrameEncoder.write(.method(channel: 1, method), into: &input)
            expected.append(.method(channel: 1, method))
        }
        AMQPFrameEncoder.write(.heartbeat, into: &input)
        expected.append(.heartbeat)
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [(input, expected)],
            decoderFactory: { AMQPFrameDecoder(expectsProtocolHeader: false) })
    }

    @Test func contentIsCutToFrameMax() throws {
        var buffer = ByteBuffer()
        let body = ByteBuffer(repeating: 7, count: 10_000)
        let deliver = AMQPMethod.basicDeliver(
            .init(consumerTag: "c", deliveryTag: 1, redelivered: false, exchange: "", routingKey: "q"))
        AMQPFrameEncoder.writeContent(
            channel: 1, method: deliver, properties: AMQPProperties(deliveryMode: 2), body: body, frameMax: 4096,
            into: &buffer)
        let frames = try decodeAll(buffer)
        #expect(frames.count == 2 + 3)
        var joined = ByteBuffer()
        for case .body(_, var piece) in frames {
            #expect(piece.readableBytes <= 4096 - 8)
            joined.writeBuffer(&piece)
        }
        #expect(joined == body)
    }

    @Test func badInputIsRefusedWithTheRightCode() throws {
        func code(_ hex: String, header: Bool = false) -> UInt16? {
            do {
                _ = try decodeAll(bytes(hex), expectingHeader: header)
                return nil
            } catch let error as AMQPError {
                return error.code
            } catch {
                return 0
            }
        }
        // A frame larger than frame-max is refused from its 7-byte header, before the payload.
        #expect(code("01000100100000") == AMQPError.frameError)
        // The end octet is not 0xCE.
        #expect(code("0300010000000568656c6c6fcf") == AMQPError.frameError)
        // An unknown frame type, and a heartbeat on a channel.
        #expect(code("0900010000000000ce") == AMQPError.frameError)
        #expect(code("0800010000000000ce") == AMQPError.frameError)
        // An unknown method: not implemented, naming it.
        #expect(code("01000100000004003c00ffce") == AMQPError.notImplemented)
        // A short string running past the method's arguments.
        #expect(code("01000100000009003c0028000009616dce") == AMQPError.syntaxError)
        // Bytes after the arguments.
        #expect(code("01000100000006001400140000ce") == AMQPError.syntaxError)
        // An unknown field type in a table.
        var table = ByteBuffer()
        table.writeInteger(UInt32(3))
        table.writeBytes([1, 0x61, 0x51])  // "a": 'Q'
        #expect(throws: AMQPError.self) { _ = try table.readAMQPTable() }
        // A long string claiming more than the frame holds.
        var long = ByteBuffer()
        long.writeInteger(UInt32.max)
        #expect(throws: AMQPError.self) { _ = try long.readLongBytes() }
        // Tables nested past the limit.
        var deep = AMQPFieldValue.void
        for _ in 0..<40 { deep = .table(["t": deep]) }
        var nested = ByteBuffer()
        nested.writeAMQPTable(["t": deep])
        #expect(throws: AMQPError.self) { _ = try nested.readAMQPTable() }
    }

    @Test func aWrongProtocolHeaderIsNamed() throws {
        var decoder = AMQPFrameDecoder()
        var old = ByteBuffer(bytes: Array("AMQP".utf8) + [1, 1, 0, 9])
        #expect(throws: AMQPFrameDecoder.WrongProtocolHeader.self) { _ = try decoder.decode(buffer: &old) }
        var http = ByteBuffer(string: "GET")
        var fresh = AMQPFrameDecoder()
        #expect(throws: AMQPFrameDecoder.WrongProtocolHeader.self) { _ = try fresh.decode(buffer: &http) }
        var partial = ByteBuffer(string: "AMQ")
        var waiting = AMQPFrameDecoder()
        #expect(try waiting.decode(buffer: &partial) == nil)
    }

    /// Seeded mutations of a whole conversation (header, handshake, a published message) and of
    /// every method: each outcome is frames or a typed error, never a crash or a hang.
    @Test func mutatedConversationsNeverCrash() {
        var conversation = ByteBuffer(bytes: AMQPFrame.protocolHeaderBytes)
        let publish = AMQPMethod.BasicPublish(exchange: "amq.topic", routingKey: "a.b")
        for frame: AMQPFrame in [
            .method(
                channel: 0,
                .connectionStartOk(
                    .init(clientProperties: ["a": .array([.int8(1)])], mechanism: "PLAIN", response: [0, 1]))),
            .method(channel: 0, .connectionTuneOk(.init(channelMax: 0, frameMax: 8192, heartbeat: 0))),
            .method(channel: 0, .connectionOpen(virtualHost: "/")), .method(channel: 1, .channelOpen),
            .method(channel: 1, .basicPublish(publish)),
            .header(
                channel: 1, AMQPContentHeader(bodySize: 3, properties: AMQPProperties(headers: ["k": .string("v")]))),
            .body(channel: 1, ByteBuffer(string: "abc")),
        ] {
            AMQPFrameEncoder.write(frame, into: &conversation)
        }
        var seeds = [Array(conversation.readableBytesView)]
        for method in Self.methods {
            var buffer = ByteBuffer(bytes: AMQPFrame.protocolHeaderBytes)
            AMQPFrameEncoder.write(.method(channel: 1, method), into: &buffer)
            seeds.append(Array(buffer.readableBytesView))
        }
        var rng = SeededMutator(seed: 5672)
        for iteration in 0..<20_000 {
            AMQPFuzzTarget.frames(rng.mutate(seeds[iteration % seeds.count]))
        }
    }
}
