import Histogram

extension Histogram where Count == UInt64 {
    /// A histogram of latencies in microseconds up to one minute, three significant digits.
    static func latency() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    }

    /// Records `duration` in microseconds, clamped to the trackable range.
    mutating func record(latency duration: Duration) {
        record(Swift.min(duration.inMicroseconds, highestTrackableValue))
    }
}
