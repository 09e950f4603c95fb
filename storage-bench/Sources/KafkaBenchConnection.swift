import CZstd
import NIOCore
import NIOPosix
import StrataJournal
import Synchronization

/// One Kafka connection of the load generator: length-prefixed frames, pipelined requests,
/// responses matched in order (Kafka answers a connection's requests in order). Requests use
/// fixed, non-flexible versions every Kafka broker since 2.1 serves.
final class KafkaBenchConnection: Sendable {
    let channel: any Channel
    private let waiting = Mutex<[CheckedContinuation<ByteBuffer, any Error>]>([])
    private let nextCorrelation = Mutex<Int32>(1)

    /// Cuts frames and hands each response body (after the correlation id) to the oldest waiter.
    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        weak var owner: KafkaBenchConnection?
        var pending = ByteBuffer()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            pending.writeBuffer(&bytes)
            while let size = pending.getInteger(at: pending.readerIndex, as: Int32.self),
                pending.readableBytes >= 4 + Int(size)
            {
                pending.moveReaderIndex(forwardBy: 4)
                var frame = pending.readSlice(length: Int(size))!
                frame.moveReaderIndex(forwardBy: 4)  // correlation id: answers come in order
                owner?.deliver(.success(frame))
            }
            pending.discardReadBytes()
        }

        func channelInactive(context: ChannelHandlerContext) {
            owner?.failAll(BenchError("the broker closed the connection"))
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private init(channel: any Channel) {
        self.channel = channel
    }

    static func open(host: String, port: Int) async throws -> KafkaBenchConnection {
        let handler = Handler()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port).get()
        let connection = KafkaBenchConnection(channel: channel)
        try await channel.eventLoop.submit { handler.owner = connection }.get()
        return connection
    }

    fileprivate func deliver(_ result: Result<ByteBuffer, any Error>) {
        let waiter = waiting.withLock { $0.isEmpty ? nil : $0.removeFirst() }
        waiter?.resume(with: result)
    }

    fileprivate func failAll(_ error: any Error) {
        for waiter in waiting.withLock({ waiting in
            defer { waiting = [] }
            return waiting
        }) {
            waiter.resume(throwing: error)
        }
    }

    /// Sends a request (header v1) and returns its response body.
    func call(api: Int16, version: Int16, body: ByteBuffer) async throws -> ByteBuffer {
        var frame = channel.allocator.buffer(capacity: 18 + body.readableBytes)
        let correlation = nextCorrelation.withLock { id in
            defer { id &+= 1 }
            return id
        }
        frame.writeInteger(Int32(10 + 5 + body.readableBytes))
        frame.writeInteger(api)
        frame.writeInteger(version)
        frame.writeInteger(correlation)
        frame.writeInteger(Int16(5))
        frame.writeString("bench")
        var body = body
        frame.writeBuffer(&body)
        return try await withCheckedThrowingContinuation { continuation in
            // Queued and written under one lock, so that waiters are in the order of the writes.
            waiting.withLock { waiting in
                waiting.append(continuation)
                channel.writeAndFlush(frame, promise: nil)
            }
        }
    }

    func close() {
        channel.close(promise: nil)
    }

    // MARK: Requests

    static func string(_ value: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(Int16(value.utf8.count))
        buffer.writeString(value)
    }

    /// CreateTopics v4 with topic configs; an existing topic (error 36) is fine.
    func createTopic(_ name: String, partitions: Int32, configs: [(name: String, value: String)] = []) async throws {
        var body = ByteBuffer()
        body.writeInteger(Int32(1))
        Self.string(name, into: &body)
        body.writeInteger(partitions)
        body.writeInteger(Int16(1))
        body.writeInteger(Int32(0))  // assignments
        body.writeInteger(Int32(configs.count))
        for config in configs {
            Self.string(config.name, into: &body)
            Self.string(config.value, into: &body)
        }
        body.writeInteger(Int32(30_000))
        body.writeInteger(Int8(0))
        var answer = try await call(api: 19, version: 4, body: body)
        _ = answer.readInteger(as: Int32.self)  // throttle
        _ = answer.readInteger(as: Int32.self)  // count
        let length = Int(answer.readInteger(as: Int16.self) ?? 0)
        answer.moveReaderIndex(forwardBy: length)
        let error = answer.readInteger(as: Int16.self) ?? -1
        guard error == 0 || error == 36 else { throw BenchError("CreateTopics failed with error \(error)") }
    }

    /// Produce v7 of one batch to one partition; returns the error code.
    func produce(topic: String, partition: Int32, batch: ByteBuffer, acks: Int16) async throws -> Int16 {
        var body = channel.allocator.buffer(capacity: 64 + batch.readableBytes)
        body.writeInteger(Int16(-1))  // transactional id: null
        body.writeInteger(acks)
        body.writeInteger(Int32(30_000))
        body.writeInteger(Int32(1))
        Self.string(topic, into: &body)
        body.writeInteger(Int32(1))
        body.writeInteger(partition)
        body.writeInteger(Int32(batch.readableBytes))
        body.writeImmutableBuffer(batch)
        var answer = try await call(api: 0, version: 7, body: body)
        _ = answer.readInteger(as: Int32.self)  // topics
        let length = Int(answer.readInteger(as: Int16.self) ?? 0)
        answer.moveReaderIndex(forwardBy: length)
        _ = answer.readInteger(as: Int32.self)  // partitions
        _ = answer.readInteger(as: Int32.self)  // index
        return answer.readInteger(as: Int16.self) ?? -1
    }

    /// Fetch v11 of every partition from the given offsets (no waiting); returns per partition
    /// the records and bytes fetched and the next offset.
    func fetch(topic: String, offsets: [Int32: Int64], maxBytes: Int32) async throws
        -> [Int32: (records: Int, bytes: Int, next: Int64, end: Int64)]
    {
        var body = ByteBuffer()
        body.writeInteger(Int32(-1))  // replica
        body.writeInteger(Int32(0))  // max wait
        body.writeInteger(Int32(1))  // min bytes
        body.writeInteger(Int32(64 << 20))  // max bytes
        body.writeInteger(Int8(0))  // isolation
        body.writeInteger(Int32(0))  // session id
        body.writeInteger(Int32(-1))  // session epoch
        body.writeInteger(Int32(1))
        Self.string(topic, into: &body)
        body.writeInteger(Int32(offsets.count))
        for (partition, offset) in offsets.sorted(by: { $0.key < $1.key }) {
            body.writeInteger(partition)
            body.writeInteger(Int32(-1))  // leader epoch
            body.writeInteger(offset)
            body.writeInteger(Int64(-1))  // log start
            body.writeInteger(maxBytes)
        }
        body.writeInteger(Int32(0))  // forgotten
        Self.string("", into: &body)  // rack
        var answer = try await call(api: 1, version: 11, body: body)
        guard answer.readInteger(as: Int32.self) != nil, let error = answer.readInteger(as: Int16.self), error == 0,
            answer.readInteger(as: Int32.self) != nil, let topics = answer.readInteger(as: Int32.self), topics == 1,
            let nameLength = answer.readInteger(as: Int16.self)
        else { throw BenchError("unexpected Fetch response") }
        answer.moveReaderIndex(forwardBy: Int(nameLength))
        var result: [Int32: (records: Int, bytes: Int, next: Int64, end: Int64)] = [:]
        for _ in 0..<(answer.readInteger(as: Int32.self) ?? 0) {
            guard let partition = answer.readInteger(as: Int32.self), let error = answer.readInteger(as: Int16.self),
                let highWatermark = answer.readInteger(as: Int64.self)
            else { throw BenchError("truncated Fetch response") }
            guard error == 0 else { throw BenchError("Fetch of partition \(partition) failed with error \(error)") }
            answer.moveReaderIndex(forwardBy: 16)  // last stable offset, log start offset
            let aborted = answer.readInteger(as: Int32.self) ?? -1
            if aborted > 0 { answer.moveReaderIndex(forwardBy: Int(aborted) * 16) }
            answer.moveReaderIndex(forwardBy: 4)  // preferred read replica
            let size = Int(answer.readInteger(as: Int32.self) ?? -1)
            var records = 0
            var next = offsets[partition] ?? 0
            if size > 0, var set = answer.readSlice(length: size) {
                while let header = RecordBatch.Header.peek(set, at: set.readerIndex),
                    set.readableBytes >= header.totalSize
                {
                    records += Int(header.lastOffsetDelta) + 1
                    next = header.lastOffset + 1
                    set.moveReaderIndex(forwardBy: header.totalSize)
                }
            }
            result[partition] = (records, max(0, size), next, highWatermark)
        }
        return result
    }

    // MARK: Batches

    /// A batch of `count` random records of `size` bytes, zstd-compressed when asked (the
    /// records section compressed as Kafka producers do, attributes and CRC set to match).
    static func batch(count: Int, size: Int, zstd: Bool) throws -> ByteBuffer {
        let now = WallClock.milliseconds()
        let records = (0..<count).map { _ in
            Record(timestamp: now, value: (0..<size).map { _ in UInt8.random(in: 0x61...0x7A) })
        }
        let plain = RecordBatch.encode(records)
        guard zstd else { return plain }
        let section = Array(plain.readableBytesView.dropFirst(RecordBatch.headerSize))
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(section.count))
        let written = compressed.withUnsafeMutableBytes { out in
            section.withUnsafeBytes { input in
                ZSTD_compress(out.baseAddress, out.count, input.baseAddress, input.count, 3)
            }
        }
        guard ZSTD_isError(written) == 0 else { throw BenchError("zstd compression failed") }
        var batch = ByteBuffer(bytes: plain.readableBytesView.prefix(RecordBatch.headerSize))
        batch.writeBytes(compressed.prefix(written))
        batch.setInteger(Int32(batch.readableBytes - 12), at: 8)
        batch.setInteger(Int16(RecordBatch.Compression.zstd.rawValue), at: RecordBatch.attributesOffset)
        let crc = CRC32C.checksum(
            batch, offset: RecordBatch.attributesOffset, length: batch.readableBytes - RecordBatch.attributesOffset)
        batch.setInteger(crc, at: RecordBatch.crcOffset)
        return batch
    }
}
