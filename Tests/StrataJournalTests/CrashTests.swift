import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

#if canImport(Glibc)
import Glibc
#endif

/// A child process appends under `fsync` and prints each acknowledgement; it is killed with
/// SIGKILL at random moments, over and over. After each kill the journal is reopened here and
/// every acknowledged batch must read back byte-identical at its offset, with dense offsets.
/// Every third round the index is removed before the reopen (`rm -rf index/`): the catalog and
/// the index are then rebuilt from the WAL alone.
@Suite(.serialized) struct CrashTests {
    struct Ack: Hashable {
        var shard: String
        var base: UInt64
        var count: Int
        var crc: UInt32
    }

    @Test func acknowledgedBatchesSurviveSIGKILL() async throws {
        let binary = productsDirectory().appendingPathComponent("storage-bench")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "build storage-bench first: \(binary.path)")
        try await withTemporaryDirectory { dir in
            let data = dir + "/journal"
            var acknowledged: [Ack] = []
            var generator = SystemRandomNumberGenerator()
            let rounds = 12
            for round in 0..<rounds {
                let output = dir + "/acks-\(round).txt"
                #expect(FileManager.default.createFile(atPath: output, contents: nil))
                let process = Process()
                process.executableURL = binary
                process.arguments = ["crash-writer", "--data-dir", data, "--shards", "8"]
                process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
                process.standardError = FileHandle.nullDevice
                try process.run()
                // Wait for "ready", then let it append for a random while and kill it mid-flight.
                let deadline = ContinuousClock.now + .seconds(60)
                while !(try String(contentsOfFile: output, encoding: .utf8)).contains("ready") {
                    try #require(process.isRunning, "crash-writer exited early in round \(round)")
                    try #require(ContinuousClock.now < deadline, "crash-writer never got ready")
                    try await Task.sleep(for: .milliseconds(10))
                }
                try await Task.sleep(for: .milliseconds(Int.random(in: 100...900, using: &generator)))
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                #expect(process.terminationReason == .uncaughtSignal)

                let text = try String(contentsOfFile: output, encoding: .utf8)
                // Only whole lines: the last one may have been cut by the kill.
                for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                    let fields = line.split(separator: " ")
                    guard fields.first == "ack" else { continue }
                    try #require(fields.count == 5, "bad ack line: \(line)")
                    acknowledged.append(
                        Ack(
                            shard: String(fields[1]), base: try #require(UInt64(fields[2])),
                            count: try #require(Int(fields[3])), crc: try #require(UInt32(fields[4], radix: 16))))
                }
                if round % 3 == 2 { try FileManager.default.removeItem(atPath: data + "/index") }
                try await verify(data: data, acknowledged: acknowledged, round: round)
            }
            #expect(acknowledged.count > rounds * 5, "too few acknowledgements to mean anything")
        }
    }

    private func verify(data: String, acknowledged: [Ack], round: Int) async throws {
        let journal = try Journal(configuration: JournalConfiguration(dataDirectory: data), logger: quietLogger)
        defer { journal.close() }
        let shards = Dictionary(uniqueKeysWithValues: journal.listShards().map { ($0.name, $0) })
        for ack in acknowledged {
            let info = try #require(shards[ack.shard], "round \(round): shard \(ack.shard) lost")
            #expect(info.endOffset >= ack.base + UInt64(ack.count), "round \(round): \(ack.shard) ends at \(info.endOffset), acknowledged \(ack.base)+\(ack.count)")
            let read = try await journal.read(shard: ack.shard, from: ack.base, maxBytes: 1)
            let batch = try #require(read.batches.first)
            let records = try RecordBatch.decode(batch)
            #expect(records.first?.offset == ack.base, "round \(round): \(ack.shard)@\(ack.base) starts elsewhere")
            #expect(records.count == ack.count)
            let crc = records.reduce(UInt32(0)) { CRC32C.checksum($1.value ?? [], continuing: $0) }
            #expect(crc == ack.crc, "round \(round): \(ack.shard)@\(ack.base) differs from what was acknowledged")
        }
        // Offsets are dense: every batch starts where the previous one ended.
        for info in shards.values {
            var next = info.startOffset
            while next < info.endOffset {
                let read = try await journal.read(shard: info.name, from: next, maxBytes: 1 << 20)
                for batch in read.batches {
                    let header = try #require(RecordBatch.Header.peek(batch, at: batch.readerIndex))
                    #expect(UInt64(header.baseOffset) == next, "round \(round): gap in \(info.name) at \(next)")
                    next = UInt64(header.lastOffset) + 1
                }
            }
        }
    }
}
