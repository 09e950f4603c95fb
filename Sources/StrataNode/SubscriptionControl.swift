import Synchronization

/// The node side of one subscription: credits granted by the client, and whether it was ended.
final class SubscriptionControl: Sendable {
    private struct State {
        var credits: UInt64
        var ended = false
        var creditWaiter: CheckedContinuation<Bool, Never>?
        var endWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state: Mutex<State>
    /// Most `records` frames one subscription may have granted and unsent.
    static let maxCredits: UInt64 = 256

    init(credits: UInt32) {
        state = Mutex(State(credits: min(UInt64(credits), SubscriptionControl.maxCredits)))
    }

    func grant(_ credits: UInt32) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            // Credits beyond what can be outstanding are ignored: they would only let the node
            // buffer answers for a client that does not read them.
            state.credits = min(state.credits + UInt64(credits), SubscriptionControl.maxCredits)
            guard state.credits > 0, let waiter = state.creditWaiter else { return nil }
            state.creditWaiter = nil
            return waiter
        }
        waiter?.resume(returning: true)
    }

    /// Takes one credit, waiting for a grant; false once the subscription has ended.
    func takeCredit() async -> Bool {
        while true {
            let taken = state.withLock { state -> Bool? in
                if state.ended { return false }
                guard state.credits > 0 else { return nil }
                state.credits -= 1
                return true
            }
            if let taken { return taken }
            let proceed = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = state.withLock { state -> Bool? in
                    if state.ended { return false }
                    if state.credits > 0 { return true }
                    state.creditWaiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
            if !proceed { return false }
        }
    }

    func end() {
        let (creditWaiter, endWaiters) = state.withLock { state in
            state.ended = true
            defer {
                state.creditWaiter = nil
                state.endWaiters = []
            }
            return (state.creditWaiter, state.endWaiters)
        }
        creditWaiter?.resume(returning: false)
        endWaiters.forEach { $0.resume() }
    }

    /// Returns when `end()` was called.
    func waitUntilEnded() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ended = state.withLock { state -> Bool in
                if state.ended { return true }
                state.endWaiters.append(continuation)
                return false
            }
            if ended { continuation.resume() }
        }
    }
}
