import Foundation
import StrataJournal

/// A topic of the registry, as stored in the journal (namespace `TopicRegistry.namespace`, key =
/// name, JSON): its partition count (one journal shard each), its id and its configs, named as
/// Kafka names them. Kafka topics, and the topics MQTT topics map to (docs/topics.md), are
/// entries of this one kind.
public struct TopicEntry: Codable, Sendable, Hashable {
    public var partitions: Int32
    /// Topic id (Kafka Metadata v10+, CreateTopics v7+).
    public var id: [UInt8]
    public var configs: [String: String]

    /// The most partitions a topic may have.
    public static let maxPartitions: Int32 = 10_000

    /// Topic configs the registry takes (each one in effect), and their defaults as reported.
    /// `segment.bytes` is refused: segments are node-wide in Strata (`journal.segment_bytes`).
    /// `max.message.bytes` -1 (the default) is the node's `journal.max_batch_bytes`.
    public static let supportedConfigs: [String: String] = [
        "retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete",
        "compression.type": "producer", "min.insync.replicas": "1", "message.timestamp.type": "CreateTime",
        "strata.durability": "fsync", "local.retention.ms": "-2", "max.message.bytes": "-1",
        // The MQTT topic prefix whose topics are this topic's records (MQTTTopicRoots); empty: the
        // default rule (MQTT topics whose first level is this topic's name).
        MQTTTopicRoots.prefixConfig: "",
    ]

    public init(partitions: Int32, configs: [String: String]) throws(TopicError) {
        try Self.validate(configs)
        guard partitions > 0, partitions <= Self.maxPartitions else {
            throw TopicError(
                .invalidPartitions, "number of partitions must be 1...\(Self.maxPartitions), not \(partitions)")
        }
        self.partitions = partitions
        self.configs = configs
        var uuid = UUID().uuid
        id = withUnsafeBytes(of: &uuid) { Array($0) }
    }

    /// The id of a topic whose partition 0 is journal shard `firstShard`: the shard's id (new
    /// for every shard the journal creates, so a topic deleted and created again gets a new
    /// one) and FNV-1a of the name, 16 bytes as Kafka's topic ids are.
    public static func id(name: String, firstShard: UInt64) -> [UInt8] {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return withUnsafeBytes(of: firstShard.bigEndian, Array.init) + withUnsafeBytes(of: hash.bigEndian, Array.init)
    }

    /// Refuses any config the registry does not put into effect.
    public static func validate(_ configs: [String: String]) throws(TopicError) {
        for (key, value) in configs {
            switch key {
            case "segment.bytes":
                throw TopicError(
                    .invalidConfig,
                    "segment.bytes is not a topic setting here: segments are node-wide (journal.segment_bytes)")
            case _ where supportedConfigs[key] == nil:
                throw TopicError(.invalidConfig, "unknown or unsupported topic config '\(key)'")
            case "max.message.bytes":
                // The journal refuses a limit above the node's own when the shards are made.
                guard let limit = Int32(value), limit == -1 || Int(limit) >= RecordBatch.headerSize else {
                    throw TopicError(
                        .invalidConfig,
                        "max.message.bytes must be -1 (the node's limit) or at least \(RecordBatch.headerSize), not '\(value)'"
                    )
                }
            case "retention.ms", "retention.bytes", "local.retention.ms":
                guard Int64(value) != nil else {
                    throw TopicError(.invalidConfig, "\(key) must be a number, not '\(value)'")
                }
            case "min.insync.replicas" where value != "1":
                throw TopicError(
                    .invalidConfig,
                    "min.insync.replicas=\(value) cannot be met: a Strata node keeps one replica of a partition")
            case "compression.type" where value != "producer":
                throw TopicError(
                    .invalidConfig,
                    "compression.type=\(value) is not supported: batches are stored as producers compressed them (producer)"
                )
            case "cleanup.policy" where value != "delete":
                throw TopicError(.invalidConfig, "cleanup.policy=\(value) is not supported (only delete)")
            case "strata.durability" where value != "fsync" && value != "async":
                throw TopicError(.invalidConfig, "strata.durability is fsync or async")
            case MQTTTopicRoots.prefixConfig where !MQTTTopicRoots.isValidPrefix(value):
                throw TopicError(
                    .invalidConfig,
                    "\(key) must be an MQTT topic name (no + # or NUL, not a $ topic, at most 32767 bytes), not '\(value)'"
                )
            case "message.timestamp.type" where value != "CreateTime":
                throw TopicError(.invalidConfig, "message.timestamp.type=\(value) is not supported (only CreateTime)")
            default: break
            }
        }
    }

    /// Every supported config with its value for this topic, defaults included.
    public var describedConfigs: [(name: String, value: String, isDefault: Bool)] {
        Self.supportedConfigs.keys.sorted().map { name in
            (name, configs[name] ?? Self.supportedConfigs[name]!, configs[name] == nil)
        }
    }

    /// What the journal keeps for each partition's shard.
    public var shardConfig: ShardConfig {
        let retentionMs = configs["retention.ms"].flatMap { Int64($0) }
        let retentionBytes = configs["retention.bytes"].flatMap { Int64($0) }
        // local.retention.ms: -2 (Kafka's default) leaves it to the node's object tier setting,
        // -1 keeps the partition on local disk.
        let localRetentionMs = configs["local.retention.ms"].flatMap { Int64($0) }
        let maxMessageBytes = configs["max.message.bytes"].flatMap { Int($0) }
        // retention.ms: -1 keeps batches however old (Kafka's meaning); not set, 7 days.
        let retention: Int64? = if let retentionMs { retentionMs < 0 ? nil : retentionMs } else { 604_800_000 }
        return ShardConfig(
            durability: configs["strata.durability"] == "async" ? .async : .fsync,
            retentionMilliseconds: retention,
            retentionBytes: retentionBytes.flatMap { $0 < 0 ? nil : $0 },
            localRetentionMilliseconds: localRetentionMs.flatMap { $0 == -1 ? .max : $0 < 0 ? nil : $0 },
            maxBatchBytes: maxMessageBytes.flatMap { $0 < 0 ? nil : $0 })
    }

    /// Kafka's rule, which every topic follows: 1–249 characters of [a-zA-Z0-9._-], not "." or "..".
    public static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 249, name != ".", name != ".." else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
    }
}
