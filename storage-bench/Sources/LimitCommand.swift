import ArgumentParser

/// `storage-bench limit`: the disk's sequential write throughput, with an fdatasync after each
/// write (the durable limit) and buffered with one final fdatasync (the async limit).
struct LimitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limit",
        abstract: "Measures the disk's sequential write throughput, synced after each write and buffered.")

    @Option(help: "Directory to measure in (default: a new one under /tmp, removed at the end).")
    var dataDir: String?

    @Option(help: "Seconds per test.")
    var seconds: Double = 3

    @Flag(help: "Print one JSON object per line.")
    var json = false

    func validate() throws {
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() throws {
        let directory = try BenchDirectory(requested: dataDir)
        defer { directory.removeIfTemporary() }
        try DiskLimit.measureWrites(in: directory.path, secondsPerTest: seconds).printReport(json: json)
    }
}
