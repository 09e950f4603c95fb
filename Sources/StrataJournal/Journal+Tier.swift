import Foundation
import NIOCore

/// One object in the object tier: whole batches of one shard with contiguous offsets. The
/// catalog holds it (`r` key) from the moment its upload was confirmed.
public struct TieredObject: Sendable, Hashable, Codable {
    /// The object's key in the store (without the store's own prefix).
    public var key: String
    public var shardID: UInt64
    /// Base offset of the first batch and last offset of the last one.
    public var firstOffset: UInt64
    public var lastOffset: UInt64
    public var maxTimestamp: Int64
    /// Bytes of the batches as the journal stores them, and of the object (compressed blocks,
    /// index, footer).
    public var batchBytes: Int64
    public var objectBytes: Int64
    public var batchCount: Int
    /// When the upload was confirmed (milliseconds since the epoch).
    public var uploadedAt: Int64
}

extension TieredObject {
    init?(_ bytes: [UInt8]) {
        guard let object = try? JSONDecoder().decode(TieredObject.self, from: Data(bytes)) else { return nil }
        self = object
    }

    var encoded: [UInt8] { Array((try? JSONEncoder().encode(self)) ?? Data()) }

    /// Takes this object (catalog key `catalogKey`) out of the catalog and queues it for deletion
    /// from the store, in `batch`.
    func release(catalogKey: [UInt8], in batch: RocksDB.WriteBatch) {
        batch.delete(catalogKey)
        batch.put(StorageKeys.remoteDeletion(key), [])
    }
}

/// Reads batches out of the object tier. The journal calls it for offsets it no longer holds
/// locally; errors it throws should be `JournalError`s (`unavailable` when the store cannot be
/// reached, `corruptData` naming the key when a checksum fails).
public protocol ColdTier: Sendable {
    /// Whole batches of `object` from the one holding `offset` on, up to about `maxBytes`
    /// (at least one).
    func read(object: TieredObject, from offset: UInt64, maxBytes: Int) async throws -> [ByteBuffer]
}

/// A run of one shard's local batches ready to move to the object tier.
public struct OffloadRun: Sendable {
    public let shardID: UInt64
    public let shard: String
    public let firstOffset: UInt64
    public let lastOffset: UInt64
    public let maxTimestamp: Int64
    public let batchBytes: Int64
    let entries: [(base: UInt64, entry: IndexEntry)]

    public var batchCount: Int { entries.count }
}

/// What waits to be offloaded for one shard.
public struct OffloadBacklog: Sendable, Hashable {
    public var shard: String
    /// Bytes of local batches that are past the shard's local retention and in sealed segments.
    public var bytes: Int64
    /// How long the oldest of them has been past its local retention (milliseconds).
    public var ageMilliseconds: Int64
}

extension Journal {
    /// Lets reads of offloaded offsets through `tier`. Without one they fail as `unavailable`.
    public func attachColdTier(_ tier: any ColdTier) {
        coldTier.withLock { $0 = tier }
    }

    /// The object holding `offset` of shard `id`, if the catalog has one.
    func tieredObject(shardID id: UInt64, covering offset: UInt64) -> TieredObject? {
        let iterator = db.makeIterator()
        iterator.seekForPrev(StorageKeys.tier(id, offset))
        guard iterator.isValid, iterator.key.starts(with: StorageKeys.tierPrefix(id)),
            let object = TieredObject(iterator.value), object.lastOffset >= offset
        else { return nil }
        return object
    }

    /// Batches of an offloaded object from `offset` on.
    func readTier(
        _ object: TieredObject, shard name: String, from offset: UInt64, maxBytes: Int, start: UInt64, end: UInt64
    ) async throws -> ReadResult {
        guard let tier = coldTier.withLock({ $0 }) else {
            throw JournalError(
                .unavailable,
                "offset \(offset) of \(name) is in the object tier (\(object.key)) and no object store is attached")
        }
        let batches: [ByteBuffer]
        do {
            batches = try await tier.read(object: object, from: offset, maxBytes: maxBytes)
        } catch let error as JournalError where error.code == .corruptData {
            // Retention may have deleted the object after the catalog lookup.
            throw retentionRemoved(shardID: object.shardID, offset: offset, shard: name) ?? error
        }
        guard let last = batches.last, let header = RecordBatch.Header.peek(last, at: last.readerIndex) else {
            throw JournalError(.corruptData, "\(object.key) holds no batch for offset \(offset) of \(name)")
        }
        return ReadResult(
            batches: batches, nextOffset: UInt64(header.lastOffset) + 1, startOffset: start, endOffset: end)
    }

    /// `offsetOutOfRange` when retention has moved the shard's start past `offset` (or the shard
    /// is gone), else nil.
    func retentionRemoved(shardID id: UInt64, offset: UInt64, shard name: String) -> JournalError? {
        let removed = core.withLock { core in core.shards[id].map { $0.startOffset > offset } ?? true }
        return removed ? JournalError(.offsetOutOfRange, "offset \(offset) of \(name) was removed by retention") : nil
    }

    /// The shard's objects in the object tier, in offset order.
    public func tieredObjects(shard name: String) async throws -> [TieredObject] {
        let id = try describeShard(name).id
        return try await blocking { [self] in
            var objects: [TieredObject] = []
            db.scan(prefix: StorageKeys.tierPrefix(id)) { _, value in
                if let object = TieredObject(value) { objects.append(object) }
                return true
            }
            return objects
        }
    }

    /// Runs of local batches to offload, per shard in offset order: batches in sealed segments
    /// whose newest record is older than the shard's local retention (`defaultLocalRetention`
    /// when its config has none), from the shard's first local batch up to the first that is
    /// not, cut into runs of about `maxRunBytes`; at most `maxRuns` runs in all (the backlog
    /// counts everything due). Also what waits, per shard.
    public func offloadRuns(
        defaultLocalRetention: Int64, maxRunBytes: Int64, maxRuns: Int = 16, now: Int64 = WallClock.milliseconds()
    ) async throws -> (runs: [OffloadRun], backlog: [OffloadBacklog]) {
        let (shards, active) = core.withLock { core in
            (
                core.shards.values.map {
                    (
                        $0.id, $0.name, $0.config.localRetentionMilliseconds ?? defaultLocalRetention, $0.endOffset,
                        max($0.startOffset, $0.tierEnd)
                    )
                }, core.activeSegment
            )
        }
        return try await blocking { [self] in
            var runs: [OffloadRun] = []
            var backlog: [OffloadBacklog] = []
            for (id, name, localRetention, end, floor) in shards {
                var entries: [(base: UInt64, entry: IndexEntry)] = []
                var bytes: Int64 = 0
                var total: Int64 = 0
                var oldest: Int64?
                func cut() {
                    guard let first = entries.first, let last = entries.last, runs.count < maxRuns else {
                        entries = []
                        bytes = 0
                        return
                    }
                    runs.append(
                        OffloadRun(
                            shardID: id, shard: name, firstOffset: first.base, lastOffset: last.entry.lastOffset,
                            maxTimestamp: entries.map(\.entry.maxTimestamp).max()!, batchBytes: bytes, entries: entries)
                    )
                    entries = []
                    bytes = 0
                }
                // From the first offset neither retention nor the tier took (index keys below it
                // may outlive a crash until retention's next round).
                db.scan(prefix: StorageKeys.indexPrefix(id), from: StorageKeys.index(id, floor)) { key, value in
                    guard let entry = IndexEntry(value), entry.lastOffset < end, entry.segment < active,
                        entry.maxTimestamp < now.minusSaturating(localRetention)
                    else { return false }
                    let length = Int64(entry.frameLength) - Int64(WALFormat.frameHeaderSize)
                    if runs.count < maxRuns { entries.append((UInt64(bigEndianBytes: key[9..<17]), entry)) }
                    bytes += length
                    total += length
                    oldest = oldest ?? now.minusSaturating(localRetention).minusSaturating(entry.maxTimestamp)
                    if bytes >= maxRunBytes { cut() }
                    return true
                }
                cut()
                if let oldest { backlog.append(OffloadBacklog(shard: name, bytes: total, ageMilliseconds: oldest)) }
            }
            return (runs, backlog)
        }
    }

    /// The batches of a run, read from the segments and checked.
    public func batches(of run: OffloadRun) async throws -> [ByteBuffer] {
        try await blocking { [self] in
            let maxFrame = configuration.maxWALFrameBytes
            return try run.entries.map { item throws(JournalError) in
                try segments.readBatch(item.entry, maxFrame: maxFrame, allocator: allocator)
            }
        }
    }

    /// Records an uploaded run in the catalog (synced) and lets go of its local copies: from
    /// here reads of its offsets go to the object tier, and the segment space is reclaimed by
    /// maintenance. Returns nil when the run no longer matches the shard (deleted, or retention
    /// or another offload got there first): the caller deletes the object it uploaded.
    public func commitOffload(_ run: OffloadRun, key: String, objectBytes: Int64) async throws -> TieredObject? {
        try await blocking { [self] () throws -> TieredObject? in
            try maintenanceLock.withLock { _ throws -> TieredObject? in
                let floor = core.withLock { core -> UInt64? in
                    guard let shard = core.shards[run.shardID] else { return nil }
                    return max(shard.startOffset, shard.tierEnd)
                }
                guard let floor, floor <= run.firstOffset else { return nil }
                // …and its first batch must be the shard's first local one: a run planned behind
                // one that was refused would leave a gap below the tier's end.
                var firstLocal: UInt64?
                db.scan(prefix: StorageKeys.indexPrefix(run.shardID), from: StorageKeys.index(run.shardID, floor)) {
                    key, _ in
                    firstLocal = UInt64(bigEndianBytes: key[9..<17])
                    return false
                }
                guard firstLocal == run.firstOffset else { return nil }
                // Where each batch is now (compaction may have moved it since the run was planned).
                var located: [IndexEntry] = []
                for item in run.entries {
                    guard let entry = try db.get(StorageKeys.index(run.shardID, item.base)).flatMap(IndexEntry.init)
                    else {
                        return nil
                    }
                    located.append(entry)
                }
                // The run's time-index keys were written without RocksDB's WAL; once its frames
                // are skipped by recovery they could not be rebuilt, so make them durable first.
                try checkpoint()
                let object = TieredObject(
                    key: key, shardID: run.shardID, firstOffset: run.firstOffset, lastOffset: run.lastOffset,
                    maxTimestamp: run.maxTimestamp, batchBytes: run.batchBytes, objectBytes: objectBytes,
                    batchCount: run.entries.count, uploadedAt: WallClock.milliseconds())
                let batch = RocksDB.WriteBatch()
                batch.put(StorageKeys.tier(run.shardID, run.firstOffset), object.encoded)
                batch.delete(StorageKeys.remoteDeletion(key))  // queued by the offloader before the upload
                for item in run.entries { batch.delete(StorageKeys.index(run.shardID, item.base)) }
                try db.write(batch, durable: true)
                core.withLock { core in
                    guard let shard = core.shards[run.shardID] else { return }
                    shard.tierEnd = run.lastOffset + 1
                    shard.tierBytes += run.batchBytes
                    for entry in located { core.segmentLive[entry.segment, default: 0] -= Int64(entry.frameLength) }
                }
                return object
            }
        }
    }

    /// Keys of remote objects to delete from the store: released by retention or a shard
    /// deletion, or uploads not committed.
    public func remoteDeletions() async throws -> [String] {
        try await blocking { [self] in queuedDeletions() }
    }

    /// The deletion queue (blocking).
    private func queuedDeletions() -> [String] {
        var keys: [String] = []
        db.scan(prefix: StorageKeys.remoteDeletionTag) { key, _ in
            keys.append(String(decoding: key.dropFirst(), as: UTF8.self))
            return true
        }
        return keys
    }

    /// Queues `key` for deletion from the store (an upload that was not committed).
    public func queueRemoteDeletion(_ key: String) async throws {
        try await blocking { [self] in try db.put(StorageKeys.remoteDeletion(key), [], durable: true) }
    }

    /// Every object key the catalog holds or has queued for deletion (to tell objects left
    /// behind by an interrupted upload from those it knows).
    public func knownObjectKeys() async throws -> Set<String> {
        try await blocking { [self] in
            var keys = Set<String>()
            db.scan(prefix: StorageKeys.tierTag) { _, value in
                if let object = TieredObject(value) { keys.insert(object.key) }
                return true
            }
            return keys.union(queuedDeletions())
        }
    }

    /// The store no longer has `key`.
    public func confirmRemoteDeletion(_ key: String) async throws {
        try await blocking { [self] in
            let batch = RocksDB.WriteBatch()
            batch.delete(StorageKeys.remoteDeletion(key))
            try db.write(batch, durable: true)
        }
    }
}
