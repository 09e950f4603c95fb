import CURing
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// How the WAL submits its writes and syncs.
public enum WALIOMode: String, Sendable, Codable, CaseIterable {
    /// io_uring when it can be set up, else pwrite + fdatasync.
    case auto
    /// io_uring only; opening fails when the kernel refuses it.
    case uring
    /// pwrite + fdatasync.
    case pwrite
}

/// An errno from a WAL write or sync.
struct WALIOError: Error {
    var errno: Int32
    var operation: String

    var journalError: JournalError {
        let text = String(cString: strerror(errno))
        if errno == ENOSPC || errno == EDQUOT {
            return JournalError(.diskFull, "\(operation): \(text); nothing was acknowledged, retry when space returns")
        }
        return JournalError(.ioError, "\(operation): \(text)")
    }
}

/// The WAL's write path: one positioned write of a whole group, optionally followed by a data sync.
/// Every write and sync of a WAL file (segment headers included) goes through it: the one seam
/// where tests inject faults (`JournalConfiguration.walIOOverride`).
protocol WALIO: AnyObject {
    var name: String { get }
    /// Writes all `count` bytes at `offset`, then (if `sync`) makes them durable.
    func write(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64, sync: Bool) throws(WALIOError)
    func sync(fd: Int32) throws(WALIOError)
    /// A WAL file was renamed (a spare reused as a segment): for layers that track files.
    func renamed(from old: String, to new: String)
}

extension WALIO {
    func renamed(from old: String, to new: String) {}
}

/// Plain `pwrite` + `fdatasync`.
final class PwriteIO: WALIO, Sendable {
    let name = "pwrite"

    func write(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64, sync: Bool) throws(WALIOError) {
        try Self.pwriteAll(fd: fd, bytes, count: count, offset: offset)
        if sync { try self.sync(fd: fd) }
    }

    func sync(fd: Int32) throws(WALIOError) {
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw WALIOError(errno: errno, operation: "fdatasync") }
        }
    }

    static func pwriteAll(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64) throws(WALIOError) {
        var done = 0
        while done < count {
            let n = pwrite(fd, bytes + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw WALIOError(errno: errno, operation: "pwrite")
            }
            if n == 0 { throw WALIOError(errno: EIO, operation: "pwrite wrote nothing") }
            done += n
        }
    }
}

/// io_uring: the write and the fdatasync go in as one linked pair with one system call.
final class URingIO: WALIO, @unchecked Sendable {  // Used by the WAL writer thread only.
    let name = "io_uring"
    private let ring: UnsafeMutablePointer<io_uring>

    init() throws(WALIOError) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        let result = io_uring_queue_init(8, ring, 0)
        if result < 0 {
            ring.deallocate()
            throw WALIOError(errno: -result, operation: "io_uring_queue_init")
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    func write(fd: Int32, _ bytes: UnsafeRawPointer, count: Int, offset: Int64, sync: Bool) throws(WALIOError) {
        guard let write = io_uring_get_sqe(ring) else { throw WALIOError(errno: EBUSY, operation: "io_uring_get_sqe") }
        io_uring_prep_write(write, fd, bytes, UInt32(count), UInt64(offset))
        write.pointee.user_data = 1
        if sync {
            write.pointee.flags |= UInt8(1 << IOSQE_IO_LINK_BIT)
            guard let fsync = io_uring_get_sqe(ring) else {
                throw WALIOError(errno: EBUSY, operation: "io_uring_get_sqe")
            }
            io_uring_prep_fsync(fsync, fd, UInt32(IORING_FSYNC_DATASYNC))
            fsync.pointee.user_data = 2
        }
        let results = try submitAndReap(sync ? 2 : 1)
        let written = results[0]
        if written < 0 { throw WALIOError(errno: -written, operation: "io_uring write") }
        if written < count {
            // A short write breaks the link (the fsync completes with ECANCELED): finish plainly.
            try PwriteIO.pwriteAll(
                fd: fd, bytes + Int(written), count: count - Int(written), offset: offset + Int64(written))
            if sync { try PwriteIO().sync(fd: fd) }
            return
        }
        if sync, results[1] < 0 { throw WALIOError(errno: -results[1], operation: "io_uring fdatasync") }
    }

    func sync(fd: Int32) throws(WALIOError) {
        guard let fsync = io_uring_get_sqe(ring) else { throw WALIOError(errno: EBUSY, operation: "io_uring_get_sqe") }
        io_uring_prep_fsync(fsync, fd, UInt32(IORING_FSYNC_DATASYNC))
        fsync.pointee.user_data = 1
        let results = try submitAndReap(1)
        if results[0] < 0 { throw WALIOError(errno: -results[0], operation: "io_uring fdatasync") }
    }

    /// Submits what is queued, waits for `count` completions and returns their results ordered by user_data.
    private func submitAndReap(_ count: Int) throws(WALIOError) -> [Int32] {
        var submitted: Int32
        repeat {
            submitted = io_uring_submit_and_wait(ring, UInt32(count))
        } while submitted == -EINTR
        if submitted < 0 { throw WALIOError(errno: -submitted, operation: "io_uring_submit_and_wait") }
        var results = [Int32](repeating: 0, count: count)
        for _ in 0..<count {
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            var waited: Int32
            repeat {
                waited = io_uring_wait_cqe(ring, &cqe)
            } while waited == -EINTR
            guard waited == 0, let cqe else { throw WALIOError(errno: -waited, operation: "io_uring_wait_cqe") }
            let slot = Int(cqe.pointee.user_data) - 1
            if slot >= 0 && slot < count { results[slot] = cqe.pointee.res }
            io_uring_cqe_seen(ring, cqe)
        }
        return results
    }
}

/// An open file descriptor with one owner, closed in deinit.
final class FileDescriptor: Sendable {
    let fd: Int32
    let path: String

    init(path: String, flags: Int32, mode: mode_t = 0o644) throws(JournalError) {
        let fd = open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let code: JournalError.Code = (errno == ENOSPC || errno == EDQUOT) ? .diskFull : .ioError
            throw JournalError(code, "open \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    var size: Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return 0 }
        return Int64(info.st_size)
    }

    /// Reads exactly `count` bytes at `offset` into a new buffer; short reads are an error.
    func read(count: Int, at offset: Int64, into buffer: inout ByteBuffer) throws(JournalError) {
        var failure: JournalError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            var done = 0
            while done < count {
                let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = JournalError(
                        .ioError, "read \(path) at \(offset + Int64(done)): \(String(cString: strerror(errno)))")
                    return done
                }
                if n == 0 {
                    failure = JournalError(
                        .corruptData,
                        "\(path): expected \(count) bytes at position \(offset), file ends at \(offset + Int64(done))")
                    return done
                }
                done += n
            }
            return done
        }
        if let failure { throw failure }
    }

    /// Cuts the file at `fd` from `current` bytes to `size` in steps of at most `step`. Freeing a
    /// whole segment's blocks in one call keeps ext4's journal busy for 60–110 ms (over 300 under
    /// load), and every WAL sync on the filesystem waits for it; in 8 MiB steps a sync waits for
    /// about one step, some 10 ms (docs/architecture.md, "Deleting a segment file").
    static func shrink(fd: Int32, from current: Int64, to size: Int64, step: Int64 = 8 << 20) -> Bool {
        var at = current
        while at > size {
            at = max(size, at - step)
            guard ftruncate(fd, off_t(at)) == 0 else { return false }
        }
        return true
    }

    /// Unlinks a file once `shrink` has cut it to nothing.
    static func removeGradually(_ path: String) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 {
            var info = stat()
            if fstat(fd, &info) == 0 { _ = shrink(fd: fd, from: Int64(info.st_size), to: 0) }
            close(fd)
        }
        unlink(path)
    }

    /// Makes the directory entry of a new or removed file durable.
    static func syncDirectory(_ path: String) throws(JournalError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw JournalError(.ioError, "open directory \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno != EINTR {
                throw JournalError(.ioError, "fsync directory \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}
