import NIOCore
import StrataClient
import StrataJournal
import StrataTestSupport
import Testing

@testable import StrataAMQP

@Suite struct AMQPVirtualHostTests {
    private func withJournal(_ body: (any JournalClient) async throws -> Void) async throws {
        try await withTemporaryDirectory { dir in
            var configuration = JournalConfiguration(dataDirectory: dir)
            configuration.backgroundMaintenance = false
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            defer { journal.close() }
            try await body(InProcessJournalClient(journal: journal))
        }
    }

    @Test func exchangesQueuesAndBindingsAreStoredAndLoadedByAnotherGateway() async throws {
        try await withJournal { journal in
            let first = AMQPVirtualHost(name: "/", journal: journal)
            try await first.load()
            let queue = try AMQPQueueRecord(
                durable: true, autoDelete: false, owner: nil, arguments: ["x-message-ttl": .int32(500)])
            try await first.change { state throws(AMQPError) in
                try state.routing.declareExchange(
                    "orders", .init(type: .topic, alternate: "amq.fanout"), passive: false)
                state.queues["eu"] = queue
                state.routing.declareQueue("eu")
                try state.routing.bind(.init(destination: .queue("eu"), routingKey: "eu.#"), from: "orders")
                try state.routing.bind(
                    .init(destination: .queue("eu"), routingKey: "", arguments: ["x-match": .string("any")]),
                    from: "amq.headers")
                try state.routing.bind(.init(destination: .exchange("orders"), routingKey: "k"), from: "amq.direct")
            }
            let second = AMQPVirtualHost(name: "/", journal: journal)
            try await second.load()
            #expect(await second.state == first.state)
            #expect(await second.state.queues["eu"]?.parsed.messageTTL == 500)
            #expect(await second.state.routing.route(exchange: "amq.direct", routingKey: "k", headers: nil) == [])
            #expect(await second.state.routing.route(exchange: "orders", routingKey: "eu.fr", headers: nil) == ["eu"])
            // Another virtual host sees none of it.
            let other = AMQPVirtualHost(name: "other", journal: journal)
            try await other.load()
            #expect(await other.state.queues.isEmpty)

            // A change through the second is picked up by the first's refresh; deleting the
            // queue takes its bindings along, in the journal too.
            try await second.change { state throws(AMQPError) in
                state.queues["eu"] = nil
                state.routing.deleteQueue("eu")
            }
            try await first.refresh()
            #expect(await first.state == second.state)
            #expect(await first.state.routing.bindings["orders"]?.isEmpty ?? true)
            let reloaded = AMQPVirtualHost(name: "/", journal: journal)
            try await reloaded.load()
            #expect(await reloaded.state == second.state)
        }
    }

    @Test func aRefusedChangeWritesNothing() async throws {
        try await withJournal { journal in
            let host = AMQPVirtualHost(name: "/", journal: journal)
            try await host.load()
            await #expect(throws: AMQPError.self) {
                try await host.change { state throws(AMQPError) in
                    try state.routing.bind(.init(destination: .queue("missing"), routingKey: ""), from: "amq.direct")
                }
            }
            #expect(try await journal.scan(namespace: AMQPVirtualHost.namespace, prefix: [], limit: 100).isEmpty)
        }
    }

    @Test(arguments: [
        ("/", "orders", "amqp.orders"), ("/", "amq.gen-x_Y", "amqp.amq.gen-x_5FY"), ("/", "a b/c", "amqp.a_20b_2Fc"),
        ("prod", "jobs", "amqp.prod_.jobs"), ("/", "ü", "amqp._C3_BC"),
    ])
    func queueTopicNames(virtualHost: String, queue: String, topic: String) {
        #expect(AMQPGateway.topic(virtualHost: virtualHost, queue: queue) == topic)
    }

    @Test func aQueueNameTooLongForATopicHasNone() {
        #expect(AMQPGateway.topic(virtualHost: "/", queue: String(repeating: "x", count: 245)) == nil)
    }

    @Test func xDeathCountsPerQueueAndReasonLatestFirst() {
        var properties = AMQPProperties(headers: ["keep": .string("me")])
        AMQPGateway.addDeath(
            to: &properties, queue: "a", reason: "rejected", exchange: "", routingKey: "a", time: 100)
        AMQPGateway.addDeath(
            to: &properties, queue: "b", reason: "expired", exchange: "dlx", routingKey: "a", time: 200)
        AMQPGateway.addDeath(
            to: &properties, queue: "a", reason: "rejected", exchange: "dlx", routingKey: "b", time: 300)
        guard case .array(let deaths)? = properties.headers?["x-death"] else {
            Issue.record("no x-death")
            return
        }
        let tables = deaths.compactMap { value -> AMQPTable? in if case .table(let t) = value { t } else { nil } }
        #expect(tables.map { $0["queue"]?.stringValue } == ["a", "b"])
        #expect(tables[0]["count"]?.integerValue == 2 && tables[0]["time"] == .timestamp(300))
        #expect(tables[0]["exchange"]?.stringValue == "")  // the first time's, as RabbitMQ keeps it
        #expect(tables[1]["count"]?.integerValue == 1)
        #expect(properties.headers?["x-first-death-queue"]?.stringValue == "a")
        #expect(properties.headers?["x-first-death-reason"]?.stringValue == "rejected")
        #expect(properties.headers?["keep"]?.stringValue == "me")
    }
}
