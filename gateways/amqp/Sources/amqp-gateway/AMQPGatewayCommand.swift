import ArgumentParser
import Logging
import ServiceLifecycle
import StrataAMQP
import StrataClient
import StrataKit
import StrataWire

/// `amqp-gateway`: the AMQP 0-9-1 gateway as its own process, storing everything in a
/// journal-node.
@main
struct AMQPGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amqp-gateway", abstract: "Serves AMQP 0-9-1 (RabbitMQ's clients) on a Strata journal-node.")

    @Option(help: "The journal-node's journal protocol address, HOST:PORT.")
    var journal: String = "127.0.0.1:7450"

    @Option(help: "AMQP listener, HOST:PORT (port 0 picks a free one).")
    var listen: String = "127.0.0.1:5672"

    @Option(help: "AMQPS listener port (with --tls-cert and --tls-key).")
    var tlsPort: Int = 5671

    @Option(help: "TLS certificate chain (PEM) for AMQPS.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM).")
    var tlsKey: String?

    @Option(
        help:
            "CA (PEM) whose client certificates AMQPS requires; offers SASL EXTERNAL (user = the certificate's common name)."
    )
    var tlsClientCa: String?

    @Option(help: "Users file (`strata scram-user` lines): PLAIN and AMQPLAIN passwords.")
    var users: String?

    @Flag(help: "Let clients in with any user name and password.")
    var allowAnonymous = false

    @Option(help: "Permissions file: VHOST USER CONFIGURE WRITE READ lines (regular expressions).")
    var permissions: String?

    @Option(help: "Virtual hosts clients may open, comma-separated.")
    var virtualHosts: String = "/"

    @Option(
        help:
            "Milliseconds a delivery stays leased without renewal: after a crash of this gateway its unacknowledged messages go to other consumers this much later."
    )
    var leaseMs: UInt32 = 60_000

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (and /health); none when not given.")
    var metricsListen: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        guard leaseMs >= 1000 else { throw ValidationError("--lease-ms is at least 1000") }
        try await GatewayProcess.run(
            label: "strata.amqp", journal: journal, listen: listen, logLevel: logLevel, metricsListen: metricsListen
        ) { client, listenAddress, logger in
            var settings = AMQPGateway.Configuration()
            settings.host = listenAddress.host
            settings.port = listenAddress.port
            settings.tlsPort = tlsPort
            settings.allowAnonymous = allowAnonymous
            settings.leaseMilliseconds = leaseMs
            settings.virtualHosts = virtualHosts.split(separator: ",").map(String.init)
            do {
                try settings.loadAccessFiles(
                    users: users, permissions: permissions, tlsCertificate: tlsCert, tlsKey: tlsKey,
                    tlsClientCA: tlsClientCa)
            } catch {
                throw ValidationError("\(error)")
            }
            return AMQPGateway(
                configuration: settings, journal: client, logger: logger,
                onBound: { StrataProcess.announce("amqp", $0) }, onTLSBound: { StrataProcess.announce("amqps", $0) })
        }
    }
}
