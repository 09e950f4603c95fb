import CStrataShims
import NIOCore

/// CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2 and of Strata's WAL frames.
///
/// Uses the CPU's CRC-32C instruction when it has one and a slicing-by-8 table otherwise.
public enum CRC32C {
    /// True when the hardware instruction is in use.
    public static var isHardwareAccelerated: Bool { strata_crc32c_hardware() != 0 }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        strata_crc32c(crc, bytes.baseAddress, bytes.count)
    }

    public static func checksum<Bytes: Sequence<UInt8>>(_ bytes: Bytes, continuing crc: UInt32 = 0) -> UInt32 {
        if let fast = bytes.withContiguousStorageIfAvailable({ strata_crc32c(crc, $0.baseAddress, $0.count) }) {
            return fast
        }
        return Array(bytes).withUnsafeBytes { strata_crc32c(crc, $0.baseAddress, $0.count) }
    }

    /// The checksum over `length` readable bytes of `buffer` starting `offset` bytes past its reader index.
    public static func checksum(_ buffer: ByteBuffer, offset: Int, length: Int) -> UInt32 {
        buffer.withUnsafeReadableBytes { raw in
            strata_crc32c(0, raw.baseAddress.map { $0 + offset }, length)
        }
    }

    /// The portable table implementation, exposed so tests can check it against the hardware path.
    public static func portableChecksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { strata_crc32c_portable(crc, $0.baseAddress, $0.count) }
    }
}
