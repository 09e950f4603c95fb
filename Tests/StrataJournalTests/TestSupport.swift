import Foundation
import Logging
import NIOCore
import StrataJournal

/// A fresh directory under /tmp, removed when `body` returns.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "strata-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

func testConfiguration(_ directory: String, segmentBytes: Int = 256 << 20) -> JournalConfiguration {
    var configuration = JournalConfiguration(dataDirectory: directory)
    configuration.segmentBytes = segmentBytes
    configuration.maxBatchBytes = min(configuration.maxBatchBytes, segmentBytes / 4)
    configuration.backgroundMaintenance = false
    return configuration
}

func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// A batch of `count` records whose values are "prefix-i".
func makeBatch(_ prefix: String, count: Int = 3, timestamp: Int64 = nowMilliseconds(), size: Int = 0) -> ByteBuffer {
    let records = (0..<count).map { i in
        var value = Array("\(prefix)-\(i)".utf8)
        if value.count < size { value += [UInt8](repeating: UInt8(ascii: "."), count: size - value.count) }
        return Record(timestamp: timestamp + Int64(i), key: Array("k\(i)".utf8), value: value)
    }
    return RecordBatch.encode(records)
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

/// Tests log warnings and errors only.
let quietLogger: Logger = {
    var logger = Logger(label: "strata.test")
    logger.logLevel = .warning
    return logger
}()
