import Logging
import NIOCore
import StrataClient
import StrataJournal

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
            configuration: configuration, journal: InProcessJournalClient(journal: journal, node: "fuzz"),
            logger: logger)
        _ = try await gateway.createTopic("t", partitions: 2, configs: [:])
        return gateway
    }

    public static func request(_ bytes: [UInt8], gateway: KafkaGateway, timeout: Duration = .milliseconds(20)) async {
        var state = KafkaConnectionState(sasl: false)
        guard let task = try? gateway.handle(ByteBuffer(bytes: bytes), peer: "fuzz", state: &state) else {
            return
        }
        // Some requests wait as long as the client asked (a join waits up to its rebalance
        // timeout): the input is done after `timeout` whether or not its answer is, and the
        // request goes on without being awaited.
        // The first of the two to finish ends the input; the stream takes the second's yield too.
        let (finished, finish) = AsyncStream<Void>.makeStream()
        Task {
            _ = await task.value
            finish.yield()
        }
        Task {
            try? await Task.sleep(for: timeout)
            task.cancel()
            finish.yield()
        }
        for await _ in finished { break }
        finish.finish()
    }
}
