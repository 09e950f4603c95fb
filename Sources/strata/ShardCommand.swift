import ArgumentParser
import StrataClient
import StrataJournal

struct ShardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard", abstract: "Creates, lists, describes, alters and deletes shards.",
        subcommands: [Create.self, List.self, Describe.self, Alter.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Creates a shard.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Shard name, e.g. kafka/orders/0.") var name: String
        @Option(help: "fsync (acknowledged once on disk) or async.") var durability: String = "fsync"
        @Option(help: "Delete batches older than this many milliseconds.") var retentionMs: Int64?
        @Option(help: "Delete the oldest batches while the shard holds more bytes than this.") var retentionBytes:
            Int64?
        @Option(help: "With an object tier: move batches older than this many milliseconds there.")
        var localRetentionMs: Int64?
        @Option(help: "The largest batch the shard takes (at most the node's max_batch_bytes).")
        var maxBatchBytes: Int?

        func run() async throws {
            guard let durability = Durability(rawValue: durability) else {
                throw ValidationError("--durability is fsync or async")
            }
            let config = ShardConfig(
                durability: durability, retentionMilliseconds: retentionMs, retentionBytes: retentionBytes,
                localRetentionMilliseconds: localRetentionMs, maxBatchBytes: maxBatchBytes)
            try await reportingFailures {
                let info = try await node.withClient { try await $0.createShard(name, config: config) }
                Output.write("created \(info.name) (id \(info.id), \(info.config.durability.rawValue))\n")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lists shards: name, start, end, bytes, durability.")
        @OptionGroup var node: NodeOptions

        func run() async throws {
            try await reportingFailures {
                let shards = try await node.withClient { try await $0.listShards() }
                for shard in shards {
                    Output.write(
                        "\(shard.name)\t\(shard.startOffset)\t\(shard.endOffset)\t\(shard.storedBytes)\t\(shard.config.durability.rawValue)\n"
                    )
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shows one shard.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Shard name.") var name: String

        func run() async throws {
            try await reportingFailures {
                let shard = try await node.withClient { try await $0.describeShard(name) }
                Output.write(
                    """
                    name: \(shard.name)
                    id: \(shard.id)
                    durability: \(shard.config.durability.rawValue)
                    retention_ms: \(shard.config.retentionMilliseconds.map(String.init) ?? "none")
                    retention_bytes: \(shard.config.retentionBytes.map(String.init) ?? "none")
                    local_retention_ms: \(shard.config.localRetentionMilliseconds.map(String.init) ?? "tier default")
                    max_batch_bytes: \(shard.config.maxBatchBytes.map(String.init) ?? "node default")
                    start_offset: \(shard.startOffset)
                    end_offset: \(shard.endOffset)
                    stored_bytes: \(shard.storedBytes)
                    memory_bytes: \(shard.memoryBytes)
                    tier_bytes: \(shard.tierBytes)
                    tier_end_offset: \(shard.tierEndOffset)

                    """)
            }
        }
    }

    struct Alter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Changes a shard's durability or retention; what is not given stays as it is.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Shard name.") var name: String
        @Option(help: "fsync or async.") var durability: String?
        @Option(help: "Milliseconds, or none to keep batches however old.") var retentionMs: String?
        @Option(help: "Bytes, or none for no size limit.") var retentionBytes: String?
        @Option(help: "Milliseconds, or default for the object tier's.") var localRetentionMs: String?
        @Option(help: "Bytes, or default for the node's max_batch_bytes.") var maxBatchBytes: String?

        /// nil (not given), .some(nil) (cleared) or .some(value).
        private static func limit(_ text: String?, _ option: String, clear: String) throws -> Int64?? {
            guard let text else { return nil }
            do { return .some(try ShardConfig.parseLimit(text, none: clear)) } catch {
                throw ValidationError("--\(option): \(error.message)")
            }
        }

        func run() async throws {
            let durability = try durability.map { text in
                guard let value = Durability(rawValue: text) else {
                    throw ValidationError("--durability is fsync or async")
                }
                return value
            }
            let retentionMs = try Self.limit(retentionMs, "retention-ms", clear: "none")
            let retentionBytes = try Self.limit(retentionBytes, "retention-bytes", clear: "none")
            let localRetentionMs = try Self.limit(localRetentionMs, "local-retention-ms", clear: "default")
            let maxBatchBytes = try Self.limit(maxBatchBytes, "max-batch-bytes", clear: "default")
            guard
                durability != nil || retentionMs != nil || retentionBytes != nil || localRetentionMs != nil
                    || maxBatchBytes != nil
            else {
                throw ValidationError(
                    "give at least one of --durability, --retention-ms, --retention-bytes, --local-retention-ms, --max-batch-bytes"
                )
            }
            try await reportingFailures {
                let info = try await node.withClient { client in
                    var config = try await client.describeShard(name).config
                    if let durability { config.durability = durability }
                    if let retentionMs { config.retentionMilliseconds = retentionMs }
                    if let retentionBytes { config.retentionBytes = retentionBytes }
                    if let localRetentionMs { config.localRetentionMilliseconds = localRetentionMs }
                    if let maxBatchBytes { config.maxBatchBytes = maxBatchBytes.map { Int(clamping: $0) } }
                    return try await client.alterShard(name, config: config)
                }
                Output.write(
                    "altered \(info.name): \(info.config.durability.rawValue), retention_ms \(info.config.retentionMilliseconds.map(String.init) ?? "none"), retention_bytes \(info.config.retentionBytes.map(String.init) ?? "none")\n"
                )
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deletes a shard and its data.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Shard name.") var name: String

        func run() async throws {
            try await reportingFailures {
                try await node.withClient { try await $0.deleteShard(name) }
                Output.write("deleted \(name)\n")
            }
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Shows the node's status.")
    @OptionGroup var node: NodeOptions

    func run() async throws {
        try await reportingFailures {
            let status = try await node.withClient { try await $0.status() }
            Output.write(
                """
                node: \(status.node)
                version: \(status.version)
                uptime_s: \(Int(status.uptimeSeconds))
                shards: \(status.shards)
                connections: \(status.connections)
                appended_batches: \(status.appendedBatches)
                appended_bytes: \(status.appendedBytes)
                wal_bytes_written: \(status.walBytesWritten)
                wal_syncs: \(status.walSyncs)
                wal_io: \(status.walIO)

                """)
        }
    }
}
