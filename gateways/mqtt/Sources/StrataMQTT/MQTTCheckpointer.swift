import Logging

/// Keeps a connected persistent session's record in the journal up to date, so that a gateway
/// that dies (SIGKILL, power) leaves each session as it was at most `interval` ago: stored on
/// every tick when the session changed, and at once when asked (a SUBSCRIBE is acknowledged
/// only after its subscription is stored). One store at a time, in order.
final class MQTTCheckpointer: Sendable {
    /// What the run loop is asked: a tick (store if changed), a store whatever changed (a
    /// subscription change), or a store if changed followed by `then` (what exactly-once needs
    /// stored before an acknowledgement), all answered in the order asked.
    private enum Request: Sendable {
        case tick
        case store(CheckedContinuation<Bool, Never>)
        case storeThen(@Sendable (Bool) -> Void)
    }

    private let gateway: MQTTGateway
    private let session: MQTTSession
    private let requests: AsyncStream<Request>
    private let continuation: AsyncStream<Request>.Continuation

    init(gateway: MQTTGateway, session: MQTTSession) {
        self.gateway = gateway
        self.session = session
        (requests, continuation) = AsyncStream.makeStream()
    }

    /// Stores on ticks and requests until `finish`; the last store has completed when it returns.
    /// Requests queued behind a store find what they need stored already and answer at once.
    func run() async {
        var stored: UInt64?
        for await request in requests {
            let changes = session.changeCount
            let forced: Bool
            switch request {
            case .tick, .storeThen: forced = false
            case .store: forced = true
            }
            var done = false
            do {
                if !forced && changes == stored {
                    done = true
                } else if let record = gateway.checkpointRecord(session) {
                    try await gateway.storeSession(session.clientID, record)
                    stored = changes
                    done = true
                } else if session.isReplaying, case .tick = request {
                    done = true  // ticks wait for the replay to end
                } else if session.isReplaying {
                    // While a replay runs the offline queue still starts where the stored record
                    // says: that record gets the session's subscriptions and inbound QoS 2 ids
                    // as they are now, the rest of it unchanged (a crash replays the same range
                    // again).
                    done = try await storeDuringReplay()
                } else {
                    done = true  // no longer the registered session: nothing of it to store
                }
            } catch {
                gateway.logger.warning(
                    "mqtt session checkpoint not stored",
                    metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
            }
            switch request {
            case .tick: break
            case .store(let waiter): waiter.resume(returning: done)
            case .storeThen(let then): then(done)
            }
        }
    }

    private func storeDuringReplay() async throws -> Bool {
        guard var record = try await gateway.storedSession(session.clientID) else { return false }
        record.subscriptions = session.subscriptions
        record.inboundQoS2 = session.inboundQoS2IDs
        record.owner = .init(user: session.user)
        try await gateway.storeSession(session.clientID, record)
        return true
    }

    /// A periodic nudge: store if anything changed.
    func tick() {
        continuation.yield(.tick)
    }

    /// Stores now; true once stored, false when it could not be (the journal refused it, or a
    /// replay runs and no record is stored to add the subscriptions to) or the checkpointer has
    /// finished.
    func storeNow() async -> Bool {
        await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
            if case .terminated = continuation.yield(.store(waiter)) { waiter.resume(returning: false) }
        }
    }

    /// Stores what changed (unless an earlier store took it already), then runs `then` with
    /// whether it is stored; `then` runs in the order of these calls.
    func storeThen(_ then: @escaping @Sendable (Bool) -> Void) {
        if case .terminated = continuation.yield(.storeThen(then)) { then(false) }
    }

    func finish() {
        continuation.finish()
    }
}
