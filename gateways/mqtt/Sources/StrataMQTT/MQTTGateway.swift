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

/// The MQTT gateway: an MQTT 3.1.1 / 5.0 listener whose messages live in journal shards.
/// It holds no durable state itself. A message whose topic's first level is a legal topic name
/// is a record of that registry topic (docs/topics.md), in the partition Kafka's partitioner
/// picks for the MQTT topic; the others (and all, with `sharedTopics` off) are records in
/// `mqtt/<tenant>/<bucket>` shards. Either way a topic always lands in the same shard, which
/// keeps per-topic order. The router follows every one of those shards, so records other
/// protocols write to a registry topic reach MQTT subscribers too. Retained messages and
/// sessions are key-value entries in the journal.
public final class MQTTGateway: Service {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 1883
        /// MQTT over WebSocket listener (nil: none).
        public var webSocketHost: String?
        public var webSocketPort = 8083
        public var tenant = "default"
        /// Shards the messages of topics outside the registry are spread over by topic hash.
        public var buckets = 16
        /// Whether MQTT topics map to registry topics, both ways (docs/topics.md); off, every
        /// message is kept in the bucket shards and no other protocol's records are delivered.
        public var sharedTopics = true
        /// Shared subscriptions: the group, not the member, owns a message — what a member has
        /// not acknowledged goes to another member as soon as its connection ends, QoS 2 too
        /// (as EMQX offers). Off (the spec's way): it stays with the member while its session
        /// lives, and a sent QoS 2 message is not given to another member (docs/mqtt.md).
        public var sharedRedispatch = false
        /// Partitions of a registry topic the gateway creates for an MQTT topic's first level.
        public var topicPartitions: Int32 = 1
        /// Retention of the bucket shards, when given; nil: the one the last gateway given one
        /// stored in the journal, else `BucketRetention.standard` (docs/mqtt.md, "Retention").
        public var retention: BucketRetention?
        public var maxPacketSize = 1 << 20
        /// Messages queued for one subscriber beyond its receive maximum before the gateway
        /// drops QoS 0 messages and disconnects for QoS 1/2 (see docs/mqtt.md).
        public var maxQueuedMessages = 10_000
        /// Topic aliases a 5.0 client may use toward the gateway.
        public var topicAliasMaximum: UInt16 = 64
        /// The most keep-alive a client may ask for (seconds; a keep-alive of 0, none, asks for
        /// more than any): a 5.0 client asking for more is told this one as the server keep
        /// alive, a 3.1/3.1.1 client is refused (CONNACK 2), as mosquitto's max_keepalive does.
        /// 65535, the default, is no limit.
        public var maxKeepAlive: UInt16 = .max
        /// Seconds between updates of the `$SYS/broker/…` topics (mosquitto's sys_interval;
        /// 0: none are published).
        public var sysInterval = 10
        /// Clients without credentials are let in only when this is set.
        public var allowAnonymous = false
        /// Users and their password hashes (mosquitto's format); when given, CONNECT passwords are
        /// checked against it rather than against `scramUsers`.
        public var passwords: MQTTPasswordFile?
        /// Topic access rules (mosquitto's format); without it, every topic is open to every client.
        public var acl: MQTTACL?
        /// TLS for both listeners (TCP and WebSocket) when set.
        public var tls: NIOSSLContext?
        /// The users file every gateway can share (SCRAM-SHA-256 keys): MQTT 5 enhanced
        /// authentication with SCRAM-SHA-256 (without it a CONNECT naming an authentication
        /// method is refused with 0x8C), and CONNECT passwords when no `passwords` file is given.
        /// Without either, no credentials are right.
        public var scramUsers: SCRAMUsers?

        public init() {}

        /// Reads the password and ACL files (mosquitto's formats) and the TLS certificate chain
        /// and private key (PEM), those that are given. A certificate needs its key and the
        /// other way round.
        public mutating func loadAccessFiles(
            passwords: String?, acl: String?, tlsCertificate: String? = nil, tlsKey: String? = nil,
            scramUsers: String? = nil
        ) throws {
            self.passwords = try passwords.map { try MQTTPasswordFile(contentsOfFile: $0) }
            self.scramUsers = try scramUsers.map { try SCRAMUsers(contentsOfFile: $0) }
            self.acl = try acl.map { try MQTTACL(contentsOfFile: $0) }
            switch (tlsCertificate, tlsKey) {
            case (nil, nil):
                tls = nil
            case (let certificate?, let key?):
                tls = try TLSFiles.serverContext(certificate: certificate, key: key)
            default:
                throw ConfigFileError("TLS needs both a certificate file and a key file")
            }
        }

    }

    let configuration: Configuration
    let journal: any JournalClient
    let logger: Logger
    let group: any EventLoopGroup
    /// Connected sessions, and per followed shard the next offset the router will hand out: a
    /// session registered now sees every message from there on live, everything before it by
    /// replay.
    struct Registry {
        var sessions: [String: MQTTSession] = [:]
        /// The registered sessions' subscriptions, by filter level.
        var subscriptions = MQTTSubscriptionTree()
        var dispatched: [String: UInt64] = [:]
        /// Wills waiting for their delay to run out, by client id.
        var pendingWills: [String: Scheduled<Void>] = [:]
        /// Sessions another gateway process asked this one to end (their request is answered
        /// once the session's record is stored).
        var takeovers: Set<String> = []
        /// Per client id with a connection here, the settler of its shared-subscription leases.
        var settlers: [String: MQTTShareSettler] = [:]
    }

    let registry = Mutex(Registry())
    /// The latest `$SYS` messages by topic, retained for new subscriptions.
    let sysRetained = Mutex<[String: MQTTMessage]>([:])

    /// The shards messages are appended to and routed from, with their appenders.
    struct Streams {
        /// False until `run` set up the buckets, and again once it is shutting down.
        var running = false
        /// One appender per shard, by shard name.
        var appenders: [String: MQTTAppender] = [:]
        /// Registry topics followed: their id, partition count, and since when (`WallClock` ms).
        var topics: [String: (id: [UInt8], partitions: Int32, since: Int64)] = [:]
        /// The followed topics' MQTT roots and prefixes (`strata.mqtt.prefix`).
        var roots = MQTTTopicRoots()
        /// Registry topics being created for a publish, with the messages waiting for them.
        var creating: [String: [(MQTTMessage, MQTTAppender.Completion)]] = [:]
        /// The bucket retention in force, also given to the registry topics the gateway creates.
        var retention = BucketRetention.standard
        /// The shared subscriptions' queues this gateway declared, with their filters as written
        /// (declared again when a topic they can read is followed).
        var shares: [String: String] = [:]
    }

    /// Work `run` hands to its task group while it serves.
    enum Work: Sendable {
        case append(MQTTAppender)
        case route(shard: String, topic: String?, id: [UInt8]?, from: UInt64)
        case create(String)
        /// Declare the shared queues again for a topic followed anew (its new sources read
        /// from their start) or whose MQTT root changed (`fromStart` false: from their ends).
        case redeclareShares(String, fromStart: Bool)
    }

    let streams = Mutex(Streams())
    private let work: AsyncStream<Work>
    private let workContinuation: AsyncStream<Work>.Continuation
    let topics: TopicRegistry
    private let onBound: @Sendable (SocketAddress) -> Void
    private let onWebSocketBound: @Sendable (SocketAddress) -> Void

    public init(
        configuration: Configuration, journal: any JournalClient,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in },
        onWebSocketBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.onWebSocketBound = onWebSocketBound
        self.configuration = configuration
        self.journal = journal
        self.logger = logger
        self.group = eventLoopGroup
        self.onBound = onBound
        topics = TopicRegistry(journal: journal, logger: logger)
        (work, workContinuation) = AsyncStream.makeStream()
    }

    static let retainedNamespace = "mqtt.retained"

    /// Read buffers per connection: 256 bytes to start, adapting up to 64 KiB under load.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536)

    func shardName(bucket: Int) -> String { "mqtt/\(configuration.tenant)/\(bucket)" }

    static let settingsNamespace = "mqtt.settings"
    static let retentionKey = Array("bucket-retention".utf8)

    /// The bucket retention in force: the configured one (stored, for gateways started without
    /// one), else the stored one, else the standard one (stored).
    func bucketRetention() async throws -> BucketRetention {
        if configuration.retention == nil,
            let bytes = try await journal.get(namespace: Self.settingsNamespace, key: Self.retentionKey),
            let stored = try? JSONDecoder().decode(BucketRetention.self, from: Data(bytes))
        {
            return stored
        }
        let retention = configuration.retention ?? .standard
        try await journal.put(
            namespace: Self.settingsNamespace, key: Self.retentionKey, value: Array(try JSONEncoder().encode(retention))
        )
        return retention
    }

    public func run() async throws {
        var ends: [String: UInt64] = [:]
        let retention = try await bucketRetention()
        let existing = Dictionary(uniqueKeysWithValues: try await journal.listShards().map { ($0.name, $0) })
        for bucket in 0..<configuration.buckets {
            let name = shardName(bucket: bucket)
            if let info = existing[name] {
                ends[name] = info.endOffset
                if info.config.retentionMilliseconds != retention.milliseconds
                    || info.config.retentionBytes != retention.bytes
                {
                    var config = info.config
                    config.retentionMilliseconds = retention.milliseconds
                    config.retentionBytes = retention.bytes
                    do {
                        _ = try await journal.alterShard(name, config: config)
                        logger.notice(
                            "mqtt bucket retention changed",
                            metadata: ["mqtt.shard": "\(name)", "mqtt.retention": "\(retention)"])
                    } catch let error as JournalError
                        where error.code == .unsupported || error.code == .permissionDenied
                    {
                        // An older journal-node, or a principal without `all` on the buckets: serve
                        // with the retention the bucket has.
                        logger.warning(
                            "mqtt bucket retention left as it is",
                            metadata: ["mqtt.shard": "\(name)", "error": "\(error)"])
                    }
                }
            } else {
                let config = ShardConfig(
                    durability: .fsync, retentionMilliseconds: retention.milliseconds, retentionBytes: retention.bytes)
                do {
                    ends[name] = try await journal.createShard(name, config: config).endOffset
                } catch let error as JournalError where error.code == .shardExists {
                    ends[name] = try await journal.describeShard(name).endOffset
                }
            }
        }
        streams.withLock { $0.retention = retention }
        // Registry topics followed from their ends now: what they hold was there before.
        let registryTopics: [String: TopicEntry]
        do {
            registryTopics = configuration.sharedTopics ? try await topics.all() : [:]
        } catch let error as JournalError where error.code == .permissionDenied {
            throw JournalError(
                .permissionDenied,
                "shared topics need the gateway's journal principal to have all on kv:kafka.topics and shard:kafka/ "
                    + "(docs/operations.md); grant them or start with shared topics off: \(error.message)")
        }
        let maxPacketSize = configuration.maxPacketSize
        let tls = configuration.tls
        // Idle clients are the common case: their read buffer (which the decoder keeps) starts
        // small and grows with traffic.
        let decoder: @Sendable (any Channel) throws -> Void = { channel in
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(MQTTDecoder(maxPacketSize: maxPacketSize)))
        }
        let server = try await Listener.bind(
            ListenerOptions(
                host: configuration.host, port: configuration.port, tls: tls, receiveBuffers: Self.receiveBuffers),
            group: group, pipeline: decoder)
        // The other MQTT gateway processes on this journal, for session takeover between them.
        let membership = GatewayMembers(
            protocol: "mqtt", id: Int32.random(in: 1...Int32.max), host: configuration.host,
            port: Int32(server.localAddress?.port ?? configuration.port), journal: journal, logger: logger)
        try await membership.join()
        members.withLock { $0 = membership }
        if let address = server.localAddress { onBound(address) }
        // MQTT over WebSocket (MQTT 6): subprotocol `mqtt`, the same decoder and connections.
        let webSocket: WebSocketListener<MQTTPacket, ByteBuffer>? =
            if let wsHost = configuration.webSocketHost {
                try await WebSocketListener.bind(
                    ListenerOptions(
                        host: wsHost, port: configuration.webSocketPort, tls: tls, receiveBuffers: Self.receiveBuffers),
                    group: group, subprotocol: "mqtt", maxFrameSize: maxPacketSize + 16, pipeline: decoder)
            } else {
                nil
            }
        if let address = webSocket?.localAddress { onWebSocketBound(address) }
        logger.info(
            "mqtt listening",
            metadata: [
                "mqtt.listen": "\(server.localAddress.map { "\($0)" } ?? "?")", "mqtt.tls": "\(tls != nil)",
            ])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await self.serveWork() }
                group.addTask { await membership.run() }
                group.addTask { await self.answerTakeovers() }
                group.addTask { await self.sweepExpiredSessions() }
                if configuration.sysInterval > 0 { group.addTask { await self.publishSysTopics() } }
                self.streams.withLock { streams in
                    streams.running = true
                    for bucket in 0..<self.configuration.buckets {
                        let shard = self.shardName(bucket: bucket)
                        self.startStream(shard, topic: nil, id: nil, from: ends[shard] ?? 0, in: &streams)
                    }
                    for (name, entry) in registryTopics {
                        self.follow(name, entry, from: { existing[$0]?.endOffset ?? 0 }, in: &streams)
                    }
                }
                if configuration.sharedTopics { group.addTask { await self.watchTopics() } }
                if let webSocket {
                    group.addTask {
                        try await withThrowingDiscardingTaskGroup { connections in
                            try await webSocket.accept(spawn: { connections.addTask(operation: $0) }) {
                                await MQTTConnection(gateway: self, channel: $0).run()
                            }
                        }
                    }
                }
                try await server.accept(
                    as: NIOAsyncChannel<MQTTPacket, ByteBuffer>.self, spawn: { group.addTask(operation: $0) }
                ) {
                    await MQTTConnection(gateway: self, channel: $0).run()
                }
                // The listener closed (shutdown): end the sessions (they store their records),
                // then the appenders, and stop routing.
                self.registry.withLock { registry in
                    for session in registry.sessions.values {
                        // 5.0 clients are told why (MQTT 3.14: 0x8B server shutting down).
                        if session.version == .v5 { session.send(.disconnect(.init(reasonCode: 0x8B))) }
                        session.close()
                    }
                }
                // Give the connections a moment to write their last packets and store their
                // session records before the rest is cancelled.
                let deadline = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < deadline, !self.registry.withLock({ $0.sessions.isEmpty }) {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                let (appenders, waiting) = self.streams.withLock { streams in
                    streams.running = false
                    defer { streams.creating = [:] }
                    return (Array(streams.appenders.values), streams.creating.values.flatMap { $0 })
                }
                await membership.leave()
                appenders.forEach { $0.finish() }
                for (_, completion) in waiting {
                    completion(.failure(JournalError(.closed, "the gateway is shutting down")))
                }
                self.workContinuation.finish()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            server.close()
            webSocket?.close()
        }
    }

    // MARK: Streams

    /// Runs what `startStream` and `submit` hand over: appenders, routes, topic creations.
    private func serveWork() async {
        await withDiscardingTaskGroup { group in
            for await item in work {
                switch item {
                case .append(let appender): group.addTask { await appender.run() }
                case .route(let shard, let topic, let id, let from):
                    group.addTask { await self.route(shard: shard, topic: topic, id: id, from: from) }
                case .create(let name): group.addTask { await self.createTopic(name) }
                case .redeclareShares(let topic, let fromStart):
                    group.addTask { await self.redeclareShares(for: topic, fromStart: fromStart) }
                }
            }
        }
    }

    /// Starts appending to and routing from a shard not followed yet, from offset `from`.
    private func startStream(_ shard: String, topic: String?, id: [UInt8]?, from: UInt64, in streams: inout Streams) {
        guard streams.appenders[shard] == nil else { return }
        let appender = MQTTAppender(shard: shard, journal: journal) { [journal] stored in
            // Retained-message updates, in the order their messages were stored.
            for message in stored where message.retain {
                if message.payload.readableBytes == 0 {
                    try await journal.delete(namespace: Self.retainedNamespace, key: Array(message.topic.utf8))
                } else {
                    try await journal.put(
                        namespace: Self.retainedNamespace, key: Array(message.topic.utf8), value: message.retainedValue)
                }
            }
        }
        streams.appenders[shard] = appender
        registry.withLock { $0.dispatched[shard] = from }
        workContinuation.yield(.append(appender))
        workContinuation.yield(.route(shard: shard, topic: topic, id: id, from: from))
    }

    /// Follows a registry topic's partitions (those not followed yet), each from `from(shard)`.
    private func follow(
        _ name: String, _ entry: TopicEntry, from: (String) -> UInt64, in streams: inout Streams
    ) {
        if let known = streams.topics[name], known.id != entry.id {
            // Deleted and created again: the old one's shards are other shards now.
            for partition in 0..<known.partitions {
                let shard = TopicRegistry.shardName(name, partition)
                streams.appenders.removeValue(forKey: shard)?.finish()
                registry.withLock { _ = $0.dispatched.removeValue(forKey: shard) }
            }
        }
        streams.topics[name] = (entry.id, entry.partitions, WallClock.milliseconds())
        streams.roots.set(name, prefix: entry.configs[MQTTTopicRoots.prefixConfig])
        for partition in 0..<entry.partitions {
            let shard = TopicRegistry.shardName(name, partition)
            startStream(shard, topic: name, id: entry.id, from: from(shard), in: &streams)
        }
        limitBatches(name, entry, in: streams)
        if !streams.shares.isEmpty { workContinuation.yield(.redeclareShares(name, fromStart: true)) }
    }

    /// Keeps the batches appended to a topic's partitions within its max.message.bytes.
    private func limitBatches(_ name: String, _ entry: TopicEntry, in streams: Streams) {
        let limit = entry.shardConfig.maxBatchBytes
        for partition in 0..<entry.partitions {
            streams.appenders[TopicRegistry.shardName(name, partition)]?.limit(limit)
        }
    }

    /// Follows the registry's changes (`TopicRegistry.watch`): topics created or grown elsewhere
    /// are followed from their start, deleted ones dropped.
    private func watchTopics() async {
        await topics.watch { found, readSince in
            streams.withLock { streams in
                guard streams.running else { return }
                for (name, entry) in found {
                    guard let known = streams.topics[name] else {
                        follow(name, entry, from: { _ in 0 }, in: &streams)
                        continue
                    }
                    // A topic this gateway followed after the read began is newer than the read.
                    let recreated = known.id != entry.id && known.since < readSince
                    if recreated || (known.id == entry.id && known.partitions < entry.partitions) {
                        follow(name, entry, from: { _ in 0 }, in: &streams)
                    } else if known.id == entry.id {
                        limitBatches(name, entry, in: streams)
                        // Its MQTT prefix may have been set or changed (`strata topic alter`).
                        let before = streams.roots
                        streams.roots.set(name, prefix: entry.configs[MQTTTopicRoots.prefixConfig])
                        if streams.roots != before, !streams.shares.isEmpty {
                            workContinuation.yield(.redeclareShares(name, fromStart: false))
                        }
                    }
                }
                for (name, known) in streams.topics where found[name] == nil && known.since < readSince {
                    forgetTopic(name, in: &streams)
                }
            }
        }
    }

    /// Stops appending to a deleted topic's shards (their routes end by themselves).
    private func forgetTopic(_ name: String, in streams: inout Streams) {
        guard let known = streams.topics.removeValue(forKey: name) else { return }
        streams.roots.remove(name)
        for partition in 0..<known.partitions {
            let shard = TopicRegistry.shardName(name, partition)
            streams.appenders.removeValue(forKey: shard)?.finish()
            registry.withLock { _ = $0.dispatched.removeValue(forKey: shard) }
        }
    }

    /// Whether `shard` is still followed as part of topic `id` (a route of a deleted topic ends).
    private func isFollowed(_ shard: String, topic: String?, id: [UInt8]?) -> Bool {
        guard let topic else { return true }
        return streams.withLock { streams in
            streams.topics[topic]?.id == id && streams.appenders[shard] != nil
        }
    }

    // MARK: Routing

    /// Follows one shard from `from` on and hands each message to the matching sessions.
    /// A lost journal connection is retried from the last offset seen; a registry topic's
    /// route ends when the topic is deleted.
    private func route(shard: String, topic: String?, id: [UInt8]?, from start: UInt64) async {
        var next = start
        var backoff: Duration = .milliseconds(50)
        while !Task.isCancelled, isFollowed(shard, topic: topic, id: id) {
            do {
                for try await result in try await journal.subscribe(shard: shard, from: next) {
                    guard isFollowed(shard, topic: topic, id: id) else { return }
                    let root = mqttRoot(of: topic)
                    for batch in result.batches {
                        for record in records(of: batch, in: shard) where record.offset! >= next {
                            dispatch(MQTTMessage(record: record, root: root), shard: shard, offset: record.offset!)
                        }
                    }
                    next = result.nextOffset
                    backoff = .milliseconds(50)
                }
            } catch {
                if Task.isCancelled { return }
                if topic != nil, let error = error as? JournalError, error.code == .unknownShard {
                    logger.info("mqtt stopped following a deleted topic's shard", metadata: ["mqtt.shard": "\(shard)"])
                    return
                }
                logger.warning("mqtt routing interrupted", metadata: ["mqtt.shard": "\(shard)", "error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// The MQTT topic root of a registry topic's records (nil: a bucket shard's, keyed by topic).
    func mqttRoot(of topic: String?) -> String? {
        topic.map { topic in streams.withLock { $0.roots.root(of: topic) } }
    }

    /// The records of a stored batch; none (counted and logged) when it cannot be decoded.
    private func records(of batch: ByteBuffer, in shard: String) -> [Record] {
        do {
            return try RecordBatch.decode(batch)
        } catch {
            MQTTMetrics.unreadableBatches.increment()
            logger.warning("mqtt cannot deliver a batch", metadata: ["mqtt.shard": "\(shard)", "error": "\(error)"])
            return []
        }
    }

    /// Hands a message to the matching sessions and moves the bucket's position past it, in one
    /// step under the registry lock, so a session registering meanwhile gets it either live or
    /// by replay, never both or neither. (Shared subscriptions take theirs from their queues.)
    func dispatch(_ message: MQTTMessage, shard: String, offset: UInt64) {
        registry.withLock { registry in
            Self.deliver(message, in: registry)
            registry.dispatched[shard] = max(registry.dispatched[shard] ?? 0, offset + 1)
        }
    }

    /// Hands a message to every connected session with a subscription that matches it.
    private static func deliver(_ message: MQTTMessage, in registry: Registry) {
        var direct: [ObjectIdentifier: (MQTTSession, [MQTTSession.Subscription])] = [:]
        for entry in registry.subscriptions.matches(message.topic) {
            direct[ObjectIdentifier(entry.session), default: (entry.session, [])].1.append(entry.subscription)
        }
        for (session, subscriptions) in direct.values {
            guard let match = session.combine(subscriptions, publisher: message.publisher) else { continue }
            session.deliver(
                message, qos: min(message.qos, match.qos), retain: match.retainAsPublished && message.retain,
                identifiers: match.identifiers)
        }
    }

    /// Publishes the `$SYS` topics every `sysInterval` seconds to the subscribers of this
    /// gateway (not to the journal), and keeps the latest as retained for new subscriptions.
    func publishSysTopics() async {
        var sys = MQTTSysTopics()
        while !Task.isCancelled {
            let messages = registry.withLock { registry in
                sys.values(connected: registry.sessions.count).map { MQTTSysTopics.message($0, $1) }
            }
            sysRetained.withLock { retained in for message in messages { retained[message.topic] = message } }
            registry.withLock { registry in for message in messages { Self.deliver(message, in: registry) } }
            try? await Task.sleep(for: .seconds(configuration.sysInterval))
        }
    }

    /// Delivers a message read back from the journal to one session (replay of its offline queue).
    static func offer(_ message: MQTTMessage, to session: MQTTSession) {
        guard let match = session.match(message.topic, publisher: message.publisher) else { return }
        session.deliverNow(
            message, qos: min(message.qos, match.qos), retain: match.retainAsPublished && message.retain,
            identifiers: match.identifiers, bounded: false)
    }

    /// Adds or replaces a subscription of a session and indexes it for routing; returns
    /// whether it existed before.
    func subscribe(_ session: MQTTSession, _ subscription: MQTTSession.Subscription) -> Bool {
        registry.withLock { registry in
            let previous = session.subscribe(subscription)
            // Shared subscriptions are served from their queues (MQTTSharedSubscriptions.swift).
            if registry.sessions[session.clientID] === session, subscription.shared == nil {
                if let previous { registry.subscriptions.remove(previous, of: session) }
                registry.subscriptions.insert(subscription, of: session)
            }
            return previous != nil
        }
    }

    func unsubscribe(_ session: MQTTSession, _ filter: String) -> Bool {
        registry.withLock { registry in
            guard let previous = session.unsubscribe(filter) else { return false }
            if registry.sessions[session.clientID] === session, previous.shared == nil {
                registry.subscriptions.remove(previous, of: session)
            }
            return true
        }
    }

    // MARK: Wills

    /// Publishes a will now, or after `delay` unless the client reconnects first.
    func publishWill(_ message: MQTTMessage, of clientID: String, after delay: Duration) {
        let logger = self.logger
        let send: @Sendable () -> Void = { [self] in
            self.registry.withLock { _ = $0.pendingWills.removeValue(forKey: clientID) }
            self.submit(message) { result in
                if case .failure(let error) = result {
                    logger.error("will not published", metadata: ["mqtt.client": "\(clientID)", "error": "\(error)"])
                }
            }
        }
        guard delay > .zero else { return send() }
        let scheduled = group.next().scheduleTask(in: .seconds(delay.components.seconds)) { send() }
        registry.withLock {
            $0.pendingWills[clientID]?.cancel()
            $0.pendingWills[clientID] = scheduled
        }
    }

    /// Whether a newer connection of the session's client is registered in its place.
    func isTakenOver(_ session: MQTTSession) -> Bool {
        registry.withLock { registry in registry.sessions[session.clientID].map { $0 !== session } ?? false }
    }

    func cancelWill(of clientID: String) {
        registry.withLock { $0.pendingWills.removeValue(forKey: clientID)?.cancel() }
    }

    // MARK: Sessions

    static let sessionNamespace = "mqtt.sessions"
    /// Which gateway process (its `GatewayMembers` id) holds each client's session, by client id.
    static let holderNamespace = "mqtt.session-holders"
    /// Requests to end a session, key `<holder id>/<client id>`; the holder deletes the key once
    /// the session's record is stored.
    static let takeoverNamespace = "mqtt.takeovers"
    /// How long a CONNECT waits for another gateway to end the session it holds.
    static let takeoverWait: Duration = .seconds(3)

    let members = Mutex<GatewayMembers?>(nil)

    /// Makes this gateway the holder of a client's session. When another live gateway holds it,
    /// asks that one to end it — it closes the connection as a local takeover does (DISCONNECT
    /// 0x8E to a 5.0 client) and stores the session's record — and waits until it has, at most
    /// `takeoverWait`.
    func claimSession(_ clientID: String) async throws {
        guard let members = members.withLock({ $0 }) else { return }
        let me = members.me.id
        let key = Array(clientID.utf8)
        // Alone on the journal, no other gateway can hold the session.
        if members.live.contains(where: { $0.id != me }),
            let bytes = try await journal.get(namespace: Self.holderNamespace, key: key),
            let holder = Int32(String(decoding: bytes, as: UTF8.self)), holder != me,
            members.live.contains(where: { $0.id == holder })
        {
            let request = Array("\(holder)/\(clientID)".utf8)
            try await journal.put(namespace: Self.takeoverNamespace, key: request, value: Array(String(me).utf8))
            let deadline = ContinuousClock.now + Self.takeoverWait
            while try await journal.get(namespace: Self.takeoverNamespace, key: request) != nil {
                // A holder that stopped renewing its entry (killed) is not waited for.
                let renewed = members.live.first { $0.id == holder }?.heartbeat ?? 0
                guard ContinuousClock.now < deadline, WallClock.milliseconds() - renewed < 2_500 else {
                    logger.warning(
                        "mqtt session takeover not answered in time; resuming from the last stored record",
                        metadata: ["mqtt.client": "\(clientID)", "mqtt.holder": "\(holder)"])
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await journal.put(namespace: Self.holderNamespace, key: key, value: Array(String(me).utf8))
    }

    /// Whether this gateway is still the holder of a client's session (true when alone on the
    /// journal, or when nothing says otherwise).
    func holdsSession(_ clientID: String) async -> Bool {
        guard let members = members.withLock({ $0 }),
            let bytes = try? await journal.get(namespace: Self.holderNamespace, key: Array(clientID.utf8)),
            let holder = Int32(String(decoding: bytes, as: UTF8.self))
        else { return true }
        return holder == members.me.id
    }

    /// Ends the sessions other gateways asked for (`claimSession`), read every 100 ms.
    private func answerTakeovers() async {
        guard let members = members.withLock({ $0 }) else { return }
        let prefix = "\(members.me.id)/"
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            guard let requests = try? await journal.scan(namespace: Self.takeoverNamespace, prefix: Array(prefix.utf8))
            else { continue }
            for request in requests {
                let clientID = String(String(decoding: request.key, as: UTF8.self).dropFirst(prefix.count))
                let session = registry.withLock { registry -> MQTTSession? in
                    guard let session = registry.sessions[clientID], !registry.takeovers.contains(clientID) else {
                        return nil
                    }
                    registry.takeovers.insert(clientID)
                    return session
                }
                if let session {
                    logger.debug("mqtt session taken over by another gateway", metadata: ["mqtt.client": "\(clientID)"])
                    if session.version == .v5 { session.send(.disconnect(.init(reasonCode: 0x8E))) }
                    session.close()
                } else if registry.withLock({ !$0.takeovers.contains(clientID) }) {
                    // Not connected here (any more): its record is as stored.
                    try? await journal.delete(namespace: Self.takeoverNamespace, key: request.key)
                }
            }
        }
    }

    /// After a connection ended and its session record was stored: answers a takeover request
    /// for it, and forgets a clean session's holder entry.
    func sessionEnded(_ session: MQTTSession) async {
        forgetShareSettler(session.clientID)
        guard let members = members.withLock({ $0 }) else { return }
        let me = members.me.id
        if registry.withLock({ $0.takeovers.remove(session.clientID) }) != nil {
            // The client is back, through another gateway: a delayed will is not sent (MQTT 3.1.3.2.2).
            cancelWill(of: session.clientID)
            try? await journal.delete(namespace: Self.takeoverNamespace, key: Array("\(me)/\(session.clientID)".utf8))
        } else if !session.persistent, registry.withLock({ $0.sessions[session.clientID] == nil }) {
            let key = Array(session.clientID.utf8)
            if let holder = try? await journal.get(namespace: Self.holderNamespace, key: key),
                holder == Array(String(me).utf8)
            {
                try? await journal.delete(namespace: Self.holderNamespace, key: key)
            }
        }
    }

    /// Registers a session; returns the one it replaces (same client id) and the bucket positions.
    func register(_ session: MQTTSession) -> (previous: MQTTSession?, positions: [String: UInt64]) {
        registry.withLock { registry in
            let previous = registry.sessions.updateValue(session, forKey: session.clientID)
            for subscription in previous?.subscriptions ?? [] where subscription.shared == nil {
                registry.subscriptions.remove(subscription, of: previous!)
            }
            for subscription in session.subscriptions where subscription.shared == nil {
                registry.subscriptions.insert(subscription, of: session)
            }
            return (previous, registry.dispatched)
        }
    }

    /// Removes a session if it is still the registered one; returns the positions then.
    func unregister(_ session: MQTTSession) -> [String: UInt64]? {
        registry.withLock { registry in
            guard registry.sessions[session.clientID] === session else { return nil }
            registry.sessions[session.clientID] = nil
            for subscription in session.subscriptions where subscription.shared == nil {
                registry.subscriptions.remove(subscription, of: session)
            }
            return registry.dispatched
        }
    }

    /// The record of a connected persistent session as of now, with the bucket positions it is
    /// consistent with (taken under the lock that routing holds); nil once it is not the
    /// registered session any more.
    func checkpointRecord(_ session: MQTTSession) -> MQTTSessionRecord? {
        registry.withLock { registry in
            // While a replay runs, the offline queue's start is still the stored record's.
            guard registry.sessions[session.clientID] === session, !session.isReplaying else { return nil }
            return session.record(positions: registry.dispatched, expiryInterval: session.expiryInterval)
        }
    }

    func connectedSession(_ clientID: String) -> (MQTTSession, [String: UInt64])? {
        registry.withLock { registry in registry.sessions[clientID].map { ($0, registry.dispatched) } }
    }

    /// Whose session `clientID` names: the connected one's user here, else the stored record's
    /// (a session connected through another gateway process has one once its checkpointer
    /// ran); nil when there is none, it expired, or its record predates owners.
    func sessionOwner(_ clientID: String) async throws -> MQTTSessionRecord.Owner? {
        if let (live, _) = connectedSession(clientID) { return .init(user: live.user) }
        guard let record = try await storedSession(clientID), !record.isExpired else { return nil }
        return record.owner
    }

    func storedSession(_ clientID: String) async throws -> MQTTSessionRecord? {
        guard let bytes = try await journal.get(namespace: Self.sessionNamespace, key: Array(clientID.utf8)) else {
            return nil
        }
        guard var record = try? MQTTSessionRecord(stored: bytes) else {
            logger.error(
                "mqtt session record unreadable: the session starts afresh", metadata: ["mqtt.client": "\(clientID)"])
            return nil
        }
        if record.complete == nil {
            // Stored before registry topics: positions by bucket number.
            record.positions = Dictionary(
                record.positions.compactMap { key, offset in Int(key).map { (shardName(bucket: $0), offset) } },
                uniquingKeysWith: max)
        }
        return record
    }

    func storeSession(_ clientID: String, _ record: MQTTSessionRecord) async throws {
        try await journal.put(
            namespace: Self.sessionNamespace, key: Array(clientID.utf8), value: record.kvBytes)
    }

    func forgetSession(_ clientID: String) async throws {
        try await journal.delete(namespace: Self.sessionNamespace, key: Array(clientID.utf8))
    }

    /// Delivers to `session` what its subscriptions match from `resume.from` on in each shard —
    /// the messages published while it was away (its offline queue is the journal itself) —
    /// then switches it to live delivery. Live messages arriving meanwhile are held back; when
    /// more arrive than the queue limit they are dropped and read from the journal in another
    /// round. A shard the record does not name began after it was stored (when the record is
    /// complete) and is read from its start.
    func replay(_ session: MQTTSession, _ resume: MQTTConnection.Resume) async throws {
        var from = resume.from
        for (shard, end) in resume.to where from[shard] == nil {
            from[shard] = resume.complete ? 0 : end
        }
        var to = resume.to
        var first = true
        while true {
            try await replay(session, range: from, to, countingSkips: first)
            first = false
            let further = registry.withLock { registry -> [String: UInt64]? in
                session.endReplay() ? nil : registry.dispatched
            }
            guard let further else { return }
            var next = to
            for shard in further.keys where next[shard] == nil { next[shard] = 0 }
            (from, to) = (next, further)
        }
    }

    private func replay(
        _ session: MQTTSession, range from: [String: UInt64], _ to: [String: UInt64], countingSkips: Bool
    ) async throws {
        var skipped = false
        // Bucket shards first: a topic's older messages are there when it moved to a registry topic.
        let shards = to.keys.sorted { ($0.hasPrefix("mqtt/") ? 0 : 1, $0) < ($1.hasPrefix("mqtt/") ? 0 : 1, $1) }
        for shard in shards {
            guard var next = from[shard], let end = to[shard], next < end else { continue }
            let topic = TopicRegistry.partition(ofShard: shard)?.topic
            let start: UInt64
            do {
                start = try await journal.describeShard(shard).startOffset
            } catch let error as JournalError where error.code == .unknownShard && topic != nil {
                continue  // the topic was deleted meanwhile
            }
            if next < start {
                // Retention removed what this session had not read yet (docs/mqtt.md, "Retention").
                if countingSkips {
                    if !skipped { MQTTMetrics.retentionSkips.increment() }
                    skipped = true
                    MQTTMetrics.retentionSkippedOffsets.increment(by: Int64(start - next))
                    logger.warning(
                        "offline session fell below the retention floor: messages removed before it returned",
                        metadata: [
                            "mqtt.client_id": "\(session.clientID)", "mqtt.shard": "\(shard)",
                            "mqtt.skipped_offsets": "\(start - next)",
                        ])
                }
                next = start
            }
            while next < end {
                let result = try await journal.read(shard: shard, from: next, maxBytes: 1 << 20)
                guard !result.batches.isEmpty else { break }
                for batch in result.batches {
                    for record in records(of: batch, in: shard) where record.offset! >= next && record.offset! < end {
                        Self.offer(MQTTMessage(record: record, root: mqttRoot(of: topic)), to: session)
                    }
                    // Bounded memory: no further than the client takes (or until it is gone).
                    await session.waitForRoom()
                    try Task.checkCancellation()
                }
                next = result.nextOffset
            }
        }
    }

    // MARK: Publishing

    func bucket(for topic: String) -> Int {
        // FNV-1a: stable across processes and versions (Swift's hashValue is seeded per process).
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in topic.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(hash % UInt64(configuration.buckets))
    }

    /// Stores a message through its shard's appender (batched with concurrent publishes):
    /// `completion` runs once the journal acknowledged it and, when retained, it is set as (or,
    /// with an empty payload, cleared from) the retained message. A message for a registry topic
    /// that is not followed yet waits for the topic to be created (or found).
    func submit(_ message: MQTTMessage, completion: @escaping MQTTAppender.Completion) {
        enum Target {
            case appender(MQTTAppender)
            case waiting
            case create(String)
            case closed
        }
        let target = streams.withLock { streams -> Target in
            guard streams.running else { return .closed }
            switch shard(for: message.topic, in: streams) {
            case .shard(let shard): return streams.appenders[shard].map { .appender($0) } ?? .closed
            case .topic(let topic):
                streams.creating[topic, default: []].append((message, completion))
                return streams.creating[topic]!.count == 1 ? .create(topic) : .waiting
            }
        }
        switch target {
        case .appender(let appender): appender.submit(message, completion: completion)
        case .waiting: break
        case .create(let topic): workContinuation.yield(.create(topic))
        case .closed: completion(.failure(JournalError(.closed, "the gateway is not running")))
        }
    }

    enum Placement {
        /// The shard the message goes to.
        case shard(String)
        /// A registry topic not followed yet.
        case topic(String)
    }

    /// Where a message of `topic` is stored: its registry topic's partition (Kafka's partitioner
    /// on the MQTT topic), or its bucket.
    private func shard(for topic: String, in streams: Streams) -> Placement {
        guard configuration.sharedTopics, let name = streams.roots.topic(forMQTT: topic) else {
            return .shard(shardName(bucket: bucket(for: topic)))
        }
        guard let followed = streams.topics[name] else { return .topic(name) }
        return .shard(
            TopicRegistry.shardName(
                name, TopicMapping.partition(forKey: Array(topic.utf8), partitions: followed.partitions)))
    }

    /// Finds or creates the registry topic an MQTT topic's first level names, follows it, and
    /// submits the messages that waited for it (in their order); they fail if it cannot be had.
    private func createTopic(_ name: String) async {
        // Topics created elsewhere since the last registry poll are followed first: one with a
        // `strata.mqtt.prefix` may claim these messages, and no first-level topic is made for them.
        if let all = try? await topics.all(), claimedElsewhere(name, all) { return }
        let result: Result<TopicEntry, any Error>
        do {
            if let entry = try await topics.entry(name) {
                result = .success(entry)
            } else {
                let retention = streams.withLock { $0.retention }
                let configs = [
                    "retention.ms": String(retention.milliseconds ?? -1),
                    "retention.bytes": String(retention.bytes ?? -1),
                ]
                do {
                    result = .success(
                        try await topics.create(name, partitions: configuration.topicPartitions, configs: configs))
                } catch let error as TopicError where error.code == .exists {
                    result = try await topics.entry(name).map { .success($0) } ?? .failure(error)
                }
            }
        } catch {
            result = .failure(error)
        }
        // The waiting messages go to their appenders under the lock that new publishes take, so
        // none of those overtakes them.
        let (failed, creations) = streams.withLock {
            streams -> (unplaced: [(MQTTMessage, MQTTAppender.Completion)], creations: [String]) in
            guard case .success(let entry) = result, streams.running else {
                return (streams.creating.removeValue(forKey: name) ?? [], [])
            }
            follow(name, entry, from: { _ in 0 }, in: &streams)
            return placeWaiting(name, in: &streams)
        }
        for topic in creations { workContinuation.yield(.create(topic)) }
        let error: any Error =
            switch result {
            case .failure(let error): error
            case .success: JournalError(.closed, "the gateway is not running")
            }
        if case .failure = result {
            logger.error(
                "mqtt could not create the topic for a publish",
                metadata: ["topic.name": "\(name)", "error": "\(error)"])
        }
        for (_, completion) in failed { completion(.failure(error)) }
    }

    /// Follows the registry topics `all` names that are not followed yet, then places again the
    /// messages waiting for topic `name`; true when none of them waits for it any more.
    private func claimedElsewhere(_ name: String, _ all: [String: TopicEntry]) -> Bool {
        let (done, creations) = streams.withLock { streams -> (Bool, [String]) in
            guard streams.running else { return (false, []) }
            let unknown = all.filter { streams.topics[$0.key] == nil && $0.key != name }
            guard !unknown.isEmpty else { return (false, []) }
            for (other, entry) in unknown { follow(other, entry, from: { _ in 0 }, in: &streams) }
            let (still, creations) = placeWaiting(name, in: &streams)
            if !still.isEmpty { streams.creating[name] = still }
            return (still.isEmpty, creations)
        }
        for topic in creations { workContinuation.yield(.create(topic)) }
        return done
    }

    /// Places the messages waiting for topic `name` again, under the lock new publishes take
    /// (so none of those overtakes them): to their shard's appender, or to another topic being
    /// created. Returns those with no place, and the topics to create for the others.
    private func placeWaiting(
        _ name: String, in streams: inout Streams
    ) -> (unplaced: [(MQTTMessage, MQTTAppender.Completion)], creations: [String]) {
        var unplaced: [(MQTTMessage, MQTTAppender.Completion)] = []
        var creations: [String] = []
        for (message, completion) in streams.creating.removeValue(forKey: name) ?? [] {
            switch shard(for: message.topic, in: streams) {
            case .shard(let shard) where streams.appenders[shard] != nil:
                streams.appenders[shard]!.submit(message, completion: completion)
            case .topic(let topic) where topic != name:
                streams.creating[topic, default: []].append((message, completion))
                if streams.creating[topic]!.count == 1 { creations.append(topic) }
            default:
                unplaced.append((message, completion))
            }
        }
        return (unplaced, creations)
    }

    /// `submit`, awaited.
    func publish(_ message: MQTTMessage) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            submit(message) { continuation.resume(with: $0) }
        }
    }

    /// Retained messages whose topic matches `filter`.
    func retained(matching filter: String) async throws -> [MQTTMessage] {
        let sys = sysRetained.withLock { retained in
            retained.values.filter { MQTTTopic.matches(filter: filter, topic: $0.topic) }.sorted { $0.topic < $1.topic }
        }
        return try await journal.scan(namespace: Self.retainedNamespace).compactMap { pair in
            guard MQTTTopic.matches(filter: filter, topic: String(decoding: pair.key, as: UTF8.self)) else {
                return nil
            }
            return MQTTMessage(retainedValue: pair.value)
        } + sys
    }
}
