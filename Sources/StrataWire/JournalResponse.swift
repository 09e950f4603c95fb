import Foundation
import NIOCore
import StrataJournal

/// What `status` reports about a node.
public struct NodeStatus: Sendable, Hashable, Codable {
    public var node: String
    public var version: String
    public var uptimeSeconds: Double
    public var shards: Int
    public var connections: Int
    public var appendedBytes: Int64
    public var appendedBatches: Int64
    public var walBytesWritten: Int64
    public var walSyncs: Int64
    public var walIO: String
    /// `Journal.health`: failed (fail-stop), degraded (disk reserve reached: appends refused), ok.
    public var health: JournalHealth

    public init(
        node: String, version: String, uptimeSeconds: Double, shards: Int, connections: Int,
        statistics: JournalStatistics, health: JournalHealth = JournalHealth(status: .ok, problems: [])
    ) {
        self.node = node
        self.version = version
        self.uptimeSeconds = uptimeSeconds
        self.shards = shards
        self.connections = connections
        appendedBytes = statistics.appendedBytes
        appendedBatches = statistics.appendedBatches
        walBytesWritten = statistics.walBytesWritten
        walSyncs = statistics.walSyncs
        walIO = statistics.ioBackend
        self.health = health
    }
}

/// Payload encodings of the node's answers. A response frame (`ok`) carries the correlation id
/// of its request; its payload depends on the request type, so each side knows how to read it.
public enum JournalResponse {
    public static func ok(_ correlationID: UInt32, _ write: (inout ByteBuffer) -> Void = { _ in }) -> JournalFrame {
        var payload = ByteBuffer()
        write(&payload)
        return JournalFrame(type: .ok, correlationID: correlationID, payload: payload)
    }

    /// An ok answer whose payload is `value` as JSON bytes.
    public static func ok(_ correlationID: UInt32, json value: some Encodable) throws -> JournalFrame {
        let bytes = Array(try JSONEncoder().encode(value))
        return ok(correlationID) { $0.writeWireBytes(bytes) }
    }

    public static func error(_ correlationID: UInt32, _ error: JournalError) -> JournalFrame {
        var payload = ByteBuffer()
        payload.writeInteger(WireErrorCode.number(of: error.code))
        payload.writeWireString(error.message)
        return JournalFrame(type: .error, correlationID: correlationID, payload: payload)
    }

    public static func decodeError(_ frame: JournalFrame) -> JournalError {
        var p = frame.payload
        guard let number: UInt16 = try? p.readWireInteger(), let message = try? p.readWireString() else {
            return JournalError(.protocolError, "malformed error frame")
        }
        return JournalError(WireErrorCode.code(of: number), message)
    }

    public static func subscriptionEnd(_ subscription: UInt32, _ error: JournalError) -> JournalFrame {
        var frame = self.error(subscription, error)
        frame.type = .subscriptionEnd
        return frame
    }
}

/// Error codes on the wire (docs/journal-protocol.md lists them).
public enum WireErrorCode {
    static let table: [(UInt16, JournalError.Code)] = [
        (1, .unknownShard), (2, .shardExists), (3, .invalidBatch), (4, .batchTooLarge), (5, .offsetOutOfRange),
        (6, .corruptData), (7, .diskFull), (8, .ioError), (9, .closed), (10, .invalidArgument), (11, .protocolError),
        (12, .unsupported), (13, .timeout), (14, .unavailable), (15, .unauthenticated), (16, .permissionDenied),
        (17, .unknownQueue),
    ]

    public static func number(of code: JournalError.Code) -> UInt16 {
        table.first { $0.1 == code }?.0 ?? 8
    }

    public static func code(of number: UInt16) -> JournalError.Code {
        table.first { $0.0 == number }?.1 ?? .ioError
    }
}

extension ByteBuffer {
    public mutating func writeShardConfig(_ config: ShardConfig) {
        writeInteger(config.durability == .fsync ? UInt8(0) : UInt8(1))
        writeInteger(config.retentionMilliseconds ?? -1)
        writeInteger(config.retentionBytes ?? -1)
        writeInteger(config.localRetentionMilliseconds ?? -1)
    }

    public mutating func readShardConfig() throws(JournalError) -> ShardConfig {
        let durability: UInt8 = try readWireInteger()
        guard durability <= 1 else { throw JournalError(.protocolError, "durability \(durability) is not 0 or 1") }
        let retentionMilliseconds: Int64 = try readWireInteger()
        let retentionBytes: Int64 = try readWireInteger()
        let localRetentionMilliseconds: Int64 = try readWireInteger()
        return ShardConfig(
            durability: durability == 0 ? .fsync : .async,
            retentionMilliseconds: retentionMilliseconds < 0 ? nil : retentionMilliseconds,
            retentionBytes: retentionBytes < 0 ? nil : retentionBytes,
            localRetentionMilliseconds: localRetentionMilliseconds < 0 ? nil : localRetentionMilliseconds)
    }

    /// A create or alter request's configuration: the batch limit follows when the request
    /// has one (protocol 6).
    mutating func readRequestShardConfig() throws(JournalError) -> ShardConfig {
        var config = try readShardConfig()
        if readableBytes > 0 {
            let limit: Int64 = try readWireInteger()
            guard limit > 0, limit <= Int32.max else {
                throw JournalError(.protocolError, "batch limit \(limit) is not 1...\(Int32.max)")
            }
            config.maxBatchBytes = Int(limit)
        }
        return config
    }

    /// A shard's description as protocol `version` has it (6 adds the batch limit at the end).
    public mutating func writeShardInfo(_ info: ShardInfo, version: UInt16) {
        writeWireString(info.name)
        writeInteger(info.id)
        writeShardConfig(info.config)
        writeInteger(info.startOffset)
        writeInteger(info.endOffset)
        writeInteger(info.storedBytes)
        writeInteger(Int64(info.memoryBytes))
        writeInteger(info.tierBytes)
        writeInteger(info.tierEndOffset)
        if version >= 6 { writeInteger(Int64(info.config.maxBatchBytes ?? -1)) }
    }

    public mutating func readShardInfo(version: UInt16) throws(JournalError) -> ShardInfo {
        var info = ShardInfo(
            name: try readWireString(), id: try readWireInteger(), config: try readShardConfig(),
            startOffset: try readWireInteger(), endOffset: try readWireInteger(), storedBytes: try readWireInteger(),
            memoryBytes: Int(try readWireInteger(as: Int64.self)), tierBytes: try readWireInteger(),
            tierEndOffset: try readWireInteger())
        if version >= 6 {
            let limit: Int64 = try readWireInteger()
            guard limit <= Int32.max else { throw JournalError(.protocolError, "batch limit \(limit) is out of range") }
            info.config.maxBatchBytes = limit > 0 ? Int(limit) : nil
        }
        return info
    }

    public mutating func writeAppendResult(_ result: AppendResult) {
        writeInteger(result.baseOffset)
        writeInteger(result.lastOffset)
    }

    public mutating func readAppendResult() throws(JournalError) -> AppendResult {
        AppendResult(baseOffset: try readWireInteger(), lastOffset: try readWireInteger())
    }

    public mutating func writeReadResult(_ result: ReadResult) {
        writeInteger(result.startOffset)
        writeInteger(result.endOffset)
        writeInteger(result.nextOffset)
        writeInteger(UInt32(result.batches.count))
        for batch in result.batches { writeWireBuffer(batch) }
    }

    public mutating func readReadResult() throws(JournalError) -> ReadResult {
        let start: UInt64 = try readWireInteger()
        let end: UInt64 = try readWireInteger()
        let next: UInt64 = try readWireInteger()
        let count: UInt32 = try readWireInteger()
        guard Int(count) <= readableBytes / 4 else {
            throw JournalError(.protocolError, "batch count \(count) is too large")
        }
        var batches: [ByteBuffer] = []
        batches.reserveCapacity(Int(count))
        for _ in 0..<count { batches.append(try readWireBuffer()) }
        return ReadResult(batches: batches, nextOffset: next, startOffset: start, endOffset: end)
    }

    public mutating func writeOptionalOffset(_ offset: UInt64?) {
        writeInteger(offset == nil ? UInt8(0) : UInt8(1))
        writeInteger(offset ?? 0)
    }

    public mutating func readOptionalOffset() throws(JournalError) -> UInt64? {
        let present: UInt8 = try readWireInteger()
        let offset: UInt64 = try readWireInteger()
        return present == 0 ? nil : offset
    }

    public mutating func writeNodeStatus(_ status: NodeStatus) {
        writeWireString(status.node)
        writeWireString(status.version)
        writeInteger(UInt64(status.uptimeSeconds * 1000))
        writeInteger(UInt32(status.shards))
        writeInteger(UInt32(status.connections))
        writeInteger(status.appendedBytes)
        writeInteger(status.appendedBatches)
        writeInteger(status.walBytesWritten)
        writeInteger(status.walSyncs)
        writeWireString(status.walIO)
        writeWireString(status.health.status.rawValue)
        writeInteger(UInt32(status.health.problems.count))
        for problem in status.health.problems { writeWireString(problem) }
    }

    public mutating func readNodeStatus() throws(JournalError) -> NodeStatus {
        let node = try readWireString()
        let version = try readWireString()
        let uptime: UInt64 = try readWireInteger()
        let shards: UInt32 = try readWireInteger()
        let connections: UInt32 = try readWireInteger()
        var statistics = JournalStatistics()
        statistics.appendedBytes = try readWireInteger()
        statistics.appendedBatches = try readWireInteger()
        statistics.walBytesWritten = try readWireInteger()
        statistics.walSyncs = try readWireInteger()
        statistics.ioBackend = try readWireString()
        guard let health = JournalHealth.Status(rawValue: try readWireString()) else {
            throw JournalError(.protocolError, "unknown node health")
        }
        let count: UInt32 = try readWireInteger()
        guard Int(count) <= readableBytes / 2 else { throw JournalError(.protocolError, "too many health problems") }
        var problems: [String] = []
        for _ in 0..<count { problems.append(try readWireString()) }
        return NodeStatus(
            node: node, version: version, uptimeSeconds: Double(uptime) / 1000, shards: Int(shards),
            connections: Int(connections), statistics: statistics,
            health: JournalHealth(status: health, problems: problems))
    }

    public mutating func writeQueueReceipt(_ receipt: QueueReceipt) {
        writeInteger(receipt.source)
        writeInteger(receipt.offset)
        writeInteger(receipt.delivery)
    }

    public mutating func readQueueReceipt() throws(JournalError) -> QueueReceipt {
        QueueReceipt(source: try readWireInteger(), offset: try readWireInteger(), delivery: try readWireInteger())
    }

    /// A settlement: kind u8 (0 ack, 1 requeue, 2 reject, 3 extend) and milliseconds u32 (the
    /// requeue delay or the new visibility; 0 for the others).
    public mutating func writeQueueSettlement(_ settlement: QueueSettlement) {
        let (kind, milliseconds): (UInt8, UInt32) =
            switch settlement {
            case .ack: (0, 0)
            case .requeue(let delay): (1, delay)
            case .reject: (2, 0)
            case .extend(let visibility): (3, visibility)
            }
        writeInteger(kind)
        writeInteger(milliseconds)
    }

    public mutating func readQueueSettlement() throws(JournalError) -> QueueSettlement {
        let kind: UInt8 = try readWireInteger()
        let milliseconds: UInt32 = try readWireInteger()
        switch kind {
        case 0: return .ack
        case 1: return .requeue(delayMilliseconds: milliseconds)
        case 2: return .reject
        case 3: return .extend(visibilityMilliseconds: milliseconds)
        default: throw JournalError(.protocolError, "settlement kind \(kind) is not 0 to 3")
        }
    }

    /// A receive's options: u8 bits (1 resume, 2 one-off); others are refused.
    public mutating func readQueueReceiveOptions() throws(JournalError) -> QueueReceiveOptions {
        let bits: UInt8 = try readWireInteger()
        let options = QueueReceiveOptions(rawValue: bits)
        guard options.isSubset(of: [.resume, .oneOff]) else {
            throw JournalError(.protocolError, "receive options \(bits) name unknown bits")
        }
        return options
    }

    /// Deliveries: count, then each receipt, resumed flag, shard, and record (timestamp, key,
    /// value, headers), absent key and value marked.
    public mutating func writeQueueDeliveries(_ deliveries: [QueueDelivery]) {
        writeInteger(UInt32(deliveries.count))
        for delivery in deliveries {
            writeQueueReceipt(delivery.receipt)
            writeInteger(delivery.resumed ? UInt8(1) : 0)
            writeWireString(delivery.shard)
            writeInteger(delivery.record.timestamp)
            writeOptionalWireBytes(delivery.record.key)
            writeOptionalWireBytes(delivery.record.value)
            writeInteger(UInt32(delivery.record.headers.count))
            for header in delivery.record.headers {
                writeWireString(header.key)
                writeOptionalWireBytes(header.value)
            }
        }
    }

    public mutating func readQueueDeliveries() throws(JournalError) -> [QueueDelivery] {
        let count: UInt32 = try readWireInteger()
        guard Int(count) <= readableBytes / 30 else {
            throw JournalError(.protocolError, "delivery count \(count) is too large")
        }
        var deliveries: [QueueDelivery] = []
        for _ in 0..<count {
            let receipt = try readQueueReceipt()
            let resumed: UInt8 = try readWireInteger()
            let shard = try readWireString()
            let timestamp: Int64 = try readWireInteger()
            let key = try readOptionalWireBytes()
            let value = try readOptionalWireBytes()
            let headerCount: UInt32 = try readWireInteger()
            guard Int(headerCount) <= readableBytes / 5 else {
                throw JournalError(.protocolError, "header count \(headerCount) is too large")
            }
            var headers: [RecordHeader] = []
            for _ in 0..<headerCount {
                headers.append(RecordHeader(key: try readWireString(), value: try readOptionalWireBytes()))
            }
            let record = Record(timestamp: timestamp, key: key, value: value, headers: headers)
            deliveries.append(QueueDelivery(receipt: receipt, shard: shard, record: record, resumed: resumed != 0))
        }
        return deliveries
    }

    public mutating func writeOptionalWireBytes(_ bytes: [UInt8]?) {
        writeInteger(bytes == nil ? UInt8(0) : 1)
        writeWireBytes(bytes ?? [])
    }

    public mutating func readOptionalWireBytes() throws(JournalError) -> [UInt8]? {
        let present: UInt8 = try readWireInteger()
        let bytes = try readWireBytes()
        return present == 0 ? nil : bytes
    }
}
