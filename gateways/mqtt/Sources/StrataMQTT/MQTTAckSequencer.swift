import Synchronization

/// Keeps a connection's publish acknowledgements in the order the PUBLISH packets came
/// (MQTT 4.6), although their appends complete per bucket shard, and bounds how many of the
/// connection's publishes are in flight (the reader waits for room). QoS 0 publishes have no
/// acknowledgement and take no place in that order: they are counted apart (bounded by the
/// same limit), so they never hold QoS 1/2 acknowledgements back or count as in flight toward
/// the receive maximum (MQTT 4.9).
final class MQTTAckSequencer: Sendable {
    /// What to send once a publish is stored, or when storing it failed.
    struct Slot: Sendable {
        var onSuccess: MQTTPacket?
        var onFailure: @Sendable (any Error) -> MQTTPacket?
        var result: Result<Void, any Error>?
        /// A QoS 1 publish: in flight until its PUBACK is sent.
        var qos1: Bool
    }

    private struct State {
        var slots: [UInt64: Slot] = [:]
        var head: UInt64 = 0
        var tail: UInt64 = 0
        var qos1InFlight = 0
        var qos0Unstored = 0
        var roomWaiter: CheckedContinuation<Void, Never>?
        var qos0Waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let limit: Int
    private let send: @Sendable (MQTTPacket) -> Void

    init(limit: Int, send: @escaping @Sendable (MQTTPacket) -> Void) {
        self.limit = limit
        self.send = send
    }

    /// QoS 1 publishes whose PUBACK has not been sent.
    var qos1InFlight: Int { state.withLock { $0.qos1InFlight } }

    /// Waits until fewer than `limit` publishes of this kind are in flight: QoS 1/2 ones waiting
    /// for their acknowledgement, or QoS 0 ones not stored yet.
    func waitForRoom(qos: UInt8) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if qos == 0 {
                    if state.qos0Unstored < limit { return true }
                    state.qos0Waiter = continuation
                } else {
                    if Int(state.tail - state.head) < limit { return true }
                    state.roomWaiter = continuation
                }
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Reserves the next place in the acknowledgement order (QoS 1/2 publishes).
    func enqueue(
        onSuccess: MQTTPacket?, qos1: Bool = false, onFailure: @escaping @Sendable (any Error) -> MQTTPacket?
    ) -> UInt64 {
        state.withLock { state in
            defer { state.tail += 1 }
            if qos1 { state.qos1InFlight += 1 }
            state.slots[state.tail] = Slot(onSuccess: onSuccess, onFailure: onFailure, qos1: qos1)
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
                if slot.qos1 { state.qos1InFlight -= 1 }
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

    /// A QoS 0 publish was handed to its appender; `qos0Stored` once it is answered.
    func qos0Started() {
        state.withLock { $0.qos0Unstored += 1 }
    }

    func qos0Stored() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.qos0Unstored -= 1
            guard state.qos0Unstored < limit else { return nil }
            defer { state.qos0Waiter = nil }
            return state.qos0Waiter
        }
        waiter?.resume()
    }
}
