import Foundation
import NIOCore
import StrataClient
import StrataJournal
import StrataTestSupport
import StrataWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A client that asks for many 32 MiB reads and reads none of the answers: the node holds at
/// most the connection's byte budget for it (TCP backpressure stops it reading more requests),
/// its resident memory stays within that budget, and other clients are served meanwhile.
@Suite struct SlowClientTests {
    static func residentBytes(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }

    @Test func aClientThatReadsNothingIsHeldToItsBudget() async throws {
        try await withTemporaryDirectory { dir in
            let node = try await NodeProcess(dataDirectory: dir + "/node")
            defer { Task { await node.stop() } }
            let client = RemoteJournalClient(configuration: .init(host: "127.0.0.1", port: node.journalPort), logger: quietLogger)
            _ = try await client.createShard("big")
            for n in 0..<40 { _ = try await client.append(shard: "big", batch: makeBatch("b\(n)", count: 1, size: 1 << 20)) }
            let before = Self.residentBytes(node.process.processIdentifier)

            // 64 reads of up to 32 MiB each, pipelined; the answers are never read.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            defer { close(fd) }
            var small: Int32 = 64 << 10
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(node.journalPort).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            try #require(connected == 0)
            var bytes = MalformedFrameTests.helloBytes()
            for n in 0..<64 {
                bytes += MalformedFrameTests.bytes(
                    JournalRequest.read(shard: "big", offset: UInt64(n % 8), maxBytes: 32 << 20, maxWaitMilliseconds: 0)
                        .frame(correlationID: UInt32(10 + n)))
            }
            #expect(bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count)

            // Others are served while it holds its budget.
            try await Task.sleep(for: .seconds(2))
            let started = ContinuousClock.now
            _ = try await client.status()
            let read = try await client.read(shard: "big", from: 39, maxBytes: 1)
            #expect(read.batches.count == 1)
            #expect(ContinuousClock.now - started < .seconds(15))
            try await Task.sleep(for: .seconds(1))
            let during = Self.residentBytes(node.process.processIdentifier)
            // Without a budget the node read every answer into memory: 64 × 32 MiB.
            #expect(during - before < 64 << 20 + 96 << 20, "RSS grew by \((during - before) >> 20) MiB")
            await client.close()
        }
    }
}
