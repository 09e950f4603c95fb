import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import StrataJournal
import StrataKit
import StrataWire
import Synchronization

/// Serves the journal protocol over TCP. On graceful shutdown it stops accepting, closes the
/// connections (appends already queued still become durable: the journal drains its queue
/// when it closes after this service).
public final class JournalServer: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var maxFrameBytes = JournalFrame.defaultMaxFrameBytes
        /// Requests one connection may have in flight before the node stops reading from it.
        public var maxInflightPerConnection = 1024
        /// Bytes one connection's requests and unwritten answers may hold (a read reserves the
        /// most its answer may carry)…
        public var maxQueuedBytesPerConnection = 64 << 20
        /// …and all connections together.
        public var maxQueuedBytes = 512 << 20
        /// Users, certificate principals and their grants; nil: every client may do everything
        /// (refused by the node beyond loopback unless the operator says --insecure).
        public var access: JournalAccess?
        /// TLS for the listener (with client certificates verified when it has trust roots).
        public var tls: NIOSSLContext?
        public var nodeName = "strata"
        /// With access control: the largest frame a client may send before it authenticated,
        /// and how long it has to authenticate before the connection is closed.
        public var maxFrameBytesBeforeAuthentication = 64 << 10
        public var authenticationTimeout: Duration = .seconds(10)

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    let configuration: Configuration
    let journal: Journal
    let metrics: NodeMetrics
    let logger: Logger
    let group: any EventLoopGroup
    private let onBound: @Sendable (SocketAddress) -> Void
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    /// Each connection's frame gate (with access control).
    private let gates = FrameSizeGates()
    let started = ContinuousClock.now
    /// What all connections' requests and unwritten answers may hold together.
    let queuedBytes: ByteBudget

    public init(
        configuration: Configuration, journal: Journal, metrics: NodeMetrics,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.configuration = configuration
        queuedBytes = ByteBudget(limit: configuration.maxQueuedBytes)
        self.journal = journal
        self.metrics = metrics
        self.group = eventLoopGroup
        self.logger = logger
        self.onBound = onBound
    }

    var connectionCount: Int { connections.withLock { $0.count } }

    public func run() async throws {
        let maxFrameBytes = configuration.maxFrameBytes
        let tls = configuration.tls
        let gated = configuration.access != nil
        let preAuthentication = configuration.maxFrameBytesBeforeAuthentication
        let server = try await Listener.bind(
            ListenerOptions(host: configuration.host, port: configuration.port, tls: tls, backlog: 256), group: group
        ) { channel in
            let gate = gated ? self.gates.attach(to: channel, limit: preAuthentication) : nil
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(JournalFrameDecoder(maxFrameBytes: maxFrameBytes, gate: gate)))
            try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(JournalFrameEncoder()))
        }
        if let address = server.localAddress { onBound(address) }
        logger.info(
            "journal protocol listening",
            metadata: ["node.listen": "\(server.localAddress.map { "\($0)" } ?? "?")"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.accept(
                    as: NIOAsyncChannel<JournalFrame, JournalFrame>.self, spawn: { group.addTask(operation: $0) }
                ) {
                    await self.serve($0)
                }
            }
        } onGracefulShutdown: {
            server.close()
            let open = self.connections.withLock { Array($0.values) }
            for channel in open { channel.close(promise: nil) }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<JournalFrame, JournalFrame>) async {
        let channel = connection.channel
        let key = ObjectIdentifier(channel)
        connections.withLock { $0[key] = channel }
        metrics.connections.increment()
        defer {
            connections.withLock { $0[key] = nil }
            metrics.connections.decrement()
        }
        let peer = channel.remoteAddress.map { "\($0)" } ?? "?"
        var logger = self.logger
        logger[metadataKey: "journal.peer"] = "\(peer)"
        do {
            try await connection.executeThenClose { inbound, outbound in
                let gate = gates.gate(of: channel)
                let session = JournalConnection(server: self, channel: channel, gate: gate, logger: logger)
                try await session.run(inbound: inbound, outbound: outbound)
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    func status() -> NodeStatus {
        NodeStatus(
            node: configuration.nodeName, version: StrataVersion.current,
            uptimeSeconds: (ContinuousClock.now - started).seconds,
            shards: journal.listShards().count, connections: connectionCount, statistics: journal.statistics,
            health: journal.health)
    }
}
