import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// An answer of an `HTTPEndpoint`.
public struct EndpointResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: [UInt8]

    public init(status: HTTPResponseStatus, contentType: String, body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    public static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) -> EndpointResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let body = (try? encoder.encode(value)).map { Array($0) } ?? Array("{}".utf8)
        return EndpointResponse(status: status, contentType: "application/json", body: body + [10])
    }

    public static func error(_ status: HTTPResponseStatus, _ message: String) -> EndpointResponse {
        json(["error": message], status: status)
    }
}

/// A small HTTP/1.1 listener (metrics, health, admin JSON) as a Service: each request is
/// answered in full by `respond(method, uri, Authorization header)`, one at a time per
/// connection. journal-node's HTTP side and the standalone gateways' metrics use it.
public final class HTTPEndpoint: Service {
    public typealias Respond =
        @Sendable (_ method: HTTPMethod, _ uri: String, _ authorization: String?) async -> EndpointResponse

    let host: String
    let port: Int
    let respond: Respond
    let group: any EventLoopGroup
    let logger: Logger
    let name: String
    private let onBound: @Sendable (SocketAddress) -> Void

    public init(
        host: String, port: Int, name: String = "http",
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }, respond: @escaping Respond
    ) {
        self.host = host
        self.port = port
        self.name = name
        self.respond = respond
        self.group = eventLoopGroup
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let respond = self.respond
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestHandler(respond: respond))
                }
            }
            .bind(host: host, port: port).get()
        if let address = channel.localAddress { onBound(address) }
        logger.info("\(name) listening", metadata: ["http.listen": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// One HTTP/1.1 request at a time per connection, answered in full. The answer is made off
/// the event loop (routes may read the journal); HTTPServerPipelineHandler holds a
/// connection's next request until this one's answer is written.
final class HTTPRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: HTTPEndpoint.Respond
    private var head: HTTPRequestHead?

    init(respond: @escaping HTTPEndpoint.Respond) {
        self.respond = respond
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
            let (respond, authorization) = (self.respond, head.headers.first(name: "Authorization"))
            let answered = context.eventLoop.makePromise(of: EndpointResponse.self)
            answered.completeWithTask { await respond(head.method, head.uri, authorization) }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            answered.futureResult.whenSuccess { response in
                let (handler, context) = bound.value
                handler.write(response, for: head, context: context)
            }
        }
    }

    private func write(_ response: EndpointResponse, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
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
