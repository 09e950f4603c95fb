import NIOCore

/// A connection's writes, in the order they are made, with one flush for all that were made
/// before the event loop got to them: a gateway that answers many messages at once (AMQP
/// confirms and deliveries) makes one `writev` for them, not one write, flush and event-loop hop
/// each.
public final class CoalescingWriter: Sendable {
    public let channel: any Channel
    private let pending = PendingBatch<(ByteBuffer, EventLoopPromise<Void>?)>()

    public init(_ channel: any Channel) { self.channel = channel }

    /// Queues `buffer` behind every earlier write; `promise` (if any) completes once the socket
    /// took it or the write failed.
    public func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        // Always through the event loop, even from it: writes made meanwhile join this flush.
        if pending.add((buffer, promise)) { channel.eventLoop.execute { self.drain() } }
    }

    /// Completes once everything written before it went to the socket (or failed).
    public func flushed() async {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        write(ByteBuffer(), promise: promise)
        try? await promise.futureResult.get()
    }

    private func drain() {
        for (buffer, promise) in pending.take() { channel.write(buffer, promise: promise) }
        channel.flush()
    }
}
