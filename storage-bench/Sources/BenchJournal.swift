import Foundation
import Logging
import StrataJournal

/// Opens journals for the benchmarks. The journal logs to standard error, because standard
/// output carries the results (and the crash writer's acknowledgements).
enum BenchJournal {
    static func open(_ configuration: JournalConfiguration) throws -> Journal {
        var logger = Logger(label: "strata.bench") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = .notice
        return try Journal(configuration: configuration, logger: logger)
    }

    /// Opens a new journal in `directory` (which must not exist yet) with background maintenance
    /// and creates the shards `names` with one catalog write.
    static func openNew(
        in directory: String, walIO: WALIOMode, shards names: [String], durability: Durability
    ) async throws -> Journal {
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw BenchError("\(directory) exists already; remove it or choose another --data-dir")
        }
        var configuration = JournalConfiguration(dataDirectory: directory)
        configuration.walIO = walIO
        configuration.backgroundMaintenance = true
        let journal = try open(configuration)
        do {
            _ = try await journal.createShards(names.map { (name: $0, config: ShardConfig(durability: durability)) })
        } catch {
            journal.close()
            throw error
        }
        return journal
    }
}
