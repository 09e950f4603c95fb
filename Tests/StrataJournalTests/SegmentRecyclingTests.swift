import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

/// Deleted segments' files are reused for new segments, so that a synced write overwrites blocks
/// that are already written (an fdatasync then commits no allocation). Their old frames never
/// come back: the frame checksum is salted with the segment id, and a reused file is cut to its
/// frames when sealed.
@Suite struct SegmentRecyclingTests {
    /// A journal of 64 KiB segments with a shard `keep` and a shard `ret` that keeps 1 byte.
    private static func openKeepAndRetained(_ dir: String) async throws -> (JournalConfiguration, Journal) {
        var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
        configuration.maxBatchBytes = 8 << 10
        let journal = try Journal(configuration: configuration, logger: quietLogger)
        _ = try await journal.createShards([
            (name: "keep", config: ShardConfig()), (name: "ret", config: ShardConfig(retentionBytes: 1)),
        ])
        return (configuration, journal)
    }

    @Test func reusedSegmentFilesNeverServeTheirOldFrames() async throws {
        try await withTemporaryDirectory { dir in
            let (configuration, journal) = try await Self.openKeepAndRetained(dir)
            var expected: [String] = []
            var reused = 0
            for round in 0..<6 {
                for n in 0..<120 {
                    _ = try await journal.append(shard: "ret", batch: makeBatch("r\(round)-\(n)", count: 1, size: 600))
                    if n % 10 == 0 {
                        _ = try await journal.append(shard: "keep", batch: makeBatch("k\(round)-\(n)", count: 1, size: 100))
                        expected.append("k\(round)-\(n)-0")
                    }
                }
                try journal.runMaintenance()
                let spares = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".spare") }
                #expect(spares.count <= SegmentFiles.maxSpares)
                if round > 0, journal.active.withLock({ $0.recycled }) { reused += 1 }
            }
            #expect(reused > 0, "no segment file was reused")
            #expect(try await readAll(journal, "keep").map(\.1) == expected)
            var ends = journal.listShards().map(\.endOffset)
            journal.close()

            // Reopened as it is, and rebuilt from the WAL alone: the same records, nothing old.
            for rebuild in [false, true] {
                if rebuild { try FileManager.default.removeItem(atPath: dir + "/index") }
                let reopened = try Journal(configuration: configuration, logger: quietLogger)
                #expect(try await readAll(reopened, "keep").map(\.1) == expected, "rebuild \(rebuild)")
                #expect(reopened.listShards().map(\.endOffset) == ends, "rebuild \(rebuild)")
                let ret = try await readAll(reopened, "ret", from: try reopened.describeShard("ret").startOffset)
                let offsets = ret.map(\.0)
                if let first = offsets.first { #expect(offsets == Array(first..<first + UInt64(offsets.count))) }
                _ = try await reopened.append(shard: "keep", batch: makeBatch("after\(rebuild)", count: 1))
                expected.append("after\(rebuild)-0")
                ends[0] += 1
                reopened.close()
            }
        }
    }

    /// Beyond the spares, a deleted segment's file is cut down in steps under a name that is not a
    /// segment's and then unlinked; such a file left by a crash (here: half cut, as a crash in
    /// the middle leaves it) is removed at the next open and never read as a segment.
    @Test func segmentFilesBeyondTheSparesAreDeletedInStepsUnderAnotherName() async throws {
        try await withTemporaryDirectory { dir in
            let (configuration, journal) = try await Self.openKeepAndRetained(dir)
            for n in 0..<1000 {
                _ = try await journal.append(shard: "ret", batch: makeBatch("r\(n)", count: 1, size: 600))
            }
            _ = try await journal.append(shard: "keep", batch: makeBatch("k", count: 1))
            let before = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".wal") }
            try journal.runMaintenance()
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal")
            let after = names.filter { $0.hasSuffix(".wal") }
            #expect(before.count - after.count > SegmentFiles.maxSpares, "too few segments were deleted to need unlinks")
            #expect(names.filter { $0.hasSuffix(".spare") }.count == SegmentFiles.maxSpares)
            #expect(!names.contains { $0.hasSuffix(".deleting") })
            journal.close()

            // A crash in the middle of a deletion: the renamed file, partly cut.
            let leftover = dir + "/wal/" + after.sorted().last!
            let crashed = dir + "/wal/999.deleting"
            try FileManager.default.copyItem(atPath: leftover, toPath: crashed)
            let fd = open(crashed, O_WRONLY)
            #expect(fd >= 0 && FileDescriptor.shrink(fd: fd, from: 1 << 16, to: 1000, step: 4096))
            close(fd)
            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            #expect(try await readAll(reopened, "keep").map(\.1) == ["k-0"])
            #expect(!FileManager.default.fileExists(atPath: crashed))
            reopened.close()
        }
    }
}
