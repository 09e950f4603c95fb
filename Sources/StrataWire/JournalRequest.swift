import Foundation
import NIOCore
import StrataJournal

/// A client request: the typed payload of a request frame.
public enum JournalRequest: Sendable {
    case hello(minVersion: UInt16, maxVersion: UInt16, client: String)
    /// SCRAM-SHA-256: the client-first message, then the client-final one; each `ok` answer is
    /// `done u8 | server message bytes`.
    case authenticate(mechanism: String, message: [UInt8])
    case createShard(name: String, config: ShardConfig)
    case deleteShard(name: String)
    /// Protocol 4: replaces the shard's configuration.
    case alterShard(name: String, config: ShardConfig)
    case describeShard(name: String)
    case listShards
    case append(shard: String, batch: ByteBuffer)
    case read(shard: String, offset: UInt64, maxBytes: UInt32, maxWaitMilliseconds: UInt32)
    case offsetForTimestamp(shard: String, timestamp: Int64)
    /// Records are pushed in `records` frames carrying this request's correlation id, one per credit.
    case subscribe(shard: String, offset: UInt64, maxBytes: UInt32, credits: UInt32)
    case unsubscribe(subscription: UInt32)
    case credit(subscription: UInt32, credits: UInt32)
    case commitOffset(group: String, shard: String, offset: UInt64)
    case fetchOffset(group: String, shard: String)
    case kvGet(namespace: String, key: [UInt8])
    case kvPut(namespace: String, key: [UInt8], value: [UInt8])
    case kvDelete(namespace: String, key: [UInt8])
    case kvScan(namespace: String, prefix: [UInt8], limit: UInt32)
    case status
    /// Protocol 5: queues (docs/queues.md). The definition and the answers are JSON.
    case queueDeclare(name: String, definition: QueueDefinition)
    case queueDelete(name: String)
    /// An empty name: every queue.
    case queueDescribe(name: String)
    case queueReceive(
        name: String, consumer: String, max: UInt32, maxBytes: UInt32, visibilityMilliseconds: UInt32,
        options: QueueReceiveOptions, priority: Int32, waitMilliseconds: UInt32)
    case queueSettle(name: String, consumer: String, settlement: QueueSettlement, receipts: [QueueReceipt])
    /// `keepLeases`: the consumer stops taking part (a single active consumer hands over) and
    /// keeps what it holds; otherwise its leases go back to the queue too.
    case queueRelease(name: String, consumer: String, keepLeases: Bool)

    public static let magic: UInt32 = 0x5354_524A  // "STRJ"

    /// The first protocol version with this request: the client refuses to send it, and the
    /// node to serve it, on a connection that settled on an older one.
    public var minimumVersion: UInt16 {
        switch self {
        case .authenticate: 3
        case .alterShard(_, let config): config.maxBatchBytes == nil ? 4 : 6
        case .queueDeclare, .queueDelete, .queueDescribe, .queueReceive, .queueSettle, .queueRelease: 5
        case .createShard(_, let config) where config.maxBatchBytes != nil: 6
        default: StrataVersion.protocolVersions.lowerBound
        }
    }

    public var type: JournalMessageType {
        switch self {
        case .hello: .hello
        case .authenticate: .authenticate
        case .createShard: .createShard
        case .deleteShard: .deleteShard
        case .alterShard: .alterShard
        case .describeShard: .describeShard
        case .listShards: .listShards
        case .append: .append
        case .read: .read
        case .offsetForTimestamp: .offsetForTimestamp
        case .subscribe: .subscribe
        case .unsubscribe: .unsubscribe
        case .credit: .credit
        case .commitOffset: .commitOffset
        case .fetchOffset: .fetchOffset
        case .kvGet: .kvGet
        case .kvPut: .kvPut
        case .kvDelete: .kvDelete
        case .kvScan: .kvScan
        case .status: .status
        case .queueDeclare: .queueDeclare
        case .queueDelete: .queueDelete
        case .queueDescribe: .queueDescribe
        case .queueReceive: .queueReceive
        case .queueSettle: .queueSettle
        case .queueRelease: .queueRelease
        }
    }

    public func frame(correlationID: UInt32, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> JournalFrame {
        var payload = allocator.buffer(capacity: 64)
        switch self {
        case .hello(let minVersion, let maxVersion, let client):
            payload.writeInteger(Self.magic)
            payload.writeInteger(minVersion)
            payload.writeInteger(maxVersion)
            payload.writeWireString(client)
        case .authenticate(let mechanism, let message):
            payload.writeWireString(mechanism)
            payload.writeWireBytes(message)
        case .createShard(let name, let config), .alterShard(let name, let config):
            payload.writeWireString(name)
            payload.writeShardConfig(config)
            // Protocol 6: the batch limit follows, when there is one.
            if let limit = config.maxBatchBytes { payload.writeInteger(Int64(limit)) }
        case .deleteShard(let name), .describeShard(let name):
            payload.writeWireString(name)
        case .listShards, .status:
            break
        case .append(let shard, let batch):
            payload.writeWireString(shard)
            payload.writeWireBuffer(batch)
        case .read(let shard, let offset, let maxBytes, let maxWait):
            payload.writeWireString(shard)
            payload.writeInteger(offset)
            payload.writeInteger(maxBytes)
            payload.writeInteger(maxWait)
        case .offsetForTimestamp(let shard, let timestamp):
            payload.writeWireString(shard)
            payload.writeInteger(timestamp)
        case .subscribe(let shard, let offset, let maxBytes, let credits):
            payload.writeWireString(shard)
            payload.writeInteger(offset)
            payload.writeInteger(maxBytes)
            payload.writeInteger(credits)
        case .unsubscribe(let subscription):
            payload.writeInteger(subscription)
        case .credit(let subscription, let credits):
            payload.writeInteger(subscription)
            payload.writeInteger(credits)
        case .commitOffset(let group, let shard, let offset):
            payload.writeWireString(group)
            payload.writeWireString(shard)
            payload.writeInteger(offset)
        case .fetchOffset(let group, let shard):
            payload.writeWireString(group)
            payload.writeWireString(shard)
        case .kvGet(let namespace, let key), .kvDelete(let namespace, let key):
            payload.writeWireString(namespace)
            payload.writeWireBytes(key)
        case .kvPut(let namespace, let key, let value):
            payload.writeWireString(namespace)
            payload.writeWireBytes(key)
            payload.writeWireBytes(value)
        case .kvScan(let namespace, let prefix, let limit):
            payload.writeWireString(namespace)
            payload.writeWireBytes(prefix)
            payload.writeInteger(limit)
        case .queueDeclare(let name, let definition):
            payload.writeWireString(name)
            payload.writeWireBytes(Array((try? JSONEncoder().encode(definition)) ?? Data()))
        case .queueDelete(let name), .queueDescribe(let name):
            payload.writeWireString(name)
        case .queueReceive(
            let name, let consumer, let max, let maxBytes, let visibility, let options, let priority, let wait):
            payload.writeWireString(name)
            payload.writeWireString(consumer)
            payload.writeInteger(max)
            payload.writeInteger(maxBytes)
            payload.writeInteger(visibility)
            payload.writeInteger(options.rawValue)
            payload.writeInteger(priority)
            payload.writeInteger(wait)
        case .queueSettle(let name, let consumer, let settlement, let receipts):
            payload.writeWireString(name)
            payload.writeWireString(consumer)
            payload.writeQueueSettlement(settlement)
            payload.writeInteger(UInt32(receipts.count))
            for receipt in receipts { payload.writeQueueReceipt(receipt) }
        case .queueRelease(let name, let consumer, let keepLeases):
            payload.writeWireString(name)
            payload.writeWireString(consumer)
            payload.writeInteger(keepLeases ? UInt8(1) : 0)
        }
        return JournalFrame(type: type, correlationID: correlationID, payload: payload)
    }

    /// Decodes a request frame; anything malformed is a protocol error.
    public static func decode(_ frame: JournalFrame) throws(JournalError) -> JournalRequest {
        var p = frame.payload
        let request: JournalRequest
        switch frame.type {
        case .hello:
            guard try p.readWireInteger(as: UInt32.self) == magic else {
                throw JournalError(.protocolError, "hello does not start with the STRJ magic")
            }
            request = .hello(
                minVersion: try p.readWireInteger(), maxVersion: try p.readWireInteger(), client: try p.readWireString()
            )
        case .authenticate:
            request = .authenticate(mechanism: try p.readWireString(), message: try p.readWireBytes())
        case .createShard:
            request = .createShard(name: try p.readWireString(), config: try p.readRequestShardConfig())
        case .alterShard:
            request = .alterShard(name: try p.readWireString(), config: try p.readRequestShardConfig())
        case .deleteShard: request = .deleteShard(name: try p.readWireString())
        case .describeShard: request = .describeShard(name: try p.readWireString())
        case .listShards: request = .listShards
        case .status: request = .status
        case .append: request = .append(shard: try p.readWireString(), batch: try p.readWireBuffer())
        case .read:
            request = .read(
                shard: try p.readWireString(), offset: try p.readWireInteger(), maxBytes: try p.readWireInteger(),
                maxWaitMilliseconds: try p.readWireInteger())
        case .offsetForTimestamp:
            request = .offsetForTimestamp(shard: try p.readWireString(), timestamp: try p.readWireInteger())
        case .subscribe:
            request = .subscribe(
                shard: try p.readWireString(), offset: try p.readWireInteger(), maxBytes: try p.readWireInteger(),
                credits: try p.readWireInteger())
        case .unsubscribe: request = .unsubscribe(subscription: try p.readWireInteger())
        case .credit: request = .credit(subscription: try p.readWireInteger(), credits: try p.readWireInteger())
        case .commitOffset:
            request = .commitOffset(
                group: try p.readWireString(), shard: try p.readWireString(), offset: try p.readWireInteger())
        case .fetchOffset: request = .fetchOffset(group: try p.readWireString(), shard: try p.readWireString())
        case .kvGet: request = .kvGet(namespace: try p.readWireString(), key: try p.readWireBytes())
        case .kvDelete: request = .kvDelete(namespace: try p.readWireString(), key: try p.readWireBytes())
        case .kvPut:
            request = .kvPut(
                namespace: try p.readWireString(), key: try p.readWireBytes(), value: try p.readWireBytes())
        case .kvScan:
            request = .kvScan(
                namespace: try p.readWireString(), prefix: try p.readWireBytes(), limit: try p.readWireInteger())
        case .queueDeclare:
            let name = try p.readWireString()
            let json = try p.readWireBytes()
            do {
                request = .queueDeclare(
                    name: name, definition: try JSONDecoder().decode(QueueDefinition.self, from: Data(json)))
            } catch {
                throw JournalError(.protocolError, "queue definition does not parse: \(error)")
            }
        case .queueDelete: request = .queueDelete(name: try p.readWireString())
        case .queueDescribe: request = .queueDescribe(name: try p.readWireString())
        case .queueReceive:
            request = .queueReceive(
                name: try p.readWireString(), consumer: try p.readWireString(), max: try p.readWireInteger(),
                maxBytes: try p.readWireInteger(), visibilityMilliseconds: try p.readWireInteger(),
                options: try p.readQueueReceiveOptions(), priority: try p.readWireInteger(),
                waitMilliseconds: try p.readWireInteger())
        case .queueSettle:
            let name = try p.readWireString()
            let consumer = try p.readWireString()
            let settlement = try p.readQueueSettlement()
            let count: UInt32 = try p.readWireInteger()
            guard Int(count) <= p.readableBytes / 16 else {
                throw JournalError(.protocolError, "receipt count \(count) is too large")
            }
            var receipts: [QueueReceipt] = []
            receipts.reserveCapacity(Int(count))
            for _ in 0..<count { receipts.append(try p.readQueueReceipt()) }
            request = .queueSettle(name: name, consumer: consumer, settlement: settlement, receipts: receipts)
        case .queueRelease:
            request = .queueRelease(
                name: try p.readWireString(), consumer: try p.readWireString(),
                keepLeases: try p.readWireInteger(as: UInt8.self) != 0)
        case .ok, .error, .records, .subscriptionEnd:
            throw JournalError(.protocolError, "a client sent a \(frame.type) frame")
        }
        try p.expectFullyRead("a \(frame.type) request")
        return request
    }
}
