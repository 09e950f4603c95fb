import Logging

/// Keeps a connected persistent session's record in the journal up to date, so that a gateway
/// that dies (SIGKILL, power) leaves each session as it was at most `interval` ago: stored on
/// every tick when the session changed, and at once when asked (a SUBSCRIBE is acknowledged
/// only after its subscription is stored). One store at a time, in order.
final class MQTTCheckpointer: Sendable {
    private let gateway: MQTTGateway
    private let session: MQTTSession
    private let requests: AsyncStream<CheckedContinuation<Void, Never>?>
    private let continuation: AsyncStream<CheckedContinuation<Void, Never>?>.Continuation

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
            if request != nil || changes != stored, let record = gateway.checkpointRecord(session) {
                do {
                    try await gateway.storeSession(session.clientID, record)
                    stored = changes
                } catch {
                    gateway.logger.warning(
                        "mqtt session checkpoint not stored",
                        metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
                }
            }
            request?.resume()
        }
    }

    /// A periodic nudge: store if anything changed.
    func tick() {
        continuation.yield(nil)
    }

    /// Stores now and returns once stored (or once the checkpointer has finished).
    func storeNow() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            if case .terminated = continuation.yield(waiter) { waiter.resume() }
        }
    }

    func finish() {
        continuation.finish()
    }
}
