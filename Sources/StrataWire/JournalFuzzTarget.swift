import NIOCore
import StrataJournal

/// The byte-parsing entry points, for the libFuzzer harness (`Fuzz/`) and the seeded fuzz tests.
/// Each must return normally for any input: malformed bytes end in a typed `JournalError`.
public enum JournalFuzzTarget {
    /// Journal protocol bytes as a node receives them: frames, then request payloads, then
    /// answer payloads as a client reads them.
    public static func frames(_ bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = JournalFrameDecoder(maxFrameBytes: 1 << 20)
        while let frame = try? decoder.decode(buffer: &buffer) {
            if frame.type.isRequest {
                _ = try? JournalRequest.decode(frame)
            } else {
                var payload = frame.payload
                _ = try? payload.readReadResult()
                payload = frame.payload
                _ = try? payload.readShardInfo(version: StrataVersion.protocolVersions.upperBound)
                payload = frame.payload
                _ = try? payload.readNodeStatus()
                _ = JournalResponse.decodeError(frame)
            }
        }
    }

    /// RecordBatch v2 bytes as an append brings them: validated, then decoded.
    public static func batch(_ bytes: [UInt8]) {
        let buffer = ByteBuffer(bytes: bytes)
        guard (try? RecordBatch.validate(buffer, maxBytes: 1 << 20)) != nil else { return }
        _ = try? RecordBatch.decode(buffer)
    }
}

extension JournalFuzzTarget {
    /// Journal protocol bytes decoded into requests and carried out on `journal` (as the node
    /// would), then offload planning and (every `maintenanceEvery` calls) maintenance over what
    /// they appended: the path from the wire through append validation into the engine's
    /// arithmetic. Shard names are cut to 8 bytes so that inputs reuse a few shards.
    /// A shard name cut to 8 bytes (never empty), so that inputs reuse a few shards.
    private static func short(_ name: String) -> String {
        let cut = String(decoding: name.utf8.prefix(8), as: UTF8.self)
        return cut.isEmpty ? "s" : cut
    }

    public static func execute(_ bytes: [UInt8], on journal: Journal, round: Int, maintenanceEvery: Int = 500) async {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = JournalFrameDecoder(maxFrameBytes: 1 << 20)
        while let frame = try? decoder.decode(buffer: &buffer) {
            guard frame.type.isRequest, let request = try? JournalRequest.decode(frame) else { continue }
            switch request {
            case .createShard(let name, let config): _ = try? await journal.createShard(short(name), config: config)
            case .alterShard(let name, let config): _ = try? await journal.alterShard(short(name), config: config)
            case .deleteShard(let name): try? await journal.deleteShard(short(name))
            case .describeShard(let name): _ = try? journal.describeShard(short(name))
            case .listShards: _ = journal.listShards()
            case .append(let shard, let batch): _ = try? await journal.append(shard: short(shard), batch: batch)
            case .read(let shard, let offset, let maxBytes, _):
                _ = try? await journal.read(shard: short(shard), from: offset, maxBytes: Int(min(maxBytes, 1 << 20)))
            case .offsetForTimestamp(let shard, let timestamp):
                _ = try? await journal.offset(shard: short(shard), atOrAfter: timestamp)
            case .commitOffset(let group, let shard, let offset):
                try? await journal.commitOffset(group: group, shard: short(shard), offset: offset)
            case .fetchOffset(let group, let shard):
                _ = try? await journal.committedOffset(group: group, shard: short(shard))
            case .kvGet(let namespace, let key): _ = try? await journal.get(namespace: namespace, key: key)
            case .kvPut(let namespace, let key, let value):
                try? await journal.put(namespace: namespace, key: key, value: value)
            case .kvDelete(let namespace, let key): try? await journal.delete(namespace: namespace, key: key)
            case .kvScan(let namespace, let prefix, let limit):
                _ = try? await journal.scan(namespace: namespace, prefix: prefix, limit: Int(min(limit, 100)))
            case .queueDeclare(let name, var definition):
                definition.sources = definition.sources.prefix(4).map {
                    .init(shard: short($0.shard), fromStart: $0.fromStart)
                }
                definition.deadLetterShard = definition.deadLetterShard.map(short)
                _ = try? await journal.declareQueue(short(name), definition: definition)
            case .queueDelete(let name): try? await journal.deleteQueue(short(name))
            case .queueDescribe(let name): _ = try? await journal.describeQueue(short(name))
            case .queueReceive(
                let name, let consumer, let max, let maxBytes, let visibility, let options, let priority, _):
                _ = try? await journal.receive(
                    queue: short(name), consumer: consumer, max: Int(min(max, 100)),
                    maxBytes: Int(min(maxBytes, 1 << 20)),
                    visibilityMilliseconds: visibility, options: options, priority: priority)
            case .queueSettle(let name, let consumer, let settlement, let receipts):
                _ = try? await journal.settle(
                    queue: short(name), consumer: consumer, receipts: receipts, as: settlement)
            case .queueRelease(let name, let consumer, let keepLeases):
                _ = try? await journal.releaseConsumer(
                    queue: short(name), consumer: consumer, keepingLeases: keepLeases)
            case .hello, .authenticate, .subscribe, .unsubscribe, .credit, .status: continue
            }
        }
        for now in [Int64.min, 0, WallClock.milliseconds(), Int64.max] {
            _ = try? await journal.offloadRuns(defaultLocalRetention: 0, maxRunBytes: 1 << 20, now: now)
        }
        if round % maintenanceEvery == 0 { try? journal.runMaintenance() }
    }
}
