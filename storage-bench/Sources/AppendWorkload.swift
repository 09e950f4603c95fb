import Histogram
import NIOCore
import StrataClient
import StrataJournal

/// Writers that append prebuilt batches: writer w appends round-robin to its shards (see
/// `ShardAssignment`) and keeps `inflight` appends outstanding, one per lane.
struct AppendWorkload: Sendable {
    struct Outcome: Sendable {
        var latency = Histogram<UInt64>.latency()
        var batches = 0
        var records = 0
        var bytes = 0

        mutating func merge(_ other: Outcome) {
            latency.add(other.latency)
            batches += other.batches
            records += other.records
            bytes += other.bytes
        }
    }

    /// The in-process journal or a remote journal-node, behind one API.
    let journal: any JournalClient
    let shardNames: [String]
    /// One batch per writer.
    let batches: [ByteBuffer]
    let recordsPerBatch: Int
    let inflight: Int

    func run(until stop: AppendStop, meter: ProgressMeter) async throws -> Outcome {
        try await withThrowingTaskGroup(of: Outcome.self, returning: Outcome.self) { group in
            for (writer, batch) in batches.enumerated() {
                let shards = ShardAssignment.names(worker: writer, workers: batches.count, of: shardNames)
                group.addTask { try await self.writer(shards: shards, batch: batch, stop: stop, meter: meter) }
            }
            var total = Outcome()
            for try await part in group { total.merge(part) }
            return total
        }
    }

    private func writer(shards: [String], batch: ByteBuffer, stop: AppendStop, meter: ProgressMeter) async throws
        -> Outcome
    {
        try await withThrowingTaskGroup(of: Outcome.self, returning: Outcome.self) { group in
            for lane in 0..<inflight {
                group.addTask {
                    try await self.lane(lane, shards: shards, batch: batch, stop: stop, meter: meter)
                }
            }
            var total = Outcome()
            for try await part in group { total.merge(part) }
            return total
        }
    }

    /// Appends one batch at a time; lane l of a writer takes its shards l, l+inflight, ... in turn.
    private func lane(_ lane: Int, shards: [String], batch: ByteBuffer, stop: AppendStop, meter: ProgressMeter)
        async throws -> Outcome
    {
        var outcome = Outcome()
        var next = lane
        while stop.allowsAnother() {
            let shard = shards[next % shards.count]
            next += inflight
            let started = ContinuousClock.now
            _ = try await journal.append(shard: shard, batch: batch)
            outcome.latency.record(latency: started.duration(to: ContinuousClock.now))
            outcome.batches += 1
            meter.add(records: recordsPerBatch, bytes: batch.readableBytes)
        }
        outcome.records = outcome.batches * recordsPerBatch
        outcome.bytes = outcome.batches * batch.readableBytes
        return outcome
    }
}
