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
        guard let journalAddress = try? HostPort(parsing: journal) else {
            throw ValidationError("--journal must be HOST:PORT")
        }
        guard let listenAddress = try? HostPort(parsing: listen) else {
            throw ValidationError("--listen must be HOST:PORT")
        }
        guard defaultPartitions >= 1 else { throw ValidationError("--default-partitions must be at least 1") }
        guard StrataProcess.bootstrapLogging(level: logLevel) != nil else {
            throw ValidationError("unknown log level \(logLevel)")
        }
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
        guard nodeID >= 0 else { throw ValidationError("--node-id must be at least 0") }
        settings.nodeID = nodeID
        settings.defaultPartitions = defaultPartitions
        settings.autoCreateTopics = !noAutoCreateTopics
        do {
            try settings.loadAccessFiles(users: users, acl: acl)
        } catch {
            throw ValidationError("\(error)")
        }
        let logger = Logger(label: "strata.kafka")
        // Before the gateway's metrics are first used.
        let endpoint = try GatewayMetrics.endpoint(listen: metricsListen, logger: logger)
        let client = RemoteJournalClient(
            configuration: .fromEnvironment(host: journalAddress.host, port: journalAddress.port), logger: logger)
        let gateway = KafkaGateway(
            configuration: settings, journal: client, logger: logger, onBound: { StrataProcess.announce("kafka", $0) })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: gateway)]
        if let endpoint { services.append(.init(service: endpoint)) }
        // Bounded like journal-node's: cancelled after 10 s, exited after 15 s.
        try await NodeShutdown.run(services, logger: logger)
        await client.close()
    }
}
