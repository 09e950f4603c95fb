import StrataJournal

/// The MQTT side of the registry (docs/topics.md, "Names → shards"): each registry topic's MQTT
/// root — its name, or the MQTT topic prefix its `strata.mqtt.prefix` config names — and which
/// registry topic an MQTT topic's messages are records of. A prefix overrides the default
/// rule: MQTT topics at or below it are records of that topic, and a topic with a prefix is
/// not named by its first level any more. When two topics claim one prefix, the first name in
/// order has it (every gateway decides alike).
public struct MQTTTopicRoots: Sendable, Equatable {
    public static let prefixConfig = "strata.mqtt.prefix"

    /// The prefix of each registry topic that has one.
    private var prefixes: [String: String] = [:]
    /// The registry topic each prefix belongs to.
    private var byPrefix: [String: String] = [:]

    public init() {}

    /// Sets (or, with nil or an empty prefix, removes) a registry topic's prefix.
    public mutating func set(_ topic: String, prefix: String?) {
        let prefix = prefix.flatMap { $0.isEmpty ? nil : $0 }
        guard prefixes[topic] != prefix else { return }
        prefixes[topic] = prefix
        byPrefix = [:]
        for (name, claimed) in prefixes where byPrefix[claimed].map({ name < $0 }) ?? true { byPrefix[claimed] = name }
    }

    public mutating func remove(_ topic: String) { set(topic, prefix: nil) }

    /// The MQTT topic under which a record of registry topic `topic` without a key of its own is
    /// delivered, and below which its keys name MQTT topics.
    public func root(of topic: String) -> String { prefixes[topic] ?? topic }

    /// The registry topic whose records an MQTT topic's messages are: the one with the longest
    /// prefix at or above it; else, by the default rule, the topic its first level names —
    /// unless that topic has a prefix of its own. Nil: none (the MQTT gateway's bucket shards).
    public func topic(forMQTT mqttTopic: String) -> String? {
        guard mqttTopic.utf8.first != UInt8(ascii: "$") else { return nil }
        if !byPrefix.isEmpty {
            var candidate = Substring(mqttTopic)
            while true {
                if let topic = byPrefix[String(candidate)] { return topic }
                guard let slash = candidate.lastIndex(of: "/") else { break }
                candidate = candidate[..<slash]
            }
        }
        guard let name = TopicMapping.topic(forMQTT: mqttTopic), prefixes[name] == nil else { return nil }
        return name
    }

    /// A prefix a topic may have: an MQTT topic name (no wildcards, no NUL, not a `$` topic) of
    /// at most 32,767 bytes, or empty (none).
    public static func isValidPrefix(_ prefix: String) -> Bool {
        prefix.isEmpty
            || (prefix.utf8.count <= 32_767 && prefix.utf8.first != UInt8(ascii: "$")
                && !prefix.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }))
    }
}

/// The default mapping between MQTT topic names and registry topics (docs/topics.md): an MQTT
/// topic `a/b/c` is a record of topic `a`, keyed `a/b/c`; a record of topic `a` is the MQTT
/// topic its key names when the key is `a` or below it, else the MQTT topic `a`.
public enum TopicMapping {
    /// The registry topic an MQTT topic's messages are records of: its first level, when that is
    /// a legal topic name and the topic is not a `$` topic; nil otherwise (the MQTT gateway then
    /// keeps them in its own bucket shards, which no other protocol names).
    public static func topic(forMQTT mqttTopic: String) -> String? {
        guard let first = mqttTopic.utf8.first, first != UInt8(ascii: "$") else { return nil }
        let level = mqttTopic.utf8.split(separator: UInt8(ascii: "/"), maxSplits: 1, omittingEmptySubsequences: false)[
            0]
        let name = String(decoding: level, as: UTF8.self)
        return TopicEntry.isValidName(name) ? name : nil
    }

    /// The MQTT topic a record of `topic` is delivered on: the record's key when it is valid
    /// UTF-8 naming `topic` or a topic below it (no wildcards, no NUL), else `topic` itself.
    public static func mqttTopic(ofKey key: [UInt8]?, in topic: String) -> String {
        SubjectPattern.mqtt("").subject(ofKey: key, root: topic)
    }

    /// The `amq.topic` routing key of an MQTT topic name or filter, by RabbitMQ's MQTT plugin
    /// convention (so users of both recognise it): levels separated by `.` instead of `/`, a `.`
    /// inside a level written `/`, and the filter wildcard `+` as `*` (`#` stays `#`).
    public static func amqpRoutingKey(forMQTT topic: String) -> String {
        swapping(topic, [("/", "."), (".", "/"), ("+", "*")])
    }

    /// The MQTT topic name or filter of an `amq.topic` routing key or binding pattern: the
    /// reverse of `amqpRoutingKey(forMQTT:)`.
    public static func mqttTopic(forAMQPRoutingKey key: String) -> String {
        swapping(key, [(".", "/"), ("/", "."), ("*", "+")])
    }

    /// `text` with each character of a pair's first element written as its second.
    private static func swapping(_ text: String, _ pairs: [(Character, Character)]) -> String {
        String(text.map { character in pairs.first { $0.0 == character }?.1 ?? character })
    }

    /// Kafka's default partitioner for a keyed record (the Java client's and kafka-python's):
    /// murmur2 of the key, made positive, modulo the partition count.
    public static func partition(forKey key: [UInt8], partitions: Int32) -> Int32 {
        Int32(bitPattern: UInt32(bitPattern: murmur2(key)) & 0x7fff_ffff) % partitions
    }

    /// MurmurHash2 (32 bit) as Kafka's `Utils.murmur2` computes it, seed 0x9747b28c.
    public static func murmur2(_ data: [UInt8]) -> Int32 {
        let m: UInt32 = 0x5bd1_e995
        let r: UInt32 = 24
        var h: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: data.count)
        let blocks = data.count / 4
        for i in 0..<blocks {
            let j = i * 4
            var k = UInt32(data[j]) | UInt32(data[j + 1]) << 8 | UInt32(data[j + 2]) << 16 | UInt32(data[j + 3]) << 24
            k = k &* m
            k ^= k >> r
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = blocks * 4
        switch data.count % 4 {
        case 3:
            h ^= UInt32(data[tail + 2]) << 16
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 2:
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 1:
            h ^= UInt32(data[tail])
            h = h &* m
        default: break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }
}
