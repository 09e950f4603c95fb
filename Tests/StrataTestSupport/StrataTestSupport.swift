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


/// Seeded mutation for the parsers' fuzz tests: valid inputs flipped, truncated, extended, given
/// plausible lengths; the same seed gives the same inputs on every run.
public struct SeededMutator: RandomNumberGenerator {
    var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    public mutating func next() -> UInt64 { generator.next() }

    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &self) {
            switch Int.random(in: 0..<5, using: &self) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &self)] ^= UInt8.random(in: 1...255, using: &self)
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &self))
            case 2:
                bytes += (0..<Int.random(in: 1...16, using: &self)).map { _ in UInt8.random(in: 0...255, using: &self) }
            case 3 where bytes.count > 4:
                // Plausible lengths in the first bytes: the usual way to reach deep code.
                let value = [UInt32(0), 1, 5, 0x7f, 0xffff, 0x7fff_ffff, 0xffff_ffff].randomElement(using: &self)!
                let at = Int.random(in: 0..<(bytes.count - 3), using: &self)
                withUnsafeBytes(of: value.bigEndian) { bytes.replaceSubrange(at..<at + 4, with: $0) }
            default:
                if let at = bytes.indices.randomElement(using: &self) { bytes.insert(0xff, at: at) }
            }
        }
        return bytes
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}
