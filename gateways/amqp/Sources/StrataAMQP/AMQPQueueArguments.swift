/// The queue.declare arguments RabbitMQ documents, parsed and checked as RabbitMQ checks them
/// (a wrong type or value: 406 on queue.declare). Unknown arguments are refused too: a
/// queue argument Strata would store and not act on is what the project refuses everywhere.
public struct AMQPQueueArguments: Sendable, Hashable {
    public enum Overflow: String, Sendable, Hashable {
        case dropHead = "drop-head"
        case rejectPublish = "reject-publish"
        case rejectPublishDLX = "reject-publish-dlx"
    }

    public enum QueueType: String, Sendable, Hashable {
        case classic, quorum
    }

    /// x-message-ttl: milliseconds a message may wait in the queue.
    public var messageTTL: UInt32?
    /// x-expires: milliseconds unused before the queue is deleted (at least 1).
    public var expires: UInt32?
    public var maxLength: Int64?
    public var maxLengthBytes: Int64?
    public var overflow = Overflow.dropHead
    public var deadLetterExchange: String?
    public var deadLetterRoutingKey: String?
    /// x-max-priority: 1...255 (RabbitMQ advises at most 10).
    public var maxPriority: UInt8?
    public var singleActiveConsumer = false
    public var queueType = QueueType.classic

    public init() {}

    public init(_ table: AMQPTable) throws(AMQPError) {
        for entry in table.entries {
            let key = entry.key
            let value = entry.value
            func integer(min: Int64, max: Int64) throws(AMQPError) -> Int64 {
                guard let number = value.integerValue, number >= min, number <= max else {
                    throw Self.invalid(key, value, "an integer \(min)...\(max)")
                }
                return number
            }
            func string() throws(AMQPError) -> String {
                guard let text = value.stringValue else { throw Self.invalid(key, value, "a string") }
                return text
            }
            switch key {
            case "x-message-ttl": messageTTL = UInt32(try integer(min: 0, max: Int64(UInt32.max)))
            case "x-expires": expires = UInt32(try integer(min: 1, max: Int64(UInt32.max)))
            case "x-max-length": maxLength = try integer(min: 0, max: .max)
            case "x-max-length-bytes": maxLengthBytes = try integer(min: 0, max: .max)
            case "x-overflow":
                guard let mode = Overflow(rawValue: try string()) else {
                    throw Self.invalid(key, value, "drop-head, reject-publish or reject-publish-dlx")
                }
                overflow = mode
            case "x-dead-letter-exchange": deadLetterExchange = try string()
            case "x-dead-letter-routing-key": deadLetterRoutingKey = try string()
            case "x-max-priority": maxPriority = UInt8(try integer(min: 1, max: 255))
            case "x-single-active-consumer":
                guard let flag = value.boolValue else { throw Self.invalid(key, value, "a boolean") }
                singleActiveConsumer = flag
            case "x-queue-type":
                guard let type = QueueType(rawValue: try string()) else {
                    throw Self.invalid(key, value, "classic or quorum (streams are Kafka topics here)")
                }
                queueType = type
            default:
                throw AMQPError(
                    AMQPError.preconditionFailed, "PRECONDITION_FAILED - queue argument '\(key)' is not supported",
                    classID: 50, methodID: 10)
            }
        }
        if deadLetterRoutingKey != nil, deadLetterExchange == nil {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - x-dead-letter-routing-key requires x-dead-letter-exchange", classID: 50,
                methodID: 10)
        }
    }

    /// A length limit that drops the head (x-overflow drop-head, the default).
    public var dropsHead: Bool { overflow == .dropHead && (maxLength != nil || maxLengthBytes != nil) }

    static func invalid(_ key: String, _ value: AMQPFieldValue, _ expected: String) -> AMQPError {
        AMQPError(
            AMQPError.preconditionFailed, "PRECONDITION_FAILED - invalid arg '\(key)': \(value), expected \(expected)",
            classID: 50, methodID: 10)
    }
}
