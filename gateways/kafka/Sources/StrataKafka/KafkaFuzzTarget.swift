import Logging
import NIOCore
import StrataClient
import StrataJournal
import Synchronization

/// The Kafka request path for the libFuzzer harness (`Fuzz/`): one request frame's bytes,
/// decoded and handled by a gateway on an in-process journal. It must return normally for any
/// input; an answer that waits (a fetch, a join) is cut off after `timeout`.
public enum KafkaFuzzTarget {
    public static func gateway(on journal: Journal) async throws -> KafkaGateway {
        var configuration = KafkaGateway.Configuration()
        configuration.autoCreateTopics = false
        var logger = Logger(label: "strata.fuzz")
        logger.logLevel = .critical
        let gateway = KafkaGateway(
            configuration: configuration, journal: InProcessJournalClient(journal: journal, node: "fuzz"), logger: logger)
        _ = try await gateway.createTopic("t", partitions: 2, configs: [:])
        return gateway
    }

    public static func request(_ bytes: [UInt8], gateway: KafkaGateway, timeout: Duration = .milliseconds(20)) async {
        guard let task = try? gateway.handle(ByteBuffer(bytes: bytes), peer: "fuzz", session: KafkaSASLSession()) else {
            return
        }
        // Some requests wait as long as the client asked (a join waits up to its rebalance
        // timeout): the input is done after `timeout` whether or not its answer is, and the
        // request goes on without being awaited.
        let done = Box(false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finish: @Sendable () -> Void = {
                if done.value.withLock({ done in defer { done = true }; return !done }) { continuation.resume() }
            }
            Task {
                _ = await task.value
                finish()
            }
            Task {
                try? await Task.sleep(for: timeout)
                task.cancel()
                finish()
            }
        }
    }
}

/// Shared state for the harness's escaping closures.
final class Box<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}
