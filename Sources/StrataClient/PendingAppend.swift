import StrataJournal
import Synchronization

/// An append that is queued in the journal (ahead of every append queued after it through the
/// same client) and whose outcome comes later. Lets a caller keep many appends to one shard in
/// flight and still have them stored in the order it queued them.
public final class PendingAppend: Sendable {
    private struct State {
        var outcome: Result<AppendResult, any Error>?
        var waiters: [CheckedContinuation<AppendResult, any Error>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Settles the append (the first outcome counts).
    public func complete(_ outcome: Result<AppendResult, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<AppendResult, any Error>] in
            guard state.outcome == nil else { return [] }
            state.outcome = outcome
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: outcome) }
    }

    /// The outcome, once the journal acknowledged (or refused) the append.
    public var result: AppendResult {
        get async throws {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<AppendResult, any Error>) in
                let outcome = state.withLock { state -> Result<AppendResult, any Error>? in
                    if state.outcome == nil { state.waiters.append(waiter) }
                    return state.outcome
                }
                if let outcome { waiter.resume(with: outcome) }
            }
        }
    }
}
