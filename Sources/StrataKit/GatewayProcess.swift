import Logging
import ServiceLifecycle
import StrataClient
import StrataJournal
import StrataWire

/// What every gateway executable (mqtt-gateway, kafka-gateway, amqp-gateway) does around its
/// gateway: check the journal and listener addresses and the log level, start logging and the
/// metrics endpoint (before the gateway's metrics are first used), connect to the journal-node,
/// run the gateway until a signal with journal-node's bounded shutdown (cancelled after 10 s,
/// exited after 15 s), and close the journal connection.
public enum GatewayProcess {
    /// A gateway's command line did not hold up; the message names the option.
    public struct InvalidOption: Error, CustomStringConvertible {
        public var description: String
    }

    public static func run(
        label: String, journal: String, listen: String, logLevel: String, metricsListen: String?,
        gateway: (_ journal: RemoteJournalClient, _ listen: HostPort, _ logger: Logger) throws -> any Service
    ) async throws {
        guard let journalAddress = try? HostPort(parsing: journal) else {
            throw InvalidOption(description: "--journal must be HOST:PORT")
        }
        guard let listenAddress = try? HostPort(parsing: listen) else {
            throw InvalidOption(description: "--listen must be HOST:PORT")
        }
        guard StrataProcess.bootstrapLogging(level: logLevel) != nil else {
            throw InvalidOption(description: "unknown log level \(logLevel)")
        }
        let logger = Logger(label: label)
        let endpoint = try GatewayMetrics.endpoint(listen: metricsListen, logger: logger)
        let client = RemoteJournalClient(
            configuration: .fromEnvironment(host: journalAddress.host, port: journalAddress.port), logger: logger)
        let service: any Service
        do {
            service = try gateway(client, listenAddress, logger)
        } catch {
            await client.close()
            throw error
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: service)]
        if let endpoint { services.append(.init(service: endpoint)) }
        try await NodeShutdown.run(services, logger: logger)
        await client.close()
    }
}
