import Foundation
import StrataJournal

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What the process has used so far: CPU time, the bytes it caused to be written to storage
/// (`write_bytes` of /proc/self/io), and the journal's counters, whose WAL byte count stands in
/// when /proc/self/io cannot be read.
struct ProcessStats: Sendable {
    var cpuSeconds: Double
    var storageWriteBytes: Int64?
    var journal: JournalStatistics

    static func current(journal: Journal) -> ProcessStats {
        current(statistics: journal.statistics)
    }

    /// With the counters of a journal in another process (its storage writes are not ours:
    /// write amplification then comes from its WAL byte count).
    static func current(statistics: JournalStatistics, remote: Bool = false) -> ProcessStats {
        ProcessStats(
            cpuSeconds: readCPUSeconds(), storageWriteBytes: remote ? nil : readStorageWriteBytes(),
            journal: statistics)
    }

    func cpuSecondsUsed(since earlier: ProcessStats) -> Double {
        cpuSeconds - earlier.cpuSeconds
    }

    func walSyncs(since earlier: ProcessStats) -> Int64 {
        journal.walSyncs - earlier.journal.walSyncs
    }

    /// Bytes written to storage since `earlier` and where the figure comes from: "proc-io" when
    /// both readings have /proc/self/io, else "wal" (the journal's WAL bytes only).
    func bytesWritten(since earlier: ProcessStats) -> (bytes: Int64, source: String) {
        if let now = storageWriteBytes, let then = earlier.storageWriteBytes {
            return (now - then, "proc-io")
        }
        return (journal.walBytesWritten - earlier.journal.walBytesWritten, "wal")
    }

    /// User plus system CPU seconds of the whole process (getrusage RUSAGE_SELF).
    private static func readCPUSeconds() -> Double {
        var usage = rusage()
        #if canImport(Glibc)
            // Glibc imports RUSAGE_SELF as a member of an enum type; getrusage may want an Int32.
            guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return 0 }
        #else
            guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
        #endif
        func seconds(_ time: timeval) -> Double {
            Double(time.tv_sec) + Double(time.tv_usec) / 1e6
        }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// `write_bytes` of /proc/self/io, or nil when the file cannot be read.
    private static func readStorageWriteBytes() -> Int64? {
        guard let text = readSmallFile("/proc/self/io") else { return nil }
        let prefix = "write_bytes:"
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            return Int64(line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// Reads a file that reports no size (as /proc files do) to its end.
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
