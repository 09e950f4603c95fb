import Foundation
import StrataWire

// The libFuzzer harness for every byte parser the journal exposes to peers (journal protocol
// frames and payloads, RecordBatch v2 validation and decoding). `make fuzz` builds it with
// -sanitize=fuzzer,address and -DSTRATA_LIBFUZZER and runs it; a normal build makes a replay
// tool that runs saved inputs (crash files, a corpus) through the same targets.

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
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let selector = bytes.first else { return 0 }
    // The first byte picks the parser, so one corpus covers both.
    if selector & 1 == 0 {
        JournalFuzzTarget.frames(Array(bytes.dropFirst()))
    } else {
        JournalFuzzTarget.batch(Array(bytes.dropFirst()))
    }
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
            let bytes = Array(data)
            guard let selector = bytes.first else { continue }
            if selector & 1 == 0 {
                JournalFuzzTarget.frames(Array(bytes.dropFirst()))
            } else {
                JournalFuzzTarget.batch(Array(bytes.dropFirst()))
            }
            print("ok \(path)")
        }
    }
}
#endif
