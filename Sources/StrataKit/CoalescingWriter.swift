import NIOCore
import Synchronization

/// A connection's writes, in the order they are made, with one flush for all that were made
/// before the event loop got to them: a gateway that answers many messages at once (AMQP
/// confirms and deliveries) makes one `writev` for them, not one write, flush and event-loop hop
/// each.
public final class CoalescingWriter: Sendable {
    private struct Pending {
        var writes: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var scheduled = false
    }

    public let channel: any Channel
    private let pending = Mutex(Pending())

    public init(_ channel: any Channel) { self.channel = channel }

    /// Queues `buffer` behind every earlier write; `promise` (if any) completes once the socket
    /// took it or the write failed.
    public func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        let schedule = pending.withLock { pending -> Bool in
            pending.writes.append((buffer, promise))
            defer { pending.scheduled = true }
            return !pending.scheduled
        }
        // Always through the event loop, even from it: writes made meanwhile join this flush.
        if schedule { channel.eventLoop.execute { self.drain() } }
    }

    /// Completes once everything written before it went to the socket (or failed).
    public func flushed() async {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        write(ByteBuffer(), promise: promise)
        try? await promise.futureResult.get()
    }

    private func drain() {
        let writes = pending.withLock { pending in
            defer {
                pending.writes = []
                pending.scheduled = false
            }
            return pending.writes
        }
        for (buffer, promise) in writes { channel.write(buffer, promise: promise) }
        channel.flush()
    }
}
