import Foundation
import Logging
import StrataTestSupport
import NIOCore
import StrataJournal

func testConfiguration(_ directory: String, segmentBytes: Int = 256 << 20) -> JournalConfiguration {
    var configuration = JournalConfiguration(dataDirectory: directory)
    configuration.segmentBytes = segmentBytes
    configuration.maxBatchBytes = min(configuration.maxBatchBytes, segmentBytes / 4)
    configuration.backgroundMaintenance = false
    return configuration
}

/// All record values of `shard` from `offset` to its end (without makeBatch's padding), with their offsets.
func readAll(_ journal: Journal, _ shard: String, from offset: UInt64 = 0) async throws -> [(UInt64, String)] {
    var result: [(UInt64, String)] = []
    var next = offset
    while true {
        let read = try await journal.read(shard: shard, from: next, maxBytes: 1 << 16)
        if read.batches.isEmpty { return result }
        for batch in read.batches {
            for record in try RecordBatch.decode(batch) where record.offset! >= next {
                let value = String(decoding: record.value ?? [], as: UTF8.self)
                result.append((record.offset!, String(value.prefix { $0 != "." })))
            }
        }
        next = read.nextOffset
    }
}

/// Paths of the WAL segment files of a journal directory, in order.
func segmentFiles(_ directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory + "/wal").filter { $0.hasSuffix(".wal") }.sorted()
        .map { directory + "/wal/" + $0 }
}

