import NIOCore

/// When an append is acknowledged.
public enum Durability: String, Sendable, Codable, Hashable, CaseIterable {
    /// After the WAL write is on disk (fdatasync, group commit across shards and writers).
    case fsync
    /// After the WAL write reached the operating system (survives a process kill, not a power
    /// cut); the WAL is synced every `asyncFlushInterval`.
    case async
}

/// Per-shard configuration, kept in the catalog.
public struct ShardConfig: Sendable, Codable, Hashable {
    public var durability: Durability
    /// Batches whose newest record is older than this are deleted (nil: keep forever).
    public var retentionMilliseconds: Int64?
    /// Oldest batches are deleted while the shard holds more than this (nil: no limit). Counts
    /// every tier: batches offloaded to the object tier too.
    public var retentionBytes: Int64?
    /// With an object tier attached: batches in sealed segments whose newest record is older
    /// than this move to the object tier (nil: the tier's default). Kafka's local.retention.ms.
    public var localRetentionMilliseconds: Int64?
    /// The largest batch this shard takes, at most the node's `maxBatchBytes` (nil: the node's
    /// limit). Kafka's max.message.bytes.
    public var maxBatchBytes: Int?

    public init(
        durability: Durability = .fsync, retentionMilliseconds: Int64? = nil, retentionBytes: Int64? = nil,
        localRetentionMilliseconds: Int64? = nil, maxBatchBytes: Int? = nil
    ) {
        self.durability = durability
        self.retentionMilliseconds = retentionMilliseconds
        self.retentionBytes = retentionBytes
        self.localRetentionMilliseconds = localRetentionMilliseconds
        self.maxBatchBytes = maxBatchBytes
    }
}

/// What `describeShard` and `listShards` report.
public struct ShardInfo: Sendable, Hashable, Codable {
    public var name: String
    public var id: UInt64
    public var config: ShardConfig
    /// First offset still stored (retention moves it up).
    public var startOffset: UInt64
    /// One past the last readable offset (the high watermark).
    public var endOffset: UInt64
    /// Bytes of batches stored for this shard, in every tier.
    public var storedBytes: Int64
    /// Bytes of recent batches held in memory for live readers.
    public var memoryBytes: Int
    /// Bytes of batches (as stored, before the object's block compression) in the object tier,
    /// and the offsets below `tierEndOffset` that live there.
    public var tierBytes: Int64
    public var tierEndOffset: UInt64

    public init(
        name: String, id: UInt64, config: ShardConfig, startOffset: UInt64, endOffset: UInt64, storedBytes: Int64,
        memoryBytes: Int, tierBytes: Int64 = 0, tierEndOffset: UInt64 = 0
    ) {
        self.tierBytes = tierBytes
        self.tierEndOffset = tierEndOffset
        self.name = name
        self.id = id
        self.config = config
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.storedBytes = storedBytes
        self.memoryBytes = memoryBytes
    }
}

public struct AppendResult: Sendable, Hashable {
    public var baseOffset: UInt64
    public var lastOffset: UInt64

    public init(baseOffset: UInt64, lastOffset: UInt64) {
        self.baseOffset = baseOffset
        self.lastOffset = lastOffset
    }
}

/// Batches returned by a read, in offset order. The first batch may start before the offset
/// asked for (batches are never split); readers skip records below it.
public struct ReadResult: Sendable {
    public var batches: [ByteBuffer]
    /// The offset to read from next.
    public var nextOffset: UInt64
    public var startOffset: UInt64
    /// The high watermark when the read was served.
    public var endOffset: UInt64

    public init(batches: [ByteBuffer], nextOffset: UInt64, startOffset: UInt64, endOffset: UInt64) {
        self.batches = batches
        self.nextOffset = nextOffset
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

public struct KeyValue: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]

    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }
}

/// Counters for benchmarks and metrics.
public struct JournalStatistics: Sendable, Hashable {
    /// Bytes of batches accepted by `append`.
    public var appendedBytes: Int64 = 0
    public var appendedBatches: Int64 = 0
    /// Bytes written to WAL segments (frames, headers, compaction copies).
    public var walBytesWritten: Int64 = 0
    public var walSyncs: Int64 = 0
    public var walWrites: Int64 = 0
    public var compactedBytes: Int64 = 0
    public var ioBackend: String = ""
    /// Time of each synced WAL write (write + fdatasync) and each timed flush, as a histogram.
    public var walSyncLatency = LatencyHistogram()

    public init() {}
}

/// What the index database (RocksDB) holds in memory.
public struct IndexMemory: Sendable, Hashable {
    /// The block cache: data blocks (at most `JournalConfiguration.indexCacheBytes`).
    public var cacheBytes = 0
    /// Table readers, with the tables' index blocks (these grow with the number of keys).
    public var tableReaderBytes = 0
    public var memtableBytes = 0

    public init(cacheBytes: Int = 0, tableReaderBytes: Int = 0, memtableBytes: Int = 0) {
        self.cacheBytes = cacheBytes
        self.tableReaderBytes = tableReaderBytes
        self.memtableBytes = memtableBytes
    }
}

/// A cumulative-bucket latency histogram (Prometheus style) with fixed bounds.
public struct LatencyHistogram: Sendable, Hashable {
    /// Upper bounds in seconds; a last, implicit bucket is +Inf.
    public static let bounds: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    ]
    /// Observations per bucket (not cumulative), one more than `bounds` for +Inf.
    public private(set) var counts = [Int64](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    public private(set) var sum: Double = 0
    public var count: Int64 { counts.reduce(0, +) }

    public init() {}

    public mutating func record(_ duration: Duration) {
        let seconds = duration.seconds
        sum += seconds
        counts[Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count] += 1
    }
}

extension ShardConfig {
    /// A retention limit given as text (a flag or setting): a number of at least 0, or `none`
    /// for no limit (nil).
    public static func parseLimit(_ text: String, none: String = "none") throws(JournalError) -> Int64? {
        if text == none { return nil }
        guard let value = Int64(text), value >= 0 else {
            throw JournalError(.invalidArgument, "\(text) is not a number of at least 0 or \(none)")
        }
        return value
    }
}

public struct JournalConfiguration: Sendable {
    public var dataDirectory: String
    /// A segment is sealed and a new one started past this size.
    public var segmentBytes: Int = 256 << 20
    /// A non-empty active segment older than this is sealed by maintenance, so that data on a
    /// quiet node reaches sealed segments (and the object tier) too (nil: only when full).
    public var segmentMaxAge: Duration?
    /// Largest batch accepted.
    public var maxBatchBytes: Int = 16 << 20
    /// How often `async` shards' WAL writes are synced.
    public var asyncFlushInterval: Duration = .milliseconds(50)
    public var walIO: WALIOMode = .auto
    /// Recent batches kept in memory per shard for live readers…
    public var tailBytesPerShard: Int = 1 << 20
    /// …and for all shards together: with many shards each one's share shrinks to
    /// `tailBytesTotal / shards` (older reads are then served from the segments).
    public var tailBytesTotal: Int = 256 << 20

    /// The largest WAL frame: a batch of `maxBatchBytes` and its frame header.
    var maxWALFrameBytes: Int { maxBatchBytes + WALFormat.frameHeaderSize }

    /// The memory tail one shard may hold when the journal has `shards` shards.
    func tailLimit(shards: Int) -> Int {
        min(tailBytesPerShard, tailBytesTotal / max(1, shards))
    }
    /// How often the background maintenance (index checkpoint, retention, compaction) runs.
    public var maintenanceInterval: Duration = .seconds(5)
    /// Run maintenance on a background thread (tests call `runMaintenance()` themselves).
    public var backgroundMaintenance: Bool = true
    /// A sealed segment whose live bytes fall below this fraction is compacted.
    public var compactionThreshold: Double = 0.5
    /// Bytes of compaction copies handed to the WAL writer at once (the most a foreground append
    /// can find queued ahead of it from compaction).
    public var compactionChunkBytes: Int = 1 << 20
    /// A WAL write, sync or segment roll, or a maintenance step (retention of one shard, index
    /// checkpoint, removal or compaction of one segment), that takes at least this long is
    /// logged at warning with what it did: how an operator ties stalled appends to a cause.
    public var slowOperationLog: Duration = .milliseconds(200)

    /// The index database's block cache (data blocks; the tables' index blocks are held by their
    /// readers, outside it).
    public var indexCacheBytes: Int = 64 << 20

    /// Appends are refused with `diskFull` while the data directory's filesystem has less free
    /// space than this, so that the index database always has room to write (it must never
    /// meet a full disk itself).
    public var minFreeDiskBytes: Int64 = 128 << 20

    /// The process's resident memory at which the node reports itself short of memory (health
    /// degraded; gateways hold publishers, as RabbitMQ's vm_memory_high_watermark). Nil: 40% of
    /// the machine's physical memory, RabbitMQ's default; 0: never.
    public var memoryHighWatermarkBytes: Int64?

    /// How long a queue consumer whose receive got fewer messages than it asked for counts as
    /// having room, holding back consumers of a lower priority (docs/queues.md).
    public var queueRoomMilliseconds: Int64 = 1000

    /// When recovery finds a damaged frame in the last segment with valid later data after it
    /// (which a torn write cannot explain), copy the range from the damage on aside
    /// (`<segment>.wal.damaged-<position>`) and cut it, instead of refusing to open.
    public var quarantineDamagedWAL = false

    /// The WAL I/O layer to use instead of the one `walIO` selects: the seam through which tests
    /// inject write and sync faults and record what a power cut would keep.
    var walIOOverride: (any WALIO & Sendable)?

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }
}

/// One WAL segment as the admin API shows it.
public struct SegmentInfo: Sendable, Hashable, Codable {
    public var id: UInt64
    /// Frame bytes written to it.
    public var bytes: Int64
    /// Frame bytes the index still points at.
    public var liveBytes: Int64
    /// The segment being appended to.
    public var active: Bool
}

/// What `Journal.health` (and the node's /health) reports.
public struct JournalHealth: Sendable, Hashable, Codable {
    public enum Status: String, Sendable, Hashable, Codable {
        case ok
        /// Serving, with a problem an operator should see (disk reserve, object tier errors).
        case degraded
        /// Not acknowledging appends (fail-stop after a WAL or index I/O error): restart the node.
        case failed
    }

    public var status: Status
    public var problems: [String]

    public init(status: Status, problems: [String]) {
        self.status = status
        self.problems = problems
    }
}
