import Dispatch

/// A counting semaphore used to park the journal's own threads (writer, maintenance).
final class DispatchSemaphoreBox: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)

    func signal() { semaphore.signal() }
    func wait() { semaphore.wait() }

    /// Waits at most `timeout`; true when signalled.
    func wait(timeout: Duration) -> Bool {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        return semaphore.wait(timeout: .now() + .nanoseconds(Int(max(0, nanoseconds)))) == .success
    }
}
