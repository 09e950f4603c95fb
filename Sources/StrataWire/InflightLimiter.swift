import Synchronization

/// Bounds the requests one connection has in flight: the reader waits for a slot before it
/// takes the next frame, so a client that does not read its answers is slowed by TCP. With
/// subscriptions' credits capped too, what the node buffers for one connection is bounded by
/// `limit` answers plus 256 `records` frames per subscription.
public final class InflightLimiter: Sendable {
    private struct State {
        var available: Int
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<State>

    public init(limit: Int) {
        state = Mutex(State(available: limit))
    }

    /// Takes a slot, waiting for one when all are taken. One caller (the connection reader) at a time.
    public func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if ready { continuation.resume() }
        }
    }

    public func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter  // the slot passes straight to the waiter
            }
            state.available += 1
            return nil
        }
        waiter?.resume()
    }
}
