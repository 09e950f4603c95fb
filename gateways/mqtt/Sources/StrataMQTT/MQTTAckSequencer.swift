import Synchronization

/// Keeps a connection's publish acknowledgements in the order the PUBLISH packets came
/// (MQTT 4.6), although their appends complete per bucket shard, and bounds how many of the
/// connection's publishes are in flight (the reader waits for room).
final class MQTTAckSequencer: Sendable {
    /// What to send once a publish is stored, or when storing it failed.
    struct Slot: Sendable {
        var onSuccess: MQTTPacket?
        var onFailure: @Sendable (any Error) -> MQTTPacket?
        var result: Result<Void, any Error>?
    }

    private struct State {
        var slots: [UInt64: Slot] = [:]
        var head: UInt64 = 0
        var tail: UInt64 = 0
        var roomWaiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let limit: Int
    private let send: @Sendable (MQTTPacket) -> Void

    init(limit: Int, send: @escaping @Sendable (MQTTPacket) -> Void) {
        self.limit = limit
        self.send = send
    }

    /// Waits until fewer than `limit` publishes are in flight.
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if Int(state.tail - state.head) < limit { return true }
                state.roomWaiter = continuation
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Reserves the next place in the acknowledgement order.
    func enqueue(onSuccess: MQTTPacket?, onFailure: @escaping @Sendable (any Error) -> MQTTPacket?) -> UInt64 {
        state.withLock { state in
            defer { state.tail += 1 }
            state.slots[state.tail] = Slot(onSuccess: onSuccess, onFailure: onFailure)
            return state.tail
        }
    }

    /// Records the outcome of a publish and sends every acknowledgement now due, in order.
    func complete(_ ticket: UInt64, _ result: Result<Void, any Error>) {
        let (due, waiter) = state.withLock { state -> ([MQTTPacket], CheckedContinuation<Void, Never>?) in
            state.slots[ticket]?.result = result
            var due: [MQTTPacket] = []
            while let slot = state.slots[state.head], let outcome = slot.result {
                state.slots[state.head] = nil
                state.head += 1
                switch outcome {
                case .success: if let packet = slot.onSuccess { due.append(packet) }
                case .failure(let error): if let packet = slot.onFailure(error) { due.append(packet) }
                }
            }
            var waiter: CheckedContinuation<Void, Never>?
            if Int(state.tail - state.head) < limit {
                waiter = state.roomWaiter
                state.roomWaiter = nil
            }
            return (due, waiter)
        }
        due.forEach(send)
        waiter?.resume()
    }
}
