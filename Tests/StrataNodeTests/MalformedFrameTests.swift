import Foundation
import NIOCore
import StrataAuth
import StrataClient
import StrataJournal
import StrataNode
import StrataTestSupport
import StrataWire
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Bad bytes from a raw socket: the node answers with an error frame and closes that
/// connection, and keeps serving everyone else.
@Suite struct MalformedFrameTests {
    static func helloBytes() -> [UInt8] {
        bytes(
            JournalRequest.hello(
                minVersion: StrataVersion.protocolVersions.lowerBound,
                maxVersion: StrataVersion.protocolVersions.upperBound,
                client: "raw"
            ).frame(correlationID: 1))
    }

    static func bytes(_ frame: JournalFrame) -> [UInt8] {
        var buffer = ByteBuffer()
        JournalFrameEncoder().encode(data: frame, out: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// The frames the node sent back, and whether it closed the connection.
    /// `silence` is how long a read may wait before the exchange gives up on the node.
    static func exchange(
        port: Int, _ chunks: [[UInt8]], silence: Int = 3
    ) async throws -> (frames: [JournalFrame], closed: Bool) {
        let (received, closed) = await withCheckedContinuation {
            (continuation: CheckedContinuation<([UInt8], Bool), Never>) in
            Thread { continuation.resume(returning: rawExchange(port: port, chunks, silence: silence)) }.start()
        }
        var buffer = ByteBuffer(bytes: received)
        var decoder = JournalFrameDecoder()
        var frames: [JournalFrame] = []
        while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
        return (frames, closed)
    }

    @Test func oversizeLengthAfterHelloGetsAnErrorAndAClose() async throws {
        try await withServedJournal { port, client in
            let (frames, closed) = try await Self.exchange(
                port: port, [Self.helloBytes(), [0xff, 0xff, 0xff, 0xf0, 0x20]])
            #expect(frames.map(\.type) == [.ok, .error])
            #expect(frames.last?.correlationID == 0)
            let error = JournalResponse.decodeError(try #require(frames.last))
            #expect(error.code == .protocolError && error.message.contains("exceeds the limit"))
            #expect(closed)
            // Everyone else is still served.
            _ = try await client.createShard("still-here")
        }
    }

    @Test func requestBeforeHelloIsRefused() async throws {
        try await withServedJournal { port, client in
            let (frames, closed) = try await Self.exchange(
                port: port, [Self.bytes(JournalRequest.status.frame(correlationID: 5))])
            #expect(frames.map(\.type) == [.error])
            #expect(JournalResponse.decodeError(try #require(frames.first)).message.contains("hello"))
            #expect(closed)
            _ = try await client.status()
        }
    }

    @Test func unknownFrameTypeIsRefused() async throws {
        try await withServedJournal { port, client in
            let (frames, closed) = try await Self.exchange(
                port: port, [Self.helloBytes(), [0, 0, 0, 5, 0x7f, 0, 0, 0, 9]])
            #expect(frames.map(\.type) == [.ok, .error])
            #expect(JournalResponse.decodeError(try #require(frames.last)).message.contains("unknown frame type"))
            #expect(closed)
            _ = try await client.status()
        }
    }

    @Test func unsupportedVersionIsRefused() async throws {
        try await withServedJournal { port, _ in
            let hello = Self.bytes(
                JournalRequest.hello(minVersion: 7, maxVersion: 9, client: "future").frame(correlationID: 1))
            let (frames, closed) = try await Self.exchange(port: port, [hello])
            #expect(frames.map(\.type) == [.error])
            #expect(JournalResponse.decodeError(try #require(frames.first)).code == .unsupported)
            #expect(closed)
        }
    }

    /// A well-framed request with a broken payload is answered with an error under its own
    /// correlation id; the connection goes on.
    @Test func malformedPayloadIsAnsweredAndTheConnectionGoesOn() async throws {
        try await withServedJournal { port, _ in
            var payload = ByteBuffer()
            payload.writeInteger(UInt16(1000))
            payload.writeString("short")
            let broken = Self.bytes(JournalFrame(type: .describeShard, correlationID: 7, payload: payload))
            let status = Self.bytes(JournalRequest.status.frame(correlationID: 8))
            let (frames, _) = try await Self.exchange(port: port, [Self.helloBytes(), broken, status])
            let byID = Dictionary(uniqueKeysWithValues: frames.map { ($0.correlationID, $0) })
            #expect(byID[7]?.type == .error)
            #expect(byID[8]?.type == .ok)
        }
    }

    /// A node that requires authentication takes only small frames, and gives a client a
    /// bounded time to authenticate, before it did.
    @Test func beforeAuthenticationFramesAreSmallAndTimeIsShort() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = JournalConfiguration(dataDirectory: dir)
            configuration.backgroundMaintenance = false
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            defer { journal.close() }
            let users = try SCRAMUsers(parsing: SCRAMUsers.line(user: "admin", password: "secret"))
            let access = try JournalAccess(users: users, permissions: "admin all *")
            try await withJournalServer(
                journal,
                configure: {
                    $0.access = access
                    $0.authenticationTimeout = .seconds(3)
                }
            ) { port in
                // 1 MiB announced before authenticating: refused from the length alone.
                let (frames, closed) = try await Self.exchange(port: port, [Self.helloBytes(), [0, 0x10, 0, 0, 0x20]])
                #expect(frames.map(\.type) == [.ok, .error])
                let error = JournalResponse.decodeError(try #require(frames.last))
                #expect(error.code == .protocolError && error.message.contains("before authentication"), "\(error)")
                #expect(closed)
                // A hello and then silence: the node closes the connection. The exchange waits
                // 8 s, less than the default 10 s timeout, so only the configured 3 s closes it.
                let (_, silentClosed) = try await Self.exchange(port: port, [Self.helloBytes()], silence: 8)
                #expect(silentClosed)
                // An authenticated client may send large frames.
                var client = RemoteJournalClient.Configuration(host: "127.0.0.1", port: port)
                client.user = "admin"
                client.password = "secret"
                let admin = RemoteJournalClient(configuration: client, logger: quietLogger)
                _ = try await admin.createShard("big")
                _ = try await admin.append(shard: "big", batch: makeBatch("x", count: 1, size: 200_000))
                await admin.close()
            }
        }
    }

    private func withServedJournal(_ body: (Int, RemoteJournalClient) async throws -> Void) async throws {
        try await withTemporaryDirectory { dir in
            var configuration = JournalConfiguration(dataDirectory: dir)
            configuration.backgroundMaintenance = false
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            defer { journal.close() }
            try await withJournalServer(journal, configure: { $0.maxFrameBytes = 1 << 20 }) { port in
                try await withRemoteClient(port: port) { try await body(port, $0) }
            }
        }
    }
}

/// Connects, sends each chunk, half-closes nothing, and reads until the peer closes or
/// `silence` seconds pass without a byte. Returns the bytes read and whether the peer closed.
private func rawExchange(port: Int, _ chunks: [[UInt8]], silence: Int) -> ([UInt8], Bool) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return ([], false) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return ([], false) }
    var timeout = timeval(tv_sec: silence, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    for chunk in chunks {
        _ = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        usleep(50_000)
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            received += buffer[0..<n]
        } else {
            return (received, n == 0)
        }
    }
}
