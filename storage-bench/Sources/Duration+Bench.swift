import StrataJournal

extension Duration {
    /// The duration in whole microseconds (0 for negative durations).
    var inMicroseconds: UInt64 {
        UInt64(max(0, nanoseconds / 1000))
    }
}
