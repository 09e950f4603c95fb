import Foundation
import Logging
import NIOCore

extension Journal {
    func maintenanceLoop() {
        while true {
            _ = maintenanceSignal.wait(timeout: configuration.maintenanceInterval)
            if core.withLock({ $0.closing }) { break }
            do {
                try runMaintenance()
            } catch {
                logger.error("journal maintenance failed", metadata: ["error": "\(error)"])
            }
        }
        maintenanceDone.signal()
    }

    /// Makes the index durable up to the WAL position that is synced and indexed, so a restart
    /// replays only the WAL after it.
    public func checkpoint() throws(JournalError) {
        let through = core.withLock { $0.syncedThrough }
        try db.put(StorageKeys.checkpoint, through.encoded, durable: false)
        try db.flush()
    }

    /// Runs one maintenance step, logged at warning when it took `slowOperationLog` or longer.
    private func timed<T>(_ what: String, _ metadata: Logger.Metadata = [:], _ body: () throws -> T) rethrows -> T {
        let started = ContinuousClock.now
        defer {
            let elapsed = ContinuousClock.now - started
            if elapsed >= configuration.slowOperationLog {
                logger.warning(
                    "slow maintenance step: \(what)",
                    metadata: metadata.merging(["journal.ms": "\(Int(elapsed.seconds * 1000))"]) { $1 })
            }
        }
        return try body()
    }

    /// One round of upkeep: retention, index checkpoint, removal of dead segments, compaction of
    /// sparse ones. Runs on the maintenance thread every `maintenanceInterval`; blocking.
    public func runMaintenance() throws {
        try maintenanceLock.withLock { _ in
            try applyRetention()
            requestRollIfAged()
            try timed("index checkpoint") { try checkpoint() }
            try reclaimSegments()
        }
    }

    /// Asks the writer to seal the active segment when it holds data and is older than
    /// `segmentMaxAge`.
    private func requestRollIfAged() {
        guard let maxAge = configuration.segmentMaxAge else { return }
        let aged = active.withLock { active in
            active.position > UInt64(WALFormat.segmentHeaderSize)
                && WallClock.milliseconds().minusSaturating(active.createdMilliseconds) >= Int64(maxAge.seconds * 1000)
        }
        guard aged else { return }
        core.withLock { $0.rollRequested = true }
        writerSignal.signal()
    }

    // MARK: Retention

    private func applyRetention() throws {
        let now = WallClock.milliseconds()
        let shards = core.withLock { core in
            core.shards.values.filter { $0.config.retentionBytes != nil || $0.config.retentionMilliseconds != nil }
                .map { ($0.id, $0.name, $0.config, $0.storedBytes, $0.endOffset) }
        }
        for (id, name, config, storedBytes, end) in shards {
            var remaining = storedBytes
            var newStart: UInt64?
            var freed: [UInt64: Int64] = [:]
            var tierFreed: Int64 = 0
            let batch = RocksDB.WriteBatch()
            // The object tier holds the oldest batches: whole objects go first, while the shard
            // still holds at least `retentionBytes` without them (or all they hold is too old).
            var tierKept = false
            db.scan(prefix: StorageKeys.tierPrefix(id)) { key, value in
                guard let object = TieredObject(value) else { return true }
                let tooOld = config.retentionMilliseconds.map { object.maxTimestamp < now.minusSaturating($0) } ?? false
                let tooBig = config.retentionBytes.map { remaining - object.batchBytes >= $0 } ?? false
                guard tooOld || tooBig else {
                    tierKept = true
                    return false
                }
                object.release(catalogKey: Array(key), in: batch)
                remaining -= object.batchBytes
                tierFreed += object.batchBytes
                newStart = object.lastOffset + 1
                return true
            }
            if !tierKept {
                db.scan(prefix: StorageKeys.indexPrefix(id)) { key, value in
                    guard let entry = IndexEntry(value), entry.lastOffset < end else { return false }
                    let length = Int64(entry.frameLength) - Int64(WALFormat.frameHeaderSize)
                    let tooOld =
                        config.retentionMilliseconds.map { entry.maxTimestamp < now.minusSaturating($0) } ?? false
                    let tooBig = config.retentionBytes.map { remaining > $0 } ?? false
                    guard tooOld || tooBig else { return false }
                    batch.delete(Array(key))
                    remaining -= length
                    freed[entry.segment, default: 0] += Int64(entry.frameLength)
                    newStart = entry.lastOffset + 1
                    return true
                }
            }
            guard let newStart else { continue }
            db.scan(prefix: StorageKeys.timePrefix(id)) { key, value in
                guard UInt64(bigEndianBytes: value) < newStart else { return false }
                batch.delete(Array(key))
                return true
            }
            if tierFreed > 0 {
                // Objects leave the catalog for the deletion queue with the new floor, atomically.
                batch.put(StorageKeys.startFloor(id), newStart.bigEndianBytes)
            } else {
                // The floor is synced first: offsets never go back, even if the deletions are lost.
                try timed("retention floor sync", ["journal.shard": "\(name)"]) {
                    try db.put(StorageKeys.startFloor(id), newStart.bigEndianBytes, durable: true)
                }
            }
            // Readers see the new start before its batches leave the index: one that finds its
            // batch gone then answers offset_out_of_range instead of serving the next batch.
            core.withLock { core in
                guard let shard = core.shards[id] else { return }
                shard.startOffset = max(shard.startOffset, newStart)
            }
            try timed("retention index deletes", ["journal.shard": "\(name)"]) {
                try db.write(batch, durable: tierFreed > 0)
            }
            core.withLock { core in
                guard let shard = core.shards[id] else { return }
                shard.storedBytes -= storedBytes - remaining
                shard.tierBytes -= tierFreed
                shard.dropTail(below: newStart)
                for (segment, bytes) in freed { core.segmentLive[segment, default: 0] -= bytes }
            }
            logger.debug(
                "retention applied",
                metadata: [
                    "journal.shard": "\(name)", "journal.start": "\(newStart)",
                    "journal.freed": "\(storedBytes - remaining)",
                ])
        }
    }

    // MARK: Segments

    /// A frame copied out of a scan buffer, so queued copies do not pin whole chunks.
    private static func copy(_ buffer: ByteBuffer, at index: Int, length: Int, _ allocator: ByteBufferAllocator)
        -> ByteBuffer
    {
        var frame = allocator.buffer(capacity: length)
        frame.writeImmutableBuffer(buffer.getSlice(at: index, length: length)!)
        return frame
    }

    /// Deletes sealed segments with no live batch and compacts those below the threshold.
    private func reclaimSegments() throws {
        let (dead, sparse) = core.withLock { core -> ([UInt64], [UInt64]) in
            var dead: [UInt64] = []
            var sparse: [UInt64] = []
            for (segment, total) in core.segmentTotal
            where segment < core.syncedThrough.segment && !core.keptSegments.contains(segment) {
                let live = core.segmentLive[segment] ?? 0
                if live <= 0 {
                    dead.append(segment)
                } else if Double(live) < Double(total) * configuration.compactionThreshold {
                    sparse.append(segment)
                }
            }
            return (dead.sorted(), sparse.sorted())
        }
        for segment in dead { removeSegment(segment) }
        for segment in sparse where !core.withLock({ $0.closing }) { try compact(segment: segment) }
    }

    /// Unlinks a sealed segment, but only once a scan of its frames shows that the index points
    /// at none of them: a node never deletes what it cannot account for. A segment that fails the
    /// check is kept (and left alone from then on) with a critical log line naming it.
    private func removeSegment(_ segment: UInt64) {
        let holder: String?
        do {
            holder = try indexedFrame(in: segment)
        } catch {
            holder = "it cannot be scanned: \(error)"
        }
        if let holder {
            core.withLock { _ = $0.keptSegments.insert(segment) }
            logger.critical(
                "segment kept: the index still needs it",
                metadata: ["journal.file": "\(segments.path(segment))", "journal.reason": "\(holder)"])
            return
        }
        core.withLock { core in
            core.segmentTotal[segment] = nil
            core.segmentLive[segment] = nil
        }
        timed("segment removal", ["journal.segment": "\(segment)"]) {
            segments.remove(segment)
            do {
                try FileDescriptor.syncDirectory(walDirectory)
            } catch {
                logger.error("segment removal not synced", metadata: ["error": "\(error)"])
            }
        }
        logger.debug("segment removed", metadata: ["journal.segment": "\(segment)"])
    }

    /// What in `segment` the index still points at (a batch or a control frame), nil for nothing.
    func indexedFrame(in segment: UInt64) throws -> String? {
        var scanner = try segments.scanner(segment, maxFrame: configuration.maxWALFrameBytes, allocator: allocator)
        while scanner.position < scanner.size {
            let (check, _) = try scanner.check()
            switch check {
            case .frame(let shardID, let header, let length):
                if let entry = try db.get(StorageKeys.index(shardID, UInt64(header.baseOffset))).flatMap(
                    IndexEntry.init),
                    entry.segment == segment
                {
                    return
                        "the index points at shard id \(shardID) offset \(header.baseOffset) at position \(scanner.position)"
                }
                scanner.advance(by: length)
            case .end:
                return nil
            case .corrupt(let reason):
                return "position \(scanner.position): \(reason)"
            }
        }
        return nil
    }

    /// Copies the live batches of `segment` forward into the WAL, makes the index point at the
    /// copies, checkpoints, then deletes the segment. The copies go to the writer in rounds of at
    /// most `compactionChunkBytes`, each waited for before the next is read: foreground appends
    /// queued meanwhile are written between two rounds, never behind a whole segment's copies,
    /// and at most one round is held in memory.
    func compact(segment: UInt64) throws {
        var scanner = try segments.scanner(segment, maxFrame: configuration.maxWALFrameBytes, allocator: allocator)
        var round: [PendingEntry] = []
        var roundBytes = 0
        var copied = 0
        func flush() throws {
            guard !round.isEmpty else { return }
            // Copies go on while closing: close waits for this compaction before it stops the writer.
            try writeAndWait(round, whileClosing: true)
            copied += round.count
            round.removeAll(keepingCapacity: true)
            roundBytes = 0
        }
        scan: while scanner.position < scanner.size {
            let (check, bufferIndex) = try scanner.check()
            let position = scanner.position
            switch check {
            case .frame(let shardID, let header, let length):
                let key = StorageKeys.index(shardID, UInt64(header.baseOffset))
                if let entry = try db.get(key).flatMap(IndexEntry.init), entry.segment == segment,
                    entry.position == UInt64(position)
                {
                    round.append(
                        PendingEntry(
                            shardID: shardID,
                            frame: Self.copy(scanner.buffer, at: bufferIndex, length: length, allocator),
                            baseOffset: UInt64(header.baseOffset), lastOffset: UInt64(header.lastOffset),
                            maxTimestamp: header.maxTimestamp, durability: .fsync, addsTimeIndex: false,
                            kind: .relocation(
                                from: WALPosition(segment: segment, position: UInt64(position)),
                                completion: Completion())))
                    roundBytes += length
                    if roundBytes >= configuration.compactionChunkBytes { try flush() }
                }
                scanner.advance(by: length)
            case .end:
                break scan
            case .corrupt(let reason):
                throw JournalError(.corruptData, "\(scanner.file.path) position \(position): \(reason)")
            }
        }
        try flush()
        try timed("index checkpoint after compaction") { try checkpoint() }
        removeSegment(segment)
        logger.info(
            "segment compacted",
            metadata: ["journal.segment": "\(segment)", "journal.batches": "\(copied)"])
    }
}
