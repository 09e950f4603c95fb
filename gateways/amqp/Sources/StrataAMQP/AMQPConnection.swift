import Foundation
import Logging
import NIOCore
import NIOSSL
import StrataAuth
import StrataClient
import StrataJournal
import StrataKit
import StrataTopics

/// The channel closed (the connection failed) while one of its methods waited: nothing is left
/// to answer.
struct AMQPChannelGone: Error {}

/// A delivery as the gateway settles it: the AMQP queue and the journal's receipt.
struct AMQPDelivery: Sendable, Hashable {
    var queue: String
    var receipt: QueueReceipt
}

/// One client connection: frames through `AMQPConnectionState`, methods carried out on the
/// virtual host and the journal, consumers fed from the journal's queues. Writes go straight to
/// the channel in the order they are made; each message (method, header, body frames) is one
/// write, so other channels' frames never come between its frames.
actor AMQPConnection {
    final class Channel {
        var state = AMQPChannelState<AMQPDelivery>()
        /// Running consumers by tag.
        var consumers: [String: Task<Void, Never>] = [:]
        var flowActive = true
        /// The queues this channel holds leases in (released when it closes).
        var queues: Set<String> = []
        /// The journal consumer name of this channel's leases.
        var leaseName: String
        /// tx mode: what commit stores and settles.
        var pendingPublishes: [AMQPStore] = []
        var pendingSettlements: [(settled: [AMQPChannelState<AMQPDelivery>.Settlement], as: QueueSettlement)] = []
        /// Consumers waiting for credit (an ack, a qos change, flow on).
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// Cancelled consumers of single-active-consumer queues whose task has not ended, by
        /// queue: the channel's next consumer of the queue waits for them, so what their last
        /// receive took goes back to the queue before it receives (and order is kept).
        var draining: [String: Int] = [:]
        /// Messages its consumers' receives under way may bring (the channel's prefetch counts
        /// them, so two consumers cannot together pass a global prefetch-count).
        var reserved = 0
        /// This channel's publishes whose appends are not answered yet, and the methods waiting
        /// for them: the channel's next method waits, so a message published on a channel is in
        /// its queues before anything after it on that channel is carried out (as in RabbitMQ).
        var unstored = 0
        var storedWaiters: [CheckedContinuation<Void, Never>] = []
        /// basic.ack's settlements not written yet, and the task writing them: acknowledgements
        /// have no answer, so they are written behind the client's next frames, all that came
        /// in meanwhile in one settle per queue.
        var pendingAcks: [AMQPDelivery] = []
        var ackWriter: Task<Void, Never>?

        init(leaseName: String) { self.leaseName = leaseName }
    }

    /// A publish whose appends were answered: confirmed (or its failure handled) by
    /// `takeAnswers`, which takes every answer that came in meanwhile in one turn of the actor.
    private struct Answer {
        var number: UInt16
        var lease: String
        var sequence: UInt64?
        /// Every append succeeded.
        var stored: Bool
        /// No full reject-publish queue refused the message.
        var accepted: Bool
    }
    private let answers = PendingBatch<Answer>()

    private let gateway: AMQPGateway
    private let channel: NIOAsyncChannel<AMQPFrame, ByteBuffer>
    private let writer: CoalescingWriter
    private let number: UInt64
    private let logger: Logger
    private var state: AMQPConnectionState
    private var channels: [UInt16: Channel] = [:]
    private var host: AMQPVirtualHost?
    private var access = AMQPAccess(nil, user: "", virtualHost: "")
    private var exclusiveQueues: Set<String> = []
    private var lastReceived = ContinuousClock.now
    private var heartbeat: Task<Void, Never>?
    private var generation: UInt64 = 0
    private var closed = false
    /// The client announced the `connection.blocked` capability.
    private var wantsBlocked = false
    /// connection.blocked was sent and not yet followed by unblocked.
    private var blockedSent = false
    /// The node's alarm as last heard (nil: none), and the publish held until it ends.
    private var alarm: String?
    private var heldPublisher: CheckedContinuation<Void, Never>?

    init(gateway: AMQPGateway, channel: NIOAsyncChannel<AMQPFrame, ByteBuffer>, number: UInt64, secure: Bool) {
        self.gateway = gateway
        self.channel = channel
        writer = CoalescingWriter(channel.channel)
        self.number = number
        logger = gateway.logger
        state = AMQPConnectionState(limits: gateway.limits(secure: secure))
    }

    /// The owner name of this connection's exclusive queues.
    private var name: String { "\(gateway.instance)/\(number)" }
    private var virtualHost: String { state.virtualHost ?? "/" }

    func run() async {
        let registered = gateway.opened(number) { [weak self] in Task { await self?.shutDown() } }
        if !registered { shutDown() }
        // A publish held by the alarm must not outlive the socket.
        channel.channel.closeFuture.whenComplete { [weak self] _ in Task { await self?.socketClosed() } }
        do {
            try await channel.executeThenClose { inbound, _ in
                do {
                    for try await frame in inbound {
                        lastReceived = .now
                        await perform(state.receive(frame))
                        if closed { break }
                    }
                } catch is AMQPFrameDecoder.WrongProtocolHeader {
                    // §4.2.2: answer with the header this server speaks, then close.
                    var buffer = ByteBuffer()
                    AMQPFrameEncoder.write(.protocolHeader, into: &buffer)
                    write(buffer)
                    await writer.flushed()
                } catch let error as AMQPError {
                    await perform(state.close(error))
                    await flushThenWait()
                }
            }
        } catch {
            logger.debug("amqp connection ended", metadata: ["error": "\(error)"])
        }
        await perform(state.connectionLost())
        await finish()
    }

    // MARK: Actions

    private func perform(_ actions: [AMQPConnectionState.Action]) async {
        for action in actions {
            switch action {
            case .send(let frame):
                write(frame)
            case .authenticate(let mechanism, let response, let clientProperties):
                if case .table(let capabilities)? = clientProperties["capabilities"] {
                    wantsBlocked = capabilities["connection.blocked"]?.boolValue ?? false
                }
                do {
                    var principal: String?
                    if mechanism == "EXTERNAL",
                        let certificate = try? await channel.channel.nioSSL_peerCertificate().get()
                    {
                        principal = TLSFiles.commonName(of: certificate)
                    }
                    if let user = try gateway.authenticate(
                        mechanism: mechanism, response: response, principal: principal)
                    {
                        await perform(state.authenticated(user: user))
                    } else {
                        await perform(
                            state.authenticationFailed(
                                "ACCESS_REFUSED - Login was refused using authentication mechanism \(mechanism)"))
                    }
                } catch {
                    await perform(state.authenticationFailed(error.text))
                }
            case .tuned(let tune):
                startHeartbeat(seconds: tune.heartbeat)
            case .openVirtualHost(let name):
                let user = state.user ?? ""
                do {
                    if let host = try await gateway.open(virtualHost: name, user: user) {
                        self.host = host
                        access = AMQPAccess(
                            gateway.configuration.permissions?.rule(virtualHost: name, user: user), user: user,
                            virtualHost: name)
                        await perform(state.virtualHostOpened(name))
                        gateway.watchAlarm(number) { [weak self] reason in
                            Task { await self?.alarmChanged(reason) }
                        }
                    } else {
                        await perform(
                            state.virtualHostRefused(
                                "NOT_ALLOWED - access to vhost '\(name)' refused for user '\(user)'"))
                    }
                } catch {
                    await perform(state.close(AMQPError(AMQPError.internalError, "INTERNAL_ERROR - \(error)")))
                }
            case .method(let number, let method):
                do {
                    try await carryOut(method, on: number)
                } catch is AMQPChannelGone {
                    continue
                } catch let error as AMQPError {
                    await perform(state.failed(channel: number, error.on(method)))
                } catch {
                    logger.warning("amqp method failed", metadata: ["method": "\(method.name)", "error": "\(error)"])
                    await perform(
                        state.failed(
                            channel: number,
                            AMQPError(AMQPError.internalError, "INTERNAL_ERROR - \(error)").on(method)))
                }
            case .publish(let number, let publication):
                if alarm != nil {
                    // RabbitMQ's resource alarm: a publishing connection is not read from until
                    // the alarm ends (TCP pushes back on the client); its heartbeats are not
                    // judged meanwhile.
                    await withCheckedContinuation { heldPublisher = $0 }
                    lastReceived = .now
                    if closed { return }
                }
                do {
                    try await publish(publication, on: number)
                } catch is AMQPChannelGone {
                    continue
                } catch let error as AMQPError {
                    await perform(state.failed(channel: number, error.on(classID: 60, methodID: 40)))
                } catch {
                    await perform(
                        state.failed(
                            channel: number,
                            AMQPError(AMQPError.internalError, "INTERNAL_ERROR - \(error)", classID: 60, methodID: 40)))
                }
            case .flow(let number, let active):
                channels[number]?.flowActive = active
                wake(number)
            case .channelClosed(let number):
                await closeChannel(number)
            case .closeConnection:
                closed = true
                await flushThenWait()
                channel.channel.close(promise: nil)
            }
        }
        if state.phase == .closing {
            // The client has a moment to answer the server's connection.close.
            scheduleCloseTimeout()
        }
    }

    private var closeTimeout: Task<Void, Never>?

    private func scheduleCloseTimeout() {
        guard closeTimeout == nil else { return }
        let channel = self.channel.channel
        closeTimeout = Task {
            try? await Task.sleep(for: .seconds(2))
            channel.close(promise: nil)
        }
    }

    private func write(_ frame: AMQPFrame) {
        var buffer = channel.channel.allocator.buffer(capacity: 64)
        AMQPFrameEncoder.write(frame, into: &buffer)
        writer.write(buffer)
    }

    private func write(_ buffer: ByteBuffer) { writer.write(buffer) }

    private func send(_ method: AMQPMethod, on number: UInt16) { write(.method(channel: number, method)) }

    /// Waits until what was written is on its way (before closing).
    private func flushThenWait() async { await writer.flushed() }

    // MARK: Heartbeats and leases

    private func startHeartbeat(seconds: UInt16) {
        let lease = gateway.configuration.leaseMilliseconds
        let interval: Duration = seconds > 0 ? .milliseconds(Int(seconds) * 500) : .milliseconds(Int(lease / 3))
        heartbeat = Task { [weak self] in
            var sinceRenewal: Duration = .zero
            while !Task.isCancelled {
                try? await Task.sleep(for: min(interval, .milliseconds(Int(lease / 3))))
                guard let self else { return }
                sinceRenewal += min(interval, .milliseconds(Int(lease / 3)))
                if seconds > 0 { await self.beat(seconds: seconds) }
                if sinceRenewal >= .milliseconds(Int(lease / 3)) {
                    sinceRenewal = .zero
                    await self.renewLeases()
                }
            }
        }
    }

    /// Sends a heartbeat; a client silent for two heartbeat periods is gone.
    private func beat(seconds: UInt16) async {
        guard !closed else { return }
        if heldPublisher == nil, ContinuousClock.now - lastReceived > .seconds(2 * Int(seconds)) {
            logger.info("amqp client missed its heartbeats", metadata: ["amqp.connection": "\(name)"])
            closed = true
            channel.channel.close(promise: nil)
            return
        }
        write(.heartbeat)
    }

    /// Keeps the leases of every unacknowledged delivery alive.
    private func renewLeases() async {
        let lease = gateway.configuration.leaseMilliseconds
        for (_, channel) in channels {
            // What the client holds, and what it acknowledged inside an open transaction (its
            // ack takes effect at commit, which may come later than one lease).
            let held = channel.state.unackedHandles + channel.pendingSettlements.flatMap { $0.settled.map(\.handle) }
            let byQueue = Dictionary(grouping: held, by: \.queue)
            for (queue, handles) in byQueue {
                _ = try? await gateway.journal.settle(
                    queue: AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue),
                    consumer: channel.leaseName, receipts: handles.map(\.receipt),
                    as: .extend(visibilityMilliseconds: lease))
            }
        }
    }

    // MARK: Channels

    private func openedChannel(_ number: UInt16) -> Channel {
        if let existing = channels[number] { return existing }
        generation += 1
        let channel = Channel(leaseName: "amqp/\(name)/\(number).\(generation)")
        channels[number] = channel
        return channel
    }

    private func wake(_ number: UInt16) {
        guard let waiters = channels[number]?.waiters, !waiters.isEmpty else { return }
        channels[number]!.waiters = []
        for waiter in waiters { waiter.resume() }
    }

    /// The channel is gone: its consumers stop and every message it held goes back to its queue.
    private func closeChannel(_ number: UInt16) async {
        guard let tasks = channels[number]?.consumers else { return }
        // Nothing is delivered on the channel from here on (this runs before anything else of
        // the connection can, and before the client's close is answered), and its publishes are
        // stored before it is.
        channels[number]!.consumers = [:]
        for task in tasks.values { task.cancel() }
        await publishesStored(number)
        await writeAcks(number)
        guard let closing = channels.removeValue(forKey: number) else { return }
        for waiter in closing.waiters { waiter.resume() }
        for tag in tasks.keys {
            if let consumer = closing.state.consumers[tag] { await consumerEnded(queue: consumer.queue) }
        }
        for queue in closing.queues {
            _ = try? await gateway.journal.releaseConsumer(
                queue: AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue), consumer: closing.leaseName)
        }
    }

    /// The node's alarm (disk reserve reached, fail-stop) began or ended: connection.blocked or
    /// unblocked, for clients that announced the capability (RabbitMQ's resource alarms).
    func alarmChanged(_ reason: String?) {
        alarm = reason
        if reason == nil, let held = heldPublisher {
            heldPublisher = nil
            held.resume()
        }
        guard wantsBlocked, !closed, state.phase == .open else { return }
        if let reason, !blockedSent {
            blockedSent = true
            send(.connectionBlocked(reason: String(reason.utf8.prefix(250)) ?? "low on disk"), on: 0)
        } else if reason == nil, blockedSent {
            blockedSent = false
            send(.connectionUnblocked, on: 0)
        }
    }

    /// The gateway is shutting down: connection.close 320 (RabbitMQ's words), a moment for
    /// close-ok, then the connection ends (its channels and leases released).
    private func shutDown() {
        guard !closed, state.phase != .closing, state.phase != .closed else { return }
        let actions = state.close(
            AMQPError(
                AMQPError.connectionForced,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"))
        Task { await self.perform(actions) }
    }

    private func socketClosed() {
        closed = true
        heldPublisher?.resume()
        heldPublisher = nil
    }

    private func finish() async {
        gateway.ended(number)
        gateway.unwatchAlarm(number)
        heldPublisher?.resume()
        heldPublisher = nil
        heartbeat?.cancel()
        closeTimeout?.cancel()
        for number in Array(channels.keys) { await closeChannel(number) }
        // Exclusive queues go with their connection.
        for queue in exclusiveQueues { try? await deleteQueue(queue) }
    }

    private func consumerEnded(queue: String) async {
        guard await gateway.removeConsumer(virtualHost: virtualHost, queue: queue) else { return }
        guard let host, let record = await host.state.queues[queue] else { return }
        try? await gateway.markUsed(virtualHost: virtualHost, queue: queue, arguments: record.parsed)
        if record.autoDelete { try? await deleteQueue(queue) }
    }

    // MARK: Methods

    /// basic.consume's x-priority: an integer (RabbitMQ's default 0); a consumer of a lower
    /// priority gets messages only while those above it have no room (prefetch full, flow off).
    static func consumerPriority(_ arguments: AMQPTable, singleActive: Bool) throws(AMQPError) -> Int32 {
        guard let value = arguments["x-priority"] else { return 0 }
        guard let number = value.integerValue, let priority = Int32(exactly: number) else {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - invalid arg 'x-priority': \(value), expected an integer",
                classID: 60, methodID: 20)
        }
        if singleActive, priority != 0 {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - consumer priorities on a single-active-consumer queue are not implemented by Strata yet",
                classID: 60, methodID: 20)
        }
        return priority
    }

    /// After a suspension: the channel (this generation of it, `lease`) is still open.
    private func live(_ number: UInt16, _ lease: String? = nil) throws {
        guard let channel = channels[number], lease == nil || channel.leaseName == lease else {
            throw AMQPChannelGone()
        }
    }

    private func requireHost() throws(AMQPError) -> AMQPVirtualHost {
        guard let host else { throw AMQPError(AMQPError.commandInvalid, "COMMAND_INVALID - no virtual host open") }
        return host
    }

    private func carryOut(_ method: AMQPMethod, on number: UInt16) async throws {
        let lease = openedChannel(number).leaseName
        await publishesStored(number)
        try live(number, lease)
        let host = try requireHost()
        switch method {
        case .exchangeDeclare(let declare):
            try await declareExchange(declare, host)
            if !declare.noWait { send(.exchangeDeclareOk, on: number) }
        case .exchangeDelete(let exchange, let ifUnused, let noWait):
            try access.check(.configure, "exchange", exchange, classID: 40, methodID: 20)
            try await host.change { state throws(AMQPError) in
                try state.routing.deleteExchange(exchange, ifUnused: ifUnused)
            }
            if !noWait { send(.exchangeDeleteOk, on: number) }
        case .exchangeBind(let bind), .exchangeUnbind(let bind):
            try Self.checkBindingArguments(bind.arguments)
            let binding = bind
            try access.check(.write, "exchange", bind.destination, classID: 40, methodID: 30)
            try access.check(.read, "exchange", bind.source, classID: 40, methodID: 30)
            let isBind = if case .exchangeBind = method { true } else { false }
            try await host.change { state throws(AMQPError) in
                let value = AMQPRouting.Binding(
                    destination: .exchange(binding.destination), routingKey: binding.routingKey,
                    arguments: binding.arguments)
                if isBind {
                    try state.routing.bind(value, from: binding.source)
                } else {
                    try state.routing.unbind(value, from: binding.source)
                }
            }
            if !bind.noWait { send(isBind ? .exchangeBindOk : .exchangeUnbindOk, on: number) }
        case .queueDeclare(let declare):
            let (queue, messages, consumers) = try await declareQueue(declare, host)
            if !declare.noWait {
                send(.queueDeclareOk(queue: queue, messageCount: messages, consumerCount: consumers), on: number)
            }
        case .queueBind(let bind), .queueUnbind(let bind):
            try Self.checkBindingArguments(bind.arguments)
            let isBind = if case .queueBind = method { true } else { false }
            let binding = bind
            try access.check(.write, "queue", bind.queue, classID: 50, methodID: 20)
            try access.check(.read, "exchange", bind.exchange, classID: 50, methodID: 20)
            try await checkOwner(bind.queue, host)
            try await host.change { state throws(AMQPError) in
                let value = AMQPRouting.Binding(
                    destination: .queue(binding.queue), routingKey: binding.routingKey, arguments: binding.arguments)
                if isBind {
                    try state.routing.bind(value, from: binding.exchange)
                } else {
                    try state.routing.unbind(value, from: binding.exchange)
                }
            }
            if isBind {
                if !bind.noWait { send(.queueBindOk, on: number) }
            } else {
                send(.queueUnbindOk, on: number)
            }
        case .queuePurge(let queue, let noWait):
            try access.check(.read, "queue", queue, classID: 50, methodID: 30)
            try await checkOwner(queue, host)
            let purged = try await purge(queue, host)
            if !noWait { send(.queuePurgeOk(messageCount: purged), on: number) }
        case .queueDelete(let queue, let ifUnused, let ifEmpty, let noWait):
            try access.check(.configure, "queue", queue, classID: 50, methodID: 40)
            guard await host.state.queues[queue] != nil else {
                // Deleting a queue that is not there succeeds, as in RabbitMQ 3.x.
                if !noWait { send(.queueDeleteOk(messageCount: 0), on: number) }
                return
            }
            try await checkOwner(queue, host)
            if ifUnused, try await gateway.consumerCount(virtualHost: virtualHost, queue: queue) > 0 {
                throw AMQPError(
                    AMQPError.preconditionFailed,
                    "PRECONDITION_FAILED - queue '\(queue)' in vhost '\(virtualHost)' in use")
            }
            let messages = try await gateway.messageCount(
                virtualHost: virtualHost, queue: queue,
                trim: await host.state.queues[queue]?.parsed.dropsHead ?? false)
            if ifEmpty, messages > 0 {
                throw AMQPError(
                    AMQPError.preconditionFailed,
                    "PRECONDITION_FAILED - queue '\(queue)' in vhost '\(virtualHost)' is not empty")
            }
            try await deleteQueue(queue)
            if !noWait { send(.queueDeleteOk(messageCount: messages), on: number) }
        case .basicQos(let size, let count, let global):
            try channels[number]!.state.qos(prefetchSize: size, prefetchCount: count, global: global)
            send(.basicQosOk, on: number)
            wake(number)
        case .basicConsume(let consume):
            try await startConsumer(consume, on: number, host)
        case .basicCancel(let tag, let noWait):
            if let consumer = channels[number]!.state.cancel(tag: tag) {
                let task = channels[number]!.consumers.removeValue(forKey: tag)
                task?.cancel()
                wake(number)
                if let task, consumer.singleActive, channels[number]!.state.consumes(from: consumer.queue) {
                    channels[number]!.draining[consumer.queue, default: 0] += 1
                    let lease = channels[number]!.leaseName
                    Task {
                        await task.value
                        self.drained(consumer.queue, on: number, lease: lease)
                    }
                }
                if !channels[number]!.state.consumes(from: consumer.queue) {
                    // The channel no longer consumes from the queue: a single active consumer's
                    // successor takes over, consumers of a lower priority need not wait for this
                    // one; what the channel holds stays its own to acknowledge, as in RabbitMQ.
                    _ = try? await gateway.journal.releaseConsumer(
                        queue: AMQPGateway.journalQueue(virtualHost: virtualHost, queue: consumer.queue),
                        consumer: channels[number]?.leaseName ?? "", keepingLeases: true)
                }
                await consumerEnded(queue: consumer.queue)
            }
            if !noWait { send(.basicCancelOk(consumerTag: tag), on: number) }
        case .basicGet(let queue, let noAck):
            try await get(queue, noAck: noAck, on: number, host)
        case .basicAck(let tag, let multiple):
            let settled = try channels[number]!.state.settle(tag: tag, multiple: multiple, methodID: 80)
            try await settle(settled, as: .ack, on: number)
        case .basicReject(let tag, let requeue):
            let settled = try channels[number]!.state.settle(tag: tag, multiple: false, methodID: 90)
            try await settle(settled, as: requeue ? .requeue(delayMilliseconds: 0) : .reject, on: number)
        case .basicNack(let tag, let multiple, let requeue):
            let settled = try channels[number]!.state.settle(tag: tag, multiple: multiple, methodID: 120)
            try await settle(settled, as: requeue ? .requeue(delayMilliseconds: 0) : .reject, on: number)
        case .basicRecover(let requeue), .basicRecoverAsync(let requeue):
            guard requeue else {
                throw AMQPError(AMQPError.notImplemented, "NOT_IMPLEMENTED - requeue=false")
            }
            let settled = channels[number]!.state.takeAllUnacked()
            try await release(settled, on: number)
            if case .basicRecover = method { send(.basicRecoverOk, on: number) }
        case .confirmSelect(let noWait):
            try channels[number]!.state.selectConfirms()
            if !noWait { send(.confirmSelectOk, on: number) }
        case .txSelect:
            try channels[number]!.state.selectTransactions()
            send(.txSelectOk, on: number)
        case .txCommit:
            try requireTransaction(number, methodID: 20)
            try await commit(on: number)
            send(.txCommitOk, on: number)
        case .txRollback:
            try requireTransaction(number, methodID: 30)
            let rolledBack = channels[number]!.pendingSettlements.flatMap(\.settled)
            channels[number]!.pendingPublishes = []
            channels[number]!.pendingSettlements = []
            // Acknowledgements rolled back leave their messages with the channel's leases
            // (RabbitMQ keeps them unacknowledged): they go back to the queue as redelivered.
            try await release(rolledBack, on: number)
            send(.txRollbackOk, on: number)
        default:
            throw AMQPError(AMQPError.notImplemented, "NOT_IMPLEMENTED - \(method.name)")
        }
    }

    private func requireTransaction(_ number: UInt16, methodID: UInt16) throws(AMQPError) {
        guard channels[number]!.state.mode == .transaction else {
            throw AMQPError(
                AMQPError.preconditionFailed, "PRECONDITION_FAILED - channel is not transactional", classID: 90,
                methodID: methodID)
        }
    }

    // MARK: Exchanges and queues

    private func declareExchange(_ declare: AMQPMethod.ExchangeDeclare, _ host: AMQPVirtualHost) async throws {
        let name = declare.exchange
        if declare.passive {
            guard await host.state.routing.exchanges[name] != nil else {
                throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(name)' in vhost '\(virtualHost)'")
            }
            return
        }
        try access.check(.configure, "exchange", name, classID: 40, methodID: 10)
        guard let type = AMQPRouting.ExchangeType(rawValue: declare.type) else {
            throw AMQPError(AMQPError.commandInvalid, "COMMAND_INVALID - unknown exchange type '\(declare.type)'")
        }
        var alternate: String?
        for entry in declare.arguments.entries {
            switch entry.key {
            case "alternate-exchange":
                guard let text = entry.value.stringValue else {
                    throw AMQPError(
                        AMQPError.preconditionFailed, "PRECONDITION_FAILED - invalid arg 'alternate-exchange'")
                }
                alternate = text
            default:
                throw AMQPError(
                    AMQPError.preconditionFailed,
                    "PRECONDITION_FAILED - exchange argument '\(entry.key)' is not supported")
            }
        }
        let exchange = AMQPRouting.Exchange(
            type: type, durable: declare.durable, autoDelete: declare.autoDelete, internal: declare.internal,
            alternate: alternate)
        try await host.change { state throws(AMQPError) in
            try state.routing.declareExchange(name, exchange, passive: false)
        }
    }

    /// RabbitMQ's server-generated queue names.
    private static func generatedName() -> String {
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let text = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return "amq.gen-\(text)"
    }

    private func declareQueue(_ declare: AMQPMethod.QueueDeclare, _ host: AMQPVirtualHost) async throws -> (
        String, UInt32, UInt32
    ) {
        let name = declare.queue.isEmpty ? Self.generatedName() : declare.queue
        let vhost = virtualHost
        if declare.passive {
            guard await host.state.queues[name] != nil else {
                throw AMQPError(AMQPError.notFound, "NOT_FOUND - no queue '\(name)' in vhost '\(vhost)'")
            }
            try await checkOwner(name, host)
        } else {
            let known = await host.state.queues[name] != nil
            guard !name.hasPrefix("amq.") || declare.queue.isEmpty || known else {
                throw AMQPError(
                    AMQPError.accessRefused, "ACCESS_REFUSED - queue name '\(name)' contains reserved prefix 'amq.*'")
            }
            try access.check(.configure, "queue", name, classID: 50, methodID: 10)
            let record = try AMQPQueueRecord(
                durable: declare.durable, autoDelete: declare.autoDelete, owner: declare.exclusive ? self.name : nil,
                arguments: declare.arguments)
            if await host.state.queues[name] == nil {
                try await gateway.createStorage(virtualHost: vhost, queue: name, arguments: record.parsed)
            }
            let owner = self.name
            try await host.change { state throws(AMQPError) in
                if let existing = state.queues[name] {
                    if let holder = existing.owner, holder != owner {
                        throw AMQPError(
                            AMQPError.resourceLocked,
                            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '\(name)' in vhost '\(vhost)'"
                        )
                    }
                    for (field, current, received) in [
                        ("durable", existing.durable, record.durable),
                        ("exclusive", existing.owner != nil, record.owner != nil),
                        ("auto_delete", existing.autoDelete, record.autoDelete),
                    ] where current != received {
                        throw AMQPError(
                            AMQPError.preconditionFailed,
                            "PRECONDITION_FAILED - inequivalent arg '\(field)' for queue '\(name)' in vhost '\(vhost)': received '\(received)' but current is '\(current)'"
                        )
                    }
                    if existing.parsed != record.parsed {
                        throw AMQPError(
                            AMQPError.preconditionFailed,
                            "PRECONDITION_FAILED - inequivalent arguments for queue '\(name)' in vhost '\(vhost)'")
                    }
                    return
                }
                state.queues[name] = record
                state.routing.declareQueue(name)
            }
            if declare.exclusive { exclusiveQueues.insert(name) }
        }
        let arguments = await host.state.queues[name]?.parsed ?? AMQPQueueArguments()
        try await gateway.markUsed(virtualHost: vhost, queue: name, arguments: arguments)
        let messages = try await gateway.messageCount(virtualHost: vhost, queue: name, trim: arguments.dropsHead)
        return (name, messages, UInt32(clamping: try await gateway.consumerCount(virtualHost: vhost, queue: name)))
    }

    /// A binding's arguments are part of its key in the journal: at most 16 KiB of them.
    static func checkBindingArguments(_ arguments: AMQPTable) throws(AMQPError) {
        var encoded = ByteBuffer()
        encoded.writeAMQPTable(arguments)
        guard encoded.readableBytes <= AMQPVirtualHost.maxBindingArgumentBytes else {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - binding arguments of \(encoded.readableBytes) bytes (at most \(AMQPVirtualHost.maxBindingArgumentBytes))"
            )
        }
    }

    /// An exclusive queue of another connection is locked (405).
    private func checkOwner(_ queue: String, _ host: AMQPVirtualHost) async throws {
        guard let record = await host.state.queues[queue] else { return }
        if let owner = record.owner, owner != name {
            throw AMQPError(
                AMQPError.resourceLocked,
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '\(queue)' in vhost '\(virtualHost)'")
        }
    }

    private func requireQueue(_ queue: String, _ host: AMQPVirtualHost) async throws -> AMQPQueueRecord {
        guard let record = await host.state.queues[queue] else {
            throw AMQPError(AMQPError.notFound, "NOT_FOUND - no queue '\(queue)' in vhost '\(virtualHost)'")
        }
        if let owner = record.owner, owner != name {
            throw AMQPError(
                AMQPError.resourceLocked,
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '\(queue)' in vhost '\(virtualHost)'")
        }
        return record
    }

    private func deleteQueue(_ queue: String) async throws {
        guard let host else { return }
        exclusiveQueues.remove(queue)
        try await host.change { state throws(AMQPError) in
            state.queues[queue] = nil
            state.routing.deleteQueue(queue)
        }
        try await gateway.deleteStorage(virtualHost: virtualHost, queue: queue)
    }

    /// Takes every ready message out of the queue (leased messages stay with their consumers,
    /// as in RabbitMQ).
    private func purge(_ queue: String, _ host: AMQPVirtualHost) async throws -> UInt32 {
        _ = try await requireQueue(queue, host)
        let journalQueue = AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue)
        let purger = "amqp/\(name)/purge"
        var purged = 0
        while true {
            let taken = try await gateway.journal.receive(
                queue: journalQueue, consumer: purger, max: 1000, maxBytes: 16 << 20, visibilityMilliseconds: 30_000,
                options: .oneOff, wait: .zero)
            if taken.isEmpty { break }
            purged += try await gateway.journal.settle(
                queue: journalQueue, consumer: purger, receipts: taken.map(\.receipt), as: .ack)
        }
        return UInt32(clamping: purged)
    }

    // MARK: Publishing

    private func publish(_ publication: AMQPConnectionState.Publication, on number: UInt16) async throws {
        let lease = openedChannel(number).leaseName
        let host = try requireHost()
        let method = publication.method
        try access.check(.write, "exchange", method.exchange, classID: 60, methodID: 40)
        let routed = try await gateway.stores(
            in: host, exchange: method.exchange, routingKey: method.routingKey, properties: publication.properties,
            body: Array(publication.body.readableBytesView), timestamp: WallClock.milliseconds())
        guard let routed else {
            throw AMQPError(
                AMQPError.notFound, "NOT_FOUND - no exchange '\(method.exchange)' in vhost '\(virtualHost)'")
        }
        let stores = routed.stores
        if routed.exchange.internal {
            throw AMQPError(
                AMQPError.accessRefused,
                "ACCESS_REFUSED - cannot publish to internal exchange '\(method.exchange)' in vhost '\(virtualHost)'")
        }
        try live(number, lease)
        let sequence = channels[number]!.state.published()
        if routed.queues == 0, method.mandatory {
            var buffer = channel.channel.allocator.buffer(capacity: publication.body.readableBytes + 128)
            AMQPFrameEncoder.writeContent(
                channel: number,
                method: .basicReturn(
                    .init(
                        replyCode: AMQPError.noRoute, replyText: "NO_ROUTE", exchange: method.exchange,
                        routingKey: method.routingKey)), properties: publication.properties,
                body: publication.body, frameMax: state.tune.frameMax, into: &buffer)
            write(buffer)
        }
        // A full reject-publish queue refused the message: its confirm is a nack (RabbitMQ's).
        let accepted = !routed.rejected
        if stores.isEmpty {
            if let sequence { confirmed(sequence, ok: accepted, on: number) }
            return
        }
        if channels[number]!.state.mode == .transaction {
            channels[number]!.pendingPublishes += stores
            return
        }
        channels[number]!.unstored += 1
        gateway.submit(stores) { [weak self] ok in
            self?.answered(Answer(number: number, lease: lease, sequence: sequence, stored: ok, accepted: accepted))
        }
    }

    private nonisolated func answered(_ answer: Answer) {
        if answers.add(answer) { Task { await self.takeAnswers() } }
    }

    /// Confirms every publish answered since the last turn: per channel, its nacks and one ack.
    private func takeAnswers() async {
        let taken = answers.take()
        var confirms: [UInt16: [(sequence: UInt64, ok: Bool)]] = [:]
        var order: [UInt16] = []
        var failed: [UInt16] = []
        for answer in taken {
            // A confirm belongs to the channel that published, not to one opened later on its
            // number.
            guard let channel = channels[answer.number], channel.leaseName == answer.lease else { continue }
            channel.unstored -= 1
            if channel.unstored == 0 {
                let waiters = channel.storedWaiters
                channel.storedWaiters = []
                for waiter in waiters { waiter.resume() }
            }
            if let sequence = answer.sequence {
                if confirms[answer.number] == nil { order.append(answer.number) }
                confirms[answer.number, default: []].append((sequence, answer.stored && answer.accepted))
            } else if !answer.stored, !failed.contains(answer.number) {
                failed.append(answer.number)
            }
        }
        for number in order {
            guard let channel = channels[number] else { continue }
            for method in channel.state.answered(confirms[number]!) { send(method, on: number) }
        }
        // Without confirms the client cannot be told which message was lost: the channel is
        // closed, so it knows something was (after every answer above is counted: the close
        // waits for the channel's publishes).
        for number in failed {
            await perform(
                state.failed(
                    channel: number,
                    AMQPError(
                        AMQPError.internalError, "INTERNAL_ERROR - a published message could not be stored",
                        classID: 60, methodID: 40)))
        }
    }

    /// Waits until every publish of the channel so far is answered.
    private func publishesStored(_ number: UInt16) async {
        while let channel = channels[number], channel.unstored > 0 {
            await withCheckedContinuation { channel.storedWaiters.append($0) }
        }
    }

    private func confirmed(_ sequence: UInt64, ok: Bool, on number: UInt16) {
        guard channels[number] != nil else { return }
        for method in channels[number]!.state.answered(sequence, ok: ok) { send(method, on: number) }
    }

    /// tx.commit: the transaction's messages, one batch per queue, then its acknowledgements.
    private func commit(on number: UInt16) async throws {
        let publishes = channels[number]!.pendingPublishes
        let settlements = channels[number]!.pendingSettlements
        channels[number]!.pendingPublishes = []
        channels[number]!.pendingSettlements = []
        var byShard: [String: [Record]] = [:]
        var order: [String] = []
        for publish in publishes {
            if byShard[publish.shard] == nil { order.append(publish.shard) }
            byShard[publish.shard, default: []].append(publish.record)
        }
        for shard in order {
            // Bounded batches (a large transaction would be one batch above the journal's limit).
            var records = byShard[shard]![...]
            while !records.isEmpty {
                var count = 0
                var bytes = 0
                while count < records.count, count < 1000, bytes < 1 << 20 {
                    bytes += records[records.startIndex + count].batchBytes
                    count += 1
                }
                _ = try await gateway.journal.append(
                    shard: shard, batch: RecordBatch.encode(Array(records.prefix(count))))
                records = records.dropFirst(count)
            }
        }
        for settlement in settlements { try await settleNow(settlement.settled, as: settlement.as, on: number) }
    }

    // MARK: Delivering

    private func startConsumer(_ consume: AMQPMethod.BasicConsume, on number: UInt16, _ host: AMQPVirtualHost)
        async throws
    {
        try access.check(.read, "queue", consume.queue, classID: 60, methodID: 20)
        let generation = channels[number]!.leaseName
        let record = try await requireQueue(consume.queue, host)
        try live(number, generation)
        // Stream offsets change what a consumer gets: refused, not ignored (RabbitMQ ignores
        // arguments it does not know, and so does this).
        if consume.arguments["x-stream-offset"] != nil {
            throw AMQPError(
                AMQPError.preconditionFailed,
                "PRECONDITION_FAILED - consumer argument 'x-stream-offset' is not implemented by Strata yet",
                classID: 60, methodID: 20)
        }
        let priority = try Self.consumerPriority(consume.arguments, singleActive: record.parsed.singleActiveConsumer)
        let consumer = try channels[number]!.state.consume(
            tag: consume.consumerTag, queue: consume.queue, noAck: consume.noAck, exclusive: consume.exclusive,
            singleActive: record.parsed.singleActiveConsumer)
        do {
            try await gateway.addConsumer(virtualHost: virtualHost, queue: consume.queue, exclusive: consume.exclusive)
        } catch {
            if channels[number]?.leaseName == generation { _ = channels[number]!.state.cancel(tag: consumer.tag) }
            throw error
        }
        guard channels[number]?.leaseName == generation, channels[number]!.state.consumers[consumer.tag] != nil else {
            // The channel closed (or the consumer was cancelled) meanwhile.
            _ = await gateway.removeConsumer(virtualHost: virtualHost, queue: consume.queue)
            throw AMQPChannelGone()
        }
        channels[number]!.queues.insert(consume.queue)
        if let record = await host.state.queues[consume.queue] {
            try? await gateway.markConsumed(virtualHost: virtualHost, queue: consume.queue, arguments: record.parsed)
        }
        guard channels[number]?.leaseName == generation, channels[number]!.state.consumers[consumer.tag] != nil else {
            _ = await gateway.removeConsumer(virtualHost: virtualHost, queue: consume.queue)
            throw AMQPChannelGone()
        }
        if !consume.noWait { send(.basicConsumeOk(consumerTag: consumer.tag), on: number) }
        let journalQueue = AMQPGateway.journalQueue(virtualHost: virtualHost, queue: consume.queue)
        let leaseName = channels[number]!.leaseName
        let lease = gateway.configuration.leaseMilliseconds
        let journal = gateway.journal
        let tag = consumer.tag
        channels[number]!.consumers[tag] = Task { [self] in
            while !Task.isCancelled {
                let credit = self.reserveCredit(number, tag)
                guard let credit else { return }
                if credit == 0 {
                    await self.waitForCredit(number)
                    continue
                }
                let deliveries: [QueueDelivery]
                do {
                    deliveries = try await journal.receive(
                        queue: journalQueue, consumer: leaseName, max: credit, maxBytes: 4 << 20,
                        visibilityMilliseconds: lease, options: [], priority: priority, wait: .milliseconds(500))
                } catch let error as JournalError where error.code == .unknownQueue {
                    self.release(credit, on: number, lease: leaseName)
                    await self.queueGone(number, tag)
                    return
                } catch {
                    self.release(credit, on: number, lease: leaseName)
                    if Task.isCancelled { return }
                    try? await Task.sleep(for: .milliseconds(200))
                    continue
                }
                var delivered = true
                if !deliveries.isEmpty {
                    delivered = await self.deliver(deliveries, to: tag, on: number, lease: leaseName)
                }
                // Delivered messages count as unacknowledged now: the reservation goes.
                self.release(credit, on: number, lease: leaseName)
                if !delivered {
                    // The consumer or its channel went while the messages were on their way.
                    _ = try? await journal.settle(
                        queue: journalQueue, consumer: leaseName, receipts: deliveries.map(\.receipt),
                        as: .requeue(delayMilliseconds: 0))
                    return
                }
            }
        }
    }

    /// What a consumer may be sent now, reserved on its channel until `release`; nil once it is
    /// gone. Under a global prefetch-count the channel's free room is shared among its
    /// consumers (each gets at least one while there is room), so an idle consumer's receive
    /// does not hold all of it.
    private func reserveCredit(_ number: UInt16, _ tag: String) -> Int? {
        guard let channel = channels[number], let consumer = channel.state.consumers[tag], !closed else { return nil }
        guard channel.flowActive, self.channel.channel.isWritable else { return 0 }
        if consumer.singleActive, channel.draining[consumer.queue, default: 0] > 0 { return 0 }
        var credit = channel.state.credit(for: tag, cap: 256)
        let limit = Int(channel.state.channelPrefetch)
        if limit > 0, !consumer.noAck {
            let free = max(0, limit - channel.state.unacknowledged - channel.reserved)
            let sharing = max(1, channel.state.consumers.values.filter { !$0.noAck }.count)
            credit = min(credit, free, max(1, free / sharing))
        }
        channels[number]!.reserved += credit
        return credit
    }

    private func release(_ reserved: Int, on number: UInt16, lease: String) {
        guard reserved > 0, channels[number]?.leaseName == lease else { return }
        channels[number]!.reserved -= reserved
        wake(number)
    }

    private func drained(_ queue: String, on number: UInt16, lease: String) {
        guard channels[number]?.leaseName == lease else { return }
        channels[number]!.draining[queue, default: 1] -= 1
        if channels[number]!.draining[queue] == 0 { channels[number]!.draining[queue] = nil }
        wake(number)
    }

    private func waitForCredit(_ number: UInt16) async {
        guard channels[number] != nil else { return }
        if channels[number]!.flowActive, !channel.channel.isWritable {
            // Writability has no wake-up here: look again shortly.
            try? await Task.sleep(for: .milliseconds(5))
            return
        }
        await withCheckedContinuation { waiter in channels[number]!.waiters.append(waiter) }
    }

    /// Sends the messages to the consumer; false when it is gone.
    private func deliver(_ deliveries: [QueueDelivery], to tag: String, on number: UInt16, lease: String) async
        -> Bool
    {
        // A task of a cancelled consumer (or of a closed channel whose number was reused) must
        // not deliver to the new one: its leases are under another name.
        guard let consumer = channels[number]?.state.consumers[tag], channels[number]?.leaseName == lease,
            channels[number]?.consumers[tag] != nil, !closed
        else { return false }
        let frameMax = state.tune.frameMax
        // One write (and one flush) for the whole batch.
        var buffer = channel.channel.allocator.buffer(
            capacity: deliveries.reduce(0) { $0 + ($1.record.value?.count ?? 0) + 256 })
        for delivery in deliveries {
            let handle = AMQPDelivery(queue: consumer.queue, receipt: delivery.receipt)
            let deliveryTag = channels[number]!.state.deliver(handle, consumer: tag, needsAck: !consumer.noAck)
            let message = AMQPEnvelope.message(of: delivery.record.headers)
            let body = ByteBuffer(bytes: delivery.record.value ?? [])
            AMQPFrameEncoder.writeContent(
                channel: number,
                method: .basicDeliver(
                    .init(
                        consumerTag: tag, deliveryTag: deliveryTag,
                        redelivered: delivery.receipt.delivery > 1 || delivery.resumed,
                        exchange: message.exchange ?? "",
                        routingKey: message.routingKey ?? String(decoding: delivery.record.key ?? [], as: UTF8.self))),
                properties: message.properties, body: body, frameMax: frameMax, into: &buffer)
        }
        write(buffer)
        if consumer.noAck {
            let journalQueue = AMQPGateway.journalQueue(virtualHost: virtualHost, queue: consumer.queue)
            _ = try? await gateway.journal.settle(
                queue: journalQueue, consumer: channels[number]?.leaseName ?? "", receipts: deliveries.map(\.receipt),
                as: .ack)
        }
        return true
    }

    /// The queue was deleted: RabbitMQ's consumer_cancel_notify.
    private func queueGone(_ number: UInt16, _ tag: String) async {
        guard let consumer = channels[number]?.state.cancel(tag: tag) else { return }
        channels[number]!.consumers[tag] = nil
        _ = await gateway.removeConsumer(virtualHost: virtualHost, queue: consumer.queue)
        send(.basicCancel(consumerTag: tag, noWait: true), on: number)
    }

    private func get(_ queue: String, noAck: Bool, on number: UInt16, _ host: AMQPVirtualHost) async throws {
        try access.check(.read, "queue", queue, classID: 60, methodID: 70)
        let lease = channels[number]!.leaseName
        let record = try await requireQueue(queue, host)
        try await gateway.markUsed(virtualHost: virtualHost, queue: queue, arguments: record.parsed)
        try live(number, lease)
        channels[number]!.queues.insert(queue)
        let journalQueue = AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue)
        let leaseName = channels[number]!.leaseName
        let taken = try await gateway.journal.receive(
            queue: journalQueue, consumer: leaseName, max: 1, maxBytes: 1,
            visibilityMilliseconds: gateway.configuration.leaseMilliseconds, options: .oneOff, wait: .zero)
        guard let delivery = taken.first, channels[number] != nil else {
            send(.basicGetEmpty, on: number)
            return
        }
        let deliveryTag = channels[number]!.state.deliver(
            AMQPDelivery(queue: queue, receipt: delivery.receipt), consumer: nil, needsAck: !noAck)
        let remaining = try await gateway.messageCount(virtualHost: virtualHost, queue: queue)
        let message = AMQPEnvelope.message(of: delivery.record.headers)
        var buffer = channel.channel.allocator.buffer(capacity: (delivery.record.value?.count ?? 0) + 256)
        AMQPFrameEncoder.writeContent(
            channel: number,
            method: .basicGetOk(
                .init(
                    deliveryTag: deliveryTag, redelivered: delivery.receipt.delivery > 1,
                    exchange: message.exchange ?? "",
                    routingKey: message.routingKey ?? String(decoding: delivery.record.key ?? [], as: UTF8.self),
                    messageCount: remaining)),
            properties: message.properties, body: ByteBuffer(bytes: delivery.record.value ?? []),
            frameMax: state.tune.frameMax, into: &buffer)
        write(buffer)
        if noAck {
            _ = try await gateway.journal.settle(
                queue: journalQueue, consumer: leaseName, receipts: [delivery.receipt], as: .ack)
        }
    }

    // MARK: Settling

    private func settle(
        _ settled: [AMQPChannelState<AMQPDelivery>.Settlement], as settlement: QueueSettlement, on number: UInt16
    ) async throws {
        if channels[number]!.state.mode == .transaction {
            channels[number]!.pendingSettlements.append((settled, settlement))
            return
        }
        if settlement == .ack {
            wake(number)
            channels[number]!.pendingAcks += settled.map(\.handle)
            if channels[number]!.ackWriter == nil {
                channels[number]!.ackWriter = Task { await self.writeAcksInBackground(number) }
            }
            return
        }
        try await settleNow(settled, as: settlement, on: number)
    }

    private func writeAcksInBackground(_ number: UInt16) async {
        while let pending = channels[number]?.pendingAcks, !pending.isEmpty {
            channels[number]!.pendingAcks = []
            let leaseName = channels[number]!.leaseName
            for (queue, handles) in Dictionary(grouping: pending, by: \.queue) {
                do {
                    _ = try await gateway.journal.settle(
                        queue: AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue), consumer: leaseName,
                        receipts: handles.map(\.receipt), as: .ack)
                } catch let error as JournalError where error.code == .unknownQueue {
                    continue
                } catch {
                    // The lease stays; the message is delivered again once it runs out.
                    logger.warning("amqp acknowledgement not stored", metadata: ["error": "\(error)"])
                }
            }
        }
        channels[number]?.ackWriter = nil
    }

    /// Waits until every acknowledgement received on the channel is written.
    private func writeAcks(_ number: UInt16) async {
        while let writer = channels[number]?.ackWriter { await writer.value }
    }

    private func settleNow(
        _ settled: [AMQPChannelState<AMQPDelivery>.Settlement], as settlement: QueueSettlement, on number: UInt16
    ) async throws {
        await writeAcks(number)
        guard let leaseName = channels[number]?.leaseName else { return }
        wake(number)
        let byQueue = Dictionary(grouping: settled.map(\.handle), by: \.queue)
        for (queue, handles) in byQueue {
            do {
                _ = try await gateway.journal.settle(
                    queue: AMQPGateway.journalQueue(virtualHost: virtualHost, queue: queue), consumer: leaseName,
                    receipts: handles.map(\.receipt), as: settlement)
            } catch let error as JournalError where error.code == .unknownQueue {
                continue  // the queue was deleted meanwhile: nothing left to settle
            }
        }
    }

    /// Back to their queues, visible at once, redelivered next time.
    private func release(_ settled: [AMQPChannelState<AMQPDelivery>.Settlement], on number: UInt16) async throws {
        try await settleNow(settled, as: .requeue(delayMilliseconds: 0), on: number)
    }
}

extension AMQPError {
    /// The error as the answer to `method` (its class and method ids), unless it names one.
    func on(_ method: AMQPMethod) -> AMQPError {
        classID == 0 && methodID == 0 ? on(classID: method.classID, methodID: method.methodID) : self
    }
}

extension AMQPVirtualHost {
    /// What a publish needs at once: the exchange (nil when there is none), the queues the
    /// message reaches and their records.
    nonisolated func routeForPublish(exchange: String, routingKey: String, headers: AMQPTable?) -> (
        AMQPRouting.Exchange?, Set<String>, [String: AMQPQueueRecord]
    ) {
        let state = snapshot
        guard let found = state.routing.exchanges[exchange] else { return (nil, [], [:]) }
        let queues = state.routing.route(exchange: exchange, routingKey: routingKey, headers: headers)
        var records: [String: AMQPQueueRecord] = [:]
        for queue in queues { records[queue] = state.queues[queue] }
        return (found, queues, records)
    }
}
