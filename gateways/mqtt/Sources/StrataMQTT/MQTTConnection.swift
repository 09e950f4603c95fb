import Logging
import NIOCore
import NIOPosix
import StrataAuth
import StrataJournal
import Synchronization

/// One client connection: CONNECT, then packets until DISCONNECT, an error or a keep-alive
/// timeout. Malformed packets: a 5.0 client gets DISCONNECT with the reason code, a 3.1.1
/// client a closed connection (MQTT 4.13).
struct MQTTConnection {
    let gateway: MQTTGateway
    let channel: NIOAsyncChannel<MQTTPacket, ByteBuffer>

    private var logger: Logger { gateway.logger }

    func run() async {
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await serve(inbound: inbound, outbound: outbound)
            }
        } catch {
            logger.debug("mqtt connection ended", metadata: ["error": "\(error)"])
        }
    }

    private static func bytes(_ packet: MQTTPacket, _ version: MQTTProtocolVersion) -> ByteBuffer {
        var buffer = ByteBuffer()
        packet.write(version: version, into: &buffer)
        return buffer
    }

    /// The three phases run in separate functions so that the connection's long-lived async
    /// frames stay small: the task allocator keeps the peak of a task's frames for the task's
    /// life, and the CONNECT phase and a packet's handling need far more than waiting does.
    private func serve(
        inbound: NIOAsyncChannelInboundStream<MQTTPacket>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws {
        var packets = inbound.makeAsyncIterator()
        guard let opened = try await open(&packets, outbound: outbound) else { return }
        MQTTMetrics.connections.increment()
        defer { MQTTMetrics.connections.decrement() }
        let shares = MQTTSharePullers(gateway: gateway, session: opened.session)
        let ending = await converse(opened, &packets, shares: shares)
        await close(opened, ending, shares: shares)
        await gateway.sessionEnded(opened.session)
    }

    /// What the CONNECT phase leaves for the rest of the connection.
    struct Opened: Sendable {
        /// The protocol rules' state, carried on into the conversation.
        var state: MQTTConnectionState
        var session: MQTTSession
        var resume: Resume?
        var keepAlive: UInt16
        var will: MQTTPacket.Will?
        /// The shared subscriptions of a session this CONNECT ended (replaced by a clean start,
        /// expired, or not persistent), whose messages go back to their groups.
        var endedShares: MQTTHeldShares?
    }

    /// How the conversation ended.
    struct Ending: Sendable {
        var normalDisconnect = false
        var expiryAtDisconnect: UInt32?
    }

    /// CONNECT (within 10 s), enhanced authentication, CONNACK; nil when the connection ends here.
    @inline(never)
    private func open(
        _ packets: inout NIOAsyncChannelInboundStream<MQTTPacket>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> Opened? {
        // A client must send CONNECT first, and soon.
        let connectDeadline = channel.channel.eventLoop.scheduleTask(in: .seconds(10)) {}
        connectDeadline.futureResult.whenSuccess { [channel = channel.channel] in channel.close(promise: nil) }
        defer { connectDeadline.cancel() }
        let first: MQTTPacket?
        do {
            first = try await packets.next()
        } catch let error as MQTTProtocolError where error.reasonCode == 0x84 {
            // An unsupported protocol level: the 3.1.1 way to say so (return code 1), then close.
            try await outbound.write(ByteBuffer(bytes: [0x20, 0x02, 0x00, 0x01]))
            return nil
        }
        guard case .connect(let connect)? = first else { return nil }
        // MQTT 5 enhanced authentication (4.12), still under the CONNECT deadline.
        var enhanced: EnhancedAuthentication?
        if connect.version == .v5, let method = connect.properties.authenticationMethod {
            guard let outcome = try await authenticate(connect, method: method, packets: &packets, outbound: outbound)
            else {
                return nil
            }
            enhanced = outcome
        }
        // Accepting (credentials, session takeover, the stored session) runs in a task of its
        // own: its frames are freed when it is done instead of setting the connection task's
        // peak for the connection's life.
        let accepting = Task { [self, enhanced] () async throws -> Opened? in
            var state = MQTTConnectionState(
                limits: .init(
                    topicAliasMaximum: gateway.configuration.topicAliasMaximum,
                    maxKeepAlive: gateway.configuration.maxKeepAlive,
                    allowAnonymous: gateway.configuration.allowAnonymous))
            guard
                let (session, resume, endedShares, keepAlive) = try await accept(
                    connect, state: &state, enhanced: enhanced, outbound: outbound)
            else {
                return nil
            }
            return Opened(
                state: state, session: session, resume: resume, keepAlive: keepAlive, will: connect.will,
                endedShares: endedShares)
        }
        return try await withTaskCancellationHandler {
            try await accepting.value
        } onCancel: {
            accepting.cancel()
        }
    }

    /// The connected session: packets until DISCONNECT, an error, a keep-alive timeout or a
    /// closed socket. Packets to the client are written by the session itself, in order.
    @inline(never)
    private func converse(
        _ opened: Opened, _ packets: inout NIOAsyncChannelInboundStream<MQTTPacket>.AsyncIterator,
        shares: MQTTSharePullers
    ) async -> Ending {
        let session = opened.session
        if let ended = opened.endedShares {
            await gateway.endShares(clientID: session.clientID, ended, sessionEnded: true, settler: shares.settler)
        }
        // Shared subscriptions take their messages from their queues; a resumed session's own
        // unacknowledged ones first.
        session.settleOrphans(
            subscribed: gateway.shareQueues(session.subscriptions), keep: gateway.holdsShares(session))
        for subscription in session.subscriptions where subscription.shared != nil {
            shares.start(subscription.filter, resume: true)
        }
        let lastSeen = LastSeen()
        var ending = Ending()
        var keepAliveCheck: RepeatedTask?
        if opened.keepAlive > 0 {
            // MQTT 3.1.2.10: no packet within 1.5 × keep-alive closes the connection.
            let limit = Duration.milliseconds(Int64(opened.keepAlive) * 1500)
            keepAliveCheck = channel.channel.eventLoop.scheduleRepeatedTask(
                initialDelay: .seconds(1), delay: .seconds(1)
            ) {
                [channel = channel.channel] task in
                if lastSeen.elapsed > limit {
                    task.cancel()
                    channel.close(promise: nil)
                }
            }
        }
        let channelForFailures = channel.channel
        let acks = MQTTAckSequencer(limit: Int(MQTTConnection.receiveMaximum)) { packet in
            if case .disconnect = packet {
                // A 3.1.1 client cannot be told that a publish was not stored: close.
                channelForFailures.close(promise: nil)
                return
            }
            session.send(packet)
        }
        // The offline queue: what the session's subscriptions matched while it was away,
        // replayed beside the reader (whose PUBACKs let the replay go on).
        let replaying = opened.resume.map { resume in
            Task { [gateway, logger, channel = channel.channel] in
                do {
                    try await gateway.replay(session, resume)
                } catch {
                    if !Task.isCancelled {
                        logger.error(
                            "mqtt session replay failed",
                            metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
                    }
                    channel.close(promise: nil)
                }
            }
        }
        // A persistent session's record is kept current while it is connected (every second
        // when it changed, at once for subscriptions), not only written at the disconnect.
        let checkpointer = session.persistent ? MQTTCheckpointer(gateway: gateway, session: session) : nil
        var checkpointing: Task<Void, Never>?
        var checkpointTicks: RepeatedTask?
        if let checkpointer {
            // Ticks are skipped while the replay runs (positions are the stored record's then).
            checkpointing = Task { await checkpointer.run() }
            checkpointTicks = channel.channel.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) {
                _ in
                checkpointer.tick()
            }
        }
        var state = opened.state
        do {
            while let packet = try await packets.next() {
                lastSeen.touch()
                if try await perform(
                    state.receive(packet), session: session, acks: acks, checkpointer: checkpointer, shares: shares,
                    ending: &ending)
                {
                    break
                }
            }
        } catch let error as MQTTProtocolError {
            MQTTMetrics.protocolErrors.increment()
            logger.info("mqtt protocol error", metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
            if session.version == .v5 {
                session.send(
                    .disconnect(.init(reasonCode: error.reasonCode, properties: [.reasonString(error.message)])))
            }
        } catch {
            logger.debug(
                "mqtt connection ended", metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
        }
        keepAliveCheck?.cancel()
        replaying?.cancel()
        shares.stop()
        checkpointTicks?.cancel()
        checkpointer?.finish()
        // Closes the socket once what was sent is written.
        session.close()
        // The last checkpoint lands before the final record.
        await checkpointing?.value
        return ending
    }

    /// Stores a persistent session's record before a SUBACK or UNSUBACK says its subscriptions
    /// changed; when it cannot be stored no acknowledgement goes out: the connection ends with
    /// 0x80 (unspecified error) and the client subscribes again when it reconnects.
    private func stored(_ checkpointer: MQTTCheckpointer?) async throws {
        guard let checkpointer, !(await checkpointer.storeNow()) else { return }
        throw MQTTProtocolError(0x80, "the session record could not be stored")
    }

    /// Carries out what the protocol rules made of one packet; true when the conversation ends
    /// (DISCONNECT). A violation is thrown: the caller tells a 5.0 client and closes.
    @inline(never)
    private func perform(
        _ action: MQTTConnectionState.Action, session: MQTTSession, acks: MQTTAckSequencer,
        checkpointer: MQTTCheckpointer?, shares: MQTTSharePullers, ending: inout Ending
    ) async throws -> Bool {
        switch action {
        case .store(let topic, let publish):
            if publish.qos > 0, session.version == .v5,
                !(publish.qos == 2 && session.inboundQoS2Seen(publish.packetID ?? 0)),
                acks.qos1InFlight + session.inboundQoS2Count >= Int(Self.receiveMaximum)
            {
                // MQTT 4.9: more unacknowledged QoS 1/2 publishes than the receive maximum this
                // gateway announced (QoS 2 ones count until PUBCOMP).
                throw MQTTProtocolError(0x93, "receive maximum \(Self.receiveMaximum) exceeded")
            }
            await acks.waitForRoom(qos: publish.qos)
            handlePublish(publish, topic: topic, session: session, acks: acks, checkpointer: checkpointer)
        case .completed(let packetID):
            if let lease = session.acknowledged(packetID) { shares.settler.settle([lease], as: .ack) }
        case .received(let packetID):
            let known = session.received(packetID)
            guard known, let checkpointer else {
                session.send(.pubrel(.init(packetID: packetID, reasonCode: known ? 0 : 0x92)))
                return false
            }
            // The client has the message: that is in the stored record before PUBREL, so a
            // restarted gateway sends PUBREL again, not the message as new (PUBRELs keep the
            // order of their PUBRECs: the checkpointer answers in order).
            checkpointer.storeThen { stored in
                if stored { session.send(.pubrel(.init(packetID: packetID))) } else { session.endForUnstoredRecord() }
            }
        case .release(let packetID):
            let known = session.inboundQoS2Released(packetID)
            session.send(.pubcomp(.init(packetID: packetID, reasonCode: known ? 0 : 0x92)))
        case .subscribe(let packetID, let checks, let identifier):
            try await handleSubscribe(
                packetID: packetID, checks, identifier: identifier, session: session, checkpointer: checkpointer,
                shares: shares)
        case .unsubscribe(let packetID, let filters):
            var codes: [UInt8] = []
            for filter in filters {
                let existed = gateway.unsubscribe(session, filter)
                codes.append(existed ? 0 : 0x11)
                if existed, let queue = gateway.shareQueue(filter) {
                    // What the member has in flight is still completed; what it was not sent yet
                    // goes back to the group, and it takes no more.
                    session.wakeSharePuller(queue)
                    shares.settler.settle(session.takeWaitingShares(queue), as: .requeue(delayMilliseconds: 0))
                    await gateway.leaveShare(queue, clientID: session.clientID)
                }
            }
            try await stored(checkpointer)
            session.send(.unsuback(.init(packetID: packetID, reasonCodes: codes)))
        case .send(let packet):
            session.send(packet)
        case .end(let normal, let expiry):
            ending.normalDisconnect = normal
            ending.expiryAtDisconnect = expiry
            return true
        case .violation(let error):
            throw error
        }
        return false
    }

    /// After the conversation: the session record (persistent sessions), the will.
    @inline(never)
    private func close(_ opened: Opened, _ ending: Ending, shares: MQTTSharePullers) async {
        let session = opened.session
        if let positions = gateway.unregister(session) {
            let expiry = ending.expiryAtDisconnect ?? session.expiryInterval
            do {
                if session.persistent && expiry != 0 {
                    try await gateway.storeSession(
                        session.clientID, session.record(positions: positions, expiryInterval: expiry))
                } else if session.persistent {
                    try await gateway.forgetSession(session.clientID)
                }
            } catch {
                logger.error(
                    "session not stored", metadata: ["mqtt.client": "\(session.clientID)", "error": "\(error)"])
            }
            // Still the registered session: its shared messages go back to their groups when
            // the session ends here — not when another connection took it over, here or (its
            // takeover not answered in time) through another gateway, whose session now holds
            // the client's leases.
            let held = gateway.heldShares(of: session)
            if !held.isEmpty, await gateway.holdsSession(session.clientID) {
                await gateway.endShares(
                    clientID: session.clientID, held, sessionEnded: !(session.persistent && expiry != 0),
                    settler: shares.settler)
            } else {
                await gateway.flushShareSettler(session.clientID)
            }
        } else {
            await gateway.flushShareSettler(session.clientID)
        }
        if !ending.normalDisconnect, let pending = opened.will, session.permits(.write, pending.topic) {
            var properties = pending.properties
            var delay: UInt32 = 0
            for case .willDelayInterval(let seconds) in properties.items { delay = seconds }
            properties.items.removeAll { if case .willDelayInterval = $0 { true } else { false } }
            // A will waits for the shorter of its delay and the session's life (MQTT 3.1.3.2.2).
            if let expiry = ending.expiryAtDisconnect ?? session.expiryInterval, session.version == .v5 {
                delay = min(delay, expiry)
            }
            let message = MQTTMessage(
                topic: pending.topic, payload: ByteBuffer(bytes: pending.payload), qos: pending.qos,
                retain: pending.retain,
                publisher: session.clientID, properties: properties, timestamp: WallClock.milliseconds())
            // A newer connection of the client took this one over (the half-open-then-reconnect
            // case): it came back before the delay ran out, so a delayed will is not sent
            // [MQTT-3.1.3-9]. Its CONNECT cancelled pending wills before this one was scheduled.
            if delay == 0 || !gateway.isTakenOver(session) {
                gateway.publishWill(message, of: session.clientID, after: .seconds(Int64(delay)))
            }
        }
    }

    /// Where a resumed session's replay starts and ends, per shard.
    struct Resume {
        var from: [String: UInt64]
        var to: [String: UInt64]
        /// `from` names every shard followed when it was taken (MQTTSessionRecord.complete).
        var complete: Bool
    }

    /// Answers CONNECT; returns the registered session and, for a resumed session, what to
    /// replay — or nil after a refusing CONNACK.
    /// A finished enhanced authentication: who, and what CONNACK carries back.
    struct EnhancedAuthentication {
        var user: String
        var method: String
        var finalData: [UInt8]
    }

    /// Runs a SCRAM-SHA-256 exchange (CONNECT → AUTH 0x18 → AUTH 0x18 → CONNACK, MQTT 4.12)
    /// against the SCRAM users file. Nil after a refusing CONNACK: 0x8C for a method that is not
    /// configured, 0x87 for failed authentication.
    private func authenticate(
        _ connect: MQTTPacket.Connect, method: String,
        packets: inout NIOAsyncChannelInboundStream<MQTTPacket>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> EnhancedAuthentication? {
        func refuse(_ code: UInt8, _ reason: String) async throws -> EnhancedAuthentication? {
            logger.info(
                "mqtt authentication refused", metadata: ["mqtt.client": "\(connect.clientID)", "reason": "\(reason)"])
            try await outbound.write(
                Self.bytes(
                    .connack(.init(sessionPresent: false, reasonCode: code, properties: [.reasonString(reason)])), .v5))
            return nil
        }
        guard method == "SCRAM-SHA-256", let users = gateway.configuration.scramUsers else {
            return try await refuse(0x8C, "authentication method \(method) is not configured")
        }
        var scram = SCRAMServer()
        do {
            let clientFirst = connect.properties.authenticationData ?? []
            let serverFirst = try scram.receive(clientFirst) { users[$0] }
            try await outbound.write(
                Self.bytes(
                    .auth(
                        .init(
                            reasonCode: 0x18,
                            properties: [.authenticationMethod(method), .authenticationData(serverFirst)])),
                    .v5))
            guard case .auth(let answer)? = try await packets.next(), answer.reasonCode == 0x18,
                answer.properties.authenticationMethod == method
            else {
                return try await refuse(0x82, "expected AUTH (continue) with method \(method)")
            }
            let clientFinal = answer.properties.authenticationData ?? []
            let serverFinal = try scram.receive(clientFinal) { users[$0] }
            guard let user = scram.authenticatedUser else { return try await refuse(0x87, "not authenticated") }
            return EnhancedAuthentication(user: user, method: method, finalData: serverFinal)
        } catch let error as SCRAMError {
            return try await refuse(0x87, "\(error)")
        }
    }

    private func accept(
        _ connect: MQTTPacket.Connect, state: inout MQTTConnectionState, enhanced: EnhancedAuthentication?,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> (MQTTSession, Resume?, MQTTHeldShares?, keepAlive: UInt16)? {
        let version = connect.version
        let configuration = gateway.configuration
        let credentials: MQTTConnectionState.Credentials
        if let enhanced {
            credentials = .enhanced(user: enhanced.user)
        } else if connect.username != nil || connect.password != nil {
            // A mosquitto password file when one is given, else the users file (SCRAM keys, the
            // one every gateway can share): the password is checked by deriving the same keys.
            // Key derivation takes milliseconds: on the blocking pool, not the cooperative one.
            let (user, password) = (connect.username, connect.password ?? [])
            let valid = try await NIOThreadPool.singleton.runIfActive {
                guard let user else { return false }
                if let passwords = configuration.passwords { return passwords.verify(user: user, password: password) }
                return configuration.scramUsers?.verify(user: user, password: password) ?? false
            }
            credentials = .password(valid: valid)
        } else {
            credentials = .none
        }
        let accepted: MQTTConnectionState.Accepted
        switch state.connect(
            connect, credentials: credentials,
            assignedID: "strata-" + String(UInt64.random(in: 1...UInt64.max), radix: 36))
        {
        case .refuse(let code):
            try await outbound.write(Self.bytes(.connack(.init(sessionPresent: false, reasonCode: code)), version))
            return nil
        case .accept(let taken):
            accepted = taken
        }
        let (clientID, expiry, persistent) = (accepted.clientID, accepted.expiry, accepted.persistent)
        // A session belongs to the user who made it: another user's CONNECT with its client id
        // is refused (not authorized), so it cannot resume it, read what waits in it, end it or
        // take its connection over. Checked before the claim below ends it elsewhere.
        let user = enhanced?.user ?? connect.username
        if let owner = try await gateway.sessionOwner(clientID), owner.user != user {
            logger.info(
                "mqtt client id refused: its session belongs to another user",
                metadata: ["mqtt.client": "\(clientID)", "mqtt.user": "\(user ?? "(anonymous)")"])
            try await outbound.write(
                Self.bytes(.connack(.init(sessionPresent: false, reasonCode: version == .v5 ? 0x87 : 5)), version))
            return nil
        }
        // A session another gateway process holds is ended there first (its record stored).
        try await gateway.claimSession(clientID)
        var stored: MQTTSessionRecord?
        // The session this CONNECT ends instead of resuming it: its shared messages go back to
        // their groups.
        var ended: MQTTHeldShares?
        let live = gateway.connectedSession(clientID)
        if let (live, positions) = live, live.persistent, !connect.cleanStart {
            stored = live.record(positions: positions, expiryInterval: live.expiryInterval)
        } else if let (live, _) = live {
            ended = gateway.heldShares(of: live)
            if connect.cleanStart { try await gateway.forgetSession(clientID) }
        } else if let record = try await gateway.storedSession(clientID) {
            if connect.cleanStart || record.isExpired {
                ended = gateway.heldShares(of: record)
                try await gateway.forgetSession(clientID)
            } else {
                stored = record
            }
        } else if connect.cleanStart {
            try await gateway.forgetSession(clientID)
        }
        let session = MQTTSession(
            clientID: clientID, user: user, acl: configuration.acl, version: version,
            persistent: persistent, expiryInterval: expiry,
            receiveMaximum: Int(connect.properties.receiveMaximum ?? 65_535),
            maxQueued: configuration.maxQueuedMessages,
            clientMaxPacketSize: connect.properties.maximumPacketSize.map(Int.init),
            clientTopicAliasMaximum: connect.properties.topicAliasMaximum ?? 0,
            problemInformation: !connect.properties.items.contains(.requestProblemInformation(0)),
            channel: channel.channel,
            overflow: { [channel = channel.channel] in channel.close(promise: nil) })
        gateway.cancelWill(of: clientID)  // the client is back before its will's delay ran out
        let resend = stored.map { session.restore($0) } ?? []
        if stored != nil { session.beginReplay() }
        let (previous, positions) = gateway.register(session)
        if let previous {
            // Session takeover (MQTT 3.1.4-3): the older connection is closed.
            if previous.version == .v5 { previous.send(.disconnect(.init(reasonCode: 0x8E))) }
            previous.close()
        }
        var properties: MQTTProperties = []
        if version == .v5 {
            if let enhanced {
                properties.append(.authenticationMethod(enhanced.method))
                properties.append(.authenticationData(enhanced.finalData))
            }
            if accepted.assigned { properties.append(.assignedClientIdentifier(clientID)) }
            properties.append(.topicAliasMaximum(configuration.topicAliasMaximum))
            properties.append(.maximumPacketSize(UInt32(configuration.maxPacketSize)))
            properties.append(.retainAvailable(1))
            properties.append(.wildcardSubscriptionAvailable(1))
            properties.append(.subscriptionIdentifierAvailable(1))
            properties.append(.sharedSubscriptionAvailable(1))
            properties.append(.receiveMaximum(Self.receiveMaximum))
            if connect.properties.items.contains(.requestResponseInformation(1)) {
                // The topic prefix this client may use for responses (MQTT 4.10).
                properties.append(.responseInformation("responses/\(clientID)"))
            }
            if let lowered = accepted.serverKeepAlive { properties.append(.serverKeepAlive(lowered)) }
        }
        session.send(.connack(.init(sessionPresent: stored != nil, reasonCode: 0, properties: properties)))
        resend.forEach { session.send($0) }
        logger.debug("mqtt client connected", metadata: ["mqtt.client": "\(clientID)", "mqtt.version": "\(version)"])
        return (
            session, stored.map { Resume(from: $0.positions, to: positions, complete: $0.complete == true) },
            ended.flatMap { $0.isEmpty ? nil : $0 }, accepted.keepAlive
        )
    }

    /// Publishes a client may have in flight toward the gateway (announced to 5.0 clients).
    static let receiveMaximum: UInt16 = 1024

    /// Validates a PUBLISH and submits it to its bucket's appender without waiting: the
    /// acknowledgement (PUBACK / PUBREC) goes out through `acks`, in order, once stored.
    private func handlePublish(
        _ publish: MQTTPacket.Publish, topic: String, session: MQTTSession, acks: MQTTAckSequencer,
        checkpointer: MQTTCheckpointer?
    ) {
        let id = publish.packetID ?? 0
        guard session.permits(.write, topic) else {
            // Not authorized: 5.0 says so in the acknowledgement; a 3.1.1 publish is acknowledged
            // and dropped (3.1.1 has no way to refuse it).
            logger.info(
                "mqtt publish refused by ACL",
                metadata: ["mqtt.client": "\(session.clientID)", "mqtt.topic": "\(topic)"])
            MQTTMetrics.refused.increment()
            let code: UInt8 = session.version == .v5 ? 0x87 : 0
            let ack: MQTTPacket? =
                switch publish.qos {
                case 1: .puback(.init(packetID: id, reasonCode: code))
                case 2: .pubrec(.init(packetID: id, reasonCode: code))
                default: nil
                }
            if publish.qos > 0 {
                let ticket = acks.enqueue(onSuccess: ack, qos1: publish.qos == 1, onFailure: { _ in nil })
                acks.complete(ticket, .success(()))
            }
            return
        }
        let properties = publish.properties  // without its topic alias (MQTTConnectionState)
        let message = MQTTMessage(
            topic: topic, payload: publish.payload, qos: publish.qos, retain: publish.retain,
            publisher: session.clientID, properties: properties, timestamp: WallClock.milliseconds())
        if publish.qos == 2 {
            if session.inboundQoS2Seen(id) {
                // A resend of a message already taken: acknowledged again, stored once.
                let ticket = acks.enqueue(onSuccess: .pubrec(.init(packetID: id)), onFailure: { _ in nil })
                acks.complete(ticket, .success(()))
                return
            }
            session.inboundQoS2Accepted(id)
        }
        let v5 = session.version == .v5
        let success: MQTTPacket? =
            switch publish.qos {
            case 1: .puback(.init(packetID: id))
            case 2: .pubrec(.init(packetID: id))
            default: nil
            }
        let qos = publish.qos
        let logger = self.logger
        let storedTopic = topic
        MQTTTraffic.received(bytes: publish.payload.readableBytes)
        let arrived = ContinuousClock.now
        let notStored: @Sendable (any Error) -> Void = { error in
            MQTTMetrics.notStored.increment()
            logger.error("mqtt publish not stored", metadata: ["mqtt.topic": "\(storedTopic)", "error": "\(error)"])
        }
        if qos == 0 {
            // No acknowledgement, so no place in the acknowledgement order (MQTT 4.9: QoS 0
            // publishes are not in flight); counted only to bound what is not stored yet.
            acks.qos0Started()
            gateway.submit(message) { result in
                if case .failure(let error) = result { notStored(error) }
                acks.qos0Stored()
            }
            return
        }
        let ticket = acks.enqueue(onSuccess: success, qos1: qos == 1) { error in
            notStored(error)
            if qos == 2 { _ = session.inboundQoS2Released(id) }
            // A 5.0 client learns it from the reason code; a 3.1.1 client gets a closed
            // connection (and resends the unacknowledged publish).
            guard v5 else { return .disconnect(.init(reasonCode: 0x80)) }
            let ack = MQTTPacket.Ack(packetID: id, reasonCode: 0x80, properties: [.reasonString("\(error)")])
            return qos == 1 ? .puback(ack) : .pubrec(ack)
        }
        gateway.submit(message) { result in
            if qos > 0 { MQTTMetrics.publishAck.record(duration: ContinuousClock.now - arrived) }
            guard qos == 2, case .success = result, let checkpointer else {
                acks.complete(ticket, result)
                return
            }
            // Exactly once across a gateway crash: the packet id is in the stored session
            // record before PUBREC, so a DUP resent to a restarted gateway is not stored again.
            // A record that cannot be stored ends the connection without PUBREC (the message is
            // stored; the client resends it, and this gateway still knows the id).
            checkpointer.storeThen { stored in
                if stored { acks.complete(ticket, result) } else { session.endForUnstoredRecord() }
            }
        }
    }

    private func handleSubscribe(
        packetID: UInt16, _ checks: [MQTTConnectionState.SubscriptionCheck], identifier: UInt32?,
        session: MQTTSession, checkpointer: MQTTCheckpointer?, shares: MQTTSharePullers
    ) async throws {
        var codes: [UInt8] = []
        var retainedToSend: [(MQTTPacket.Subscription, Bool)] = []
        var sharedFilters: [String] = []
        for check in checks {
            guard case .valid(let subscription, let granted, let shared) = check else {
                if case .refused(let code) = check { codes.append(code) }
                continue
            }
            let filter = MQTTTopic.sharedSubscription(subscription.filter)?.filter ?? subscription.filter
            guard session.permits(.read, filter) else {
                codes.append(session.version == .v5 ? 0x87 : 0x80)  // not authorized
                continue
            }
            if shared {
                // The group's queue exists, reading every shard a match can be in, before the
                // SUBACK: what is published after it reaches the group.
                do {
                    try await gateway.joinAndDeclareShare(subscription.filter, of: session)
                } catch {
                    logger.error(
                        "mqtt shared subscription queue not declared",
                        metadata: [
                            "mqtt.client": "\(session.clientID)", "mqtt.filter": "\(subscription.filter)",
                            "error": "\(error)",
                        ])
                    codes.append(0x80)  // unspecified error / failure (3.1.1)
                    continue
                }
            }
            if shared { sharedFilters.append(subscription.filter) }
            let existed = gateway.subscribe(
                session,
                MQTTSession.Subscription(
                    filter: subscription.filter, qos: granted, noLocal: subscription.noLocal,
                    retainAsPublished: subscription.retainAsPublished, identifier: identifier))
            codes.append(granted)
            if !shared { retainedToSend.append((subscription, existed)) }  // none for shared ones (4.8.2)
        }
        try await stored(checkpointer)  // a granted subscription survives a gateway crash
        for filter in sharedFilters where session.subscription(filter) != nil {
            shares.start(filter, resume: false)
        }
        session.send(.suback(.init(packetID: packetID, reasonCodes: codes)))
        for (subscription, existed) in retainedToSend {
            guard subscription.retainHandling == 0 || (subscription.retainHandling == 1 && !existed) else { continue }
            for message in try await gateway.retained(matching: subscription.filter) {
                // Not held back by a replay (retained messages are not in its range).
                session.deliverNow(
                    message, qos: min(message.qos, min(subscription.qos, 2)), retain: true,
                    identifiers: identifier.map { [$0] } ?? [])
            }
        }
    }
}

/// When the last packet came in, for the keep-alive check.
final class LastSeen: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    func touch() { instant.withLock { $0 = .now } }
    var elapsed: Duration { ContinuousClock.now - instant.withLock { $0 } }
}
