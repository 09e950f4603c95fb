import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// MQTT over WebSocket (MQTT 6): an HTTP/1.1 upgrade with subprotocol `mqtt`, after which
/// binary frames carry the MQTT byte stream. The bridge turns frames into bytes for the same
/// MQTT decoder and connection logic as TCP, and bytes back into binary frames.
enum MQTTWebSocket {
    enum Upgrade: Sendable {
        case mqtt(NIOAsyncChannel<MQTTPacket, ByteBuffer>)
        case refused
    }

    /// Binds the WebSocket listener; each element of the returned channel is one connection's
    /// upgrade outcome.
    static func bind(
        host: String, port: Int, group: any EventLoopGroup, maxPacketSize: Int, tls: NIOSSLContext?
    ) async throws -> NIOAsyncChannel<EventLoopFuture<Upgrade>, Never> {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Idle clients are the common case: their read buffer (which the decoder keeps)
            // starts small and grows with traffic.
            .childChannelOption(.recvAllocator, value: MQTTGateway.receiveBuffers)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                        maxFrameSize: maxPacketSize + 16,
                        shouldUpgrade: { channel, head in
                            // MQTT 6.0: the client offers the subprotocol "mqtt"; the server echoes it.
                            let offered = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init)
                            guard offered.contains("mqtt") else { return channel.eventLoop.makeSucceededFuture(nil) }
                            var headers = HTTPHeaders()
                            headers.add(name: "Sec-WebSocket-Protocol", value: "mqtt")
                            return channel.eventLoop.makeSucceededFuture(headers)
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandlers([
                                    WebSocketBridge(),
                                    ByteToMessageHandler(MQTTDecoder(maxPacketSize: maxPacketSize)),
                                ])
                                return Upgrade.mqtt(
                                    try NIOAsyncChannel<MQTTPacket, ByteBuffer>(wrappingChannelSynchronously: channel))
                            }
                        })
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                        configuration: .init(
                            upgradeConfiguration: NIOTypedHTTPServerUpgradeConfiguration(
                                upgraders: [upgrader],
                                notUpgradingCompletionHandler: { channel in
                                    // Not a WebSocket request for MQTT: nothing else is served here.
                                    channel.close(promise: nil)
                                    return channel.eventLoop.makeSucceededFuture(Upgrade.refused)
                                })))
                }
            }
    }

    /// Frames ⇄ bytes. Pings are answered; a close frame closes.
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
                break  // text frames are not MQTT (MQTT 6.0: binary only); pongs need nothing
            }
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            context.write(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: unwrapOutboundIn(data))), promise: promise)
        }
    }
}
