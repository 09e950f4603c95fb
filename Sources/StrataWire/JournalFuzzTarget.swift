import NIOCore
import StrataJournal

/// The byte-parsing entry points, for the libFuzzer harness (`Fuzz/`) and the seeded fuzz tests.
/// Each must return normally for any input: malformed bytes end in a typed `JournalError`.
public enum JournalFuzzTarget {
    /// Journal protocol bytes as a node receives them: frames, then request payloads, then
    /// answer payloads as a client reads them.
    public static func frames(_ bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = JournalFrameDecoder(maxFrameBytes: 1 << 20)
        while let frame = try? decoder.decode(buffer: &buffer) {
            if frame.type.isRequest {
                _ = try? JournalRequest.decode(frame)
            } else {
                var payload = frame.payload
                _ = try? payload.readReadResult()
                payload = frame.payload
                _ = try? payload.readShardInfo()
                payload = frame.payload
                _ = try? payload.readNodeStatus()
                _ = JournalResponse.decodeError(frame)
            }
        }
    }

    /// RecordBatch v2 bytes as an append brings them: validated, then decoded.
    public static func batch(_ bytes: [UInt8]) {
        let buffer = ByteBuffer(bytes: bytes)
        guard (try? RecordBatch.validate(buffer, maxBytes: 1 << 20)) != nil else { return }
        _ = try? RecordBatch.decode(buffer)
    }
}
