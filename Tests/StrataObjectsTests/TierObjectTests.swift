import NIOCore
import StrataJournal
import StrataTestSupport
import Testing

@testable import StrataObjects

@Suite struct TierObjectTests {
    /// 300 batches of 3 records with offsets assigned as the journal would.
    static func batches() -> [ByteBuffer] {
        (0..<300).map { n in
            var batch = makeBatch("b\(n)", count: 3, timestamp: 1_000 + Int64(n) * 10, size: 700)
            batch.setInteger(Int64(n * 3), at: batch.readerIndex)  // base offset
            return batch
        }
    }

    @Test func blocksRoundTripThroughTheTrailer() throws {
        let batches = Self.batches()
        let (bytes, index) = try TierObject.encode(shard: "kafka/t/0", batches: batches, blockBytes: 64 << 10)
        #expect(index.blocks.count > 5)
        #expect(index.firstOffset == 0 && index.lastOffset == 899)
        #expect(bytes.count < batches.reduce(0) { $0 + $1.readableBytes })  // zstd earns its keep on padded values
        let footer = try TierObject.footer(Array(bytes.suffix(TierObject.footerSize)), key: "k")
        let trailer = Array(bytes[(bytes.count - TierObject.footerSize - footer.trailerLength)..<(bytes.count - TierObject.footerSize)])
        let read = try TierObject.index(trailer: trailer, crc: footer.trailerCRC, objectSize: bytes.count, key: "k")
        #expect(read == index)
        #expect(CRC32C.checksum(bytes.prefix(index.blocks.last!.byteRange.upperBound)) == footer.objectCRC)
        var restored: [ByteBuffer] = []
        for (number, block) in read.blocks.enumerated() {
            restored += try TierObject.batches(ofBlock: Array(bytes[block.byteRange]), block, key: "k", number: number)
        }
        #expect(restored == batches)
        #expect(read.block(for: 450).map { read.blocks[$0].firstOffset <= 450 && read.blocks[$0].lastOffset >= 450 } == true)
        #expect(read.block(atOrAfter: 1_000 + 150 * 10).map { read.blocks[$0].maxTimestamp >= 2_500 } == true)
        #expect(read.block(for: 900) == nil)
    }

    @Test func corruptionIsReportedWithKeyAndBlock() throws {
        let (bytes, index) = try TierObject.encode(shard: "s", batches: Self.batches(), blockBytes: 64 << 10)
        var damaged = Array(bytes[index.blocks[2].byteRange])
        damaged[damaged.count / 2] ^= 0x40
        #expect(throws: ObjectStoreError.corrupt("obj: block 2 checksum mismatch")) {
            try TierObject.batches(ofBlock: damaged, index.blocks[2], key: "obj", number: 2)
        }
        let footer = try TierObject.footer(Array(bytes.suffix(TierObject.footerSize)), key: "obj")
        var trailer = Array(bytes[(bytes.count - TierObject.footerSize - footer.trailerLength)..<(bytes.count - TierObject.footerSize)])
        trailer[20] ^= 1
        #expect(throws: ObjectStoreError.corrupt("obj: trailer checksum mismatch")) {
            try TierObject.index(trailer: trailer, crc: footer.trailerCRC, objectSize: bytes.count, key: "obj")
        }
        #expect(throws: ObjectStoreError.self) { try TierObject.footer([UInt8](repeating: 0, count: 24), key: "obj") }
    }
}
