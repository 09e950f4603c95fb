import Foundation
import Logging
import StrataClient
import StrataJournal
import Synchronization

/// The topics every gateway on a journal shares: entries in the journal's key-value store
/// (namespace `kafka.topics`, the name Kafka's gateway gave it before the registry), each topic
/// partition a shard `kafka/<topic>/<partition>`. Creation, deletion and partition changes are
/// ordered per topic within this process; two processes changing one topic at once are not.
public final class TopicRegistry: Sendable {
    public static let namespace = "kafka.topics"
    /// A random token rewritten after every change of the registry (key `version`), which
    /// gateways read often to notice another process's changes (`watch`).
    public static let versionNamespace = "kafka.topics.version"
    static let versionKey = Array("version".utf8)

    public let journal: any JournalClient
    private let logger: Logger
    private let changes = KeyedChain<Void>()

    public init(journal: any JournalClient, logger: Logger) {
        self.journal = journal
        self.logger = logger
    }

    /// The shard holding one partition of a topic.
    public static func shardName(_ topic: String, _ partition: Int32) -> String { "kafka/\(topic)/\(partition)" }

    /// The topic and partition a shard holds, when it is a topic partition's shard.
    public static func partition(ofShard shard: String) -> (topic: String, partition: Int32)? {
        let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "kafka", let partition = Int32(parts[2]), partition >= 0 else { return nil }
        return (String(parts[1]), partition)
    }

    /// A topic's entry as the journal holds it now.
    public func entry(_ name: String) async throws -> TopicEntry? {
        guard let bytes = try await journal.get(namespace: Self.namespace, key: Array(name.utf8)) else { return nil }
        return try JSONDecoder().decode(TopicEntry.self, from: Data(bytes))
    }

    /// Every topic (entries that do not decode are skipped).
    public func all() async throws -> [String: TopicEntry] {
        var found: [String: TopicEntry] = [:]
        for pair in try await journal.scan(namespace: Self.namespace) {
            guard let entry = try? JSONDecoder().decode(TopicEntry.self, from: Data(pair.value)) else { continue }
            found[String(decoding: pair.key, as: UTF8.self)] = entry
        }
        return found
    }

    /// Writes a topic's entry (what makes it, or its new partition count or configs, visible).
    public func store(_ entry: TopicEntry, as name: String) async throws {
        try await journal.put(
            namespace: Self.namespace, key: Array(name.utf8), value: Array(try JSONEncoder().encode(entry)))
        try await changed()
    }

    /// Marks the registry changed for the watchers.
    private func changed() async throws {
        var uuid = UUID().uuid
        let token = withUnsafeBytes(of: &uuid) { Array($0) }
        try await journal.put(namespace: Self.versionNamespace, key: Self.versionKey, value: token)
    }

    /// The registry's current version token (nil: never changed since versions were written).
    public func version() async throws -> [UInt8]? {
        try await journal.get(namespace: Self.versionNamespace, key: Self.versionKey)
    }

    /// Calls `changed` with every topic now, and again whenever the registry changes: the
    /// version token is read every `interval`, and every topic is read again when it moved
    /// (and every `rescan` regardless, for a change whose process died before its token was
    /// written). Runs until cancelled; read errors are retried at the next tick. `changed` also
    /// gets when the read began (`WallClock` milliseconds): what this process learnt of a topic
    /// after that is newer than the read.
    public func watch(
        every interval: Duration = .milliseconds(100), rescan: Duration = .seconds(10),
        _ changed: @Sendable (_ topics: [String: TopicEntry], _ readSince: Int64) -> Void
    ) async {
        var seen: [UInt8]??
        var scanned = ContinuousClock.now
        while !Task.isCancelled {
            do {
                let began = WallClock.milliseconds()
                let now = try await version()
                if seen == nil || seen! != now || ContinuousClock.now - scanned >= rescan {
                    let topics = try await all()
                    seen = .some(now)
                    scanned = .now
                    changed(topics, began)
                }
            } catch {
                logger.debug("topic registry not read", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Runs `body`, a change of topic `name`, after the changes of it submitted before in this
    /// process, and returns what it returns.
    public func changing<T: Sendable>(_ name: String, _ body: @escaping @Sendable () async throws -> T) async throws
        -> T
    {
        let result = Mutex<T?>(nil)
        try await changes.submit(name) { previous in
            _ = await previous?.result
            let value = try await body()
            result.withLock { $0 = value }
        }.value
        return result.withLock { $0 }!
    }

    /// Creates a topic: its partitions' shards first, then the entry that makes it visible (a
    /// crash in between leaves shards that a second create takes over).
    public func create(_ name: String, partitions: Int32, configs: [String: String]) async throws -> TopicEntry {
        try await changing(name) { [self] in
            guard TopicEntry.isValidName(name) else { throw TopicError(.invalidName, "invalid topic name '\(name)'") }
            var entry = try TopicEntry(partitions: partitions, configs: configs)
            if try await self.entry(name) != nil { throw TopicError(.exists, "topic '\(name)' already exists") }
            var first: ShardInfo?
            for partition in 0..<partitions {
                let shard = Self.shardName(name, partition)
                let info: ShardInfo
                do {
                    info = try await journal.createShard(shard, config: entry.shardConfig)
                } catch let error as JournalError where error.code == .shardExists {
                    info = try await journal.describeShard(shard)
                } catch let error as JournalError where error.code == .invalidArgument {
                    // A config the node cannot keep (max.message.bytes above its own limit).
                    throw TopicError(.invalidConfig, error.message)
                }
                if partition == 0 { first = info }
            }
            // Two processes creating the topic at once (Kafka auto-creation and an MQTT first
            // publish) get one journal shard for partition 0 between them, and so one topic id.
            entry.id = TopicEntry.id(name: name, firstShard: first!.id)
            try await store(entry, as: name)
            logger.info("topic created", metadata: ["topic.name": "\(name)", "topic.partitions": "\(partitions)"])
            return entry
        }
    }

    /// Deletes a topic: the entry first (the topic is gone for clients), then its shards.
    /// Returns the entry it had.
    public func delete(_ name: String) async throws -> TopicEntry {
        try await changing(name) { [self] in
            guard let entry = try await entry(name) else { throw TopicError(.unknown, "no topic '\(name)'") }
            try await journal.delete(namespace: Self.namespace, key: Array(name.utf8))
            try await changed()
            for partition in 0..<entry.partitions {
                do {
                    try await journal.deleteShard(Self.shardName(name, partition))
                } catch let error as JournalError where error.code == .unknownShard {
                    continue
                }
            }
            logger.info("topic deleted", metadata: ["topic.name": "\(name)"])
            return entry
        }
    }

    /// Raises a topic's partition count: the new shards first, then the entry with the new count.
    public func addPartitions(_ name: String, count: Int32) async throws -> TopicEntry {
        try await changing(name) { [self] in
            guard var entry = try await entry(name) else { throw TopicError(.unknown, "no topic '\(name)'") }
            guard count > entry.partitions, count <= TopicEntry.maxPartitions else {
                throw TopicError(
                    .invalidPartitions,
                    "topic '\(name)' has \(entry.partitions) partitions; the new count must be more (at most \(TopicEntry.maxPartitions))"
                )
            }
            for partition in entry.partitions..<count {
                do {
                    _ = try await journal.createShard(Self.shardName(name, partition), config: entry.shardConfig)
                } catch let error as JournalError where error.code == .shardExists {
                    continue
                }
            }
            entry.partitions = count
            try await store(entry, as: name)
            logger.info("topic partitions added", metadata: ["topic.name": "\(name)", "topic.partitions": "\(count)"])
            return entry
        }
    }

    /// Replaces a topic's configs with `change(current configs)`, checked, and puts them into
    /// effect: every partition's shard first, then the entry (a change that failed half way
    /// left some shards ahead of the entry, and the next one brings them in line). With
    /// `validateOnly`, checks and changes nothing. Call it inside `changing(name)`.
    public func alterConfigs(
        _ name: String, validateOnly: Bool = false, _ change: ([String: String]) throws -> [String: String]
    ) async throws -> TopicEntry {
        guard var entry = try await entry(name) else { throw TopicError(.unknown, "no topic '\(name)'") }
        let configs = try change(entry.configs)
        try TopicEntry.validate(configs)
        entry.configs = configs
        guard !validateOnly else { return entry }
        for partition in 0..<entry.partitions {
            do {
                _ = try await journal.alterShard(Self.shardName(name, partition), config: entry.shardConfig)
            } catch let error as JournalError where error.code == .invalidArgument {
                throw TopicError(.invalidConfig, error.message)
            }
        }
        try await store(entry, as: name)
        logger.info("topic configs changed", metadata: ["topic.name": "\(name)", "topic.configs": "\(configs)"])
        return entry
    }
}
