import Synchronization

/// Items handed over from any thread and taken all at once by one drain: the first `add` after
/// a `take` says to schedule the drain, the others join it. One mechanism for the gateways'
/// coalescing (a connection's socket writes, AMQP's publisher confirms).
public final class PendingBatch<Item: Sendable>: Sendable {
    private let state = Mutex<(items: [Item], scheduled: Bool)>(([], false))

    public init() {}

    /// Adds `item`; true when the caller is to schedule a drain (none is scheduled yet).
    public func add(_ item: Item) -> Bool {
        state.withLock { state in
            state.items.append(item)
            defer { state.scheduled = true }
            return !state.scheduled
        }
    }

    /// Everything added since the last take; the next `add` schedules a drain again.
    public func take() -> [Item] {
        state.withLock { state in
            defer {
                state.items = []
                state.scheduled = false
            }
            return state.items
        }
    }
}
