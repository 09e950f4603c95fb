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
            configuration: configuration, journal: InProcessJournalClient(journal: journal, node: "fuzz"), logger: logger)
        _ = try await gateway.createTopic("t", partitions: 2, configs: [:])
        return gateway
    }

    public static func request(_ bytes: [UInt8], gateway: KafkaGateway, timeout: Duration = .milliseconds(20)) async {
        guard let task = try? gateway.handle(ByteBuffer(bytes: bytes), peer: "fuzz", session: KafkaSASLSession()) else {
            return
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await task.value }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            task.cancel()
            group.cancelAll()
        }
    }
}
