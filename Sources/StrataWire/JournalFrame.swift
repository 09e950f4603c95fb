import NIOCore

/// One frame of the journal protocol (see docs/journal-protocol.md):
///
///     length u32 | type u8 | correlation id u32 | payload
///
/// `length` counts the bytes after itself (type, correlation id and payload).
public struct JournalFrame: Sendable, Hashable {
    public var type: JournalMessageType
    public var correlationID: UInt32
    public var payload: ByteBuffer

    public init(type: JournalMessageType, correlationID: UInt32, payload: ByteBuffer = ByteBuffer()) {
        self.type = type
        self.correlationID = correlationID
        self.payload = payload
    }

    /// Bytes of the frame header after the length field.
    public static let headerSize = 5
    /// The largest frame a peer accepts by default (the node's limit is configurable and
    /// announced in its hello answer).
    public static let defaultMaxFrameBytes = 64 << 20
}

/// Frame types. Requests go client → node; `ok`, `error`, `records`, `subscriptionEnd` go node → client.
public enum JournalMessageType: UInt8, Sendable, Hashable, CaseIterable {
    case hello = 0x01
    /// One step of a SASL exchange (protocol 3): mechanism and the client's message.
    case authenticate = 0x02
    case createShard = 0x10
    case deleteShard = 0x11
    case describeShard = 0x12
    case listShards = 0x13
    /// Protocol 4: a shard's new configuration.
    case alterShard = 0x14
    case append = 0x20
    case read = 0x21
    case offsetForTimestamp = 0x22
    case subscribe = 0x30
    case unsubscribe = 0x31
    case credit = 0x32
    case commitOffset = 0x40
    case fetchOffset = 0x41
    case kvGet = 0x50
    case kvPut = 0x51
    case kvDelete = 0x52
    case kvScan = 0x53
    case status = 0x60
    case queueDeclare = 0x70
    case queueDelete = 0x71
    case queueDescribe = 0x72
    case queueReceive = 0x73
    case queueSettle = 0x74
    case queueRelease = 0x75

    case ok = 0x80
    case error = 0x81
    case records = 0x82
    case subscriptionEnd = 0x83

    /// True for types a client may send.
    public var isRequest: Bool { rawValue < 0x80 }
}
