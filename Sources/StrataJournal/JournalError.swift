/// The error every public journal operation throws: an extensible code and a message for people.
public struct JournalError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }

        /// The shard named in the request does not exist.
        public static let unknownShard = Code("unknown_shard")
        /// A shard with that name exists already.
        public static let shardExists = Code("shard_exists")
        /// The batch is not a well-formed RecordBatch v2 (bad header, bad CRC, bad counts).
        public static let invalidBatch = Code("invalid_batch")
        /// The batch is larger than the configured maximum.
        public static let batchTooLarge = Code("batch_too_large")
        /// The offset asked for is below the shard's start (retention removed it).
        public static let offsetOutOfRange = Code("offset_out_of_range")
        /// Data on disk failed its checksum; the message names the file and position.
        public static let corruptData = Code("corrupt_data")
        /// The disk is full: nothing was acknowledged; retry when space returns.
        public static let diskFull = Code("disk_full")
        /// Any other I/O failure, with the errno text.
        public static let ioError = Code("io_error")
        /// The journal is closed or closing.
        public static let closed = Code("closed")
        /// An argument is out of range (empty name, bad config value).
        public static let invalidArgument = Code("invalid_argument")
        /// A peer broke the wire protocol (malformed or oversize frame, unexpected message).
        public static let protocolError = Code("protocol_error")
        /// The peer does not support the request or protocol version.
        public static let unsupported = Code("unsupported")
        /// No answer within the deadline.
        public static let timeout = Code("timeout")
        /// The node cannot be reached.
        public static let unavailable = Code("unavailable")
        /// The client is not authenticated (no credentials where they are required, a wrong
        /// password, an unknown user, a refused certificate).
        public static let unauthenticated = Code("unauthenticated")
        /// The principal may not do this to this shard or namespace.
        public static let permissionDenied = Code("permission_denied")
        /// The queue named in the request does not exist.
        public static let unknownQueue = Code("unknown_queue")

        /// Every code, for mapping to and from wire numbers.
        public static let all: [Code] = [
            .unknownShard, .shardExists, .invalidBatch, .batchTooLarge, .offsetOutOfRange, .corruptData, .diskFull,
            .ioError, .closed, .invalidArgument, .protocolError, .unsupported, .timeout, .unavailable, .unauthenticated,
            .permissionDenied, .unknownQueue,
        ]

        /// Looks a code up by its name (unknown names map to `ioError`).
        public init(named name: String) {
            self = Code.all.first { $0.name == name } ?? .ioError
        }

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
