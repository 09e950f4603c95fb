import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

extension Journal {
    /// The WAL writer thread: takes every queued entry that fits the active segment, writes the
    /// group with one call, syncs it when any entry needs it (or the async flush interval ran
    /// out), indexes it, publishes it to readers and acknowledges it.
    func writerLoop() {
        var lastSync = ContinuousClock.now
        let interval = configuration.asyncFlushInterval
        while true {
            let (group, stopping) = takeGroup()
            if group.isEmpty {
                let unsynced = active.withLock { $0.unsynced } && core.withLock { $0.failure == nil }
                if stopping {
                    if unsynced { syncActive() }
                    writerDone.signal()
                    return
                }
                if unsynced {
                    let due = lastSync + interval
                    if ContinuousClock.now >= due {
                        syncActive()
                        lastSync = .now
                    } else {
                        _ = writerSignal.wait(timeout: due - ContinuousClock.now)
                    }
                } else {
                    writerSignal.wait()
                }
                continue
            }
            let mustSync =
                group.contains {
                    if case .append = $0.kind { return $0.durability == .fsync }
                    return true
                } || ContinuousClock.now - lastSync >= interval
            writeGroup(group, sync: mustSync)
            if mustSync { lastSync = .now }
        }
    }

    /// What the writer does next, decided under the core lock.
    private enum NextStep {
        /// Write these entries (all fit the active segment, at most 64 MiB).
        case write([PendingEntry])
        /// Nothing is queued.
        case wait
        /// Seal the active segment first: the next entry does not fit (or maintenance asked).
        case roll(requested: Bool)
        /// The journal has stopped: fail these.
        case fail([PendingEntry], JournalError)
    }

    /// Takes the entries that fit in the active segment (at least one), rolling to a new segment
    /// first when the next entry does not fit; also whether the writer may stop. After a
    /// fail-stop everything queued is failed.
    private func takeGroup() -> ([PendingEntry], Bool) {
        let (room, isEmptySegment) = active.withLock {
            (Int(configuration.segmentBytes) - Int($0.position), $0.position == UInt64(WALFormat.segmentHeaderSize))
        }
        let (step, stopping) = core.withLock { core -> (NextStep, Bool) in
            (Self.nextStep(&core, room: room, isEmptySegment: isEmptySegment), core.writerStop)
        }
        switch step {
        case .write(let group):
            return (group, stopping)
        case .wait:
            return ([], stopping)
        case .fail(let entries, let failure):
            Self.fail(entries, with: failure)
            return ([], stopping)
        case .roll(let requested):
            do {
                try checkFreeSpace(for: WALFormat.segmentHeaderSize)
            } catch {
                // The reserve refuses the new segment: nothing was written, so this is no fail-stop.
                if requested {
                    // Sealing by age can wait; the appends behind it still fit where they are.
                    logger.warning("cannot seal the active segment", metadata: ["error": "\(error)"])
                } else {
                    failPending(error)
                }
                return takeGroup()
            }
            do {
                let started = ContinuousClock.now
                try rollSegment()
                let elapsed = ContinuousClock.now - started
                if elapsed >= configuration.slowOperationLog {
                    logSlow("WAL segment roll", elapsed, group: [], sync: true)
                }
            } catch {
                failStop(error)
                return ([], stopping)
            }
            return takeGroup()
        }
    }

    private static func nextStep(_ core: inout JournalCore, room: Int, isEmptySegment: Bool) -> NextStep {
        if let failure = core.failure {
            let failed = Array(core.pending)
            core.pending.removeAll()
            core.writerIdle = true
            return .fail(failed, failure)
        }
        if core.rollRequested {
            core.rollRequested = false
            if !isEmptySegment { return .roll(requested: true) }
        }
        guard let first = core.pending.first else {
            core.writerIdle = true
            return .wait
        }
        if first.frameLength > room && !isEmptySegment { return .roll(requested: false) }
        var taken: [PendingEntry] = []
        var bytes = 0
        while let next = core.pending.first, taken.isEmpty || bytes + next.frameLength <= room, bytes < 64 << 20 {
            bytes += next.frameLength
            taken.append(core.pending.removeFirst())
        }
        return .write(taken)
    }

    /// Seals the active segment (synced) and starts the next one.
    func rollSegment() throws(JournalError) {
        try active.withLock { (active: inout ActiveSegment) throws(JournalError) in
            try active.cutReusedTail(io: io)
            if active.unsynced {
                do throws(WALIOError) { try io.sync(fd: active.file.fd) } catch { throw error.journalError }
                active.unsynced = false
            }
            let next = try Self.createSegment(
                id: active.id + 1, directory: walDirectory, io: io, spare: segments.takeSpare())
            segments.setSalt(next.salt, for: next.id)
            logger.debug(
                "segment rolled", metadata: ["journal.segment": "\(next.id)", "journal.recycled": "\(next.recycled)"])
            let sealed = active.id
            active = ActiveSegment(id: next.id, file: next.file, position: UInt64(WALFormat.segmentHeaderSize))
            active.salt = next.salt
            active.recycled = next.recycled
            core.withLock { core in
                core.activeSegment = next.id
                core.segmentTotal[next.id] = 0
                core.segmentLive[next.id] = core.segmentLive[next.id] ?? 0
                if core.syncedThrough.segment == sealed {
                    core.syncedThrough = WALPosition(segment: next.id, position: UInt64(WALFormat.segmentHeaderSize))
                }
            }
        }
    }

    /// Creates a segment file with its header, synced along with its directory entry. With a
    /// `spare` (a deleted segment's file) the file is reused: renamed, its header rewritten, its
    /// old bytes left to be overwritten, so that syncs of new frames overwrite written blocks
    /// instead of allocating new ones (the frame checksum salt keeps the old frames out).
    static func createSegment(id: UInt64, directory: String, io: any WALIO, spare: String? = nil) throws(JournalError)
        -> (
            id: UInt64, file: FileDescriptor, salt: UInt32, recycled: Bool
        )
    {
        let path = directory + "/" + WALFormat.segmentFileName(id)
        // A spare gets its new header (synced) under its spare name first and only then its
        // segment name, so a segment name never shows another segment's header.
        let recycled = spare != nil
        let file = try FileDescriptor(path: spare ?? path, flags: recycled ? O_RDWR : O_RDWR | O_CREAT | O_TRUNC)
        let header = WALFormat.segmentHeader(id: id, createdMilliseconds: WallClock.milliseconds())
        do throws(WALIOError) {
            var failure: WALIOError?
            header.withUnsafeBytes { raw in
                do throws(WALIOError) {
                    try io.write(fd: file.fd, raw.baseAddress!, count: raw.count, offset: 0, sync: true)
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        } catch {
            unlink(spare ?? path)
            throw error.journalError
        }
        if let spare {
            guard rename(spare, path) == 0 else {
                throw JournalError(.ioError, "cannot reuse \(spare) as \(path): \(String(cString: strerror(errno)))")
            }
            io.renamed(from: spare, to: path)
        }
        try FileDescriptor.syncDirectory(directory)
        return (id, file, WALFormat.salt(segment: id, version: WALFormat.version), recycled)
    }

    private func syncActive() {
        do {
            try active.withLock { (active: inout ActiveSegment) throws(WALIOError) in
                let started = ContinuousClock.now
                try io.sync(fd: active.file.fd)
                let elapsed = ContinuousClock.now - started
                active.unsynced = false
                active.syncedPosition = active.position
                let through = WALPosition(segment: active.id, position: active.position)
                core.withLock { core in
                    core.syncedThrough = through
                    core.statistics.walSyncs += 1
                    core.statistics.walSyncLatency.record(elapsed)
                }
            }
        } catch {
            failStop(error.journalError)
        }
    }

    /// The first WAL (or index) write or sync error stops the journal: after a failed write or
    /// fdatasync the kernel may have dropped the dirty pages, so a retry that "succeeds" proves
    /// nothing ("fsyncgate"). `group` and everything queued fail as unavailable, nothing more is
    /// acknowledged, `health` reports the failure, and only a restart (whose recovery re-verifies
    /// the WAL) resumes service.
    func failStop(_ error: JournalError, group: [PendingEntry] = []) {
        let (failure, first) = core.withLock { core -> (JournalError, Bool) in
            if let failure = core.failure { return (failure, false) }
            let failure = JournalError(
                .unavailable,
                "the journal stopped after a WAL I/O error and acknowledges nothing until a restart re-verifies "
                    + "the WAL: \(error)")
            core.failure = failure
            return (failure, true)
        }
        if first {
            logger.critical(
                "WAL I/O failed: the journal stops acknowledging (fail-stop); restart the node",
                metadata: ["error": "\(error)"])
        }
        failPending(failure, group: group)
    }

    /// Free bytes on the data directory's filesystem (nil when statvfs fails).
    func freeDiskBytes() -> Int64? {
        var info = statvfs()
        guard statvfs(configuration.dataDirectory, &info) == 0 else { return nil }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// Refuses a write of `bytes` that would leave less than the configured reserve free.
    func checkFreeSpace(for bytes: Int) throws(JournalError) {
        guard configuration.minFreeDiskBytes > 0, let free = freeDiskBytes() else { return }
        if free - Int64(bytes) < configuration.minFreeDiskBytes {
            throw JournalError(
                .diskFull,
                "only \(free) bytes free in \(configuration.dataDirectory), below the reserve of "
                    + "\(configuration.minFreeDiskBytes); nothing was acknowledged, retry when space returns")
        }
    }

    private func logSlow(_ what: String, _ elapsed: Duration, group: [PendingEntry], sync: Bool) {
        let relocations = group.count { if case .relocation = $0.kind { true } else { false } }
        logger.warning(
            "slow \(what): appends waited behind it",
            metadata: [
                "journal.ms": "\(Int(elapsed.seconds * 1000))",
                "journal.bytes": "\(group.reduce(0) { $0 + $1.frameLength })", "journal.entries": "\(group.count)",
                "journal.relocations": "\(relocations)", "journal.sync": "\(sync)",
            ])
    }

    private func writeGroup(_ group: [PendingEntry], sync: Bool) {
        do {
            // Catalog changes are tiny and must go on at the reserve (deleting a shard frees space).
            let reserved = group.reduce(0) { bytes, entry in
                if case .control = entry.kind { return bytes }
                return bytes + entry.frameLength
            }
            if reserved > 0 { try checkFreeSpace(for: reserved) }
        } catch {
            logger.error("WAL write refused", metadata: ["error": "\(error)"])
            failPending(error, group: group)
            return
        }
        var positions: [UInt64] = []
        positions.reserveCapacity(group.count)
        let outcome: Result<(segment: UInt64, end: UInt64), JournalError> = active.withLock { active in
            let start = active.position
            active.buffer.count = 0
            var position = start
            let synced = UInt32(truncatingIfNeeded: active.syncedPosition)
            for entry in group {
                positions.append(position)
                let at = active.buffer.count
                active.buffer.append(entry.frame)
                active.buffer.stampSynced(frameAt: at, synced, salt: active.salt)
                position += UInt64(entry.frameLength)
            }
            let started = ContinuousClock.now
            do throws(WALIOError) {
                try io.write(
                    fd: active.file.fd, active.buffer.pointer, count: active.buffer.count, offset: Int64(start),
                    sync: sync)
                let elapsed = ContinuousClock.now - started
                if sync { core.withLock { $0.statistics.walSyncLatency.record(elapsed) } }
                if elapsed >= configuration.slowOperationLog { logSlow("WAL write", elapsed, group: group, sync: sync) }
            } catch {
                // Nothing of this group is acknowledged, and nothing after it will be: no truncate
                // and no retry of a file whose pages the kernel may have dropped.
                return .failure(error.journalError)
            }
            active.position = position
            active.unsynced = !sync
            if sync { active.syncedPosition = position }
            return .success((active.id, position))
        }
        let segment: UInt64
        let end: UInt64
        switch outcome {
        case .failure(let error):
            failStop(error, group: group)
            return
        case .success(let written):
            segment = written.segment
            end = written.end
        }

        // Index the group (no RocksDB WAL: the index is rebuilt from the segments past the checkpoint).
        let index = RocksDB.WriteBatch()
        // Which entries still have a shard to index them under (and, for compaction copies, a
        // batch retention has not removed meanwhile): one look under the lock for the group.
        let indexable: [Bool] = core.withLock { core in
            group.map { entry in
                // Control frames: catalog changes and compaction serialize on the maintenance lock.
                if entry.shardID == WALFormat.controlShardID { return true }
                guard let shard = core.shards[entry.shardID] else { return false }  // deleted meanwhile
                guard case .relocation = entry.kind else { return true }
                return entry.lastOffset >= shard.startOffset && entry.baseOffset >= shard.tierEnd
            }
        }
        for (i, entry) in group.enumerated() {
            guard indexable[i] else { continue }
            let location = IndexEntry(
                segment: segment, position: positions[i], frameLength: UInt32(entry.frameLength),
                lastOffset: entry.lastOffset, maxTimestamp: entry.maxTimestamp)
            index.put(StorageKeys.index(entry.shardID, entry.baseOffset), location.encoded)
            if entry.addsTimeIndex {
                index.put(StorageKeys.time(entry.shardID, entry.maxTimestamp), entry.baseOffset.bigEndianBytes)
            }
        }
        do {
            try db.write(index, durable: false)
        } catch {
            // Unindexed batches must never be acknowledged or checkpointed past: the data is in the
            // WAL and the next open re-indexes it.
            failStop(error, group: group)
            return
        }

        // Publish to readers and collect acknowledgements.
        var acknowledgements: [(AppendCompletion, Result<AppendResult, JournalError>)] = []
        var completions: [Completion] = []
        let waiters = core.withLock { core -> [CheckedContinuation<Void, Never>] in
            var waiters: [CheckedContinuation<Void, Never>] = []
            let tailLimit = configuration.tailLimit(shards: core.shards.count)
            core.statistics.walBytesWritten += Int64(end - positions[0])
            core.statistics.walWrites += 1
            if sync {
                core.statistics.walSyncs += 1
                core.syncedThrough = WALPosition(segment: segment, position: end)
            }
            core.segmentTotal[segment, default: 0] += Int64(end - positions[0])
            for (i, entry) in group.enumerated() {
                switch entry.kind {
                case .append(let completion):
                    guard let shard = core.shards[entry.shardID] else {
                        acknowledgements.append(
                            (completion, .failure(JournalError(.unknownShard, "the shard was deleted"))))
                        continue
                    }
                    core.segmentLive[segment, default: 0] += Int64(entry.frameLength)
                    shard.storedBytes += Int64(entry.batchLength)
                    shard.endOffset = entry.lastOffset + 1
                    if entry.addsTimeIndex { shard.indexedMaxTimestamp = entry.maxTimestamp }
                    let batch = entry.frame.getSlice(
                        at: entry.frame.readerIndex + WALFormat.frameHeaderSize, length: entry.batchLength)!
                    shard.addToTail(
                        TailBatch(baseOffset: entry.baseOffset, lastOffset: entry.lastOffset, batch: batch),
                        limit: tailLimit)
                    waiters += shard.takeWaiters()
                    acknowledgements.append(
                        (completion, .success(AppendResult(baseOffset: entry.baseOffset, lastOffset: entry.lastOffset)))
                    )
                case .control(let replaces, let completion):
                    core.segmentLive[segment, default: 0] += Int64(entry.frameLength)
                    if let replaces { core.segmentLive[replaces.segment, default: 0] -= Int64(replaces.frameLength) }
                    completions.append(completion)
                case .relocation(let from, let completion):
                    if indexable[i], entry.shardID == WALFormat.controlShardID || core.shards[entry.shardID] != nil {
                        core.segmentLive[from.segment, default: 0] -= Int64(entry.frameLength)
                        core.segmentLive[segment, default: 0] += Int64(entry.frameLength)
                    }
                    core.statistics.compactedBytes += Int64(entry.frameLength)
                    completions.append(completion)
                }
            }
            return waiters
        }
        for (completion, result) in acknowledgements { completion(result) }
        for completion in completions { completion.complete(.success(())) }
        for waiter in waiters { waiter.resume() }
    }

    /// Queues the entries of a blocking caller (catalog changes, compaction copies) for the writer
    /// and waits until each is written and synced (they always force a sync). Refused after a
    /// fail-stop, and once the journal is closing unless `whileClosing`.
    func writeAndWait(_ entries: [PendingEntry], whileClosing: Bool) throws(JournalError) {
        let (refusal, wake) = core.withLock { core -> (JournalError?, Bool) in
            if let failure = core.failure { return (failure, false) }
            if core.closing && !whileClosing { return (JournalError(.closed, "the journal is closed"), false) }
            core.pending.append(contentsOf: entries)
            defer { core.writerIdle = false }
            return (nil, core.writerIdle)
        }
        if let refusal { throw refusal }
        if wake { writerSignal.signal() }
        for case let completion? in entries.map(\.kind.completion) {
            if case .failure(let error) = completion.wait() { throw error }
        }
    }

    /// Fails `group` and everything still queued: their offsets were assigned after the last
    /// written batch, so each shard's next offset goes back to its end and offsets stay dense.
    func failPending(_ error: JournalError, group: [PendingEntry] = []) {
        let failed = core.withLock { core -> [PendingEntry] in
            let failed = group + core.pending
            core.pending.removeAll()
            for shard in core.shards.values {
                shard.nextOffset = shard.endOffset
                shard.queuedMaxTimestamp = shard.indexedMaxTimestamp
            }
            return failed
        }
        Self.fail(failed, with: error)
    }

    static func fail(_ entries: [PendingEntry], with error: JournalError) {
        for entry in entries {
            if case .append(let completion) = entry.kind { completion(.failure(error)) }
            entry.kind.completion?.complete(.failure(error))
        }
    }
}
