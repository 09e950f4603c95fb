import ArgumentParser
import Logging
import StrataClient
import StrataJournal
import StrataTopics

/// `strata topic`: the topic registry every gateway shares (docs/topics.md).
struct TopicCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topic", abstract: "Creates, lists, describes, alters and deletes registry topics.",
        subcommands: [Create.self, List.self, Describe.self, Alter.self, Delete.self])

    /// `key=value` options as configs.
    static func configs(_ pairs: [String]) throws -> [String: String] {
        var configs: [String: String] = [:]
        for pair in pairs {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--config takes KEY=VALUE, got \(pair)")
            }
            configs[String(parts[0])] = String(parts[1])
        }
        return configs
    }

    static func withRegistry<T>(_ node: NodeOptions, _ body: (TopicRegistry) async throws -> T) async throws -> T {
        try await node.withClient { try await body(TopicRegistry(journal: $0, logger: Logger(label: "strata.cli"))) }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Creates a topic (one shard per partition).")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Topic name: 1-249 of [a-zA-Z0-9._-].") var name: String
        @Option(help: "Partitions.") var partitions: Int32 = 1
        @Option(help: "A topic config, KEY=VALUE (Kafka's names: retention.ms, retention.bytes, ...); repeatable.")
        var config: [String] = []

        func run() async throws {
            let configs = try TopicCommand.configs(config)
            try await reportingFailures {
                let entry = try await TopicCommand.withRegistry(node) {
                    try await $0.create(name, partitions: partitions, configs: configs)
                }
                Output.write("created \(name) (\(entry.partitions) partitions)\n")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lists topics: name, partitions.")
        @OptionGroup var node: NodeOptions

        func run() async throws {
            try await reportingFailures {
                let topics = try await TopicCommand.withRegistry(node) { try await $0.all() }
                for (name, entry) in topics.sorted(by: { $0.key < $1.key }) {
                    Output.write("\(name)\t\(entry.partitions)\n")
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Shows a topic: partitions with their offsets, and every config (defaults marked).")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Topic name.") var name: String

        func run() async throws {
            try await reportingFailures {
                let (entry, shards) = try await TopicCommand.withRegistry(node) { registry in
                    guard let entry = try await registry.entry(name) else {
                        throw TopicError(.unknown, "no topic '\(name)'")
                    }
                    var shards: [ShardInfo] = []
                    for partition in 0..<entry.partitions {
                        shards.append(
                            try await registry.journal.describeShard(TopicRegistry.shardName(name, partition)))
                    }
                    return (entry, shards)
                }
                var text = "name: \(name)\npartitions: \(entry.partitions)\n"
                for (name, value, isDefault) in entry.describedConfigs {
                    text += "config \(name)=\(value)\(isDefault ? " (default)" : "")\n"
                }
                for (partition, shard) in shards.enumerated() {
                    text +=
                        "partition \(partition): shard \(shard.name), start \(shard.startOffset), end \(shard.endOffset), \(shard.storedBytes) bytes\n"
                }
                Output.write(text)
            }
        }
    }

    struct Alter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Changes a topic's configs (in effect on every partition at once) or raises its partition count.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Topic name.") var name: String
        @Option(help: "Set a config, KEY=VALUE; repeatable.") var config: [String] = []
        @Option(help: "Remove a config (back to its default); repeatable.") var deleteConfig: [String] = []
        @Option(help: "The new, larger partition count.") var partitions: Int32?

        func run() async throws {
            let set = try TopicCommand.configs(config)
            guard !set.isEmpty || !deleteConfig.isEmpty || partitions != nil else {
                throw ValidationError("give at least one of --config, --delete-config, --partitions")
            }
            try await reportingFailures {
                let entry = try await TopicCommand.withRegistry(node) { registry in
                    var entry: TopicEntry?
                    if !set.isEmpty || !deleteConfig.isEmpty {
                        entry = try await registry.changing(name) { [deleteConfig] in
                            try await registry.alterConfigs(name) { current in
                                var configs = current.merging(set) { $1 }
                                for key in deleteConfig { configs[key] = nil }
                                return configs
                            }
                        }
                    }
                    if let partitions { entry = try await registry.addPartitions(name, count: partitions) }
                    return entry!
                }
                Output.write(
                    "altered \(name): \(entry.partitions) partitions, configs \(entry.configs.sorted { $0.key < $1.key })\n"
                )
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deletes a topic and its partitions' data.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Topic name.") var name: String

        func run() async throws {
            try await reportingFailures {
                _ = try await TopicCommand.withRegistry(node) { try await $0.delete(name) }
                Output.write("deleted \(name)\n")
            }
        }
    }
}
