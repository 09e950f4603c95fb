import Logging

/// Keeps a connected persistent session's record in the journal up to date, so that a gateway
/// that dies (SIGKILL, power) leaves each session as it was at most `interval` ago: stored on
/// every tick when the session changed, and at once when asked (a SUBSCRIBE is acknowledged
/// only after its subscription is stored). One store at a time, in order.
final class MQTTCheckpointer: Sendable {
    private let gateway: MQTTGateway
    private let session: MQTTSession
    private let requests: AsyncStream<CheckedContinuation<Bool, Never>?>
    private let continuation: AsyncStream<CheckedContinuation<Bool, Never>?>.Continuation

    init(gateway: MQTTGateway, session: MQTTSession) {
        self.gateway = gateway
        self.session = session
        (requests, continuation) = AsyncStream.makeStream()
    }

    /// Stores on ticks and requests until `finish`; the last store has completed when it returns.
    func run() async {
        var stored: UInt64?
        for await request in requests {
            let changes = session.changeCount
            var done = false
            do {
                if request != nil || changes != stored, let record = gateway.checkpointRecord(session) {
                    try await gateway.storeSession(session.clientID, record)
                    stored = changes
                    done = true
                } else if request != nil, session.isReplaying {
                    // While a replay runs the offline queue still starts where the stored record
                    // says: that record gets the session's subscriptions as they are now, the
                    // rest of it unchanged (a crash replays the same range again).
                    done = try await storeSubscriptionsDuringReplay()
                } else {
                    done = true
                }
            } catch {
                gateway.logger.warning(
                    "mqtt session checkpoint not stored",
                    metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
            }
            request?.resume(returning: done)
        }
    }

    private func storeSubscriptionsDuringReplay() async throws -> Bool {
        guard var record = try await gateway.storedSession(session.clientID) else { return false }
        record.subscriptions = session.subscriptions
        record.owner = .init(user: session.user)
        try await gateway.storeSession(session.clientID, record)
        return true
    }

    /// A periodic nudge: store if anything changed.
    func tick() {
        continuation.yield(nil)
    }

    /// Stores now; true once stored, false when it could not be (the journal refused it, or a
    /// replay runs and no record is stored to add the subscriptions to) or the checkpointer has
    /// finished.
    func storeNow() async -> Bool {
        await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
            if case .terminated = continuation.yield(waiter) { waiter.resume(returning: false) }
        }
    }

    func finish() {
        continuation.finish()
    }
}
