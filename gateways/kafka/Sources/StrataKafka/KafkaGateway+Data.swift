import NIOCore
import StrataClient
import StrataJournal

// Produce, Fetch, ListOffsets.

struct FetchRequest {
    struct Partition {
        var partition: Int32
        var offset: Int64
        var maxBytes: Int32
    }
    var maxWaitMilliseconds: Int32
    var minBytes: Int32
    var maxBytes: Int32 = .max
    var sessionID: Int32 = 0
    var sessionEpoch: Int32 = -1
    var topics: [(name: String, partitions: [Partition])]
    static let maxWaitLimit: Int32 = 30_000

    init(_ reader: inout KafkaReader, version: Int16) throws {
        _ = try reader.int32()  // replica id
        // Bounded: a fetch holds a slot of its connection while it waits.
        maxWaitMilliseconds = min(try reader.int32(), Self.maxWaitLimit)
        minBytes = try reader.int32()
        if version >= 3 { maxBytes = try reader.int32() }
        if version >= 4 { _ = try reader.int8() }  // isolation level: no transactions, both read the same
        if version >= 7 {
            sessionID = try reader.int32()
            sessionEpoch = try reader.int32()
        }
        topics = try reader.topics { reader in
            let partition = try reader.int32()
            if version >= 9 { _ = try reader.int32() }  // current leader epoch
            let offset = try reader.int64()
            if version >= 12 { _ = try reader.int32() }  // last fetched epoch
            if version >= 5 { _ = try reader.int64() }  // log start offset (followers only)
            let maxBytes = try reader.int32()
            try reader.taggedFields()
            return Partition(partition: partition, offset: offset, maxBytes: maxBytes)
        }
        if version >= 7 {
            _ = try reader.array { reader in  // forgotten topics: no sessions are kept
                _ = try reader.string()
                _ = try reader.array { try $0.int32() }
                try reader.taggedFields()
            }
        }
        if version >= 11 { _ = try reader.string() }  // rack id
        try reader.taggedFields()
    }
}

struct ListOffsetsRequest {
    var topics: [(name: String, partitions: [(partition: Int32, timestamp: Int64)])]

    init(_ reader: inout KafkaReader, version: Int16) throws {
        _ = try reader.int32()  // replica id
        if version >= 2 { _ = try reader.int8() }  // isolation level
        topics = try reader.topics { reader -> (partition: Int32, timestamp: Int64) in
            let partition = try reader.int32()
            if version >= 4 { _ = try reader.int32() }  // current leader epoch
            let timestamp = try reader.int64()
            if version == 0 { _ = try reader.int32() }  // max number of offsets
            try reader.taggedFields()
            return (partition, timestamp)
        }
        try reader.taggedFields()
    }
}

extension KafkaGateway {
    // MARK: Produce

    /// One partition's outcome in a Produce response.
    struct ProduceOutcome: Sendable {
        var partition: Int32
        var error: KafkaError = .none
        var message: String?
        var baseOffset: Int64 = -1
    }

    /// Reads a Produce request and submits its batches at once (so that appends to a partition
    /// keep the order of the requests); the task answers when they are stored. acks=0 gets no
    /// answer, as in Kafka. acks=1 and acks=all are both answered once the journal acknowledged
    /// the append under the topic's durability (fsync by default).
    func produce(
        _ reader: inout KafkaReader, _ header: KafkaRequestHeader,
        respond: @escaping @Sendable (KafkaWriter) -> [ByteBuffer]
    ) throws -> Task<[ByteBuffer]?, Never> {
        let version = header.version
        let transactionalID = version >= 3 ? try reader.nullableString() : nil
        let acks = try reader.int16()
        _ = try reader.int32()  // timeout
        let topics = try reader.topics { reader in
            let index = try reader.int32()
            let records = try reader.nullableBytes()
            try reader.taggedFields()
            return (index, records)
        }
        try reader.taggedFields()

        // Per partition: either an immediate outcome or the appends it waits for.
        var plans:
            [(topic: String, partition: Int32, outcome: ProduceOutcome?, appends: [Task<PendingAppend, any Error>])] =
                []
        for (topic, partitions) in topics {
            for (partition, records) in partitions {
                var refusal: KafkaFailure?
                if transactionalID != nil {
                    refusal = KafkaFailure(.invalidRequest, "transactions are not supported")
                } else if !permits(header, .produce, topic: topic) {
                    refusal = KafkaFailure(.topicAuthorizationFailed, "not allowed to produce to '\(topic)'")
                } else if acks != 0 && acks != 1 && acks != -1 {
                    refusal = KafkaFailure(.invalidRequiredAcks, "acks must be -1, 0 or 1")
                }
                var batches: [ByteBuffer] = []
                if refusal == nil {
                    do {
                        batches = try Self.splitBatches(records)
                    } catch let failure as KafkaFailure {
                        refusal = failure
                    }
                }
                if let refusal {
                    KafkaMetrics.produceError(refusal.code)
                    plans.append(
                        (
                            topic, partition,
                            ProduceOutcome(partition: partition, error: refusal.code, message: refusal.message), []
                        ))
                    continue
                }
                // The topic's existence is checked by the append itself (unknown shard).
                let shard = Self.shardName(topic, partition)
                for batch in batches {
                    KafkaMetrics.batchesIn.increment()
                    KafkaMetrics.bytesIn.increment(by: batch.readableBytes)
                    // RecordBatch v2: the record count is the int32 at byte 57.
                    if let records = batch.getInteger(at: batch.readerIndex + 57, as: Int32.self), records > 0 {
                        KafkaMetrics.recordsIn.increment(by: Int(records))
                    }
                }
                plans.append((topic, partition, nil, batches.map { queueAppend(shard: shard, batch: $0) }))
            }
        }
        let logger = self.logger
        return Task {
            var outcomes: [(topic: String, outcome: ProduceOutcome)] = []
            for plan in plans {
                if let outcome = plan.outcome {
                    outcomes.append((plan.topic, outcome))
                    continue
                }
                var outcome = ProduceOutcome(partition: plan.partition)
                for append in plan.appends {
                    do {
                        let result = try await append.value.result
                        if outcome.baseOffset < 0 { outcome.baseOffset = Int64(result.baseOffset) }
                    } catch {
                        let failure = KafkaFailure.from(error)
                        if failure.code != .unknownTopicOrPartition {
                            logger.warning(
                                "kafka produce failed",
                                metadata: [
                                    "kafka.topic": "\(plan.topic)", "kafka.partition": "\(plan.partition)",
                                    "error": "\(failure)",
                                ])
                        }
                        outcome.error = failure.code
                        outcome.message = failure.message
                        outcome.baseOffset = -1
                        break
                    }
                }
                if outcome.error != .none { KafkaMetrics.produceError(outcome.error) }
                outcomes.append((plan.topic, outcome))
            }
            guard acks != 0 else { return nil }
            return respond(Self.produceResponse(outcomes, version: version, flexible: header.flexible))
        }
    }

    /// The record batches in a Produce request's records, each checked for being RecordBatch v2
    /// whole (the journal checks the CRC and the rest).
    static func splitBatches(_ records: ByteBuffer?) throws -> [ByteBuffer] {
        guard var records, records.readableBytes > 0 else {
            throw KafkaFailure(.invalidRecord, "no records")
        }
        var batches: [ByteBuffer] = []
        while records.readableBytes > 0 {
            guard records.readableBytes >= 17,
                let length = records.getInteger(at: records.readerIndex + 8, as: Int32.self),
                let magic = records.getInteger(at: records.readerIndex + 16, as: Int8.self)
            else {
                throw KafkaFailure(.corruptMessage, "truncated record batch")
            }
            guard magic == 2 else {
                throw KafkaFailure(
                    .unsupportedForMessageFormat, "message format v\(magic): only RecordBatch v2 (magic 2) is stored")
            }
            guard length >= 49, Int(length) + 12 <= records.readableBytes else {
                throw KafkaFailure(.corruptMessage, "record batch length \(length) does not fit the request")
            }
            batches.append(records.readSlice(length: Int(length) + 12)!)
        }
        return batches
    }

    static func produceResponse(
        _ outcomes: [(topic: String, outcome: ProduceOutcome)], version: Int16, flexible: Bool
    ) -> KafkaWriter {
        var grouped: [(String, [ProduceOutcome])] = []
        for (topic, outcome) in outcomes {
            if let index = grouped.firstIndex(where: { $0.0 == topic }) {
                grouped[index].1.append(outcome)
            } else {
                grouped.append((topic, [outcome]))
            }
        }
        var writer = KafkaWriter(flexible: flexible)
        writer.topics(grouped) { writer, outcome in
            writer.int32(outcome.partition)
            writer.int16(outcome.error.rawValue)
            writer.int64(outcome.baseOffset)
            if version >= 2 { writer.int64(-1) }  // log append time: CreateTime topics
            if version >= 5 { writer.int64(-1) }  // log start offset: not reported
            if version >= 8 {
                writer.array([Int32]()) { $0.int32($1) }  // record errors
                writer.nullableString(outcome.error == .none ? nil : outcome.message)
            }
            writer.taggedFields()
        }
        if version >= 1 { writer.int32(0) }  // throttle time
        writer.taggedFields()
        return writer
    }

    // MARK: Fetch

    struct FetchedPartition: Sendable {
        var partition: Int32
        var error: KafkaError = .none
        var highWatermark: Int64 = -1
        var logStartOffset: Int64 = -1
        var batches: [ByteBuffer] = []
        var bytes: Int { batches.reduce(0) { $0 + $1.readableBytes } }
    }

    /// Serves a Fetch: what is there now; when that is less than min.bytes, waits up to
    /// max.wait for an append to any of the partitions (woken by the journal, no polling) and
    /// reads again. Batches go out as stored. No fetch sessions are kept (session id 0 tells
    /// the client to send full fetches).
    func fetch(_ request: FetchRequest, _ header: KafkaRequestHeader) async -> KafkaWriter {
        let version = header.version
        var writer = KafkaWriter(flexible: header.flexible, capacity: 4096)
        if request.sessionID != 0 || request.sessionEpoch > 0 {
            // A session this gateway never created (it creates none).
            writer.int32(0)
            writer.int16(70)  // FETCH_SESSION_ID_NOT_FOUND
            writer.int32(0)
            writer.array([Int]()) { _, _ in }
            writer.taggedFields()
            return writer
        }
        var results = await readPartitions(request, header)
        let total = results.reduce(0) { $0 + $1.1.reduce(0) { $0 + $1.bytes } }
        if total < max(1, Int(request.minBytes)), request.maxWaitMilliseconds > 0,
            !results.contains(where: { $0.1.contains { $0.error != .none } })
        {
            await waitForAppend(request)
            results = await readPartitions(request, header)
        }
        if version >= 1 { writer.int32(0) }  // throttle
        if version >= 7 {
            writer.int16(0)
            writer.int32(0)  // session id: none
        }
        writer.topics(results) { writer, fetched in
            writer.int32(fetched.partition)
            writer.int16(fetched.error.rawValue)
            writer.int64(fetched.highWatermark)
            if version >= 4 { writer.int64(fetched.highWatermark) }  // last stable offset
            if version >= 5 { writer.int64(fetched.logStartOffset) }
            if version >= 4 { writer.count(nil) }  // aborted transactions: none
            if version >= 11 { writer.int32(-1) }  // preferred read replica
            writer.records(fetched.batches)
            writer.taggedFields()
        }
        writer.taggedFields()
        return writer
    }

    /// Reads every partition of a fetch once, within the request's byte limits (a partition's
    /// first batch always goes, however large, as in Kafka).
    private func readPartitions(_ request: FetchRequest, _ header: KafkaRequestHeader) async -> [(
        String, [FetchedPartition]
    )] {
        var budget = min(Int(request.maxBytes), configuration.maxFetchBytes)
        var results: [(String, [FetchedPartition])] = []
        for (topic, partitions) in request.topics {
            var fetched: [FetchedPartition] = []
            for partition in partitions {
                var outcome = FetchedPartition(partition: partition.partition)
                do {
                    guard permits(header, .consume, topic: topic) else {
                        throw KafkaFailure(.topicAuthorizationFailed, "not allowed to consume '\(topic)'")
                    }
                    guard partition.offset >= 0 else { throw KafkaFailure(.offsetOutOfRange, "negative offset") }
                    let shard = Self.shardName(topic, partition.partition)
                    let limit = budget > 0 ? min(Int(partition.maxBytes), budget) : 0
                    let result: ReadResult
                    if limit > 0 {
                        result = try await journal.read(
                            shard: shard, from: UInt64(partition.offset), maxBytes: max(1, limit), maxWait: .zero)
                    } else {
                        let info = try await journal.describeShard(shard)
                        guard UInt64(partition.offset) >= info.startOffset, UInt64(partition.offset) <= info.endOffset
                        else {
                            throw KafkaFailure(.offsetOutOfRange, "offset \(partition.offset) outside the partition")
                        }
                        result = ReadResult(
                            batches: [], nextOffset: UInt64(partition.offset), startOffset: info.startOffset,
                            endOffset: info.endOffset)
                    }
                    if UInt64(partition.offset) > result.endOffset {
                        throw KafkaFailure(
                            .offsetOutOfRange, "offset \(partition.offset) beyond the end \(result.endOffset)")
                    }
                    outcome.highWatermark = Int64(result.endOffset)
                    outcome.logStartOffset = Int64(result.startOffset)
                    outcome.batches = result.batches
                    budget -= outcome.bytes
                } catch {
                    outcome.error = KafkaFailure.from(error).code
                }
                fetched.append(outcome)
            }
            results.append((topic, fetched))
        }
        return results
    }

    /// Waits until any partition of the fetch has data past its fetch offset, or max.wait passed.
    private func waitForAppend(_ request: FetchRequest) async {
        let wait = Duration.milliseconds(Int64(request.maxWaitMilliseconds))
        await withTaskGroup(of: Void.self) { group in
            for (topic, partitions) in request.topics {
                for partition in partitions {
                    let shard = Self.shardName(topic, partition.partition)
                    group.addTask { [journal] in
                        _ = try? await journal.read(
                            shard: shard, from: UInt64(partition.offset), maxBytes: 1, maxWait: wait)
                    }
                }
            }
            group.addTask { try? await Task.sleep(for: wait) }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: ListOffsets

    /// -1: the end (next offset), -2: the start, -3: the last record (the newest timestamp is
    /// assumed to be the last's: CreateTime order), otherwise the first offset whose timestamp
    /// is at or after the one asked for.
    func listOffsets(_ request: ListOffsetsRequest, _ header: KafkaRequestHeader) async -> KafkaWriter {
        let version = header.version
        var results: [(String, [(partition: Int32, error: KafkaError, offset: Int64, timestamp: Int64)])] = []
        for (topic, partitions) in request.topics {
            var found: [(partition: Int32, error: KafkaError, offset: Int64, timestamp: Int64)] = []
            for (partition, timestamp) in partitions {
                let shard = Self.shardName(topic, partition)
                do {
                    guard permits(header, .consume, topic: topic) else {
                        throw KafkaFailure(.topicAuthorizationFailed, "not allowed to consume '\(topic)'")
                    }
                    let info = try await journal.describeShard(shard)
                    switch timestamp {
                    case -1: found.append((partition, .none, Int64(info.endOffset), -1))
                    case -2: found.append((partition, .none, Int64(info.startOffset), -1))
                    case -3:
                        guard info.endOffset > info.startOffset else {
                            found.append((partition, .none, -1, -1))
                            break
                        }
                        let record = try await record(shard: shard, at: info.endOffset - 1)
                        found.append((partition, .none, Int64(info.endOffset - 1), record?.timestamp ?? -1))
                    default:
                        if let offset = try await journal.offset(shard: shard, atOrAfter: timestamp) {
                            let record = try await record(shard: shard, at: offset)
                            found.append((partition, .none, Int64(offset), record?.timestamp ?? timestamp))
                        } else {
                            found.append((partition, .none, -1, -1))
                        }
                    }
                } catch {
                    found.append((partition, KafkaFailure.from(error).code, -1, -1))
                }
            }
            results.append((topic, found))
        }
        var writer = KafkaWriter(flexible: header.flexible)
        if version >= 2 { writer.int32(0) }
        writer.topics(results) { writer, entry in
            writer.int32(entry.partition)
            writer.int16(entry.error.rawValue)
            if version == 0 {
                writer.array(entry.offset >= 0 ? [entry.offset] : []) { $0.int64($1) }
            } else {
                writer.int64(entry.timestamp)
                writer.int64(entry.offset)
                if version >= 4 { writer.int32(0) }  // leader epoch
            }
            writer.taggedFields()
        }
        writer.taggedFields()
        return writer
    }

    /// The record at `offset` (its batch read and decoded), for its timestamp.
    private func record(shard: String, at offset: UInt64) async throws -> Record? {
        let result = try await journal.read(shard: shard, from: offset, maxBytes: 1)
        for batch in result.batches {
            guard let records = try? RecordBatch.decode(batch) else { continue }
            if let record = records.first(where: { $0.offset == offset }) { return record }
        }
        return nil
    }
}
