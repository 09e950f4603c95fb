import Synchronization

/// Work that must happen in submission order per key (appends to a partition, offset commits
/// of a group): each submitted task is handed the one before it to wait for. A key's entry is
/// dropped by its last task when it finishes, so keys a client makes up do not pile up.
public final class KeyedChain<Success: Sendable>: Sendable {
    private struct Tails {
        var next: UInt64 = 0
        var entries: [String: (id: UInt64, task: Task<Success, any Error>)] = [:]
    }

    private let tails = Mutex(Tails())

    public init() {}

    /// Starts `work` for `key`; it receives the previous task for that key (nil: none running).
    public func submit(
        _ key: String, _ work: @escaping @Sendable (Task<Success, any Error>?) async throws -> Success
    ) -> Task<Success, any Error> {
        tails.withLock { state in
            state.next += 1
            let id = state.next
            let previous = state.entries[key]?.task
            // The task cannot take the lock before this entry is stored (the lock is held here).
            let task = Task { [self] in
                defer { tails.withLock { if $0.entries[key]?.id == id { $0.entries[key] = nil } } }
                return try await work(previous)
            }
            state.entries[key] = (id, task)
            return task
        }
    }
}
