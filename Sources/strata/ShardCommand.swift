import ArgumentParser
import StrataClient
import StrataJournal

struct ShardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard", abstract: "Creates, lists, describes and deletes shards.",
        subcommands: [Create.self, List.self, Describe.self, Delete.self])

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

        func run() async throws {
            guard let durability = Durability(rawValue: durability) else {
                throw ValidationError("--durability is fsync or async")
            }
            let config = ShardConfig(
                durability: durability, retentionMilliseconds: retentionMs, retentionBytes: retentionBytes,
                localRetentionMilliseconds: localRetentionMs)
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
