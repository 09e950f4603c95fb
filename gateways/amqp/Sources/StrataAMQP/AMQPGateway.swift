import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import StrataAuth
import StrataClient
import StrataJournal
import StrataKit
import StrataTopics
import StrataWire
import Synchronization

/// The AMQP 0-9-1 gateway: RabbitMQ's protocol on the journal. Exchanges, queues and bindings
/// are virtual-host state in the journal's key-value store (`AMQPVirtualHost`); each queue's
/// messages are a registry topic (`amqp.<queue>`, readable by Kafka and the other protocols)
/// consumed through the journal's queue primitive (docs/queues.md), which keeps what is leased,
/// acknowledged and requeued. The gateway holds no durable state of its own: two of them can
/// serve one journal, and either can be killed and started again.
public final class AMQPGateway: Service {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 5672
        /// AMQPS on `tlsPort` (5671) when set, beside the plain listener.
        public var tls: NIOSSLContext?
        public var tlsPort = 5671
        /// AMQPS requires client certificates signed by the configured CA and offers SASL
        /// EXTERNAL: the certificate's common name is the user.
        public var external = false
        /// Users (`strata scram-user` lines) checked for PLAIN and AMQPLAIN.
        public var users: SCRAMUsers?
        /// Any user name and password is taken (a development broker; `make run`).
        public var allowAnonymous = false
        /// Virtual hosts clients may open.
        public var virtualHosts: [String] = ["/"]
        /// Per virtual host and user: what may be configured, written and read (nil: everything
        /// for every user who authenticated).
        public var permissions: AMQPPermissions?
        public var frameMax: UInt32 = 131_072
        public var channelMax: UInt16 = 2047
        public var heartbeat: UInt16 = 60
        public var maxBodySize: UInt64 = 8 << 20
        /// How long a delivery stays leased to its channel without being renewed; the gateway
        /// renews its channels' leases every third of it, so only a gateway that died lets them
        /// run out (its unacknowledged messages go to other consumers then).
        public var leaseMilliseconds: UInt32 = 60_000

        public init() {}

        /// Reads the users and permissions files when given.
        public mutating func loadAccessFiles(
            users: String?, permissions: String?, tlsCertificate: String? = nil, tlsKey: String? = nil,
            tlsClientCA: String? = nil
        ) throws {
            self.users = try users.map { try SCRAMUsers(contentsOfFile: $0) }
            self.permissions = try permissions.map { try AMQPPermissions(contentsOfFile: $0) }
            if let tlsCertificate, let tlsKey {
                tls = try TLSFiles.serverContext(certificate: tlsCertificate, key: tlsKey, clientCA: tlsClientCA)
                external = tlsClientCA != nil
            } else if tlsCertificate != nil || tlsKey != nil {
                throw ConfigFileError("AMQPS needs both a TLS certificate and its key")
            } else if tlsClientCA != nil {
                throw ConfigFileError("client certificates (EXTERNAL) need AMQPS: a TLS certificate and its key")
            }
            if self.users == nil && !allowAnonymous {
                throw ConfigFileError("the AMQP gateway needs a users file, or anonymous access allowed")
            }
        }
    }

    let configuration: Configuration
    let journal: any JournalClient
    let logger: Logger
    let group: any EventLoopGroup
    let registry: TopicRegistry
    /// This process among the journal's gateways (lease and exclusive-queue owner names).
    let instance = UUID().uuidString.prefix(8).lowercased()
    private let onBound: @Sendable (SocketAddress) -> Void
    private let onTLSBound: @Sendable (SocketAddress) -> Void
    let hosts = Mutex<[String: AMQPVirtualHost]>([:])
    /// The registry's topics and their MQTT roots, as last read (amq.topic ↔ MQTT).
    let registryTopics = Mutex<(entries: [String: TopicEntry], roots: MQTTTopicRoots)>(([:], MQTTTopicRoots()))
    /// The registry topics the MQTT bridge has seen since it began (nil: not running).
    let bridgedTopics = Mutex<Set<String>?>(nil)
    /// Each queue shard's appender, started on first use (AMQPForwarding.swift).
    let appenders = Mutex<[String: ShardAppender<Record>]>([:])
    /// Running forwarders by journal queue (AMQPForwarding.swift).
    let forwarders = Mutex<[String: Task<Void, Never>]>([:])
    private let nextConnection = Atomic<UInt64>(0)
    /// The node's alarm now (nil: none), and the connections told of its changes.
    private let alarm = Mutex<(reason: String?, watchers: [UInt64: @Sendable (String?) -> Void])>((nil, [:]))
    /// Consumers on this gateway per queue ("vhost NUL queue"): consumer counts, exclusive use
    /// and auto-delete.
    private let consumers = Mutex<[String: (count: Int, exclusive: Bool, ever: Bool)]>([:])
    /// How to close each open connection when the gateway shuts down (nil once it does).
    private let closers = Mutex<[UInt64: @Sendable () -> Void]?>([:])

    public init(
        configuration: Configuration, journal: any JournalClient,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in },
        onTLSBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.onTLSBound = onTLSBound
        self.configuration = configuration
        self.journal = journal
        self.logger = logger
        self.group = eventLoopGroup
        self.onBound = onBound
        registry = TopicRegistry(journal: journal, logger: logger)
    }

    /// What a connection is offered: with `secure` (the AMQPS listener, client certificates
    /// verified) SASL EXTERNAL first, as RabbitMQ's rabbitmq_auth_mechanism_ssl lists it.
    func limits(secure: Bool) -> AMQPConnectionState.Limits {
        var limits = self.limits
        if secure, configuration.external { limits.mechanisms.insert("EXTERNAL", at: 0) }
        return limits
    }

    var limits: AMQPConnectionState.Limits {
        let capabilities: AMQPTable = [
            "publisher_confirms": .bool(true), "exchange_exchange_bindings": .bool(true), "basic.nack": .bool(true),
            "consumer_cancel_notify": .bool(true), "per_consumer_qos": .bool(true),
            "authentication_failure_close": .bool(true), "connection.blocked": .bool(true),
            "consumer_priorities": .bool(true), "direct_reply_to": .bool(false),
        ]
        return AMQPConnectionState.Limits(
            channelMax: configuration.channelMax, frameMax: configuration.frameMax, heartbeat: configuration.heartbeat,
            maxBodySize: configuration.maxBodySize,
            serverProperties: [
                "product": .string("Strata"), "version": .string(StrataVersion.current),
                "platform": .string("Swift"), "information": .string("https://strata.invalid/docs/amqp.md"),
                "capabilities": .table(capabilities),
            ])
    }

    public func run() async throws {
        let frameMax = configuration.frameMax
        // Before the first connection: other gateways must see this one alive before any of
        // its connections owns an exclusive queue (the tick writes it again if this fails).
        try? await markAlive()
        let pipeline: @Sendable (any Channel) throws -> Void = { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(AMQPFrameDecoder(frameMax: frameMax)))
        }
        var servers = [
            try await Listener.bind(
                ListenerOptions(host: configuration.host, port: configuration.port), group: group, pipeline: pipeline)
        ]
        if let bound = servers[0].localAddress { onBound(bound) }
        if let tls = configuration.tls {
            let secure = try await Listener.bind(
                ListenerOptions(host: configuration.host, port: configuration.tlsPort, tls: tls), group: group,
                pipeline: pipeline)
            if let bound = secure.localAddress { onTLSBound(bound) }
            servers.append(secure)
        }
        let listening = servers
        logger.info(
            "amqp listening",
            metadata: ["amqp.listen": "\(servers.map { "\($0.localAddress.map { "\($0)" } ?? "?")" })"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                // Other gateways' changes of a virtual host are loaded within a tick.
                group.addTask {
                    var ticks = 0
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(100))
                        for host in self.hosts.withLock({ Array($0.values) }) { try? await host.refresh() }
                        ticks += 1
                        if ticks % 5 == 0 {
                            try? await self.markAlive()
                            for host in self.hosts.withLock({ Array($0.values) }) {
                                await self.dropOrphanedExclusiveQueues(in: host)
                                await self.autoDeleteAbandoned(in: host)
                            }
                            await self.checkAlarm()
                            await self.superviseForwarders()
                            for host in self.hosts.withLock({ Array($0.values) }) { await self.expireQueues(in: host) }
                        }
                    }
                    for task in self.forwarders.withLock({ Array($0.values) }) { task.cancel() }
                    for appender in self.appenders.withLock({ Array($0.values) }) { appender.finish() }
                }
                try await withThrowingDiscardingTaskGroup { listeners in
                    for (index, server) in listening.enumerated() {
                        let secure = index > 0
                        listeners.addTask {
                            try await withThrowingDiscardingTaskGroup { connections in
                                try await server.accept(
                                    as: NIOAsyncChannel<AMQPFrame, ByteBuffer>.self,
                                    spawn: { connections.addTask(operation: $0) }
                                ) { channel in
                                    let number = self.nextConnection.wrappingAdd(1, ordering: .relaxed).newValue
                                    await AMQPConnection(
                                        gateway: self, channel: channel, number: number, secure: secure
                                    ).run()
                                }
                            }
                        }
                    }
                }
                group.cancelAll()
            }
            await markGone()
        } onGracefulShutdown: {
            for server in listening { server.close() }
            // Every client hears connection.close 320, as RabbitMQ's clients do when it stops.
            let open = self.closers.withLock { closers in
                defer { closers = nil }
                return Array((closers ?? [:]).values)
            }
            for close in open { close() }
        }
    }

    // MARK: Access

    /// The user whose credentials these are; nil when they are wrong.
    /// The user a connection.start-ok names, nil when refused. EXTERNAL: the client
    /// certificate's common name (`principal`), which must be a known user when there is a users
    /// file (RabbitMQ's rule: the certificate replaces the password, not the user).
    func authenticate(mechanism: String, response: [UInt8], principal: String? = nil) throws(AMQPError) -> String? {
        if mechanism == "EXTERNAL" {
            guard let principal else {
                throw AMQPSASL.refused("EXTERNAL needs a verified client certificate with a common name")
            }
            if let users = configuration.users { return users[principal] != nil ? principal : nil }
            return configuration.allowAnonymous ? principal : nil
        }
        let credentials = try AMQPSASL.credentials(mechanism: mechanism, response: response)
        if let users = configuration.users, users[credentials.user] != nil {
            return users.verify(user: credentials.user, password: credentials.password) ? credentials.user : nil
        }
        return configuration.allowAnonymous ? credentials.user : nil
    }

    /// A virtual host opened by `user`: its state, loaded on first use; nil: refused.
    func open(virtualHost name: String, user: String) async throws -> AMQPVirtualHost? {
        guard configuration.virtualHosts.contains(name) else { return nil }
        if let permissions = configuration.permissions, permissions.rule(virtualHost: name, user: user) == nil {
            return nil
        }
        if let host = hosts.withLock({ $0[name] }) { return host }
        let host = AMQPVirtualHost(name: name, journal: journal)
        try await host.load()
        return hosts.withLock { hosts in
            if let existing = hosts[name] { return existing }
            hosts[name] = host
            return host
        }
    }

    // MARK: Resource alarm

    /// Reads the node's health: while it is not ok (the disk reserve refuses appends, or the
    /// journal stopped after an I/O error) connections that asked for it hear connection.blocked,
    /// and connection.unblocked when it is ok again. Publishes meanwhile are refused as before
    /// (confirm nack, or the channel closed): blocked tells clients to stop sending.
    func checkAlarm() async {
        guard let status = try? await journal.status() else { return }
        let reason: String? =
            status.health.status == .ok ? nil : status.health.problems.joined(separator: "; ")
        let notify = alarm.withLock { alarm -> [@Sendable (String?) -> Void] in
            guard (alarm.reason == nil) != (reason == nil) else { return [] }
            alarm.reason = reason
            return Array(alarm.watchers.values)
        }
        if !notify.isEmpty {
            logger.warning("amqp resource alarm", metadata: ["alarm": "\(reason ?? "cleared")"])
        }
        for watcher in notify { watcher(reason) }
    }

    /// A connection hears of the alarm's changes (and at once, when one is on).
    func watchAlarm(_ connection: UInt64, _ watcher: @escaping @Sendable (String?) -> Void) {
        let current = alarm.withLock { alarm -> String? in
            alarm.watchers[connection] = watcher
            return alarm.reason
        }
        if let current { watcher(current) }
    }

    func unwatchAlarm(_ connection: UInt64) {
        _ = alarm.withLock { $0.watchers.removeValue(forKey: connection) }
    }

    /// A connection opened: `close` ends it at shutdown. False when the gateway is shutting
    /// down already (it is closed at once).
    func opened(_ connection: UInt64, close: @escaping @Sendable () -> Void) -> Bool {
        closers.withLock { closers in
            guard closers != nil else { return false }
            closers![connection] = close
            return true
        }
    }

    func ended(_ connection: UInt64) {
        _ = closers.withLock { $0?.removeValue(forKey: connection) }
    }

    /// Whether this gateway's connection `number` is open (false for all once it shuts down).
    func isOpen(_ connection: UInt64) -> Bool { closers.withLock { $0?[connection] != nil } }

    // MARK: Names

    /// The registry topic holding a queue's messages: `amqp.<queue>` in the default virtual
    /// host, `amqp.<vhost>_.<queue>` in others, each byte outside `A-Z a-z 0-9 - .` written as
    /// `_HH` (docs/topics.md). Nil when that is longer than a topic name may be.
    public static func topic(virtualHost: String, queue: String) -> String? {
        func escaped(_ text: String) -> String {
            var out = ""
            for byte in text.utf8 {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."):
                    out.unicodeScalars.append(Unicode.Scalar(byte))
                default:
                    out += String(format: "_%02X", byte)
                }
            }
            return out
        }
        let name = virtualHost == "/" ? "amqp.\(escaped(queue))" : "amqp.\(escaped(virtualHost))_.\(escaped(queue))"
        return TopicEntry.isValidName(name) ? name : nil
    }

    /// The journal queue (docs/queues.md) of an AMQP queue.
    static func journalQueue(virtualHost: String, queue: String) -> String { "amqp/\(virtualHost)/\(queue)" }

    // MARK: Queues

    /// The partition of a queue's topic a message goes to: its priority (at most the queue's
    /// x-max-priority) in a priority queue, which has a partition per priority; 0 otherwise.
    static func partition(of arguments: AMQPQueueArguments, priority: UInt8?) -> Int32 {
        guard let levels = arguments.maxPriority else { return 0 }
        return Int32(min(priority ?? 0, levels))
    }

    /// The journal queue's definition for an AMQP queue: its topic's partitions (the highest
    /// priority first), its dead-letter shard, its length limit.
    static func queueDefinition(topic: String, arguments: AMQPQueueArguments, deadLetterShard: String?)
        -> QueueDefinition
    {
        let partitions = Int32(arguments.maxPriority ?? 0) + 1
        var limit: QueueDefinition.LengthLimit?
        if arguments.maxLength != nil || arguments.maxLengthBytes != nil {
            limit = .init(
                messages: arguments.maxLength.map { UInt64($0) }, bytes: arguments.maxLengthBytes.map { UInt64($0) },
                dropHead: arguments.overflow == .dropHead)
        }
        return QueueDefinition(
            sources: (0..<partitions).reversed().map {
                .init(shard: TopicRegistry.shardName(topic, $0), fromStart: true)
            },
            deadLetterShard: deadLetterShard, lengthLimit: limit, prioritized: partitions > 1,
            singleActiveConsumer: arguments.singleActiveConsumer)
    }

    /// Makes the queue's topic (a partition per priority) and journal queue (both idempotent),
    /// and its dead-letter shard and that shard's journal queue when it dead-letters.
    func createStorage(virtualHost: String, queue: String, arguments: AMQPQueueArguments) async throws {
        guard let topic = Self.topic(virtualHost: virtualHost, queue: queue) else {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - queue name '\(queue)' is too long for a topic name",
                classID: 50, methodID: 10)
        }
        do {
            _ = try await registry.create(topic, partitions: Int32(arguments.maxPriority ?? 0) + 1, configs: [:])
        } catch let error as TopicError where error.code == .exists {}
        var deadLetterShard: String?
        if arguments.deadLetterExchange != nil {
            let shard = Self.deadLetterShard(virtualHost: virtualHost, queue: queue)
            do {
                _ = try await journal.createShard(shard)
            } catch let error as JournalError where error.code == .shardExists {}
            _ = try await journal.declareQueue(
                shard, definition: QueueDefinition(sources: [.init(shard: shard, fromStart: true)]))
            deadLetterShard = shard
        }
        _ = try await journal.declareQueue(
            Self.journalQueue(virtualHost: virtualHost, queue: queue),
            definition: Self.queueDefinition(topic: topic, arguments: arguments, deadLetterShard: deadLetterShard))
    }

    /// Removes the queue's journal queue and topic.
    func deleteStorage(virtualHost: String, queue: String) async throws {
        do {
            try await journal.deleteQueue(Self.journalQueue(virtualHost: virtualHost, queue: queue))
        } catch let error as JournalError where error.code == .unknownQueue {}
        let deadLetters = Self.deadLetterShard(virtualHost: virtualHost, queue: queue)
        do {
            try await journal.deleteQueue(deadLetters)
        } catch let error as JournalError where error.code == .unknownQueue {}
        do {
            try await journal.deleteShard(deadLetters)
        } catch let error as JournalError where error.code == .unknownShard {}
        try await forgetUsage(virtualHost: virtualHost, queue: queue)
        try await forgetConsumers(virtualHost: virtualHost, queue: queue)
        guard let topic = Self.topic(virtualHost: virtualHost, queue: queue) else { return }
        let partitions = (try? await registry.entry(topic))?.partitions ?? 1
        for partition in 0..<partitions { dropAppender(for: TopicRegistry.shardName(topic, partition)) }
        do {
            _ = try await registry.delete(topic)
        } catch let error as TopicError where error.code == .unknown {}
    }

    /// Messages ready for delivery (not leased) in the queue; with `trim`, after the messages
    /// beyond its x-max-length went.
    func messageCount(virtualHost: String, queue: String, trim: Bool = false) async throws -> UInt32 {
        let name = Self.journalQueue(virtualHost: virtualHost, queue: queue)
        if trim {
            _ = try await journal.receive(
                queue: name, consumer: "amqp/\(instance)/expiry", max: 0, maxBytes: 0, visibilityMilliseconds: 0,
                resume: false, wait: .zero)
        }
        guard let status = try await journal.describeQueues(name).first else { return 0 }
        return UInt32(clamping: status.ready)
    }

    /// Whether a reject-publish queue is full: its ready messages at x-max-length, or its ready
    /// bytes at x-max-length-bytes. Checked before each publish to it; publishes racing on
    /// several channels can each find room and together go beyond the limit.
    func isFull(virtualHost: String, queue: String, arguments: AMQPQueueArguments) async throws -> Bool {
        guard arguments.overflow != .dropHead, arguments.maxLength != nil || arguments.maxLengthBytes != nil,
            let status = try await journal.describeQueues(Self.journalQueue(virtualHost: virtualHost, queue: queue))
                .first
        else { return false }
        if let most = arguments.maxLength, status.ready >= UInt64(most) { return true }
        if let most = arguments.maxLengthBytes, (status.readyBytes ?? 0) >= UInt64(most) { return true }
        return false
    }

    // MARK: Consumers

    // Each gateway counts its own consumers per queue and publishes the count in the journal
    // (KV namespace `amqp`, key `n` [vhost, queue, gateway instance] → count u64, exclusive u8),
    // written whenever it changes. A gateway's count holds while its heartbeat (key `g`) is
    // fresh, so the consumers of a killed gateway stop counting 5 s after it died. Consumer
    // counts, exclusive consumers, delete if-unused and auto-delete use the sum over gateways.

    static let consumersKind: UInt8 = 0x6E  // "n"

    private static func consumerKey(_ virtualHost: String, _ queue: String) -> String { "\(virtualHost)\u{0}\(queue)" }

    private func presenceKey(_ virtualHost: String, _ queue: String, _ instance: String) -> [UInt8] {
        AMQPVirtualHost.key(Self.consumersKind, [Array(virtualHost.utf8), Array(queue.utf8), Array(instance.utf8)])
    }

    /// This gateway's consumers of the queue, and whether one of them is exclusive.
    func localConsumers(_ virtualHost: String, _ queue: String) -> (count: Int, exclusive: Bool) {
        consumers.withLock { consumers in
            let current = consumers[Self.consumerKey(virtualHost, queue)]
            return (current?.count ?? 0, current?.exclusive ?? false)
        }
    }

    /// The consumers of the queue on the other live gateways.
    private func remoteConsumers(_ virtualHost: String, _ queue: String) async throws -> (
        count: Int, exclusive: Bool, known: Bool
    ) {
        let prefix = AMQPVirtualHost.key(Self.consumersKind, [Array(virtualHost.utf8), Array(queue.utf8)])
        var result = (count: 0, exclusive: false, known: false)
        for pair in try await journal.scan(namespace: AMQPVirtualHost.namespace, prefix: prefix, limit: 1024) {
            guard let fields = AMQPVirtualHost.fields(of: pair.key), fields.count == 3, pair.value.count == 9 else {
                continue
            }
            let owner = String(decoding: fields[2], as: UTF8.self)
            result.known = true
            guard owner != instance, try await isAlive(gateway: owner) else { continue }
            result.count += Int(pair.value[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            result.exclusive = result.exclusive || pair.value[8] != 0
        }
        return result
    }

    /// Writes this gateway's count of the queue's consumers (deleted at 0), again until what it
    /// wrote is what it counts (two changes racing may write in either order).
    private func publishConsumers(_ virtualHost: String, _ queue: String) async throws {
        var written: (count: Int, exclusive: Bool)?
        while true {
            let current = localConsumers(virtualHost, queue)
            if let written, written == current { return }
            let key = presenceKey(virtualHost, queue, instance)
            if current.count == 0 {
                try await journal.delete(namespace: AMQPVirtualHost.namespace, key: key)
            } else {
                let count = UInt64(current.count)
                try await journal.put(
                    namespace: AMQPVirtualHost.namespace, key: key,
                    value: (0..<8).reversed().map { UInt8(truncatingIfNeeded: count >> ($0 * 8)) }
                        + [current.exclusive ? 1 : 0])
            }
            written = current
        }
    }

    /// The queue's consumers on every live gateway.
    func consumerCount(virtualHost: String, queue: String) async throws -> Int {
        localConsumers(virtualHost, queue).count + (try await remoteConsumers(virtualHost, queue).count)
    }

    /// A consumer starts; an exclusive one needs the queue to itself, and none may start on a
    /// queue an exclusive one holds (403, as RabbitMQ answers), on any gateway. Two exclusive
    /// consumers starting at the same moment on two gateways can both succeed.
    func addConsumer(virtualHost: String, queue: String, exclusive: Bool) async throws {
        let others = try await remoteConsumers(virtualHost, queue)
        let key = Self.consumerKey(virtualHost, queue)
        let refused = consumers.withLock { consumers -> Bool in
            let current = consumers[key] ?? (0, false, false)
            if current.exclusive || others.exclusive || (exclusive && current.count + others.count > 0) {
                return true
            }
            consumers[key] = (current.count + 1, exclusive, true)
            return false
        }
        if refused {
            throw AMQPError(
                AMQPError.accessRefused,
                "ACCESS_REFUSED - queue '\(queue)' in vhost '\(virtualHost)' in exclusive use", classID: 60,
                methodID: 20)
        }
        try await publishConsumers(virtualHost, queue)
    }

    /// A consumer ended; true when it was the queue's last one on every live gateway.
    func removeConsumer(virtualHost: String, queue: String) async -> Bool {
        let key = Self.consumerKey(virtualHost, queue)
        let lastHere = consumers.withLock { consumers -> Bool in
            guard var current = consumers[key] else { return false }
            current.count -= 1
            current.exclusive = false
            if current.count <= 0 {
                consumers[key] = nil
                return true
            }
            consumers[key] = current
            return false
        }
        try? await publishConsumers(virtualHost, queue)
        guard lastHere else { return false }
        return (try? await remoteConsumers(virtualHost, queue).count) == 0
    }

    /// Auto-delete queues whose last consumers were on gateways that died: counted once, none
    /// left alive. (A queue whose last consumer went on a live gateway is deleted by it.)
    func autoDeleteAbandoned(in host: AMQPVirtualHost) async {
        for (queue, record) in await host.state.queues where record.autoDelete {
            guard localConsumers(host.name, queue).count == 0,
                let others = try? await remoteConsumers(host.name, queue), others.known, others.count == 0
            else { continue }
            do {
                try await host.change { state throws(AMQPError) in
                    state.queues[queue] = nil
                    state.routing.deleteQueue(queue)
                }
                try await deleteStorage(virtualHost: host.name, queue: queue)
                logger.info(
                    "amqp auto-delete queue of consumers on a gateway that is gone deleted",
                    metadata: ["amqp.vhost": "\(host.name)", "amqp.queue": "\(queue)"])
            } catch {
                logger.warning("amqp auto-delete failed", metadata: ["amqp.queue": "\(queue)", "error": "\(error)"])
            }
        }
    }

    /// The consumer counts of a deleted queue go with it.
    func forgetConsumers(virtualHost: String, queue: String) async throws {
        let prefix = AMQPVirtualHost.key(Self.consumersKind, [Array(virtualHost.utf8), Array(queue.utf8)])
        for pair in try await journal.scan(namespace: AMQPVirtualHost.namespace, prefix: prefix, limit: 1024) {
            try await journal.delete(namespace: AMQPVirtualHost.namespace, key: pair.key)
        }
    }
}
