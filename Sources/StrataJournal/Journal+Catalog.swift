import Foundation
import NIOCore

/// Catalog changes in the WAL. Every shard creation, reconfiguration and deletion is written to
/// the WAL as a control frame (shard id 0, one record whose key says what changed and whose value
/// is the shard record) and synced before the catalog in RocksDB changes. The index keeps each
/// shard's current control frame live under `x 0 <shard id>`, so compaction carries it forward
/// like any live batch; a deleted shard's tombstone stays live in its place. A node whose index is
/// missing or behind rebuilds its catalog from these frames.
enum ControlFrame {
    static let shardKey = Array("strata.shard".utf8)
    static let deletedKey = Array("strata.shard-deleted".utf8)

    struct Change {
        var record: ShardRecord
        var deleted: Bool
    }

    /// The batch of one change; its base offset is the shard id (the control index key).
    static func batch(_ change: Change, allocator: ByteBufferAllocator) throws(JournalError) -> ByteBuffer {
        var batch = RecordBatch.encode(
            [
                Record(
                    timestamp: WallClock.milliseconds(), key: change.deleted ? deletedKey : shardKey,
                    value: try change.record.encoded())
            ], allocator: allocator)
        batch.setInteger(Int64(bitPattern: change.record.id), at: batch.readerIndex)
        return batch
    }

    /// The change a control frame's batch holds, nil when it is not one.
    static func decode(_ batch: ByteBuffer) -> Change? {
        guard let records = try? RecordBatch.decode(batch), records.count == 1, let key = records[0].key,
            key == shardKey || key == deletedKey, let value = records[0].value,
            let record = try? ShardRecord(value)
        else { return nil }
        return Change(record: record, deleted: key == deletedKey)
    }
}

extension WALFormat {
    /// The shard id of control frames (real shards are numbered from 1).
    static let controlShardID: UInt64 = 0
}

extension Journal {
    /// Writes `changes` to the WAL as control frames and waits until they are synced. Called
    /// with the maintenance lock held (so no compaction moves a control frame meanwhile).
    func writeControl(_ changes: [ControlFrame.Change]) throws(JournalError) {
        var entries: [PendingEntry] = []
        for change in changes {
            let replaces = try db.get(StorageKeys.index(WALFormat.controlShardID, change.record.id)).flatMap(
                IndexEntry.init)
            let frame = WALFormat.frame(
                shardID: WALFormat.controlShardID, batch: try ControlFrame.batch(change, allocator: allocator),
                allocator: allocator)
            entries.append(
                PendingEntry(
                    shardID: WALFormat.controlShardID, frame: frame, baseOffset: change.record.id,
                    lastOffset: change.record.id, maxTimestamp: WallClock.milliseconds(), durability: .fsync,
                    addsTimeIndex: false, kind: .control(replaces: replaces, completion: Completion())))
        }
        try writeAndWait(entries, whileClosing: false)
    }

    /// Shards of a catalog written before control frames existed get theirs now, so that from
    /// here on the WAL alone can rebuild the catalog.
    func writeMissingControlFrames() throws(JournalError) {
        try maintenanceLock.withLock { _ throws(JournalError) in
            let shards = core.withLock { core in core.shards.values.map { ($0.id, $0.name, $0.config) } }
            var missing: [ControlFrame.Change] = []
            var known = Set<UInt64>()
            for (id, name, config) in shards {
                known.insert(id)
                if try db.get(StorageKeys.index(WALFormat.controlShardID, id)) == nil {
                    missing.append(
                        ControlFrame.Change(record: ShardRecord(id: id, name: name, config: config), deleted: false))
                }
            }
            // Ids deleted before control frames existed get tombstones, so that their batches still
            // in the WAL are accounted for by a rebuild.
            let next = try db.get(StorageKeys.nextShardID).map { UInt64(bigEndianBytes: $0) } ?? 1
            for id in 1..<max(1, next) where !known.contains(id) {
                guard try db.get(StorageKeys.index(WALFormat.controlShardID, id)) == nil else { continue }
                missing.append(
                    ControlFrame.Change(record: ShardRecord(id: id, name: "", config: ShardConfig()), deleted: true))
            }
            guard !missing.isEmpty else { return }
            logger.notice("writing the catalog to the WAL", metadata: ["journal.shards": "\(missing.count)"])
            try writeControl(missing)
        }
    }

    /// Adds to `batch` the catalog writes that remove shard `id`: its record (under `name`, when
    /// that name is still this shard's), floor, batch and time index; its object-tier objects go
    /// to the remote deletion queue.
    static func shardDeletion(id: UInt64, name: String?, db: RocksDB, into batch: RocksDB.WriteBatch) {
        if let name { batch.delete(StorageKeys.shard(name)) }
        batch.delete(StorageKeys.startFloor(id))
        batch.deleteRange(StorageKeys.indexPrefix(id), StorageKeys.prefixEnd(StorageKeys.indexPrefix(id)))
        batch.deleteRange(StorageKeys.timePrefix(id), StorageKeys.prefixEnd(StorageKeys.timePrefix(id)))
        // Its objects in the object tier are deleted from the store by the offloader.
        db.scan(prefix: StorageKeys.tierPrefix(id)) { key, value in
            TieredObject(value)?.release(catalogKey: Array(key), in: batch)
            return true
        }
        batch.deleteRange(StorageKeys.tierPrefix(id), StorageKeys.prefixEnd(StorageKeys.tierPrefix(id)))
    }
}
