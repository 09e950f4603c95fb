import Foundation
import StrataTestSupport
import Testing

@testable import StrataJournal

/// Power cuts at 1,000 random points of recorded workloads (appends from three writers to fsync
/// and async shards, segment rolls, retention, compaction): every acknowledged record is
/// recovered from the WAL alone. `storage-bench crash-sim --points N` runs as many as asked.
@Suite struct PowerCutTests {
    @Test func noAcknowledgedRecordIsLostAtAThousandCrashPoints() async throws {
        try await withTemporaryDirectory { dir in
            let seed = UInt64.random(in: 0...UInt64.max)
            let report = try await PowerCut.simulate(points: 1000, seed: seed, directory: dir, logger: quietLogger)
            #expect(report.points == 1000)
            #expect(report.recordsChecked > 10_000, "too few acknowledged records to mean anything")
            #expect(report.lost == 0, "seed \(seed): \(report.failures)")
            #expect(report.failures.isEmpty, "seed \(seed): \(report.failures)")
        }
    }

    /// The image builder keeps synced bytes and only drops, keeps or tears unsynced writes.
    @Test func crashImagesKeepWhatWasSynced() {
        var random = SplitMix64(seed: 7)
        let operations: [RecordingWALIO.Operation] = [
            .write(file: 0, offset: 0, bytes: [UInt8](repeating: 1, count: 1000)), .sync(file: 0),
            .write(file: 0, offset: 1000, bytes: [UInt8](repeating: 2, count: 3000)),
        ]
        var seen = Set<[UInt8]>()
        for _ in 0..<200 {
            let image = PowerCut.crashImage(operations[...], random: &random)[0]!
            #expect(image.prefix(1000).allSatisfy { $0 == 1 })
            #expect(image.dropFirst(1000).allSatisfy { $0 == 2 || $0 == 0 })
            seen.insert(image)
        }
        #expect(seen.count > 3, "unsynced writes are not varied")
    }
}
