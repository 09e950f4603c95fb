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
