import NIOCore
import StrataJournal
import StrataTopics

// Metadata, CreateTopics, DeleteTopics.

struct MetadataRequest {
    /// nil: every topic.
    var topics: [String]?
    var allowAutoCreate = true

    init(_ reader: inout KafkaReader, version: Int16) throws {
        let named = try reader.nullableArray { reader -> String? in
            if version >= 10 { _ = try reader.uuid() }  // topic id: topics are looked up by name here
            let name = version >= 10 ? try reader.nullableString() : try reader.string()
            try reader.taggedFields()
            return name
        }
        // v0: an empty array means every topic; v1+: null does.
        topics = (named == nil || (version == 0 && named!.isEmpty)) ? nil : named!.compactMap { $0 }
        if version >= 4 { allowAutoCreate = try reader.bool() }
        if version >= 8 && version <= 10 { _ = try reader.bool() }  // include cluster authorized operations
        if version >= 8 { _ = try reader.bool() }  // include topic authorized operations
        try reader.taggedFields()
    }
}

struct CreateTopicsRequest {
    struct Topic {
        var name: String
        var partitions: Int32
        var replicationFactor: Int16
        var assignments: Int
        var configs: [String: String]
    }
    var topics: [Topic]
    var validateOnly = false

    init(_ reader: inout KafkaReader, version: Int16) throws {
        topics = try reader.array { reader in
            let name = try reader.string()
            let partitions = try reader.int32()
            let replicationFactor = try reader.int16()
            let assignments = try reader.array { reader in
                _ = try reader.int32()
                _ = try reader.array { try $0.int32() }
                try reader.taggedFields()
            }.count
            var configs: [String: String] = [:]
            for (key, value) in try reader.array({ reader -> (String, String?) in
                let pair = (try reader.string(), try reader.nullableString())
                try reader.taggedFields()
                return pair
            }) {
                configs[key] = value
            }
            try reader.taggedFields()
            return Topic(
                name: name, partitions: partitions, replicationFactor: replicationFactor, assignments: assignments,
                configs: configs)
        }
        _ = try reader.int32()  // timeout: creation is synchronous here
        if version >= 1 { validateOnly = try reader.bool() }
        try reader.taggedFields()
    }
}

struct DeleteTopicsRequest {
    var names: [String?]

    init(_ reader: inout KafkaReader, version: Int16) throws {
        if version >= 6 {
            names = try reader.array { reader in
                let name = try reader.nullableString()
                _ = try reader.uuid()
                try reader.taggedFields()
                return name
            }
        } else {
            names = try reader.array { try $0.string() }
        }
        _ = try reader.int32()  // timeout
        try reader.taggedFields()
    }
}

extension KafkaGateway {
    /// "Not requested" for authorized-operations fields.
    static let operationsNotRequested = Int32.min

    func metadata(_ request: MetadataRequest, _ header: KafkaRequestHeader) async -> KafkaWriter {
        let version = header.version
        var listed: [(name: String, topic: TopicEntry?, error: KafkaError)] = []
        do {
            if let names = request.topics {
                for name in names {
                    guard canSee(header, topic: name) else {
                        listed.append((name, nil, .topicAuthorizationFailed))
                        continue
                    }
                    do {
                        let topic = try await topicForClient(
                            name, autoCreate: request.allowAutoCreate && permits(header, .admin, topic: name))
                        let error: KafkaError =
                            topic != nil
                            ? .none : (TopicEntry.isValidName(name) ? .unknownTopicOrPartition : .invalidTopic)
                        listed.append((name, topic, error))
                    } catch {
                        listed.append((name, nil, KafkaFailure.from(error).code))
                    }
                }
            } else {
                listed = try await allTopics().sorted { $0.key < $1.key }.filter { canSee(header, topic: $0.key) }.map {
                    ($0.key, $0.value, .none)
                }
            }
        } catch {
            logger.error("kafka metadata failed", metadata: ["error": "\(error)"])
        }
        let node = configuration.nodeID
        var writer = KafkaWriter(flexible: header.flexible)
        if version >= 3 { writer.int32(0) }
        // Every gateway of this journal is a broker. Each can serve every partition; the leader
        // named is the partition's owner among them (the same answer from every gateway, so
        // clients do not move partitions between brokers with each metadata refresh).
        writer.array(brokers()) { writer, broker in
            writer.int32(broker.id)
            writer.string(broker.host)
            writer.int32(broker.port)
            if version >= 1 { writer.nullableString(nil) }  // rack
            writer.taggedFields()
        }
        if version >= 2 { writer.nullableString(configuration.clusterID) }
        if version >= 1 { writer.int32(node) }  // controller
        writer.array(listed) { writer, entry in
            writer.int16(entry.error.rawValue)
            writer.string(entry.name)
            if version >= 10 { writer.uuid(entry.topic?.id ?? [UInt8](repeating: 0, count: 16)) }
            if version >= 1 { writer.bool(false) }  // internal
            writer.array(Array(0..<(entry.topic?.partitions ?? 0))) { writer, partition in
                let leader = partitionLeader(entry.name, partition)
                writer.int16(0)
                writer.int32(partition)
                writer.int32(leader)
                if version >= 7 { writer.int32(0) }  // leader epoch
                writer.array([leader]) { $0.int32($1) }  // replicas
                writer.array([leader]) { $0.int32($1) }  // in-sync replicas
                if version >= 5 { writer.array([Int32]()) { $0.int32($1) } }  // offline replicas
                writer.taggedFields()
            }
            if version >= 8 { writer.int32(Self.operationsNotRequested) }
            writer.taggedFields()
        }
        if version >= 8 && version <= 10 { writer.int32(Self.operationsNotRequested) }
        writer.taggedFields()
        return writer
    }

    func createTopics(_ request: CreateTopicsRequest, _ header: KafkaRequestHeader) async -> KafkaWriter {
        let version = header.version
        var results: [(name: String, topic: TopicEntry?, failure: KafkaFailure?)] = []
        for entry in request.topics {
            do {
                guard permits(header, .admin, topic: entry.name) else {
                    throw KafkaFailure(.topicAuthorizationFailed, "not allowed to create topic '\(entry.name)'")
                }
                guard entry.replicationFactor == -1 || entry.replicationFactor == 1 else {
                    throw KafkaFailure(
                        .invalidReplicationFactor,
                        "replication factor \(entry.replicationFactor) is larger than the 1 node of this cluster")
                }
                let partitions =
                    entry.assignments > 0
                    ? Int32(entry.assignments)
                    : entry.partitions == -1 ? configuration.defaultPartitions : entry.partitions
                if request.validateOnly {
                    guard TopicEntry.isValidName(entry.name) else {
                        throw KafkaFailure(.invalidTopic, "invalid topic name '\(entry.name)'")
                    }
                    if try await topic(entry.name) != nil {
                        throw KafkaFailure(.topicAlreadyExists, "topic '\(entry.name)' already exists")
                    }
                    results.append((entry.name, try TopicEntry(partitions: partitions, configs: entry.configs), nil))
                } else {
                    results.append(
                        (
                            entry.name,
                            try await createTopic(entry.name, partitions: partitions, configs: entry.configs), nil
                        ))
                }
            } catch {
                results.append((entry.name, nil, KafkaFailure.from(error)))
            }
        }
        var writer = KafkaWriter(flexible: header.flexible)
        if version >= 2 { writer.int32(0) }
        writer.array(results) { writer, result in
            writer.string(result.name)
            if version >= 7 { writer.uuid(result.topic?.id ?? [UInt8](repeating: 0, count: 16)) }
            writer.int16(result.failure?.code.rawValue ?? 0)
            if version >= 1 { writer.nullableString(result.failure?.message) }
            if version >= 5 {
                writer.int32(result.topic?.partitions ?? -1)
                writer.int16(result.topic == nil ? -1 : 1)
                if let topic = result.topic {
                    writer.array(topic.describedConfigs) { writer, config in
                        writer.string(config.name)
                        writer.nullableString(config.value)
                        writer.bool(false)  // read only
                        writer.int8(config.isDefault ? 5 : 1)  // DEFAULT_CONFIG / DYNAMIC_TOPIC_CONFIG
                        writer.bool(false)  // sensitive
                        writer.taggedFields()
                    }
                } else {
                    writer.count(nil)
                }
            }
            writer.taggedFields()
        }
        writer.taggedFields()
        return writer
    }

    func deleteTopics(_ request: DeleteTopicsRequest, _ header: KafkaRequestHeader) async -> KafkaWriter {
        let version = header.version
        var results: [(name: String?, failure: KafkaFailure?)] = []
        for name in request.names {
            guard let name else {
                results.append((nil, KafkaFailure(.unknownTopicOrPartition, "topics are deleted by name here")))
                continue
            }
            do {
                guard permits(header, .admin, topic: name) else {
                    throw KafkaFailure(.topicAuthorizationFailed, "not allowed to delete topic '\(name)'")
                }
                try await deleteTopic(name)
                results.append((name, nil))
            } catch {
                results.append((name, KafkaFailure.from(error)))
            }
        }
        var writer = KafkaWriter(flexible: header.flexible)
        if version >= 1 { writer.int32(0) }
        writer.array(results) { writer, result in
            writer.nullableString(result.name)
            if version >= 6 { writer.uuid([UInt8](repeating: 0, count: 16)) }
            writer.int16(result.failure?.code.rawValue ?? 0)
            if version >= 5 { writer.nullableString(result.failure?.message) }
            writer.taggedFields()
        }
        writer.taggedFields()
        return writer
    }
}

// CreatePartitions, DescribeConfigs.

extension KafkaGateway {
    /// Adds partitions to a topic: the new shards first, then the topic entry with the new count.
    func addPartitions(_ name: String, count: Int32) async throws {
        remember(try await registry.addPartitions(name, count: count), as: name)
    }

    func createPartitions(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let topics = try reader.array { reader -> (String, Int32) in
            let name = try reader.string()
            let count = try reader.int32()
            _ = try reader.nullableArray { reader in
                _ = try reader.array { try $0.int32() }
                try reader.taggedFields()
            }
            try reader.taggedFields()
            return (name, count)
        }
        _ = try reader.int32()  // timeout
        let validateOnly = try reader.bool()
        try reader.taggedFields()
        return { [self] in
            var results: [(String, KafkaFailure?)] = []
            for (name, count) in topics {
                do {
                    guard permits(header, .admin, topic: name) else {
                        throw KafkaFailure(.topicAuthorizationFailed, "not allowed to change topic '\(name)'")
                    }
                    if validateOnly {
                        guard let topic = try await topic(name) else {
                            throw KafkaFailure(.unknownTopicOrPartition, "no topic '\(name)'")
                        }
                        guard count > topic.partitions else {
                            throw KafkaFailure(
                                .invalidPartitions, "the new count must be more than \(topic.partitions)")
                        }
                    } else {
                        try await addPartitions(name, count: count)
                    }
                    results.append((name, nil))
                } catch {
                    results.append((name, KafkaFailure.from(error)))
                }
            }
            var writer = KafkaWriter(flexible: header.flexible)
            writer.int32(0)
            writer.array(results) { writer, result in
                writer.string(result.0)
                writer.int16(result.1?.code.rawValue ?? 0)
                writer.nullableString(result.1?.message)
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }

    /// The broker's settings as DescribeConfigs reports them (read only).
    var brokerConfigs: [(name: String, value: String, isDefault: Bool)] {
        [
            ("auto.create.topics.enable", "\(configuration.autoCreateTopics)", configuration.autoCreateTopics),
            ("broker.id", "\(configuration.nodeID)", true),
            ("default.replication.factor", "1", true),
            ("num.partitions", "\(configuration.defaultPartitions)", configuration.defaultPartitions == 1),
            ("socket.request.max.bytes", "\(configuration.maxRequestSize)", configuration.maxRequestSize == 100 << 20),
        ]
    }

    func describeConfigs(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let resources = try reader.array { reader -> (Int8, String, [String]?) in
            let type = try reader.int8()
            let name = try reader.string()
            let keys = try reader.nullableArray { try $0.string() }
            try reader.taggedFields()
            return (type, name, keys)
        }
        if version >= 1 { _ = try reader.bool() }  // include synonyms
        if version >= 3 { _ = try reader.bool() }  // include documentation
        try reader.taggedFields()
        return { [self] in
            typealias Config = (name: String, value: String, isDefault: Bool)
            var results: [(type: Int8, name: String, failure: KafkaFailure?, configs: [Config], topic: Bool)] = []
            for (type, name, keys) in resources {
                do {
                    var configs: [Config]
                    switch type {
                    case 2:  // topic
                        guard canSee(header, topic: name) else {
                            throw KafkaFailure(.topicAuthorizationFailed, "not allowed to describe topic '\(name)'")
                        }
                        guard let topic = try await topic(name) else {
                            throw KafkaFailure(.unknownTopicOrPartition, "no topic '\(name)'")
                        }
                        configs = topic.describedConfigs
                    case 4:  // broker
                        guard name.isEmpty || name == "\(configuration.nodeID)" else {
                            throw KafkaFailure(
                                .invalidRequest, "no broker '\(name)' (this node is \(configuration.nodeID))")
                        }
                        configs = brokerConfigs
                    default:
                        throw KafkaFailure(.invalidRequest, "resource type \(type) is not described here")
                    }
                    if let keys { configs = configs.filter { keys.contains($0.name) } }
                    results.append((type, name, nil, configs, type == 2))
                } catch {
                    results.append((type, name, KafkaFailure.from(error), [], type == 2))
                }
            }
            var writer = KafkaWriter(flexible: header.flexible)
            writer.int32(0)
            writer.array(results) { writer, result in
                writer.configResource(result.failure, type: result.type, name: result.name)
                writer.array(result.configs) { writer, config in
                    writer.string(config.name)
                    writer.nullableString(config.value)
                    writer.bool(!result.topic)  // broker settings are read only
                    if version == 0 {
                        writer.bool(config.isDefault)
                    } else {
                        // DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG
                        writer.int8(config.isDefault ? 5 : (result.topic ? 1 : 4))
                    }
                    writer.bool(false)  // sensitive
                    if version >= 1 { writer.array([Int]()) { _, _ in } }  // synonyms
                    if version >= 3 {
                        writer.int8(0)  // type: unknown
                        writer.nullableString(nil)  // documentation
                    }
                    writer.taggedFields()
                }
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }
}

// AlterConfigs, IncrementalAlterConfigs.

extension KafkaGateway {
    /// One resource's change in AlterConfigs (`operation` nil: the whole set is replaced) or
    /// IncrementalAlterConfigs (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT).
    struct ConfigChange: Sendable {
        var name: String
        var operation: Int8?
        var value: String?
    }

    /// Reads AlterConfigs (`incremental` false) or IncrementalAlterConfigs; topics only (broker
    /// settings are read only). A topic's new configs are checked whole, then its partitions'
    /// shards take the new retention and durability, then the topic entry is written.
    func alterConfigs(_ reader: inout KafkaReader, _ header: KafkaRequestHeader, incremental: Bool) throws -> KafkaWork
    {
        let resources = try reader.array { reader -> (Int8, String, [ConfigChange]) in
            let type = try reader.int8()
            let name = try reader.string()
            let changes = try reader.array { reader -> ConfigChange in
                let key = try reader.string()
                let operation: Int8? = incremental ? try reader.int8() : nil
                let value = try reader.nullableString()
                try reader.taggedFields()
                return ConfigChange(name: key, operation: operation, value: value)
            }
            try reader.taggedFields()
            return (type, name, changes)
        }
        let validateOnly = try reader.bool()
        try reader.taggedFields()
        return { [self] in
            var results: [(type: Int8, name: String, failure: KafkaFailure?)] = []
            for (type, name, changes) in resources {
                do {
                    guard type == 2 else {
                        throw KafkaFailure(
                            .invalidRequest,
                            type == 4
                                ? "broker settings are read only here (journal-node's config file)"
                                : "resource type \(type) has no configs here")
                    }
                    guard permits(header, .admin, topic: name) else {
                        throw KafkaFailure(.topicAuthorizationFailed, "not allowed to change topic '\(name)'")
                    }
                    var seen = Set<String>()
                    for change in changes where !seen.insert(change.name).inserted {
                        throw KafkaFailure(.invalidRequest, "\(change.name) is named twice")
                    }
                    try await registry.changing(name) { [self] in
                        try await alterTopicConfigs(name, changes, incremental: incremental, validateOnly: validateOnly)
                    }
                    results.append((type, name, nil))
                } catch {
                    results.append((type, name, KafkaFailure.from(error)))
                }
            }
            var writer = KafkaWriter(flexible: header.flexible)
            writer.int32(0)
            writer.array(results) { writer, result in
                writer.configResource(result.failure, type: result.type, name: result.name)
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }

    /// The topic's configs after `changes` (AlterConfigs replaces them all, IncrementalAlterConfigs
    /// changes the named ones), checked; unless `validateOnly`, in effect on return. Runs through
    /// `registry.changing`, on the entry as the journal holds it.
    private func alterTopicConfigs(
        _ name: String, _ changes: [ConfigChange], incremental: Bool, validateOnly: Bool
    ) async throws {
        let logger = self.logger
        let topic = try await registry.alterConfigs(name, validateOnly: validateOnly) { current in
            var configs = incremental ? current : [:]
            // Configs an earlier version took without effect (segment.bytes, …) go
            // at the first change, rather than making every change of the topic fail.
            for (key, value) in configs where (try? TopicEntry.validate([key: value])) == nil {
                configs[key] = nil
                logger.notice(
                    "kafka topic config without effect dropped",
                    metadata: ["kafka.topic": "\(name)", "kafka.config": "\(key)=\(value)"])
            }
            for change in changes {
                switch change.operation {
                case nil, 0:
                    guard let value = change.value else {
                        if change.operation == nil { continue }  // AlterConfigs: a null value leaves the default
                        throw KafkaFailure(.invalidRequest, "SET of \(change.name) needs a value")
                    }
                    configs[change.name] = value
                case 1:
                    configs[change.name] = nil
                case 2, 3:
                    // cleanup.policy is Kafka's one list config here, and only "delete" is supported.
                    guard change.name == "cleanup.policy" else {
                        throw KafkaFailure(
                            .invalidConfig, "\(change.name) is not a list: APPEND and SUBTRACT do not apply")
                    }
                    let current = Set((configs[change.name] ?? "delete").split(separator: ",").map(String.init))
                    let given = Set((change.value ?? "").split(separator: ",").map(String.init))
                    let result = change.operation == 2 ? current.union(given) : current.subtracting(given)
                    configs[change.name] = result.sorted().joined(separator: ",")
                default:
                    throw KafkaFailure(.invalidRequest, "config operation \(change.operation!) is unknown")
                }
            }
            return configs
        }
        if !validateOnly { remember(topic, as: name) }
    }
}

extension KafkaWriter {
    /// The head of one resource's entry in DescribeConfigs and (Incremental)AlterConfigs
    /// answers: error code, error message, resource type, resource name.
    mutating func configResource(_ failure: KafkaFailure?, type: Int8, name: String) {
        int16(failure?.code.rawValue ?? 0)
        nullableString(failure?.message)
        int8(type)
        string(name)
    }
}
