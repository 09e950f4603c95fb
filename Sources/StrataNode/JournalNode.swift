import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import StrataAMQP
import StrataClient
import StrataJournal
import StrataKafka
import StrataKit
import StrataMQTT
import StrataObjects
import StrataWire

/// A whole node: the journal, the journal protocol server, the HTTP server (and, as they come,
/// in-process gateways), run as one ServiceGroup that SIGTERM and SIGINT shut down gracefully.
public enum JournalNode {
    /// Runs until a shutdown signal. `announce` receives one line per listener once it is bound
    /// (`journal LISTEN-ADDRESS`, `http ADDRESS`), which `make run` and the tests read.
    public static func run(
        configuration: NodeConfiguration, logger: Logger,
        metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        announce: @escaping @Sendable (String) -> Void
    ) async throws {
        let gateways = try configuration.resolvedGateways()
        let (access, tls) = try configuration.journalSecurity()
        let adminToken = try configuration.adminToken()
        for warning in try configuration.checkExposure(access: access, adminToken: adminToken) {
            logger.warning("\(warning)")
        }
        let journal = try Journal(configuration: configuration.journalConfiguration, logger: logger)
        let metrics = NodeMetrics(registry: metricsRegistry)
        var serverConfiguration = JournalServer.Configuration(
            host: configuration.listen.host, port: configuration.listen.port)
        serverConfiguration.maxFrameBytes = configuration.maxFrameBytes
        serverConfiguration.nodeName = configuration.nodeName
        serverConfiguration.access = access
        serverConfiguration.tls = tls
        let server = JournalServer(
            configuration: serverConfiguration, journal: journal, metrics: metrics, logger: logger,
            onBound: { announce("journal \(StrataProcess.display($0))") })
        var store: (any ObjectStore)?
        try configuring(journal) { store = try configuration.tier.makeStore() }
        var offloader: TierOffloader?
        var tierStatus: (@Sendable () -> TierOffloader.Status)?
        if let store {
            journal.attachColdTier(ObjectColdTier(store: store, cacheBytes: configuration.tier.cacheBytes))
            let tier = TierOffloader(
                configuration: configuration.tier.offloaderConfiguration, journal: journal, store: store, logger: logger
            )
            offloader = tier
            tierStatus = { tier.status() }
        }
        let routes = NodeHTTPRoutes(
            journal: journal, metrics: metrics, status: { server.status() }, config: { configuration.summary },
            tier: tierStatus, adminToken: adminToken)
        let http = NodeHTTPServer.endpoint(
            host: configuration.http.host, port: configuration.http.port, routes: routes, logger: logger,
            onBound: { announce("http \(StrataProcess.display($0))") })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: JournalService(journal: journal)),
            .init(service: server),
        ]
        // After the journal's service, so it stops before the journal closes.
        if let offloader { services.insert(.init(service: offloader), at: 1) }
        if gateways.contains("mqtt") {
            var mqtt = MQTTGateway.Configuration()
            mqtt.host = configuration.mqttListen.host
            mqtt.port = configuration.mqttListen.port
            mqtt.allowAnonymous = configuration.mqttAllowAnonymous
            mqtt.retention = configuration.mqttRetention
            mqtt.sharedTopics = configuration.mqttSharedTopics
            mqtt.sharedRedispatch = configuration.mqttSharedRedispatch
            mqtt.topicPartitions = configuration.mqttTopicPartitions
            mqtt.maxKeepAlive = configuration.mqttMaxKeepAlive
            mqtt.sysInterval = configuration.mqttSysInterval
            mqtt.webSocketHost = configuration.mqttWebSocketListen?.host
            mqtt.webSocketPort = configuration.mqttWebSocketListen?.port ?? 0
            try configuring(journal) {
                try mqtt.loadAccessFiles(
                    passwords: configuration.mqttPasswords, acl: configuration.mqttACL,
                    tlsCertificate: configuration.mqttTLSCertificate, tlsKey: configuration.mqttTLSKey,
                    scramUsers: configuration.mqttSCRAMUsers ?? configuration.users)
            }
            services.append(
                .init(
                    service: MQTTGateway(
                        configuration: mqtt,
                        journal: InProcessJournalClient(
                            journal: journal, node: configuration.nodeName, appendBudget: server.queuedBytes),
                        logger: logger, onBound: { announce("mqtt \(StrataProcess.display($0))") },
                        onWebSocketBound: { announce("mqtt-ws \(StrataProcess.display($0))") })))
        }
        if gateways.contains("kafka") {
            var kafka = KafkaGateway.Configuration()
            kafka.host = configuration.kafkaListen.host
            kafka.port = configuration.kafkaListen.port
            kafka.advertisedHost = configuration.kafkaAdvertised?.host
            kafka.advertisedPort = configuration.kafkaAdvertised?.port
            kafka.defaultPartitions = configuration.kafkaDefaultPartitions
            kafka.nodeID = configuration.kafkaNodeID
            kafka.autoCreateTopics = configuration.kafkaAutoCreateTopics
            try configuring(journal) {
                try kafka.loadAccessFiles(
                    users: configuration.kafkaUsers ?? configuration.users, acl: configuration.kafkaACL)
            }
            services.append(
                .init(
                    service: KafkaGateway(
                        configuration: kafka,
                        journal: InProcessJournalClient(
                            journal: journal, node: configuration.nodeName, appendBudget: server.queuedBytes),
                        logger: logger, onBound: { announce("kafka \(StrataProcess.display($0))") })))
        }
        if gateways.contains("amqp") {
            var amqp = AMQPGateway.Configuration()
            amqp.host = configuration.amqpListen.host
            amqp.port = configuration.amqpListen.port
            amqp.allowAnonymous = configuration.amqpAllowAnonymous
            amqp.virtualHosts = configuration.amqpVirtualHosts
            amqp.tlsPort = configuration.amqpTLSPort
            try configuring(journal) {
                try amqp.loadAccessFiles(
                    users: configuration.amqpUsers ?? configuration.users, permissions: configuration.amqpPermissions,
                    tlsCertificate: configuration.amqpTLSCertificate, tlsKey: configuration.amqpTLSKey,
                    tlsClientCA: configuration.amqpTLSClientCA)
            }
            services.append(
                .init(
                    service: AMQPGateway(
                        configuration: amqp,
                        journal: InProcessJournalClient(
                            journal: journal, node: configuration.nodeName, appendBudget: server.queuedBytes),
                        logger: logger, onBound: { announce("amqp \(StrataProcess.display($0))") },
                        onTLSBound: { announce("amqps \(StrataProcess.display($0))") })))
        }
        services.append(.init(service: http))
        do {
            try await NodeShutdown.run(services, logger: logger)
        } catch {
            journal.close()
            throw error
        }
    }

    /// Runs a gateway's configuration step; on failure the journal is closed and the error is
    /// an invalid-argument one (the node does not start).
    private static func configuring(_ journal: Journal, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as JournalError {
            journal.close()
            throw error
        } catch {
            journal.close()
            throw JournalError(.invalidArgument, "\(error)")
        }
    }
}
