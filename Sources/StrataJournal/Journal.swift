import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The tiered journal engine: named shards of RecordBatch v2 batches with dense offsets, one
/// node-wide WAL with group commit, a RocksDB index and catalog, memory tails for live readers.
///
/// Threads: appenders only take the core lock to assign offsets and queue; one writer thread
/// writes and syncs groups; a small thread pool serves disk reads and RocksDB calls; one
/// maintenance thread checkpoints the index, applies retention and compacts segments.
public final class Journal: Sendable {
    public let configuration: JournalConfiguration
    let logger: Logger
    let db: RocksDB
    let core: Mutex<JournalCore>
    let io: any WALIO & Sendable
    let writerSignal = DispatchSemaphoreBox()
    let writerDone = DispatchSemaphoreBox()
    let maintenanceSignal = DispatchSemaphoreBox()
    let maintenanceDone = DispatchSemaphoreBox()
    let maintenanceLock = Mutex<Void>(())
    let pool: NIOThreadPool
    let segments: SegmentFiles
    /// The segment being appended to; only the writer thread touches it after open.
    let active: Mutex<ActiveSegment>
    let allocator = ByteBufferAllocator()
    /// Serves reads of offloaded offsets (`attachColdTier`).
    let coldTier = Mutex<(any ColdTier)?>(nil)
    /// The queues in use, by name (Journal+Queues.swift).
    let queues = Mutex<[String: QueueActor]>([:])

    var walDirectory: String { configuration.dataDirectory + "/wal" }

    /// Opens (creating if needed) the journal in `configuration.dataDirectory` and recovers it.
    public init(configuration: JournalConfiguration, logger: Logger = Logger(label: "strata.journal")) throws {
        guard configuration.segmentBytes >= 1 << 16, configuration.maxBatchBytes >= RecordBatch.headerSize,
            configuration.maxWALFrameBytes + WALFormat.segmentHeaderSize
                <= configuration.segmentBytes
        else {
            throw JournalError(
                .invalidArgument, "segmentBytes must be at least 64 KiB and hold one batch of maxBatchBytes")
        }
        self.configuration = configuration
        self.logger = logger
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(
                atPath: configuration.dataDirectory + "/wal", withIntermediateDirectories: true)
            try fileManager.createDirectory(
                atPath: configuration.dataDirectory + "/index", withIntermediateDirectories: true)
        } catch {
            throw JournalError(.ioError, "cannot create \(configuration.dataDirectory): \(error)")
        }
        // The directories' own entries are durable before anything is written into them.
        try FileDescriptor.syncDirectory(configuration.dataDirectory)
        try FileDescriptor.syncDirectory(configuration.dataDirectory + "/wal")
        db = try RocksDB(path: configuration.dataDirectory + "/index", cacheBytes: configuration.indexCacheBytes)
        io = try configuration.walIOOverride ?? Self.makeIO(configuration.walIO, logger: logger)
        segments = SegmentFiles(directory: configuration.dataDirectory + "/wal")
        segments.adoptSpares()
        let recovered = try Recovery(
            db: db, segments: segments, configuration: configuration, logger: logger, allocator: allocator, io: io
        ).run()
        core = Mutex(recovered.core)
        active = Mutex(recovered.active)
        pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        core.withLock { $0.statistics.ioBackend = io.name }
        logger.info(
            "journal open",
            metadata: [
                "journal.dir": "\(configuration.dataDirectory)", "journal.shards": "\(recovered.core.shards.count)",
                "journal.wal_io": "\(io.name)", "journal.segment": "\(recovered.active.id)",
            ])
        let writer = Thread { [self] in writerLoop() }
        writer.name = "strata-wal-writer"
        writer.start()
        if configuration.backgroundMaintenance {
            let maintenance = Thread { [self] in maintenanceLoop() }
            maintenance.name = "strata-maintenance"
            maintenance.start()
        } else {
            maintenanceDone.signal()
        }
        do {
            try writeMissingControlFrames()
        } catch {
            close()
            throw error
        }
    }

    private static func makeIO(_ mode: WALIOMode, logger: Logger) throws(JournalError) -> any WALIO & Sendable {
        switch mode {
        case .pwrite:
            return PwriteIO()
        case .uring:
            do throws(WALIOError) { return try URingIO() } catch { throw error.journalError }
        case .auto:
            do throws(WALIOError) {
                return try URingIO()
            } catch {
                logger.notice(
                    "io_uring unavailable, using pwrite + fdatasync", metadata: ["error": "\(error.journalError)"])
                return PwriteIO()
            }
        }
    }

    /// Stops accepting work, writes and syncs everything queued, checkpoints the index.
    public func close() {
        let alreadyClosing = core.withLock { core in
            defer { core.closing = true }
            return core.closing
        }
        if alreadyClosing { return }
        // Maintenance first: a compaction in flight needs the writer for its copies.
        maintenanceSignal.signal()
        maintenanceDone.wait()
        // A maintenance round run by another caller finishes (with the writer) before it stops.
        maintenanceLock.withLock { _ in core.withLock { $0.writerStop = true } }
        writerSignal.signal()
        writerDone.wait()
        // A reused active segment loses its old bytes past the frames, so the next open does not
        // scan them as a torn tail.
        if core.withLock({ $0.failure == nil }) {
            do {
                try active.withLock { (active: inout ActiveSegment) throws(JournalError) in
                    try active.cutReusedTail(io: io)
                }
            } catch {
                logger.error("cannot cut the reused active segment", metadata: ["error": "\(error)"])
            }
        }
        do {
            try checkpoint()
        } catch {
            logger.error("final index checkpoint failed", metadata: ["error": "\(error)"])
        }
        let waiters = core.withLock { core in core.shards.values.flatMap { $0.takeWaiters() } }
        waiters.forEach { $0.resume() }
        try? pool.syncShutdownGracefully()
        db.close()
    }

    public var statistics: JournalStatistics { core.withLock { $0.statistics } }
    /// What the index database holds in memory now.
    public var indexMemory: IndexMemory { db.memoryUsage }

    /// Failed after a WAL or index I/O error (fail-stop, until a restart), degraded while the
    /// disk reserve refuses appends or the process is above its memory high watermark, else ok.
    public var health: JournalHealth {
        if let failure = core.withLock({ $0.failure }) {
            return JournalHealth(status: .failed, problems: [failure.message])
        }
        var problems: [String] = []
        if configuration.minFreeDiskBytes > 0, let free = freeDiskBytes(), free < configuration.minFreeDiskBytes {
            problems.append(
                "disk reserve reached: \(free) bytes free in \(configuration.dataDirectory), reserve "
                    + "\(configuration.minFreeDiskBytes); appends are refused")
        }
        let watermark = memoryHighWatermark
        if watermark > 0, let resident = Self.residentBytes(), resident >= watermark {
            problems.append(
                "memory high watermark reached: \(resident) bytes resident, watermark \(watermark); publishers are held"
            )
        }
        return JournalHealth(status: problems.isEmpty ? .ok : .degraded, problems: problems)
    }

    /// The memory high watermark in force (0: none).
    public var memoryHighWatermark: Int64 {
        if let configured = configuration.memoryHighWatermarkBytes { return max(0, configured) }
        let physical = Int64(sysconf(Int32(_SC_PHYS_PAGES))) * Int64(sysconf(Int32(_SC_PAGESIZE)))
        return physical > 0 ? physical / 10 * 4 : 0
    }

    /// This process's resident set size (/proc/self/statm), nil where it cannot be read.
    static func residentBytes() -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return nil }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The WAL segments on disk, oldest first.
    public func segmentInfos() -> [SegmentInfo] {
        core.withLock { core in
            core.segmentTotal.keys.sorted().map { id in
                SegmentInfo(
                    id: id, bytes: core.segmentTotal[id] ?? 0, liveBytes: core.segmentLive[id] ?? 0,
                    active: id == core.activeSegment)
            }
        }
    }

    /// Runs a blocking closure on the journal's thread pool, off any event loop.
    func blocking<T: Sendable>(_ body: @Sendable @escaping () throws -> T) async throws -> T {
        do {
            return try await pool.runIfActive(body)
        } catch let error as JournalError {
            throw error
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw JournalError(.closed, "the journal is closed")
        }
    }

    // MARK: Shards

    public func createShard(_ name: String, config: ShardConfig = ShardConfig()) async throws -> ShardInfo {
        try await createShards([(name, config)])[0]
    }

    /// Creates several shards with one synced catalog write.
    public func createShards(_ specs: [(name: String, config: ShardConfig)]) async throws -> [ShardInfo] {
        for spec in specs {
            guard !spec.name.isEmpty, spec.name.utf8.count <= 1024, !spec.name.utf8.contains(0) else {
                throw JournalError(.invalidArgument, "shard names are 1 to 1024 bytes of UTF-8 without NUL")
            }
            try check(spec.config)
        }
        return try await blocking { [self] in
            try maintenanceLock.withLock { _ in
                try checkMetadataSpace()
                let first = try db.get(StorageKeys.nextShardID).map { UInt64(bigEndianBytes: $0) } ?? 1
                guard first + UInt64(specs.count) <= WALFormat.maxShardID else {
                    throw JournalError(.invalidArgument, "this journal has used all \(WALFormat.maxShardID) shard ids")
                }
                let existing = core.withLock { core in specs.first { core.idsByName[$0.name] != nil }?.name }
                if let existing { throw JournalError(.shardExists, "shard \(existing) exists already") }
                var seen = Set<String>()
                for spec in specs where !seen.insert(spec.name).inserted {
                    throw JournalError(.shardExists, "shard \(spec.name) is named twice")
                }
                let batch = RocksDB.WriteBatch()
                var runtimes: [ShardRuntime] = []
                var records: [ShardRecord] = []
                for (i, spec) in specs.enumerated() {
                    let id = first + UInt64(i)
                    let record = ShardRecord(id: id, name: spec.name, config: spec.config)
                    records.append(record)
                    batch.put(StorageKeys.shard(spec.name), try record.encoded())
                    runtimes.append(ShardRuntime(id: id, name: spec.name, config: spec.config))
                }
                batch.put(StorageKeys.nextShardID, (first + UInt64(specs.count)).bigEndianBytes)
                // In the WAL first: a catalog lost or behind is rebuilt from it.
                try writeControl(records.map { ControlFrame.Change(record: $0, deleted: false) })
                try writeCatalog(batch)
                return core.withLock { core in
                    runtimes.map { shard in
                        core.shards[shard.id] = shard
                        core.idsByName[shard.name] = shard.id
                        return shard.info
                    }
                }
            }
        }
    }

    public func deleteShard(_ name: String) async throws {
        try await blocking { [self] in
            try maintenanceLock.withLock { _ in
                // No append is queued for it from here on; those queued before are written before
                // its tombstone.
                let found = core.withLock { core -> ShardRuntime? in
                    guard let shard = core.idsByName[name].flatMap({ core.shards[$0] }) else { return nil }
                    core.idsByName[name] = nil
                    return shard
                }
                guard let shard = found else { throw JournalError(.unknownShard, "no shard named \(name)") }
                // The tombstone goes to the WAL first (and stays live there), so that a rebuild of
                // the catalog from the WAL never brings the shard back.
                do {
                    try writeControl([
                        ControlFrame.Change(
                            record: ShardRecord(id: shard.id, name: name, config: shard.config), deleted: true)
                    ])
                } catch {
                    core.withLock { $0.idsByName[name] = shard.id }
                    throw error
                }
                var bytesBySegment: [UInt64: Int64] = [:]
                db.scan(prefix: StorageKeys.indexPrefix(shard.id)) { _, value in
                    if let entry = IndexEntry(value) {
                        bytesBySegment[entry.segment, default: 0] += Int64(entry.frameLength)
                    }
                    return true
                }
                let batch = RocksDB.WriteBatch()
                Self.shardDeletion(id: shard.id, name: name, db: db, into: batch)
                try writeCatalog(batch)
                let waiters = core.withLock { core in
                    core.shards[shard.id] = nil
                    for (segment, bytes) in bytesBySegment { core.segmentLive[segment, default: 0] -= bytes }
                    return shard.takeWaiters()
                }
                waiters.forEach { $0.resume() }
            }
        }
    }

    /// Changes a shard's configuration (durability, retention, local retention): in the WAL first
    /// as a control frame, then in the catalog, then for the running shard. Retention takes effect
    /// at the next maintenance round; appends already queued keep the durability they had.
    public func alterShard(_ name: String, config: ShardConfig) async throws -> ShardInfo {
        try check(config)
        return try await blocking { [self] in
            try maintenanceLock.withLock { _ in
                try checkMetadataSpace()
                let found = core.withLock { core in core.idsByName[name].flatMap { core.shards[$0] } }
                guard let shard = found else { throw JournalError(.unknownShard, "no shard named \(name)") }
                let record = ShardRecord(id: shard.id, name: name, config: config)
                try writeControl([ControlFrame.Change(record: record, deleted: false)])
                let batch = RocksDB.WriteBatch()
                batch.put(StorageKeys.shard(name), try record.encoded())
                try writeCatalog(batch)
                return core.withLock { _ in
                    shard.config = config
                    return shard.info
                }
            }
        }
    }

    /// The catalog write that follows a control frame. Its failure stops the journal: the WAL and
    /// the catalog would disagree about the shard from here on.
    private func writeCatalog(_ batch: RocksDB.WriteBatch) throws(JournalError) {
        do {
            try db.write(batch, durable: true)
        } catch {
            failStop(error)
            throw error
        }
    }

    public func listShards() -> [ShardInfo] {
        core.withLock { core in core.shards.values.map(\.info) }.sorted { $0.name < $1.name }
    }

    public func describeShard(_ name: String) throws(JournalError) -> ShardInfo {
        let info = core.withLock { core in core.idsByName[name].flatMap { core.shards[$0]?.info } }
        guard let info else { throw JournalError(.unknownShard, "no shard named \(name)") }
        return info
    }

    // MARK: Append

    /// Appends one RecordBatch v2 (the readable bytes of `batch`) and returns its assigned
    /// offsets once the shard's durability policy is met. The batch's CRC-32C is checked.
    /// Refuses a shard configuration this journal cannot keep: a batch limit below one batch
    /// header or above the node's own limit (the WAL's frames are sized by it).
    func check(_ config: ShardConfig) throws(JournalError) {
        if let limit = config.maxBatchBytes, limit < RecordBatch.headerSize || limit > configuration.maxBatchBytes {
            throw JournalError(
                .invalidArgument,
                "a shard's batch limit must be \(RecordBatch.headerSize)...\(configuration.maxBatchBytes) bytes "
                    + "(the node's max_batch_bytes), not \(limit)")
        }
    }

    public func append(shard name: String, batch: ByteBuffer) async throws -> AppendResult {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AppendResult, any Error>) in
            enqueueAppend(shard: name, batch: batch) { continuation.resume(with: $0.mapError { $0 }) }
        }
    }

    /// Validates `batch`, assigns its offsets and queues it for the WAL before returning, so
    /// appends enqueued one after another by one caller get offsets in that order. `completion`
    /// runs once (on the WAL writer thread, or right here when the append is refused).
    public func enqueueAppend(shard name: String, batch: ByteBuffer, completion: @escaping AppendCompletion) {
        let header: RecordBatch.Header
        do {
            header = try RecordBatch.validate(batch, maxBytes: configuration.maxBatchBytes)
        } catch {
            completion(.failure(error))
            return
        }
        var frame = WALFormat.frame(shardID: 0, batch: batch, allocator: allocator)
        let (failure, wake) = core.withLock { core -> (JournalError?, Bool) in
            if let failure = core.failure { return (failure, false) }
            guard !core.closing else { return (JournalError(.closed, "the journal is closed"), false) }
            guard let id = core.idsByName[name], let shard = core.shards[id] else {
                return (JournalError(.unknownShard, "no shard named \(name)"), false)
            }
            if let limit = shard.config.maxBatchBytes, batch.readableBytes > limit {
                return (
                    JournalError(
                        .batchTooLarge,
                        "batch of \(batch.readableBytes) bytes exceeds \(name)'s limit of \(limit) bytes"), false
                )
            }
            let base = shard.nextOffset
            let last = base + UInt64(header.lastOffsetDelta)
            shard.nextOffset = last + 1
            frame.setInteger(UInt32(truncatingIfNeeded: id), at: frame.readerIndex + 12)
            frame.setInteger(Int64(base), at: frame.readerIndex + WALFormat.frameHeaderSize)
            frame.setInteger(Int32(0), at: frame.readerIndex + WALFormat.frameHeaderSize + 12)
            let raisesTime = header.maxTimestamp > shard.queuedMaxTimestamp
            if raisesTime { shard.queuedMaxTimestamp = header.maxTimestamp }
            core.pending.append(
                PendingEntry(
                    shardID: id, frame: frame, baseOffset: base, lastOffset: last,
                    maxTimestamp: header.maxTimestamp, durability: shard.config.durability,
                    addsTimeIndex: raisesTime, kind: .append(completion)))
            core.statistics.appendedBytes += Int64(batch.readableBytes)
            core.statistics.appendedBatches += 1
            let wake = core.writerIdle
            core.writerIdle = false
            return (nil, wake)
        }
        if let failure { completion(.failure(failure)) }
        if wake { writerSignal.signal() }
    }

    // MARK: Consumer offsets and gateway key-value state

    public func commitOffset(group: String, shard: String, offset: UInt64) async throws {
        try await blocking { [self] in
            try checkMetadataSpace()
            try db.put(StorageKeys.consumerOffset(group: group, shard: shard), offset.bigEndianBytes, durable: true)
        }
    }

    public func committedOffset(group: String, shard: String) async throws -> UInt64? {
        try await blocking { [db] in
            try db.get(StorageKeys.consumerOffset(group: group, shard: shard)).map { UInt64(bigEndianBytes: $0) }
        }
    }

    /// Every committed consumer offset: group, shard, offset (for lag metrics).
    public func committedOffsets() async throws -> [(group: String, shard: String, offset: UInt64)] {
        try await blocking { [db] in
            var found: [(group: String, shard: String, offset: UInt64)] = []
            db.scan(prefix: [UInt8(ascii: "o")]) { key, value in
                let name = key.dropFirst()
                guard value.count == 8, let nul = name.firstIndex(of: 0) else { return true }
                found.append(
                    (
                        String(decoding: name[..<nul], as: UTF8.self),
                        String(decoding: name[name.index(after: nul)...], as: UTF8.self), UInt64(bigEndianBytes: value)
                    ))
                return true
            }
            return found
        }
    }

    public func put(namespace: String, key: [UInt8], value: [UInt8]) async throws {
        try Self.checkNamespace(namespace)
        try await blocking { [self] in
            try checkMetadataSpace()
            try db.put(StorageKeys.kv(namespace: namespace, key: key), value, durable: true)
        }
    }

    public func get(namespace: String, key: [UInt8]) async throws -> [UInt8]? {
        try Self.checkNamespace(namespace)
        return try await blocking { [db] in try db.get(StorageKeys.kv(namespace: namespace, key: key)) }
    }

    public func delete(namespace: String, key: [UInt8]) async throws {
        try Self.checkNamespace(namespace)
        try await blocking { [db] in try db.delete(StorageKeys.kv(namespace: namespace, key: key), durable: true) }
    }

    /// Key-value pairs of `namespace` whose key starts with `prefix`, in key order, at most `limit`.
    public func scan(namespace: String, prefix: [UInt8] = [], limit: Int = .max) async throws -> [KeyValue] {
        try Self.checkNamespace(namespace)
        guard limit > 0 else { return [] }
        return try await blocking { [db] in
            let namespacePrefix = StorageKeys.kv(namespace: namespace, key: [])
            var result: [KeyValue] = []
            db.scan(prefix: namespacePrefix + prefix) { key, value in
                result.append(KeyValue(key: Array(key.dropFirst(namespacePrefix.count)), value: value))
                return result.count < limit
            }
            return result
        }
    }

    /// Catalog and key-value writes are small; they go on until a quarter of the reserve is left,
    /// after appends stopped, so the index database never meets a full disk.
    private func checkMetadataSpace() throws(JournalError) {
        guard configuration.minFreeDiskBytes > 0, let free = freeDiskBytes() else { return }
        if free < configuration.minFreeDiskBytes / 4 {
            throw JournalError(.diskFull, "only \(free) bytes free in \(configuration.dataDirectory)")
        }
    }

    private static func checkNamespace(_ namespace: String) throws(JournalError) {
        guard !namespace.isEmpty, !namespace.utf8.contains(0) else {
            throw JournalError(.invalidArgument, "a key-value namespace is non-empty UTF-8 without NUL")
        }
    }
}

/// The catalog record of one shard.
struct ShardRecord: Codable {
    var id: UInt64
    var name: String
    var config: ShardConfig

    func encoded() throws(JournalError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(self)) } catch {
            throw JournalError(.invalidArgument, "cannot encode shard record: \(error)")
        }
    }

    init(id: UInt64, name: String, config: ShardConfig) {
        self.id = id
        self.name = name
        self.config = config
    }

    init(_ bytes: [UInt8]) throws(JournalError) {
        do { self = try JSONDecoder().decode(ShardRecord.self, from: Data(bytes)) } catch {
            throw JournalError(.corruptData, "unreadable shard record in the catalog: \(error)")
        }
    }
}
