import Histogram
import NIOCore
import StrataJournal

/// Readers that read their shards (see `ShardAssignment`) from offset 0 to the end, one read
/// call per shard in turn, and start a shard over at 0 once it is exhausted.
struct ReadWorkload: Sendable {
    struct Outcome: Sendable {
        var latency = Histogram<UInt64>.latency()
        var records = 0
        var bytes = 0

        mutating func merge(_ other: Outcome) {
            latency.add(other.latency)
            records += other.records
            bytes += other.bytes
        }
    }

    static let maxBytesPerRead = 1 << 20

    let journal: Journal
    let shardNames: [String]
    let readers: Int

    func run(until deadline: ContinuousClock.Instant, meter: ProgressMeter) async throws -> Outcome {
        try await withThrowingTaskGroup(of: Outcome.self, returning: Outcome.self) { group in
            for reader in 0..<readers {
                let shards = ShardAssignment.names(worker: reader, workers: readers, of: shardNames)
                group.addTask { try await self.reader(shards: shards, until: deadline, meter: meter) }
            }
            var total = Outcome()
            for try await part in group { total.merge(part) }
            return total
        }
    }

    private func reader(shards: [String], until deadline: ContinuousClock.Instant, meter: ProgressMeter)
        async throws -> Outcome
    {
        var outcome = Outcome()
        var offsets = [UInt64](repeating: 0, count: shards.count)
        var turn = 0
        while ContinuousClock.now < deadline {
            let index = turn % shards.count
            turn += 1
            let started = ContinuousClock.now
            let result = try await journal.read(
                shard: shards[index], from: offsets[index], maxBytes: Self.maxBytesPerRead)
            outcome.latency.record(latency: started.duration(to: ContinuousClock.now))
            var records = 0
            var bytes = 0
            for batch in result.batches {
                bytes += batch.readableBytes
                if let header = RecordBatch.Header.peek(batch, at: batch.readerIndex) {
                    records += Int(header.lastOffsetDelta) + 1
                }
            }
            outcome.records += records
            outcome.bytes += bytes
            meter.add(records: records, bytes: bytes)
            let exhausted = result.batches.isEmpty || result.nextOffset >= result.endOffset
            offsets[index] = exhausted ? 0 : result.nextOffset
        }
        return outcome
    }
}
