import Logging
import NIOCore
import StrataJournal
import StrataWire
import Synchronization

/// One client connection: a hello first, then requests handled concurrently and answered in
/// any order. Appends are queued in arrival order before the next frame is read, so pipelined
/// appends to one shard keep their order. A malformed or oversize frame gets an error frame
/// (correlation id 0) and the connection is closed.
final class JournalConnection: Sendable {
    let server: JournalServer
    let logger: Logger
    private let subscriptions = Mutex<[UInt32: SubscriptionControl]>([:])

    init(server: JournalServer, logger: Logger) {
        self.server = server
        self.logger = logger
    }

    private var journal: Journal { server.journal }

    func run(
        inbound: NIOAsyncChannelInboundStream<JournalFrame>, outbound: NIOAsyncChannelOutboundWriter<JournalFrame>
    ) async throws {
        let (answers, sink) = AsyncStream<JournalFrame>.makeStream()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            // The writer drains every answer, the last error frame included, then ends.
            group.addTask {
                for await frame in answers { try await outbound.write(frame) }
                return true
            }
            group.addTask {
                defer { sink.finish() }
                await self.readRequests(inbound, sink: sink)
                return false
            }
            // The connection is over when the writer is: after the reader finished the answers,
            // or when writing failed (then the reader is cancelled).
            while let writerDone = try await group.next() {
                if writerDone { break }
            }
            group.cancelAll()
        }
    }

    private func readRequests(
        _ inbound: NIOAsyncChannelInboundStream<JournalFrame>, sink: AsyncStream<JournalFrame>.Continuation
    ) async {
        let limiter = InflightLimiter(limit: server.configuration.maxInflightPerConnection)
        await withDiscardingTaskGroup { group in
            do {
                var iterator = inbound.makeAsyncIterator()
                guard let first = try await iterator.next() else { return }
                guard try handshake(first, sink: sink) else { return }
                while true {
                    await limiter.acquire()
                    guard let frame = try await iterator.next() else { break }
                    dispatch(frame, group: &group, sink: sink, limiter: limiter)
                }
            } catch let error as JournalError {
                server.metrics.protocolErrors.increment()
                logger.warning("closing connection: \(error.message)")
                sink.yield(JournalResponse.error(0, error))
            } catch {
                logger.debug("connection read failed", metadata: ["error": "\(error)"])
            }
            // Reading is over: end subscriptions and in-flight waits, let the answers drain.
            subscriptions.withLock { controls in
                controls.values.forEach { $0.end() }
                controls.removeAll()
            }
            group.cancelAll()
        }
    }

    /// Answers the hello; false (after an error frame) when the client cannot be served.
    private func handshake(_ frame: JournalFrame, sink: AsyncStream<JournalFrame>.Continuation) throws -> Bool {
        guard frame.type == .hello, case .hello(let minVersion, let maxVersion, let client) = try JournalRequest.decode(frame)
        else {
            throw JournalError(.protocolError, "the first frame must be hello, got \(frame.type)")
        }
        let supported = StrataVersion.protocolVersions
        let version = min(maxVersion, supported.upperBound)
        guard version >= minVersion, version >= supported.lowerBound else {
            sink.yield(
                JournalResponse.error(
                    frame.correlationID,
                    JournalError(
                        .unsupported,
                        "client speaks protocol \(minVersion)...\(maxVersion), this node \(supported.lowerBound)...\(supported.upperBound)")))
            return false
        }
        logger.debug("client connected", metadata: ["journal.client": "\(client)", "journal.version": "\(version)"])
        let maxFrameBytes = server.configuration.maxFrameBytes
        let node = server.configuration.nodeName
        sink.yield(
            JournalResponse.ok(frame.correlationID) { payload in
                payload.writeInteger(version)
                payload.writeInteger(UInt32(maxFrameBytes))
                payload.writeWireString(node)
            })
        return true
    }

    private func dispatch(
        _ frame: JournalFrame, group: inout DiscardingTaskGroup, sink: AsyncStream<JournalFrame>.Continuation,
        limiter: InflightLimiter
    ) {
        let id = frame.correlationID
        let request: JournalRequest
        do {
            request = try JournalRequest.decode(frame)
        } catch {
            // A request frame that does not parse is answered, and the connection goes on: the
            // framing itself is intact.
            server.metrics.protocolErrors.increment()
            sink.yield(JournalResponse.error(id, error))
            limiter.release()
            return
        }
        switch request {
        case .hello:
            sink.yield(JournalResponse.error(id, JournalError(.protocolError, "hello was already done")))
            limiter.release()
        case .append(let shard, let batch):
            let metrics = server.metrics
            let bytes = batch.readableBytes
            journal.enqueueAppend(shard: shard, batch: batch) { result in
                switch result {
                case .success(let offsets):
                    metrics.appends.increment()
                    metrics.appendedBytes.increment(by: Int64(bytes))
                    sink.yield(
                        JournalResponse.ok(id) { $0.writeAppendResult(offsets) })
                case .failure(let error):
                    metrics.requestErrors.increment()
                    sink.yield(JournalResponse.error(id, error))
                }
                limiter.release()
            }
        case .credit(let subscription, let credits):
            subscriptions.withLock { $0[subscription] }?.grant(credits)
            limiter.release()
        case .unsubscribe(let subscription):
            subscriptions.withLock { $0.removeValue(forKey: subscription) }?.end()
            sink.yield(JournalResponse.ok(id))
            limiter.release()
        case .subscribe(let shard, let offset, let maxBytes, let credits):
            let control = SubscriptionControl(credits: credits)
            let fresh = subscriptions.withLock { controls -> Bool in
                guard controls[id] == nil else { return false }
                controls[id] = control
                return true
            }
            limiter.release()
            guard fresh else {
                sink.yield(JournalResponse.error(id, JournalError(.invalidArgument, "subscription \(id) is already live")))
                return
            }
            group.addTask {
                await self.runSubscription(
                    id: id, shard: shard, offset: offset, maxBytes: self.answerLimit(maxBytes), control: control,
                    sink: sink)
            }
        default:
            group.addTask {
                let answer: JournalFrame
                do {
                    answer = try await self.handle(request, id: id)
                } catch let error as JournalError {
                    self.server.metrics.requestErrors.increment()
                    answer = JournalResponse.error(id, error)
                } catch {
                    answer = JournalResponse.error(id, JournalError(.ioError, "\(error)"))
                }
                sink.yield(answer)
                limiter.release()
            }
        }
    }

    /// The bytes of batches one answer may carry: what the client asked, at most half a frame
    /// (a read always returns at least one batch, which is far smaller than a frame).
    private func answerLimit(_ requested: UInt32) -> Int {
        min(Int(requested), server.configuration.maxFrameBytes / 2)
    }

    private func handle(_ request: JournalRequest, id: UInt32) async throws -> JournalFrame {
        switch request {
        case .createShard(let name, let config):
            let info = try await journal.createShard(name, config: config)
            return JournalResponse.ok(id) { $0.writeShardInfo(info) }
        case .deleteShard(let name):
            try await journal.deleteShard(name)
            return JournalResponse.ok(id)
        case .describeShard(let name):
            let info = try journal.describeShard(name)
            return JournalResponse.ok(id) { $0.writeShardInfo(info) }
        case .listShards:
            let shards = journal.listShards()
            return JournalResponse.ok(id) { payload in
                payload.writeInteger(UInt32(shards.count))
                for shard in shards { payload.writeShardInfo(shard) }
            }
        case .read(let shard, let offset, let maxBytes, let maxWait):
            let result = try await journal.read(
                shard: shard, from: offset, maxBytes: answerLimit(maxBytes), maxWait: .milliseconds(Int64(maxWait)))
            return JournalResponse.ok(id) { $0.writeReadResult(result) }
        case .offsetForTimestamp(let shard, let timestamp):
            let offset = try await journal.offset(shard: shard, atOrAfter: timestamp)
            return JournalResponse.ok(id) { $0.writeOptionalOffset(offset) }
        case .commitOffset(let group, let shard, let offset):
            try await journal.commitOffset(group: group, shard: shard, offset: offset)
            return JournalResponse.ok(id)
        case .fetchOffset(let group, let shard):
            let offset = try await journal.committedOffset(group: group, shard: shard)
            return JournalResponse.ok(id) { $0.writeOptionalOffset(offset) }
        case .kvGet(let namespace, let key):
            let value = try await journal.get(namespace: namespace, key: key)
            return JournalResponse.ok(id) { payload in
                payload.writeInteger(value == nil ? UInt8(0) : 1)
                payload.writeWireBytes(value ?? [])
            }
        case .kvPut(let namespace, let key, let value):
            try await journal.put(namespace: namespace, key: key, value: value)
            return JournalResponse.ok(id)
        case .kvDelete(let namespace, let key):
            try await journal.delete(namespace: namespace, key: key)
            return JournalResponse.ok(id)
        case .kvScan(let namespace, let prefix, let limit):
            let pairs = try await journal.scan(namespace: namespace, prefix: prefix, limit: Int(limit))
            return JournalResponse.ok(id) { payload in
                payload.writeInteger(UInt32(pairs.count))
                for pair in pairs {
                    payload.writeWireBytes(pair.key)
                    payload.writeWireBytes(pair.value)
                }
            }
        case .status:
            let status = server.status()
            return JournalResponse.ok(id) { $0.writeNodeStatus(status) }
        case .hello, .append, .subscribe, .unsubscribe, .credit:
            throw JournalError(.protocolError, "\(request.type) is not handled here")
        }
    }

    /// Pushes reads to the client, one `records` frame per credit, woken by appends; ends on
    /// unsubscribe, connection end, or an error (sent as `subscriptionEnd`).
    private func runSubscription(
        id: UInt32, shard: String, offset: UInt64, maxBytes: Int, control: SubscriptionControl,
        sink: AsyncStream<JournalFrame>.Continuation
    ) async {
        do {
            _ = try journal.describeShard(shard)
            sink.yield(JournalResponse.ok(id))
        } catch {
            subscriptions.withLock { $0[id] = nil }
            sink.yield(JournalResponse.error(id, error))
            return
        }
        let journal = self.journal
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var next = offset
                do {
                    while await control.takeCredit() {
                        var result: ReadResult
                        repeat {
                            try Task.checkCancellation()
                            result = try await journal.read(
                                shard: shard, from: next, maxBytes: maxBytes, maxWait: .seconds(30))
                        } while result.batches.isEmpty
                        next = result.nextOffset
                        sink.yield(JournalFrame(type: .records, correlationID: id, payload: Self.encode(result)))
                    }
                } catch is CancellationError {
                } catch let error as JournalError {
                    sink.yield(JournalResponse.subscriptionEnd(id, error))
                } catch {
                    sink.yield(JournalResponse.subscriptionEnd(id, JournalError(.ioError, "\(error)")))
                }
            }
            group.addTask { await control.waitUntilEnded() }
            await group.next()
            control.end()
            group.cancelAll()
        }
        subscriptions.withLock { $0[id] = nil }
    }

    private static func encode(_ result: ReadResult) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeReadResult(result)
        return payload
    }
}
