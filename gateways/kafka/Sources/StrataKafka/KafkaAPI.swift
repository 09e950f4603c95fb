/// The Kafka APIs the gateway serves, the versions it advertises, and from which version each
/// is flexible (compact encodings and tagged fields, KIP-482).
enum KafkaAPI: Int16, CaseIterable, Sendable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
    case describeGroups = 15
    case listGroups = 16
    case saslHandshake = 17
    case describeConfigs = 32
    case alterConfigs = 33
    case incrementalAlterConfigs = 44
    case saslAuthenticate = 36
    case createPartitions = 37
    case initProducerID = 22
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
        case .initProducerID: 0...4
        case .offsetCommit: 0...8
        case .offsetFetch: 0...7
        case .findCoordinator: 0...4
        case .joinGroup: 0...9
        case .heartbeat: 0...4
        case .leaveGroup: 0...5
        case .syncGroup: 0...5
        case .describeGroups: 0...5
        case .listGroups: 0...4
        // v0 would switch the connection to raw SASL tokens; v1 uses SaslAuthenticate.
        case .saslHandshake: 1...1
        case .describeConfigs: 0...4
        case .alterConfigs: 0...2
        case .incrementalAlterConfigs: 0...1
        case .saslAuthenticate: 0...2
        case .createPartitions: 0...3
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
        case .initProducerID: 2
        case .offsetCommit: 8
        case .offsetFetch: 6
        case .findCoordinator: 3
        case .joinGroup: 6
        case .heartbeat: 4
        case .leaveGroup: 4
        case .syncGroup: 4
        case .describeGroups: 5
        case .listGroups: 3
        case .saslHandshake: .max
        case .describeConfigs: 4
        case .alterConfigs: 2
        case .incrementalAlterConfigs: 1
        case .saslAuthenticate: 2
        case .createPartitions: 2
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
    case coordinatorNotAvailable = 15
    case notCoordinator = 16
    case requestTimedOut = 7
    case messageTooLarge = 10
    case invalidTopic = 17
    case recordListTooLarge = 18
    case notEnoughReplicas = 19
    case invalidRequiredAcks = 21
    case illegalGeneration = 22
    case inconsistentGroupProtocol = 23
    case invalidGroupID = 24
    case unknownMemberID = 25
    case invalidSessionTimeout = 26
    case rebalanceInProgress = 27
    case topicAuthorizationFailed = 29
    case groupAuthorizationFailed = 30
    case clusterAuthorizationFailed = 31
    case unsupportedSASLMechanism = 33
    case illegalSASLState = 34
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidReplicationFactor = 38
    case invalidReplicaAssignment = 39
    case invalidConfig = 40
    case invalidRequest = 42
    case unsupportedForMessageFormat = 43
    case policyViolation = 44
    case outOfOrderSequenceNumber = 45
    case duplicateSequenceNumber = 46
    case invalidProducerEpoch = 47
    case transactionalIDAuthorizationFailed = 53
    case kafkaStorageError = 56
    case saslAuthenticationFailed = 58
    case memberIDRequired = 79
    case invalidRecord = 87
}
