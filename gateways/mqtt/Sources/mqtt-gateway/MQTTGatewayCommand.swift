import ArgumentParser
import Logging
import ServiceLifecycle
import StrataClient
import StrataJournal
import StrataKit
import StrataMQTT
import StrataWire

/// `mqtt-gateway`: the MQTT gateway as its own process, storing everything in a journal-node.
@main
struct MQTTGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-gateway", abstract: "Serves MQTT 3.1.1 and 5.0 on a Strata journal-node.")

    @Option(help: "The journal-node's journal protocol address, HOST:PORT.")
    var journal: String = "127.0.0.1:7450"

    @Option(help: "MQTT listener, HOST:PORT (port 0 picks a free one).")
    var listen: String = "127.0.0.1:1883"

    @Option(help: "MQTT over WebSocket listener, HOST:PORT (subprotocol mqtt).")
    var wsListen: String?

    @Flag(help: "Let clients without credentials in.")
    var allowAnonymous = false

    @Option(help: "Password file in mosquitto's format (mosquitto_passwd makes one).")
    var passwords: String?

    @Option(help: "ACL file in mosquitto's format (user / topic / pattern lines).")
    var acl: String?

    @Option(
        help:
            "Messages queued for one subscriber beyond its receive maximum (then QoS 0 is dropped, QoS 1/2 disconnects)."
    )
    var maxQueuedMessages: Int = 10_000

    @Option(
        help:
            "The most keep-alive (seconds) a client may ask for: a 5.0 client asking for more (or for none, 0) gets this as server keep alive, a 3.1/3.1.1 client is refused (default: 65535, no limit)."
    )
    var maxKeepalive: UInt16 = .max

    @Option(help: "Seconds between updates of the $SYS/broker/... topics; 0 publishes none (default: 10).")
    var sysInterval: Int = 10

    @Option(
        name: [.customLong("users"), .customLong("scram-users")],
        help:
            "Users file (`strata scram-user` lines, the one Kafka takes too): CONNECT passwords (unless --passwords is given) and MQTT 5 enhanced authentication with SCRAM-SHA-256."
    )
    var scramUsers: String?

    @Option(help: "TLS certificate chain (PEM): both listeners speak TLS when given with --tls-key.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM).")
    var tlsKey: String?

    @Option(
        help:
            "Delete messages older than this many milliseconds, or none (default: the journal's stored setting, first 604800000 = 7 days)."
    )
    var retentionMs: String?

    @Option(
        help:
            "Delete the oldest messages while a bucket shard holds more bytes than this, or none (default: as stored, first none)."
    )
    var retentionBytes: String?

    @Option(help: "Map MQTT topics to registry topics, both ways (docs/topics.md): true or false.")
    var sharedTopics: Bool = true

    @Option(help: "Partitions of a registry topic created for an MQTT topic's first level.")
    var topicPartitions: Int32 = 1

    @Flag(
        help:
            "Shared subscriptions: what a member has not acknowledged goes to another member as soon as its connection ends, QoS 2 too (docs/mqtt.md)."
    )
    var sharedRedispatch = false

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (and /health); none when not given.")
    var metricsListen: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        try await GatewayProcess.run(
            label: "strata.mqtt", journal: journal, listen: listen, logLevel: logLevel, metricsListen: metricsListen
        ) { client, listenAddress, logger in
            var settings = MQTTGateway.Configuration()
            settings.host = listenAddress.host
            settings.port = listenAddress.port
            settings.allowAnonymous = allowAnonymous
            do {
                settings.retention = try BucketRetention.given(
                    milliseconds: retentionMs, bytes: retentionBytes, over: nil)
            } catch let error as JournalError {
                throw ValidationError("--retention-ms / --retention-bytes: \(error.message)")
            }
            guard 1...10_000 ~= topicPartitions else { throw ValidationError("--topic-partitions must be 1...10000") }
            settings.sharedTopics = sharedTopics
            settings.sharedRedispatch = sharedRedispatch
            settings.topicPartitions = topicPartitions
            guard maxQueuedMessages >= 2 else { throw ValidationError("--max-queued-messages must be at least 2") }
            settings.maxQueuedMessages = maxQueuedMessages
            guard maxKeepalive >= 1 else { throw ValidationError("--max-keepalive must be at least 1") }
            settings.maxKeepAlive = maxKeepalive
            guard sysInterval >= 0 else { throw ValidationError("--sys-interval must be at least 0") }
            settings.sysInterval = sysInterval
            if let wsListen {
                guard let address = try? HostPort(parsing: wsListen) else {
                    throw ValidationError("--ws-listen must be HOST:PORT")
                }
                settings.webSocketHost = address.host
                settings.webSocketPort = address.port
            }
            do {
                try settings.loadAccessFiles(
                    passwords: passwords, acl: acl, tlsCertificate: tlsCert, tlsKey: tlsKey, scramUsers: scramUsers)
            } catch {
                throw ValidationError("\(error)")
            }
            return MQTTGateway(
                configuration: settings, journal: client, logger: logger,
                onBound: { StrataProcess.announce("mqtt", $0) },
                onWebSocketBound: { StrataProcess.announce("mqtt-ws", $0) })
        }
    }
}
