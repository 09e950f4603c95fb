import Foundation
import Logging
import NIOCore
import StrataJournal

/// A fresh directory under /tmp, removed when `body` returns.
public func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "strata-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// Tests log warnings and errors only.
public let quietLogger: Logger = {
    var logger = Logger(label: "strata.test")
    logger.logLevel = .warning
    return logger
}()

public func nowMilliseconds() -> Int64 { WallClock.milliseconds() }

/// A batch of `count` records whose values are "prefix-i" (padded with dots to `size` bytes).
public func makeBatch(_ prefix: String, count: Int = 3, timestamp: Int64 = nowMilliseconds(), size: Int = 0) -> ByteBuffer {
    let records = (0..<count).map { i in
        var value = Array("\(prefix)-\(i)".utf8)
        if value.count < size { value += [UInt8](repeating: UInt8(ascii: "."), count: size - value.count) }
        return Record(timestamp: timestamp + Int64(i), key: Array("k\(i)".utf8), value: value)
    }
    return RecordBatch.encode(records)
}

/// The record values of `batches` at or after `from`, without makeBatch's padding.
public func values(_ batches: [ByteBuffer], from: UInt64 = 0) throws -> [String] {
    try batches.flatMap { try RecordBatch.decode($0) }.filter { $0.offset! >= from }.map { record in
        String(String(decoding: record.value ?? [], as: UTF8.self).prefix { $0 != "." })
    }
}

/// The directory holding the package's built executables (next to the test bundle).
public func productsDirectory() -> URL {
    if let override = ProcessInfo.processInfo.environment["STRATA_BIN_DIR"] {
        return URL(fileURLWithPath: override)
    }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// Runs a program to completion and returns its exit status.
@discardableResult
public func run(_ executable: String, _ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    do {
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    } catch {
        return -1
    }
}
