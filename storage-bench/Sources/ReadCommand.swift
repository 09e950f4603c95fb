import ArgumentParser
import StrataClient
import StrataJournal

/// `storage-bench read`: fills the shards, then readers read them from offset 0 to the end over
/// and over for a fixed time; reports throughput and read latency against a sequential pread of
/// the WAL segments.
struct ReadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract: "Measures read throughput and latency after filling the shards (--writers is the reader count).")

    /// Appends each fill writer keeps outstanding.
    static let fillInflight = 8

    @OptionGroup var options: CommonOptions

    @Option(help: "Bytes of batches to append before reading (not timed).")
    var bytes = 1_000_000_000

    func validate() throws {
        guard bytes > 0 else { throw ValidationError("--bytes must be positive") }
    }

    func run() async throws {
        let options = self.options
        let directory = try BenchDirectory(requested: options.dataDir)
        defer { directory.removeIfTemporary() }

        let names = options.shardNames
        let journal = try await BenchJournal.openNew(
            in: directory.journalPath, walIO: options.walIO.mode, shards: names, durability: .async)
        defer { journal.close() }
        try await fill(journal, shardNames: names)
        try journal.checkpoint()

        var limit: Double = 0
        if !options.noLimit {
            let measured = try DiskLimit.measureRead(walDirectory: directory.journalPath + "/wal")
            measured.printReport(json: options.json)
            limit = measured.mbPerSec(DiskLimit.readName)
        }

        let workload = ReadWorkload(journal: journal, shardNames: names, readers: options.writers)
        let meter = ProgressMeter(label: "read")
        let before = ProcessStats.current(journal: journal)
        let start = ContinuousClock.now
        let (outcome, end, after) = try await meter.reporting {
            let readOutcome = try await workload.run(until: start.advanced(by: .seconds(options.seconds)), meter: meter)
            return (readOutcome, ContinuousClock.now, ProcessStats.current(journal: journal))
        }

        let result = BenchResult(
            mode: .read, shape: options.shape(durability: .async, inflight: 1),
            seconds: start.duration(to: end).seconds, records: outcome.records, bytes: outcome.bytes,
            latency: outcome.latency, limitMBPerSec: limit, limitLabel: "page-cache/disk read limit",
            writeAmplification: 0, writeBytesSource: "none", cpuSeconds: after.cpuSecondsUsed(since: before),
            walIO: after.journal.ioBackend, walSyncs: after.walSyncs(since: before))
        result.printReport(json: options.json)
    }

    /// Appends about `bytes` bytes of batches across the shards, as fast as the writers can.
    private func fill(_ journal: Journal, shardNames: [String]) async throws {
        let batches = (0..<options.writers).map { _ in
            BatchFactory.randomBatch(records: options.batch, valueSize: options.recordSize)
        }
        let batchBytes = batches[0].readableBytes
        let tickets = AppendStop.Tickets(total: (bytes + batchBytes - 1) / batchBytes)
        let workload = AppendWorkload(
            journal: InProcessJournalClient(journal: journal), shardNames: shardNames, batches: batches,
            recordsPerBatch: options.batch,
            inflight: Self.fillInflight)
        let meter = ProgressMeter(label: "fill")
        _ = try await meter.reporting { try await workload.run(until: .batches(tickets), meter: meter) }
    }
}
