import NIOCore

/// How every Strata listener hands its accepted connections to async code. The task that serves
/// a connection wraps it in its `NIOAsyncChannel`, not the server's child initializer: NIO drops
/// the children it accepted while a listener shuts down, and a dropped `NIOAsyncChannel` traps
/// the process ("Deinited NIOAsyncWriter without calling finish()"). Children are accepted with
/// `.childChannelOption(.autoRead, value: false)`, so nothing is read before the wrapping handler
/// is in the pipeline; `serve` wraps the channel and turns reading on.
public enum AcceptedConnection {
    static func wrap<Inbound: Sendable, Outbound: Sendable>(
        _ channel: any Channel, as type: NIOAsyncChannel<Inbound, Outbound>.Type
    ) async throws -> NIOAsyncChannel<Inbound, Outbound> {
        try await channel.eventLoop.submit {
            let wrapped = try NIOAsyncChannel<Inbound, Outbound>(wrappingChannelSynchronously: channel)
            if let options = channel.syncOptions {
                try options.setOption(.autoRead, value: true)
            } else {
                channel.setOption(.autoRead, value: true).whenFailure { _ in channel.close(promise: nil) }
            }
            return wrapped
        }.get()
    }

    /// Wraps `channel` and runs `body` on it (the connection's whole life); a channel that cannot
    /// be wrapped is closed.
    public static func serve<Inbound: Sendable, Outbound: Sendable>(
        _ channel: any Channel, as type: NIOAsyncChannel<Inbound, Outbound>.Type,
        _ body: (NIOAsyncChannel<Inbound, Outbound>) async -> Void
    ) async {
        guard let wrapped = try? await wrap(channel, as: type) else {
            channel.close(promise: nil)
            return
        }
        await body(wrapped)
    }
}
