import Foundation
import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct ShutdownTests {
    /// close() while a compaction copies live batches forward: maintenance is stopped (and a round
    /// in flight finished) before the writer it depends on, so both return (a compaction used to
    /// wait forever for copies no writer was left to write, and close with it).
    @Test func closeDuringACompactionReturns() async throws {
        try await withTemporaryDirectory { dir in
            for round in 0..<5 {
                var configuration = testConfiguration(dir + "/\(round)", segmentBytes: 1 << 16)
                configuration.maxBatchBytes = 8 << 10
                configuration.compactionThreshold = 0.99
                let journal = try Journal(configuration: configuration, logger: quietLogger)
                _ = try await journal.createShards([(name: "keep", config: ShardConfig()), (name: "drop", config: ShardConfig())])
                for n in 0..<400 {
                    _ = try await journal.append(shard: n % 2 == 0 ? "keep" : "drop", batch: makeBatch("b\(n)", count: 1, size: 400))
                }
                try await journal.deleteShard("drop")
                let maintained = DispatchSemaphore(value: 0)
                Thread {
                    try? journal.runMaintenance()
                    maintained.signal()
                }.start()
                try await Task.sleep(for: .milliseconds(round))
                let closed = DispatchSemaphore(value: 0)
                Thread {
                    journal.close()
                    closed.signal()
                }.start()
                #expect(closed.wait(timeout: .now() + 30) == .success, "close did not return in round \(round)")
                #expect(maintained.wait(timeout: .now() + 30) == .success, "maintenance hung in round \(round)")
            }
        }
    }
}
