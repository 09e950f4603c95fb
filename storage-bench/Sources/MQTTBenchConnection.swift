import NIOCore
import NIOPosix
import StrataMQTT
import Synchronization

/// One MQTT connection of the load generator (a small client on StrataMQTT's codec).
final class MQTTBenchConnection: Sendable {
    let channel: any Channel
    let version: MQTTProtocolVersion
    private let handler: NIOLoopBound<BenchHandler>

    /// Routes packets from the broker to whoever waits for them (on the event loop).
    final class BenchHandler: ChannelInboundHandler {
        typealias InboundIn = MQTTPacket
        var onPacket: (MQTTPacket) -> Void = { _ in }
        var onClose: () -> Void = {}

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            onPacket(unwrapInboundIn(data))
        }

        func channelInactive(context: ChannelHandlerContext) {
            onClose()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private init(channel: any Channel, version: MQTTProtocolVersion, handler: NIOLoopBound<BenchHandler>) {
        self.channel = channel
        self.version = version
        self.handler = handler
    }

    static func open(
        host: String, port: Int, version: MQTTProtocolVersion, clientID: String, username: String?, password: [UInt8]?
    ) async throws -> MQTTBenchConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(MQTTDecoder(version: version, maxPacketSize: 1 << 24)), BenchHandler(),
                    ])
                }
            }
            .connect(host: host, port: port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: BenchHandler.self), eventLoop: channel.eventLoop)
        }.get()
        let connection = MQTTBenchConnection(channel: channel, version: version, handler: handler)
        let connack = try await connection.request(
            .connect(
                .init(
                    version: version, clientID: clientID, cleanStart: true, keepAlive: 60, username: username,
                    password: password))
        ) { if case .connack = $0 { true } else { false } }
        guard case .connack(let ack) = connack, ack.reasonCode == 0 else {
            throw BenchError("the broker refused the connection: \(connack)")
        }
        return connection
    }

    private func bytes(_ packet: MQTTPacket) -> ByteBuffer {
        var buffer = channel.allocator.buffer(capacity: 64)
        packet.write(version: version, into: &buffer)
        return buffer
    }

    /// Sends `packet` and waits for the first answer `matches` accepts.
    private func request(_ packet: MQTTPacket, matches: @escaping @Sendable (MQTTPacket) -> Bool) async throws
        -> MQTTPacket
    {
        let answer = channel.eventLoop.makePromise(of: MQTTPacket.self)
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.onPacket = { if matches($0) { answer.succeed($0) } }
            handler.value.onClose = { answer.fail(BenchError("the broker closed the connection")) }
        }
        channel.writeAndFlush(bytes(packet), promise: nil)
        return try await answer.futureResult.get()
    }

    func subscribe(_ filter: String, qos: UInt8) async throws {
        let suback = try await request(
            .subscribe(.init(packetID: 1, subscriptions: [.init(filter: filter, qos: qos)]))
        ) { if case .suback = $0 { true } else { false } }
        guard case .suback(let ack) = suback, ack.reasonCodes.first.map({ $0 < 0x80 }) == true else {
            throw BenchError("the broker refused the subscription: \(suback)")
        }
    }

    /// Receives until the connection closes: records latency, acknowledges QoS 1/2.
    func receive(origin: ContinuousClock.Instant, stats: MQTTBenchStats, meter: ProgressMeter) async throws {
        let closed = channel.eventLoop.makePromise(of: Void.self)
        let handler = self.handler
        let version = self.version
        let channel = self.channel
        try await channel.eventLoop.submit {
            handler.value.onClose = { closed.succeed() }
            handler.value.onPacket = { packet in
                switch packet {
                case .publish(let publish):
                    let now = ContinuousClock.now
                    if let sent: UInt64 = publish.payload.getInteger(at: publish.payload.readerIndex) {
                        stats.record(latency: now - (origin + .nanoseconds(Int64(sent))), at: now)
                        meter.add(records: 1, bytes: publish.payload.readableBytes)
                    }
                    guard let id = publish.packetID else { return }
                    var out = channel.allocator.buffer(capacity: 8)
                    (publish.qos == 1 ? MQTTPacket.puback(.init(packetID: id)) : .pubrec(.init(packetID: id)))
                        .write(version: version, into: &out)
                    channel.writeAndFlush(out, promise: nil)
                case .pubrel(let ack):
                    var out = channel.allocator.buffer(capacity: 8)
                    MQTTPacket.pubcomp(.init(packetID: ack.packetID)).write(version: version, into: &out)
                    channel.writeAndFlush(out, promise: nil)
                default:
                    break
                }
            }
        }.get()
        try await closed.futureResult.get()
    }

    /// Publishes round robin over `topics` until `deadline`, at most `perSecond` messages a second
    /// when given; returns how many it sent.
    func publishUntil(
        _ deadline: ContinuousClock.Instant, topics: [String], first: Int, qos: UInt8, size: Int, inflight: Int,
        origin: ContinuousClock.Instant, perSecond: Double? = nil
    ) async throws -> Int {
        let window = BenchWindow(size: inflight)
        let handler = self.handler
        let version = self.version
        let channel = self.channel
        try await channel.eventLoop.submit {
            handler.value.onClose = { window.fail() }
            handler.value.onPacket = { packet in
                switch packet {
                case .puback(let ack), .pubcomp(let ack):
                    _ = ack
                    window.release()
                case .pubrec(let ack):
                    var out = channel.allocator.buffer(capacity: 8)
                    MQTTPacket.pubrel(.init(packetID: ack.packetID)).write(version: version, into: &out)
                    channel.writeAndFlush(out, promise: nil)
                default:
                    break
                }
            }
        }.get()
        var sent = 0
        var packetID: UInt16 = 0
        let padding = [UInt8](repeating: 0x61, count: size - 8)
        let start = ContinuousClock.now
        while ContinuousClock.now < deadline {
            if let perSecond {
                let due = start + .seconds(Double(sent) / perSecond)
                if due > ContinuousClock.now { try await Task.sleep(until: min(due, deadline)) }
            }
            if qos > 0 { guard await window.acquire() else { break } }
            var payload = channel.allocator.buffer(capacity: size)
            payload.writeInteger(UInt64((ContinuousClock.now - origin).nanoseconds))
            payload.writeBytes(padding)
            packetID = packetID == .max ? 1 : packetID + 1
            let publish = MQTTPacket.publish(
                .init(
                    topic: topics[(first + sent) % topics.count], qos: qos, packetID: qos > 0 ? packetID : nil,
                    payload: payload))
            sent += 1
            if qos == 0 && sent % 64 == 0 {
                // QoS 0 has no window: every 64 messages wait for the socket to take them.
                let written = channel.eventLoop.makePromise(of: Void.self)
                channel.writeAndFlush(bytes(publish), promise: written)
                try await written.futureResult.get()
            } else {
                channel.writeAndFlush(bytes(publish), promise: nil)
            }
        }
        if qos > 0 { await window.drain(timeout: .seconds(5)) }
        return sent
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// The QoS 1/2 window of one publisher: `acquire` waits while `size` publishes are unacknowledged.
final class BenchWindow: Sendable {
    private struct State {
        var available: Int
        var waiter: CheckedContinuation<Bool, Never>?
        var failed = false
    }

    private let state: Mutex<State>
    private let size: Int

    init(size: Int) {
        self.size = size
        state = Mutex(State(available: size))
    }

    func acquire() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let now = state.withLock { state -> Bool? in
                if state.failed { return false }
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiter = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.available += 1
            return nil
        }
        waiter?.resume(returning: true)
    }

    func fail() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.failed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
    }

    /// Waits (polling the count, at most `timeout`) until every publish was acknowledged.
    func drain(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLock({ $0.available == size || $0.failed }) { return }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
