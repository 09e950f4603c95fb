import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import StrataAuth
import StrataJournal
import StrataWire
import Synchronization

/// The journal on a `journal-node` reached over TCP: one connection, pipelined requests
/// answered in any order, reconnect with backoff, a deadline on every request.
public final class RemoteJournalClient: JournalClient {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Deadline of a request (a read's `maxWait` is added to it).
        public var requestTimeout: Duration = .seconds(30)
        /// How long a request keeps trying to (re)connect before it fails with `unavailable`.
        public var connectTimeout: Duration = .seconds(10)
        public var maxFrameBytes = JournalFrame.defaultMaxFrameBytes
        public var clientName = "strata-swift"
        /// Records frames a subscription lets the node send ahead of the consumer.
        public var subscriptionCredits: UInt32 = 8
        /// SCRAM-SHA-256 credentials for a node that requires authentication.
        public var user: String?
        public var password: String?
        /// TLS: the CA (PEM) that signed the node's certificate (TLS is on when this is set),
        /// and a client certificate and key (PEM) for a node that verifies clients.
        public var tlsCAFile: String?
        public var tlsCertificateFile: String?
        public var tlsKeyFile: String?

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// A configuration with `applyEnvironment()` applied: how the gateways and storage-bench
        /// get their journal credentials and TLS files.
        public static func fromEnvironment(host: String, port: Int) -> Configuration {
            var configuration = Configuration(host: host, port: port)
            configuration.applyEnvironment()
            return configuration
        }

        /// Takes credentials and TLS files from `STRATA_USER`, `STRATA_PASSWORD`, `STRATA_TLS_CA`,
        /// `STRATA_TLS_CERT` and `STRATA_TLS_KEY` where they are set (flags given later win).
        public mutating func applyEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) {
            user = environment["STRATA_USER"] ?? user
            password = environment["STRATA_PASSWORD"] ?? password
            tlsCAFile = environment["STRATA_TLS_CA"] ?? tlsCAFile
            tlsCertificateFile = environment["STRATA_TLS_CERT"] ?? tlsCertificateFile
            tlsKeyFile = environment["STRATA_TLS_KEY"] ?? tlsKeyFile
        }

        /// The TLS context these settings describe (nil without a CA file).
        func tlsContext() throws(JournalError) -> NIOSSLContext? {
            guard let tlsCAFile else {
                if tlsCertificateFile != nil {
                    throw JournalError(.invalidArgument, "a client certificate needs the node's CA too (STRATA_TLS_CA)")
                }
                return nil
            }
            do {
                return try TLSFiles.clientContext(ca: tlsCAFile, certificate: tlsCertificateFile, key: tlsKeyFile)
            } catch {
                throw JournalError(.invalidArgument, "journal \(error)")
            }
        }
    }

    public let configuration: Configuration
    private let connections: ConnectionManager

    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "strata.client")
    ) {
        self.configuration = configuration
        connections = ConnectionManager(configuration: configuration, group: eventLoopGroup, logger: logger)
    }

    /// Closes the connection; later calls fail with `closed`.
    public func close() async {
        await connections.close()
    }

    // MARK: Requests

    /// Sends `request` and returns the payload of its `ok` answer (or throws its error).
    func call(_ request: JournalRequest, extraTime: Duration = .zero) async throws -> ByteBuffer {
        try await versionedCall(request, extraTime: extraTime).payload
    }

    /// `call`, with the protocol version of the connection that answered.
    func versionedCall(_ request: JournalRequest, extraTime: Duration = .zero) async throws -> (
        payload: ByteBuffer, version: UInt16
    ) {
        let channel = try await connections.channel()
        let version = await connections.protocolVersion
        guard version >= request.minimumVersion else {
            throw JournalError(
                .unsupported,
                "journal-node at \(configuration.host):\(configuration.port) speaks protocol \(version); \(request.type) needs \(request.minimumVersion): upgrade it"
            )
        }
        return (try await Self.call(request, on: channel, timeout: configuration.requestTimeout + extraTime), version)
    }

    /// A request that could not be written (the connection went away under it) is
    /// `unavailable`, like one whose connection closed before the answer: callers retry.
    static func sendFailure(_ error: any Error) -> any Error {
        error is JournalError ? error : JournalError(.unavailable, "journal connection lost: \(error)")
    }

    static func call(_ request: JournalRequest, on channel: any Channel, timeout: Duration) async throws -> ByteBuffer {
        try await send(request, on: channel, timeout: timeout).get()
    }

    /// Writes `request`; the future holds the answer's payload, or the error answer or send
    /// failure as an error.
    static func send(_ request: JournalRequest, on channel: any Channel, timeout: Duration) -> EventLoopFuture<
        ByteBuffer
    > {
        let promise = channel.eventLoop.makePromise(of: JournalFrame.self)
        channel.writeAndFlush(ClientOutbound.call(request, promise, timeout: .nanoseconds(timeout.nanoseconds)))
            .whenFailure { promise.fail(Self.sendFailure($0)) }
        return promise.futureResult.flatMapThrowing { frame in
            if frame.type == .error { throw JournalResponse.decodeError(frame) }
            return frame.payload
        }
    }

    public func createShard(_ name: String, config: ShardConfig) async throws -> ShardInfo {
        var (payload, version) = try await versionedCall(.createShard(name: name, config: config))
        return try payload.readShardInfo(version: version)
    }

    public func alterShard(_ name: String, config: ShardConfig) async throws -> ShardInfo {
        var (payload, version) = try await versionedCall(.alterShard(name: name, config: config))
        return try payload.readShardInfo(version: version)
    }

    public func deleteShard(_ name: String) async throws {
        _ = try await call(.deleteShard(name: name))
    }

    public func describeShard(_ name: String) async throws -> ShardInfo {
        var (payload, version) = try await versionedCall(.describeShard(name: name))
        return try payload.readShardInfo(version: version)
    }

    public func listShards() async throws -> [ShardInfo] {
        var (payload, version) = try await versionedCall(.listShards)
        let count: UInt32 = try payload.readWireInteger()
        return try (0..<count).map { _ throws(JournalError) in try payload.readShardInfo(version: version) }
    }

    public func append(shard: String, batch: ByteBuffer) async throws -> AppendResult {
        var payload = try await call(.append(shard: shard, batch: batch))
        return try payload.readAppendResult()
    }

    /// The request is handed to the channel before this returns, and the node queues a
    /// connection's appends in arrival order: queued order is stored order.
    public func queueAppend(shard: String, batch: ByteBuffer) async throws -> PendingAppend {
        let channel = try await connections.channel()
        let pending = PendingAppend()
        Self.send(.append(shard: shard, batch: batch), on: channel, timeout: configuration.requestTimeout)
            .whenComplete { outcome in
                pending.complete(
                    outcome.flatMap { payload in
                        var payload = payload
                        return Result { try payload.readAppendResult() }
                    })
            }
        return pending
    }

    public func read(shard: String, from offset: UInt64, maxBytes: Int, maxWait: Duration) async throws -> ReadResult {
        let wait = UInt32(clamping: maxWait.nanoseconds / 1_000_000)
        var payload = try await call(
            .read(shard: shard, offset: offset, maxBytes: UInt32(clamping: maxBytes), maxWaitMilliseconds: wait),
            extraTime: maxWait)
        return try payload.readReadResult()
    }

    public func offset(shard: String, atOrAfter timestamp: Int64) async throws -> UInt64? {
        var payload = try await call(.offsetForTimestamp(shard: shard, timestamp: timestamp))
        return try payload.readOptionalOffset()
    }

    public func subscribe(shard: String, from offset: UInt64, maxBytes: Int) async throws -> RecordSubscription {
        let channel = try await connections.channel()
        let (stream, continuation) = AsyncThrowingStream<ReadResult, any Error>.makeStream()
        let subscriptionID = channel.eventLoop.makePromise(of: UInt32.self)
        let credits = configuration.subscriptionCredits
        let request = JournalRequest.subscribe(
            shard: shard, offset: offset, maxBytes: UInt32(clamping: maxBytes), credits: credits)
        try await channel.writeAndFlush(ClientOutbound.subscribe(request, continuation, subscriptionID))
        let id = try await subscriptionID.futureResult.get()
        continuation.onTermination = { _ in
            channel.writeAndFlush(ClientOutbound.forget(id), promise: nil)
            channel.writeAndFlush(ClientOutbound.send(.unsubscribe(subscription: id)), promise: nil)
        }
        // Credits go back in halves as the consumer takes reads.
        let consumed = Mutex<UInt32>(0)
        let grant = max(1, credits / 2)
        return RecordSubscription(
            source: .remote(
                stream,
                consumed: {
                    let send = consumed.withLock { count -> Bool in
                        count += 1
                        guard count >= grant else { return false }
                        count = 0
                        return true
                    }
                    if send {
                        channel.writeAndFlush(
                            ClientOutbound.send(.credit(subscription: id, credits: grant)), promise: nil)
                    }
                }))
    }

    public func commitOffset(group: String, shard: String, offset: UInt64) async throws {
        _ = try await call(.commitOffset(group: group, shard: shard, offset: offset))
    }

    public func committedOffset(group: String, shard: String) async throws -> UInt64? {
        var payload = try await call(.fetchOffset(group: group, shard: shard))
        return try payload.readOptionalOffset()
    }

    public func declareQueue(_ name: String, definition: QueueDefinition) async throws -> QueueStatus {
        var payload = try await call(.queueDeclare(name: name, definition: definition))
        return try Self.json(QueueStatus.self, &payload)
    }

    public func deleteQueue(_ name: String) async throws {
        _ = try await call(.queueDelete(name: name))
    }

    public func describeQueues(_ name: String?) async throws -> [QueueStatus] {
        var payload = try await call(.queueDescribe(name: name ?? ""))
        return try Self.json([QueueStatus].self, &payload)
    }

    public func receive(
        queue: String, consumer: String, max: Int, maxBytes: Int, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, priority: Int32, wait: Duration
    ) async throws -> [QueueDelivery] {
        let request = JournalRequest.queueReceive(
            name: queue, consumer: consumer, max: UInt32(clamping: max), maxBytes: UInt32(clamping: maxBytes),
            visibilityMilliseconds: visibilityMilliseconds, options: options, priority: priority,
            waitMilliseconds: UInt32(clamping: wait.nanoseconds / 1_000_000))
        var payload = try await call(request, extraTime: wait)
        return try payload.readQueueDeliveries()
    }

    public func settle(queue: String, consumer: String, receipts: [QueueReceipt], as settlement: QueueSettlement)
        async throws -> Int
    {
        var payload = try await call(
            .queueSettle(name: queue, consumer: consumer, settlement: settlement, receipts: receipts))
        return Int(try payload.readWireInteger(as: UInt32.self))
    }

    public func releaseConsumer(queue: String, consumer: String, keepingLeases: Bool) async throws -> Int {
        var payload = try await call(.queueRelease(name: queue, consumer: consumer, keepLeases: keepingLeases))
        return Int(try payload.readWireInteger(as: UInt32.self))
    }

    private static func json<T: Decodable>(_ type: T.Type, _ payload: inout ByteBuffer) throws -> T {
        let bytes = try payload.readWireBytes()
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw JournalError(.protocolError, "the node's \(type) answer does not parse: \(error)")
        }
    }

    public func get(namespace: String, key: [UInt8]) async throws -> [UInt8]? {
        var payload = try await call(.kvGet(namespace: namespace, key: key))
        let present: UInt8 = try payload.readWireInteger()
        let value = try payload.readWireBytes()
        return present == 0 ? nil : value
    }

    public func put(namespace: String, key: [UInt8], value: [UInt8]) async throws {
        _ = try await call(.kvPut(namespace: namespace, key: key, value: value))
    }

    public func delete(namespace: String, key: [UInt8]) async throws {
        _ = try await call(.kvDelete(namespace: namespace, key: key))
    }

    public func scan(namespace: String, prefix: [UInt8], limit: Int) async throws -> [KeyValue] {
        var payload = try await call(.kvScan(namespace: namespace, prefix: prefix, limit: UInt32(clamping: limit)))
        let count: UInt32 = try payload.readWireInteger()
        return try (0..<count).map { _ throws(JournalError) in
            KeyValue(key: try payload.readWireBytes(), value: try payload.readWireBytes())
        }
    }

    public func status() async throws -> NodeStatus {
        var payload = try await call(.status)
        return try payload.readNodeStatus()
    }
}

/// Owns the connection: connects on first use (one attempt at a time, shared by every caller),
/// says hello, and reconnects with exponential backoff after the connection is lost.
actor ConnectionManager {
    private enum State {
        case idle
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
        case closed
    }

    private let configuration: RemoteJournalClient.Configuration
    private let group: any EventLoopGroup
    private let logger: Logger
    private var state = State.idle
    private var backoff: Duration = .zero
    /// The protocol version the node chose for the current connection (0 before the first).
    private(set) var protocolVersion: UInt16 = 0

    init(configuration: RemoteJournalClient.Configuration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    private var peer: String { "\(configuration.host):\(configuration.port)" }

    func channel() async throws -> any Channel {
        let deadline = ContinuousClock.now + configuration.connectTimeout
        var lastError: (any Error)?
        while true {
            switch state {
            case .closed:
                throw JournalError(.closed, "the client is closed")
            case .connected(let channel) where channel.isActive:
                return channel
            case .connecting(let future):
                do { return try await future.get() } catch { lastError = error }
            case .connected, .idle:
                let promise = group.next().makePromise(of: (any Channel).self)
                state = .connecting(promise.futureResult)
                do {
                    if backoff > .zero { try await Task.sleep(for: backoff) }
                    let channel = try await connect()
                    if case .closed = state {
                        try? await channel.close()
                        promise.fail(JournalError(.closed, "the client is closed"))
                        throw JournalError(.closed, "the client is closed")
                    }
                    state = .connected(channel)
                    backoff = .zero
                    promise.succeed(channel)
                    return channel
                } catch {
                    if case .connecting = state { state = .idle }
                    promise.fail(error)
                    lastError = error
                    backoff = backoff == .zero ? .milliseconds(50) : min(backoff * 2, .seconds(2))
                    logger.debug("connect failed", metadata: ["journal.peer": "\(peer)", "error": "\(error)"])
                }
            }
            if let error = lastError as? JournalError,
                [.closed, .unsupported, .unauthenticated, .invalidArgument].contains(error.code)
            {
                throw error
            }
            if ContinuousClock.now + backoff >= deadline {
                throw JournalError(
                    .unavailable, "cannot reach journal-node at \(peer): \(lastError.map { "\($0)" } ?? "timed out")")
            }
        }
    }

    private func connect() async throws -> any Channel {
        let maxFrameBytes = configuration.maxFrameBytes
        let peer = self.peer
        let logger = self.logger
        let tls = try configuration.tlsContext()
        let host = configuration.host
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : host))
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(JournalFrameDecoder(maxFrameBytes: maxFrameBytes)),
                        MessageToByteHandler(JournalFrameEncoder()),
                        ClientHandler(peer: peer, logger: logger),
                    ])
                }
            }
            .connect(host: configuration.host, port: configuration.port).get()
        do {
            var payload = try await RemoteJournalClient.call(
                .hello(
                    minVersion: StrataVersion.protocolVersions.lowerBound,
                    maxVersion: StrataVersion.protocolVersions.upperBound, client: configuration.clientName),
                on: channel, timeout: configuration.requestTimeout)
            let version: UInt16 = try payload.readWireInteger()
            guard StrataVersion.protocolVersions.contains(version) else {
                throw JournalError(.unsupported, "journal-node chose protocol version \(version)")
            }
            protocolVersion = version
            _ = try payload.readWireInteger(as: UInt32.self)
            _ = try payload.readWireString()
            let flag: UInt8 = version >= 3 ? try payload.readWireInteger() : 0
            let mustAuthenticate = flag == 1
            // Only a node that asks for it gets a SCRAM exchange (one without users, or that took
            // this client's certificate, does not).
            if mustAuthenticate, let user = configuration.user {
                try await authenticate(user: user, password: configuration.password ?? "", on: channel)
            } else if mustAuthenticate {
                throw JournalError(
                    .unauthenticated,
                    "journal-node at \(peer) requires authentication: give a user and password (STRATA_USER, "
                        + "STRATA_PASSWORD) or a client certificate")
            }
            return channel
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// SCRAM-SHA-256 over `authenticate` requests; the node's final message is verified too.
    private func authenticate(user: String, password: String, on channel: any Channel) async throws {
        var scram = SCRAMClient(user: user, password: password)
        let timeout = configuration.requestTimeout
        var first = try await RemoteJournalClient.call(
            .authenticate(mechanism: "SCRAM-SHA-256", message: scram.firstMessage()), on: channel, timeout: timeout)
        _ = try first.readWireInteger(as: UInt8.self)
        let serverFirst = try first.readWireBytes()
        let final: [UInt8]
        do { final = try scram.finalMessage(serverFirst: serverFirst) } catch {
            throw JournalError(.unauthenticated, "SCRAM with \(peer): \(error)")
        }
        var last = try await RemoteJournalClient.call(
            .authenticate(mechanism: "SCRAM-SHA-256", message: final), on: channel, timeout: timeout)
        let done = try last.readWireInteger(as: UInt8.self)
        do { try scram.verify(serverFinal: try last.readWireBytes()) } catch {
            throw JournalError(.unauthenticated, "SCRAM with \(peer): \(error)")
        }
        guard done == 1 else {
            throw JournalError(.unauthenticated, "journal-node at \(peer) did not finish authentication")
        }
    }

    func close() async {
        let current = state
        state = .closed
        if case .connected(let channel) = current { try? await channel.close() }
    }
}
