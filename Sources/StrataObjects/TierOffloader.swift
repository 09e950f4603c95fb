import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import StrataJournal
import Synchronization

extension ObjectStoreError {
    /// The journal's view of a store failure: what a reader of the shard gets.
    var journalError: JournalError {
        switch self {
        case .transport, .service: JournalError(.unavailable, description)
        case .notFound(let key): JournalError(.corruptData, "\(key) is in the catalog but not in the object store")
        case .corrupt(let detail): JournalError(.corruptData, detail)
        }
    }
}

/// Serves the journal's reads of offloaded offsets: each object's index is fetched once (two
/// ranged GETs) and kept; blocks come through the block cache.
public final class ObjectColdTier: ColdTier {
    public let reader: TierReader
    private let indexes = Mutex<[String: TierObject.Index]>([:])
    private let maxIndexes: Int

    public init(store: any ObjectStore, cacheBytes: Int = 256 << 20, maxIndexes: Int = 10_000) {
        reader = TierReader(store: store, cache: TierBlockCache(capacityBytes: cacheBytes))
        self.maxIndexes = maxIndexes
    }

    public func read(object: TieredObject, from offset: UInt64, maxBytes: Int) async throws -> [ByteBuffer] {
        do {
            let index = try await index(of: object)
            return try await reader.read(object.key, index: index, from: offset, maxBytes: maxBytes)
        } catch let error as ObjectStoreError {
            throw error.journalError
        }
    }

    public func index(of object: TieredObject) async throws -> TierObject.Index {
        if let index = indexes.withLock({ $0[object.key] }) { return index }
        let index = try await TierObject.index(of: object.key, size: Int(object.objectBytes), in: reader.store)
        guard index.firstOffset == object.firstOffset, index.lastOffset == object.lastOffset else {
            throw ObjectStoreError.corrupt(
                "\(object.key): holds offsets \(index.firstOffset ?? 0)...\(index.lastOffset ?? 0), the catalog says \(object.firstOffset)...\(object.lastOffset)"
            )
        }
        indexes.withLock { indexes in
            if indexes.count >= maxIndexes, let any = indexes.keys.first { indexes[any] = nil }
            indexes[object.key] = index
        }
        return index
    }
}

/// Moves sealed local data to the object tier and deletes remote objects the journal let go of.
///
/// Each pass: delete the objects retention or shard deletion queued; ask the journal for runs
/// of batches past their shard's local retention in sealed segments; for each, read the batches,
/// build an object (zstd blocks, trailer index, checksums), upload it, and only then record it
/// in the journal's catalog, which lets go of the local copies. A failed upload leaves the local
/// data where it is; passes are retried with exponential backoff. Appends never wait for it.
public final class TierOffloader: Service {
    public struct Configuration: Sendable {
        /// Local retention for shards whose config sets none (milliseconds).
        public var defaultLocalRetentionMilliseconds: Int64 = 10 * 60 * 1000
        /// Objects are cut at about this many bytes of batches.
        public var maxObjectBytes: Int64 = 64 << 20
        public var blockBytes = 1 << 20
        public var compressionLevel: Int32 = 3
        /// Runs built and uploaded at the same time (committed in order).
        public var uploads = 2
        /// Runs planned per pass (the rest wait for the next pass).
        public var maxRunsPerPass = 16
        /// How often the prefix is listed for objects nothing names (besides the first pass and
        /// after failed ones).
        public var leftoverSweepInterval: Duration = .seconds(600)
        /// Pause between passes that found nothing to do.
        public var interval: Duration = .seconds(5)
        /// Backoff after a failed pass doubles from `firstBackoff` up to this.
        public var firstBackoff: Duration = .milliseconds(500)
        public var maxBackoff: Duration = .seconds(30)
        /// Where the objects go, for status output.
        public var destination = ""

        public init() {}
    }

    /// What `strata tier status`, `/admin/tier` and `/metrics` show.
    public struct Status: Sendable, Codable {
        public struct Shard: Sendable, Codable {
            public var name: String
            public var memoryBytes: Int
            public var localBytes: Int64
            public var tierBytes: Int64
            public var tierObjects: Int
            public var tierObjectBytes: Int64
            public var offloadLagBytes: Int64
            public var offloadLagSeconds: Double
            public var lastError: String?
        }

        public var destination: String
        public var uploadedObjects: Int64 = 0
        public var uploadedBytes: Int64 = 0
        public var uploadedBatchBytes: Int64 = 0
        public var uploadFailures: Int64 = 0
        public var deletedObjects: Int64 = 0
        /// The error of the last failed pass, cleared by a successful one.
        public var lastError: String?
        /// The last object the store refused to delete (it stays queued).
        public var lastDeleteError: String?
        public var lastPassMilliseconds: Int64?
        public var shards: [Shard] = []
    }

    private struct State {
        var status: Status
        var backlog: [String: OffloadBacklog] = [:]
        /// Objects per shard, and the shard's tier bytes when they were counted.
        var objects: [String: (count: Int, bytes: Int64, tierBytes: Int64)] = [:]
        var errors: [String: String] = [:]
        var lastSweep: ContinuousClock.Instant?
        /// This node's claim on the prefix is confirmed.
        var claimed = false
    }

    public let configuration: Configuration
    let journal: Journal
    let store: any ObjectStore
    let logger: Logger
    private let state: Mutex<State>
    private let pool: NIOThreadPool

    public init(configuration: Configuration, journal: Journal, store: any ObjectStore, logger: Logger) {
        self.configuration = configuration
        self.journal = journal
        self.store = store
        self.logger = logger
        state = Mutex(State(status: Status(destination: configuration.destination)))
        pool = NIOThreadPool.singleton
    }

    /// A new object key for an upload of a run: the shard id (names may hold any character), the
    /// first offset, and a random part, so that no key is written twice: a PUT or DELETE that
    /// timed out here and completes later at the store can only touch its own attempt.
    static func key(shardID: UInt64, firstOffset: UInt64) -> String {
        let first = String(firstOffset)
        let attempt = String(UInt64.random(in: 1 << 60..<UInt64.max), radix: 16)
        return "shard-\(shardID)/" + String(repeating: "0", count: max(0, 20 - first.count)) + first + "-" + attempt
            + ".strata"
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var backoff = self.configuration.firstBackoff
            while !Task.isCancelled {
                let delay: Duration
                do {
                    let worked = try await self.pass()
                    backoff = self.configuration.firstBackoff
                    delay = worked ? .zero : self.configuration.interval
                } catch is CancellationError {
                    return
                } catch {
                    delay = backoff
                    backoff = min(backoff * 2, self.configuration.maxBackoff)
                }
                if delay > .zero { try? await Task.sleep(for: delay) }
            }
        }
    }

    /// One pass: remote deletions, then every run that is due. Returns whether it moved anything
    /// (so the next pass follows at once); throws the first failure after recording it.
    @discardableResult
    public func pass() async throws -> Bool {
        do {
            let runs = try await plan(maxRuns: configuration.maxRunsPerPass)
            try await claimPrefix()
            let now = ContinuousClock.now
            if state.withLock({ state in state.lastSweep.map { now - $0 >= configuration.leftoverSweepInterval } ?? true
                })
            {
                do {
                    try await deleteLeftovers()
                    state.withLock { $0.lastSweep = now }
                } catch let error as ObjectStoreError {
                    // Tried again at the start of the next pass (no upload is running then either).
                    logger.warning("cannot list the object tier for leftovers", metadata: ["error": "\(error)"])
                }
            }
            try await deleteReleasedObjects()
            // Only commits count as progress (the next pass follows at once): deleting what a
            // refused upload left must not make a loop of refusals. Afterwards the backlog is what
            // still waits (runs that failed, were refused or are beyond this pass's cap).
            let committed: Int
            do {
                committed = try await offload(runs)
            } catch {
                _ = try? await plan(maxRuns: 0)
                throw error
            }
            _ = try await plan(maxRuns: 0)
            try await refreshObjectCounts()
            state.withLock { state in
                state.status.lastError = nil
                state.status.lastPassMilliseconds = WallClock.milliseconds()
            }
            return committed > 0
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            state.withLock { state in
                state.lastSweep = nil  // a PUT that timed out may complete at the store later
                // Shards with data waiting and no error of their own wait for this one.
                for shard in state.backlog.keys where state.errors[shard] == nil { state.errors[shard] = "\(error)" }
                state.status.uploadFailures += 1
                state.status.lastError = "\(error)"
                state.status.lastPassMilliseconds = WallClock.milliseconds()
            }
            logger.warning("object tier pass failed, local data kept", metadata: ["error": "\(error)"])
            throw error
        }
    }

    /// Up to `maxRuns` runs that are due; what is due in all becomes the backlog shown as lag.
    private func plan(maxRuns: Int) async throws -> [OffloadRun] {
        let (runs, backlog) = try await journal.offloadRuns(
            defaultLocalRetention: configuration.defaultLocalRetentionMilliseconds,
            maxRunBytes: configuration.maxObjectBytes, maxRuns: maxRuns)
        state.withLock { $0.backlog = Dictionary(backlog.map { ($0.shard, $0) }, uniquingKeysWith: { a, _ in a }) }
        return runs
    }

    /// Builds and uploads up to `configuration.uploads` runs at a time; commits them in run
    /// order (a shard's runs must enter the catalog in offset order). A run that fails or is
    /// refused holds back its shard's later runs (they would leave a gap) but not other shards';
    /// the first failure is thrown at the end. Returns the runs committed.
    private func offload(_ runs: [OffloadRun]) async throws -> Int {
        enum Outcome: Sendable {
            case uploaded(key: String, objectBytes: Int)
            case failed(any Error)
            case skipped
        }
        var held = Set<UInt64>()
        var count = 0
        var failure: (any Error)?
        try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
            var started = 0
            var outcomes: [Int: Outcome] = [:]
            var committed = 0
            func start() {
                while started < runs.count, held.contains(runs[started].shardID) {
                    outcomes[started] = .skipped
                    started += 1
                }
                guard started < runs.count else { return }
                let number = started
                group.addTask {
                    do {
                        let (key, objectBytes) = try await self.upload(runs[number])
                        return (number, .uploaded(key: key, objectBytes: objectBytes))
                    } catch {
                        return (number, .failed(error))
                    }
                }
                started += 1
            }
            for _ in 0..<max(1, configuration.uploads) { start() }
            while let (number, outcome) = try await group.next() {
                outcomes[number] = outcome
                while let outcome = outcomes.removeValue(forKey: committed) {
                    let run = runs[committed]
                    committed += 1
                    switch outcome {
                    case .uploaded(let key, let objectBytes) where !held.contains(run.shardID):
                        if try await commit(run, key: key, objectBytes: objectBytes) {
                            count += 1
                        } else {
                            held.insert(run.shardID)  // its object stays queued for deletion
                        }
                    case .failed(let error):
                        held.insert(run.shardID)
                        failure = failure ?? error
                    case .uploaded, .skipped:
                        continue
                    }
                }
                if failure is CancellationError { break }
                start()
            }
        }
        if let failure { throw failure }
        return count
    }

    /// Reads a run's batches, builds its object (on the thread pool) and uploads it under a new
    /// key, which is queued for deletion first: until a commit takes it off the queue (in the
    /// catalog write), a failed, refused or interrupted upload is deleted by a later pass.
    private func upload(_ run: OffloadRun) async throws -> (key: String, objectBytes: Int) {
        let key = Self.key(shardID: run.shardID, firstOffset: run.firstOffset)
        do {
            try await journal.queueRemoteDeletion(key)
            let batches = try await journal.batches(of: run)
            let (blockBytes, level, shard) = (configuration.blockBytes, configuration.compressionLevel, run.shard)
            let object = try await pool.runIfActive {
                try TierObject.encode(shard: shard, batches: batches, blockBytes: blockBytes, level: level).bytes
            }
            try await store.put(key, object)
            return (key, object.count)
        } catch {
            state.withLock { $0.errors[run.shard] = "\(key): \(error)" }
            throw error
        }
    }

    /// Records an uploaded run in the journal's catalog; false when the journal refused it
    /// (retention, a shard deletion or compaction overtook the upload).
    private func commit(_ run: OffloadRun, key: String, objectBytes: Int) async throws -> Bool {
        guard let committed = try await journal.commitOffload(run, key: key, objectBytes: Int64(objectBytes)) else {
            return false
        }
        state.withLock { state in
            state.status.uploadedObjects += 1
            state.status.uploadedBytes += committed.objectBytes
            state.status.uploadedBatchBytes += committed.batchBytes
            state.errors[run.shard] = nil
        }
        logger.debug(
            "offloaded",
            metadata: [
                "tier.key": "\(key)", "journal.shard": "\(run.shard)", "tier.batches": "\(run.batchCount)",
                "tier.bytes": "\(committed.batchBytes)", "tier.object_bytes": "\(committed.objectBytes)",
            ])
        return true
    }

    /// The prefix belongs to one node: its `strata-node` object names this journal's tier id (a
    /// random id kept in the journal's key-value store), written with a conditional PUT. A
    /// prefix claimed by another journal is an error (nothing is uploaded or deleted there): two
    /// nodes sharing one would delete each other's objects as leftovers.
    private func claimPrefix() async throws {
        guard !state.withLock({ $0.claimed }) else { return }
        let ours: [UInt8]
        if let stored = try await journal.get(namespace: "tier", key: Array("node-id".utf8)) {
            ours = stored
        } else {
            ours = Array(String(UInt64.random(in: 1..<UInt64.max), radix: 16).utf8)
            try await journal.put(namespace: "tier", key: Array("node-id".utf8), value: ours)
        }
        // An existing claim is read, never overwritten. A missing one is created with a
        // conditional write: of two nodes claiming at once exactly one creates it (S3
        // If-None-Match, WebHDFS overwrite=false). The read back also catches a store that
        // ignores the condition, except when the other node's overwrite lands after this read.
        var owner: [UInt8]?
        do {
            owner = try await store.get(Self.claimKey, range: nil)
        } catch ObjectStoreError.notFound {
            _ = try await store.putIfAbsent(Self.claimKey, ours)
            owner = try await store.get(Self.claimKey, range: nil)
        }
        guard owner == ours else {
            throw ObjectStoreError.service(
                status: 0, code: "PrefixClaimed",
                message: "\(configuration.destination) belongs to another Strata journal (strata-node id "
                    + "\(String(decoding: owner ?? [], as: UTF8.self))); give this node a tier.prefix of its own")
        }
        state.withLock { $0.claimed = true }
    }

    static let claimKey = "strata-node"

    /// Deletes the objects the journal let go of. A key the store refuses to delete stays queued
    /// (logged, and in the status) without holding up offload.
    @discardableResult
    private func deleteReleasedObjects() async throws -> Bool {
        var deleted = 0
        for key in try await journal.remoteDeletions() {
            do {
                try await store.delete(key)
            } catch ObjectStoreError.notFound {
                // Gone already.
            } catch let error as ObjectStoreError {
                logger.warning(
                    "cannot delete a released object", metadata: ["tier.key": "\(key)", "error": "\(error)"])
                state.withLock { $0.status.lastDeleteError = "\(key): \(error)" }
                // Refused: the next key may go. Unreachable: the rest wait for the next pass.
                if case .transport = error { break }
                continue
            }
            try await journal.confirmRemoteDeletion(key)
            deleted += 1
            state.withLock { $0.status.deletedObjects += 1 }
        }
        return deleted > 0
    }

    /// At the first pass of the process, after a failed pass, and every `leftoverSweepInterval`,
    /// at the start of a pass: objects under the node's prefix that neither the catalog nor the deletion
    /// queue names (an upload a crash interrupted before its key was queued, or a PUT that timed
    /// out here and completed at the store after its deletion) are deleted. Nothing else writes
    /// under the prefix, and no upload is running between passes.
    private func deleteLeftovers() async throws {
        let known = try await journal.knownObjectKeys()
        var removed = 0
        for object in try await store.list(prefix: "shard-")
        where object.key.hasSuffix(".strata") && !known.contains(object.key) {
            do {
                try await store.delete(object.key)
                removed += 1
            } catch let error as ObjectStoreError {
                logger.warning(
                    "cannot delete a leftover object", metadata: ["tier.key": "\(object.key)", "error": "\(error)"])
            }
        }
        if removed > 0 {
            logger.notice("deleted objects no catalog entry names", metadata: ["tier.objects": "\(removed)"])
        }
    }

    /// Counts each shard's objects again when its tier bytes changed since the last count
    /// (an offload or retention), so an idle pass reads no catalog.
    private func refreshObjectCounts() async throws {
        let known = state.withLock { $0.objects }
        var objects: [String: (count: Int, bytes: Int64, tierBytes: Int64)] = [:]
        for shard in journal.listShards() where shard.tierBytes > 0 {
            if let counted = known[shard.name], counted.tierBytes == shard.tierBytes {
                objects[shard.name] = counted
                continue
            }
            do {
                let tiered = try await journal.tieredObjects(shard: shard.name)
                objects[shard.name] = (tiered.count, tiered.reduce(0) { $0 + $1.objectBytes }, shard.tierBytes)
            } catch let error as JournalError where error.code == .unknownShard {
                continue  // deleted meanwhile
            }
        }
        state.withLock { $0.objects = objects }
    }

    /// The tier per shard: live byte counts from the journal, objects and backlog as of the last pass.
    public func status() -> Status {
        let shards = journal.listShards()
        return state.withLock { state in
            var status = state.status
            status.shards = shards.map { info in
                let backlog = state.backlog[info.name]
                let objects = state.objects[info.name]
                return Status.Shard(
                    name: info.name, memoryBytes: info.memoryBytes, localBytes: info.storedBytes - info.tierBytes,
                    tierBytes: info.tierBytes, tierObjects: objects?.count ?? 0, tierObjectBytes: objects?.bytes ?? 0,
                    offloadLagBytes: backlog?.bytes ?? 0,
                    offloadLagSeconds: Double(backlog?.ageMilliseconds ?? 0) / 1000,
                    lastError: state.errors[info.name])
            }
            return status
        }
    }
}
