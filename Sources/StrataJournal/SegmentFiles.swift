import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Read handles of WAL segment files, opened on first use and shared by readers.
final class SegmentFiles: Sendable {
    let directory: String
    private let open = Mutex<[UInt64: FileDescriptor]>([:])
    private let salts = Mutex<[UInt64: UInt32]>([:])
    /// Deleted segments' files kept for reuse (at most `maxSpares`).
    private let spares = Mutex<[String]>([])
    static let maxSpares = 2

    init(directory: String) {
        self.directory = directory
    }

    func path(_ id: UInt64) -> String { directory + "/" + WALFormat.segmentFileName(id) }

    func reader(_ id: UInt64) throws(JournalError) -> FileDescriptor {
        if let file = open.withLock({ $0[id] }) { return file }
        let file = try FileDescriptor(path: path(id), flags: O_RDONLY)
        return open.withLock { files in
            if let existing = files[id] { return existing }
            files[id] = file
            return file
        }
    }

    /// The frame checksum salt of segment `id`, from its header's format version (read once).
    func salt(_ id: UInt64) throws(JournalError) -> UInt32 {
        if let known = salts.withLock({ $0[id] }) { return known }
        let file = try reader(id)
        var header = ByteBuffer()
        try file.read(count: WALFormat.segmentHeaderSize, at: 0, into: &header)
        let salt = WALFormat.salt(segment: id, version: WALFormat.headerVersion(header) ?? 1)
        salts.withLock { $0[id] = salt }
        return salt
    }

    /// A scanner over segment `id`'s frames from `start` (the end of its header by default), with
    /// the segment's checksum salt.
    func scanner(
        _ id: UInt64, from start: Int = WALFormat.segmentHeaderSize, maxFrame: Int, allocator: ByteBufferAllocator
    ) throws(JournalError) -> SegmentScanner {
        let file = try reader(id)
        return SegmentScanner(
            file: file, size: Int(file.size), from: start, maxFrame: maxFrame, salt: try salt(id), allocator: allocator)
    }

    /// Records the salt of a segment this process created.
    func setSalt(_ salt: UInt32, for id: UInt64) { salts.withLock { $0[id] = salt } }

    /// Reads and checks the frame of `entry`; returns the batch. Corruption names file and position.
    func readBatch(_ entry: IndexEntry, maxFrame: Int, allocator: ByteBufferAllocator) throws(JournalError)
        -> ByteBuffer
    {
        let file = try reader(entry.segment)
        let salt = try salt(entry.segment)
        var buffer = allocator.buffer(capacity: Int(entry.frameLength))
        try file.read(count: Int(entry.frameLength), at: Int64(entry.position), into: &buffer)
        switch WALFormat.checkFrame(buffer, at: buffer.readerIndex, maxFrame: maxFrame, salt: salt) {
        case .frame(_, _, let length) where length == Int(entry.frameLength):
            buffer.moveReaderIndex(forwardBy: WALFormat.frameHeaderSize)
            return buffer
        case .frame, .end:
            throw JournalError(.corruptData, "\(file.path) position \(entry.position): frame does not match the index")
        case .corrupt(let reason):
            throw JournalError(.corruptData, "\(file.path) position \(entry.position): \(reason)")
        }
    }

    /// Forgets a segment file and keeps it as a spare for a later segment (while fewer than
    /// `maxSpares` are kept), else deletes it: renamed to `<id>.deleting` (so that recovery never
    /// sees a part-cut segment), cut down in steps, unlinked. Neither name is a segment's, so
    /// recovery never reads them; a `.deleting` file left by a crash goes at the next open.
    func remove(_ id: UInt64) {
        _ = open.withLock { $0.removeValue(forKey: id) }
        _ = salts.withLock { $0.removeValue(forKey: id) }
        let spare = directory + "/" + String(id) + ".spare"
        let kept = spares.withLock { spares -> Bool in
            guard spares.count < Self.maxSpares, rename(path(id), spare) == 0 else { return false }
            spares.append(spare)
            return true
        }
        guard !kept else { return }
        let deleting = directory + "/" + String(id) + ".deleting"
        if rename(path(id), deleting) == 0 {
            // The new name is durable before any cut, on every filesystem: a crash then never
            // leaves a cut file under the segment's name.
            try? FileDescriptor.syncDirectory(directory)
            FileDescriptor.removeGradually(deleting)
        } else {
            unlink(path(id))
        }
    }

    /// A spare file to reuse for a new segment, if one is kept.
    func takeSpare() -> String? {
        spares.withLock { $0.popLast() }
    }

    /// Spare files left from an earlier run: kept (up to `maxSpares`) or removed; files a crash
    /// left half deleted are removed.
    func adoptSpares() {
        guard let names = try? FileManagerShim.contents(of: directory) else { return }
        for name in names where name.hasSuffix(".deleting") { FileDescriptor.removeGradually(directory + "/" + name) }
        for name in names.filter({ $0.hasSuffix(".spare") }).sorted() {
            let path = directory + "/" + name
            let kept = spares.withLock { spares -> Bool in
                guard spares.count < Self.maxSpares else { return false }
                spares.append(path)
                return true
            }
            if !kept { FileDescriptor.removeGradually(path) }
        }
    }

    /// Segment ids present in the directory, ascending.
    func list() -> [UInt64] {
        guard let names = try? FileManagerShim.contents(of: directory) else { return [] }
        return names.compactMap(WALFormat.segmentID(fileName:)).sorted()
    }
}

enum FileManagerShim {
    static func contents(of directory: String) throws -> [String] {
        guard let dir = opendir(directory) else { throw JournalError(.ioError, "cannot list \(directory)") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// The segment the writer appends to, and the writer's reusable gather buffer.
struct ActiveSegment {
    var id: UInt64
    var file: FileDescriptor
    var position: UInt64
    /// Bytes written since the last sync.
    var unsynced = false
    /// How far the file is known synced (every frame written carries it).
    var syncedPosition = UInt64(WALFormat.segmentHeaderSize)
    /// The segment's frame checksum salt.
    var salt: UInt32 = 0
    /// The file is a reused spare: its old bytes past `position` go when it is sealed.
    var recycled = false
    var buffer = GatherBuffer()
    /// When it was created (its header's time; wall clock, milliseconds), for `segmentMaxAge`.
    var createdMilliseconds = WallClock.milliseconds()
}

extension ActiveSegment {
    /// Cuts a reused file to its frames (when sealed, and at close) so that no segment keeps
    /// another segment's old bytes past its end: the data sync goes through the WAL I/O layer
    /// like every other, then a full fsync makes the new size durable.
    mutating func cutReusedTail(io: any WALIO) throws(JournalError) {
        guard recycled, file.size > Int64(position) else { return }
        guard FileDescriptor.shrink(fd: file.fd, from: file.size, to: Int64(position)) else {
            throw JournalError(.ioError, "cannot cut \(file.path) at \(position): \(String(cString: strerror(errno)))")
        }
        do throws(WALIOError) { try io.sync(fd: file.fd) } catch { throw error.journalError }
        guard fsync(file.fd) == 0 else {
            throw JournalError(.ioError, "cannot sync the size of \(file.path): \(String(cString: strerror(errno)))")
        }
        unsynced = false
        recycled = false
    }
}

/// A page-aligned buffer the writer copies a group's frames into for one write call.
final class GatherBuffer: @unchecked Sendable {  // Used by the WAL writer thread only.
    private(set) var pointer: UnsafeMutableRawPointer
    private(set) var capacity: Int
    var count = 0

    init(capacity: Int = 1 << 20) {
        self.capacity = capacity
        pointer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
    }

    deinit { pointer.deallocate() }

    /// Stamps the synced position into the frame that starts `offset` bytes into the buffer.
    func stampSynced(frameAt offset: Int, _ synced: UInt32, salt: UInt32) {
        WALFormat.stampSynced(pointer + offset, synced, salt: salt)
    }

    func append(_ bytes: ByteBuffer) {
        let needed = count + bytes.readableBytes
        if needed > capacity {
            var grown = capacity
            while grown < needed { grown *= 2 }
            let new = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 4096)
            new.copyMemory(from: pointer, byteCount: count)
            pointer.deallocate()
            pointer = new
            capacity = grown
        }
        bytes.withUnsafeReadableBytes { raw in
            (pointer + count).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
        }
        count = needed
    }
}
