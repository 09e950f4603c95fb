// The libFuzzer harness for every byte parser exposed to peers: journal protocol frames and
// payloads, RecordBatch v2 validation and decoding, MQTT packets, Kafka requests (handled by a
// gateway on an in-process journal), and journal protocol requests carried out on an
// in-process journal (append validation, reads, retention and offload arithmetic), and AMQP
// frames through the AMQP connection's state machine. `make fuzz`
// builds it with -sanitize=fuzzer,address and -DSTRATA_LIBFUZZER and runs it; a normal build
// makes a replay tool that runs saved inputs (crash files, a corpus) through the same targets.
// STRATA_FUZZ_TARGET=frames|batch|mqtt|kafka|journal|amqp runs one target on whole inputs; without
// it the first byte picks the target.

import Foundation
import Logging
import NIOCore
import StrataAMQP
import StrataJournal
import StrataKafka
import StrataMQTT
import StrataWire
import Synchronization

enum FuzzTarget: String, CaseIterable {
    case frames, batch, mqtt, kafka, journal, amqp
}

let forcedTarget = ProcessInfo.processInfo.environment["STRATA_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:))

/// Runs one input through the target STRATA_FUZZ_TARGET names, or the one its first byte picks.
func fuzzTarget(_ bytes: [UInt8]) {
    let target: FuzzTarget
    let input: [UInt8]
    if let forcedTarget {
        target = forcedTarget
        input = bytes
    } else {
        guard let selector = bytes.first else { return }
        target = FuzzTarget.allCases[Int(selector) % FuzzTarget.allCases.count]
        input = Array(bytes.dropFirst())
    }
    switch target {
    case .frames: JournalFuzzTarget.frames(input)
    case .batch: JournalFuzzTarget.batch(input)
    case .mqtt:
        // MQTT packets, as a server decodes them (CONNECT first) and as a 5.0 peer does.
        for version in [nil, MQTTProtocolVersion.v5] {
            var decoder = MQTTDecoder(version: version, maxPacketSize: 1 << 16)
            var buffer = ByteBuffer(bytes: input)
            while (try? decoder.decode(buffer: &buffer)) ?? nil != nil {}
        }
    case .kafka:
        let engine = FuzzEngine.shared
        blocking { await KafkaFuzzTarget.request(input, gateway: engine.gateway) }
    case .amqp: AMQPFuzzTarget.frames(input)
    case .journal:
        let engine = FuzzEngine.shared
        let round = engine.round.withLock { round in
            round += 1
            return round
        }
        blocking { await JournalFuzzTarget.execute(input, on: engine.journal, round: round) }
    }
}

/// The in-process journal (on tmpfs where there is one, so fsync is free) and Kafka gateway the
/// kafka and journal targets run on, made once per process.
final class FuzzEngine: Sendable {
    let journal: Journal
    let gateway: KafkaGateway
    let round = Mutex(0)

    static let shared: FuzzEngine = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        var configuration = JournalConfiguration(dataDirectory: base + "strata-fuzz-" + UUID().uuidString)
        configuration.segmentBytes = 1 << 20
        configuration.maxBatchBytes = 256 << 10
        configuration.backgroundMaintenance = false
        configuration.minFreeDiskBytes = 0
        configuration.walIO = .pwrite
        var logger = Logger(label: "strata.fuzz")
        logger.logLevel = .critical
        let journal = try! Journal(configuration: configuration, logger: logger)
        let gateway = blocking { try! await KafkaFuzzTarget.gateway(on: journal) }
        return FuzzEngine(journal: journal, gateway: gateway)
    }()

    init(journal: Journal, gateway: KafkaGateway) {
        self.journal = journal
        self.gateway = gateway
    }
}

/// Runs async work to completion from libFuzzer's synchronous callback.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
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
