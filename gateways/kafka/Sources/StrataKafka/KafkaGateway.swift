import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import StrataAuth
import StrataClient
import StrataJournal
import StrataKit
import StrataTopics
import StrataWire
import Synchronization

/// The Kafka gateway: the Kafka wire protocol on the journal. A topic-partition is the shard
/// `kafka/<topic>/<partition>` and its offsets are the shard's offsets; batches are stored as
/// producers sent them and fetched as stored. Topics are journal KV entries (namespace
/// `kafka.topics`). The gateway holds no durable state of its own.
public final class KafkaGateway: Service {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 9092
        /// The address clients are told to connect to (Metadata); the listener's when nil.
        public var advertisedHost: String?
        public var advertisedPort: Int?
        public var nodeID: Int32 = 1
        public var clusterID = "strata"
        /// Create a topic a client asks metadata for, as Apache Kafka does by default.
        public var autoCreateTopics = true
        public var defaultPartitions: Int32 = 1
        /// Largest request accepted (Kafka's socket.request.max.bytes).
        public var maxRequestSize = 100 << 20
        /// With SASL users: the largest request before a client authenticated (ApiVersions and
        /// the SASL steps are far smaller).
        public var maxRequestSizeBeforeAuthentication = 64 << 10
        /// Requests one connection may have in flight before the gateway stops reading it.
        public var maxInflightPerConnection = 256
        /// The most bytes one Fetch returns, whatever the client asks (Kafka's fetch.max.bytes).
        public var maxFetchBytes = 50 << 20
        /// Idempotent-producer states kept (producer × partition); the least recently used are
        /// dropped beyond it and read back from the data when needed.
        public var maxProducerStates = 100_000
        /// SASL users (PLAIN, SCRAM-SHA-256); when set, every connection must authenticate.
        public var users: SCRAMUsers?
        /// Per-user rules for produce, consume and admin (needs `users`).
        public var acl: KafkaACL?

        public init() {}

        /// Reads the users and ACL files when given; an ACL needs users (it names them).
        public mutating func loadAccessFiles(users: String?, acl: String?) throws {
            self.users = try users.map { try SCRAMUsers(contentsOfFile: $0) }
            self.acl = try acl.map { try KafkaACL(contentsOfFile: $0) }
            if self.acl != nil && self.users == nil {
                throw ConfigFileError("a Kafka ACL file needs a users file (SASL): ACL rules name authenticated users")
            }
        }
    }

    let configuration: Configuration
    let journal: any JournalClient
    let logger: Logger
    let group: any EventLoopGroup
    private let onBound: @Sendable (SocketAddress) -> Void
    /// Topics read from the journal, by name, with when they were read: replaced whenever the
    /// registry changes (`TopicRegistry.watch`, 100 ms), and an entry older than
    /// `topicCacheMilliseconds` is read again (in case the watch cannot read the journal).
    private let topics = Mutex<[String: (topic: TopicEntry, readAt: Int64)]>([:])
    static let topicCacheMilliseconds: Int64 = 5_000
    /// Per shard, the last append submitted: appends to one partition are chained in the order
    /// their requests arrived.
    private let appends = KeyedChain<PendingAppend>()
    /// Per group, offset commits in the order they arrived (a consumer's async commits must not
    /// overtake each other).
    let commits = KeyedChain<KafkaWriter>()
    /// The topics (changes of one topic's entry are ordered there).
    let registry: TopicRegistry
    /// Idempotent producers' sequences.
    let producers: KafkaProducers
    /// Consumer groups.
    let groups: KafkaGroupCoordinator
    /// Each connection's request-size gate (with SASL users), raised once it authenticated.
    let gates = FrameSizeGates()

    /// The gateway processes serving this journal, once `run` joined them (group coordinators).
    let members = Mutex<GatewayMembers?>(nil)

    /// The advertised address (set once the listener is bound).
    let advertised = Mutex<(host: String, port: Int32)>(("127.0.0.1", 9092))

    public init(
        configuration: Configuration, journal: any JournalClient,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.journal = journal
        registry = TopicRegistry(journal: journal, logger: logger)
        self.logger = logger
        self.group = eventLoopGroup
        self.onBound = onBound
        groups = KafkaGroupCoordinator(journal: journal, logger: logger)
        producers = KafkaProducers(maxEntries: configuration.maxProducerStates)
    }

    public func run() async throws {
        let maxRequestSize = configuration.maxRequestSize
        let gated = configuration.users != nil
        let preAuthentication = configuration.maxRequestSizeBeforeAuthentication
        let server = try await Listener.bind(
            ListenerOptions(host: configuration.host, port: configuration.port), group: group
        ) { channel in
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(
                    KafkaFrameDecoder(
                        maxFrameSize: maxRequestSize,
                        gate: gated ? self.gates.attach(to: channel, limit: preAuthentication) : nil)))
        }
        let bound = server.localAddress
        advertised.withLock {
            $0 = (
                configuration.advertisedHost ?? configuration.host,
                Int32(configuration.advertisedPort ?? bound?.port ?? configuration.port)
            )
        }
        let (host, port) = advertised.withLock { $0 }
        let membership = GatewayMembers(
            protocol: "kafka", id: configuration.nodeID, host: host, port: port, journal: journal, logger: logger)
        try await membership.join()
        members.withLock { $0 = membership }
        if let bound { onBound(bound) }
        logger.info("kafka listening", metadata: ["kafka.listen": "\(bound.map { "\($0)" } ?? "?")"])
        // Group sessions and rebalance timeouts are checked on a timer, and groups another
        // gateway owns now are let go.
        let expiry = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) {
            [groups] _ in
            groups.release { membership.owns($0) }
            groups.expire()
        }
        defer { expiry.cancel() }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                // Changes made through other processes (another gateway, `strata topic`, the
                // MQTT gateway creating a topic) replace the cache within a tick.
                group.addTask { await membership.run() }
                group.addTask {
                    await self.registry.watch { found, readSince in
                        self.topics.withLock { cache in
                            // Entries this gateway cached after the read began are newer than it.
                            cache = cache.filter { $0.value.readAt >= readSince }
                                .merging(found.mapValues { ($0, readSince) }) { cached, _ in cached }
                        }
                    }
                }
                try await server.accept(
                    as: NIOAsyncChannel<ByteBuffer, ByteBuffer>.self, spawn: { group.addTask(operation: $0) }
                ) {
                    await KafkaConnection(gateway: self, channel: $0).run()
                }
                await membership.leave()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            server.close()
        }
    }

    // MARK: Gateways

    /// The gateway that coordinates a group (this one until `run` joined the others).
    func coordinator(of groupID: String) -> GatewayMembers.Member {
        if let members = members.withLock({ $0 }) { return members.owner(of: groupID) }
        let (host, port) = advertised.withLock { $0 }
        return GatewayMembers.Member(
            id: configuration.nodeID, host: host, port: port, instance: "", joined: 0, heartbeat: 0)
    }

    func coordinates(_ groupID: String) -> Bool { coordinator(of: groupID).id == configuration.nodeID }

    /// The broker Metadata names as a partition's leader: its owner among the live gateways.
    func partitionLeader(_ topic: String, _ partition: Int32) -> Int32 {
        members.withLock { $0 }?.owner(of: "\(topic)/\(partition)").id ?? configuration.nodeID
    }

    /// The brokers Metadata lists: every live gateway of this journal, this one included.
    func brokers() -> [GatewayMembers.Member] {
        members.withLock { $0 }?.live ?? [coordinator(of: "")]
    }

    // MARK: Topics

    static func shardName(_ topic: String, _ partition: Int32) -> String { TopicRegistry.shardName(topic, partition) }

    /// A topic by name: from the cache (unless `fresh`), else from the registry.
    func topic(_ name: String, fresh: Bool = false) async throws -> TopicEntry? {
        let now = WallClock.milliseconds()
        if !fresh, let known = topics.withLock({ $0[name] }), now - known.readAt < Self.topicCacheMilliseconds {
            return known.topic
        }
        guard let topic = try await registry.entry(name) else {
            forget(name)
            return nil
        }
        topics.withLock { $0[name] = (topic, now) }
        return topic
    }

    /// Every topic, read from the registry (the cache is refreshed with them).
    func allTopics() async throws -> [String: TopicEntry] {
        let found = try await registry.all()
        let now = WallClock.milliseconds()
        topics.withLock { $0 = found.mapValues { ($0, now) } }
        return found
    }

    /// Caches an entry the registry just stored.
    func remember(_ topic: TopicEntry, as name: String) {
        topics.withLock { $0[name] = (topic, WallClock.milliseconds()) }
    }

    func forget(_ name: String) {
        _ = topics.withLock { $0.removeValue(forKey: name) }
    }

    func createTopic(_ name: String, partitions: Int32, configs: [String: String]) async throws -> TopicEntry {
        let topic = try await registry.create(name, partitions: partitions, configs: configs)
        remember(topic, as: name)
        return topic
    }

    func deleteTopic(_ name: String) async throws {
        let topic = try await registry.delete(name)
        forget(name)
        for partition in 0..<topic.partitions { producers.forget(shard: Self.shardName(name, partition)) }
    }

    /// A topic for a request that names it: created when auto-creation is on and allowed.
    func topicForClient(_ name: String, autoCreate: Bool) async throws -> TopicEntry? {
        if let topic = try await topic(name) { return topic }
        guard autoCreate, configuration.autoCreateTopics, TopicEntry.isValidName(name) else { return nil }
        do {
            return try await createTopic(name, partitions: configuration.defaultPartitions, configs: [:])
        } catch let failure as KafkaFailure where failure.code == .topicAlreadyExists {
            return try await topic(name)
        }
    }

    /// Journal refusals after which the batch is certainly not stored.
    static func definitelyNotStored(_ error: JournalError) -> Bool {
        [.unknownShard, .invalidBatch, .batchTooLarge, .diskFull, .invalidArgument].contains(error.code)
    }

    // MARK: Access

    /// Whether the request's user may do `operation` on `topic` (always, without an ACL).
    func permits(_ header: KafkaRequestHeader, _ operation: KafkaACL.Operation, topic: String) -> Bool {
        guard let acl = configuration.acl else { return true }
        guard let user = header.user else { return false }
        return acl.allows(user, operation, topic: topic)
    }

    /// Whether the request's user may see `topic` at all.
    func canSee(_ header: KafkaRequestHeader, topic: String) -> Bool {
        guard let acl = configuration.acl else { return true }
        guard let user = header.user else { return false }
        return acl.canSee(user, topic: topic)
    }

    // MARK: Appends

    /// Submits a batch for a partition. Appends to one partition are stored in submission
    /// order: each is queued in the journal after the previous one was queued, so many are in
    /// flight at once (and share the journal's group commits). An idempotent producer's batch
    /// waits for the previous append's outcome instead, and what follows it waits for its
    /// outcome, so that sequence checks see every batch before them.
    func queueAppend(shard: String, batch: ByteBuffer) -> Task<PendingAppend, any Error> {
        let (journal, producers) = (self.journal, self.producers)
        return appends.submit(shard) { previous in
            try await Self.queue(batch, shard: shard, after: previous, journal: journal, producers: producers)
        }
    }

    /// `queueAppend`, awaited to its stored offsets (tests).
    func submitAppend(shard: String, batch: ByteBuffer) -> Task<AppendResult, any Error> {
        let queued = queueAppend(shard: shard, batch: batch)
        return Task { try await queued.value.result }
    }

    private static func queue(
        _ batch: ByteBuffer, shard: String, after previous: Task<PendingAppend, any Error>?, journal: any JournalClient,
        producers: KafkaProducers
    ) async throws -> PendingAppend {
        guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex), header.producerID >= 0 else {
            _ = try? await previous?.value
            return try await journal.queueAppend(shard: shard, batch: batch)
        }
        if let earlier = try? await previous?.value { _ = try? await earlier.result }  // a plain batch's outcome
        let settled = PendingAppend()
        if case .duplicate(let original) = try await producers.check(header, shard: shard, journal: journal) {
            settled.complete(.success(original))  // a retry of a stored batch: not written again
            return settled
        }
        // The step ends only once the append settled and the producer state has it, so that
        // whatever is queued after it (idempotent or not) comes after that state.
        let pending = try await journal.queueAppend(shard: shard, batch: batch)
        do {
            let result = try await pending.result
            producers.appended(header, shard: shard, result: result)
            settled.complete(.success(result))
        } catch {
            if !((error as? JournalError).map(definitelyNotStored) ?? false) {
                // It may have been stored (the journal went away before answering): the
                // partition's producer state is read back from the data before the retry.
                producers.forget(shard: shard)
            }
            settled.complete(.failure(error))
        }
        return settled
    }
}

/// A Kafka error code with a message for the log and, where the response has room, the client.
struct KafkaFailure: Error, Sendable, Equatable, CustomStringConvertible {
    var code: KafkaError
    var message: String
    init(_ code: KafkaError, _ message: String) {
        self.code = code
        self.message = message
    }
    var description: String { "\(code) (\(code.rawValue)): \(message)" }

    /// The Kafka error for a journal or other failure.
    static func from(_ error: any Error) -> KafkaFailure {
        if let failure = error as? KafkaFailure { return failure }
        if let refusal = error as? TopicError {
            let code: KafkaError =
                switch refusal.code {
                case .invalidName: .invalidTopic
                case .invalidPartitions: .invalidPartitions
                case .invalidConfig: .invalidConfig
                case .exists: .topicAlreadyExists
                case .unknown: .unknownTopicOrPartition
                default: .unknownServerError
                }
            return KafkaFailure(code, refusal.message)
        }
        guard let journalError = error as? JournalError else { return KafkaFailure(.unknownServerError, "\(error)") }
        let code: KafkaError =
            switch journalError.code {
            case .unknownShard: .unknownTopicOrPartition
            case .invalidBatch: .corruptMessage
            case .batchTooLarge: .messageTooLarge
            case .offsetOutOfRange: .offsetOutOfRange
            case .diskFull, .ioError, .corruptData: .kafkaStorageError
            case .timeout: .requestTimedOut
            case .closed, .unavailable: .leaderNotAvailable
            case .invalidArgument: .invalidRequest
            case .permissionDenied: .topicAuthorizationFailed
            default: .unknownServerError
            }
        return KafkaFailure(code, journalError.message)
    }
}
