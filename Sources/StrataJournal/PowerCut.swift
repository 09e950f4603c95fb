import Foundation
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A power-cut simulator. SIGKILL cannot show a missing fsync (the page cache outlives the
/// process); this can. A workload (appends to fsync and async shards from several writers,
/// segment rolls, retention, compaction) runs on a journal whose WAL I/O is recorded through
/// the production seam (`walIOOverride`): every write with its bytes and every sync, in order.
/// For each crash point (a prefix of that record) it builds the disk a power cut would leave:
/// synced bytes are certain; every write not yet synced is dropped, kept, or kept only in some
/// of its 512-byte sectors, each at random (so writes tear and reorder). Deleted segments come
/// back with what was synced of them (an unlink need not survive either). The index is not
/// part of the image: the journal is opened on the WAL alone, so the catalog and the index are
/// rebuilt from it. Every record acknowledged under `fsync` before the crash point, and every
/// `async` one a later sync covered, must read back at its offset with its content, and
/// offsets must be dense.
public enum PowerCut {
    public struct Report: Sendable, Codable, Hashable {
        public var points = 0
        public var recordsChecked = 0
        public var lost = 0
        public var workloads = 0
        /// The first problems found (a lost record, a gap, an open that failed), for people.
        public var failures: [String] = []

        enum CodingKeys: String, CodingKey {
            case points, recordsChecked = "records_checked", lost, workloads, failures
        }

        public init() {}
    }

    /// Runs `points` crash points, `pointsPerWorkload` of them on each recorded workload, in
    /// scratch directories under `directory`.
    public static func simulate(
        points: Int, pointsPerWorkload: Int = 250, seed: UInt64, directory: String, logger: Logger
    ) async throws -> Report {
        var random = SplitMix64(seed: seed)
        var report = Report()
        var workload = 0
        while report.points < points {
            let dir = directory + "/workload-\(workload)"
            let recorder = RecordingWALIO()
            let acks = try await runWorkload(directory: dir, io: recorder, random: &random, logger: logger)
            let (operations, files) = recorder.recorded
            let syncs = operations.indices.filter {
                if case .sync = operations[$0] { return true } else { return false }
            }
            let count = min(pointsPerWorkload, points - report.points)
            for n in 0..<count {
                let point = Int(random.next() % UInt64(operations.count)) + 1
                let image = dir + "-point-\(n)"
                try write(image: crashImage(operations[..<point], random: &random), files: files, to: image)
                try await verify(
                    image: image, acks: acks, point: point, syncs: syncs, report: &report, logger: logger)
                try? FileManager.default.removeItem(atPath: image)
                report.points += 1
            }
            try? FileManager.default.removeItem(atPath: dir)
            report.workloads += 1
            workload += 1
        }
        return report
    }

    // MARK: The workload

    struct Ack {
        var shard: String
        var base: UInt64
        var count: Int
        var crc: UInt32
        var durability: Durability
        /// Operations recorded when the acknowledgement was given.
        var operation: Int
    }

    static let shards: [(String, ShardConfig)] = [
        ("f0", ShardConfig(durability: .fsync)), ("f1", ShardConfig(durability: .fsync)),
        ("a0", ShardConfig(durability: .async)),
        ("r0", ShardConfig(durability: .fsync, retentionBytes: 24 << 10)),
    ]

    static func configuration(_ directory: String) -> JournalConfiguration {
        var configuration = JournalConfiguration(dataDirectory: directory)
        configuration.segmentBytes = 1 << 16
        configuration.maxBatchBytes = 8 << 10
        configuration.backgroundMaintenance = false
        configuration.asyncFlushInterval = .milliseconds(2)
        configuration.compactionThreshold = 0.7
        configuration.minFreeDiskBytes = 0
        configuration.walIO = .pwrite
        return configuration
    }

    private static func runWorkload(
        directory: String, io: RecordingWALIO, random: inout SplitMix64, logger: Logger
    ) async throws -> [Ack] {
        var configuration = configuration(directory)
        configuration.walIOOverride = io
        let journal = try Journal(configuration: configuration, logger: logger)
        defer { journal.close() }
        _ = try await journal.createShards(shards.map { (name: $0.0, config: $0.1) })
        let acks = Box<[Ack]>([])
        let done = Box(false)
        // Maintenance (retention, checkpoints, removal and compaction) runs beside the writers.
        let maintenance = Thread {
            while !done.value.withLock({ $0 }) {
                try? journal.runMaintenance()
                Thread.sleep(forTimeInterval: 0.003)
            }
        }
        maintenance.start()
        let seeds = (0..<3).map { _ in random.next() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for seed in seeds {
                group.addTask {
                    var random = SplitMix64(seed: seed)
                    for n in 0..<70 {
                        let (shard, config) = shards[Int(random.next() % UInt64(shards.count))]
                        let values = (0..<Int(1 + random.next() % 4)).map { i in
                            let size = Int(40 + random.next() % 1400)
                            return Array("\(shard)-\(seed)-\(n)-\(i)|".utf8)
                                + [UInt8](repeating: UInt8(n & 0x7f), count: size)
                        }
                        let batch = RecordBatch.encode(
                            values.map { Record(timestamp: WallClock.milliseconds(), value: $0) })
                        let crc = values.reduce(UInt32(0)) { CRC32C.checksum($1, continuing: $0) }
                        let result: AppendResult = try await withCheckedThrowingContinuation { continuation in
                            journal.enqueueAppend(shard: shard, batch: batch) { result in
                                // On the writer thread, right after the group's write (and sync).
                                if case .success(let offsets) = result {
                                    let operation = io.operationCount
                                    acks.value.withLock {
                                        $0.append(
                                            Ack(
                                                shard: shard, base: offsets.baseOffset, count: values.count, crc: crc,
                                                durability: config.durability, operation: operation))
                                    }
                                }
                                continuation.resume(with: result.mapError { $0 })
                            }
                        }
                        _ = result
                    }
                }
            }
            try await group.waitForAll()
        }
        done.value.withLock { $0 = true }
        while maintenance.isExecuting { try await Task.sleep(for: .milliseconds(1)) }
        return acks.value.withLock { $0 }
    }

    // MARK: The image

    static let sector = 512

    static func crashImage(_ operations: ArraySlice<RecordingWALIO.Operation>, random: inout SplitMix64) -> [Int:
        [UInt8]]
    {
        var durable: [Int: [UInt8]] = [:]
        var pending: [Int: [(offset: Int, bytes: [UInt8])]] = [:]
        for operation in operations {
            switch operation {
            case .write(let file, let offset, let bytes):
                pending[file, default: []].append((Int(offset), bytes))
                if durable[file] == nil { durable[file] = [] }
            case .sync(let file):
                for write in pending[file] ?? [] {
                    apply(write.bytes, at: write.offset, to: &durable[file, default: []])
                }
                pending[file] = nil
            }
        }
        for (file, writes) in pending {
            for write in writes {
                switch random.next() % 3 {
                case 0:
                    continue  // never reached the disk
                case 1:
                    apply(write.bytes, at: write.offset, to: &durable[file, default: []])
                default:
                    // Torn: each sector of the write on its own.
                    var start = write.offset
                    while start < write.offset + write.bytes.count {
                        let end = min(write.offset + write.bytes.count, (start / sector + 1) * sector)
                        if random.next() & 1 == 0 {
                            apply(
                                Array(write.bytes[(start - write.offset)..<(end - write.offset)]), at: start,
                                to: &durable[file, default: []])
                        }
                        start = end
                    }
                }
            }
        }
        return durable
    }

    private static func apply(_ bytes: [UInt8], at offset: Int, to file: inout [UInt8]) {
        if file.count < offset + bytes.count { file += [UInt8](repeating: 0, count: offset + bytes.count - file.count) }
        file.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    private static func write(image: [Int: [UInt8]], files: [String], to directory: String) throws {
        let wal = directory + "/wal"
        try FileManager.default.createDirectory(atPath: wal, withIntermediateDirectories: true)
        for (file, bytes) in image {
            let name = (files[file] as NSString).lastPathComponent
            guard WALFormat.segmentID(fileName: name) != nil else { continue }
            guard FileManager.default.createFile(atPath: wal + "/" + name, contents: Data(bytes)) else {
                throw JournalError(.ioError, "cannot write the crash image \(wal)/\(name)")
            }
        }
    }

    // MARK: The check

    private static func verify(
        image: String, acks: [Ack], point: Int, syncs: [Int], report: inout Report, logger: Logger
    ) async throws {
        func required(_ ack: Ack) -> Bool {
            guard ack.operation <= point else { return false }
            if ack.durability == .fsync { return true }
            // An async record must survive once a sync after its acknowledgement happened: the
            // first sync from its write on (`syncs` is in order) comes before the crash point.
            var low = 0
            var high = syncs.count
            while low < high {
                let middle = (low + high) / 2
                if syncs[middle] < ack.operation - 1 { low = middle + 1 } else { high = middle }
            }
            return low < syncs.count && syncs[low] < point
        }
        let due = acks.filter { $0.shard != "r0" && required($0) }
        func fail(_ what: String) {
            if report.failures.count < 10 { report.failures.append("crash point \(point): \(what)") }
        }
        let journal: Journal
        do {
            journal = try Journal(configuration: configuration(image), logger: logger)
        } catch {
            report.recordsChecked += due.count
            report.lost += due.count
            fail("the journal did not open: \(error)")
            return
        }
        defer { journal.close() }
        let shards = Dictionary(uniqueKeysWithValues: journal.listShards().map { ($0.name, $0) })
        for ack in due {
            report.recordsChecked += 1
            guard shards[ack.shard] != nil else {
                report.lost += 1
                fail("shard \(ack.shard) is gone")
                continue
            }
            let records = try? await journal.read(shard: ack.shard, from: ack.base, maxBytes: 1).batches.first.map {
                try RecordBatch.decode($0)
            }
            guard let records, records.first?.offset == ack.base, records.count == ack.count,
                records.reduce(UInt32(0), { CRC32C.checksum($1.value ?? [], continuing: $0) }) == ack.crc
            else {
                report.lost += 1
                fail("\(ack.shard) offset \(ack.base) (\(ack.durability)) was acknowledged and is not there as written")
                continue
            }
        }
        // Dense offsets in every shard.
        for info in shards.values {
            var next = info.startOffset
            while next < info.endOffset {
                guard let read = try? await journal.read(shard: info.name, from: next, maxBytes: 1 << 20),
                    !read.batches.isEmpty
                else {
                    fail("\(info.name) cannot be read at \(next) (end \(info.endOffset))")
                    break
                }
                for batch in read.batches {
                    guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex),
                        UInt64(header.baseOffset) <= next, UInt64(header.lastOffset) >= next
                    else {
                        fail("\(info.name): gap at offset \(next)")
                        return
                    }
                    next = UInt64(header.lastOffset) + 1
                }
            }
        }
    }
}

/// The WAL I/O of a power-cut workload: writes go to the files (without syncing them: the
/// simulated disk is the record) and every write, with its bytes, and every sync is recorded.
final class RecordingWALIO: WALIO, Sendable {
    enum Operation: Sendable {
        case write(file: Int, offset: Int64, bytes: [UInt8])
        case sync(file: Int)
    }

    let name = "power-cut recorder"
    /// Files by the path they were written under; a reused segment file's header is written
    /// under its spare name and then renamed (`renamed`), which moves its record along.
    private let state = Mutex<(operations: [Operation], files: [String], index: [String: Int])>(([], [], [:]))

    var operationCount: Int { state.withLock { $0.operations.count } }
    var recorded: (operations: [Operation], files: [String]) { state.withLock { ($0.operations, $0.files) } }

    private static func path(_ fd: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
        guard count > 0 else { return "fd-\(fd)" }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func file(_ fd: Int32, in state: inout (operations: [Operation], files: [String], index: [String: Int]))
        -> Int
    {
        let path = Self.path(fd)
        if let known = state.index[path] { return known }
        state.files.append(path)
        state.index[path] = state.files.count - 1
        return state.files.count - 1
    }

    func renamed(from old: String, to new: String) {
        state.withLock { state in
            guard let file = state.index.removeValue(forKey: old) else { return }
            state.files[file] = new
            state.index[new] = file
        }
    }

    func write(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64, sync: Bool) throws(WALIOError) {
        try PwriteIO.pwriteAll(fd: fd, bytes, count: count, offset: offset)
        let copy = [UInt8](UnsafeRawBufferPointer(start: bytes, count: count))
        state.withLock { state in
            let file = file(fd, in: &state)
            state.operations.append(.write(file: file, offset: offset, bytes: copy))
            if sync { state.operations.append(.sync(file: file)) }
        }
    }

    func sync(fd: Int32) throws(WALIOError) {
        state.withLock { state in state.operations.append(.sync(file: file(fd, in: &state))) }
    }
}

/// Shared mutable state for closures that escape.
final class Box<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}
