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

    /// A batch of `records` log-like JSON lines of `valueSize` bytes each (random users, paths,
    /// session ids and latencies): values that compress the way application logs do.
    static func jsonBatch(records: Int, valueSize: Int) -> ByteBuffer {
        let now = nowMilliseconds()
        let events = ["page_view", "click", "add_to_cart", "checkout", "login", "search"]
        return RecordBatch.encode(
            (0..<records).map { i in
                var text = ""
                while text.utf8.count < valueSize {
                    let session = String(UInt64.random(in: 0..<(1 << 40)), radix: 16)
                    text += "{\"ts\":\(now + Int64(i)),\"user\":\"user-\(Int.random(in: 0..<100_000))\","
                    text +=
                        "\"event\":\"\(events.randomElement()!)\",\"path\":\"/products/\(Int.random(in: 0..<50_000))\","
                    text += "\"session\":\"\(session)\",\"latency_ms\":\(Int.random(in: 1..<2000))}\n"
                }
                return Record(timestamp: now, value: Array(text.utf8.prefix(valueSize)))
            })
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
