import Foundation

/// Wall-clock time as record timestamps use it: milliseconds since the Unix epoch.
public enum WallClock {
    public static func milliseconds() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1000)
    }
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// The duration in whole nanoseconds, saturating at `Int64.max`.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (seconds < 0 ? .min : .max) : scaled + attoseconds / 1_000_000_000
    }
}

extension Int64 {
    /// `self - other`, clamped to Int64's range instead of trapping: for arithmetic on values that
    /// came from the wire or from disk (timestamps, retention settings).
    public func minusSaturating(_ other: Int64) -> Int64 {
        let (result, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return result }
        return other < 0 ? .max : .min
    }
}
