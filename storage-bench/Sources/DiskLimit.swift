import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What the disk itself delivers, measured with plain system calls next to the journal: the
/// ceiling the journal's figures are compared with. MB are 1,000,000 bytes.
struct DiskLimit: Sendable {
    struct Figure: Sendable {
        let name: String
        let mbPerSec: Double
    }

    /// Best of the fdatasync-after-each-write tests: the ceiling for fsync appends.
    static let durableName = "durable-limit"
    /// Buffered writes with one final fdatasync: the ceiling for async appends.
    static let asyncName = "async-limit"
    /// One pass of 1 MiB preads over the WAL segments, from the page cache or the disk.
    static let readName = "read-limit"

    let title: String
    let figures: [Figure]

    /// The figure called `name`, or 0 when it was not measured.
    func mbPerSec(_ name: String) -> Double {
        figures.first { $0.name == name }?.mbPerSec ?? 0
    }

    func printReport(json: Bool) {
        if json {
            for figure in figures {
                var line = JSONLine()
                line.add("mode", "limit")
                line.add("test", figure.name)
                line.add("mb_per_sec", figure.mbPerSec)
                Console.out(line.text + "\n")
            }
            return
        }
        var text = title + "\n" + "test".padded(to: 28) + "MB/s\n"
        for figure in figures {
            text += figure.name.padded(to: 28) + figure.mbPerSec.fixed(1) + "\n"
        }
        Console.out(text + "\n")
    }

    // MARK: Writes

    /// Sequential writes with an fdatasync after each one, for 64 KiB, 256 KiB and 1 MiB writes,
    /// then buffered 1 MiB writes and one final fdatasync; each test for `seconds` in a fresh file
    /// in `directory` that is deleted afterwards.
    static func measureWrites(in directory: String, secondsPerTest seconds: Double) throws -> DiskLimit {
        var figures: [Figure] = []
        for size in [64 << 10, 256 << 10, 1 << 20] {
            let name = "fdatasync-\(sizeName(size))"
            Console.error("\rmeasuring the disk: \(name)      ")
            let rate = try writeTest(in: directory, chunk: size, seconds: seconds, syncEachWrite: true)
            figures.append(Figure(name: name, mbPerSec: rate))
        }
        // The same into a file whose blocks are already written: an fdatasync then flushes only
        // data, while one after an extending write also commits the block allocation and size
        // through the filesystem's journal (ext4 here: about 2.5x slower). This is what fio
        // measures when its file is laid out, and what the WAL gets from reused segment files.
        let overwriteName = "fdatasync-\(sizeName(1 << 20))-overwrite"
        Console.error("\rmeasuring the disk: \(overwriteName)      ")
        figures.append(
            Figure(
                name: overwriteName,
                mbPerSec: try writeTest(
                    in: directory, chunk: 1 << 20, seconds: seconds, syncEachWrite: true, overwrite: true)))
        let durable = figures.map(\.mbPerSec).max() ?? 0
        let bufferedName = "buffered-\(sizeName(1 << 20))"
        Console.error("\rmeasuring the disk: \(bufferedName)      ")
        let buffered = try writeTest(in: directory, chunk: 1 << 20, seconds: seconds, syncEachWrite: false)
        Console.error("\r" + String(repeating: " ", count: 50) + "\r")
        figures.append(Figure(name: bufferedName, mbPerSec: buffered))
        figures.append(Figure(name: durableName, mbPerSec: durable))
        figures.append(Figure(name: asyncName, mbPerSec: buffered))
        return DiskLimit(title: "disk limit in \(directory), \(seconds.fixed(1)) s per test", figures: figures)
    }

    private static func sizeName(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? "\(bytes >> 20)MiB" : "\(bytes >> 10)KiB"
    }

    /// Writes `chunk`-sized blocks sequentially for `seconds` and returns MB/s; the time includes
    /// the final fdatasync. Stops early before using half of the free space.
    private static func writeTest(
        in directory: String, chunk: Int, seconds: Double, syncEachWrite: Bool, overwrite: Bool = false
    ) throws -> Double {
        let path = directory + "/storage-bench-limit-\(getpid()).tmp"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BenchError.posix("cannot create \(path)") }
        defer {
            close(fd)
            unlink(path)
        }
        let data = BatchFactory.randomBytes(chunk)
        var cap = max(Int64(chunk), freeBytes(directory) / 2)
        if overwrite {
            // Lay the file out first (untimed), then overwrite it from the start, wrapping.
            cap = min(cap, 256 << 20) / Int64(chunk) * Int64(chunk)
            try data.withUnsafeBytes { bytes in
                var laid: Int64 = 0
                while laid < cap {
                    try writeAll(fd, bytes, at: laid, path: path)
                    laid += Int64(chunk)
                }
                try syncData(fd, path: path)
            }
        }
        let start = ContinuousClock.now
        let deadline = start.advanced(by: .seconds(seconds))
        var written: Int64 = 0
        try data.withUnsafeBytes { bytes in
            repeat {
                try writeAll(fd, bytes, at: overwrite ? written % cap : written, path: path)
                written += Int64(chunk)
                if syncEachWrite { try syncData(fd, path: path) }
            } while ContinuousClock.now < deadline && (overwrite || written + Int64(chunk) <= cap)
            if !syncEachWrite { try syncData(fd, path: path) }
        }
        let elapsed = start.duration(to: ContinuousClock.now).seconds
        return elapsed > 0 ? Double(written) / elapsed / 1e6 : 0
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let count = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw BenchError.posix("pwrite \(path)") }
            done += count
        }
    }

    private static func syncData(_ fd: Int32, path: String) throws {
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw BenchError.posix("fdatasync \(path)") }
        }
    }

    private static func freeBytes(_ directory: String) -> Int64 {
        var stats = statvfs()
        guard statvfs(directory, &stats) == 0 else { return .max }
        let (bytes, overflow) = Int64(clamping: stats.f_bavail).multipliedReportingOverflow(
            by: Int64(clamping: stats.f_frsize))
        return overflow ? .max : bytes
    }

    // MARK: Reads

    /// Reads every `*.wal` file in `walDirectory` once with 1 MiB preads and returns the
    /// "page-cache/disk read limit" in MB/s.
    static func measureRead(walDirectory: String) throws -> DiskLimit {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: walDirectory)
                .filter { $0.hasSuffix(".wal") }.sorted()
        } catch {
            throw BenchError("cannot list \(walDirectory): \(error)")
        }
        Console.error("\rmeasuring the read limit      ")
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total = 0
        let start = ContinuousClock.now
        for name in names {
            total += try readAll(walDirectory + "/" + name, buffer: &buffer)
        }
        let elapsed = start.duration(to: ContinuousClock.now).seconds
        Console.error("\r" + String(repeating: " ", count: 50) + "\r")
        let rate = elapsed > 0 ? Double(total) / elapsed / 1e6 : 0
        return DiskLimit(
            title: "page-cache/disk read limit: \(names.count) WAL segments, \(total) bytes in \(walDirectory)",
            figures: [Figure(name: readName, mbPerSec: rate)])
    }

    private static func readAll(_ path: String, buffer: inout [UInt8]) throws -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BenchError.posix("cannot open \(path)") }
        defer { close(fd) }
        var total = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(total)) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw BenchError.posix("pread \(path)") }
            if count == 0 { return total }
            total += count
        }
    }
}
