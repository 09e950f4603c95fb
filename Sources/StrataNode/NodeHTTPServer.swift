import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import StrataAuth
import StrataJournal
import StrataObjects
import StrataWire

/// The node's HTTP side: `/metrics` (Prometheus text), `/health`, and a read-only JSON admin
/// API (`/admin/status`, `/admin/shards`, `/admin/shards/<name>`, `/admin/segments`, `/admin/config`, `/admin/tier`).
public final class NodeHTTPServer: Service {
    let host: String
    let port: Int
    let routes: NodeHTTPRoutes
    let group: any EventLoopGroup
    let logger: Logger
    private let onBound: @Sendable (SocketAddress) -> Void

    public init(
        host: String, port: Int, routes: NodeHTTPRoutes,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.routes = routes
        self.group = eventLoopGroup
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let routes = self.routes
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestHandler(routes: routes))
                }
            }
            .bind(host: host, port: port).get()
        if let address = channel.localAddress { onBound(address) }
        logger.info("http listening", metadata: ["node.http": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// What each path answers.
public struct NodeHTTPRoutes: Sendable {
    let journal: Journal
    let metrics: NodeMetrics
    let status: @Sendable () -> NodeStatus
    let config: @Sendable () -> [String: String]
    /// The object tier's status, when the node has one.
    let tier: (@Sendable () -> TierOffloader.Status)?

    /// The bearer token /admin requires (nil: none).
    let adminToken: String?

    public init(
        journal: Journal, metrics: NodeMetrics, status: @escaping @Sendable () -> NodeStatus,
        config: @escaping @Sendable () -> [String: String], tier: (@Sendable () -> TierOffloader.Status)? = nil,
        adminToken: String? = nil
    ) {
        self.adminToken = adminToken
        self.journal = journal
        self.metrics = metrics
        self.status = status
        self.config = config
        self.tier = tier
    }

    struct Response {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]

        static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) -> Response {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let body = (try? encoder.encode(value)).map { Array($0) } ?? Array("{}".utf8)
            return Response(status: status, contentType: "application/json", body: body + [10])
        }

        static func error(_ status: HTTPResponseStatus, _ message: String) -> Response {
            json(["error": message], status: status)
        }
    }

    /// The journal's health (failed after a WAL or index I/O error, degraded at the disk
    /// reserve), degraded further by object-tier errors. Failed answers 503, the rest 200.
    func health() -> JournalHealth {
        var health = journal.health
        if let tier = tier?() {
            var problems: [String] = []
            if let error = tier.lastError { problems.append("object tier: \(error)") }
            for shard in tier.shards {
                if let error = shard.lastError { problems.append("object tier, \(shard.name): \(error)") }
            }
            if !problems.isEmpty {
                health.problems += problems
                if health.status == .ok { health.status = .degraded }
            }
        }
        return health
    }

    func respond(method: HTTPMethod, uri: String, authorization: String? = nil) -> Response {
        guard method == .GET || method == .HEAD else { return .error(.methodNotAllowed, "only GET is served") }
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        if path.hasPrefix("/admin"), let adminToken {
            let expected = Array("Bearer \(adminToken)".utf8)
            guard let authorization, PasswordHashing.constantTimeEqual(Array(authorization.utf8), expected) else {
                return .error(.unauthorized, "/admin needs the admin token: Authorization: Bearer TOKEN")
            }
        }
        switch path {
        case "/metrics":
            return Response(
                status: .ok, contentType: "text/plain; version=0.0.4",
                body: metrics.render(journal: journal, tier: tier?()))
        case "/health":
            let health = self.health()
            return .json(health, status: health.status == .failed ? .serviceUnavailable : .ok)
        case "/admin/status":
            return .json(status())
        case "/admin/shards":
            return .json(journal.listShards())
        case "/admin/segments":
            return .json(journal.segmentInfos())
        case "/admin/config":
            return .json(config())
        case "/admin/tier":
            guard let tier else {
                return .error(.notFound, "this node has no object tier (tier.bucket or tier.webhdfs)")
            }
            return .json(tier())
        default:
            if path.hasPrefix("/admin/shards/") {
                let name = String(path.dropFirst("/admin/shards/".count)).removingPercentEncoding ?? ""
                do {
                    return .json(try journal.describeShard(name))
                } catch {
                    return .error(.notFound, error.message)
                }
            }
            return .error(.notFound, "no route for \(path)")
        }
    }
}

/// One HTTP/1.1 request at a time per connection, answered in full.
final class HTTPRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: NodeHTTPRoutes
    private var head: HTTPRequestHead?

    init(routes: NodeHTTPRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let response = routes.respond(
                method: head.method, uri: head.uri, authorization: head.headers.first(name: "Authorization"))
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: "\(response.body.count)")
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
                promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
            }
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
            if !head.isKeepAlive {
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            }
        }
    }
}
