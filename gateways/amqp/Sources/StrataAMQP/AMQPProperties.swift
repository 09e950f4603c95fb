import NIOCore

/// The basic class's content properties (§1.8 "basic" fields), in their wire order; each is
/// present when its flag bit is set (bit 15 for the first).
public struct AMQPProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    /// 1 transient, 2 persistent.
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string (RabbitMQ's convention).
    public var expiration: String?
    public var messageID: String?
    /// Seconds since the epoch.
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?
    /// Deprecated in 0-9-1 and refused by RabbitMQ; carried as it came.
    public var clusterID: String?

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable? = nil,
        deliveryMode: UInt8? = nil, priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil,
        expiration: String? = nil, messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil,
        userID: String? = nil, appID: String? = nil, clusterID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.userID = userID
        self.appID = appID
        self.clusterID = clusterID
    }

    public var persistent: Bool { deliveryMode == 2 }

    func encode(into buffer: inout ByteBuffer) {
        let present: [Bool] = [
            contentType != nil, contentEncoding != nil, headers != nil, deliveryMode != nil, priority != nil,
            correlationID != nil, replyTo != nil, expiration != nil, messageID != nil, timestamp != nil,
            type != nil, userID != nil, appID != nil, clusterID != nil,
        ]
        var flags: UInt16 = 0
        for (index, bit) in present.enumerated() where bit { flags |= 1 << UInt16(15 - index) }
        buffer.writeInteger(flags)
        if let contentType { buffer.writeShortString(contentType) }
        if let contentEncoding { buffer.writeShortString(contentEncoding) }
        if let headers { buffer.writeAMQPTable(headers) }
        if let deliveryMode { buffer.writeInteger(deliveryMode) }
        if let priority { buffer.writeInteger(priority) }
        if let correlationID { buffer.writeShortString(correlationID) }
        if let replyTo { buffer.writeShortString(replyTo) }
        if let expiration { buffer.writeShortString(expiration) }
        if let messageID { buffer.writeShortString(messageID) }
        if let timestamp { buffer.writeInteger(timestamp) }
        if let type { buffer.writeShortString(type) }
        if let userID { buffer.writeShortString(userID) }
        if let appID { buffer.writeShortString(appID) }
        if let clusterID { buffer.writeShortString(clusterID) }
    }

    static func decode(_ buffer: inout ByteBuffer) throws(AMQPError) -> AMQPProperties {
        let flags: UInt16 = try buffer.readAMQPInteger()
        if flags & 1 != 0 {
            // A continuation word: basic has 14 properties, so any bit in it is one that does not exist.
            let more: UInt16 = try buffer.readAMQPInteger()
            guard more == 0 else { throw AMQPError.frame("content header flags name properties basic does not have") }
        }
        guard flags & 0b10 == 0 else { throw AMQPError.frame("content header flag bit 1 is reserved") }
        func has(_ index: Int) -> Bool { flags & (1 << UInt16(15 - index)) != 0 }
        var p = AMQPProperties()
        if has(0) { p.contentType = try buffer.readShortString() }
        if has(1) { p.contentEncoding = try buffer.readShortString() }
        if has(2) { p.headers = try buffer.readAMQPTable() }
        if has(3) { p.deliveryMode = try buffer.readAMQPInteger() }
        if has(4) { p.priority = try buffer.readAMQPInteger() }
        if has(5) { p.correlationID = try buffer.readShortString() }
        if has(6) { p.replyTo = try buffer.readShortString() }
        if has(7) { p.expiration = try buffer.readShortString() }
        if has(8) { p.messageID = try buffer.readShortString() }
        if has(9) { p.timestamp = try buffer.readAMQPInteger() }
        if has(10) { p.type = try buffer.readShortString() }
        if has(11) { p.userID = try buffer.readShortString() }
        if has(12) { p.appID = try buffer.readShortString() }
        if has(13) { p.clusterID = try buffer.readShortString() }
        return p
    }
}
