import NIOCore
import StrataJournal
import StrataTestSupport
import StrataWire
import Testing

/// Seeded mutation fuzzing of everything that parses bytes from a peer or a disk: valid inputs
/// are flipped, truncated, extended and spliced; every outcome must be a value or a typed
/// `JournalError`, never a crash or a hang. (The libFuzzer harness in Fuzz/ runs the same
/// entry points coverage-guided: `make fuzz`.)
@Suite struct DecoderFuzzTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
            case 2:
                bytes += (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 3 where bytes.count > 4:
                // Plausible lengths in the first bytes: the usual way to reach deep code.
                let value = [UInt32(0), 1, 5, 0x7f, 0xffff, 0x7fff_ffff, 0xffff_ffff].randomElement(using: &rng)!
                let at = Int.random(in: 0..<(bytes.count - 3), using: &rng)
                withUnsafeBytes(of: value.bigEndian) { bytes.replaceSubrange(at..<at + 4, with: $0) }
            default:
                if let at = bytes.indices.randomElement(using: &rng) { bytes.insert(0xff, at: at) }
            }
        }
        return bytes
    }

    @Test func journalFramesAndRequests() {
        var rng = SplitMix(state: 42)
        let seeds: [[UInt8]] = JournalWireTests.requests.enumerated().map { i, request in
            var bytes = ByteBuffer()
            JournalFrameEncoder().encode(data: request.frame(correlationID: UInt32(i)), out: &bytes)
            return Array(bytes.readableBytesView)
        }
        for iteration in 0..<20_000 {
            let input = Self.mutate(seeds[iteration % seeds.count], &rng)
            JournalFuzzTarget.frames(input)
        }
    }

    @Test func recordBatches() {
        var rng = SplitMix(state: 7)
        let seeds = [makeBatch("a", count: 1), makeBatch("bb", count: 5, size: 40), makeBatch("c", count: 2)]
            .map { Array($0.readableBytesView) }
        for iteration in 0..<20_000 {
            let input = Self.mutate(seeds[iteration % seeds.count], &rng)
            JournalFuzzTarget.batch(input)
        }
    }

    /// Mutations that keep the CRC right reach the record decoder itself.
    @Test func recordsBehindAValidCRC() {
        var rng = SplitMix(state: 99)
        let seed = Array(makeBatch("rec", count: 4, size: 10).readableBytesView)
        for _ in 0..<20_000 {
            var body = Self.mutate(Array(seed[RecordBatch.headerSize...]), &rng)
            if body.count > 1 << 16 { body.removeLast(body.count - (1 << 16)) }
            var buffer = ByteBuffer(bytes: seed[..<RecordBatch.headerSize] + body)
            buffer.setInteger(Int32(buffer.readableBytes - 12), at: 8)
            buffer.setInteger(
                CRC32C.checksum(buffer, offset: RecordBatch.attributesOffset, length: buffer.readableBytes - RecordBatch.attributesOffset),
                at: RecordBatch.crcOffset)
            JournalFuzzTarget.batch(Array(buffer.readableBytesView))
        }
    }
}
