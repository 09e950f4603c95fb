import Foundation
import NIOCore
import StrataTestSupport
import Testing

@testable import StrataJournal

#if canImport(Glibc)
import Glibc
#endif

/// A real full filesystem: a small tmpfs mounted for the test (needs root, as in CI).
@Suite(.serialized) struct DiskFullTests {
    /// No reserve: the WAL meets the filesystem's own ENOSPC. That is a WAL write error like any
    /// other, so the journal stops (fail-stop) and a restart, with space back, resumes it.
    @Test(.enabled(if: getuid() == 0, "mounting a small tmpfs needs root"))
    func enospcStopsTheJournalLosesNothingAndRecoversOnRestart() async throws {
        try await withTmpfs(size: "8m") { mount in

            var configuration = testConfiguration(mount + "/journal", segmentBytes: 16 << 20)
            configuration.walIO = .pwrite
            configuration.minFreeDiskBytes = 0
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            let filler = mount + "/filler"
            #expect(FileManager.default.createFile(atPath: filler, contents: Data(count: 1 << 20)))
            var acknowledged: [String] = []
            var refusal: JournalError?
            for n in 0..<4000 {
                do {
                    _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 1, size: 4000))
                    acknowledged.append("b\(n)-0")
                } catch let error as JournalError {
                    refusal = error
                    break
                }
            }
            let error = try #require(refusal, "the disk never filled")
            #expect(error.code == .unavailable)
            #expect(error.message.contains("No space left"))
            #expect(acknowledged.count > 100)
            #expect(journal.health.status == .failed)
            // Space returns, but the journal acknowledges nothing until it is restarted.
            try FileManager.default.removeItem(atPath: filler)
            await #expect(throws: JournalError.self) {
                try await journal.append(shard: "s", batch: makeBatch("again", count: 1, size: 4000))
            }
            #expect(try journal.describeShard("s").endOffset == UInt64(acknowledged.count))
            let whileStopped = try await readAll(journal, "s").map(\.1)
            #expect(whileStopped == acknowledged, "\(whileStopped.count) \(acknowledged.count)")
            journal.close()

            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            #expect(reopened.health.status == .ok)
            #expect(try await readAll(reopened, "s").map(\.1) == acknowledged)
            let next = try await reopened.append(shard: "s", batch: makeBatch("after", count: 1, size: 4000))
            #expect(next.baseOffset == UInt64(acknowledged.count))
            reopened.close()
        }
    }

    @Test(.enabled(if: getuid() == 0, "mounting a small tmpfs needs root"))
    func appendsResumeWhenSpaceIsFreedElsewhere() async throws {
        try await withTmpfs(size: "32m") { mount in

            var configuration = testConfiguration(mount + "/journal", segmentBytes: 8 << 20)
            configuration.walIO = .auto
            configuration.minFreeDiskBytes = 4 << 20
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s")
            // Fill most of the disk with a file that is not the journal's.
            let filler = mount + "/filler"
            var info = statvfs()
            #expect(statvfs(mount, &info) == 0)
            let free = Int(info.f_bavail) * Int(info.f_frsize)
            #expect(FileManager.default.createFile(atPath: filler, contents: Data(count: free - (6 << 20))))
            var acknowledged: [String] = []
            var sawFull = false
            for n in 0..<1000 {
                do {
                    _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)", count: 1, size: 4000))
                    acknowledged.append("b\(n)-0")
                } catch let error as JournalError {
                    #expect(error.code == .diskFull)
                    #expect(error.message.contains("below the reserve"))
                    sawFull = true
                    break
                }
            }
            #expect(sawFull)
            try FileManager.default.removeItem(atPath: filler)
            for n in 0..<10 {
                _ = try await journal.append(shard: "s", batch: makeBatch("after\(n)", count: 1, size: 4000))
                acknowledged.append("after\(n)-0")
            }
            #expect(try await readAll(journal, "s").map(\.1) == acknowledged)
            journal.close()
            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            #expect(try await readAll(reopened, "s").map(\.1) == acknowledged)
            reopened.close()
        }
    }
}

/// A tmpfs of `size` mounted on a fresh directory for the duration of `body`.
func withTmpfs(size: String, _ body: (String) async throws -> Void) async throws {
    try await withTemporaryDirectory { dir in
        let mount = dir + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        try #require(run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mount]) == 0)
        defer { _ = run("/bin/umount", [mount]) }
        try await body(mount)
    }
}

