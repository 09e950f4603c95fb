import ArgumentParser
import Logging
import StrataClient
import StrataJournal
import StrataWire

/// `storage-bench append`: writers append prebuilt batches for a fixed time; reports throughput,
/// ack latency, write amplification and CPU cost against the disk's limit.
struct AppendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Measures append throughput and ack latency against the disk's limit.")

    @OptionGroup var options: CommonOptions

    @Option(help: "When an append is acknowledged.")
    var durability: DurabilityChoice = .fsync

    @Option(help: "Appends each writer keeps outstanding.")
    var inflight = 1

    @Option(help: "Append through a journal-node at HOST:PORT (remote client) instead of in-process.")
    var node: String?

    func validate() throws {
        guard inflight >= 1 else { throw ValidationError("--inflight must be at least 1") }
    }

    func run() async throws {
        let options = self.options
        let durability = self.durability.durability
        let directory = try BenchDirectory(requested: options.dataDir)
        defer { directory.removeIfTemporary() }

        // The disk's limit is measured before and after the run (this machine's disk varies by
        // tens of percent from one minute to the next); the figure compared with is their mean.
        let limitName = durability == .fsync ? DiskLimit.durableName : DiskLimit.asyncName
        var limitBefore: Double = 0
        if !options.noLimit {
            let measured = try DiskLimit.measureWrites(in: directory.path, secondsPerTest: 2)
            measured.printReport(json: options.json)
            limitBefore = measured.mbPerSec(limitName)
        }

        let names = options.shardNames
        let target = try await BenchTarget.open(
            node: node, directory: directory.journalPath, walIO: options.walIO.mode, shards: names,
            durability: durability)
        let workload = AppendWorkload(
            journal: target.client, shardNames: names,
            batches: (0..<options.writers).map { _ in
                BatchFactory.randomBatch(records: options.batch, valueSize: options.recordSize)
            },
            recordsPerBatch: options.batch, inflight: inflight)

        // The window ends when the last append is acknowledged; /proc/self/io is read right then,
        // before close() writes its index checkpoint.
        let meter = ProgressMeter(label: node == nil ? "append" : "append via \(node!)")
        let before = try await target.stats()
        let start = ContinuousClock.now
        let (outcome, end, after) = try await meter.reporting {
            let appended = try await workload.run(
                until: .deadline(start.advanced(by: .seconds(options.seconds))), meter: meter)
            return (appended, ContinuousClock.now, try await target.stats())
        }

        await target.close()
        var limit: Double = 0
        if !options.noLimit {
            let measured = try DiskLimit.measureWrites(in: directory.path, secondsPerTest: 2)
            measured.printReport(json: options.json)
            limit = (limitBefore + measured.mbPerSec(limitName)) / 2
        }

        let written = after.bytesWritten(since: before)
        let label =
            durability == .fsync
            ? "durable limit (best sequential write with fdatasync after each; mean of before and after the run)"
            : "async limit (buffered sequential 1 MiB writes and one final fdatasync; mean of before and after)"
        let result = BenchResult(
            mode: .append, shape: options.shape(durability: durability, inflight: inflight),
            seconds: start.duration(to: end).seconds, records: outcome.records, bytes: outcome.bytes,
            latency: outcome.latency, limitMBPerSec: limit, limitLabel: label,
            writeAmplification: outcome.bytes > 0 ? Double(written.bytes) / Double(outcome.bytes) : 0,
            writeBytesSource: written.source, cpuSeconds: after.cpuSecondsUsed(since: before),
            walIO: after.journal.ioBackend, walSyncs: after.walSyncs(since: before))
        result.printReport(json: options.json)
    }
}
