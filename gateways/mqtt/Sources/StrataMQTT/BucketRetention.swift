import StrataJournal

/// How long the MQTT bucket shards keep messages: older than `milliseconds` (nil: however old)
/// or beyond `bytes` per bucket (nil: no size limit). One setting per journal, stored in the
/// journal (`mqtt.settings`, `bucket-retention`) by the last gateway given one.
public struct BucketRetention: Codable, Sendable, Hashable, CustomStringConvertible {
    public var milliseconds: Int64?
    public var bytes: Int64?

    public init(milliseconds: Int64?, bytes: Int64?) {
        self.milliseconds = milliseconds
        self.bytes = bytes
    }

    /// Seven days, no size limit (Kafka's topic default).
    public static let standard = BucketRetention(milliseconds: 7 * 24 * 3_600_000, bytes: nil)

    public func with(milliseconds: Int64?) -> BucketRetention {
        BucketRetention(milliseconds: milliseconds, bytes: bytes)
    }
    public func with(bytes: Int64?) -> BucketRetention { BucketRetention(milliseconds: milliseconds, bytes: bytes) }

    /// `base` (the standard retention when nil) with the limits given as flag text (a number, or
    /// `none`) laid over it; `base` itself when neither is given.
    public static func given(milliseconds: String?, bytes: String?, over base: BucketRetention?) throws(JournalError)
        -> BucketRetention?
    {
        guard milliseconds != nil || bytes != nil else { return base }
        var retention = base ?? .standard
        if let milliseconds { retention.milliseconds = try ShardConfig.parseLimit(milliseconds) }
        if let bytes { retention.bytes = try ShardConfig.parseLimit(bytes) }
        return retention
    }

    public var description: String {
        "\(milliseconds.map { "\($0) ms" } ?? "no age limit"), \(bytes.map { "\($0) bytes" } ?? "no size limit")"
    }
}
