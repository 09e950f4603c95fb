import NIOCore
import Testing

@testable import StrataAMQP

@Suite struct AMQPRoutingTests {
    @Test(arguments: [
        ("a.b.c", "a.b.c", true), ("a.*.c", "a.b.c", true), ("a.*", "a.b.c", false), ("#", "a.b.c", true),
        ("#", "", true), ("*", "", false), ("a.#", "a", true), ("a.#", "a.b.c", true), ("#.c", "c", true),
        ("#.c", "a.b.c", true), ("a.#.c", "a.c", true), ("a.#.c", "a.b.b.c", true), ("a.#.c", "a.b.d", false),
        ("*.*", "a", false), ("*.#.*", "a.b", true), ("#.#", "a", true), ("a..b", "a..b", true),
        ("a.*.b", "a..b", true), ("sensors.#", "sensors", true), ("sensors.*", "sensors", false),
    ])
    func topicMatching(pattern: String, key: String, expected: Bool) {
        #expect(AMQPRouting.topicMatches(pattern: pattern, routingKey: key) == expected)
    }

    @Test func patternsOfManyHashesStayFast() {
        // Exponential backtracking would not return; dynamic programming answers at once.
        let pattern = Array(repeating: "#", count: 200).joined(separator: ".") + ".z"
        let key = Array(repeating: "a", count: 200).joined(separator: ".")
        #expect(!AMQPRouting.topicMatches(pattern: pattern, routingKey: key))
    }

    @Test func headersMatching() {
        let headers: AMQPTable = ["format": .string("pdf"), "type": .string("report"), "x-tag": .int32(1)]
        #expect(
            AMQPRouting.headersMatch(
                ["x-match": .string("all"), "format": .string("pdf"), "type": .string("report")], headers))
        #expect(!AMQPRouting.headersMatch(["format": .string("pdf"), "type": .string("log")], headers))
        #expect(
            AMQPRouting.headersMatch(
                ["x-match": .string("any"), "format": .string("zip"), "type": .string("report")], headers))
        #expect(!AMQPRouting.headersMatch(["x-match": .string("any"), "format": .string("zip")], headers))
        // x- arguments count only in the -with-x forms; a void value asks for presence.
        #expect(AMQPRouting.headersMatch(["x-tag": .int32(2)], headers))
        #expect(!AMQPRouting.headersMatch(["x-match": .string("all-with-x"), "x-tag": .int32(2)], headers))
        #expect(AMQPRouting.headersMatch(["type": .void], headers))
        #expect(!AMQPRouting.headersMatch(["missing": .void], headers))
    }

    @Test func routesThroughBindingsExchangesAndAlternates() throws {
        var routing = AMQPRouting()
        for queue in ["q1", "q2", "q3", "unrouted"] { routing.declareQueue(queue) }
        try routing.declareExchange("logs", .init(type: .topic, alternate: "ae"), passive: false)
        try routing.declareExchange("ae", .init(type: .fanout), passive: false)
        try routing.declareExchange("fan", .init(type: .fanout), passive: false)
        try routing.bind(.init(destination: .queue("q1"), routingKey: "app.*.error"), from: "logs")
        try routing.bind(.init(destination: .exchange("fan"), routingKey: "app.#"), from: "logs")
        try routing.bind(.init(destination: .queue("q2"), routingKey: ""), from: "fan")
        try routing.bind(.init(destination: .queue("q3"), routingKey: ""), from: "fan")
        try routing.bind(.init(destination: .queue("unrouted"), routingKey: ""), from: "ae")
        // A cycle back to the source routes nowhere new.
        try routing.bind(.init(destination: .exchange("logs"), routingKey: ""), from: "fan")

        #expect(routing.route(exchange: "logs", routingKey: "app.db.error", headers: nil) == ["q1", "q2", "q3"])
        #expect(routing.route(exchange: "logs", routingKey: "app.db.info", headers: nil) == ["q2", "q3"])
        #expect(routing.route(exchange: "logs", routingKey: "other", headers: nil) == ["unrouted"])
        // The default exchange: the queue named by the routing key.
        #expect(routing.route(exchange: "", routingKey: "q2", headers: nil) == ["q2"])
        #expect(routing.route(exchange: "", routingKey: "nope", headers: nil) == [])
        #expect(routing.route(exchange: "missing", routingKey: "q2", headers: nil) == [])

        // A deleted queue's bindings go with it.
        routing.deleteQueue("q1")
        #expect(routing.route(exchange: "logs", routingKey: "app.db.error", headers: nil) == ["q2", "q3"])
    }

    @Test func declarationsAreCheckedAsRabbitMQChecksThem() throws {
        var routing = AMQPRouting()
        func code(_ body: (inout AMQPRouting) throws -> Void) -> UInt16? {
            do {
                try body(&routing)
                return nil
            } catch let error as AMQPError {
                return error.code
            } catch {
                return 0
            }
        }
        #expect(code { try $0.declareExchange("x", .init(type: .direct), passive: false) } == nil)
        #expect(code { try $0.declareExchange("x", .init(type: .direct), passive: false) } == nil)
        #expect(code { try $0.declareExchange("x", .init(type: .fanout), passive: false) } == 406)
        #expect(code { try $0.declareExchange("x", .init(type: .fanout), passive: true) } == nil)
        #expect(code { try $0.declareExchange("y", .init(type: .direct), passive: true) } == 404)
        #expect(code { try $0.declareExchange("amq.mine", .init(type: .direct), passive: false) } == 403)
        #expect(code { try $0.deleteExchange("amq.topic", ifUnused: false) } == 403)
        #expect(code { try $0.bind(.init(destination: .queue("q"), routingKey: "k"), from: "x") } == 404)
        routing.declareQueue("q")
        #expect(code { try $0.bind(.init(destination: .queue("q"), routingKey: "k"), from: "") } == 403)
        #expect(code { try $0.bind(.init(destination: .queue("q"), routingKey: "k"), from: "x") } == nil)
        #expect(code { try $0.deleteExchange("x", ifUnused: true) } == 406)
        #expect(
            code {
                try $0.bind(
                    .init(destination: .queue("q"), routingKey: "", arguments: ["x-match": .string("some")]),
                    from: "amq.headers")
            }
                == 406)
        #expect(code { try $0.deleteExchange("x", ifUnused: false) } == nil)
        #expect(routing.exchanges["x"] == nil && routing.bindings["x"] == nil)

        // An auto-delete exchange goes with its last binding.
        try routing.declareExchange("auto", .init(type: .fanout, autoDelete: true), passive: false)
        try routing.bind(.init(destination: .queue("q"), routingKey: ""), from: "auto")
        routing.deleteQueue("q")
        #expect(routing.exchanges["auto"] == nil)
    }

    @Test func saslResponses() throws {
        let plain = try AMQPSASL.credentials(
            mechanism: "PLAIN", response: [0] + Array("guest".utf8) + [0] + Array("pw".utf8))
        #expect(plain.user == "guest" && plain.password == Array("pw".utf8))
        // py-amqp's and pika's AMQPLAIN: LOGIN and PASSWORD as a table without its size.
        var table = ByteBuffer()
        table.writeAMQPTable(["LOGIN": .string("alice"), "PASSWORD": .string("s3cret")])
        let amqplain = try AMQPSASL.credentials(
            mechanism: "AMQPLAIN", response: Array(table.readableBytesView.dropFirst(4)))
        #expect(amqplain.user == "alice" && amqplain.password == Array("s3cret".utf8))
        // The bytes py-amqp 5 sends (amqp.sasl.AMQPLAIN('alice', 's3cret').start(None)).
        let pyamqp: [UInt8] = [
            0x05, 0x4c, 0x4f, 0x47, 0x49, 0x4e, 0x53, 0, 0, 0, 0x05, 0x61, 0x6c, 0x69, 0x63, 0x65, 0x08, 0x50, 0x41,
            0x53, 0x53, 0x57, 0x4f, 0x52, 0x44, 0x53, 0, 0, 0, 0x06, 0x73, 0x33, 0x63, 0x72, 0x65, 0x74,
        ]
        #expect(try AMQPSASL.credentials(mechanism: "AMQPLAIN", response: pyamqp) == amqplain)
        for (mechanism, response) in [
            ("PLAIN", Array("guest".utf8)), ("PLAIN", [0, 0] + Array("pw".utf8)),
            ("PLAIN", Array("bob".utf8) + [0] + Array("guest".utf8) + [0, 1]), ("AMQPLAIN", [1, 2, 3]),
            ("EXTERNAL", []),
        ] as [(String, [UInt8])] {
            #expect(throws: AMQPError.self, "\(mechanism) \(response)") {
                _ = try AMQPSASL.credentials(mechanism: mechanism, response: response)
            }
        }
    }
}
