import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import StrataAMQP
import Synchronization

/// `storage-bench amqp`: an AMQP 0-9-1 load generator for any broker (Strata's gateway,
/// RabbitMQ). Publisher i publishes to queue i mod N, consumers take from the queues in turn;
/// the payload carries its send time, so latency is publish → deliver, and with confirms the
/// publish → basic.ack latency is measured too.
struct AMQPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqp",
        abstract: "Measures an AMQP 0-9-1 broker: delivered msg/s, publish → deliver and confirm latency.")

    @Option(help: "Broker URL, amqp://HOST:PORT.") var url: String
    @Option(help: "User name.") var user = "guest"
    @Option(help: "Password.") var password = "guest"
    @Option(help: "Publishing connections.") var publishers = 4
    @Option(help: "Consuming connections.") var consumers = 4
    @Option(help: "Queues (publisher i → queue i mod queues).") var queues = 4
    @Option(help: "Message body bytes (at least 16).") var size = 1024
    @Option(help: "Length of the timed run in seconds.") var seconds: Double = 10
    @Flag(help: "Publisher confirms (each publisher keeps at most --inflight unconfirmed).") var confirms = false
    @Flag(help: "Durable queues and persistent messages (delivery-mode 2).") var persistent = false
    @Option(help: "Unconfirmed publishes per publisher (with --confirms).") var inflight = 256
    @Option(help: "Consumer prefetch (basic.qos); messages are acknowledged one by one.") var prefetch: UInt16 = 256
    @Flag(help: "Consume without acknowledgements (no-ack).") var noAck = false
    @Flag(help: "Print one JSON object per result line.") var json = false

    func validate() throws {
        guard url.hasPrefix("amqp://"), parseHostPort(url.dropFirst("amqp://".count)) != nil else {
            throw ValidationError("--url is amqp://HOST:PORT")
        }
        guard size >= 16, publishers >= 1, consumers >= 0, queues >= 1, inflight >= 1, seconds > 0 else {
            throw ValidationError("check --size (>= 16), --publishers, --queues, --inflight, --seconds")
        }
    }

    func run() async throws {
        let (host, port) = parseHostPort(url.dropFirst("amqp://".count))!
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let names = (0..<queues).map { "bench-\(run)-\($0)" }
        let origin = ContinuousClock.now
        let stats = MQTTBenchStats()
        let confirmLatency = AMQPConfirmLatency()
        let open = { () async throws -> AMQPBenchConnection in
            try await AMQPBenchConnection.open(host: host, port: port, user: user, password: password)
        }
        let setup = try await open()
        for name in names { try await setup.declare(queue: name, durable: persistent) }
        var consumerConnections: [AMQPBenchConnection] = []
        for index in 0..<consumers {
            let connection = try await open()
            try await connection.consume(queue: names[index % queues], prefetch: prefetch, noAck: noAck)
            consumerConnections.append(connection)
        }
        var publisherConnections: [AMQPBenchConnection] = []
        for _ in 0..<publishers {
            let connection = try await open()
            if confirms { try await connection.selectConfirms() }
            publisherConnections.append(connection)
        }
        let meter = ProgressMeter(label: "amqp")
        let started = ContinuousClock.now
        let stop = started.advanced(by: .seconds(seconds))
        let (published, end) = try await meter.reporting {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for consumer in consumerConnections {
                    group.addTask {
                        try await consumer.receive(origin: origin, stats: stats, meter: meter, size: size)
                        return 0
                    }
                }
                for (index, publisher) in publisherConnections.enumerated() {
                    group.addTask {
                        try await publisher.publish(
                            until: stop, queue: names[index % queues], size: size, persistent: persistent,
                            confirms: confirms, inflight: inflight, origin: origin, confirmLatency: confirmLatency)
                    }
                }
                var sent = 0
                for _ in 0..<publishers { sent += try await group.next() ?? 0 }
                let publishedAt = ContinuousClock.now
                let drainDeadline = ContinuousClock.now + .seconds(10)
                while consumers > 0, stats.delivered < sent, ContinuousClock.now < drainDeadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                for connection in consumerConnections + publisherConnections { connection.close() }
                group.cancelAll()
                while (try? await group.next()) != nil {}
                return (sent, max(publishedAt, stats.lastDelivery ?? publishedAt))
            }
        }
        for name in names { try? await setup.delete(queue: name) }
        setup.close()
        let elapsed = (end - started).seconds
        let rate = Double(stats.delivered) / elapsed
        let latency = stats.histogram
        let confirmed = confirmLatency.histogram
        if json {
            var line = JSONLine()
            line.add("mode", "amqp")
            line.add("msgs_per_sec", rate)
            line.add("mb_per_sec", rate * Double(size) / 1e6)
            line.add("p50_us", Int(latency.valueAtPercentile(50)))
            line.add("p99_us", Int(latency.valueAtPercentile(99)))
            line.add("max_us", Int(latency.max))
            line.add("confirm_p50_us", confirms ? Int(confirmed.valueAtPercentile(50)) : 0)
            line.add("confirm_p99_us", confirms ? Int(confirmed.valueAtPercentile(99)) : 0)
            line.add("published", published)
            line.add("delivered", stats.delivered)
            line.add("publishers", publishers)
            line.add("consumers", consumers)
            line.add("queues", queues)
            line.add("size", size)
            line.add("confirms", confirms ? 1 : 0)
            line.add("persistent", persistent ? 1 : 0)
            line.add("seconds", elapsed)
            Swift.print(line.text)
        } else {
            Swift.print(
                """
                amqp: \(publishers) publishers → \(queues) queues → \(consumers) consumers, \(size) B, confirms \(confirms), persistent \(persistent)
                published         \(published) (\(Int(Double(published) / elapsed))/s)
                delivered         \(stats.delivered) (\(Int(rate)) msg/s)
                deliver latency p50 / p99 / max (µs): \(latency.valueAtPercentile(50)) / \(latency.valueAtPercentile(99)) / \(latency.max)
                confirm latency p50 / p99 (µs): \(confirms ? "\(confirmed.valueAtPercentile(50)) / \(confirmed.valueAtPercentile(99))" : "-")
                """)
        }
    }
}

/// One AMQP connection with one channel, driven by the bench (no library: the gateway's codec).
final class AMQPBenchConnection: Sendable {
    /// Frames from the broker into the stream the connection reads.
    final class Inbound: ChannelInboundHandler, Sendable {
        typealias InboundIn = AMQPFrame
        let continuation: AsyncThrowingStream<AMQPFrame, any Error>.Continuation

        init(_ continuation: AsyncThrowingStream<AMQPFrame, any Error>.Continuation) {
            self.continuation = continuation
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            continuation.yield(unwrapInboundIn(data))
        }

        func channelInactive(context: ChannelHandlerContext) {
            continuation.finish()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            continuation.finish(throwing: error)
            context.close(promise: nil)
        }
    }

    /// The frames' iterator; one task reads a connection at a time (its setup, then either
    /// its consumer or its publisher's confirm reader).
    final class Reader: @unchecked Sendable {
        var iterator: AsyncThrowingStream<AMQPFrame, any Error>.AsyncIterator
        init(_ frames: AsyncThrowingStream<AMQPFrame, any Error>) { iterator = frames.makeAsyncIterator() }
    }

    private let channel: any Channel
    private let reader: Reader

    private init(channel: any Channel, frames: AsyncThrowingStream<AMQPFrame, any Error>) {
        self.channel = channel
        reader = Reader(frames)
    }

    static func open(host: String, port: Int, user: String, password: String) async throws -> AMQPBenchConnection {
        let (frames, continuation) = AsyncThrowingStream<AMQPFrame, any Error>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(AMQPFrameDecoder(frameMax: 1 << 20, expectsProtocolHeader: false)),
                        Inbound(continuation),
                    ])
                }
            }
            .connect(host: host, port: port).get()
        var header = ByteBuffer()
        AMQPFrameEncoder.write(.protocolHeader, into: &header)
        try await channel.writeAndFlush(header)
        let connection = AMQPBenchConnection(channel: channel, frames: frames)
        _ = try await connection.expect { if case .connectionStart = $0 { true } else { false } }
        connection.send(
            .connectionStartOk(
                .init(
                    clientProperties: ["product": .string("storage-bench")], mechanism: "PLAIN",
                    response: [0] + Array(user.utf8) + [0] + Array(password.utf8))), channel: 0)
        guard
            case .connectionTune(let tune) = try await connection.expect({
                if case .connectionTune = $0 { true } else { false }
            })
        else { throw BenchError("no connection.tune") }
        let frameMax = min(tune.frameMax == 0 ? 131_072 : tune.frameMax, 131_072)
        connection.send(.connectionTuneOk(.init(channelMax: 1, frameMax: frameMax, heartbeat: 0)), channel: 0)
        connection.send(.connectionOpen(virtualHost: "/"), channel: 0)
        _ = try await connection.expect { if case .connectionOpenOk = $0 { true } else { false } }
        connection.send(.channelOpen, channel: 1)
        _ = try await connection.expect { if case .channelOpenOk = $0 { true } else { false } }
        return connection
    }

    private func send(_ method: AMQPMethod, channel number: UInt16 = 1) {
        var buffer = channel.allocator.buffer(capacity: 128)
        AMQPFrameEncoder.write(.method(channel: number, method), into: &buffer)
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func next() async throws -> AMQPFrame {
        var iterator = reader.iterator
        defer { reader.iterator = iterator }
        guard let frame = try await iterator.next() else { throw BenchError("the broker closed the connection") }
        return frame
    }

    /// The next method the broker sends that `wanted` accepts (a close is an error).
    private func expect(_ wanted: (AMQPMethod) -> Bool) async throws -> AMQPMethod {
        while true {
            guard case .method(_, let method) = try await next() else { continue }
            if case .connectionClose(let close) = method { throw BenchError("connection closed: \(close.replyText)") }
            if case .channelClose(let close) = method { throw BenchError("channel closed: \(close.replyText)") }
            if wanted(method) { return method }
        }
    }

    func declare(queue: String, durable: Bool) async throws {
        var declare = AMQPMethod.QueueDeclare(queue: queue)
        declare.durable = durable
        send(.queueDeclare(declare))
        _ = try await expect { if case .queueDeclareOk = $0 { true } else { false } }
    }

    func delete(queue: String) async throws {
        send(.queueDelete(queue: queue, ifUnused: false, ifEmpty: false, noWait: false))
        _ = try await expect { if case .queueDeleteOk = $0 { true } else { false } }
    }

    func selectConfirms() async throws {
        send(.confirmSelect(noWait: false))
        _ = try await expect { if case .confirmSelectOk = $0 { true } else { false } }
    }

    func consume(queue: String, prefetch: UInt16, noAck: Bool) async throws {
        send(.basicQos(prefetchSize: 0, prefetchCount: prefetch, global: false))
        _ = try await expect { if case .basicQosOk = $0 { true } else { false } }
        var consume = AMQPMethod.BasicConsume(queue: queue)
        consume.noAck = noAck
        self.noAck.withLock { $0 = noAck }
        send(.basicConsume(consume))
        _ = try await expect { if case .basicConsumeOk = $0 { true } else { false } }
    }

    private let noAck = Mutex(false)

    /// Takes deliveries until closed: each body starts with its send time (ns since `origin`).
    func receive(origin: ContinuousClock.Instant, stats: MQTTBenchStats, meter: ProgressMeter, size: Int) async throws {
        let noAck = self.noAck.withLock { $0 }
        var tag: UInt64 = 0
        var pendingBody = ByteBuffer()
        var expecting = 0
        while true {
            let frame: AMQPFrame
            do { frame = try await next() } catch { return }
            switch frame {
            case .method(_, .basicDeliver(let deliver)):
                tag = deliver.deliveryTag
                pendingBody.clear()
            case .header(_, let header):
                expecting = Int(header.bodySize)
            case .body(_, var piece):
                pendingBody.writeBuffer(&piece)
                guard pendingBody.readableBytes == expecting else { continue }
                let now = ContinuousClock.now
                if let sent: UInt64 = pendingBody.getInteger(at: pendingBody.readerIndex) {
                    stats.record(latency: now - (origin + .nanoseconds(Int64(sent))), at: now)
                }
                meter.add(records: 1, bytes: size)
                if !noAck { send(.basicAck(deliveryTag: tag, multiple: false)) }
            case .method(_, .connectionClose), .method(_, .channelClose):
                return
            default:
                continue
            }
        }
    }

    /// Publishes until `stop`; returns how many were published (and, with confirms, confirmed).
    func publish(
        until stop: ContinuousClock.Instant, queue: String, size: Int, persistent: Bool, confirms: Bool, inflight: Int,
        origin: ContinuousClock.Instant, confirmLatency: AMQPConfirmLatency
    ) async throws -> Int {
        let window = AMQPBenchWindow(limit: confirms ? inflight : Int.max)
        let reader: Task<Void, any Error>? =
            confirms
            ? Task {
                while true {
                    let frame = try await self.next()
                    switch frame {
                    case .method(_, .basicAck(let tag, let multiple)), .method(_, .basicNack(let tag, let multiple, _)):
                        let sentTimes = window.confirm(upTo: tag, multiple: multiple)
                        let now = ContinuousClock.now
                        confirmLatency.record(sentTimes.map { now - $0 })
                    case .method(_, .connectionClose), .method(_, .channelClose):
                        throw BenchError("the broker closed the publisher's channel")
                    default: continue
                    }
                }
            } : nil
        let properties = AMQPProperties(deliveryMode: persistent ? 2 : 1)
        var body = ByteBuffer(repeating: 0x61, count: size)
        var published = 0
        while ContinuousClock.now < stop {
            await window.acquire()
            let now = ContinuousClock.now
            body.setInteger(UInt64((now - origin).nanoseconds), at: 0)
            var buffer = channel.allocator.buffer(capacity: size + 128)
            AMQPFrameEncoder.write(
                .method(channel: 1, .basicPublish(.init(exchange: "", routingKey: queue))), into: &buffer)
            AMQPFrameEncoder.write(
                .header(channel: 1, AMQPContentHeader(bodySize: UInt64(size), properties: properties)), into: &buffer)
            AMQPFrameEncoder.write(.body(channel: 1, body), into: &buffer)
            window.sent(at: now)
            try await channel.writeAndFlush(buffer)
            published += 1
        }
        if confirms {
            let deadline = ContinuousClock.now + .seconds(10)
            while window.outstanding > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            reader?.cancel()
        }
        return published
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Publishes not confirmed yet: their send times by sequence number, and a waiter for room.
final class AMQPBenchWindow: Sendable {
    private struct State {
        var sentAt: [UInt64: ContinuousClock.Instant] = [:]
        var nextSequence: UInt64 = 1
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    var outstanding: Int { state.withLock { $0.sentAt.count } }

    func acquire() async {
        await withCheckedContinuation { waiter in
            let ready = state.withLock { state -> Bool in
                if state.sentAt.count < limit { return true }
                state.waiter = waiter
                return false
            }
            if ready { waiter.resume() }
        }
    }

    func sent(at instant: ContinuousClock.Instant) {
        guard limit != Int.max else { return }
        state.withLock { state in
            state.sentAt[state.nextSequence] = instant
            state.nextSequence += 1
        }
    }

    /// The send times of the publishes an ack (or nack) answers.
    func confirm(upTo tag: UInt64, multiple: Bool) -> [ContinuousClock.Instant] {
        let (times, waiter) = state.withLock {
            state -> ([ContinuousClock.Instant], CheckedContinuation<Void, Never>?) in
            var times: [ContinuousClock.Instant] = []
            if multiple {
                for (sequence, sent) in state.sentAt where sequence <= tag {
                    times.append(sent)
                    state.sentAt[sequence] = nil
                }
            } else if let sent = state.sentAt.removeValue(forKey: tag) {
                times.append(sent)
            }
            let waiter = state.waiter
            state.waiter = nil
            return (times, waiter)
        }
        waiter?.resume()
        return times
    }
}

/// Publish → confirm latencies of all publishers.
final class AMQPConfirmLatency: Sendable {
    private let state = Mutex(Histogram<UInt64>.latency())

    func record(_ latencies: [Duration]) {
        state.withLock { histogram in for latency in latencies { histogram.record(latency: latency) } }
    }

    var histogram: Histogram<UInt64> { state.withLock { $0 } }
}
