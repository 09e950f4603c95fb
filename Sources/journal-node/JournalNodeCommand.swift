import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import StrataJournal
import StrataMQTT
import StrataNode
import StrataWire

/// `journal-node`: the journal engine on the network.
@main
struct JournalNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal-node",
        abstract: "Serves the Strata journal over TCP (journal protocol) and HTTP (/metrics, /health, /admin).")

    @Option(help: "TOML config file; flags override its settings.")
    var config: String?

    @Option(help: "Data directory (WAL segments and index).")
    var dataDir: String?

    @Option(help: "Journal protocol listener, HOST:PORT (port 0 picks a free one).")
    var listen: String?

    @Option(help: "HTTP listener for /metrics, /health and /admin, HOST:PORT.")
    var http: String?

    @Option(help: "Gateways to host in-process, comma-separated (all, none, or names).")
    var gateways: String?

    @Option(help: "Name this node reports.")
    var nodeName: String?

    @Option(help: "WAL I/O: auto, uring or pwrite.")
    var walIO: String?

    @Option(help: "The in-process MQTT gateway's listener, HOST:PORT (with --gateways mqtt or all).")
    var mqttListen: String?

    @Option(help: "The in-process MQTT gateway's WebSocket listener, HOST:PORT.")
    var mqttWsListen: String?

    @Flag(
        help:
            "Open even when the last WAL segment has a damaged frame followed by valid data: the damaged range is copied aside (<segment>.wal.damaged-<position>) and cut. Without it such a WAL stops the start."
    )
    var quarantineDamagedWal = false

    @Flag(help: "Let MQTT clients without credentials in.")
    var mqttAllowAnonymous = false

    @Option(
        help:
            "Delete MQTT messages older than this many milliseconds, or none (default: the journal's stored setting, first 604800000 = 7 days)."
    )
    var mqttRetentionMs: String?

    @Option(
        help:
            "Delete the oldest MQTT messages while a bucket shard holds more bytes than this, or none (default: as stored, first none)."
    )
    var mqttRetentionBytes: String?

    @Option(help: "Map MQTT topics to registry topics, both ways (docs/topics.md): true or false (default: true).")
    var mqttSharedTopics: Bool?

    @Option(help: "Partitions of a registry topic the MQTT gateway creates for a topic's first level (default: 1).")
    var mqttTopicPartitions: Int32?

    @Option(
        help:
            "The most keep-alive (seconds) an MQTT client may ask for: more (or none, 0) gets this as a 5.0 server keep alive and refuses a 3.1/3.1.1 client (default: 65535, no limit)."
    )
    var mqttMaxKeepalive: UInt16?

    @Option(help: "Seconds between updates of the MQTT $SYS/broker/... topics; 0 publishes none (default: 10).")
    var mqttSysInterval: Int?

    @Flag(
        help:
            "MQTT shared subscriptions: what a member has not acknowledged goes to another member as soon as its connection ends, QoS 2 too (docs/mqtt.md)."
    )
    var mqttSharedRedispatch = false

    @Option(help: "MQTT password file (mosquitto's format).")
    var mqttPasswords: String?

    @Option(help: "MQTT ACL file (mosquitto's format).")
    var mqttAcl: String?

    @Option(help: "SCRAM users file for MQTT 5 enhanced authentication (SCRAM-SHA-256).")
    var mqttScramUsers: String?

    @Option(help: "TLS certificate chain (PEM) for the MQTT listeners (TCP and WebSocket).")
    var mqttTlsCert: String?

    @Option(help: "TLS private key (PEM) for the MQTT listeners.")
    var mqttTlsKey: String?

    @Option(help: "The in-process AMQP gateway's listener, HOST:PORT (with --gateways amqp or all).")
    var amqpListen: String?

    @Option(help: "The in-process AMQP gateway's users file (see `strata scram-user`; default: --users).")
    var amqpUsers: String?

    @Option(help: "The in-process AMQP gateway's permissions file (vhost user configure write read).")
    var amqpPermissions: String?

    @Option(help: "Virtual hosts AMQP clients may open, comma-separated (default /).")
    var amqpVirtualHosts: String?

    @Flag(help: "Let AMQP clients in with any user name and password.")
    var amqpAllowAnonymous = false

    @Option(help: "TLS certificate chain (PEM) for the in-process AMQPS listener.")
    var amqpTlsCert: String?

    @Option(help: "TLS private key (PEM) for AMQPS.")
    var amqpTlsKey: String?

    @Option(help: "AMQPS port, on the AMQP listener's host (default 5671; 0 picks a free one).")
    var amqpTlsPort: Int?

    @Option(help: "CA (PEM) whose client certificates AMQPS requires; offers SASL EXTERNAL.")
    var amqpTlsClientCa: String?

    @Option(help: "The in-process Kafka gateway's listener, HOST:PORT (with --gateways kafka or all).")
    var kafkaListen: String?

    @Option(help: "The address Kafka clients are told to connect to, HOST:PORT (the listener's by default).")
    var kafkaAdvertised: String?

    @Option(
        help:
            "Users file of every in-process gateway (`strata scram-user` lines): MQTT passwords and SCRAM, Kafka SASL PLAIN and SCRAM."
    )
    var users: String?

    @Option(help: "The in-process Kafka gateway's SASL users file (see `strata scram-user`; default: --users).")
    var kafkaUsers: String?

    @Option(help: "The in-process Kafka gateway's ACL file (needs --kafka-users).")
    var kafkaAcl: String?

    @Option(help: "The in-process Kafka gateway's broker id, unique among the journal's Kafka gateways (default 1).")
    var kafkaNodeId: Int32?

    @Option(help: "Object tier: S3-compatible endpoint URL (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL by default).")
    var tierEndpoint: String?

    @Option(help: "Object tier: S3 bucket (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).")
    var tierBucket: String?

    @Option(help: "Object tier: key prefix in the bucket.")
    var tierPrefix: String?

    @Option(help: "Object tier on WebHDFS instead: the namenode's URL (objects under tier.webhdfs_root).")
    var tierWebhdfs: String?

    @Option(help: "Offload batches of sealed segments older than this many milliseconds.")
    var tierLocalRetentionMs: Int64?

    @Option(help: "Milliseconds between offload passes that found nothing to do.")
    var tierIntervalMs: Int64?

    @Option(help: "SCRAM-SHA-256 users of the journal protocol (lines from `strata scram-user`).")
    var journalUsers: String?

    @Option(
        help: "Who may do what on the journal protocol: PRINCIPAL read|write|all */shard:PREFIX/kv:PREFIX per line.")
    var journalPermissions: String?

    @Option(help: "TLS certificate chain (PEM) of the journal listener.")
    var journalTlsCert: String?

    @Option(help: "TLS private key (PEM) of the journal listener.")
    var journalTlsKey: String?

    @Option(help: "CA (PEM) whose client certificates the journal listener requires (principal = common name).")
    var journalTlsClientCa: String?

    @Option(help: "File holding the bearer token the HTTP /admin API requires.")
    var httpAdminTokenFile: String?

    @Flag(help: "Run a journal or HTTP listener beyond loopback without authentication anyway (logged).")
    var insecure = false

    @Option(help: "Log WAL writes and maintenance steps that take at least this many milliseconds (default 200).")
    var slowLogMs: Int64?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        var settings = NodeConfiguration()
        do {
            if let config {
                let text: String
                do { text = try String(contentsOfFile: config, encoding: .utf8) } catch {
                    throw JournalError(
                        .invalidArgument, "cannot read config file \(config): \(error.localizedDescription)")
                }
                try settings.apply(toml: text)
            }
            if let dataDir { settings.dataDirectory = dataDir }
            if let listen { settings.listen = try .init(parsing: listen) }
            if let http { settings.http = try .init(parsing: http) }
            if let gateways { settings.gateways = gateways.split(separator: ",").map(String.init) }
            if let nodeName { settings.nodeName = nodeName }
            if let mqttListen { settings.mqttListen = try .init(parsing: mqttListen) }
            if mqttAllowAnonymous { settings.mqttAllowAnonymous = true }
            if let mqttSharedTopics { settings.mqttSharedTopics = mqttSharedTopics }
            if let mqttSysInterval {
                guard mqttSysInterval >= 0 else { throw ValidationError("--mqtt-sys-interval must be at least 0") }
                settings.mqttSysInterval = mqttSysInterval
            }
            if let mqttMaxKeepalive {
                guard mqttMaxKeepalive >= 1 else { throw ValidationError("--mqtt-max-keepalive must be at least 1") }
                settings.mqttMaxKeepAlive = mqttMaxKeepalive
            }
            if mqttSharedRedispatch { settings.mqttSharedRedispatch = true }
            if let mqttTopicPartitions {
                guard 1...10_000 ~= mqttTopicPartitions else {
                    throw ValidationError("--mqtt-topic-partitions must be 1...10000")
                }
                settings.mqttTopicPartitions = mqttTopicPartitions
            }
            settings.mqttRetention = try BucketRetention.given(
                milliseconds: mqttRetentionMs, bytes: mqttRetentionBytes, over: settings.mqttRetention)
            if quarantineDamagedWal { settings.quarantineDamagedWAL = true }
            if let slowLogMs {
                guard slowLogMs >= 1 else { throw JournalError(.invalidArgument, "--slow-log-ms is at least 1") }
                settings.slowLogMilliseconds = slowLogMs
            }
            if let journalUsers { settings.journalUsers = journalUsers }
            if let journalPermissions { settings.journalPermissions = journalPermissions }
            if let journalTlsCert { settings.journalTLSCertificate = journalTlsCert }
            if let journalTlsKey { settings.journalTLSKey = journalTlsKey }
            if let journalTlsClientCa { settings.journalTLSClientCA = journalTlsClientCa }
            if let httpAdminTokenFile { settings.httpAdminTokenFile = httpAdminTokenFile }
            if insecure { settings.insecure = true }
            if let mqttWsListen { settings.mqttWebSocketListen = try .init(parsing: mqttWsListen) }
            if let mqttPasswords { settings.mqttPasswords = mqttPasswords }
            if let mqttAcl { settings.mqttACL = mqttAcl }
            if let kafkaListen { settings.kafkaListen = try .init(parsing: kafkaListen) }
            if let amqpListen { settings.amqpListen = try .init(parsing: amqpListen) }
            if let amqpUsers { settings.amqpUsers = amqpUsers }
            if let amqpPermissions { settings.amqpPermissions = amqpPermissions }
            if let amqpVirtualHosts {
                settings.amqpVirtualHosts = amqpVirtualHosts.split(separator: ",").map(String.init)
            }
            if amqpAllowAnonymous { settings.amqpAllowAnonymous = true }
            if let amqpTlsCert { settings.amqpTLSCertificate = amqpTlsCert }
            if let amqpTlsKey { settings.amqpTLSKey = amqpTlsKey }
            if let amqpTlsPort { settings.amqpTLSPort = amqpTlsPort }
            if let amqpTlsClientCa { settings.amqpTLSClientCA = amqpTlsClientCa }
            if let kafkaUsers { settings.kafkaUsers = kafkaUsers }
            if let users { settings.users = users }
            if let kafkaAcl { settings.kafkaACL = kafkaAcl }
            if let kafkaNodeId {
                guard kafkaNodeId >= 0 else { throw ValidationError("--kafka-node-id must be at least 0") }
                settings.kafkaNodeID = kafkaNodeId
            }
            if let kafkaAdvertised { settings.kafkaAdvertised = try .init(parsing: kafkaAdvertised) }
            if let mqttScramUsers { settings.mqttSCRAMUsers = mqttScramUsers }
            if let mqttTlsCert { settings.mqttTLSCertificate = mqttTlsCert }
            if let mqttTlsKey { settings.mqttTLSKey = mqttTlsKey }
            if let tierEndpoint { settings.tier.endpoint = tierEndpoint }
            if let tierBucket { settings.tier.bucket = tierBucket }
            if let tierPrefix { settings.tier.prefix = tierPrefix }
            if let tierWebhdfs { settings.tier.webHDFS = tierWebhdfs }
            if let tierLocalRetentionMs { settings.tier.localRetentionMilliseconds = max(0, tierLocalRetentionMs) }
            if let tierIntervalMs { settings.tier.intervalMilliseconds = max(10, tierIntervalMs) }
            if let walIO {
                guard let mode = WALIOMode(rawValue: walIO) else {
                    throw JournalError(.invalidArgument, "--wal-io is auto, uring or pwrite")
                }
                settings.walIO = mode
            }
            _ = try settings.resolvedGateways()
        } catch let error as JournalError {
            throw ValidationError(error.message)
        }
        guard StrataProcess.bootstrapLogging(level: logLevel) != nil else {
            throw ValidationError("unknown log level \(logLevel)")
        }
        // The gateways' swift-metrics counters go to the registry /metrics renders.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        try await JournalNode.run(
            configuration: settings, logger: Logger(label: "strata.node"), metricsRegistry: registry,
            announce: StrataProcess.announce)
    }
}
