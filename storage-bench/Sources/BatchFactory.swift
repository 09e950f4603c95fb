import Foundation
import NIOCore
import StrataJournal

/// Builds the record batches the benchmarks append.
enum BatchFactory {
    /// A valid uncompressed batch of `records` records whose values are `valueSize` random bytes.
    static func randomBatch(records: Int, valueSize: Int) -> ByteBuffer {
        let now = nowMilliseconds()
        return RecordBatch.encode((0..<records).map { _ in Record(timestamp: now, value: randomBytes(valueSize)) })
    }

    /// An upper bound of the encoded size of a batch of `records` values of `valueSize` bytes.
    static func estimatedBytes(records: Int, valueSize: Int) -> Int {
        RecordBatch.headerSize + records * (valueSize + 24)
    }

    /// Milliseconds since the Unix epoch.
    static func nowMilliseconds() -> Int64 {
        WallClock.milliseconds()
    }

    /// `count` pseudo-random bytes (filler that neither compresses nor repeats).
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SplitMix64(seed: UInt64.random(in: .min ... .max))
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    }
}

/// A small, fast generator for filler bytes; not for secrets.
private struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}
