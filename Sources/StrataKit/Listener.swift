import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import StrataWire

/// Where and how a listener listens.
public struct ListenerOptions: Sendable {
    public var host: String
    public var port: Int
    /// TLS on every connection when set (a context that asks for client certificates gets them).
    public var tls: NIOSSLContext?
    public var backlog: Int32
    /// Each connection's read buffers; nil: NIO's default. Protocols with many idle clients
    /// start them small.
    public var receiveBuffers: AdaptiveRecvByteBufferAllocator?

    public init(
        host: String, port: Int, tls: NIOSSLContext? = nil, backlog: Int32 = 1024,
        receiveBuffers: AdaptiveRecvByteBufferAllocator? = nil
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.backlog = backlog
        self.receiveBuffers = receiveBuffers
    }

    /// The server bootstrap every listener starts from: backlog, address reuse, no Nagle, the
    /// read buffers.
    func bootstrap(group: any EventLoopGroup) -> ServerBootstrap {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        guard let receiveBuffers else { return bootstrap }
        return bootstrap.childChannelOption(.recvAllocator, value: receiveBuffers)
    }
}

/// The one TCP listener of every Strata protocol (journal, MQTT, Kafka, and the protocols to
/// come): TLS when configured, then the protocol's handlers; connections accepted with reading
/// off and wrapped in the task that serves them (`AcceptedConnection`); graceful shutdown by
/// `close`, after which `accept` returns and the connections still open are the caller's.
public struct Listener: Sendable {
    private let server: NIOAsyncChannel<any Channel, Never>

    public var localAddress: SocketAddress? { server.channel.localAddress }

    /// Binds; `pipeline` adds the protocol's handlers to each accepted channel (after TLS).
    public static func bind(
        _ options: ListenerOptions, group: any EventLoopGroup,
        pipeline: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> Listener {
        let tls = options.tls
        let bootstrap = options.bootstrap(group: group)
            .childChannelOption(.autoRead, value: false)  // until AcceptedConnection.serve
        let server = try await bootstrap.bind(host: options.host, port: options.port) { channel in
            channel.eventLoop.makeCompletedFuture { () -> any Channel in
                if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                try pipeline(channel)
                return channel
            }
        }
        return Listener(server: server)
    }

    /// Accepts connections until the listener closes. Each is handed to `spawn` as a task (for
    /// the caller's task group) that wraps it as `type` and runs `connection` for its life.
    public func accept<Inbound: Sendable, Outbound: Sendable>(
        as type: NIOAsyncChannel<Inbound, Outbound>.Type, spawn: (@escaping @Sendable () async -> Void) -> Void,
        connection: @escaping @Sendable (NIOAsyncChannel<Inbound, Outbound>) async -> Void
    ) async throws {
        try await server.executeThenClose { inbound in
            for try await accepted in inbound {
                spawn { await AcceptedConnection.serve(accepted, as: type, connection) }
            }
        }
    }

    /// Stops accepting: `accept` returns once the listener closed.
    public func close() {
        server.channel.close(promise: nil)
    }
}

/// A byte-stream protocol over WebSocket (MQTT 6, and the others that have a WebSocket form):
/// an HTTP/1.1 upgrade offering `subprotocol`, after which binary frames carry the protocol's
/// bytes through the same handlers as its TCP listener. A request that is not such an upgrade
/// is closed: nothing else is served there.
public struct WebSocketListener<Inbound: Sendable, Outbound: Sendable>: Sendable {
    enum Upgrade: Sendable {
        case upgraded(NIOAsyncChannel<Inbound, Outbound>)
        case refused
    }

    private let server: NIOAsyncChannel<EventLoopFuture<Upgrade>, Never>

    public var localAddress: SocketAddress? { server.channel.localAddress }

    /// Binds; `pipeline` adds the protocol's handlers after the frame bridge. Frames larger
    /// than `maxFrameSize` are refused by the WebSocket decoder.
    public static func bind(
        _ options: ListenerOptions, group: any EventLoopGroup, subprotocol: String, maxFrameSize: Int,
        pipeline: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> WebSocketListener {
        let tls = options.tls
        let server = try await options.bootstrap(group: group).bind(host: options.host, port: options.port) { channel in
            channel.eventLoop.makeCompletedFuture {
                if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                    maxFrameSize: maxFrameSize,
                    shouldUpgrade: { channel, head in
                        // The client offers the subprotocol; the server echoes it.
                        let offered = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init)
                        guard offered.contains(subprotocol) else { return channel.eventLoop.makeSucceededFuture(nil) }
                        var headers = HTTPHeaders()
                        headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
                        return channel.eventLoop.makeSucceededFuture(headers)
                    },
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(WebSocketBridge())
                            try pipeline(channel)
                            return Upgrade.upgraded(
                                try NIOAsyncChannel<Inbound, Outbound>(wrappingChannelSynchronously: channel))
                        }
                    })
                return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                    configuration: .init(
                        upgradeConfiguration: NIOTypedHTTPServerUpgradeConfiguration(
                            upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in
                                channel.close(promise: nil)
                                return channel.eventLoop.makeSucceededFuture(Upgrade.refused)
                            })))
            }
        }
        return WebSocketListener(server: server)
    }

    /// Accepts connections until the listener closes; each upgraded one is handed to `spawn`
    /// as a task that runs `connection` for its life.
    public func accept(
        spawn: (@escaping @Sendable () async -> Void) -> Void,
        connection: @escaping @Sendable (NIOAsyncChannel<Inbound, Outbound>) async -> Void
    ) async throws {
        try await server.executeThenClose { inbound in
            for try await upgrade in inbound {
                spawn {
                    guard case .upgraded(let channel)? = try? await upgrade.get() else { return }
                    await connection(channel)
                }
            }
        }
    }

    public func close() {
        server.channel.close(promise: nil)
    }
}

/// WebSocket frames ⇄ the protocol's bytes. Pings are answered; a close frame closes; text
/// frames are ignored (byte protocols travel in binary frames).
final class WebSocketBridge: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: unwrapOutboundIn(data))), promise: promise)
    }
}
