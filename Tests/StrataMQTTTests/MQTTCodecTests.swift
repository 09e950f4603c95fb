import NIOCore
import NIOTestUtils
import StrataMQTT
import StrataTestSupport
import Testing

@Suite struct MQTTCodecTests {
    static func payload(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static let v5Packets: [MQTTPacket] = [
        .connack(
            .init(
                sessionPresent: true, reasonCode: 0,
                properties: [.assignedClientIdentifier("auto-1"), .topicAliasMaximum(10), .receiveMaximum(20)])),
        .publish(.init(topic: "a/b", qos: 0, payload: payload("hello"))),
        .publish(
            .init(
                topic: "a/b", qos: 2, retain: true, dup: true, packetID: 7,
                properties: [
                    .messageExpiryInterval(30), .responseTopic("r/1"), .correlationData([1, 2]),
                    .userProperty("k", "v"), .userProperty("k", "w"), .subscriptionIdentifier(3),
                    .subscriptionIdentifier(9),
                ],
                payload: payload("body"))),
        .puback(.init(packetID: 1)),
        .puback(.init(packetID: 2, reasonCode: 0x10)),
        .pubrec(.init(packetID: 3, reasonCode: 0x80, properties: [.reasonString("nope")])),
        .pubrel(.init(packetID: 4)),
        .pubcomp(.init(packetID: 5)),
        .subscribe(
            .init(
                packetID: 9,
                subscriptions: [
                    .init(filter: "a/+", qos: 1, noLocal: true, retainAsPublished: true, retainHandling: 2),
                    .init(filter: "$share/g/x/#", qos: 2),
                ],
                properties: [.subscriptionIdentifier(42)])),
        .suback(.init(packetID: 9, reasonCodes: [1, 0x87])),
        .unsubscribe(.init(packetID: 10, filters: ["a/+", "b"])),
        .unsuback(.init(packetID: 10, reasonCodes: [0, 0x11])),
        .pingreq,
        .pingresp,
        .disconnect(.init()),
        .disconnect(.init(reasonCode: 0x04, properties: [.sessionExpiryInterval(0), .reasonString("bye")])),
        .auth(.init(reasonCode: 0x18, properties: [.authenticationMethod("SCRAM-SHA-256"), .authenticationData([1])])),
    ]

    static let v311Packets: [MQTTPacket] = [
        .connack(.init(sessionPresent: false, reasonCode: 5)),
        .publish(.init(topic: "t", qos: 1, packetID: 65_535, payload: payload(""))),
        .puback(.init(packetID: 1)), .pubrec(.init(packetID: 2)), .pubrel(.init(packetID: 3)),
        .pubcomp(.init(packetID: 4)),
        .subscribe(.init(packetID: 5, subscriptions: [.init(filter: "#", qos: 0), .init(filter: "a/+/c", qos: 2)])),
        .suback(.init(packetID: 5, reasonCodes: [0, 0x80])),
        .unsubscribe(.init(packetID: 6, filters: ["#"])),
        .unsuback(.init(packetID: 6, reasonCodes: [])),
        .pingreq, .pingresp, .disconnect(.init()),
    ]

    static func bytes(_ packet: MQTTPacket, _ version: MQTTProtocolVersion) -> ByteBuffer {
        var buffer = ByteBuffer()
        packet.write(version: version, into: &buffer)
        return buffer
    }

    @Test(arguments: [MQTTProtocolVersion.v311, .v5])
    func everyPacketRoundTripsThroughTheDecoderVerifier(version: MQTTProtocolVersion) throws {
        let packets = version == .v5 ? Self.v5Packets : Self.v311Packets
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: packets.map { (Self.bytes($0, version), [$0]) }
        ) { MQTTDecoder(version: version) }
    }

    @Test(arguments: [MQTTProtocolVersion.v311, .v5])
    func publishSizeIsComputedWithoutEncoding(version: MQTTProtocolVersion) {
        for case .publish(let publish) in (version == .v5 ? Self.v5Packets : Self.v311Packets) {
            #expect(publish.encodedSize(version: version) == Self.bytes(.publish(publish), version).readableBytes)
        }
        let large = MQTTPacket.Publish(
            topic: "t", qos: 1, packetID: 1, payload: ByteBuffer(repeating: 7, count: 20_000))
        #expect(large.encodedSize(version: version) == Self.bytes(.publish(large), version).readableBytes)
    }

    @Test(arguments: [MQTTProtocolVersion.v311, .v5])
    func connectRoundTripsAndSetsTheVersion(version: MQTTProtocolVersion) throws {
        let connect = MQTTPacket.connect(
            .init(
                version: version, clientID: "c-1", cleanStart: false, keepAlive: 30, username: "u", password: [1, 2],
                will: .init(
                    topic: "w", payload: [9], qos: 1, retain: true,
                    properties: version == .v5 ? [.willDelayInterval(5), .contentType("text/plain")] : []),
                properties: version == .v5
                    ? [.sessionExpiryInterval(300), .receiveMaximum(5), .maximumPacketSize(1000)] : []))
        var decoder = MQTTDecoder()
        var buffer = Self.bytes(connect, version)
        #expect(try decoder.decode(buffer: &buffer) == connect)
        #expect(decoder.version == version)
    }

    /// A CONNECT carrying bytes its flags do not announce, or a will topic that is no topic name,
    /// is malformed: the decoder throws, and the connection closes without CONNACK.
    @Test(arguments: [MQTTProtocolVersion.v311, .v5])
    func connectsTheSpecCallsMalformedAreRefused(version: MQTTProtocolVersion) throws {
        // A user name present with the user name flag clear: the example CONNECT plus "u".
        var extra = Self.bytes(
            .connect(.init(version: version, clientID: "c", cleanStart: true, keepAlive: 60)), version)
        extra.setInteger(extra.getInteger(at: 1, as: UInt8.self)! + 3, at: 1)
        extra.writeBytes([0x00, 0x01, 0x75])
        var decoder = MQTTDecoder()
        #expect(throws: MQTTProtocolError.self) { _ = try decoder.decode(buffer: &extra) }
        for topic in ["", "a/+", "a/#"] {
            let connect = MQTTPacket.connect(
                .init(
                    version: version, clientID: "c", cleanStart: true, keepAlive: 60,
                    will: .init(topic: topic, payload: [1], qos: 0, retain: false)))
            var buffer = Self.bytes(connect, version)
            var fresh = MQTTDecoder()
            #expect(throws: MQTTProtocolError.self, "will topic '\(topic)'") { _ = try fresh.decode(buffer: &buffer) }
        }
    }

    /// The CONNECT of MQTT 3.1.1's own example: protocol "MQTT", level 4, clean session, keep-alive 60, empty client id.
    @Test func knownBytesOfA311Connect() throws {
        var buffer = ByteBuffer(bytes: [
            0x10, 0x0C, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
        ])
        var decoder = MQTTDecoder()
        let packet = try decoder.decode(buffer: &buffer)
        #expect(packet == .connect(.init(version: .v311, clientID: "", cleanStart: true, keepAlive: 60)))
        #expect(
            Array(Self.bytes(packet!, .v311).readableBytesView)
                == [0x10, 0x0C, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00])
    }

    private func decodeError(_ bytes: [UInt8], version: MQTTProtocolVersion? = .v5, max: Int = 1 << 20)
        -> MQTTProtocolError?
    {
        var decoder = MQTTDecoder(version: version, maxPacketSize: max)
        var buffer = ByteBuffer(bytes: bytes)
        do {
            _ = try decoder.decode(buffer: &buffer)
            return nil
        } catch let error as MQTTProtocolError {
            return error
        } catch {
            return MQTTProtocolError(0, "\(error)")
        }
    }

    @Test func oversizeIsRefusedFromTheFixedHeaderAlone() {
        // A PUBLISH announcing 268 MB: refused with 0x95 before any body arrives.
        #expect(decodeError([0x30, 0xFF, 0xFF, 0xFF, 0x7F])?.reasonCode == 0x95)
        #expect(decodeError([0x30, 0x80, 0x80, 0x01], max: 1000)?.reasonCode == 0x95)
    }

    @Test func malformedPacketsGetTheirReasonCodes() {
        #expect(decodeError([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])?.reasonCode == 0x81)  // 5-byte length
        #expect(decodeError([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01])?.reasonCode == 0x81)  // QoS 3
        #expect(decodeError([0x32, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00, 0x00])?.reasonCode == 0x81)  // packet id 0
        #expect(decodeError([0x38, 0x04, 0x00, 0x01, 0x61, 0x00])?.reasonCode == 0x81)  // QoS 0 with DUP
        #expect(decodeError([0x31, 0x04, 0x00, 0x01, 0x00, 0x00])?.reasonCode == 0x81)  // U+0000 in the topic
        #expect(decodeError([0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00])?.reasonCode == 0x81)  // bad UTF-8
        #expect(decodeError([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00])?.reasonCode == 0x81)  // SUBSCRIBE flags 0
        #expect(decodeError([0x82, 0x02, 0x00, 0x01])?.reasonCode == 0x81)  // SUBSCRIBE without filters
        #expect(decodeError([0xC1, 0x00])?.reasonCode == 0x81)  // PINGREQ flags
        #expect(decodeError([0x00, 0x00])?.reasonCode == 0x81)  // type 0
        #expect(decodeError([0xF0, 0x00], version: .v311)?.reasonCode == 0x81)  // AUTH in 3.1.1
        #expect(decodeError([0xC0, 0x00], version: nil)?.reasonCode == 0x82)  // no CONNECT first
        // CONNECT: reserved flag; level 3 named MQTT, and MQIsdp (3.1's name) at level 4 → an
        // unsupported version.
        #expect(
            decodeError([0x10, 0x0C, 0, 4, 0x4D, 0x51, 0x54, 0x54, 4, 0x03, 0, 60, 0, 0], version: nil)?.reasonCode
                == 0x81)
        #expect(
            decodeError([0x10, 0x0C, 0, 4, 0x4D, 0x51, 0x54, 0x54, 3, 0x02, 0, 60, 0, 0], version: nil)?.reasonCode
                == 0x84)
        let mqisdp: [UInt8] = [0, 6, 0x4D, 0x51, 0x49, 0x73, 0x64, 0x70]
        #expect(decodeError([0x10, 0x0F] + mqisdp + [4, 0x02, 0, 60, 0, 1, 0x61], version: nil)?.reasonCode == 0x84)
        // Properties: duplicate message expiry, and a CONNACK-only property in PUBLISH.
        #expect(decodeError([0x30, 0x0E, 0, 1, 0x61, 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2])?.reasonCode == 0x82)
        #expect(decodeError([0x30, 0x06, 0, 1, 0x61, 0x02, 0x24, 0x01])?.reasonCode == 0x81)
        // Property length past the end.
        #expect(decodeError([0x30, 0x04, 0, 1, 0x61, 0x09])?.reasonCode == 0x81)
    }

    @Test func mqtt31ConnectsAreReadAndItsConnackHasNoSessionFlag() throws {
        var decoder = MQTTDecoder(version: nil)
        var buffer = ByteBuffer(bytes: [
            0x10, 0x0F, 0, 6, 0x4D, 0x51, 0x49, 0x73, 0x64, 0x70, 3, 0x02, 0, 60, 0, 1, 0x61,
        ])
        guard case .connect(let connect)? = try decoder.decode(buffer: &buffer) else {
            Issue.record("no CONNECT")
            return
        }
        #expect(connect.version == .v31 && connect.clientID == "a" && connect.cleanStart)
        let connack = Array(Self.bytes(.connack(.init(sessionPresent: true, reasonCode: 0)), .v31).readableBytesView)
        #expect(connack == [0x20, 0x02, 0x00, 0x00])
    }

    @Test func partialPacketsWaitForMoreBytes() throws {
        let full = Array(Self.bytes(Self.v5Packets[2], .v5).readableBytesView)
        for cut in 0..<full.count {
            var decoder = MQTTDecoder(version: .v5)
            var buffer = ByteBuffer(bytes: full[..<cut])
            #expect(try decoder.decode(buffer: &buffer) == nil)
        }
    }

    /// Seeded mutations of every packet: a value or an MQTTProtocolError, never a crash.
    @Test func mutatedPacketsNeverCrashTheDecoder() {
        var rng = SeededMutator(seed: 1883)
        let seeds = (Self.v5Packets.map { Self.bytes($0, .v5) } + Self.v311Packets.map { Self.bytes($0, .v311) })
            .map { Array($0.readableBytesView) }
        for iteration in 0..<20_000 {
            let bytes = rng.mutate(seeds[iteration % seeds.count])
            var decoder = MQTTDecoder(version: iteration % 2 == 0 ? .v5 : .v311, maxPacketSize: 1 << 16)
            var buffer = ByteBuffer(bytes: bytes)
            while (try? decoder.decode(buffer: &buffer)) ?? nil != nil {}
        }
    }
}

@Suite struct MQTTTopicTests {
    @Test(arguments: [
        ("a/b", "a/b", true), ("a/+", "a/b", true), ("a/+", "a/b/c", false), ("a/#", "a", true), ("a/#", "a/b/c", true),
        ("#", "a/b", true), ("+/+", "a/b", true), ("+", "/a", false), ("/+", "/a", true), ("a/+/c", "a//c", true),
        ("#", "$SYS/x", false), ("+/x", "$SYS/x", false), ("$SYS/#", "$SYS/x", true), ("a/b", "a/b/", false),
    ])
    func matching(filter: String, topic: String, expected: Bool) {
        #expect(MQTTTopic.matches(filter: filter, topic: topic) == expected)
    }

    @Test func validation() {
        for good in ["a", "a/+", "#", "+/+/#", "/", "$share/g/a/#"] {
            #expect(MQTTTopic.isValidFilter(good), "\(good)")
        }
        for bad in ["", "a#", "a/#/b", "a+", "$share/g", "$share//a", "$share/g+/a"] {
            #expect(!MQTTTopic.isValidFilter(bad), "\(bad)")
        }
        #expect(MQTTTopic.isValidName("a/b") && !MQTTTopic.isValidName("a/+") && !MQTTTopic.isValidName(""))
        #expect(MQTTTopic.sharedSubscription("$share/grp/x/+")! == ("grp", "x/+"))
    }
}
