import DequeModule
import Synchronization

/// Bytes a server may hold for answers not yet written (and the requests behind them), shared by
/// the tasks of one connection or by every connection of a node, as Kafka's
/// `queued.max.request.bytes`. A task takes its bytes before it reads (or before the next frame
/// is read) and gives them back once its answer is on the socket, so a client that stops
/// reading stops the node reading its requests: TCP backpressure instead of buffering. Waiters
/// are served in order; a cancelled waiter leaves the queue.
public final class ByteBudget: Sendable {
    private struct Waiter {
        var id: UInt64
        var bytes: Int
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var available: Int
        var waiters: Deque<Waiter> = []
        var nextID: UInt64 = 0
    }

    public let limit: Int
    private let state: Mutex<State>

    public init(limit: Int) {
        self.limit = max(1, limit)
        state = Mutex(State(available: max(1, limit)))
    }

    /// Bytes not taken, for metrics and tests.
    public var available: Int { state.withLock { $0.available } }

    /// What a request of `bytes` takes: at most the whole budget, so that one large answer can
    /// always go through alone.
    public func cost(_ bytes: Int) -> Int { min(max(0, bytes), limit) }

    /// Takes `cost(bytes)` bytes, waiting in line for them; false (and nothing taken) when the
    /// task was cancelled while it waited.
    @discardableResult
    public func acquire(_ bytes: Int) async -> Bool {
        let bytes = cost(bytes)
        if bytes == 0 { return true }
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let granted = state.withLock { state -> Bool? in
                    if Task.isCancelled { return false }
                    if state.waiters.isEmpty, state.available >= bytes {
                        state.available -= bytes
                        return true
                    }
                    state.waiters.append(Waiter(id: id, bytes: bytes, continuation: continuation))
                    return nil
                }
                if let granted { continuation.resume(returning: granted) }
            }
        } onCancel: {
            // The cancelled waiter leaves the line; those behind it may fit now.
            let (cancelled, ready) = state.withLock { state -> (Waiter?, [Waiter]) in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return (nil, []) }
                return (state.waiters.remove(at: index), Self.takeReady(&state))
            }
            cancelled?.continuation.resume(returning: false)
            for waiter in ready { waiter.continuation.resume(returning: true) }
        }
    }

    /// Grants waiters in order while the first of them fits.
    private static func takeReady(_ state: inout State) -> [Waiter] {
        var ready: [Waiter] = []
        while let first = state.waiters.first, first.bytes <= state.available {
            state.available -= first.bytes
            ready.append(state.waiters.removeFirst())
        }
        return ready
    }

    /// Gives back bytes taken with `acquire(bytes)`.
    public func release(_ bytes: Int) {
        let bytes = cost(bytes)
        if bytes == 0 { return }
        let ready = state.withLock { state -> [Waiter] in
            state.available += bytes
            return Self.takeReady(&state)
        }
        for waiter in ready { waiter.continuation.resume(returning: true) }
    }
}
