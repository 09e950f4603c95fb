import Logging
import StrataClient
import StrataJournal
import StrataTestSupport
import StrataTopics
import StrataWire
import Testing

@Suite struct TopicMappingTests {
    /// RabbitMQ's MQTT plugin convention for amq.topic: `/` ↔ `.`, `.` ↔ `/`, `+` ↔ `*`.
    @Test func amqTopicRoutingKeysMirrorMQTTTopics() {
        let pairs: [(String, String)] = [
            ("sensors/room1/temp", "sensors.room1.temp"), ("v1.2/x", "v1/2.x"), ("sensors/+/temp", "sensors.*.temp"),
            ("sensors/#", "sensors.#"), ("/leading", ".leading"), ("a//b", "a..b"), ("", ""),
        ]
        for (mqtt, amqp) in pairs {
            #expect(TopicMapping.amqpRoutingKey(forMQTT: mqtt) == amqp)
            #expect(TopicMapping.mqttTopic(forAMQPRoutingKey: amqp) == mqtt)
        }
    }

    /// Kafka's own test vectors for `Utils.murmur2` (clients/src/test/.../UtilsTest.java).
    @Test func murmur2MatchesKafka() {
        let cases: [(String, Int32)] = [
            ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971), ("abc", 479_470_107),
        ]
        for (input, expected) in cases {
            #expect(TopicMapping.murmur2(Array(input.utf8)) == expected, "murmur2(\(input))")
        }
        // toPositive(murmur2) % n, as the Java client's partitioner picks.
        #expect(
            TopicMapping.partition(forKey: Array("foobar".utf8), partitions: 7)
                == Int32((-790_332_482 & 0x7fff_ffff) % 7))
    }

    @Test(
        arguments: [
            ("sensors/room1/temp", "sensors"), ("sensors", "sensors"), ("a.b_c-d/x", "a.b_c-d"),
            ("$SYS/broker", nil), ("/leading", nil), ("caf\u{e9}/x", nil), ("has space/x", nil), ("../x", nil),
            (String(repeating: "a", count: 250) + "/x", nil),
        ] as [(String, String?)])
    func mqttTopicToTopic(mqtt: String, topic: String?) {
        #expect(TopicMapping.topic(forMQTT: mqtt) == topic)
    }

    @Test(arguments: [
        ("sensors/room2/hum", "sensors/room2/hum"), ("sensors", "sensors"), ("other/x", "sensors"),
        ("sensorsX/y", "sensors"), ("sensors/+/x", "sensors"), ("sensors/#", "sensors"), ("sensors/a\u{0}", "sensors"),
    ])
    func keyToMQTTTopic(key: String, mqtt: String) {
        #expect(TopicMapping.mqttTopic(ofKey: Array(key.utf8), in: "sensors") == mqtt)
    }

    @Test func keyThatIsNoTopic() {
        #expect(TopicMapping.mqttTopic(ofKey: nil, in: "sensors") == "sensors")
        #expect(TopicMapping.mqttTopic(ofKey: [0x73, 0xFF, 0xFE], in: "s") == "s")  // not UTF-8
    }

    @Test func applicationPropertiesNamedLikeTheEnvelopeAreEscaped() {
        for name in ["content-type", "ttl-ms", "mqtt.qos", "strata.x"] {
            let header = RecordEnvelope.header(forApplicationProperty: name)
            #expect(header != name)
            #expect(RecordEnvelope.applicationProperty(ofHeader: header) == name)
        }
        #expect(RecordEnvelope.header(forApplicationProperty: "unit") == "unit")
        #expect(RecordEnvelope.applicationProperty(ofHeader: "unit") == "unit")
        #expect(RecordEnvelope.applicationProperty(ofHeader: RecordEnvelope.contentType) == nil)
        #expect(RecordEnvelope.applicationProperty(ofHeader: "mqtt.qos") == nil)
    }
}

/// A journal in a temporary directory and an in-process client of it, for one test.
func withJournal(_ body: (Journal, InProcessJournalClient) async throws -> Void) async throws {
    try await withTemporaryDirectory { directory in
        let journal = try Journal(
            configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
        defer { journal.close() }
        try await body(journal, InProcessJournalClient(journal: journal, node: "test"))
    }
}

@Suite struct TopicRegistryTests {
    @Test func createAddPartitionsDelete() async throws {
        try await withJournal { journal, client in
            let registry = TopicRegistry(journal: client, logger: Logger(label: "test"))
            let created = try await registry.create("t", partitions: 2, configs: ["retention.ms": "1000"])
            #expect(try await registry.entry("t") == created)
            #expect(try journal.describeShard("kafka/t/1").config.retentionMilliseconds == 1000)
            await #expect(throws: TopicError(.exists, "topic 't' already exists")) {
                try await registry.create("t", partitions: 1, configs: [:])
            }
            await #expect(throws: TopicError.self) {
                try await registry.create("bad name", partitions: 1, configs: [:])
            }
            await #expect(throws: TopicError.self) { try await registry.create("u", partitions: 0, configs: [:]) }
            await #expect(throws: TopicError.self) {
                try await registry.create("u", partitions: 1, configs: ["segment.bytes": "1"])
            }
            #expect(try await registry.entry("u") == nil)
            #expect(try await registry.addPartitions("t", count: 3).partitions == 3)
            #expect(try journal.describeShard("kafka/t/2").config.retentionMilliseconds == 1000)
            #expect(try await registry.all().keys.sorted() == ["t"])
            #expect(try await registry.delete("t").partitions == 3)
            #expect(try await registry.entry("t") == nil)
            #expect(throws: JournalError.self) { try journal.describeShard("kafka/t/0") }
            #expect(TopicRegistry.partition(ofShard: "kafka/t/2")! == ("t", 2))
            #expect(TopicRegistry.partition(ofShard: "mqtt/default/2") == nil)
            // Two registries (two gateway processes) creating one topic at once agree on its id;
            // created again after a delete, it has another.
            let other = TopicRegistry(journal: client, logger: Logger(label: "test"))
            async let one = registry.create("raced", partitions: 2, configs: [:])
            async let two = other.create("raced", partitions: 2, configs: [:])
            let ids = await [(try? one)?.id, (try? two)?.id].compactMap { $0 }
            #expect(!ids.isEmpty && Set(ids).count == 1)
            #expect(try await registry.entry("raced")?.id == ids.first)
            _ = try await registry.delete("raced")
            #expect(try await registry.create("raced", partitions: 1, configs: [:]).id != ids.first)
            // retention.ms -1 is Kafka's "however old"; unset is 7 days.
            #expect(
                try TopicEntry(partitions: 1, configs: ["retention.ms": "-1"]).shardConfig.retentionMilliseconds == nil)
            #expect(try TopicEntry(partitions: 1, configs: [:]).shardConfig.retentionMilliseconds == 604_800_000)
        }
    }
}

@Suite struct GatewayMembersTests {
    @Test func membersAgreeOnOwnersAndRefuseATakenID() async throws {
        try await withJournal { _, client in
            func member(_ id: Int32, port: Int32) -> GatewayMembers {
                GatewayMembers(
                    protocol: "test", id: id, host: "127.0.0.1", port: port, journal: client,
                    logger: Logger(label: "test"),
                    heartbeat: .milliseconds(200), lease: .seconds(5))
            }
            let (a, b) = (member(1, port: 1001), member(2, port: 1002))
            try await a.join()
            #expect(a.owns("anything"))  // alone
            try await b.join()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await a.run() }
                group.addTask { await b.run() }
                // Until each has read the other (a tick or more, on a busy machine), then a settle time.
                let deadline = ContinuousClock.now + .seconds(20)
                while a.live.map(\.id) != [1, 2] || b.live.map(\.id) != [1, 2] {
                    try #require(ContinuousClock.now < deadline, "the members did not see each other")
                    try await Task.sleep(for: .milliseconds(20))
                }
                try await Task.sleep(for: .milliseconds(500))  // past the settle time (two heartbeats)
                let keys = (0..<64).map { "group-\($0)" }
                #expect(keys.map { a.owner(of: $0).id } == keys.map { b.owner(of: $0).id })
                #expect(Set(keys.map { a.owner(of: $0).id }) == [1, 2])
                // Another process with id 2 at another address: refused once the lease shows it is held.
                await #expect(throws: JournalError.self) { try await member(2, port: 2002).join() }
                // B leaves: A owns everything.
                group.cancelAll()
            }
            await b.leave()
            try await a.join()  // rereads the list
            #expect((0..<64).allSatisfy { a.owns("group-\($0)") })
        }
    }
}

/// In-process appends take their bytes from the node's budget and give them back, refused or not.
@Suite struct InProcessAppendBudgetTests {
    @Test func appendsHoldTheirBytesUntilAnsweredAndGiveThemBack() async throws {
        try await withTemporaryDirectory { directory in
            let journal = try Journal(
                configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
            defer { journal.close() }
            let budget = ByteBudget(limit: 4096)
            let client = InProcessJournalClient(journal: journal, node: "test", appendBudget: budget)
            _ = try await client.createShard("s", config: ShardConfig())
            let pending = try await client.queueAppend(shard: "s", batch: makeBatch("x", count: 4, size: 100))
            _ = try await pending.result
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        _ = try await client.append(shard: "s", batch: makeBatch("m\(i)", count: 8, size: 200))
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await client.describeShard("s").endOffset == 4 + 40 * 8)
            await #expect(throws: (any Error).self) {
                _ = try await client.append(shard: "nope", batch: makeBatch("y"))
            }
            #expect(budget.available == 4096, "every append gave its bytes back")
        }
    }
}
