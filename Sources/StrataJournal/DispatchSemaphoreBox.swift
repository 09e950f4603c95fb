import Dispatch

/// A counting semaphore used to park the journal's own threads (writer, maintenance).
final class DispatchSemaphoreBox: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)

    func signal() { semaphore.signal() }
    func wait() { semaphore.wait() }

    /// Waits at most `timeout`; true when signalled.
    func wait(timeout: Duration) -> Bool {
        semaphore.wait(timeout: .now() + .nanoseconds(Int(max(0, timeout.nanoseconds)))) == .success
    }
}
