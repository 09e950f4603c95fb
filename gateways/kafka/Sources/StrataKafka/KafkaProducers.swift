import NIOCore
import StrataClient
import StrataJournal
import Synchronization

/// Idempotent producers (KIP-98): per producer id and partition, the epoch and the last five
/// batches' sequence ranges and offsets. A batch continuing the sequence is appended; a batch
/// equal to one of the last five is a retry and is acknowledged with its first offsets without
/// a second write; a gap is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch with
/// INVALID_PRODUCER_EPOCH. The state is not stored anywhere: the batches carry producer id,
/// epoch and sequence in their headers, so a gateway that does not know a producer on a
/// partition reads it back from the partition's most recent batches (after a restart or a
/// crash of the gateway or journal-node, a retried batch is still recognised).
final class KafkaProducers: Sendable {
    struct Batch: Sendable {
        var firstSequence: Int32
        var lastSequence: Int32
        var baseOffset: UInt64
        var lastOffset: UInt64
    }

    struct Entry: Sendable {
        var epoch: Int16
        var recent: [Batch] = []
        /// When it was last checked or appended to (a counter), for eviction.
        var used: UInt64 = 0
    }

    private struct Table: Sendable {
        /// The state kept is bounded: beyond `limit` entries (producer × partition) the least
        /// recently used tenth is dropped; a dropped producer's state is read back from the
        /// data if it comes back, as after a restart.
        let limit: Int
        var shards: [String: [Int64: Entry]] = [:]
        var count = 0
        var clock: UInt64 = 0

        subscript(shard: String, producer: Int64) -> Entry? {
            get { shards[shard]?[producer] }
            set {
                clock &+= 1
                let old = shards[shard]?[producer]
                if var entry = newValue {
                    entry.used = clock
                    shards[shard, default: [:]][producer] = entry
                    if old == nil { count += 1 }
                } else if old != nil {
                    shards[shard]?[producer] = nil
                    if shards[shard]?.isEmpty == true { shards[shard] = nil }
                    count -= 1
                }
                if count > limit { evict() }
            }
        }

        mutating func removeShard(_ shard: String) {
            count -= shards.removeValue(forKey: shard)?.count ?? 0
        }

        private mutating func evict() {
            let all = shards.flatMap { shard, producers in producers.map { (shard, $0.key, $0.value.used) } }
            for (shard, producer, _) in all.sorted(by: { $0.2 < $1.2 }).prefix(max(1, limit / 10)) {
                shards[shard]?[producer] = nil
                if shards[shard]?.isEmpty == true { shards[shard] = nil }
                count -= 1
            }
        }
    }

    enum Verdict: Sendable {
        case append
        case duplicate(AppendResult)
    }

    /// How many batches back a partition is read to find a producer it does not know.
    static let recoveryRecords: UInt64 = 5_000
    static let recoveryBytes = 8 << 20
    static let remembered = 5

    private let entries: Mutex<Table>

    init(maxEntries: Int = 100_000) {
        entries = Mutex(Table(limit: maxEntries))
    }

    var entryCount: Int { entries.withLock { $0.count } }
    private let nextID = Mutex<Int64>(0)

    /// A new producer id: milliseconds since 1970 in the high bits, 16 random bits below, so
    /// that ids stay unique across gateway restarts and (almost surely) across gateways.
    func allocateID() -> Int64 {
        nextID.withLock { last in
            let candidate = (WallClock.milliseconds() << 16) | Int64.random(in: 0..<(1 << 16))
            last = max(candidate, last + 1)
            return last
        }
    }

    /// Decides what to do with a producer's batch. Runs in the partition's append order.
    func check(_ header: RecordBatch.Header, shard: String, journal: any JournalClient) async throws -> Verdict {
        if entries.withLock({ $0[shard, header.producerID] }) == nil {
            let recovered = try await Self.recover(producerID: header.producerID, shard: shard, journal: journal)
            entries.withLock { $0[shard, header.producerID] = recovered ?? Entry(epoch: header.producerEpoch) }
        }
        return try entries.withLock { entries -> Verdict in
            // Forgotten meanwhile (topic deleted, an append's outcome unknown): no history to check against.
            guard let entry = entries[shard, header.producerID] else { return .append }
            let last = header.baseSequence &+ Int32(header.lastOffsetDelta)
            if header.producerEpoch < entry.epoch {
                throw KafkaFailure(
                    .invalidProducerEpoch,
                    "producer \(header.producerID) epoch \(header.producerEpoch) is older than \(entry.epoch)")
            }
            // A new epoch starts its sequences over; an unknown producer starts wherever it is.
            guard header.producerEpoch == entry.epoch, let previous = entry.recent.last else { return .append }
            if let duplicate = entry.recent.first(where: {
                $0.firstSequence == header.baseSequence && $0.lastSequence == last
            }) {
                return .duplicate(AppendResult(baseOffset: duplicate.baseOffset, lastOffset: duplicate.lastOffset))
            }
            let expected = previous.lastSequence == .max ? 0 : previous.lastSequence + 1
            guard header.baseSequence == expected else {
                throw KafkaFailure(
                    .outOfOrderSequenceNumber,
                    "producer \(header.producerID): sequence \(header.baseSequence), expected \(expected)")
            }
            return .append
        }
    }

    /// Records a producer's batch once it is stored.
    func appended(_ header: RecordBatch.Header, shard: String, result: AppendResult) {
        entries.withLock { entries in
            var entry = entries[shard, header.producerID] ?? Entry(epoch: header.producerEpoch)
            if header.producerEpoch != entry.epoch { entry = Entry(epoch: header.producerEpoch) }
            entry.recent.append(
                Batch(
                    firstSequence: header.baseSequence,
                    lastSequence: header.baseSequence &+ Int32(header.lastOffsetDelta),
                    baseOffset: result.baseOffset, lastOffset: result.lastOffset))
            if entry.recent.count > Self.remembered { entry.recent.removeFirst(entry.recent.count - Self.remembered) }
            entries[shard, header.producerID] = entry
        }
    }

    /// Forgets a deleted topic's partitions.
    func forget(shard: String) {
        entries.withLock { $0.removeShard(shard) }
    }

    /// The producer's last batches in the partition's recent data, or nil when it has none there.
    private static func recover(producerID: Int64, shard: String, journal: any JournalClient) async throws -> Entry? {
        let info = try await journal.describeShard(shard)
        var next =
            info.endOffset > info.startOffset + recoveryRecords ? info.endOffset - recoveryRecords : info.startOffset
        var entry: Entry?
        var bytes = 0
        while next < info.endOffset, bytes < recoveryBytes {
            let result = try await journal.read(shard: shard, from: next, maxBytes: 1 << 20)
            guard !result.batches.isEmpty else { break }
            for batch in result.batches {
                bytes += batch.readableBytes
                guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex),
                    header.producerID == producerID
                else { continue }
                if entry == nil || header.producerEpoch > entry!.epoch { entry = Entry(epoch: header.producerEpoch) }
                guard header.producerEpoch == entry!.epoch else { continue }
                entry!.recent.append(
                    Batch(
                        firstSequence: header.baseSequence,
                        lastSequence: header.baseSequence &+ Int32(header.lastOffsetDelta),
                        baseOffset: UInt64(header.baseOffset), lastOffset: UInt64(header.lastOffset)))
                if entry!.recent.count > remembered { entry!.recent.removeFirst() }
            }
            next = result.nextOffset
        }
        return entry
    }
}

struct InitProducerIDRequest {
    var transactionalID: String?
    var producerID: Int64 = -1
    var producerEpoch: Int16 = -1

    init(_ reader: inout KafkaReader, version: Int16) throws {
        transactionalID = try reader.nullableString()
        _ = try reader.int32()  // transaction timeout
        if version >= 3 {
            producerID = try reader.int64()
            producerEpoch = try reader.int16()
        }
        try reader.taggedFields()
    }
}

extension KafkaGateway {
    /// A producer id for an idempotent producer (transactions are not supported); a producer
    /// that names its current id and epoch (v3+, KIP-360) keeps the id with the next epoch.
    func initProducerID(_ request: InitProducerIDRequest, _ header: KafkaRequestHeader) -> KafkaWriter {
        var writer = KafkaWriter(flexible: header.flexible)
        writer.int32(0)
        if request.transactionalID != nil {
            writer.int16(KafkaError.transactionalIDAuthorizationFailed.rawValue)
            writer.int64(-1)
            writer.int16(-1)
        } else if request.producerID >= 0 && request.producerEpoch < Int16.max - 1 {
            writer.int16(0)
            writer.int64(request.producerID)
            writer.int16(max(0, request.producerEpoch + 1))
        } else {
            // A new producer, or one whose epochs ran out: a new id at epoch 0.
            writer.int16(0)
            writer.int64(producers.allocateID())
            writer.int16(0)
        }
        writer.taggedFields()
        return writer
    }
}
