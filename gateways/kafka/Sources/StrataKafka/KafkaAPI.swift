/// The Kafka APIs the gateway serves, the versions it advertises, and from which version each
/// is flexible (compact encodings and tagged fields, KIP-482).
enum KafkaAPI: Int16, CaseIterable, Sendable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case apiVersions = 18
    case createTopics = 19
    case deleteTopics = 20

    /// Versions served. Produce starts at 0 although only v3+ carries RecordBatch v2 (older
    /// message formats are answered with UNSUPPORTED_FOR_MESSAGE_FORMAT): librdkafka decides
    /// from Produce v0's presence whether the broker can take compressed batches. Fetch stops at
    /// 12, the last version without topic ids.
    var versions: ClosedRange<Int16> {
        switch self {
        case .produce: 0...9
        case .fetch: 4...12
        case .listOffsets: 0...7
        case .metadata: 0...12
        case .apiVersions: 0...3
        case .createTopics: 0...7
        case .deleteTopics: 0...6
        }
    }

    /// The first flexible version.
    var flexibleFrom: Int16 {
        switch self {
        case .produce: 9
        case .fetch: 12
        case .listOffsets: 6
        case .metadata: 9
        case .apiVersions: 3
        case .createTopics: 5
        case .deleteTopics: 4
        }
    }

    func isFlexible(_ version: Int16) -> Bool { version >= flexibleFrom }
}

/// Kafka's error codes (the ones the gateway answers with).
enum KafkaError: Int16, Error, Sendable {
    case unknownServerError = -1
    case none = 0
    case offsetOutOfRange = 1
    case corruptMessage = 2
    case unknownTopicOrPartition = 3
    case invalidFetchSize = 4
    case leaderNotAvailable = 5
    case requestTimedOut = 7
    case messageTooLarge = 10
    case invalidTopic = 17
    case recordListTooLarge = 18
    case notEnoughReplicas = 19
    case invalidRequiredAcks = 21
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidReplicationFactor = 38
    case invalidReplicaAssignment = 39
    case invalidConfig = 40
    case invalidRequest = 42
    case unsupportedForMessageFormat = 43
    case policyViolation = 44
    case kafkaStorageError = 56
    case invalidRecord = 87
}
