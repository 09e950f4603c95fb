import Logging
import StrataClient
import StrataJournal
import StrataWire

/// Where `append` sends its batches: a journal opened in this process, or a journal-node
/// reached with the remote client (`--node`). The workload sees one JournalClient either way.
struct BenchTarget: Sendable {
    let client: any JournalClient
    private let journal: Journal?
    private let remote: RemoteJournalClient?

    static func open(
        node: String?, directory: String, walIO: WALIOMode, shards names: [String], durability: Durability
    ) async throws -> BenchTarget {
        guard let node else {
            let journal = try await BenchJournal.openNew(
                in: directory, walIO: walIO, shards: names, durability: durability)
            return BenchTarget(client: InProcessJournalClient(journal: journal), journal: journal, remote: nil)
        }
        guard let address = try? HostPort(parsing: node) else { throw BenchError("--node must be HOST:PORT") }
        var logger = Logger(label: "strata.bench") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = .notice
        let client = RemoteJournalClient(
            configuration: .fromEnvironment(host: address.host, port: address.port), logger: logger)
        let existing = Set(try await client.listShards().map(\.name))
        for name in names where !existing.contains(name) {
            _ = try await client.createShard(name, config: ShardConfig(durability: durability))
        }
        for name in names where existing.contains(name) {
            guard try await client.describeShard(name).config.durability == durability else {
                throw BenchError("shard \(name) exists on the node with another durability; delete it first")
            }
        }
        return BenchTarget(client: client, journal: nil, remote: client)
    }

    /// The process's counters and the journal's (from the node's status when remote).
    func stats() async throws -> ProcessStats {
        if let journal { return ProcessStats.current(journal: journal) }
        let status = try await client.status()
        var statistics = JournalStatistics()
        statistics.appendedBytes = status.appendedBytes
        statistics.appendedBatches = status.appendedBatches
        statistics.walBytesWritten = status.walBytesWritten
        statistics.walSyncs = status.walSyncs
        statistics.ioBackend = status.walIO
        return ProcessStats.current(statistics: statistics, remote: true)
    }

    func close() async {
        journal?.close()
        await remote?.close()
    }
}
