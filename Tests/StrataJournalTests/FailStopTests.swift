import Foundation
import NIOCore
import StrataTestSupport
import Synchronization
import Testing

@testable import StrataJournal

#if canImport(Glibc)
import Glibc
#endif

/// The production pwrite path with one fault injected at a chosen WAL operation. After the fault
/// every later call succeeds again — which is exactly what a retry after a failed fdatasync sees
/// on Linux, and why the journal must not believe it.
final class FaultyWALIO: WALIO, Sendable {
    enum Fault: String, Sendable, CaseIterable, CustomTestStringConvertible {
        case writeEIO, syncEIO, shortWrite, writeENOSPC
        var testDescription: String { rawValue }
    }

    let name = "faulty"
    let fault: Fault
    /// The first operation (writes and syncs counted together, from 1) that can fail: the first
    /// one from here on that syncs for `syncEIO`, that writes for the others.
    let at: Int
    private let state = Mutex<(operations: Int, fired: Bool)>((0, false))
    private let real = PwriteIO()

    init(_ fault: Fault, at: Int) {
        self.fault = fault
        self.at = at
    }

    var fired: Bool { state.withLock { $0.fired } }

    private func next(eligible: Bool) -> Bool {
        state.withLock { state in
            state.operations += 1
            if !state.fired, eligible, state.operations >= at {
                state.fired = true
                return true
            }
            return false
        }
    }

    func write(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64, sync: Bool) throws(WALIOError) {
        if next(eligible: fault != .syncEIO || sync) {
            switch fault {
            case .writeEIO: throw WALIOError(errno: EIO, operation: "pwrite")
            case .writeENOSPC: throw WALIOError(errno: ENOSPC, operation: "pwrite")
            case .shortWrite:
                // Half of the group reaches the file, then the device fails.
                try PwriteIO.pwriteAll(fd: fd, bytes, count: count / 2, offset: offset)
                throw WALIOError(errno: EIO, operation: "pwrite")
            case .syncEIO:
                // The data reaches the page cache; the sync that follows fails.
                try PwriteIO.pwriteAll(fd: fd, bytes, count: count, offset: offset)
                throw WALIOError(errno: EIO, operation: "fdatasync")
            }
        }
        try real.write(fd: fd, bytes, count: count, offset: offset, sync: sync)
    }

    func sync(fd: Int32) throws(WALIOError) {
        if next(eligible: fault == .syncEIO) { throw WALIOError(errno: EIO, operation: "fdatasync") }
        try real.sync(fd: fd)
    }
}

@Suite struct FailStopTests {
    /// Three writers append to three fsync shards while one WAL operation fails. Nothing
    /// acknowledged is lost, nothing is acknowledged once an append has failed, the journal
    /// reports itself failed and refuses appends, and a restart serves everything acknowledged and
    /// resumes at dense offsets.
    @Test(arguments: FaultyWALIO.Fault.allCases, [2, 3, 17, 60])
    func aWALFaultStopsTheJournalAndLosesNothingAcknowledged(fault: FaultyWALIO.Fault, at operation: Int) async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir, segmentBytes: 1 << 16)
            configuration.maxBatchBytes = 8 << 10
            let io = FaultyWALIO(fault, at: operation)
            configuration.walIOOverride = io
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            let shards = ["a", "b", "c"]
            do {
                _ = try await journal.createShards(shards.map { (name: $0, config: ShardConfig()) })
            } catch let error as JournalError {
                // The fault hit the catalog's own control frames: nothing was created.
                #expect(io.fired)
                #expect(error.code == .unavailable)
                #expect(journal.health.status == .failed)
                journal.close()
                return
            }
            let outcomes = try await withThrowingTaskGroup(of: (String, [String], [JournalError]).self) { group in
                for shard in shards {
                    group.addTask {
                        var acknowledged: [String] = []
                        var failures: [JournalError] = []
                        for n in 0..<80 {
                            do {
                                _ = try await journal.append(shard: shard, batch: makeBatch("\(shard)\(n)", count: 2, size: 500))
                                #expect(failures.isEmpty, "\(shard)\(n) acknowledged after an append had failed")
                                acknowledged += ["\(shard)\(n)-0", "\(shard)\(n)-1"]
                            } catch let error as JournalError {
                                failures.append(error)
                            }
                        }
                        return (shard, acknowledged, failures)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(io.fired, "the fault never fired")
            #expect(journal.health.status == .failed)
            for (_, _, failures) in outcomes {
                #expect(failures.allSatisfy { $0.code == .unavailable }, "\(failures.first.map { "\($0)" } ?? "")")
            }
            #expect(outcomes.contains { !$0.2.isEmpty }, "no append failed")
            await #expect(throws: JournalError.self) { try await journal.append(shard: "a", batch: makeBatch("late")) }
            journal.close()

            configuration.walIOOverride = nil
            let reopened = try Journal(configuration: configuration, logger: quietLogger)
            #expect(reopened.health.status == .ok)
            for (shard, acknowledged, _) in outcomes {
                let read = try await readAll(reopened, shard)
                // Every acknowledged record, at its offset; what follows it failed and may or may
                // not have reached the disk, but never sits between acknowledged ones.
                #expect(read.prefix(acknowledged.count).map(\.1) == acknowledged, "\(shard) lost acknowledged records")
                #expect(read.map(\.0) == Array(0..<UInt64(read.count)), "\(shard) offsets are not dense")
                let next = try await reopened.append(shard: shard, batch: makeBatch("after"))
                #expect(next.baseOffset == UInt64(read.count))
            }
            reopened.close()
        }
    }

    /// A failed timed flush of an async shard stops the journal too (its acknowledged appends may
    /// be lost only within the flush interval; nothing after the failure is acknowledged).
    @Test func aFailedAsyncFlushStopsTheJournal() async throws {
        try await withTemporaryDirectory { dir in
            var configuration = testConfiguration(dir)
            configuration.asyncFlushInterval = .milliseconds(5)
            // The segment header and the shard's control frame take the first two writes; the
            // first timed sync after them fails.
            let io = FaultyWALIO(.syncEIO, at: 3)
            configuration.walIOOverride = io
            let journal = try Journal(configuration: configuration, logger: quietLogger)
            _ = try await journal.createShard("s", config: ShardConfig(durability: .async))
            var failed = false
            for n in 0..<2000 where !failed {
                do {
                    _ = try await journal.append(shard: "s", batch: makeBatch("b\(n)"))
                    try await Task.sleep(for: .milliseconds(1))
                } catch let error as JournalError {
                    #expect(error.code == .unavailable)
                    #expect(error.message.contains("fdatasync"))
                    failed = true
                }
            }
            #expect(failed)
            #expect(journal.health.status == .failed)
            journal.close()
        }
    }
}
