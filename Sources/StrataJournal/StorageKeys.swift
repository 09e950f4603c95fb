/// Key layout of the RocksDB catalog and index. Every key starts with one tag byte; integers
/// are big-endian so that byte order is numeric order.
///
///     c <name>                      → shard record (JSON: id, config)        synced
///     s <shard id:8>                → start-offset floor (8)                 synced
///     x <shard id:8> <base:8>       → IndexEntry (36 bytes)                  unsynced, rebuilt from the WAL
///     t <shard id:8> <maxTs:8>      → base offset (8)                        unsynced, rebuilt from the WAL
///     o <group> 0x00 <shard name>   → committed consumer offset (8)          synced
///     k <namespace> 0x00 <key>      → gateway value                          synced
///     r <shard id:8> <first:8>      → TieredObject (JSON)                    synced, after the upload
///     d <object key>                → (empty): remote object to delete      synced
///     Q <queue>                     → QueueDefinition (JSON)                 synced
///     q <queue> 0x00 <source:4>     → QueueLedger (binary, versioned)        synced
///     m checkpoint                  → segment (8), position (8)              written with the index flush
///     m next-shard-id               → u64                                    synced
enum StorageKeys {
    static func shard(_ name: String) -> [UInt8] { [UInt8(ascii: "c")] + Array(name.utf8) }
    static let shardPrefix: [UInt8] = [UInt8(ascii: "c")]

    static func startFloor(_ id: UInt64) -> [UInt8] { [UInt8(ascii: "s")] + id.bigEndianBytes }

    static func index(_ id: UInt64, _ base: UInt64) -> [UInt8] {
        [UInt8(ascii: "x")] + id.bigEndianBytes + base.bigEndianBytes
    }
    static func indexPrefix(_ id: UInt64) -> [UInt8] { [UInt8(ascii: "x")] + id.bigEndianBytes }
    static let indexTag: [UInt8] = [UInt8(ascii: "x")]

    static func time(_ id: UInt64, _ timestamp: Int64) -> [UInt8] {
        // Flip the sign bit so that negative timestamps sort before positive ones.
        [UInt8(ascii: "t")] + id.bigEndianBytes + (UInt64(bitPattern: timestamp) ^ (1 << 63)).bigEndianBytes
    }
    static func timePrefix(_ id: UInt64) -> [UInt8] { [UInt8(ascii: "t")] + id.bigEndianBytes }
    static func timestamp(fromTimeKey key: ArraySlice<UInt8>) -> Int64 {
        Int64(bitPattern: UInt64(bigEndianBytes: key.dropFirst(9).prefix(8)) ^ (1 << 63))
    }

    static func consumerOffset(group: String, shard: String) -> [UInt8] {
        [UInt8(ascii: "o")] + Array(group.utf8) + [0] + Array(shard.utf8)
    }

    static func kv(namespace: String, key: [UInt8]) -> [UInt8] {
        [UInt8(ascii: "k")] + Array(namespace.utf8) + [0] + key
    }

    static func tier(_ id: UInt64, _ first: UInt64) -> [UInt8] {
        [UInt8(ascii: "r")] + id.bigEndianBytes + first.bigEndianBytes
    }
    static func tierPrefix(_ id: UInt64) -> [UInt8] { [UInt8(ascii: "r")] + id.bigEndianBytes }
    static let tierTag: [UInt8] = [UInt8(ascii: "r")]

    static func remoteDeletion(_ key: String) -> [UInt8] { [UInt8(ascii: "d")] + Array(key.utf8) }
    static let remoteDeletionTag: [UInt8] = [UInt8(ascii: "d")]

    static func queueDefinition(_ name: String) -> [UInt8] { queueDefinitionPrefix + Array(name.utf8) }
    static let queueDefinitionPrefix: [UInt8] = [UInt8(ascii: "Q")]
    static func queueLedgerPrefix(_ name: String) -> [UInt8] { [UInt8(ascii: "q")] + Array(name.utf8) + [0] }
    static func queueLedger(_ name: String, source: UInt32) -> [UInt8] {
        queueLedgerPrefix(name) + source.bigEndianBytes
    }

    static let checkpoint: [UInt8] = Array("mcheckpoint".utf8)
    static let nextShardID: [UInt8] = Array("mnext-shard-id".utf8)

    /// The smallest key greater than every key that starts with `prefix`.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last == 0xff {
                end.removeLast()
            } else {
                end[end.count - 1] = last + 1
                return end
            }
        }
        return [0xff]
    }
}

/// Where one batch lives: value of an `x` key.
struct IndexEntry: Sendable, Hashable {
    var segment: UInt64
    /// Position of the WAL frame (its 16-byte header) in the segment file.
    var position: UInt64
    /// Length of the whole frame: header and batch.
    var frameLength: UInt32
    var lastOffset: UInt64
    var maxTimestamp: Int64

    var encoded: [UInt8] {
        segment.bigEndianBytes + position.bigEndianBytes + frameLength.bigEndianBytes + lastOffset.bigEndianBytes
            + UInt64(bitPattern: maxTimestamp).bigEndianBytes
    }

    init(segment: UInt64, position: UInt64, frameLength: UInt32, lastOffset: UInt64, maxTimestamp: Int64) {
        self.segment = segment
        self.position = position
        self.frameLength = frameLength
        self.lastOffset = lastOffset
        self.maxTimestamp = maxTimestamp
    }

    init?(_ bytes: [UInt8]) {
        guard bytes.count == 36 else { return nil }
        segment = UInt64(bigEndianBytes: bytes[0..<8])
        position = UInt64(bigEndianBytes: bytes[8..<16])
        frameLength = UInt32(UInt64(bigEndianBytes: bytes[16..<20]))
        lastOffset = UInt64(bigEndianBytes: bytes[20..<28])
        maxTimestamp = Int64(bitPattern: UInt64(bigEndianBytes: bytes[28..<36]))
    }
}

extension FixedWidthInteger {
    var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    /// Reads a big-endian integer from up to `bitWidth / 8` bytes.
    init<Bytes: Collection<UInt8>>(bigEndianBytes bytes: Bytes) {
        var value: Self = 0
        for byte in bytes { value = value << 8 | Self(byte) }
        self = value
    }
}
