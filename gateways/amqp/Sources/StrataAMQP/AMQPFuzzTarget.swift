import NIOCore

/// The AMQP path for the libFuzzer harness (`Fuzz/`): bytes through the frame decoder as a
/// server reads them (protocol header first, and frames alone) and every frame through a
/// connection state machine that accepts whatever credentials and virtual host it is asked
/// about. It must return normally for any input.
public enum AMQPFuzzTarget {
    public static func frames(_ bytes: [UInt8]) {
        for expectsHeader in [true, false] {
            var decoder = AMQPFrameDecoder(frameMax: 1 << 16, expectsProtocolHeader: expectsHeader)
            var state = AMQPConnectionState(limits: .init(maxBodySize: 1 << 16))
            if !expectsHeader { _ = state.receive(.protocolHeader) }
            var buffer = ByteBuffer(bytes: bytes)
            while let frame = (try? decoder.decode(buffer: &buffer)) ?? nil {
                for action in state.receive(frame) {
                    switch action {
                    case .authenticate: _ = state.authenticated(user: "fuzz")
                    case .openVirtualHost(let name): _ = state.virtualHostOpened(name)
                    case .tuned(let tune): decoder.frameMax = tune.frameMax
                    case .method(let channel, _):
                        _ = state.failed(channel: channel, AMQPError(AMQPError.notFound, "fuzz"))
                    default: break
                    }
                }
            }
        }
    }
}
