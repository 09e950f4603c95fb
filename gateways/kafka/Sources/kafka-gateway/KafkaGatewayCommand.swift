import ArgumentParser
import Logging
import ServiceLifecycle
import StrataClient
import StrataKafka
import StrataKit
import StrataWire

/// `kafka-gateway`: the Kafka gateway as its own process, storing everything in a journal-node.
@main
struct KafkaGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka-gateway", abstract: "Serves the Kafka protocol on a Strata journal-node.")

    @Option(help: "The journal-node's journal protocol address, HOST:PORT.")
    var journal: String = "127.0.0.1:7450"

    @Option(help: "Kafka listener, HOST:PORT (port 0 picks a free one).")
    var listen: String = "127.0.0.1:9092"

    @Option(help: "The address clients are told to connect to (Metadata), HOST:PORT; the listener's by default.")
    var advertised: String?

    @Option(help: "Broker id, unique among the Kafka gateways of one journal (each is a broker of one cluster).")
    var nodeID: Int32 = 1

    @Option(help: "Partitions of an automatically created topic.")
    var defaultPartitions: Int32 = 1

    @Flag(help: "Do not create topics that clients ask metadata for.")
    var noAutoCreateTopics = false

    @Option(
        help:
            "SASL users file (PLAIN and SCRAM-SHA-256; `strata scram-user` makes lines): every client must authenticate."
    )
    var users: String?

    @Option(help: "ACL file: USER produce|consume|admin TOPIC-PATTERN lines (needs --users).")
    var acl: String?

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (and /health); none when not given.")
    var metricsListen: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        guard defaultPartitions >= 1 else { throw ValidationError("--default-partitions must be at least 1") }
        guard nodeID >= 0 else { throw ValidationError("--node-id must be at least 0") }
        try await GatewayProcess.run(
            label: "strata.kafka", journal: journal, listen: listen, logLevel: logLevel, metricsListen: metricsListen
        ) { client, listenAddress, logger in
            var settings = KafkaGateway.Configuration()
            settings.host = listenAddress.host
            settings.port = listenAddress.port
            if let advertised {
                guard let address = try? HostPort(parsing: advertised) else {
                    throw ValidationError("--advertised must be HOST:PORT")
                }
                settings.advertisedHost = address.host
                settings.advertisedPort = address.port
            }
            settings.nodeID = nodeID
            settings.defaultPartitions = defaultPartitions
            settings.autoCreateTopics = !noAutoCreateTopics
            do {
                try settings.loadAccessFiles(users: users, acl: acl)
            } catch {
                throw ValidationError("\(error)")
            }
            return KafkaGateway(
                configuration: settings, journal: client, logger: logger,
                onBound: { StrataProcess.announce("kafka", $0) })
        }
    }
}
