import NIOCore

/// Reads a segment file front to back in bounded chunks (never the whole file at once) and
/// checks the frame at each position in turn. Used by recovery and compaction.
struct SegmentScanner {
    let file: FileDescriptor
    let size: Int
    let maxFrame: Int
    /// The segment's frame checksum salt (`WALFormat.salt`).
    let salt: UInt32
    private let chunk: Int
    private let allocator: ByteBufferAllocator
    /// Bytes of the file from `bufferOffset` on; its reader index stays 0.
    private(set) var buffer: ByteBuffer
    private var bufferOffset: Int
    /// File position of the next frame.
    private(set) var position: Int

    init(file: FileDescriptor, size: Int, from start: Int, maxFrame: Int, salt: UInt32, allocator: ByteBufferAllocator)
    {
        self.file = file
        self.salt = salt
        self.size = size
        self.maxFrame = maxFrame
        self.allocator = allocator
        chunk = max(8 << 20, 2 * maxFrame)
        buffer = allocator.buffer(capacity: 0)
        bufferOffset = start
        position = start
    }

    /// The check of the frame at `position`, and where that frame starts in `buffer`.
    mutating func check() throws(JournalError) -> (check: WALFormat.FrameCheck, index: Int) {
        var index = position - bufferOffset
        if buffer.writerIndex - index < maxFrame, bufferOffset + buffer.writerIndex < size {
            var fresh = allocator.buffer(capacity: chunk)
            if index < buffer.writerIndex {
                fresh.writeImmutableBuffer(buffer.getSlice(at: index, length: buffer.writerIndex - index)!)
            }
            bufferOffset = position
            let want = min(chunk - fresh.writerIndex, size - (bufferOffset + fresh.writerIndex))
            if want > 0 { try file.read(count: want, at: Int64(bufferOffset + fresh.writerIndex), into: &fresh) }
            buffer = fresh
            index = 0
        }
        return (WALFormat.checkFrame(buffer, at: index, maxFrame: maxFrame, salt: salt), index)
    }

    mutating func advance(by length: Int) {
        position += length
    }
}
