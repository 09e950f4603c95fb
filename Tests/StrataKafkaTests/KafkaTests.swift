import Foundation
import Logging
import NIOCore
import NIOTestUtils
import StrataAuth
import StrataClient
import StrataJournal
import StrataTestSupport
import Testing

@testable import StrataKafka

@Suite struct KafkaCodecTests {
    @Test func primitivesRoundTripInBothEncodings() throws {
        for flexible in [false, true] {
            var writer = KafkaWriter(flexible: flexible)
            writer.int16(-3)
            writer.string("topic")
            writer.nullableString(nil)
            writer.array(["a", "bc"]) { $0.string($1) }
            writer.count(nil)
            writer.nullableBytes(ByteBuffer(bytes: [1, 2, 3]))
            writer.unsignedVarint(300)
            writer.taggedFields()
            var reader = KafkaReader(buffer: writer.buffer, flexible: flexible)
            #expect(try reader.int16() == -3)
            #expect(try reader.string() == "topic")
            #expect(try reader.nullableString() == nil)
            #expect(try reader.array { try $0.string() } == ["a", "bc"])
            #expect(try reader.nullableArray { try $0.string() } == nil)
            #expect(try reader.nullableBytes().map { Array($0.readableBytesView) } == [1, 2, 3])
            #expect(try reader.unsignedVarint() == 300)
            try reader.taggedFields()
            #expect(reader.buffer.readableBytes == 0)
        }
    }

    @Test func taggedFieldsAreSkipped() throws {
        // Two tagged fields (tag 0: 2 bytes, tag 5: 1 byte), then an int32.
        var reader = KafkaReader(
            buffer: ByteBuffer(bytes: [2, 0, 2, 0xAA, 0xBB, 5, 1, 0xCC, 0, 0, 0, 7]), flexible: true)
        try reader.taggedFields()
        #expect(try reader.int32() == 7)
    }

    @Test func lengthsAndCountsBeyondTheBytesLeftAreRefused() {
        // An array of 2^31-1 entries, a string of 1000 bytes, compact bytes of 2^28: all in a few bytes.
        var array = KafkaReader(buffer: ByteBuffer(bytes: [0x7F, 0xFF, 0xFF, 0xFF, 0]), flexible: false)
        #expect(throws: KafkaProtocolError.self) { try array.array { try $0.int8() } }
        var string = KafkaReader(buffer: ByteBuffer(bytes: [0x03, 0xE8, 0x41]), flexible: false)
        #expect(throws: KafkaProtocolError.self) { try string.string() }
        var bytes = KafkaReader(buffer: ByteBuffer(bytes: [0x80, 0x80, 0x80, 0x80, 0x01]), flexible: true)
        #expect(throws: KafkaProtocolError.self) { try bytes.nullableBytes() }
        var varint = KafkaReader(buffer: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), flexible: true)
        #expect(throws: KafkaProtocolError.self) { try varint.unsignedVarint() }
    }

    @Test func framesAreCutAndOversizeIsRefusedFromThePrefix() throws {
        var frame = ByteBuffer()
        frame.writeInteger(Int32(10))
        frame.writeBytes([UInt8](repeating: 7, count: 10))
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [(frame, [ByteBuffer(bytes: [UInt8](repeating: 7, count: 10))])],
            decoderFactory: { KafkaFrameDecoder(maxFrameSize: 100) })
        var oversize = ByteBuffer()
        oversize.writeInteger(Int32(101))
        #expect(throws: KafkaProtocolError.self) { _ = try KafkaFrameDecoder.frame(from: &oversize, maxFrameSize: 100) }
    }

    @Test func onlyWholeV2BatchesAreTaken() throws {
        let batch = RecordBatch.encode([Record(timestamp: 1, value: Array("v".utf8))])
        var two = batch
        var copy = batch
        two.writeBuffer(&copy)
        #expect(try KafkaGateway.splitBatches(two).count == 2)
        var magic1 = batch
        magic1.setInteger(Int8(1), at: 16)
        #expect(throws: KafkaFailure.self) { try KafkaGateway.splitBatches(magic1) }
        #expect(throws: KafkaFailure.self) { try KafkaGateway.splitBatches(batch.getSlice(at: 0, length: 40)) }
        #expect(throws: KafkaFailure.self) { try KafkaGateway.splitBatches(nil) }
    }

    @Test func apiVersionsListsEveryServedAPI() {
        var reader = KafkaReader(buffer: KafkaGateway.apiVersionsResponse(version: 3, error: .none), flexible: true)
        #expect((try? reader.int16()) == 0)
        let keys =
            (try? reader.array { reader -> Int16 in
                let key = try reader.int16()
                _ = try reader.int16()
                _ = try reader.int16()
                try reader.taggedFields()
                return key
            }) ?? []
        #expect(keys == KafkaAPI.allCases.map(\.rawValue))
    }
}

@Suite struct KafkaIdempotenceTests {
    /// Records stamped now: the topics' default retention (7 days) would delete older ones
    /// under the test's feet when the journal's maintenance runs.
    static func batch(_ values: [String], producer: Int64 = 42, epoch: Int16 = 0, sequence: Int32) -> ByteBuffer {
        RecordBatch.encode(
            values.map { Record(timestamp: WallClock.milliseconds(), value: Array($0.utf8)) }, producerID: producer,
            producerEpoch: epoch, baseSequence: sequence)
    }

    static func failure(_ task: Task<AppendResult, any Error>) async -> KafkaError? {
        do {
            _ = try await task.value
            return nil
        } catch {
            return KafkaFailure.from(error).code
        }
    }

    @Test func sequencesDuplicatesGapsAndEpochs() async throws {
        try await withTemporaryDirectory { directory in
            let journal = try Journal(
                configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
            defer { journal.close() }
            let client = InProcessJournalClient(journal: journal, node: "test")
            let gateway = KafkaGateway(configuration: .init(), journal: client, logger: Logger(label: "test"))
            _ = try await gateway.createTopic("t", partitions: 1, configs: [:])
            let shard = KafkaGateway.shardName("t", 0)
            let first = try await gateway.submitAppend(shard: shard, batch: Self.batch(["a", "b", "c"], sequence: 0))
                .value
            #expect(first.baseOffset == 0)
            // The same batch again (a producer retry): acknowledged with its offsets, not stored twice.
            let retry = try await gateway.submitAppend(shard: shard, batch: Self.batch(["a", "b", "c"], sequence: 0))
                .value
            #expect(retry == first)
            #expect(try await client.describeShard(shard).endOffset == 3)
            // A gap is refused; the next sequence is taken.
            #expect(
                await Self.failure(gateway.submitAppend(shard: shard, batch: Self.batch(["x"], sequence: 5)))
                    == .outOfOrderSequenceNumber)
            let next = try await gateway.submitAppend(shard: shard, batch: Self.batch(["d"], sequence: 3)).value
            #expect(next.baseOffset == 3)
            // A gateway that never saw this producer (a restart) reads its state back from the data.
            let restarted = KafkaGateway(configuration: .init(), journal: client, logger: Logger(label: "test"))
            #expect(try await restarted.submitAppend(shard: shard, batch: Self.batch(["d"], sequence: 3)).value == next)
            #expect(try await client.describeShard(shard).endOffset == 4)
            // A new epoch starts over; the old one is fenced.
            _ = try await restarted.submitAppend(shard: shard, batch: Self.batch(["e"], epoch: 1, sequence: 0)).value
            #expect(
                await Self.failure(restarted.submitAppend(shard: shard, batch: Self.batch(["f"], sequence: 4)))
                    == .invalidProducerEpoch)
            #expect(try await client.describeShard(shard).endOffset == 5)
        }
    }
}

extension KafkaIdempotenceTests {
    /// Producer states are bounded; an evicted producer's retry is still recognised (its
    /// state is read back from the partition's data).
    /// A member of the current generation commits while another member's join has the group
    /// preparing a rebalance (the at-least-once pattern: commit in the revoke callback), as
    /// Kafka's coordinator allows; during CompletingRebalance the answer is
    /// REBALANCE_IN_PROGRESS, and an old generation is ILLEGAL_GENERATION.
    @Test func commitsAreTakenWhileARebalanceIsPrepared() async throws {
        try await withTemporaryDirectory { directory in
            let journal = try Journal(
                configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
            defer { journal.close() }
            let groups = KafkaGroupCoordinator(
                journal: InProcessJournalClient(journal: journal, node: "test"), logger: Logger(label: "test"))
            func request(_ memberID: String) -> KafkaGroupCoordinator.JoinRequest {
                KafkaGroupCoordinator.JoinRequest(
                    groupID: "g", sessionTimeout: 10_000, rebalanceTimeout: 30_000, memberID: memberID, instanceID: nil,
                    protocolType: "consumer", protocols: [.init(name: "range", metadata: [])], clientID: "c",
                    clientHost: "h", requireKnownMemberID: false)
            }
            let first = await groups.join(request(""))
            #expect(first.error == .none && first.generation == 1)
            let a = first.memberID
            _ = await groups.sync(groupID: "g", generation: 1, memberID: a, assignments: [(a, [1])])
            #expect(await groups.validateCommit(groupID: "g", generation: 1, memberID: a) == .none)

            // B joins: the group prepares a rebalance and waits for A to join again.
            async let second = groups.join(request(""))
            var preparing = false
            for _ in 0..<200 where !preparing {
                try await Task.sleep(for: .milliseconds(10))
                preparing = await groups.describe("g")?.state == .preparingRebalance
            }
            #expect(preparing)
            #expect(await groups.validateCommit(groupID: "g", generation: 1, memberID: a) == .none)

            // A joins again: generation 2, CompletingRebalance until the leader syncs.
            let rejoined = await groups.join(request(a))
            let b = await second
            #expect(rejoined.generation == 2 && b.generation == 2)
            #expect(await groups.validateCommit(groupID: "g", generation: 2, memberID: a) == .rebalanceInProgress)
            #expect(await groups.validateCommit(groupID: "g", generation: 1, memberID: a) == .illegalGeneration)
        }
    }

    @Test func producerStatesAreBoundedAndRebuilt() async throws {
        try await withTemporaryDirectory { directory in
            let journal = try Journal(
                configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
            defer { journal.close() }
            let client = InProcessJournalClient(journal: journal, node: "test")
            var configuration = KafkaGateway.Configuration()
            configuration.maxProducerStates = 10
            let gateway = KafkaGateway(configuration: configuration, journal: client, logger: Logger(label: "test"))
            _ = try await gateway.createTopic("t", partitions: 1, configs: [:])
            let shard = KafkaGateway.shardName("t", 0)
            var firsts: [AppendResult] = []
            for producer in 1...30 {
                firsts.append(
                    try await gateway.submitAppend(
                        shard: shard, batch: Self.batch(["p\(producer)"], producer: Int64(producer), sequence: 0)
                    ).value)
            }
            #expect(gateway.producers.entryCount <= 10)
            // Producer 1 was evicted long ago: its retry is still a duplicate, not a second record.
            let retry = try await gateway.submitAppend(
                shard: shard, batch: Self.batch(["p1"], producer: 1, sequence: 0)
            ).value
            #expect(retry == firsts[0])
            #expect(try await client.describeShard(shard).endOffset == 30)
        }
    }
}

/// Seeded mutations of valid requests of every kind through the gateway's request handling:
/// each is answered or refused with a KafkaProtocolError (the connection would close), never
/// a crash or a hang.
@Suite struct KafkaRequestFuzzTests {
    static func request(_ api: KafkaAPI, _ version: Int16, _ body: (inout KafkaWriter) -> Void) -> [UInt8] {
        let flexible = api.isFlexible(version)
        var writer = KafkaWriter(flexible: flexible)
        writer.int16(api.rawValue)
        writer.int16(version)
        writer.int32(1)
        writer.buffer.writeInteger(Int16(4))
        writer.buffer.writeString("fuzz")
        if flexible { writer.taggedFields() }
        body(&writer)
        return Array(writer.buffer.readableBytesView)
    }

    static var seeds: [[UInt8]] {
        let batch = RecordBatch.encode([Record(timestamp: 1, value: Array("v".utf8))])
        return [
            request(.apiVersions, 3) { w in
                w.string("c")
                w.string("1")
                w.taggedFields()
            },
            request(.metadata, 12) { w in
                w.array(["t"]) { w, name in
                    w.uuid([UInt8](repeating: 0, count: 16))
                    w.nullableString(name)
                    w.taggedFields()
                }
                w.bool(true)
                w.bool(false)
                w.taggedFields()
            },
            request(.metadata, 1) { w in w.array(["t"]) { $0.string($1) } },
            request(.produce, 9) { w in
                w.nullableString(nil)
                w.int16(-1)
                w.int32(1000)
                w.array(["t"]) { w, name in
                    w.string(name)
                    w.array([Int32(0)]) { w, p in
                        w.int32(p)
                        w.nullableBytes(batch)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.taggedFields()
            },
            request(.fetch, 12) { w in
                w.int32(-1)
                w.int32(0)
                w.int32(1)
                w.int32(1 << 20)
                w.int8(0)
                w.int32(0)
                w.int32(-1)
                w.array(["t"]) { w, name in
                    w.string(name)
                    w.array([Int32(0)]) { w, p in
                        w.int32(p)
                        w.int32(-1)
                        w.int64(0)
                        w.int32(-1)
                        w.int64(-1)
                        w.int32(1 << 20)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.array([Int]()) { _, _ in }
                w.string("")
                w.taggedFields()
            },
            request(.listOffsets, 7) { w in
                w.int32(-1)
                w.int8(0)
                w.array(["t"]) { w, name in
                    w.string(name)
                    w.array([Int64(-2)]) { w, ts in
                        w.int32(0)
                        w.int32(-1)
                        w.int64(ts)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.taggedFields()
            },
            request(.createTopics, 7) { w in
                w.array(["n"]) { w, name in
                    w.string(name)
                    w.int32(1)
                    w.int16(1)
                    w.array([Int]()) { _, _ in }
                    w.array([("retention.ms", "1000")]) { w, c in
                        w.string(c.0)
                        w.nullableString(c.1)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.int32(1000)
                w.bool(true)
                w.taggedFields()
            },
            request(.joinGroup, 7) { w in
                w.string("g")
                w.int32(10_000)
                w.int32(10_000)
                w.string("")
                w.nullableString(nil)
                w.string("consumer")
                w.array(["range"]) { w, name in
                    w.string(name)
                    w.nullableBytes(ByteBuffer(bytes: [0, 1]))
                    w.taggedFields()
                }
                w.taggedFields()
            },
            request(.offsetCommit, 8) { w in
                w.string("g")
                w.int32(-1)
                w.string("")
                w.nullableString(nil)
                w.array(["t"]) { w, name in
                    w.string(name)
                    w.array([Int32(0)]) { w, p in
                        w.int32(p)
                        w.int64(1)
                        w.int32(-1)
                        w.nullableString(nil)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.taggedFields()
            },
            request(.saslHandshake, 1) { w in w.string("PLAIN") },
            request(.describeConfigs, 4) { w in
                w.array(["t"]) { w, name in
                    w.int8(2)
                    w.string(name)
                    w.count(nil)
                    w.taggedFields()
                }
                w.bool(false)
                w.bool(false)
                w.taggedFields()
            },
            request(.alterConfigs, 2) { w in
                w.array(["t"]) { w, name in
                    w.int8(2)
                    w.string(name)
                    w.array([("retention.ms", "1000")]) { w, c in
                        w.string(c.0)
                        w.nullableString(c.1)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.bool(false)
                w.taggedFields()
            },
            request(.incrementalAlterConfigs, 1) { w in
                w.array(["t"]) { w, name in
                    w.int8(2)
                    w.string(name)
                    w.array([("retention.bytes", Int8(0), "4096")]) { w, c in
                        w.string(c.0)
                        w.int8(c.1)
                        w.nullableString(c.2)
                        w.taggedFields()
                    }
                    w.taggedFields()
                }
                w.bool(true)
                w.taggedFields()
            },
        ]
    }

    @Test func mutatedRequestsAreAnsweredOrRefused() async throws {
        try await withTemporaryDirectory { directory in
            let journal = try Journal(
                configuration: JournalConfiguration(dataDirectory: directory), logger: Logger(label: "test"))
            defer { journal.close() }
            var configuration = KafkaGateway.Configuration()
            configuration.autoCreateTopics = false
            var quiet = Logger(label: "test")
            quiet.logLevel = .critical  // thousands of refused requests
            let gateway = KafkaGateway(
                configuration: configuration, journal: InProcessJournalClient(journal: journal, node: "test"),
                logger: quiet)
            _ = try await gateway.createTopic("t", partitions: 1, configs: [:])
            let seeds = Self.seeds
            // Every seed is valid as it is.
            for seed in seeds {
                var state = KafkaConnectionState(sasl: false)
                let answer = try await gateway.handle(ByteBuffer(bytes: seed), peer: "test", state: &state).value
                #expect(answer != nil)
            }
            var rng = SeededMutator(seed: 9092)
            var refused = 0
            for iteration in 0..<6_000 {
                let input = rng.mutate(seeds[iteration % seeds.count])
                do {
                    var state = KafkaConnectionState(sasl: false)
                    let task = try gateway.handle(ByteBuffer(bytes: input), peer: "test", state: &state)
                    // Answered within the capped fetch wait (mutated waits and group timeouts aside).
                    _ = await withTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            _ = await task.value
                            return true
                        }
                        group.addTask {
                            try? await Task.sleep(for: .milliseconds(200))
                            return false
                        }
                        defer { group.cancelAll() }
                        return await group.next()!
                    }
                } catch is KafkaProtocolError {
                    refused += 1
                }
            }
            #expect(refused > 100)
        }
    }
}

/// Group records are binary `KVRecord`s; JSON ones of earlier gateways still load.
@Suite struct KafkaGroupRecordTests {
    @Test func binaryRoundTripsAndJSONStillLoads() throws {
        let member = KafkaGroupCoordinator.Member(
            id: "m-1", instanceID: nil, clientID: "rdkafka", clientHost: "/127.0.0.1", sessionTimeout: 10_000,
            rebalanceTimeout: 30_000, protocols: [.init(name: "range", metadata: [0, 1, 2, 255])],
            assignment: Array(repeating: 200, count: 64), lastSeen: 1_700_000_000_000)
        let record = KafkaGroupCoordinator.Record(
            state: .stable, generation: 7, protocolType: "consumer", protocolName: "range", leader: "m-1",
            members: [member, member])
        for stored in [record.kvBytes, Array(try JSONEncoder().encode(record))] {
            let back = try KafkaGroupCoordinator.Record(stored: stored)
            #expect(back.state == .stable && back.generation == 7 && back.leader == "m-1")
            #expect(back.members.map(\.assignment) == [member.assignment, member.assignment])
            #expect(
                back.members.first?.protocols == member.protocols && back.members.first?.lastSeen == member.lastSeen)
        }
        #expect(throws: JournalError.self) {
            try KafkaGroupCoordinator.Record(stored: Array(record.kvBytes.dropLast()))
        }
    }
}

/// The Kafka connection's SASL rules as event → action tables (`KafkaConnectionState`).
@Suite struct KafkaConnectionStateTests {
    static let users = try! SCRAMUsers(parsing: SCRAMUsers.line(user: "alice", password: "secret"))

    static func plain(_ user: String, _ password: String) -> [UInt8] {
        [0] + Array(user.utf8) + [0] + Array(password.utf8)
    }

    @Test func withoutSASLEverythingIsServed() {
        var state = KafkaConnectionState(sasl: false)
        for api in KafkaAPI.allCases where api != .saslHandshake && api != .saslAuthenticate {
            #expect(state.admit(api) == .serve(user: nil))
        }
        #expect(state.handshake("PLAIN") == .handshake(.unsupportedSASLMechanism, offered: []))
        #expect(
            state.authenticate([], users: nil)
                == .failed(KafkaFailure(.illegalSASLState, "SASL is not enabled on this listener")))
        #expect(state.isClosing)
    }

    @Test func plainAndTheOrderOfThings() {
        var state = KafkaConnectionState(sasl: true)
        #expect(state.admit(.apiVersions) == .serve(user: nil))
        // An unknown mechanism is answered with the ones there are; the client may try again.
        #expect(
            state.handshake("GSSAPI") == .handshake(.unsupportedSASLMechanism, offered: ["PLAIN", "SCRAM-SHA-256"]))
        #expect(state.phase == .awaitingHandshake)
        #expect(state.handshake("PLAIN") == .handshake(.none, offered: ["PLAIN", "SCRAM-SHA-256"]))
        #expect(state.authenticate(Self.plain("alice", "secret"), users: Self.users) == .authenticate([]))
        #expect(state.user == "alice")
        #expect(state.admit(.metadata) == .serve(user: "alice"))
        // No second authentication on one connection.
        #expect(state.admit(.saslHandshake) == .refuse("saslHandshake after the connection authenticated"))
        #expect(state.isClosing)
    }

    @Test func refusalsCloseTheConnection() {
        let cases: [(String, (inout KafkaConnectionState) -> Bool)] = [
            (
                "a request before authentication",
                { $0.admit(.metadata) == .refuse("metadata request before SASL authentication") }
            ),
            (
                "authenticate before handshake",
                {
                    $0.authenticate(Self.plain("alice", "secret"), users: Self.users)
                        == .failed(KafkaFailure(.illegalSASLState, "SaslAuthenticate before SaslHandshake"))
                }
            ),
            (
                "a wrong password",
                { state in
                    _ = state.handshake("PLAIN")
                    return state.authenticate(Self.plain("alice", "wrong"), users: Self.users)
                        == .failed(
                            KafkaFailure(.saslAuthenticationFailed, "authentication failed: invalid credentials"))
                }
            ),
            (
                "a second handshake",
                { state in
                    _ = state.handshake("PLAIN")
                    return state.handshake("PLAIN")
                        == .handshake(.illegalSASLState, offered: ["PLAIN", "SCRAM-SHA-256"])
                }
            ),
        ]
        for (name, run) in cases {
            var state = KafkaConnectionState(sasl: true)
            #expect(run(&state), "\(name)")
            #expect(state.isClosing, "\(name) closes")
            #expect(state.admit(.apiVersions) != .serve(user: nil), "\(name): nothing is served after")
        }
    }

    @Test func scramTakesTwoRounds() throws {
        var state = KafkaConnectionState(sasl: true)
        _ = state.handshake("SCRAM-SHA-256")
        var client = SCRAMClient(user: "alice", password: "secret")
        guard case .authenticate(let serverFirst) = state.authenticate(client.firstMessage(), users: Self.users) else {
            Issue.record("client-first refused")
            return
        }
        #expect(state.user == nil)
        let final = try client.finalMessage(serverFirst: serverFirst)
        guard case .authenticate = state.authenticate(final, users: Self.users) else {
            Issue.record("client-final refused")
            return
        }
        #expect(state.user == "alice")
    }
}
