// The libFuzzer harness for every byte parser exposed to peers (journal protocol frames and
// payloads, RecordBatch v2 validation and decoding, MQTT packets). `make fuzz` builds it with
// -sanitize=fuzzer,address and -DSTRATA_LIBFUZZER and runs it; a normal build makes a replay
// tool that runs saved inputs (crash files, a corpus) through the same targets.

import Foundation
import NIOCore
import StrataMQTT
import StrataWire

/// Runs one input through the parser its first byte selects.
func fuzzTarget(_ bytes: [UInt8]) {
    guard let selector = bytes.first else { return }
    let input = Array(bytes.dropFirst())
    switch selector % 3 {
    case 0: JournalFuzzTarget.frames(input)
    case 1: JournalFuzzTarget.batch(input)
    default:
        // MQTT packets, as a server decodes them (CONNECT first) and as a 5.0 peer does.
        for version in [nil, MQTTProtocolVersion.v5] {
            var decoder = MQTTDecoder(version: version, maxPacketSize: 1 << 16)
            var buffer = ByteBuffer(bytes: input)
            while (try? decoder.decode(buffer: &buffer)) ?? nil != nil {}
        }
    }
}

#if STRATA_LIBFUZZER
import CStrataShims

/// SwiftPM links an executable's entry point as `<Target>_main`; here it hands over to
/// libFuzzer's driver.
@_cdecl("JournalFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        fuzzOneInput(data, size)
    }
}

func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    fuzzTarget(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#else
@main
struct JournalFuzzReplay {
    /// `journal-fuzz FILE...`: runs each file through the fuzz targets (as libFuzzer would).
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                continue
            }
            fuzzTarget(Array(data))
            print("ok \(path)")
        }
    }
}
#endif
