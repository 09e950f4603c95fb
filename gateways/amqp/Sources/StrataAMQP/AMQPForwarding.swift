import Foundation
import Logging
import NIOCore
import StrataClient
import StrataJournal
import StrataTopics
import Synchronization

/// A record to append for a published message: the shard and the record.
struct AMQPStore: Sendable {
    var shard: String
    var record: Record
}

/// Where messages go that reach no client directly: publishing through an exchange (one
/// function for clients, dead letters and the MQTT bridge), and the gateway's forwarders — a
/// forwarder consumes a journal queue and publishes each record into a virtual host:
/// - dead letters: a queue with `x-dead-letter-exchange` has a dead-letter shard
///   (`amqp-dead/<vhost>/<queue>`) the journal moves rejected and expired messages to; its
///   forwarder publishes them to the dead-letter exchange with RabbitMQ's `x-death` header;
/// - the MQTT bridge: while queues of the default virtual host are bound to `amq.topic`, each
///   registry topic has a forwarder (`amqp-bridge/<topic>`) that publishes its records (MQTT
///   publishes, Kafka records) to `amq.topic` under their MQTT topic as a routing key
///   (docs/topics.md). AMQP publishes to `amq.topic` are written to the registry topic too, for
///   MQTT subscribers and Kafka consumers, and skipped by the bridge (they reached their queues
///   already).
/// The journal queue makes each record go through one forwarder of all the gateways on the
/// journal; a forwarder acknowledges a batch after its appends are stored (at least once).
extension AMQPGateway {
    static let deadLetterPrefix = "amqp-dead/"
    static let bridgePrefix = "amqp-bridge/"

    static func deadLetterShard(virtualHost: String, queue: String) -> String {
        "\(deadLetterPrefix)\(virtualHost)/\(queue)"
    }

    // MARK: Publishing

    /// What a message published to an exchange makes.
    struct Routed {
        var exchange: AMQPRouting.Exchange
        /// The queues it reached, counting those that refused it.
        var queues: Int
        var stores: [AMQPStore]
        /// A full reject-publish queue refused it (a confirm is a nack).
        var rejected = false
    }

    /// The records a message published to `exchange` makes: one per queue it reaches (with the
    /// queue's `x-message-ttl` applied, in the partition of its priority), plus, for `amq.topic`
    /// of the default virtual host, one in the registry topic of its MQTT topic. A full queue
    /// with x-overflow reject-publish takes none (reject-publish-dlx: the message is
    /// dead-lettered from it with reason `maxlen`). Nil when the exchange does not exist.
    func stores(
        in host: AMQPVirtualHost, exchange: String, routingKey: String, properties: AMQPProperties, body: [UInt8],
        timestamp: Int64
    ) async throws -> Routed? {
        let (found, routed, records) = host.routeForPublish(
            exchange: exchange, routingKey: routingKey, headers: properties.headers)
        guard let found else { return nil }
        let headers = AMQPEnvelope.headers(exchange: exchange, routingKey: routingKey, properties: properties)
        var result = Routed(exchange: found, queues: routed.count, stores: [])
        for queue in routed.sorted() {
            guard let topic = Self.topic(virtualHost: host.name, queue: queue) else { continue }
            let arguments = records[queue]?.parsed ?? AMQPQueueArguments()
            if try await isFull(virtualHost: host.name, queue: queue, arguments: arguments) {
                result.rejected = true
                if arguments.overflow == .rejectPublishDLX, arguments.deadLetterExchange != nil {
                    result.stores.append(
                        AMQPStore(
                            shard: Self.deadLetterShard(virtualHost: host.name, queue: queue),
                            record: Record(
                                timestamp: timestamp, key: Array(routingKey.utf8), value: body,
                                headers: headers + [
                                    RecordHeader(key: "strata.dead-letter.reason", value: Array("max-length".utf8))
                                ])))
                }
                continue
            }
            var recordHeaders = headers
            if let ttl = arguments.messageTTL {
                // The queue's x-message-ttl, or the message's expiration when shorter.
                let own = properties.expiration.flatMap { UInt64($0) }
                let effective = min(UInt64(ttl), own ?? .max)
                recordHeaders.removeAll { $0.key == RecordEnvelope.ttl }
                recordHeaders.append(RecordHeader(key: RecordEnvelope.ttl, value: Array(String(effective).utf8)))
            }
            result.stores.append(
                AMQPStore(
                    shard: TopicRegistry.shardName(
                        topic, Self.partition(of: arguments, priority: properties.priority)),
                    record: Record(
                        timestamp: timestamp, key: Array(routingKey.utf8), value: body, headers: recordHeaders)))
        }
        if host.name == "/", exchange == "amq.topic", let shard = try await mqttShard(forRoutingKey: routingKey) {
            result.stores.append(
                AMQPStore(
                    shard: shard.shard,
                    record: Record(
                        timestamp: timestamp, key: Array(shard.mqttTopic.utf8), value: body, headers: headers)
                ))
        }
        return result
    }

    /// The registry topic partition an `amq.topic` routing key's MQTT topic is a record of (the
    /// MQTT gateway's rule, prefixes included), the topic created when it does not exist; nil
    /// when the MQTT topic has no registry topic (a `$` topic, a first level that is no legal
    /// topic name).
    func mqttShard(forRoutingKey key: String) async throws -> (shard: String, mqttTopic: String)? {
        let mqttTopic = TopicMapping.mqttTopic(forAMQPRoutingKey: key)
        guard !mqttTopic.isEmpty, !mqttTopic.contains("+"), !mqttTopic.contains("#") else { return nil }
        let known = registryTopics.withLock { $0 }
        guard let name = known.roots.topic(forMQTT: mqttTopic) else { return nil }
        var entry = known.entries[name]
        if entry == nil { entry = try await registry.entry(name) }
        if entry == nil {
            do {
                entry = try await registry.create(name, partitions: 1, configs: [:])
            } catch let error as TopicError where error.code == .exists {
                entry = try await registry.entry(name)
            }
        }
        guard let entry else { return nil }
        registryTopics.withLock { $0.entries[name] = entry }
        let partition = TopicMapping.partition(forKey: Array(mqttTopic.utf8), partitions: entry.partitions)
        return (TopicRegistry.shardName(name, partition), mqttTopic)
    }

    /// Hands the records to their shards' appenders (batched with everything else published
    /// to those shards meanwhile); `whenDone` runs once all are answered, with whether all were
    /// stored.
    func submit(_ stores: [AMQPStore], whenDone: @escaping @Sendable (Bool) -> Void) {
        guard !stores.isEmpty else { return whenDone(true) }
        let storing = AMQPStoring(count: stores.count, logger: logger, whenDone: whenDone)
        for store in stores { appender(for: store.shard).submit(store.record, completion: storing.completed) }
    }

    /// The appender of a shard, started on first use.
    func appender(for shard: String) -> ShardAppender<Record> {
        appenders.withLock { appenders in
            if let known = appenders[shard] { return known }
            let appender = ShardAppender<Record>(shard: shard, journal: journal)
            appenders[shard] = appender
            Task { await appender.run() }
            return appender
        }
    }

    /// Stops a shard's appender (its queue was deleted) once what it holds went out.
    func dropAppender(for shard: String) {
        appenders.withLock { $0.removeValue(forKey: shard) }?.finish()
    }

    /// Appends the records and waits until every one is stored.
    func storeAll(_ stores: [AMQPStore]) async throws {
        let stored = await withCheckedContinuation { done in submit(stores) { done.resume(returning: $0) } }
        guard stored else {
            throw JournalError(.unavailable, "records for AMQP queues could not be stored")
        }
    }

    // MARK: Forwarders

    /// Starts the forwarders the virtual hosts need now and stops those they no longer need.
    func superviseForwarders() async {
        var wanted: [String: @Sendable () async -> Void] = [:]
        var bridging = false
        for host in hosts.withLock({ Array($0.values) }) {
            let state = await host.state
            // Queues with a TTL, a dead-letter exchange or a drop-head length limit expire (and
            // drop) their head now, read or not.
            for (queue, record) in state.queues
            where record.parsed.messageTTL != nil || record.parsed.deadLetterExchange != nil
                || record.parsed.dropsHead
            {
                _ = try? await journal.receive(
                    queue: Self.journalQueue(virtualHost: host.name, queue: queue), consumer: "amqp/\(instance)/expiry",
                    max: 0, maxBytes: 0, visibilityMilliseconds: 0, resume: false, wait: .zero)
            }
            for (queue, record) in state.queues where record.parsed.deadLetterExchange != nil {
                let journalQueue = Self.deadLetterShard(virtualHost: host.name, queue: queue)
                wanted[journalQueue] = { [self] in
                    await forward(from: journalQueue) { deliveries in
                        try await self.deadLetter(deliveries, of: queue, in: host)
                    }
                }
            }
            if host.name == "/", !(state.routing.bindings["amq.topic"] ?? []).isEmpty {
                bridging = true
                if let all = try? await registry.all() {
                    var roots = MQTTTopicRoots()
                    for (name, entry) in all { roots.set(name, prefix: entry.configs[MQTTTopicRoots.prefixConfig]) }
                    registryTopics.withLock { $0 = (all, roots) }
                }
                let known = registryTopics.withLock { $0 }
                // Topics there when the bridge began are bridged from their end; topics created
                // while it runs (an MQTT client's first publish creates one) from their start, so
                // the publish that made one is bridged too.
                let fresh = bridgedTopics.withLock { seen -> Set<String> in
                    guard var names = seen else {
                        seen = Set(known.entries.keys)
                        return []
                    }
                    let fresh = Set(known.entries.keys).subtracting(names)
                    names.formUnion(fresh)
                    seen = names
                    return fresh
                }
                for (topic, entry) in known.entries where !topic.hasPrefix("amqp.") {
                    let journalQueue = Self.bridgePrefix + topic
                    let root = known.roots.root(of: topic)
                    let sources = (0..<entry.partitions).map {
                        QueueDefinition.Source(
                            shard: TopicRegistry.shardName(topic, $0), subjectRoot: root,
                            fromStart: fresh.contains(topic))
                    }
                    wanted[journalQueue] = { [self] in
                        do {
                            _ = try await journal.declareQueue(
                                journalQueue, definition: QueueDefinition(sources: sources))
                        } catch {
                            logger.warning(
                                "amqp bridge queue not declared",
                                metadata: ["topic.name": "\(topic)", "error": "\(error)"])
                            return
                        }
                        await forward(from: journalQueue) { deliveries in
                            try await self.bridge(deliveries, root: root, in: host)
                        }
                    }
                }
            }
        }
        if !bridging,
            let bridged = bridgedTopics.withLock({ seen in
                defer { seen = nil }
                return seen
            })
        {
            // The last binding to amq.topic went: the bridge's queues go too, so a later binding
            // starts from then on instead of replaying what was published meanwhile.
            for topic in bridged where !topic.hasPrefix("amqp.") {
                try? await journal.deleteQueue(Self.bridgePrefix + topic)
            }
        }
        let stop = forwarders.withLock { running -> [Task<Void, Never>] in
            var stop: [Task<Void, Never>] = []
            for (name, task) in running where wanted[name] == nil {
                stop.append(task)
                running[name] = nil
            }
            for (name, body) in wanted where running[name] == nil {
                // A forwarder that ends on its own (its queue went, a declaration failed) is
                // started again at the next tick.
                running[name] = Task { [self] in
                    await body()
                    if !Task.isCancelled { _ = forwarders.withLock { $0.removeValue(forKey: name) } }
                }
            }
            return stop
        }
        for task in stop { task.cancel() }
    }

    /// Receives from a journal queue and hands each batch to `handle`; acknowledges it once
    /// `handle` stored what it makes of it.
    func forward(from journalQueue: String, _ handle: @Sendable ([QueueDelivery]) async throws -> Void) async {
        let consumer = "amqp/\(instance)/forwarder"
        while !Task.isCancelled {
            do {
                let deliveries = try await journal.receive(
                    queue: journalQueue, consumer: consumer, max: 256, maxBytes: 4 << 20,
                    visibilityMilliseconds: 30_000,
                    resume: false, wait: .milliseconds(500))
                if deliveries.isEmpty { continue }
                try await handle(deliveries)
                _ = try await journal.settle(
                    queue: journalQueue, consumer: consumer, receipts: deliveries.map(\.receipt), as: .ack)
            } catch {
                if Task.isCancelled { return }
                if let error = error as? JournalError, error.code == .unknownQueue { return }
                logger.warning("amqp forwarder failed", metadata: ["queue": "\(journalQueue)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Dead letters of `queue` to its dead-letter exchange, with `x-death` as RabbitMQ writes it.
    func deadLetter(_ deliveries: [QueueDelivery], of queue: String, in host: AMQPVirtualHost) async throws {
        guard let record = await host.state.queues[queue], let exchange = record.parsed.deadLetterExchange else {
            return  // the queue is gone or no longer dead-letters: its dead letters are dropped
        }
        var letters: [AMQPStore] = []
        for delivery in deliveries {
            var message = AMQPEnvelope.message(of: delivery.record.headers)
            let reason: String =
                switch delivery.record.headers.last(where: { $0.key == "strata.dead-letter.reason" })?.value.map({
                    String(decoding: $0, as: UTF8.self)
                }) {
                case "expired": "expired"
                case "delivery-limit": "delivery_limit"
                case "max-length": "maxlen"
                default: "rejected"
                }
            let originalKey = message.routingKey ?? ""
            Self.addDeath(
                to: &message.properties, queue: queue, reason: reason, exchange: message.exchange ?? "",
                routingKey: originalKey, time: UInt64(WallClock.milliseconds() / 1000))
            // RabbitMQ removes the expiration so a dead letter does not expire again for it.
            message.properties.expiration = nil
            let routingKey = record.parsed.deadLetterRoutingKey ?? originalKey
            let made = try await stores(
                in: host, exchange: exchange, routingKey: routingKey, properties: message.properties,
                body: delivery.record.value ?? [], timestamp: delivery.record.timestamp)
            letters += made?.stores ?? []  // a full reject-publish queue drops a dead letter
        }
        try await storeAll(letters)
    }

    /// RabbitMQ's `x-death`: one entry per (queue, reason), counting, the latest first; and the
    /// `x-first-death-*` headers of the first time.
    static func addDeath(
        to properties: inout AMQPProperties, queue: String, reason: String, exchange: String, routingKey: String,
        time: UInt64
    ) {
        var headers = properties.headers ?? AMQPTable()
        var deaths: [AMQPFieldValue] = []
        if case .array(let existing)? = headers["x-death"] { deaths = existing }
        var entry: AMQPTable = [
            "count": .int64(1), "reason": .string(reason), "queue": .string(queue), "time": .timestamp(time),
            "exchange": .string(exchange), "routing-keys": .array([.string(routingKey)]),
        ]
        if let index = deaths.firstIndex(where: {
            guard case .table(let table) = $0 else { return false }
            return table["queue"]?.stringValue == queue && table["reason"]?.stringValue == reason
        }), case .table(var found) = deaths[index] {
            found["count"] = .int64((found["count"]?.integerValue ?? 0) + 1)
            found["time"] = .timestamp(time)
            entry = found
            deaths.remove(at: index)
        }
        deaths.insert(.table(entry), at: 0)
        headers["x-death"] = .array(deaths)
        if headers["x-first-death-reason"] == nil {
            headers["x-first-death-reason"] = .string(reason)
            headers["x-first-death-queue"] = .string(queue)
            headers["x-first-death-exchange"] = .string(exchange)
        }
        properties.headers = headers
    }

    /// Registry records to the queues bound to `amq.topic`, under their MQTT topic.
    func bridge(_ deliveries: [QueueDelivery], root: String, in host: AMQPVirtualHost) async throws {
        var stores: [AMQPStore] = []
        for delivery in deliveries {
            let headers = delivery.record.headers
            // AMQP's own amq.topic publishes reached their queues when they were published.
            if headers.contains(where: {
                $0.key == AMQPEnvelope.exchange && $0.value == Array("amq.topic".utf8)
            }) {
                continue
            }
            let mqttTopic = TopicMapping.mqttTopic(ofKey: delivery.record.key, in: root)
            let routingKey = TopicMapping.amqpRoutingKey(forMQTT: mqttTopic)
            let message = AMQPEnvelope.message(of: headers)
            let (_, routed, records) = host.routeForPublish(
                exchange: "amq.topic", routingKey: routingKey, headers: message.properties.headers)
            var recordHeaders = AMQPEnvelope.headers(
                exchange: "amq.topic", routingKey: routingKey, properties: message.properties)
            // What other protocols keep in their own headers (mqtt.qos, …) stays readable.
            let present = Set(recordHeaders.map(\.key))
            recordHeaders += headers.filter { !$0.key.hasPrefix("amqp.") && !present.contains($0.key) }
            for queue in routed.sorted() {
                guard let record = records[queue], let topic = Self.topic(virtualHost: host.name, queue: queue),
                    try await !isFull(virtualHost: host.name, queue: queue, arguments: record.parsed)
                else { continue }
                stores.append(
                    AMQPStore(
                        shard: TopicRegistry.shardName(
                            topic, Self.partition(of: record.parsed, priority: message.properties.priority)),
                        record: Record(
                            timestamp: delivery.record.timestamp, key: Array(routingKey.utf8),
                            value: delivery.record.value, headers: recordHeaders)))
            }
        }
        try await storeAll(stores)
    }
}

/// The stores of one published message: done once each of its records is stored, or one failed.
final class AMQPStoring: Sendable {
    private let state: Mutex<(remaining: Int, ok: Bool)>
    private let logger: Logger
    private let whenDone: @Sendable (Bool) -> Void

    /// `whenDone` runs once every record is answered, with whether all were stored.
    init(count: Int, logger: Logger, whenDone: @escaping @Sendable (Bool) -> Void) {
        state = Mutex((count, true))
        self.logger = logger
        self.whenDone = whenDone
    }

    func completed(_ result: Result<Void, any Error>) {
        if case .failure(let error) = result {
            logger.warning("amqp message not stored", metadata: ["error": "\(error)"])
        }
        let done = state.withLock { state -> Bool? in
            if case .failure = result { state.ok = false }
            state.remaining -= 1
            return state.remaining == 0 ? state.ok : nil
        }
        if let done { whenDone(done) }
    }
}
