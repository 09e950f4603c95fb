/// Why the topic registry refused a change. Each gateway answers it with its protocol's error
/// (Kafka: INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_CONFIG, TOPIC_ALREADY_EXISTS,
/// UNKNOWN_TOPIC_OR_PARTITION).
public struct TopicError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }

        /// The name breaks the registry's naming rule (`TopicEntry.isValidName`).
        public static let invalidName = Code("invalid_name")
        /// The partition count is out of range, or not more than the topic has.
        public static let invalidPartitions = Code("invalid_partitions")
        /// A config is unknown, not put into effect by Strata, or has a bad value.
        public static let invalidConfig = Code("invalid_config")
        /// A topic of that name exists already.
        public static let exists = Code("exists")
        /// No topic of that name.
        public static let unknown = Code("unknown")

        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
