import NIOCore

extension Journal {
    private enum ReadPlan {
        case empty(start: UInt64, end: UInt64)
        case memory(ReadResult)
        case stored(shardID: UInt64, start: UInt64, end: UInt64, tierEnd: UInt64)
    }

    /// Reads batches from `offset` on, at most about `maxBytes` (always at least one batch when
    /// there is data). With `maxWait` > 0 an empty read waits for an append up to that long.
    public func read(shard name: String, from offset: UInt64, maxBytes: Int, maxWait: Duration = .zero) async throws
        -> ReadResult
    {
        var waited = false
        while true {
            let plan = try core.withLock { core throws(JournalError) -> ReadPlan in
                guard let id = core.idsByName[name], let shard = core.shards[id] else {
                    throw JournalError(.unknownShard, "no shard named \(name)")
                }
                guard offset >= shard.startOffset, offset <= shard.endOffset else {
                    throw JournalError(
                        .offsetOutOfRange,
                        "offset \(offset) is outside \(name)'s readable range \(shard.startOffset)...\(shard.endOffset)"
                    )
                }
                if offset == shard.endOffset { return .empty(start: shard.startOffset, end: shard.endOffset) }
                if let first = shard.tail.first, first.baseOffset <= offset {
                    var batches: [ByteBuffer] = []
                    var bytes = 0
                    var next = offset
                    for tail in shard.tail where tail.lastOffset >= offset {
                        if !batches.isEmpty && bytes + tail.batch.readableBytes > maxBytes { break }
                        batches.append(tail.batch)
                        bytes += tail.batch.readableBytes
                        next = tail.lastOffset + 1
                    }
                    return .memory(
                        ReadResult(
                            batches: batches, nextOffset: next, startOffset: shard.startOffset,
                            endOffset: shard.endOffset))
                }
                return .stored(shardID: id, start: shard.startOffset, end: shard.endOffset, tierEnd: shard.tierEnd)
            }
            switch plan {
            case .memory(let result):
                return result
            case .stored(let id, let start, let end, let tierEnd):
                return try await readStored(
                    shardID: id, shard: name, from: offset, maxBytes: maxBytes, start: start, end: end, tierEnd: tierEnd
                )
            case .empty(let start, let end):
                if waited || maxWait <= .zero {
                    return ReadResult(batches: [], nextOffset: offset, startOffset: start, endOffset: end)
                }
                waited = true
                try await waitForData(shard: name, beyond: offset, timeout: maxWait)
            }
        }
    }

    /// Reads batches from the object tier (offsets below `tierEnd` that the catalog has an object
    /// for) or the segment files.
    func readStored(
        shardID id: UInt64, shard name: String, from offset: UInt64, maxBytes: Int, start: UInt64, end: UInt64,
        tierEnd: UInt64
    ) async throws -> ReadResult {
        enum Located: Sendable {
            case local(ReadResult)
            case tier(TieredObject)
        }
        let located = try await blocking { [self] () throws -> Located in
            if offset < tierEnd, let object = tieredObject(shardID: id, covering: offset) { return .tier(object) }
            let result = try readFromDisk(shardID: id, from: offset, maxBytes: maxBytes, start: start, end: end)
            // Offsets are dense, so the batch holding `offset` is missing (no batch, or the first
            // one starts after it) only when it left the segments after `tierEnd` was read: to the
            // object tier (its catalog entry is written in the same atomic write that removes the
            // batch index keys) or to retention.
            let first = result.batches.first.flatMap { RecordBatch.Header.peek($0, at: $0.readerIndex) }
            if first.map({ UInt64($0.baseOffset) > offset }) ?? true {
                if let object = tieredObject(shardID: id, covering: offset) { return .tier(object) }
                if let removed = retentionRemoved(shardID: id, offset: offset, shard: name) { throw removed }
                if result.batches.isEmpty {
                    throw JournalError(.corruptData, "the index has no batch for offset \(offset) of \(name)")
                }
            }
            return .local(result)
        }
        switch located {
        case .local(let result): return result
        case .tier(let object):
            return try await readTier(object, shard: name, from: offset, maxBytes: maxBytes, start: start, end: end)
        }
    }

    /// Reads indexed batches from the segment files (blocking; runs on the pool); empty when the
    /// index has none at or after `offset` (the caller tells why).
    func readFromDisk(shardID: UInt64, from offset: UInt64, maxBytes: Int, start: UInt64, end: UInt64)
        throws(JournalError)
        -> ReadResult
    {
        let prefix = StorageKeys.indexPrefix(shardID)
        let iterator = db.makeIterator()
        iterator.seekForPrev(StorageKeys.index(shardID, offset))
        if !iterator.isValid || !iterator.key.starts(with: prefix) {
            iterator.seek(StorageKeys.index(shardID, offset))
        }
        var batches: [ByteBuffer] = []
        var bytes = 0
        var next = offset
        let maxFrame = configuration.maxWALFrameBytes
        while iterator.isValid {
            let key = iterator.key
            guard key.starts(with: prefix), let entry = IndexEntry(iterator.value) else { break }
            let base = UInt64(bigEndianBytes: key[9..<17])
            if base >= end { break }
            if entry.lastOffset >= offset {
                let length = Int(entry.frameLength) - WALFormat.frameHeaderSize
                if !batches.isEmpty && bytes + length > maxBytes { break }
                // Gone meanwhile (retention, the object tier): what was read so far; an empty
                // result makes the caller find out where it went.
                guard let batch = try readMoving(Array(key), planned: entry, maxFrame: maxFrame) else { break }
                batches.append(batch)
                bytes += length
                next = entry.lastOffset + 1
            }
            iterator.next()
        }
        return ReadResult(batches: batches, nextOffset: next, startOffset: start, endOffset: end)
    }

    /// Reads the batch of index key `key`, planned at `planned`. The iterator reads a snapshot of
    /// the index, so compaction may have moved the batch (and deleted the planned segment) or
    /// retention or the object tier may have taken it since: on a failed read the key is looked up
    /// again and the batch read where it is now; nil when it is gone. Only a failure at the
    /// current location is an error.
    func readMoving(_ key: [UInt8], planned: IndexEntry, maxFrame: Int) throws(JournalError) -> ByteBuffer? {
        var entry = planned
        while true {
            do {
                return try segments.readBatch(entry, maxFrame: maxFrame, allocator: allocator)
            } catch {
                guard let current = try db.get(key).flatMap(IndexEntry.init) else { return nil }
                if current == entry { throw error }
                entry = current
            }
        }
    }

    /// The offset of the first record whose timestamp is at or after `timestamp`, or nil when
    /// every record is older.
    public func offset(shard name: String, atOrAfter timestamp: Int64) async throws -> UInt64? {
        let (id, start, end, tierEnd) = try core.withLock { core throws(JournalError) in
            guard let id = core.idsByName[name], let shard = core.shards[id] else {
                throw JournalError(.unknownShard, "no shard named \(name)")
            }
            return (id, shard.startOffset, shard.endOffset, shard.tierEnd)
        }
        // The time index holds one key per batch that raised the shard's max timestamp (offloaded
        // batches keep theirs), so the first key at or after `timestamp` is the first batch that
        // can hold such a record.
        let base = try await blocking { [self] () -> UInt64? in
            var base: UInt64?
            db.scan(prefix: StorageKeys.timePrefix(id), from: StorageKeys.time(id, timestamp)) { _, value in
                base = UInt64(bigEndianBytes: value)
                return false
            }
            return base
        }
        guard var candidate = base.map({ max($0, start) }), candidate < end else { return nil }
        // Walk batches from there to the exact record (uncompressed batches are decoded; a
        // compressed batch answers with its base offset), in whichever tier they are.
        while candidate < end {
            let result = try await readStored(
                shardID: id, shard: name, from: candidate, maxBytes: 1, start: start, end: end, tierEnd: tierEnd)
            guard let batch = result.batches.first, let header = RecordBatch.Header.peek(batch, at: batch.readerIndex)
            else { return nil }
            if header.maxTimestamp >= timestamp {
                if header.compression != RecordBatch.Compression.none {
                    return max(UInt64(header.baseOffset), candidate)
                }
                let records = try RecordBatch.decode(batch)
                if let hit = records.first(where: { $0.timestamp >= timestamp && $0.offset! >= candidate }) {
                    return hit.offset
                }
            }
            candidate = UInt64(header.lastOffset) + 1
        }
        return nil
    }

    /// Waits until `shard` has data past `offset`, the timeout passes (none: no timeout), or the
    /// task is cancelled. A timeout costs a sleeping task that lives until it runs out, even when
    /// data came first (Swift's `Task.sleep` keeps its timer after cancellation): long waits,
    /// such as a subscription's, pass no timeout and end by cancellation instead.
    public func waitForData(shard name: String, beyond offset: UInt64, timeout: Duration?) async throws {
        guard let timeout else {
            await waitUntilAvailable(shard: name, beyond: offset)
            return
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitUntilAvailable(shard: name, beyond: offset) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitUntilAvailable(shard name: String, beyond offset: UInt64) async {
        let waiterID = core.withLock { core in
            core.nextWaiterID += 1
            return core.nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let parked = core.withLock { core -> Bool in
                    if core.cancelledWaiters.remove(waiterID) != nil { return false }
                    guard !core.closing, let id = core.idsByName[name], let shard = core.shards[id],
                        shard.endOffset <= offset
                    else { return false }
                    shard.waiters[waiterID] = continuation
                    return true
                }
                if !parked { continuation.resume() }
            }
        } onCancel: {
            let continuation = core.withLock { core -> CheckedContinuation<Void, Never>? in
                for shard in core.shards.values {
                    if let continuation = shard.waiters.removeValue(forKey: waiterID) { return continuation }
                }
                core.cancelledWaiters.insert(waiterID)
                return nil
            }
            continuation?.resume()
        }
        // A cancellation that came after an append had already resumed the waiter left its id
        // behind: nothing will look for it again.
        core.withLock { _ = $0.cancelledWaiters.remove(waiterID) }
    }

    /// Batches of `shard` from `offset` on, as they are appended: each element is one non-empty
    /// read. Wakes on append; ends when the task is cancelled.
    public func subscribe(shard name: String, from offset: UInt64, maxBytes: Int = 1 << 20) -> JournalSubscription {
        JournalSubscription(journal: self, shard: name, offset: offset, maxBytes: maxBytes)
    }
}

public struct JournalSubscription: AsyncSequence, Sendable {
    public typealias Element = ReadResult
    let journal: Journal
    let shard: String
    let offset: UInt64
    let maxBytes: Int

    public struct AsyncIterator: AsyncIteratorProtocol {
        let journal: Journal
        let shard: String
        var offset: UInt64
        let maxBytes: Int

        public mutating func next() async throws -> ReadResult? {
            while !Task.isCancelled {
                let result = try await journal.read(shard: shard, from: offset, maxBytes: maxBytes, maxWait: .zero)
                if !result.batches.isEmpty {
                    offset = result.nextOffset
                    return result
                }
                try await journal.waitForData(shard: shard, beyond: offset, timeout: nil)
                // A closed journal wakes every waiter and takes no more: end instead of spinning.
                if journal.core.withLock({ $0.closing }) { throw JournalError(.closed, "the journal is closed") }
            }
            return nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(journal: journal, shard: shard, offset: offset, maxBytes: maxBytes)
    }
}
