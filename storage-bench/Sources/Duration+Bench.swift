extension Duration {
    /// The duration in seconds, as a floating-point number.
    var inSeconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    /// The duration in whole microseconds (0 for negative durations).
    var inMicroseconds: UInt64 {
        let parts = components
        let micros = parts.seconds * 1_000_000 + parts.attoseconds / 1_000_000_000_000
        return micros > 0 ? UInt64(micros) : 0
    }

    /// The duration in whole nanoseconds (0 for negative durations).
    var inNanoseconds: UInt64 {
        let parts = components
        let nanos = parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000
        return nanos > 0 ? UInt64(nanos) : 0
    }
}
