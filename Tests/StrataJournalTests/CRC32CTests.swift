import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct CRC32CTests {
    /// The check value and the iSCSI vectors of RFC 3720, appendix B.4.
    static let vectors: [([UInt8], UInt32)] = [
        (Array("123456789".utf8), 0xE306_9283),
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xff, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        ([], 0),
    ]

    @Test(arguments: Self.vectors)
    func standardVectors(input: [UInt8], expected: UInt32) {
        #expect(CRC32C.checksum(input) == expected)
        #expect(CRC32C.portableChecksum(input) == expected)
    }

    @Test func hardwareAndTableAgreeOnEveryLengthAndAlignment() {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<4099).map { _ in UInt8.random(in: 0...255, using: &generator) }
        for start in 0..<9 {
            for length in [0, 1, 7, 8, 9, 63, 64, 255, 1000, 4090] {
                let slice = Array(data[start..<(start + length)])
                #expect(CRC32C.checksum(slice) == CRC32C.portableChecksum(slice))
            }
        }
    }

    @Test func chainsAcrossCalls() {
        let data = Array("The quick brown fox jumps over the lazy dog".utf8)
        let whole = CRC32C.checksum(data)
        for cut in 0...data.count {
            #expect(CRC32C.checksum(data[cut...], continuing: CRC32C.checksum(data[..<cut])) == whole)
        }
    }
}
