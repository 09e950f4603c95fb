import Logging
import NIOCore
import StrataJournal
import StrataWire

/// What the remote client asks its channel to send.
enum ClientOutbound: Sendable {
    /// A request whose `ok` or `error` frame completes the promise, or `timeout` fails it.
    case call(JournalRequest, EventLoopPromise<JournalFrame>, timeout: TimeAmount)
    /// A subscribe request: pushed reads go to the continuation; the promise gets the
    /// subscription id (the request's correlation id) as soon as it is sent.
    case subscribe(JournalRequest, AsyncThrowingStream<ReadResult, any Error>.Continuation, EventLoopPromise<UInt32>)
    /// A request whose answer nobody waits for (credit, unsubscribe).
    case send(JournalRequest)
    /// Forget a subscription locally (its stream ended).
    case forget(UInt32)
}

/// Assigns correlation ids, matches answers to requests (in any order) and routes pushed
/// records to subscriptions. Lives on the channel's event loop.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = JournalFrame
    typealias OutboundIn = ClientOutbound
    typealias OutboundOut = JournalFrame

    private var nextCorrelationID: UInt32 = 1
    private var pending: [UInt32: (promise: EventLoopPromise<JournalFrame>, deadline: Scheduled<Void>)] = [:]
    /// Why the node closed the connection, when it said so (an error frame with id 0).
    private var closeReason: JournalError?
    private var subscriptions: [UInt32: AsyncThrowingStream<ReadResult, any Error>.Continuation] = [:]
    private let peer: String
    private let logger: Logger

    init(peer: String, logger: Logger) {
        self.peer = peer
        self.logger = logger
    }

    /// The next id not in use by a pending request or a live subscription (ids wrap around).
    private func takeCorrelationID() -> UInt32 {
        while pending[nextCorrelationID] != nil || subscriptions[nextCorrelationID] != nil {
            nextCorrelationID = nextCorrelationID == .max ? 1 : nextCorrelationID + 1
        }
        defer { nextCorrelationID = nextCorrelationID == .max ? 1 : nextCorrelationID + 1 }
        return nextCorrelationID
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .call(let request, let response, let timeout):
            let id = takeCorrelationID()
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let deadline = context.eventLoop.scheduleTask(in: timeout) {
                guard let entry = handler.value.pending.removeValue(forKey: id) else { return }
                entry.promise.fail(JournalError(.timeout, "no answer to \(request.type) within \(timeout)"))
            }
            pending[id] = (response, deadline)
            context.write(
                wrapOutboundOut(request.frame(correlationID: id, allocator: context.channel.allocator)),
                promise: promise)
        case .subscribe(let request, let continuation, let subscriptionID):
            let id = takeCorrelationID()
            subscriptions[id] = continuation
            context.write(
                wrapOutboundOut(request.frame(correlationID: id, allocator: context.channel.allocator)),
                promise: promise)
            subscriptionID.succeed(id)
        case .send(let request):
            context.write(
                wrapOutboundOut(
                    request.frame(correlationID: takeCorrelationID(), allocator: context.channel.allocator)),
                promise: promise)
        case .forget(let id):
            subscriptions[id] = nil
            promise?.succeed()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.type {
        case .ok:
            answer(frame)
        case .error where frame.correlationID == 0:
            // The node refuses the connection as a whole and is about to close it.
            closeReason = JournalResponse.decodeError(frame)
            logger.error(
                "journal-node closed the connection", metadata: ["journal.peer": "\(peer)", "error": "\(closeReason!)"])
        case .error:
            answer(frame)
            // A refused subscribe answers with an error under the subscription's id.
            subscriptions.removeValue(forKey: frame.correlationID)?.finish(throwing: JournalResponse.decodeError(frame))
        case .records:
            guard let continuation = subscriptions[frame.correlationID] else { return }
            var payload = frame.payload
            do {
                continuation.yield(try payload.readReadResult())
            } catch {
                subscriptions[frame.correlationID] = nil
                continuation.finish(throwing: error)
            }
        case .subscriptionEnd:
            subscriptions.removeValue(forKey: frame.correlationID)?.finish(throwing: JournalResponse.decodeError(frame))
        default:
            logger.error(
                "node sent a request frame", metadata: ["journal.peer": "\(peer)", "frame.type": "\(frame.type)"])
            context.close(promise: nil)
        }
    }

    private func answer(_ frame: JournalFrame) {
        guard let entry = pending.removeValue(forKey: frame.correlationID) else { return }
        entry.deadline.cancel()
        entry.promise.succeed(frame)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error =
            closeReason.map {
                JournalError(.unavailable, "journal-node at \(peer) closed the connection: \($0.message)")
            }
            ?? JournalError(.unavailable, "connection to \(peer) lost")
        let pending = self.pending
        let subscriptions = self.subscriptions
        self.pending.removeAll()
        self.subscriptions.removeAll()
        for entry in pending.values {
            entry.deadline.cancel()
            entry.promise.fail(error)
        }
        for continuation in subscriptions.values { continuation.finish(throwing: error) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.error("journal connection failed", metadata: ["journal.peer": "\(peer)", "error": "\(error)"])
        context.close(promise: nil)
    }
}
