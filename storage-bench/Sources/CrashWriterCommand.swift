import ArgumentParser
import StrataJournal

/// `storage-bench crash-writer` (hidden): the process the crash test kills with SIGKILL. It opens
/// the journal in --data-dir with small segments and frequent maintenance, creates the shards
/// crash/0 ... crash/N-1 (fsync) if they are missing, prints `ready`, and then two writers append
/// forever. After each acknowledged append it prints
/// `ack <shard> <baseOffset> <recordCount> <CRC-32C of the concatenated record values, hex>`.
/// Record i of a batch has the value "<shard>|w<writer>-<counter>-<i>|" repeated up to
/// --record-size bytes.
struct CrashWriterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-writer",
        abstract: "Appends to crash/* shards forever and prints each acknowledgement (for the crash test).",
        shouldDisplay: false)

    static let writerCount = 2
    static let segmentBytes = 1 << 20
    static let maxBatchBytes = 512 << 10

    @Option(help: "Journal directory.")
    var dataDir: String

    @Option(help: "Shards, named crash/0 to crash/N-1.")
    var shards: Int

    @Option(help: "Bytes of each record's value (at least the length of its unique prefix).")
    var recordSize = 100

    @Option(help: "Records per batch.")
    var batch = 4

    @Option(name: .customLong("wal-io"), help: "How the WAL writes and syncs.")
    var walIO: WALIOChoice = .auto

    func validate() throws {
        guard shards >= 1, batch >= 1, recordSize >= 1 else {
            throw ValidationError("--shards, --batch and --record-size must be at least 1")
        }
        guard BatchFactory.estimatedBytes(records: batch, valueSize: recordSize + 64) <= Self.maxBatchBytes else {
            throw ValidationError("a batch of \(batch) records of \(recordSize) bytes exceeds \(Self.maxBatchBytes)")
        }
    }

    func run() async throws {
        var configuration = JournalConfiguration(dataDirectory: dataDir)
        configuration.walIO = walIO.mode
        configuration.backgroundMaintenance = true
        configuration.maintenanceInterval = .milliseconds(200)
        configuration.segmentBytes = Self.segmentBytes
        configuration.maxBatchBytes = Self.maxBatchBytes
        let journal = try BenchJournal.open(configuration)
        defer { journal.close() }

        let names = (0..<shards).map { "crash/\($0)" }
        let existing = Set(journal.listShards().map(\.name))
        let missing = names.filter { !existing.contains($0) }
        if !missing.isEmpty {
            _ = try await journal.createShards(missing.map { (name: $0, config: ShardConfig(durability: .fsync)) })
        }
        Console.out("ready\n")

        let recordSize = self.recordSize
        let recordsPerBatch = batch
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<Self.writerCount {
                group.addTask {
                    try await Self.appendForever(
                        journal: journal, writer: writer, shardNames: names, recordSize: recordSize,
                        recordsPerBatch: recordsPerBatch)
                }
            }
            try await group.waitForAll()
        }
    }

    /// Appends deterministic batches round-robin over the shards and prints an `ack` line after
    /// each acknowledgement; returns only by throwing.
    private static func appendForever(
        journal: Journal, writer: Int, shardNames: [String], recordSize: Int, recordsPerBatch: Int
    ) async throws {
        var counter = 0
        while true {
            let shard = shardNames[(counter * writerCount + writer) % shardNames.count]
            let values = (0..<recordsPerBatch).map { index in
                value(unique: "\(shard)|w\(writer)-\(counter)-\(index)|", size: recordSize)
            }
            let now = BatchFactory.nowMilliseconds()
            let batch = RecordBatch.encode(values.map { Record(timestamp: now, value: $0) })
            let result = try await journal.append(shard: shard, batch: batch)
            let crc = CRC32C.checksum(Array(values.joined()))
            let count = result.lastOffset - result.baseOffset + 1
            Console.out("ack \(shard) \(result.baseOffset) \(count) \(hex(crc))\n")
            counter += 1
        }
    }

    /// The UTF-8 of `unique` repeated up to `size` bytes (the whole of it when it is longer).
    private static func value(unique: String, size: Int) -> [UInt8] {
        let unit = Array(unique.utf8)
        guard unit.count < size else { return unit }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        while bytes.count < size {
            bytes.append(contentsOf: unit.prefix(size - bytes.count))
        }
        return bytes
    }

    private static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
