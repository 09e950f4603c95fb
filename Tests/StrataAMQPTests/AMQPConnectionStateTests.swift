import NIOCore
import Testing

@testable import StrataAMQP

/// The connection's rules as event → action tables.
@Suite struct AMQPConnectionStateTests {
    typealias Action = AMQPConnectionState.Action
    static let limits = AMQPConnectionState.Limits(channelMax: 16, frameMax: 65_536, heartbeat: 30, maxBodySize: 100)

    static func close(_ code: UInt16, _ classID: UInt16 = 0, _ methodID: UInt16 = 0) -> (Action) -> Bool {
        { action in
            guard case .send(.method(0, .connectionClose(let close))) = action else { return false }
            return close.replyCode == code && close.classID == classID && close.methodID == methodID
        }
    }

    static func channelClose(_ channel: UInt16, _ code: UInt16) -> (Action) -> Bool {
        { action in
            guard case .send(.method(channel, .channelClose(let close))) = action else { return false }
            return close.replyCode == code
        }
    }

    /// A connection through Start, Tune and Open with channel 1 open.
    static func opened() -> AMQPConnectionState {
        var state = AMQPConnectionState(limits: limits)
        _ = state.receive(.protocolHeader)
        _ = state.receive(
            .method(channel: 0, .connectionStartOk(.init(clientProperties: [:], mechanism: "PLAIN", response: []))))
        _ = state.authenticated(user: "guest")
        _ = state.receive(.method(channel: 0, .connectionTuneOk(.init(channelMax: 0, frameMax: 0, heartbeat: 10))))
        _ = state.receive(.method(channel: 0, .connectionOpen(virtualHost: "/")))
        _ = state.virtualHostOpened("/")
        _ = state.receive(.method(channel: 1, .channelOpen))
        return state
    }

    @Test func handshakeNegotiatesTuneAndOpensTheVirtualHost() {
        var state = AMQPConnectionState(limits: Self.limits)
        let start = state.receive(.protocolHeader)
        guard case .send(.method(0, .connectionStart(let m))) = start.first else {
            Issue.record("expected connection.start, got \(start)")
            return
        }
        #expect(m.mechanisms == "PLAIN AMQPLAIN")
        let startOk = AMQPMethod.ConnectionStartOk(
            clientProperties: ["product": .string("pika")], mechanism: "PLAIN", response: [0, 0x61])
        #expect(
            state.receive(.method(channel: 0, .connectionStartOk(startOk)))
                == [
                    .authenticate(
                        mechanism: "PLAIN", response: [0, 0x61], clientProperties: ["product": .string("pika")])
                ])
        #expect(state.phase == .authenticating)
        #expect(
            state.authenticated(user: "alice")
                == [.send(.method(channel: 0, .connectionTune(.init(channelMax: 16, frameMax: 65_536, heartbeat: 30))))]
        )
        // 0 means "no limit of mine": the server's limit holds; the client's heartbeat is used.
        #expect(
            state.receive(.method(channel: 0, .connectionTuneOk(.init(channelMax: 0, frameMax: 0, heartbeat: 5))))
                == [.tuned(.init(channelMax: 16, frameMax: 65_536, heartbeat: 5))])
        #expect(state.receive(.heartbeat) == [])
        #expect(state.receive(.method(channel: 0, .connectionOpen(virtualHost: "prod"))) == [.openVirtualHost("prod")])
        #expect(state.virtualHostOpened("prod") == [.send(.method(channel: 0, .connectionOpenOk))])
        #expect(state.phase == .open && state.user == "alice" && state.virtualHost == "prod")
    }

    @Test func handshakeRefusals() {
        // Unknown mechanism and bad credentials: 403 on connection.start-ok, then the socket closes.
        var unknown = AMQPConnectionState(limits: Self.limits)
        _ = unknown.receive(.protocolHeader)
        let refused = unknown.receive(
            .method(channel: 0, .connectionStartOk(.init(clientProperties: [:], mechanism: "EXTERNAL", response: []))))
        #expect(refused.count == 2 && Self.close(403, 10, 11)(refused[0]) && refused[1] == .closeConnection)

        var wrong = AMQPConnectionState(limits: Self.limits)
        _ = wrong.receive(.protocolHeader)
        _ = wrong.receive(
            .method(channel: 0, .connectionStartOk(.init(clientProperties: [:], mechanism: "PLAIN", response: []))))
        let failed = wrong.authenticationFailed("ACCESS_REFUSED - login refused")
        #expect(Self.close(403, 10, 11)(failed[0]) && failed.last == .closeConnection && wrong.phase == .closed)

        // Tune answers above the server's limits: 530.
        for answer in [
            AMQPMethod.Tune(channelMax: 17, frameMax: 0, heartbeat: 0),
            AMQPMethod.Tune(channelMax: 0, frameMax: 65_537, heartbeat: 0),
            AMQPMethod.Tune(channelMax: 0, frameMax: 4095, heartbeat: 0),
        ] {
            var state = AMQPConnectionState(limits: Self.limits)
            _ = state.receive(.protocolHeader)
            _ = state.receive(
                .method(channel: 0, .connectionStartOk(.init(clientProperties: [:], mechanism: "PLAIN", response: []))))
            _ = state.authenticated(user: "u")
            let actions = state.receive(.method(channel: 0, .connectionTuneOk(answer)))
            #expect(actions.contains(where: Self.close(530, 10, 31)), "\(answer)")
            #expect(state.phase == .closing)
        }

        // A refused virtual host: 530 on connection.open.
        var vhost = AMQPConnectionState(limits: Self.limits)
        _ = vhost.receive(.protocolHeader)
        _ = vhost.receive(
            .method(channel: 0, .connectionStartOk(.init(clientProperties: [:], mechanism: "PLAIN", response: []))))
        _ = vhost.authenticated(user: "u")
        _ = vhost.receive(.method(channel: 0, .connectionTuneOk(.init(channelMax: 0, frameMax: 0, heartbeat: 0))))
        _ = vhost.receive(.method(channel: 0, .connectionOpen(virtualHost: "nope")))
        #expect(vhost.virtualHostRefused("no access to vhost 'nope'").contains(where: Self.close(530, 10, 40)))

        // Frames out of order during the handshake.
        var early = AMQPConnectionState(limits: Self.limits)
        _ = early.receive(.protocolHeader)
        #expect(early.receive(.method(channel: 1, .channelOpen)).contains(where: Self.close(503, 20, 10)))
        var noHeader = AMQPConnectionState(limits: Self.limits)
        #expect(noHeader.receive(.heartbeat) == [.closeConnection])
    }

    @Test func channelsOpenCloseAndRefuseMisuse() {
        var state = Self.opened()
        #expect(state.isOpen(channel: 1))
        #expect(state.receive(.method(channel: 2, .channelOpen)) == [.send(.method(channel: 2, .channelOpenOk))])
        #expect(
            state.receive(.method(channel: 2, .channelFlow(active: false)))
                == [.send(.method(channel: 2, .channelFlowOk(active: false))), .flow(channel: 2, active: false)])
        let close = AMQPMethod.Close(replyCode: 200, replyText: "bye")
        #expect(
            state.receive(.method(channel: 2, .channelClose(close)))
                == [.channelClosed(2), .send(.method(channel: 2, .channelCloseOk))])
        #expect(!state.isOpen(channel: 2))
        // Methods for the gateway pass through.
        #expect(state.receive(.method(channel: 1, .txSelect)) == [.method(channel: 1, .txSelect)])

        // Each of these is a connection error (504 channel-error or 503 command-invalid).
        let misuse: [(AMQPFrame, UInt16)] = [
            (.method(channel: 1, .channelOpen), 504),
            (.method(channel: 5, .queuePurge(queue: "q", noWait: false)), 504),
            (.method(channel: 17, .channelOpen), 504),
            (.method(channel: 0, .txSelect), 504),
            (.method(channel: 1, .connectionOpen(virtualHost: "/")), 503),
            (
                .method(
                    channel: 1,
                    .basicDeliver(
                        .init(consumerTag: "", deliveryTag: 1, redelivered: false, exchange: "", routingKey: ""))), 503
            ),
            (.method(channel: 1, .channelCloseOk), 503),
            (.header(channel: 1, AMQPContentHeader(bodySize: 1, properties: .init())), 505),
            (.body(channel: 1, ByteBuffer(string: "x")), 505),
            (.method(channel: 0, .connectionUpdateSecret(newSecret: [], reason: "")), 540),
        ]
        for (frame, code) in misuse {
            var fresh = Self.opened()
            let actions = fresh.receive(frame)
            #expect(
                actions.contains(where: { action in
                    if case .send(.method(0, .connectionClose(let c))) = action { return c.replyCode == code }
                    return false
                }), "\(frame) → \(actions)")
            #expect(actions.contains(.channelClosed(1)))
            #expect(fresh.phase == .closing)
            // After connection.close only close-ok counts.
            #expect(fresh.receive(.method(channel: 1, .txSelect)) == [])
            #expect(fresh.receive(.method(channel: 0, .connectionCloseOk)) == [.closeConnection])
        }
    }

    @Test func aChannelErrorClosesOnlyItsChannel() {
        var state = Self.opened()
        _ = state.receive(.method(channel: 2, .channelOpen))
        let actions = state.failed(
            channel: 1, AMQPError(AMQPError.notFound, "NOT_FOUND - no queue 'q'", classID: 50, methodID: 10))
        #expect(actions.count == 2 && Self.channelClose(1, 404)(actions[0]) && actions[1] == .channelClosed(1))
        // Until close-ok, channel 1's frames are dropped; channel 2 goes on.
        #expect(state.receive(.method(channel: 1, .basicQos(prefetchSize: 0, prefetchCount: 1, global: false))) == [])
        #expect(state.receive(.body(channel: 1, ByteBuffer(string: "late"))) == [])
        #expect(state.receive(.method(channel: 2, .txSelect)) == [.method(channel: 2, .txSelect)])
        #expect(state.receive(.method(channel: 1, .channelCloseOk)) == [])
        // Reopened after close-ok.
        #expect(state.receive(.method(channel: 1, .channelOpen)) == [.send(.method(channel: 1, .channelOpenOk))])
        // A connection-level code from the gateway closes the connection.
        #expect(
            state.failed(channel: 2, AMQPError(AMQPError.internalError, "journal down")).contains(
                where: Self.close(541)))
    }

    @Test func publishedContentIsAssembledPerChannel() {
        var state = Self.opened()
        _ = state.receive(.method(channel: 2, .channelOpen))
        let publish = AMQPMethod.BasicPublish(exchange: "", routingKey: "q")
        let properties = AMQPProperties(contentType: "text/plain", deliveryMode: 2)
        #expect(state.receive(.method(channel: 1, .basicPublish(publish))) == [])
        #expect(state.receive(.header(channel: 1, AMQPContentHeader(bodySize: 10, properties: properties))) == [])
        #expect(state.receive(.body(channel: 1, ByteBuffer(string: "hello"))) == [])
        // Another channel's frames may come between two body frames.
        let empty = AMQPMethod.BasicPublish(exchange: "amq.fanout", routingKey: "")
        #expect(state.receive(.method(channel: 2, .basicPublish(empty))) == [])
        #expect(
            state.receive(.header(channel: 2, AMQPContentHeader(bodySize: 0, properties: .init())))
                == [.publish(channel: 2, .init(method: empty, properties: .init(), body: ByteBuffer()))])
        #expect(
            state.receive(.body(channel: 1, ByteBuffer(string: "world")))
                == [
                    .publish(
                        channel: 1,
                        .init(method: publish, properties: properties, body: ByteBuffer(string: "helloworld")))
                ])
        // A method inside content, and a body longer than announced, are connection errors.
        _ = state.receive(.method(channel: 1, .basicPublish(publish)))
        #expect(state.receive(.method(channel: 1, .txSelect)).contains(where: Self.close(505, 90, 10)))
        var longer = Self.opened()
        _ = longer.receive(.method(channel: 1, .basicPublish(publish)))
        _ = longer.receive(.header(channel: 1, AMQPContentHeader(bodySize: 2, properties: .init())))
        #expect(longer.receive(.body(channel: 1, ByteBuffer(string: "abc"))).contains(where: Self.close(501)))
        // A body above the limit is refused on its channel (406), its frames dropped.
        var large = Self.opened()
        _ = large.receive(.method(channel: 1, .basicPublish(publish)))
        let refused = large.receive(.header(channel: 1, AMQPContentHeader(bodySize: 101, properties: .init())))
        #expect(refused.first.map(Self.channelClose(1, 406)) == true)
        #expect(large.receive(.body(channel: 1, ByteBuffer(repeating: 0, count: 101))) == [])
        #expect(large.phase == .open)
    }

    @Test func closingFromEitherSide() {
        var client = Self.opened()
        #expect(
            client.receive(.method(channel: 0, .connectionClose(.init(replyCode: 200, replyText: "bye"))))
                == [.channelClosed(1), .send(.method(channel: 0, .connectionCloseOk)), .closeConnection])
        #expect(client.receive(.method(channel: 1, .txSelect)) == [])

        var server = Self.opened()
        let actions = server.close(AMQPError(AMQPError.connectionForced, "CONNECTION_FORCED - broker shutdown"))
        #expect(actions.first == .channelClosed(1) && actions.contains(where: Self.close(320)))
        // Both sides closed at once.
        #expect(
            server.receive(.method(channel: 0, .connectionClose(.init(replyCode: 200, replyText: ""))))
                == [.send(.method(channel: 0, .connectionCloseOk)), .closeConnection])
        var lost = Self.opened()
        #expect(lost.connectionLost() == [.channelClosed(1), .closeConnection])
    }
}
