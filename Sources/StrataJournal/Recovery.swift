import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Opening a journal: load the catalog, account the index, replay the WAL past the last index
/// checkpoint (verifying every frame), cut a torn tail, re-index, rebuild memory tails.
struct Recovery {
    let db: RocksDB
    let segments: SegmentFiles
    let configuration: JournalConfiguration
    let logger: Logger
    let allocator: ByteBufferAllocator
    let io: any WALIO

    struct Outcome {
        var core: JournalCore
        var active: ActiveSegment
    }

    func run() throws(JournalError) -> Outcome {
        var core = JournalCore()
        let ids = segments.list()
        let checkpoint = try db.get(StorageKeys.checkpoint).flatMap(WALPosition.init)
        // No checkpoint but segments: the index was lost (or never finished its first open), so
        // catalog and index are rebuilt from the WAL alone.
        let rebuilding = checkpoint == nil && !ids.isEmpty
        if rebuilding {
            logger.warning(
                "the index has no checkpoint: rebuilding the catalog and the index from the WAL",
                metadata: ["journal.segments": "\(ids.count)"])
        }

        // 0. Catalog changes in the WAL past the checkpoint (all of it when rebuilding).
        let controlled = try replayControlFrames(ids: ids, from: checkpoint)
        let nextShardID = try db.get(StorageKeys.nextShardID).map { UInt64(bigEndianBytes: $0) } ?? 1
        /// Whether a batch of a shard the catalog does not hold belongs to one that was deleted
        /// (else the WAL cannot be accounted for and the open stops).
        let deleted: (UInt64) -> Bool = { id in rebuilding ? controlled.contains(id) : id < nextShardID }

        // 1. Catalog.
        var records: [ShardRecord] = []
        var catalogError: JournalError?
        db.scan(prefix: StorageKeys.shardPrefix) { _, value in
            do throws(JournalError) { records.append(try ShardRecord(value)) } catch {
                catalogError = error
                return false
            }
            return true
        }
        if let catalogError { throw catalogError }
        for record in records {
            let shard = ShardRuntime(id: record.id, name: record.name, config: record.config)
            if let floor = try db.get(StorageKeys.startFloor(record.id)) {
                shard.startOffset = UInt64(bigEndianBytes: floor)
                shard.nextOffset = shard.startOffset
            }
            core.shards[record.id] = shard
            core.idsByName[record.name] = record.id
        }

        // 2. What the object tier and the index already hold: per shard first/last offsets and
        //    bytes, per segment live bytes. Objects of shards deleted meanwhile go to the store's
        //    deletion queue.
        var firstIndexed: [UInt64: UInt64] = [:]
        let orphanIndex = RocksDB.WriteBatch()
        let orphanObjects = RocksDB.WriteBatch()
        var unreadable: JournalError?
        db.scan(prefix: StorageKeys.tierTag) { key, value in
            let id = UInt64(bigEndianBytes: key[1..<9])
            guard let object = TieredObject(value) else {
                unreadable = JournalError(.corruptData, "object tier catalog entry of shard id \(id) does not decode")
                return false
            }
            guard let shard = core.shards[id] else {
                object.release(catalogKey: Array(key), in: orphanObjects)
                return true
            }
            if firstIndexed[id] == nil { firstIndexed[id] = object.firstOffset }
            shard.nextOffset = max(shard.nextOffset, object.lastOffset + 1)
            shard.tierEnd = max(shard.tierEnd, object.lastOffset + 1)
            shard.tierBytes += object.batchBytes
            shard.storedBytes += object.batchBytes
            shard.indexedMaxTimestamp = max(shard.indexedMaxTimestamp, object.maxTimestamp)
            return true
        }
        if let unreadable { throw unreadable }
        if orphanObjects.count > 0 { try db.write(orphanObjects, durable: true) }
        db.scan(prefix: StorageKeys.indexTag) { key, value in
            let id = UInt64(bigEndianBytes: key[1..<9])
            let base = UInt64(bigEndianBytes: key[9..<17])
            if id == WALFormat.controlShardID, let entry = IndexEntry(value) {
                // A shard's current control frame (or a deleted one's tombstone) is live.
                core.segmentLive[entry.segment, default: 0] += Int64(entry.frameLength)
                return true
            }
            guard let shard = core.shards[id], let entry = IndexEntry(value) else {
                orphanIndex.delete(Array(key))
                return true
            }
            if firstIndexed[id] == nil { firstIndexed[id] = base }
            shard.nextOffset = max(shard.nextOffset, entry.lastOffset + 1)
            shard.storedBytes += Int64(entry.frameLength) - Int64(WALFormat.frameHeaderSize)
            shard.indexedMaxTimestamp = max(shard.indexedMaxTimestamp, entry.maxTimestamp)
            core.segmentLive[entry.segment, default: 0] += Int64(entry.frameLength)
            return true
        }
        if orphanIndex.count > 0 { try db.write(orphanIndex, durable: false) }

        // 3. Replay the WAL past the checkpoint.
        let maxFrame = configuration.maxWALFrameBytes
        var validEnd: WALPosition?
        /// Creation time and frame checksum salt of the last segment.
        var lastCreated: Int64?
        var lastSalt: UInt32 = 0
        /// Index locations replayed for offsets below a shard's end (compaction copies), not yet in RocksDB.
        var relocated: [[UInt8]: IndexEntry] = [:]
        var replayed = 0
        for (n, id) in ids.enumerated() {
            let isLast = n == ids.count - 1
            let path = segments.path(id)
            let file = try FileDescriptor(path: path, flags: O_RDWR)
            let size = file.size
            let headerSize = Int64(WALFormat.segmentHeaderSize)
            if size < headerSize {
                // A segment whose creation never finished holds nothing.
                guard isLast else {
                    throw JournalError(.corruptData, "\(path) position 0: segment header is truncated")
                }
                logger.warning("removing a segment with a torn header", metadata: ["journal.file": "\(path)"])
                segments.remove(id)
                continue
            }
            var header = allocator.buffer(capacity: WALFormat.segmentHeaderSize)
            try file.read(count: WALFormat.segmentHeaderSize, at: 0, into: &header)
            guard let version = WALFormat.headerVersion(header), header.getInteger(at: 16, as: UInt64.self) == id
            else {
                throw JournalError(.corruptData, "\(path) position 0: not a Strata WAL segment (or wrong segment id)")
            }
            lastCreated = header.getInteger(at: 24, as: UInt64.self).map { Int64(bitPattern: $0) }
            let salt = WALFormat.salt(segment: id, version: version)
            segments.setSalt(salt, for: id)
            lastSalt = salt
            var position = Int(headerSize)
            if let checkpoint {
                if id < checkpoint.segment {
                    core.segmentTotal[id] = size - headerSize
                    validEnd = WALPosition(segment: id, position: UInt64(size))
                    continue
                }
                if id == checkpoint.segment { position = Int(checkpoint.position) }
            }
            let index = RocksDB.WriteBatch()
            var scanner = SegmentScanner(
                file: file, size: Int(size), from: position, maxFrame: maxFrame, salt: salt, allocator: allocator)
            scan: while true {
                let (check, bufferIndex) = try scanner.check()
                position = scanner.position
                switch check {
                case .frame(let shardID, let header, let length):
                    if core.shards[shardID] == nil, shardID != WALFormat.controlShardID, !deleted(shardID) {
                        throw JournalError(
                            .corruptData,
                            "\(path) position \(position): a batch of shard id \(shardID), which neither the catalog nor "
                                + "the WAL's control frames know: the WAL cannot be accounted for, so the journal does "
                                + "not open (nothing was deleted)")
                    }
                    try replay(
                        shardID: shardID, header: header, frame: scanner.buffer, at: bufferIndex, position: position,
                        length: length, segment: id, core: &core, index: index, firstIndexed: &firstIndexed,
                        relocated: &relocated)
                    scanner.advance(by: length)
                    position = scanner.position
                    replayed += 1
                case .end where position == Int(size) || isLast:
                    break scan
                case .end:
                    throw JournalError(.corruptData, "\(path) position \(position): sealed segment ends inside a frame")
                case .corrupt(let reason):
                    guard isLast else { throw JournalError(.corruptData, "\(path) position \(position): \(reason)") }
                    break scan
                }
            }
            if Int64(position) < size {
                try cutTail(of: file, path: path, at: position, size: Int(size), salt: salt, core: core)
            }
            if index.count > 0 { try db.write(index, durable: false) }
            core.segmentTotal[id] = Int64(position) - headerSize
            validEnd = WALPosition(segment: id, position: UInt64(position))
        }

        // 4. Index entries that point past the end of the WAL (written before a crash that lost
        //    their unsynced frames) are dropped.
        let end = validEnd ?? WALPosition(segment: 0, position: 0)
        let stale = RocksDB.WriteBatch()
        for shard in core.shards.values {
            let iterator = db.makeIterator()
            iterator.seekForPrev(StorageKeys.index(shard.id, .max))
            while iterator.isValid, iterator.key.starts(with: StorageKeys.indexPrefix(shard.id)),
                let entry = IndexEntry(iterator.value),
                WALPosition(segment: entry.segment, position: entry.position) >= end
            {
                let base = UInt64(bigEndianBytes: iterator.key[9..<17])
                logger.warning(
                    "dropping index entry past the WAL end",
                    metadata: ["journal.shard": "\(shard.name)", "journal.offset": "\(base)"])
                stale.delete(iterator.key)
                shard.nextOffset = min(shard.nextOffset, base)
                shard.storedBytes -= Int64(entry.frameLength) - Int64(WALFormat.frameHeaderSize)
                core.segmentLive[entry.segment, default: 0] -= Int64(entry.frameLength)
                iterator.previous()
            }
        }
        if stale.count > 0 { try db.write(stale, durable: false) }

        for shard in core.shards.values {
            shard.startOffset = max(
                shard.startOffset, min(firstIndexed[shard.id] ?? shard.nextOffset, shard.nextOffset))
            shard.endOffset = shard.nextOffset
            shard.queuedMaxTimestamp = shard.indexedMaxTimestamp
            shard.tail.removeAll { $0.lastOffset >= shard.nextOffset }
            shard.tailBytes = shard.tail.reduce(0) { $0 + $1.batch.readableBytes }
        }

        // 5. The active segment: the last one if it has room, else a new one.
        var active: ActiveSegment
        if let last = validEnd, last.position + UInt64(maxFrame) <= UInt64(configuration.segmentBytes) {
            let file = try FileDescriptor(path: segments.path(last.segment), flags: O_RDWR)
            // What a killed process left in the page cache is synced before new frames say so.
            do throws(WALIOError) { try io.sync(fd: file.fd) } catch { throw error.journalError }
            active = ActiveSegment(id: last.segment, file: file, position: last.position)
            active.syncedPosition = last.position
            active.salt = lastSalt
            if let lastCreated { active.createdMilliseconds = lastCreated }
        } else {
            let id = (validEnd?.segment ?? 0) + 1
            let created = try Journal.createSegment(
                id: id, directory: segments.directory, io: io, spare: segments.takeSpare())
            segments.setSalt(created.salt, for: id)
            active = ActiveSegment(id: id, file: created.file, position: UInt64(WALFormat.segmentHeaderSize))
            active.salt = created.salt
            active.recycled = created.recycled
            core.segmentTotal[id] = 0
        }
        core.activeSegment = active.id
        core.syncedThrough = WALPosition(segment: active.id, position: active.position)

        // 6. Checkpoint what was just re-indexed.
        try db.put(StorageKeys.checkpoint, core.syncedThrough.encoded, durable: false)
        try db.flush()
        logger.info(
            "journal recovered",
            metadata: [
                "journal.segments": "\(ids.count)", "journal.replayed_batches": "\(replayed)",
                "journal.checkpoint": "\(checkpoint.map { "\($0.segment):\($0.position)" } ?? "none")",
            ])
        return Outcome(core: core, active: active)
    }

    /// Re-indexes one frame found in the WAL.
    private func replay(
        shardID: UInt64, header: RecordBatch.Header, frame buffer: ByteBuffer, at bufferIndex: Int, position: Int,
        length: Int,
        segment: UInt64, core: inout JournalCore, index: RocksDB.WriteBatch, firstIndexed: inout [UInt64: UInt64],
        relocated: inout [[UInt8]: IndexEntry]
    ) throws(JournalError) {
        // Control frames were applied before the replay; a shard not in the catalog was deleted.
        guard let shard = core.shards[shardID] else { return }
        let base = UInt64(header.baseOffset)
        let last = UInt64(header.lastOffset)
        let location = IndexEntry(
            segment: segment, position: UInt64(position), frameLength: UInt32(length), lastOffset: last,
            maxTimestamp: header.maxTimestamp)
        if base >= shard.nextOffset {
            if base > shard.nextOffset {
                logger.error(
                    "offset gap in the WAL",
                    metadata: [
                        "journal.shard": "\(shard.name)", "journal.expected": "\(shard.nextOffset)",
                        "journal.found": "\(base)",
                    ])
            }
            if firstIndexed[shardID] == nil { firstIndexed[shardID] = base }
            index.put(StorageKeys.index(shardID, base), location.encoded)
            if header.maxTimestamp > shard.indexedMaxTimestamp {
                index.put(StorageKeys.time(shardID, header.maxTimestamp), base.bigEndianBytes)
                shard.indexedMaxTimestamp = header.maxTimestamp
            }
            shard.nextOffset = last + 1
            shard.storedBytes += Int64(length - WALFormat.frameHeaderSize)
            core.segmentLive[segment, default: 0] += Int64(length)
            var copy = allocator.buffer(capacity: length - WALFormat.frameHeaderSize)
            copy.writeImmutableBuffer(
                buffer.getSlice(
                    at: bufferIndex + WALFormat.frameHeaderSize, length: length - WALFormat.frameHeaderSize)!)
            shard.addToTail(
                TailBatch(baseOffset: base, lastOffset: last, batch: copy),
                limit: configuration.tailLimit(shards: core.shards.count))
            return
        }
        // An offset below the shard's end: a compaction copy of an older batch (written later in
        // WAL order), or a frame the index has already.
        guard base >= shard.startOffset, base >= shard.tierEnd else { return }  // removed by retention, or offloaded
        let key = StorageKeys.index(shardID, base)
        let stored = try db.get(key).flatMap(IndexEntry.init)
        guard let existing = relocated[key] ?? stored else {
            relocated[key] = location
            firstIndexed[shardID] = min(firstIndexed[shardID] ?? base, base)
            index.put(StorageKeys.index(shardID, base), location.encoded)
            shard.storedBytes += Int64(length - WALFormat.frameHeaderSize)
            core.segmentLive[segment, default: 0] += Int64(length)
            return
        }
        let here = WALPosition(segment: segment, position: UInt64(position))
        let there = WALPosition(segment: existing.segment, position: existing.position)
        if here > there {
            relocated[key] = location
            index.put(StorageKeys.index(shardID, base), location.encoded)
            core.segmentLive[existing.segment, default: 0] -= Int64(existing.frameLength)
            core.segmentLive[segment, default: 0] += Int64(length)
        }
    }

    /// Applies the control frames of the WAL past `checkpoint` (all of it without one) that the
    /// index does not know yet: creations and reconfigurations write the shard's catalog record,
    /// tombstones remove it, and each becomes the shard's current control entry. Returns the
    /// shard ids the WAL's control frames name.
    private func replayControlFrames(ids: [UInt64], from checkpoint: WALPosition?) throws(JournalError) -> Set<UInt64> {
        let maxFrame = configuration.maxWALFrameBytes
        let headerSize = WALFormat.segmentHeaderSize
        var latest: [UInt64: (change: ControlFrame.Change, location: IndexEntry)] = [:]
        for id in ids {
            if let checkpoint, id < checkpoint.segment { continue }
            // A torn header or a file that is no segment is for the replay to judge.
            guard try segments.reader(id).size >= Int64(headerSize) else { continue }
            let start = checkpoint?.segment == id ? Int(checkpoint!.position) : headerSize
            var scanner = try segments.scanner(id, from: start, maxFrame: maxFrame, allocator: allocator)
            // The replay proper judges damage; this pass only stops at it.
            scan: while true {
                let (check, index) = try scanner.check()
                guard case .frame(let shardID, let header, let length) = check else { break scan }
                if shardID == WALFormat.controlShardID,
                    let batch = scanner.buffer.getSlice(
                        at: index + WALFormat.frameHeaderSize, length: length - WALFormat.frameHeaderSize),
                    let change = ControlFrame.decode(batch)
                {
                    latest[change.record.id] = (
                        change,
                        IndexEntry(
                            segment: id, position: UInt64(scanner.position), frameLength: UInt32(length),
                            lastOffset: change.record.id, maxTimestamp: header.maxTimestamp)
                    )
                }
                scanner.advance(by: length)
            }
        }
        var named = Set(latest.keys)
        db.scan(prefix: StorageKeys.indexPrefix(WALFormat.controlShardID)) { key, _ in
            named.insert(UInt64(bigEndianBytes: key[9..<17]))
            return true
        }
        let batch = RocksDB.WriteBatch()
        var nextID = try db.get(StorageKeys.nextShardID).map { UInt64(bigEndianBytes: $0) } ?? 1
        let ordered = latest.sorted {
            WALPosition(segment: $0.value.location.segment, position: $0.value.location.position)
                < WALPosition(segment: $1.value.location.segment, position: $1.value.location.position)
        }
        for (id, item) in ordered {
            nextID = max(nextID, id + 1)
            let key = StorageKeys.index(WALFormat.controlShardID, id)
            if let known = try db.get(key).flatMap(IndexEntry.init),
                WALPosition(segment: known.segment, position: known.position)
                    >= WALPosition(segment: item.location.segment, position: item.location.position)
            {
                continue
            }
            batch.put(key, item.location.encoded)
            let name = item.change.record.name
            let current = try db.get(StorageKeys.shard(name)).map { bytes throws(JournalError) in try ShardRecord(bytes)
            }
            if item.change.deleted {
                logger.notice(
                    "shard deletion found in the WAL",
                    metadata: ["journal.shard": "\(name)", "journal.shard_id": "\(id)"])
                Journal.shardDeletion(id: id, name: current?.id == id ? name : nil, db: db, into: batch)
            } else {
                logger.notice(
                    "shard found in the WAL", metadata: ["journal.shard": "\(name)", "journal.shard_id": "\(id)"])
                batch.put(StorageKeys.shard(name), try item.change.record.encoded())
            }
        }
        if batch.count > 0 {
            batch.put(StorageKeys.nextShardID, nextID.bigEndianBytes)
            try db.write(batch, durable: true)
        }
        return named
    }

    /// The bytes after the last valid frame of the last segment: a torn tail is cut (synced).
    /// Only the segment being written when the node stopped can end in a torn write, and only
    /// if nothing written after the damage was synced proves it otherwise: then the open stops,
    /// or with quarantineDamagedWAL the range is copied aside first.
    private func cutTail(
        of file: FileDescriptor, path: String, at position: Int, size: Int, salt: UInt32, core: JournalCore
    ) throws(JournalError) {
        if let later = try validFrame(after: position, in: file, size: size, salt: salt, core: core) {
            guard configuration.quarantineDamagedWAL else {
                throw JournalError(
                    .corruptData,
                    "\(path) position \(position): a damaged frame followed by valid data (\(later)); this is "
                        + "not a torn tail, so nothing is truncated and the journal does not open. To move the "
                        + "damaged range aside and open without it, start with quarantineDamagedWAL "
                        + "(journal-node --quarantine-damaged-wal)")
            }
            try quarantine(file: file, path: path, from: position, size: size)
        }
        logger.warning(
            "cutting torn WAL tail",
            metadata: [
                "journal.file": "\(path)", "journal.position": "\(position)", "journal.bytes": "\(size - position)",
            ])
        guard ftruncate(file.fd, off_t(position)) == 0, fdatasync(file.fd) == 0 else {
            throw JournalError(.ioError, "cannot cut the torn tail of \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// A valid frame (both checksums right) past the damage at `position` that was written after
    /// the segment had been synced beyond `position`, described for the error; nil when nothing
    /// proves the damaged bytes were synced (garbage, zeros, a torn frame, or frames written while
    /// they were not: the torn and reordered writes of a power cut).
    private func validFrame(
        after position: Int, in file: FileDescriptor, size: Int, salt: UInt32, core: JournalCore
    ) throws(JournalError) -> String? {
        let maxFrame = configuration.maxWALFrameBytes
        var scanner = SegmentScanner(
            file: file, size: size, from: position + 1, maxFrame: maxFrame, salt: salt, allocator: allocator)
        while scanner.position + WALFormat.frameHeaderSize + RecordBatch.headerSize <= size {
            let (check, index) = try scanner.check()
            guard case .frame(let shardID, let header, let length) = check else {
                scanner.advance(by: 1)
                continue
            }
            let synced = WALFormat.syncedThrough(scanner.buffer, at: index)
            if Int(synced) > position {
                let what =
                    shardID == WALFormat.controlShardID
                    ? "a control frame"
                    : "shard \(core.shards[shardID]?.name ?? "id \(shardID)") offset \(header.baseOffset)"
                return "\(what) at position \(scanner.position), written once the segment was synced through \(synced)"
            }
            scanner.advance(by: length)
        }
        return nil
    }

    /// Copies the bytes of a damaged WAL tail from `position` to `<segment>.damaged-<position>`
    /// beside it (synced) before the tail is cut, so that an operator's choice to open without
    /// them keeps them for inspection.
    private func quarantine(file: FileDescriptor, path: String, from position: Int, size: Int) throws(JournalError) {
        let target = path + ".damaged-\(position)"
        let copy = try FileDescriptor(path: target, flags: O_WRONLY | O_CREAT | O_TRUNC)
        var done = position
        while done < size {
            let count = min(8 << 20, size - done)
            var chunk = allocator.buffer(capacity: count)
            try file.read(count: count, at: Int64(done), into: &chunk)
            do throws(WALIOError) {
                try chunk.withUnsafeReadableBytes { raw throws(WALIOError) in
                    try PwriteIO.pwriteAll(
                        fd: copy.fd, raw.baseAddress!, count: raw.count, offset: Int64(done - position))
                }
                try PwriteIO().sync(fd: copy.fd)
            } catch {
                throw JournalError(
                    .ioError, "cannot quarantine the damaged tail of \(path) to \(target): \(error.journalError)")
            }
            done += count
        }
        try FileDescriptor.syncDirectory(segments.directory)
        logger.critical(
            "damaged WAL range quarantined",
            metadata: ["journal.file": "\(path)", "journal.position": "\(position)", "journal.copy": "\(target)"])
    }
}
