import Synchronization

/// Work that must happen in submission order per key (appends to a partition, offset commits
/// of a group): each submitted task is handed the one before it to wait for. A key's entry is
/// dropped once its last task finished, so keys a client makes up do not pile up.
final class KeyedChain<Success: Sendable>: Sendable {
    private let tails = Mutex<[String: Task<Success, any Error>]>([:])

    /// Starts `work` for `key`; it receives the previous task for that key (nil: none running).
    func submit(
        _ key: String, _ work: @escaping @Sendable (Task<Success, any Error>?) async throws -> Success
    ) -> Task<Success, any Error> {
        let task = tails.withLock { tails in
            let previous = tails[key]
            let task = Task { try await work(previous) }
            tails[key] = task
            return task
        }
        Task { [self] in
            _ = await task.result
            tails.withLock { if $0[key] == task { $0[key] = nil } }
        }
        return task
    }

    var count: Int { tails.withLock { $0.count } }
}
