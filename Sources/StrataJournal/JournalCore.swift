import DequeModule
import NIOCore

/// A position in the WAL: segment id and byte position.
struct WALPosition: Sendable, Hashable, Comparable {
    var segment: UInt64
    var position: UInt64

    static func < (lhs: WALPosition, rhs: WALPosition) -> Bool {
        (lhs.segment, lhs.position) < (rhs.segment, rhs.position)
    }

    var encoded: [UInt8] { segment.bigEndianBytes + position.bigEndianBytes }

    init(segment: UInt64, position: UInt64) {
        self.segment = segment
        self.position = position
    }

    init?(_ bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        segment = UInt64(bigEndianBytes: bytes[0..<8])
        position = UInt64(bigEndianBytes: bytes[8..<16])
    }
}

/// A recent batch kept in memory.
struct TailBatch {
    var baseOffset: UInt64
    var lastOffset: UInt64
    var batch: ByteBuffer
}

/// The in-memory state of one shard. Only touched with the journal's core lock held.
final class ShardRuntime: @unchecked Sendable {  // Mutated only with the journal core lock held.
    let id: UInt64
    let name: String
    var config: ShardConfig
    /// Next offset to assign (appends queued but not yet written are below it).
    var nextOffset: UInt64 = 0
    /// One past the last readable offset.
    var endOffset: UInt64 = 0
    var startOffset: UInt64 = 0
    /// Bytes of batches in every tier.
    var storedBytes: Int64 = 0
    /// Offsets below this (and not below `startOffset`) are in the object tier; `tierBytes` of
    /// batches there.
    var tierEnd: UInt64 = 0
    var tierBytes: Int64 = 0
    var tail: Deque<TailBatch> = []
    var tailBytes = 0
    /// Largest max-timestamp already in the time index, and the largest among queued batches.
    var indexedMaxTimestamp: Int64 = .min
    var queuedMaxTimestamp: Int64 = .min
    var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]

    init(id: UInt64, name: String, config: ShardConfig) {
        self.id = id
        self.name = name
        self.config = config
    }

    var info: ShardInfo {
        ShardInfo(
            name: name, id: id, config: config, startOffset: startOffset, endOffset: endOffset,
            storedBytes: storedBytes, memoryBytes: tailBytes, tierBytes: tierBytes, tierEndOffset: tierEnd)
    }

    /// Adds the newest batch and drops the oldest while over `limit` (a tail may end up empty:
    /// reads then go to the segments).
    func addToTail(_ batch: TailBatch, limit: Int) {
        tail.append(batch)
        tailBytes += batch.batch.readableBytes
        while tailBytes > limit, let first = tail.first {
            tailBytes -= first.batch.readableBytes
            tail.removeFirst()
        }
    }

    func dropTail(below offset: UInt64) {
        while let first = tail.first, first.lastOffset < offset {
            tailBytes -= first.batch.readableBytes
            tail.removeFirst()
        }
    }

    /// Takes the waiters to resume them outside the lock.
    func takeWaiters() -> [CheckedContinuation<Void, Never>] {
        guard !waiters.isEmpty else { return [] }
        defer { waiters.removeAll() }
        return Array(waiters.values)
    }
}

/// A one-shot completion for blocking callers (maintenance) of the writer.
final class Completion: @unchecked Sendable {  // `result` is written once before `signal` and read after `wait`.
    private let semaphore = DispatchSemaphoreBox()
    private var result: Result<Void, JournalError> = .success(())

    func complete(_ result: Result<Void, JournalError>) {
        self.result = result
        semaphore.signal()
    }

    func wait() -> Result<Void, JournalError> {
        semaphore.wait()
        return result
    }
}

/// Called on the WAL writer thread when an append is durable by its shard's policy, or failed.
/// It must return quickly (resume a continuation, queue a response).
public typealias AppendCompletion = @Sendable (Result<AppendResult, JournalError>) -> Void

/// One entry waiting for the WAL writer.
struct PendingEntry {
    enum Kind {
        /// A new batch; the completion gets its offsets once durable by policy (or the failure).
        case append(AppendCompletion)
        /// A live batch copied forward out of a segment being compacted.
        case relocation(from: WALPosition, completion: Completion)
        /// A catalog change (shard created, reconfigured or deleted) written to the WAL before
        /// the catalog, so that the catalog can be rebuilt from the WAL; it becomes the shard's
        /// current control frame, in place of `replaces`.
        case control(replaces: IndexEntry?, completion: Completion)

        /// What a blocking caller waits on (nil for appends, which complete through their closure).
        var completion: Completion? {
            switch self {
            case .append: nil
            case .relocation(_, let completion), .control(_, let completion): completion
            }
        }
    }

    var shardID: UInt64
    /// Frame header and batch, base offset already assigned.
    var frame: ByteBuffer
    var baseOffset: UInt64
    var lastOffset: UInt64
    var maxTimestamp: Int64
    var durability: Durability
    /// This batch raises the shard's max timestamp, so it gets a time-index entry.
    var addsTimeIndex: Bool
    var kind: Kind

    var frameLength: Int { frame.readableBytes }
    var batchLength: Int { frame.readableBytes - WALFormat.frameHeaderSize }
}

/// Everything guarded by the journal's one lock.
struct JournalCore {
    var shards: [UInt64: ShardRuntime] = [:]
    var idsByName: [String: UInt64] = [:]
    var pending: Deque<PendingEntry> = []
    var writerIdle = false
    /// Maintenance asks the writer to seal the active segment (it is older than `segmentMaxAge`).
    var rollRequested = false
    /// No new work is taken (appends, catalog changes); maintenance stops.
    var closing = false
    /// Set once maintenance has stopped: the writer exits when nothing is left queued.
    var writerStop = false
    /// Set by the first WAL (or index) write or sync error: nothing more is acknowledged until a
    /// restart re-verifies the WAL (fail-stop).
    var failure: JournalError?
    var nextWaiterID: UInt64 = 0
    var cancelledWaiters: Set<UInt64> = []
    /// Live (indexed) frame bytes and all frame bytes per segment.
    var segmentLive: [UInt64: Int64] = [:]
    var segmentTotal: [UInt64: Int64] = [:]
    /// Sealed segments maintenance found still referenced (or unreadable) when it meant to
    /// delete them: never deleted by this process.
    var keptSegments: Set<UInt64> = []
    var activeSegment: UInt64 = 0
    /// Every frame before this is both synced to disk and in the index (the "indexed through"
    /// watermark: it only moves past a group once the group's index write succeeded).
    var syncedThrough = WALPosition(segment: 0, position: 0)
    var statistics = JournalStatistics()
}
