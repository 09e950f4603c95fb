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
    @Test func journalFramesAndRequests() {
        var rng = SeededMutator(seed: 42)
        let seeds: [[UInt8]] = JournalWireTests.requests.enumerated().map { i, request in
            var bytes = ByteBuffer()
            JournalFrameEncoder().encode(data: request.frame(correlationID: UInt32(i)), out: &bytes)
            return Array(bytes.readableBytesView)
        }
        for iteration in 0..<20_000 {
            let input = rng.mutate(seeds[iteration % seeds.count])
            JournalFuzzTarget.frames(input)
        }
    }

    @Test func recordBatches() {
        var rng = SeededMutator(seed: 7)
        let seeds = [makeBatch("a", count: 1), makeBatch("bb", count: 5, size: 40), makeBatch("c", count: 2)]
            .map { Array($0.readableBytesView) }
        for iteration in 0..<20_000 {
            let input = rng.mutate(seeds[iteration % seeds.count])
            JournalFuzzTarget.batch(input)
        }
    }

    /// Mutations that keep the CRC right reach the record decoder itself.
    @Test func recordsBehindAValidCRC() {
        var rng = SeededMutator(seed: 99)
        let seed = Array(makeBatch("rec", count: 4, size: 10).readableBytesView)
        for _ in 0..<20_000 {
            var body = rng.mutate(Array(seed[RecordBatch.headerSize...]))
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
