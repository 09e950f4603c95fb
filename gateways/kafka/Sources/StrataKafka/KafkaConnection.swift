import Logging
import NIOCore
import NIOPosix
import StrataWire

/// One client connection. Requests are read in order and handled concurrently (a Fetch waiting
/// for data does not hold up a Produce behind it), and responses are written in request order,
/// as Kafka requires. What must happen in order — appends to one partition — is started before
/// the next request is read. A request that cannot be read closes the connection with a log line.
struct KafkaConnection {
    let gateway: KafkaGateway
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>

    func run() async {
        let peer = channel.channel.remoteAddress.map { "\($0)" } ?? "?"
        let host = channel.channel.remoteAddress?.ipAddress ?? "?"
        KafkaMetrics.connections.increment()
        defer { KafkaMetrics.connections.decrement() }
        do {
            try await channel.executeThenClose { inbound, outbound in
                let (responses, pending) = AsyncStream<Task<[ByteBuffer]?, Never>>.makeStream()
                let limiter = InflightLimiter(limit: gateway.configuration.maxInflightPerConnection)
                var state = KafkaConnectionState(sasl: gateway.configuration.users != nil)
                // The request-size gate of a connection that must authenticate, raised once it has.
                var gate = gateway.gates.gate(of: channel.channel)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { [channel = channel.channel] in
                        var writable = true
                        for await response in responses {
                            // After a failed write the rest is drained unwritten (the reader must
                            // not wait for slots that would never be released).
                            if let parts = await response.value, writable {
                                do {
                                    try await outbound.write(contentsOf: parts)
                                } catch {
                                    writable = false
                                    channel.close(promise: nil)
                                }
                            }
                            limiter.release()
                        }
                    }
                    do {
                        for try await frame in inbound {
                            await limiter.acquire()
                            if frame.getInteger(at: frame.readerIndex, as: Int16.self)
                                == KafkaAPI.saslAuthenticate.rawValue
                            {
                                // A PLAIN login derives the user's keys (milliseconds of PBKDF2):
                                // on the blocking pool, not the connections' threads.
                                let (answer, after) = try await NIOThreadPool.singleton.runIfActive {
                                    [state] in
                                    var changed = state
                                    return (try gateway.handle(frame, peer: host, state: &changed), changed)
                                }
                                state = after
                                pending.yield(answer)
                            } else {
                                pending.yield(try gateway.handle(frame, peer: host, state: &state))
                            }
                            if state.user != nil, let raised = gate {
                                raised.raise(to: gateway.configuration.maxRequestSize)
                                gate = nil
                            }
                            // A failed authentication is answered, then the connection closes.
                            if state.isClosing { break }
                        }
                    } catch let error as KafkaProtocolError {
                        KafkaMetrics.protocolErrors.increment()
                        gateway.logger.warning(
                            "kafka connection closed on a bad request",
                            metadata: ["kafka.peer": "\(peer)", "error": "\(error)"])
                    } catch {
                        gateway.logger.debug(
                            "kafka connection lost", metadata: ["kafka.peer": "\(peer)", "error": "\(error)"])
                    }
                    // Answers to the requests read so far still go out, then the connection closes.
                    pending.finish()
                    try await group.next()
                    group.cancelAll()
                }
            }
        } catch {
            gateway.logger.debug("kafka connection ended", metadata: ["kafka.peer": "\(peer)", "error": "\(error)"])
        }
    }
}

/// The work that answers a request.
typealias KafkaWork = @Sendable () async -> KafkaWriter

/// A parsed request header (v1, or v2 for flexible versions).
struct KafkaRequestHeader {
    var api: KafkaAPI
    var version: Int16
    var correlationID: Int32
    var clientID: String?
    var flexible: Bool
    /// The client's address (DescribeGroups shows it).
    var clientHost: String
    /// The SASL-authenticated user (nil: SASL is off).
    var user: String?
}

extension KafkaGateway {
    /// Reads a request and starts handling it; the task yields the framed response (nil: none,
    /// as for Produce with acks=0). Throws for a request that cannot be read or is not served.
    func handle(_ frame: ByteBuffer, peer: String, state: inout KafkaConnectionState) throws -> Task<
        [ByteBuffer]?, Never
    > {
        var reader = KafkaReader(buffer: frame, flexible: false)
        let apiKey = try reader.int16()
        let version = try reader.int16()
        let correlationID = try reader.int32()
        let clientID = try reader.classicNullableString()
        guard let api = KafkaAPI(rawValue: apiKey) else {
            throw KafkaProtocolError("API key \(apiKey) (v\(version)) is not served by this gateway")
        }
        guard api.versions.contains(version) else {
            if api == .apiVersions {
                // KIP-511: answer in v0 with UNSUPPORTED_VERSION and the supported ranges.
                let body = Self.apiVersionsResponse(version: 0, error: .unsupportedVersion)
                return Task { Self.frame(correlationID: correlationID, headerTags: false, body: [body]) }
            }
            throw KafkaProtocolError("\(api) v\(version) is not served (versions \(api.versions))")
        }
        let flexible = api.isFlexible(version)
        reader = KafkaReader(buffer: reader.buffer, flexible: flexible)
        try reader.taggedFields()  // request header v2
        let user: String?
        switch state.admit(api) {
        case .serve(let admitted): user = admitted
        case .refuse(let reason): throw KafkaProtocolError(reason)
        }
        let header = KafkaRequestHeader(
            api: api, version: version, correlationID: correlationID, clientID: clientID, flexible: flexible,
            clientHost: peer, user: user)
        // ApiVersions' response header is v0 in every version (KIP-511).
        let headerTags = flexible && api != .apiVersions
        let started = ContinuousClock.now
        KafkaMetrics.requests[api]?.increment()
        let respond: @Sendable (KafkaWriter) -> [ByteBuffer] = { body in
            let framed = Self.frame(correlationID: correlationID, headerTags: headerTags, body: body.parts)
            KafkaMetrics.latency[api]?.record(duration: ContinuousClock.now - started)
            KafkaMetrics.bytesOut[api]?.increment(by: framed.reduce(0) { $0 + $1.readableBytes })
            return framed
        }
        switch api {
        case .apiVersions:
            if version >= 3 {
                _ = try reader.string()  // client software name
                _ = try reader.string()  // and version
                try reader.taggedFields()
            }
            let body = Self.apiVersionsResponse(version: version, error: .none)
            return Task { Self.frame(correlationID: correlationID, headerTags: false, body: [body]) }
        case .produce:
            return try produce(&reader, header, respond: respond)
        default:
            let work = try request(api, &reader, header, state: &state)
            return Task { respond(await work()) }
        }
    }

    /// Reads a request whose answer comes from one piece of work (every API but ApiVersions
    /// and Produce); the work runs in the task that answers.
    private func request(
        _ api: KafkaAPI, _ reader: inout KafkaReader, _ header: KafkaRequestHeader, state: inout KafkaConnectionState
    ) throws -> KafkaWork {
        let version = header.version
        switch api {
        case .metadata:
            let request = try MetadataRequest(&reader, version: version)
            return { await self.metadata(request, header) }
        case .fetch:
            let request = try FetchRequest(&reader, version: version)
            return { await self.fetch(request, header) }
        case .listOffsets:
            let request = try ListOffsetsRequest(&reader, version: version)
            return { await self.listOffsets(request, header) }
        case .createTopics:
            let request = try CreateTopicsRequest(&reader, version: version)
            return { await self.createTopics(request, header) }
        case .deleteTopics:
            let request = try DeleteTopicsRequest(&reader, version: version)
            return { await self.deleteTopics(request, header) }
        case .initProducerID:
            let body = initProducerID(try InitProducerIDRequest(&reader, version: version), header)
            return { body }
        case .findCoordinator:
            let body = try findCoordinator(&reader, header)
            return { body }
        case .saslHandshake:
            let body = try saslHandshake(&reader, header, state: &state)
            return { body }
        case .saslAuthenticate:
            let body = try saslAuthenticate(&reader, header, state: &state)
            return { body }
        case .joinGroup: return try joinGroup(&reader, header)
        case .syncGroup: return try syncGroup(&reader, header)
        case .heartbeat: return try heartbeat(&reader, header)
        case .leaveGroup: return try leaveGroup(&reader, header)
        case .offsetCommit: return try offsetCommit(&reader, header)
        case .offsetFetch: return try offsetFetch(&reader, header)
        case .describeGroups: return try describeGroups(&reader, header)
        case .listGroups: return try listGroups(&reader, header)
        case .createPartitions: return try createPartitions(&reader, header)
        case .describeConfigs: return try describeConfigs(&reader, header)
        case .alterConfigs: return try alterConfigs(&reader, header, incremental: false)
        case .incrementalAlterConfigs: return try alterConfigs(&reader, header, incremental: true)
        case .apiVersions, .produce:
            preconditionFailure("\(api) is answered by handle(_:peer:state:) itself")
        }
    }

    /// Size, correlation id, the header's (empty) tagged fields when it is v1, then the body's
    /// parts as they are.
    static func frame(correlationID: Int32, headerTags: Bool, body: [ByteBuffer]) -> [ByteBuffer] {
        var header = ByteBuffer()
        header.reserveCapacity(9)
        header.writeInteger(Int32(4 + (headerTags ? 1 : 0) + body.reduce(0) { $0 + $1.readableBytes }))
        header.writeInteger(correlationID)
        if headerTags { header.writeInteger(UInt8(0)) }
        var frame: [ByteBuffer] = []
        frame.reserveCapacity(body.count + 1)
        frame.append(header)
        for part in body where part.readableBytes > 0 { frame.append(part) }
        return frame
    }

    static func apiVersionsResponse(version: Int16, error: KafkaError) -> ByteBuffer {
        var writer = KafkaWriter(flexible: version >= 3)
        writer.int16(error.rawValue)
        writer.array(KafkaAPI.allCases) { writer, api in
            writer.int16(api.rawValue)
            writer.int16(api.versions.lowerBound)
            writer.int16(api.versions.upperBound)
            writer.taggedFields()
        }
        if version >= 1 { writer.int32(0) }  // throttle time
        writer.taggedFields()
        return writer.buffer
    }
}
