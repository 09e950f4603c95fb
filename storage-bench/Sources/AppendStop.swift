import Synchronization

/// When append lanes stop: at a deadline (timed runs) or after a number of batches in total
/// (filling shards before a read run).
enum AppendStop: Sendable {
    case deadline(ContinuousClock.Instant)
    case batches(Tickets)

    /// A shared count of the batches still to append.
    final class Tickets: Sendable {
        private let taken = Atomic<Int>(0)
        let total: Int

        init(total: Int) {
            self.total = total
        }

        /// True (and one ticket fewer) while tickets are left.
        func take() -> Bool {
            taken.wrappingAdd(1, ordering: .relaxed).oldValue < total
        }
    }

    /// Whether a lane may start another append.
    func allowsAnother() -> Bool {
        switch self {
        case .deadline(let deadline): ContinuousClock.now < deadline
        case .batches(let tickets): tickets.take()
        }
    }
}
