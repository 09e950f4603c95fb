import NIOCore

/// AMQP 0-9-1's rules for one connection, as a value: frames in, actions out, no I/O (the
/// kit's shape, docs/architecture.md). It negotiates the connection (Start, Tune, Open),
/// keeps each channel's state (open, closing after the server's channel.close, a publish
/// whose header and body frames are still coming), tells channel errors from connection
/// errors as the spec's reply-code table does, and hands the gateway only what it must act
/// on: credentials to check, a virtual host to open, a whole published message, and the
/// exchange, queue, basic, confirm and tx methods of open channels.
public struct AMQPConnectionState: Sendable {
    public struct Limits: Sendable, Hashable {
        public var channelMax: UInt16
        public var frameMax: UInt32
        /// Seconds the server proposes; the client's answer is what is used.
        public var heartbeat: UInt16
        /// The largest message body taken; larger is refused with 406 on its channel.
        public var maxBodySize: UInt64
        public var mechanisms: [String]
        public var serverProperties: AMQPTable

        public init(
            channelMax: UInt16 = 2047, frameMax: UInt32 = 131_072, heartbeat: UInt16 = 60,
            maxBodySize: UInt64 = 8 << 20, mechanisms: [String] = ["PLAIN", "AMQPLAIN"],
            serverProperties: AMQPTable = [:]
        ) {
            self.channelMax = channelMax
            self.frameMax = frameMax
            self.heartbeat = heartbeat
            self.maxBodySize = maxBodySize
            self.mechanisms = mechanisms
            self.serverProperties = serverProperties
        }
    }

    public enum Phase: Sendable, Hashable {
        case awaitingHeader
        case awaitingStartOk
        /// The credentials are with the gateway.
        case authenticating
        case awaitingTuneOk
        case awaitingOpen
        /// The virtual host is with the gateway.
        case opening
        case open
        /// The server sent connection.close and waits for close-ok.
        case closing
        case closed
    }

    /// A message published on a channel: the method, then its header and body frames.
    public struct Publication: Sendable, Hashable {
        public var method: AMQPMethod.BasicPublish
        public var properties: AMQPProperties
        public var body: ByteBuffer
    }

    public enum Action: Sendable, Hashable {
        case send(AMQPFrame)
        /// Check these credentials, then call `authenticated(user:)` or `authenticationFailed`.
        case authenticate(mechanism: String, response: [UInt8], clientProperties: AMQPTable)
        /// Negotiated: frame-max for the decoder and the writer, heartbeat seconds (0: none).
        case tuned(AMQPMethod.Tune)
        /// Check access to this virtual host, then call `virtualHostOpened` or `virtualHostRefused`.
        case openVirtualHost(String)
        /// A method of an open channel for the gateway to carry out.
        case method(channel: UInt16, AMQPMethod)
        case publish(channel: UInt16, Publication)
        /// channel.flow: the client asks the server to stop (false) or resume (true) deliveries.
        case flow(channel: UInt16, active: Bool)
        /// The channel is gone (closed by either side): its consumers and unacknowledged
        /// deliveries go with it.
        case channelClosed(UInt16)
        /// Close the socket (after writing what was sent): the conversation ended or the
        /// client must be cut off.
        case closeConnection
    }

    enum ChannelPhase: Sendable, Hashable {
        case open
        /// The server sent channel.close; everything but close and close-ok is dropped (§2.3.5).
        case closing
    }

    struct Channel: Sendable {
        var phase = ChannelPhase.open
        /// A publish waiting for its header (nil) or body.
        var publish: AMQPMethod.BasicPublish?
        var header: AMQPContentHeader?
        var body = ByteBuffer()
    }

    public let limits: Limits
    public private(set) var phase = Phase.awaitingHeader
    public private(set) var tune: AMQPMethod.Tune
    public private(set) var user: String?
    public private(set) var virtualHost: String?
    private var channels: [UInt16: Channel] = [:]
    private var mechanism = ""

    public init(limits: Limits) {
        self.limits = limits
        tune = AMQPMethod.Tune(channelMax: limits.channelMax, frameMax: limits.frameMax, heartbeat: limits.heartbeat)
    }

    public var openChannels: Int { channels.count }

    public func isOpen(channel: UInt16) -> Bool { channels[channel]?.phase == .open }

    // MARK: Events

    public mutating func receive(_ frame: AMQPFrame) -> [Action] {
        switch phase {
        case .closed: return []
        case .closing:
            // §2.3.5: after connection.close only close and close-ok count.
            if case .method(0, .connectionCloseOk) = frame { return finish() }
            if case .method(0, .connectionClose) = frame {
                return finish(sending: .method(channel: 0, .connectionCloseOk))
            }
            return []
        case .awaitingHeader:
            guard frame == .protocolHeader else { return fail(.frame("the protocol header must come first")) }
            phase = .awaitingStartOk
            let start = AMQPMethod.ConnectionStart(
                serverProperties: limits.serverProperties, mechanisms: limits.mechanisms.joined(separator: " "))
            return [.send(.method(channel: 0, .connectionStart(start)))]
        case .awaitingStartOk:
            guard case .method(0, .connectionStartOk(let startOk)) = frame else {
                return fail(AMQPError(AMQPError.commandInvalid, "expected connection.start-ok"), frame)
            }
            guard limits.mechanisms.contains(startOk.mechanism) else {
                return fail(
                    AMQPError(
                        AMQPError.accessRefused,
                        "mechanism \(startOk.mechanism) is not one of \(limits.mechanisms.joined(separator: ", "))",
                        classID: 10, methodID: 11))
            }
            phase = .authenticating
            mechanism = startOk.mechanism
            return [
                .authenticate(
                    mechanism: startOk.mechanism, response: startOk.response, clientProperties: startOk.clientProperties
                )
            ]
        case .authenticating, .opening:
            // The client must wait for the server's answer.
            if case .heartbeat = frame { return [] }
            return fail(AMQPError(AMQPError.commandInvalid, "frame before the server answered"), frame)
        case .awaitingTuneOk:
            if case .heartbeat = frame { return [] }
            guard case .method(0, .connectionTuneOk(let answer)) = frame else {
                return fail(AMQPError(AMQPError.commandInvalid, "expected connection.tune-ok"), frame)
            }
            return tuned(answer)
        case .awaitingOpen:
            if case .heartbeat = frame { return [] }
            guard case .method(0, .connectionOpen(let virtualHost)) = frame else {
                return fail(AMQPError(AMQPError.commandInvalid, "expected connection.open"), frame)
            }
            phase = .opening
            return [.openVirtualHost(virtualHost)]
        case .open:
            return receiveOpen(frame)
        }
    }

    /// The gateway accepted the credentials.
    public mutating func authenticated(user: String) -> [Action] {
        guard phase == .authenticating else { return [] }
        self.user = user
        phase = .awaitingTuneOk
        return [.send(.method(channel: 0, .connectionTune(tune)))]
    }

    /// The credentials were wrong: 403, as RabbitMQ answers clients that announce
    /// authentication_failure_close.
    public mutating func authenticationFailed(_ text: String) -> [Action] {
        guard phase == .authenticating else { return [] }
        return fail(AMQPError(AMQPError.accessRefused, text, classID: 10, methodID: 11))
    }

    public mutating func virtualHostOpened(_ name: String) -> [Action] {
        guard phase == .opening else { return [] }
        virtualHost = name
        phase = .open
        return [.send(.method(channel: 0, .connectionOpenOk))]
    }

    /// Access to the virtual host is refused or it does not exist: 530, as RabbitMQ answers.
    public mutating func virtualHostRefused(_ text: String) -> [Action] {
        guard phase == .opening else { return [] }
        return fail(AMQPError(AMQPError.notAllowed, text, classID: 10, methodID: 40))
    }

    /// A method the gateway carried out failed: a channel error closes its channel, a
    /// connection error the connection.
    public mutating func failed(channel: UInt16, _ error: AMQPError) -> [Action] {
        guard !error.closesConnection else { return fail(error) }
        guard channels[channel]?.phase == .open else { return [] }
        channels[channel] = Channel(phase: .closing)
        return [.send(.method(channel: channel, .channelClose(.init(error)))), .channelClosed(channel)]
    }

    /// The server ends the connection (shutdown: 320 connection-forced).
    public mutating func close(_ error: AMQPError) -> [Action] { fail(error) }

    /// The client stopped answering (two heartbeat periods without a frame) or went away.
    public mutating func connectionLost() -> [Action] {
        guard phase != .closed else { return [] }
        return finish()
    }

    // MARK: The open connection

    private mutating func receiveOpen(_ frame: AMQPFrame) -> [Action] {
        switch frame {
        case .protocolHeader: return fail(.frame("a second protocol header"))
        case .heartbeat: return []
        case .method(0, let method): return receiveConnectionMethod(method)
        case .method(let number, let method): return receive(method, on: number)
        case .header(0, _), .body(0, _): return fail(AMQPError(AMQPError.commandInvalid, "content on channel 0"))
        case .header(let number, let header):
            guard var channel = channels[number] else { return unknownChannel(number) }
            if channel.phase == .closing { return [] }
            guard channel.publish != nil, channel.header == nil else {
                return fail(
                    AMQPError(AMQPError.unexpectedFrame, "content header without basic.publish on channel \(number)"))
            }
            guard header.classID == 60 else {
                return fail(AMQPError(AMQPError.frameError, "content header of class \(header.classID), not basic"))
            }
            guard header.bodySize <= limits.maxBodySize else {
                channels[number] = channel
                return failed(
                    channel: number,
                    AMQPError(
                        AMQPError.preconditionFailed,
                        "message size \(header.bodySize) is larger than the maximum of \(limits.maxBodySize)",
                        classID: 60, methodID: 40))
            }
            channel.header = header
            channels[number] = channel
            return completeIfWhole(number)
        case .body(let number, var piece):
            guard var channel = channels[number] else { return unknownChannel(number) }
            if channel.phase == .closing { return [] }
            guard let header = channel.header else {
                return fail(AMQPError(AMQPError.unexpectedFrame, "content body without a header on channel \(number)"))
            }
            guard UInt64(channel.body.readableBytes + piece.readableBytes) <= header.bodySize else {
                return fail(
                    AMQPError(AMQPError.frameError, "content body longer than its header's \(header.bodySize) bytes"))
            }
            channel.body.writeBuffer(&piece)
            channels[number] = channel
            return completeIfWhole(number)
        }
    }

    private mutating func receiveConnectionMethod(_ method: AMQPMethod) -> [Action] {
        switch method {
        case .connectionClose:
            return finish(sending: .method(channel: 0, .connectionCloseOk))
        case .connectionUpdateSecret:
            return fail(
                AMQPError(
                    AMQPError.notImplemented, "connection.update-secret: no token authentication here", classID: 10,
                    methodID: 70))
        case _ where method.classID == 10:
            return fail(AMQPError(AMQPError.commandInvalid, "unexpected \(method.name)"), method)
        default:
            return fail(AMQPError(AMQPError.channelError, "\(method.name) on channel 0"), method)
        }
    }

    private mutating func receive(_ method: AMQPMethod, on number: UInt16) -> [Action] {
        guard number <= tune.channelMax || tune.channelMax == 0 else {
            return fail(
                AMQPError(AMQPError.channelError, "channel \(number) is above channel-max \(tune.channelMax)"), method)
        }
        if case .channelOpen = method {
            guard channels[number] == nil else {
                return fail(AMQPError(AMQPError.channelError, "second channel.open on channel \(number)"), method)
            }
            channels[number] = Channel()
            return [.send(.method(channel: number, .channelOpenOk))]
        }
        guard let channel = channels[number] else { return unknownChannel(number, method) }
        if channel.phase == .closing {
            switch method {
            case .channelCloseOk:
                channels[number] = nil
            case .channelClose:
                // Both sides closed at once: answer, and the channel is done when close-ok comes.
                return [.send(.method(channel: number, .channelCloseOk))]
            default: break
            }
            return []
        }
        if channel.publish != nil {
            return fail(
                AMQPError(AMQPError.unexpectedFrame, "\(method.name) inside a message's content on channel \(number)"),
                method)
        }
        switch method {
        case .channelClose:
            channels[number] = nil
            // The channel is closed (its publishes stored, what it held back in its queues)
            // before close-ok, as a client that publishes and closes expects.
            return [.channelClosed(number), .send(.method(channel: number, .channelCloseOk))]
        case .channelCloseOk:
            return fail(
                AMQPError(AMQPError.commandInvalid, "channel.close-ok for a channel the server did not close"), method)
        case .channelFlow(let active):
            return [
                .send(.method(channel: number, .channelFlowOk(active: active))), .flow(channel: number, active: active),
            ]
        case .basicPublish(let publish):
            channels[number]!.publish = publish
            return []
        case _ where method.classID == 10 || method.classID == 20:
            return fail(AMQPError(AMQPError.commandInvalid, "unexpected \(method.name) on channel \(number)"), method)
        case _ where method.isServerMethod:
            return fail(AMQPError(AMQPError.commandInvalid, "\(method.name) is sent by servers, not clients"), method)
        default:
            return [.method(channel: number, method)]
        }
    }

    private mutating func completeIfWhole(_ number: UInt16) -> [Action] {
        guard let channel = channels[number], let header = channel.header, let publish = channel.publish,
            UInt64(channel.body.readableBytes) == header.bodySize
        else { return [] }
        channels[number] = Channel()
        return [
            .publish(channel: number, Publication(method: publish, properties: header.properties, body: channel.body))
        ]
    }

    private mutating func tuned(_ answer: AMQPMethod.Tune) -> [Action] {
        let channelMax = answer.channelMax == 0 ? limits.channelMax : answer.channelMax
        guard channelMax <= limits.channelMax else {
            return fail(
                AMQPError(
                    AMQPError.notAllowed, "channel-max \(answer.channelMax) is above the server's \(limits.channelMax)",
                    classID: 10, methodID: 31))
        }
        let frameMax = answer.frameMax == 0 ? limits.frameMax : answer.frameMax
        guard frameMax >= AMQPFrame.minFrameMax, frameMax <= limits.frameMax else {
            return fail(
                AMQPError(
                    AMQPError.notAllowed,
                    "frame-max \(answer.frameMax) is outside \(AMQPFrame.minFrameMax)...\(limits.frameMax)",
                    classID: 10, methodID: 31))
        }
        tune = AMQPMethod.Tune(channelMax: channelMax, frameMax: frameMax, heartbeat: answer.heartbeat)
        phase = .awaitingOpen
        return [.tuned(tune)]
    }

    private mutating func unknownChannel(_ number: UInt16, _ method: AMQPMethod? = nil) -> [Action] {
        fail(AMQPError(AMQPError.channelError, "channel \(number) is not open"), method)
    }

    private mutating func fail(_ error: AMQPError, _ frame: AMQPFrame) -> [Action] {
        if case .method(_, let method) = frame { return fail(error, method) }
        return fail(error)
    }

    private mutating func fail(_ error: AMQPError, _ method: AMQPMethod?) -> [Action] {
        guard let method else { return fail(error) }
        return fail(error.on(classID: method.classID, methodID: method.methodID))
    }

    /// A connection error: connection.close with the code, then only close-ok is awaited.
    /// Before Tune the peer cannot be expected to answer, so the socket closes at once.
    private mutating func fail(_ error: AMQPError) -> [Action] {
        let closedChannels = channels.keys.sorted().map(Action.channelClosed)
        channels = [:]
        let handshaking = [Phase.awaitingHeader, .awaitingStartOk, .authenticating].contains(phase)
        let send = Action.send(.method(channel: 0, .connectionClose(.init(error))))
        if phase == .awaitingHeader {
            phase = .closed
            return [.closeConnection]
        }
        if handshaking {
            phase = .closed
            return [send, .closeConnection]
        }
        phase = .closing
        return closedChannels + [send]
    }

    /// The connection ends: its channels close, then `last` (connection.close-ok) goes out, then
    /// the socket closes.
    private mutating func finish(sending last: AMQPFrame? = nil) -> [Action] {
        let closedChannels = channels.keys.sorted().map(Action.channelClosed)
        channels = [:]
        phase = .closed
        return closedChannels + (last.map { [.send($0)] } ?? []) + [.closeConnection]
    }
}

extension AMQPMethod {
    /// "class.method", as RabbitMQ names methods in its errors.
    public var name: String {
        let label = String(describing: self).prefix { $0 != "(" }
        return label.reduce(into: "") { name, character in
            if character.isUppercase {
                name += name.contains(".") ? "-" : "."
                name += character.lowercased()
            } else {
                name.append(character)
            }
        }
    }

    /// Methods only a server sends.
    var isServerMethod: Bool {
        switch self {
        case .connectionStart, .connectionSecure, .connectionTune, .connectionOpenOk, .connectionBlocked,
            .connectionUnblocked, .channelOpenOk, .exchangeDeclareOk, .exchangeDeleteOk, .exchangeBindOk,
            .exchangeUnbindOk, .queueDeclareOk, .queueBindOk, .queuePurgeOk, .queueDeleteOk, .queueUnbindOk,
            .basicQosOk, .basicConsumeOk, .basicReturn, .basicDeliver, .basicGetOk, .basicGetEmpty, .basicRecoverOk,
            .confirmSelectOk, .txSelectOk, .txCommitOk, .txRollbackOk:
            true
        default: false
        }
    }
}
