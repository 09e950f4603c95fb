import Logging
import NIOCore
import NIOSSL
import StrataAuth
import StrataJournal
import StrataWire
import Synchronization

/// One client connection: a hello first, then requests handled concurrently and answered in
/// any order. Appends are queued in arrival order before the next frame is read, so pipelined
/// appends to one shard keep their order. A malformed or oversize frame gets an error frame
/// (correlation id 0) and the connection is closed.
///
/// Memory is bounded: a request takes an in-flight slot and its bytes (the request's and the
/// most its answer may carry) from the connection's byte budget and the node's before it is
/// handled, and gives them back once its answer has been written to the socket; a subscription
/// takes the bytes of each `records` frame before it reads. A client that stops reading its
/// answers therefore stops the node reading its requests (TCP backpressure), and holds at most
/// its connection's budget of the node's.
final class JournalConnection: Sendable {
    let server: JournalServer
    let logger: Logger
    let channel: any Channel
    /// Who the client is, once authenticated (SCRAM or its certificate); nil before.
    private let principal = Mutex<String?>(nil)
    /// The protocol version the hello settled on.
    private let version = Mutex<UInt16>(0)
    private let scram = Mutex(SCRAMServer())
    private let subscriptions = Mutex<[UInt32: SubscriptionControl]>([:])
    private let budget: ByteBudget
    private let limiter: InflightLimiter
    /// The decoder's frame limit, raised once the client authenticated (nil: no access control).
    private let gate: FrameSizeGate?

    /// An answer for the writer, with what it gives back once written.
    struct Answer: Sendable {
        var frame: JournalFrame
        /// It ends a request that holds an in-flight slot.
        var slot = false
        /// Bytes taken from the budgets for it.
        var bytes = 0
    }

    typealias Sink = AsyncStream<Answer>.Continuation

    init(server: JournalServer, channel: any Channel, gate: FrameSizeGate?, logger: Logger) {
        self.server = server
        self.channel = channel
        self.gate = gate
        self.logger = logger
        budget = ByteBudget(limit: server.configuration.maxQueuedBytesPerConnection)
        limiter = InflightLimiter(limit: server.configuration.maxInflightPerConnection)
    }

    private var journal: Journal { server.journal }

    /// Takes `bytes` from the connection's budget and the node's; false when cancelled.
    private func reserve(_ bytes: Int) async -> Bool {
        guard await budget.acquire(bytes) else { return false }
        guard await server.queuedBytes.acquire(bytes) else {
            budget.release(bytes)
            return false
        }
        return true
    }

    /// Hands `answer` to the writer; one the writer will never see (the connection is over)
    /// gives back what it holds at once.
    private func send(_ sink: Sink, _ answer: Answer) {
        switch sink.yield(answer) {
        case .enqueued: break
        case .dropped, .terminated: free(answer)
        @unknown default: free(answer)
        }
    }

    private func free(_ answer: Answer) { release(slot: answer.slot, bytes: answer.bytes) }

    /// Gives back an in-flight slot and budget bytes.
    private func release(slot: Bool, bytes: Int) {
        if slot { limiter.release() }
        budget.release(bytes)
        server.queuedBytes.release(bytes)
    }

    func run(
        inbound: NIOAsyncChannelInboundStream<JournalFrame>, outbound: NIOAsyncChannelOutboundWriter<JournalFrame>
    ) async throws {
        let channel = self.channel
        // A client that must authenticate and has not within the timeout is let go.
        let deadline: Scheduled<Void>? =
            server.configuration.access == nil
            ? nil
            : channel.eventLoop.scheduleTask(
                in: .nanoseconds(Int64(server.configuration.authenticationTimeout.nanoseconds))
            ) {
                [self] in
                guard principal.withLock({ $0 }) == nil else { return }
                logger.warning("closing connection: not authenticated in time")
                channel.close(promise: nil)
            }
        defer { deadline?.cancel() }
        let (answers, sink) = AsyncStream<Answer>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The writer drains every answer, the last error frame included, giving back what
            // each holds; after a failed write it closes the connection and drains unwritten.
            group.addTask {
                var writable = true
                for await answer in answers {
                    if writable {
                        do {
                            try await outbound.write(answer.frame)
                        } catch {
                            writable = false
                            channel.close(promise: nil)
                        }
                    }
                    self.free(answer)
                }
            }
            group.addTask {
                defer { sink.finish() }
                await self.readRequests(inbound, sink: sink)
            }
            try await group.waitForAll()
        }
    }

    private func readRequests(_ inbound: NIOAsyncChannelInboundStream<JournalFrame>, sink: Sink) async {
        await withDiscardingTaskGroup { group in
            do {
                var iterator = inbound.makeAsyncIterator()
                guard let first = try await iterator.next() else { return }
                guard try await handshake(first, sink: sink) else { return }
                reading: while true {
                    await limiter.acquire()
                    guard let frame = try await iterator.next() else { break }
                    switch admit(frame) {
                    case .answered(let answer):
                        send(sink, answer)
                    case .answeredThenClosed(let answer):
                        send(sink, answer)
                        break reading
                    case .handle(let request, let bytes):
                        guard await reserve(bytes) else { break reading }
                        dispatch(request, id: frame.correlationID, bytes: bytes, group: &group, sink: sink)
                    }
                }
            } catch let error as JournalError {
                server.metrics.protocolErrors.increment()
                logger.warning("closing connection: \(error.message)")
                send(sink, Answer(frame: JournalResponse.error(0, error)))
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

    /// What becomes of one request frame (which holds an in-flight slot).
    private enum Admission {
        /// Answered here: it does not parse (the framing is intact, the connection goes on), it
        /// is refused, or it was an authentication step.
        case answered(Answer)
        /// Answered, and the connection closes (a failed authentication).
        case answeredThenClosed(Answer)
        /// To be handled, once `bytes` of the budgets are taken.
        case handle(JournalRequest, bytes: Int)
    }

    private func admit(_ frame: JournalFrame) -> Admission {
        let id = frame.correlationID
        let request: JournalRequest
        do throws(JournalError) {
            request = try JournalRequest.decode(frame)
        } catch {
            server.metrics.protocolErrors.increment()
            return .answered(Answer(frame: JournalResponse.error(id, error), slot: true))
        }
        if case .authenticate(let mechanism, let message) = request {
            let (answer, goOn) = authenticate(mechanism: mechanism, message: message, id: id)
            return goOn
                ? .answered(Answer(frame: answer, slot: true)) : .answeredThenClosed(Answer(frame: answer, slot: true))
        }
        if let refusal = refusal(of: request) {
            server.metrics.requestErrors.increment()
            return .answered(Answer(frame: JournalResponse.error(id, refusal), slot: true))
        }
        return .handle(request, bytes: frame.payload.readableBytes + answerBytes(request))
    }

    /// The most bytes the answer to `request` may hold (reads carry batches; the rest is small).
    private func answerBytes(_ request: JournalRequest) -> Int {
        switch request {
        case .read(_, _, let maxBytes, _): return answerLimit(maxBytes) + 256
        case .listShards, .kvScan, .queueDescribe: return 1 << 20
        case .queueReceive(_, _, _, let maxBytes, _, _, _, _): return answerLimit(maxBytes) + 64 << 10
        default: return 256
        }
    }

    /// Nil when the client may send `request` (no access control, or a principal it grants).
    private func refusal(of request: JournalRequest) -> JournalError? {
        guard let access = server.configuration.access else { return nil }
        guard let principal = principal.withLock({ $0 }) else {
            return JournalError(
                .unauthenticated, "this node requires authentication (SCRAM-SHA-256 or a client certificate) first")
        }
        return access.refusal(of: request, by: principal)
    }

    /// One SCRAM-SHA-256 step; the answer and whether the connection goes on (a failed
    /// exchange closes it).
    private func authenticate(mechanism: String, message: [UInt8], id: UInt32) -> (JournalFrame, Bool) {
        guard let users = server.configuration.access?.users else {
            return (
                JournalResponse.error(
                    id, JournalError(.unsupported, "this node has no users: authenticate with a client certificate")),
                false
            )
        }
        guard mechanism == "SCRAM-SHA-256" else {
            return (
                JournalResponse.error(
                    id, JournalError(.unsupported, "unsupported mechanism \(mechanism); this node speaks SCRAM-SHA-256")
                ), false
            )
        }
        // A SCRAM user replaces a certificate's principal; a second exchange fails (it is over).
        do throws(SCRAMError) {
            let (reply, user) = try scram.withLock { scram throws(SCRAMError) in
                let reply = try scram.receive(message) { users[$0] }
                return (reply, scram.authenticatedUser)
            }
            if let user {
                principal.withLock { $0 = user }
                gate?.raise(to: server.configuration.maxFrameBytes)
                logger.debug("client authenticated", metadata: ["journal.principal": "\(user)"])
            }
            return (
                JournalResponse.ok(id) { payload in
                    payload.writeInteger(user == nil ? UInt8(0) : 1)
                    payload.writeWireBytes(reply)
                }, true
            )
        } catch {
            server.metrics.requestErrors.increment()
            logger.warning("journal authentication failed", metadata: ["error": "\(error)"])
            return (JournalResponse.error(id, JournalError(.unauthenticated, "authentication failed: \(error)")), false)
        }
    }

    /// The principal a verified client certificate names (its common name), if TLS brought one.
    private func certificatePrincipal() async -> String? {
        guard server.configuration.tls != nil, let certificate = try? await channel.nioSSL_peerCertificate().get()
        else {
            return nil
        }
        return TLSFiles.commonName(of: certificate)
    }

    /// Answers the hello; false (after an error frame) when the client cannot be served.
    private func handshake(_ frame: JournalFrame, sink: Sink) async throws -> Bool {
        guard frame.type == .hello,
            case .hello(let minVersion, let maxVersion, let client) = try JournalRequest.decode(frame)
        else {
            throw JournalError(.protocolError, "the first frame must be hello, got \(frame.type)")
        }
        let supported = StrataVersion.protocolVersions
        let version = min(maxVersion, supported.upperBound)
        guard version >= minVersion, version >= supported.lowerBound else {
            send(
                sink,
                Answer(
                    frame: JournalResponse.error(
                        frame.correlationID,
                        JournalError(
                            .unsupported,
                            "client speaks protocol \(minVersion)...\(maxVersion), this node \(supported.lowerBound)...\(supported.upperBound)"
                        ))))
            return false
        }
        logger.debug("client connected", metadata: ["journal.client": "\(client)", "journal.version": "\(version)"])
        self.version.withLock { $0 = version }
        if server.configuration.access != nil, let name = await certificatePrincipal() {
            principal.withLock { $0 = name }
            gate?.raise(to: server.configuration.maxFrameBytes)
        }
        let mustAuthenticate = server.configuration.access != nil && principal.withLock({ $0 }) == nil
        let maxFrameBytes = server.configuration.maxFrameBytes
        let node = server.configuration.nodeName
        send(
            sink,
            Answer(
                frame: JournalResponse.ok(frame.correlationID) { payload in
                    payload.writeInteger(version)
                    payload.writeInteger(UInt32(maxFrameBytes))
                    payload.writeWireString(node)
                    // Protocol 3: whether the client must authenticate before anything else.
                    if version >= 3 { payload.writeInteger(mustAuthenticate ? UInt8(1) : 0) }
                }))
        return true
    }

    /// Handles one request holding an in-flight slot and `bytes` of the budgets; each request
    /// ends with exactly one answer that gives them back (a subscription with its first one).
    private func dispatch(
        _ request: JournalRequest, id: UInt32, bytes: Int, group: inout DiscardingTaskGroup, sink: Sink
    ) {
        let answer = { @Sendable (frame: JournalFrame) in Answer(frame: frame, slot: true, bytes: bytes) }
        switch request {
        case .hello:
            send(sink, answer(JournalResponse.error(id, JournalError(.protocolError, "hello was already done"))))
        case .append(let shard, let batch):
            let metrics = server.metrics
            let size = batch.readableBytes
            journal.enqueueAppend(shard: shard, batch: batch) { result in
                switch result {
                case .success(let offsets):
                    metrics.appends.increment()
                    metrics.appendedBytes.increment(by: Int64(size))
                    self.send(sink, answer(JournalResponse.ok(id) { $0.writeAppendResult(offsets) }))
                case .failure(let error):
                    metrics.requestErrors.increment()
                    self.send(sink, answer(JournalResponse.error(id, error)))
                }
            }
        case .credit(let subscription, let credits):
            subscriptions.withLock { $0[subscription] }?.grant(credits)
            release(slot: true, bytes: bytes)  // a credit has no answer
        case .unsubscribe(let subscription):
            subscriptions.withLock { $0.removeValue(forKey: subscription) }?.end()
            send(sink, answer(JournalResponse.ok(id)))
        case .subscribe(let shard, let offset, let maxBytes, let credits):
            let control = SubscriptionControl(credits: credits)
            let fresh = subscriptions.withLock { controls -> Bool in
                guard controls[id] == nil else { return false }
                controls[id] = control
                return true
            }
            guard fresh else {
                send(
                    sink,
                    answer(
                        JournalResponse.error(id, JournalError(.invalidArgument, "subscription \(id) is already live")))
                )
                return
            }
            group.addTask {
                await self.runSubscription(
                    id: id, shard: shard, offset: offset, maxBytes: self.answerLimit(maxBytes), control: control,
                    first: { answer($0) }, sink: sink)
            }
        default:
            group.addTask {
                let frame: JournalFrame
                do {
                    frame = try await self.handle(request, id: id)
                } catch let error as JournalError {
                    self.server.metrics.requestErrors.increment()
                    frame = JournalResponse.error(id, error)
                } catch {
                    frame = JournalResponse.error(id, JournalError(.ioError, "\(error)"))
                }
                self.send(sink, answer(frame))
            }
        }
    }

    /// The bytes of batches one answer may carry: what the client asked, at most half a frame
    /// (a read always returns at least one batch, which is far smaller than a frame).
    private func answerLimit(_ requested: UInt32) -> Int {
        min(Int(requested), server.configuration.maxFrameBytes / 2)
    }

    private func handle(_ request: JournalRequest, id: UInt32) async throws -> JournalFrame {
        let version = version.withLock { $0 }
        guard version >= request.minimumVersion else {
            throw JournalError(
                .unsupported,
                "\(request.type) needs protocol \(request.minimumVersion); this connection speaks \(version)")
        }
        switch request {
        case .createShard(let name, let config):
            let info = try await journal.createShard(name, config: config)
            return JournalResponse.ok(id) { $0.writeShardInfo(info, version: version) }
        case .alterShard(let name, let config):
            let info = try await journal.alterShard(name, config: config)
            return JournalResponse.ok(id) { $0.writeShardInfo(info, version: version) }
        case .deleteShard(let name):
            try await journal.deleteShard(name)
            return JournalResponse.ok(id)
        case .describeShard(let name):
            let info = try journal.describeShard(name)
            return JournalResponse.ok(id) { $0.writeShardInfo(info, version: version) }
        case .listShards:
            var shards = journal.listShards()
            if let access = server.configuration.access, let principal = principal.withLock({ $0 }) {
                shards = shards.filter { access.allows(principal, .read, .shard($0.name)) }
            }
            return JournalResponse.ok(id) { payload in
                payload.writeInteger(UInt32(shards.count))
                for shard in shards { payload.writeShardInfo(shard, version: version) }
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
        case .queueDeclare(let name, let definition):
            let status = try await journal.declareQueue(name, definition: definition)
            return try JournalResponse.ok(id, json: status)
        case .queueDelete(let name):
            try await journal.deleteQueue(name)
            return JournalResponse.ok(id)
        case .queueDescribe(let name):
            var queues = name.isEmpty ? try await journal.listQueues() : [try await journal.describeQueue(name)]
            if let access = server.configuration.access, let principal = principal.withLock({ $0 }) {
                queues = queues.filter { access.allows(principal, .read, .queue($0.name)) }
            }
            return try JournalResponse.ok(id, json: queues)
        case .queueReceive(
            let name, let consumer, let max, let maxBytes, let visibility, let options, let priority, let wait):
            let deliveries = try await journal.receive(
                queue: name, consumer: consumer, max: Int(max), maxBytes: answerLimit(maxBytes),
                visibilityMilliseconds: visibility, options: options, priority: priority,
                wait: .milliseconds(Int64(wait)))
            return JournalResponse.ok(id) { $0.writeQueueDeliveries(deliveries) }
        case .queueSettle(let name, let consumer, let settlement, let receipts):
            let count = try await journal.settle(queue: name, consumer: consumer, receipts: receipts, as: settlement)
            return JournalResponse.ok(id) { $0.writeInteger(UInt32(count)) }
        case .queueRelease(let name, let consumer, let keepLeases):
            let count = try await journal.releaseConsumer(queue: name, consumer: consumer, keepingLeases: keepLeases)
            return JournalResponse.ok(id) { $0.writeInteger(UInt32(count)) }
        case .hello, .authenticate, .append, .subscribe, .unsubscribe, .credit:
            throw JournalError(.protocolError, "\(request.type) is not handled here")
        }
    }

    /// Pushes reads to the client, one `records` frame per credit, woken by appends; ends on
    /// unsubscribe, connection end, or an error (sent as `subscriptionEnd`). Each read first
    /// takes its frame's bytes from the budgets; the writer gives them back.
    private func runSubscription(
        id: UInt32, shard: String, offset: UInt64, maxBytes: Int, control: SubscriptionControl,
        first: @Sendable (JournalFrame) -> Answer, sink: Sink
    ) async {
        do {
            _ = try journal.describeShard(shard)
            send(sink, first(JournalResponse.ok(id)))
        } catch {
            subscriptions.withLock { $0[id] = nil }
            send(sink, first(JournalResponse.error(id, error)))
            return
        }
        let journal = self.journal
        let bytes = maxBytes + 256
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var next = offset
                do {
                    while await control.takeCredit() {
                        // Wait for data first, so an idle subscription holds no budget.
                        while try journal.describeShard(shard).endOffset <= next {
                            try Task.checkCancellation()
                            try await journal.waitForData(shard: shard, beyond: next, timeout: nil)
                        }
                        guard await self.reserve(bytes) else { break }
                        var result: ReadResult
                        do {
                            repeat {
                                try Task.checkCancellation()
                                result = try await journal.read(
                                    shard: shard, from: next, maxBytes: maxBytes, maxWait: .seconds(30))
                            } while result.batches.isEmpty
                        } catch {
                            self.release(slot: false, bytes: bytes)
                            throw error
                        }
                        next = result.nextOffset
                        self.send(
                            sink,
                            Answer(
                                frame: JournalFrame(type: .records, correlationID: id, payload: Self.encode(result)),
                                bytes: bytes))
                    }
                } catch is CancellationError {
                } catch let error as JournalError {
                    self.send(sink, Answer(frame: JournalResponse.subscriptionEnd(id, error)))
                } catch {
                    self.send(
                        sink, Answer(frame: JournalResponse.subscriptionEnd(id, JournalError(.ioError, "\(error)"))))
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
