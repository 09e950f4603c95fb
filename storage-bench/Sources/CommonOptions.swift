import ArgumentParser
import StrataJournal

/// The flags `append` and `read` share.
struct CommonOptions: ParsableArguments {
    @Option(help: "Bytes of each record's value.")
    var recordSize = 1024

    @Option(help: "Records per batch.")
    var batch = 64

    @Option(help: "Concurrent writer tasks (append) or reader tasks (read).")
    var writers = 4

    @Option(help: "Shards, named bench/0 to bench/N-1; writer w uses shards w, w+W, ... (mod N).")
    var shards = 4

    @Option(help: "Length of the timed run in seconds.")
    var seconds: Double = 10

    @Option(help: "Directory for the journal and the limit file (default: a new one under /tmp, removed at the end).")
    var dataDir: String?

    @Flag(help: "Print one JSON object per result line.")
    var json = false

    @Option(name: .customLong("wal-io"), help: "How the WAL writes and syncs.")
    var walIO: WALIOChoice = .auto

    @Flag(name: .customLong("no-limit"), help: "Skip measuring the disk's limit.")
    var noLimit = false

    func validate() throws {
        guard recordSize >= 0 else { throw ValidationError("--record-size must not be negative") }
        guard batch >= 1, writers >= 1, shards >= 1 else {
            throw ValidationError("--batch, --writers and --shards must be at least 1")
        }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
        let maxBatchBytes = JournalConfiguration(dataDirectory: "").maxBatchBytes
        guard BatchFactory.estimatedBytes(records: batch, valueSize: recordSize) <= maxBatchBytes else {
            throw ValidationError("a batch of \(batch) records of \(recordSize) bytes exceeds \(maxBatchBytes) bytes")
        }
    }

    var shardNames: [String] { (0..<shards).map { "bench/\($0)" } }

    /// The run's parameters as the result reports them.
    func shape(durability: Durability, inflight: Int) -> BenchResult.Shape {
        BenchResult.Shape(
            shards: shards, workers: writers, batch: batch, recordSize: recordSize, durability: durability,
            inflight: inflight)
    }
}
