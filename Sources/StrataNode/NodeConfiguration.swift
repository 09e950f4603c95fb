import NIOSSL
import StrataAuth
import StrataJournal
import StrataMQTT
import StrataWire

/// Everything `journal-node` needs, from its TOML file (see docs/operations.md) with command-line
/// flags laid over it.
public struct NodeConfiguration: Sendable {
    public var dataDirectory = "./data"
    public var listen = HostPort(host: "127.0.0.1", port: 7450)
    public var http = HostPort(host: "127.0.0.1", port: 7451)
    public var nodeName = "strata"
    /// Gateways hosted in this process (`all` = every gateway that exists).
    public var gateways: [String] = []
    public var walIO: WALIOMode = .auto
    public var segmentBytes: Int?
    public var maxBatchBytes: Int?
    /// Seal a non-empty active segment after this long (default: an hour with an object tier,
    /// never without), so quiet shards reach the object tier.
    public var segmentMilliseconds: Int64?
    public var minFreeDiskBytes: Int64?
    public var memoryHighWatermarkBytes: Int64?
    /// Open even when the last WAL segment has a damaged frame with valid data after it, moving
    /// the damaged range aside (`JournalConfiguration.quarantineDamagedWAL`).
    public var quarantineDamagedWAL = false
    /// WAL writes and maintenance steps at least this slow are logged (`JournalConfiguration.slowOperationLog`).
    public var slowLogMilliseconds: Int64?
    public var maxFrameBytes = 64 << 20
    /// The in-process MQTT gateway's listener and whether it lets anonymous clients in.
    public var mqttListen = HostPort(host: "127.0.0.1", port: 1883)
    public var mqttAllowAnonymous = false
    /// Retention of the MQTT bucket shards when given (`MQTTGateway.Configuration.retention`;
    /// a setting left out is the standard one: 7 days, no size limit). Not given: the one stored
    /// in the journal by the last gateway given one.
    public var mqttRetention: BucketRetention?
    /// Whether MQTT topics map to registry topics, and the partitions of those the MQTT gateway
    /// creates (`MQTTGateway.Configuration.sharedTopics`, `topicPartitions`).
    public var mqttSharedTopics = true
    public var mqttTopicPartitions: Int32 = 1
    /// `MQTTGateway.Configuration.sharedRedispatch`.
    public var mqttSharedRedispatch = false
    /// `MQTTGateway.Configuration.maxKeepAlive` (65535: no limit).
    public var mqttMaxKeepAlive: UInt16 = .max
    /// `MQTTGateway.Configuration.sysInterval` (seconds; 0: no $SYS topics).
    public var mqttSysInterval = 10
    /// MQTT over WebSocket listener of the in-process gateway (nil: none).
    public var mqttWebSocketListen: HostPort?
    /// The users file of every gateway (SCRAM-SHA-256 lines, `strata scram-user`): MQTT CONNECT
    /// passwords and SCRAM enhanced authentication, Kafka SASL PLAIN and SCRAM-SHA-256, unless a
    /// gateway is given its own (`mqttSCRAMUsers`, `kafkaUsers`).
    public var users: String?
    /// Password and ACL files for the MQTT gateway (mosquitto's formats).
    public var mqttPasswords: String?
    public var mqttACL: String?
    /// TLS certificate chain and private key (PEM) for both MQTT listeners.
    public var mqttTLSCertificate: String?
    public var mqttTLSKey: String?
    /// SCRAM users for MQTT 5 enhanced authentication.
    public var mqttSCRAMUsers: String?

    /// The in-process Kafka gateway's listener and the address it advertises (its own when nil).
    public var kafkaListen = HostPort(host: "127.0.0.1", port: 9092)
    public var kafkaAdvertised: HostPort?
    public var kafkaDefaultPartitions: Int32 = 1
    /// The in-process Kafka gateway's broker id (unique among the Kafka gateways of the journal).
    public var kafkaNodeID: Int32 = 1
    public var kafkaAutoCreateTopics = true
    /// SASL users and ACL files for the Kafka gateway.
    public var kafkaUsers: String?
    public var kafkaACL: String?

    /// The in-process AMQP gateway's listener; its users (default: `users`), permissions file,
    /// virtual hosts, and whether any credentials are taken.
    public var amqpListen = HostPort(host: "127.0.0.1", port: 5672)
    public var amqpUsers: String?
    public var amqpPermissions: String?
    public var amqpVirtualHosts = ["/"]
    public var amqpAllowAnonymous = false
    /// AMQPS beside the AMQP listener (port `amqpTLSPort`, 5671) with these PEM files; with
    /// `amqpTLSClientCA`, client certificates are required and SASL EXTERNAL is offered.
    public var amqpTLSCertificate: String?
    public var amqpTLSKey: String?
    public var amqpTLSClientCA: String?
    public var amqpTLSPort = 5671

    /// The object tier (off unless a bucket or a WebHDFS endpoint is set).
    public var tier = TierSettings()

    /// Journal protocol security: SCRAM users (`strata scram-user` lines) and the permissions
    /// file (JournalAccess); TLS certificate and key for the listener, and a CA whose client
    /// certificates it requires and accepts (mutual TLS, principal = common name).
    public var journalUsers: String?
    public var journalPermissions: String?
    public var journalTLSCertificate: String?
    public var journalTLSKey: String?
    public var journalTLSClientCA: String?
    /// A file holding the bearer token /admin requires (/metrics and /health stay open).
    public var httpAdminTokenFile: String?
    /// Run listeners beyond loopback without authentication anyway.
    public var insecure = false

    /// Gateways this build can host in-process.
    public static let availableGateways: [String] = ["mqtt", "kafka", "amqp"]

    public init() {}

    /// Applies a TOML config file's settings.
    public mutating func apply(toml text: String) throws(JournalError) {
        let values: [String: TOMLSubset.Value]
        do {
            values = try TOMLSubset.parse(text)
        } catch {
            throw JournalError(.invalidArgument, "config file \(error)")
        }
        for (key, value) in values {
            switch (key, value) {
            case ("data_dir", .string(let v)): dataDirectory = v
            case ("listen", .string(let v)): listen = try HostPort(parsing: v)
            case ("http", .string(let v)): http = try HostPort(parsing: v)
            case ("node_name", .string(let v)): nodeName = v
            case ("users", .string(let v)): users = v
            case ("gateways", .array(let items)):
                gateways = try items.map { item throws(JournalError) in
                    guard case .string(let name) = item else {
                        throw JournalError(.invalidArgument, "config file: gateways holds strings")
                    }
                    return name
                }
            case ("mqtt.listen", .string(let v)): mqttListen = try HostPort(parsing: v)
            case ("mqtt.allow_anonymous", .bool(let v)): mqttAllowAnonymous = v
            case ("mqtt.retention_ms", .integer(let v)) where v >= 0:
                mqttRetention = (mqttRetention ?? .standard).with(milliseconds: v)
            case ("mqtt.retention_ms", .string("none")):
                mqttRetention = (mqttRetention ?? .standard).with(milliseconds: nil)
            case ("mqtt.retention_bytes", .integer(let v)) where v >= 0:
                mqttRetention = (mqttRetention ?? .standard).with(bytes: v)
            case ("mqtt.retention_bytes", .string("none")):
                mqttRetention = (mqttRetention ?? .standard).with(bytes: nil)
            case ("mqtt.retention_ms", _), ("mqtt.retention_bytes", _):
                throw JournalError(.invalidArgument, "config file: \(key) is a number of at least 0 or \"none\"")
            case ("mqtt.shared_topics", .bool(let v)): mqttSharedTopics = v
            case ("mqtt.shared_redispatch", .bool(let v)): mqttSharedRedispatch = v
            case ("mqtt.max_keepalive", .integer(let v)) where 1...65_535 ~= v: mqttMaxKeepAlive = UInt16(v)
            case ("mqtt.sys_interval", .integer(let v)) where v >= 0: mqttSysInterval = Int(v)
            case ("mqtt.sys_interval", _):
                throw JournalError(
                    .invalidArgument, "config file: mqtt.sys_interval is a number of seconds, at least 0")
            case ("mqtt.max_keepalive", _):
                throw JournalError(.invalidArgument, "config file: mqtt.max_keepalive is 1...65535 seconds")
            case ("mqtt.topic_partitions", .integer(let v)):
                guard 1...10_000 ~= v else {
                    throw JournalError(.invalidArgument, "config file: mqtt.topic_partitions is 1...10000")
                }
                mqttTopicPartitions = Int32(v)
            case ("mqtt.ws_listen", .string(let v)): mqttWebSocketListen = try HostPort(parsing: v)
            case ("mqtt.passwords", .string(let v)): mqttPasswords = v
            case ("mqtt.acl", .string(let v)): mqttACL = v
            case ("mqtt.tls_cert", .string(let v)): mqttTLSCertificate = v
            case ("mqtt.tls_key", .string(let v)): mqttTLSKey = v
            case ("mqtt.scram_users", .string(let v)): mqttSCRAMUsers = v
            case ("kafka.listen", .string(let v)): kafkaListen = try HostPort(parsing: v)
            case ("kafka.advertised", .string(let v)): kafkaAdvertised = try HostPort(parsing: v)
            case ("kafka.default_partitions", .integer(let v)):
                guard 1...10_000 ~= v else {
                    throw JournalError(.invalidArgument, "config file: kafka.default_partitions is 1 to 10000")
                }
                kafkaDefaultPartitions = Int32(v)
            case ("kafka.auto_create_topics", .bool(let v)): kafkaAutoCreateTopics = v
            case ("kafka.node_id", .integer(let v)):
                guard 0...Int64(Int32.max) ~= v else {
                    throw JournalError(.invalidArgument, "config file: kafka.node_id is 0 to \(Int32.max)")
                }
                kafkaNodeID = Int32(v)
            case ("journal.users", .string(let v)): journalUsers = v
            case ("journal.permissions", .string(let v)): journalPermissions = v
            case ("journal.tls_cert", .string(let v)): journalTLSCertificate = v
            case ("journal.tls_key", .string(let v)): journalTLSKey = v
            case ("journal.tls_client_ca", .string(let v)): journalTLSClientCA = v
            case ("http.admin_token_file", .string(let v)): httpAdminTokenFile = v
            case ("insecure", .bool(let v)): insecure = v
            case ("kafka.users", .string(let v)): kafkaUsers = v
            case ("kafka.acl", .string(let v)): kafkaACL = v
            case ("amqp.listen", .string(let v)): amqpListen = try HostPort(parsing: v)
            case ("amqp.users", .string(let v)): amqpUsers = v
            case ("amqp.permissions", .string(let v)): amqpPermissions = v
            case ("amqp.allow_anonymous", .bool(let v)): amqpAllowAnonymous = v
            case ("amqp.tls_cert", .string(let v)): amqpTLSCertificate = v
            case ("amqp.tls_key", .string(let v)): amqpTLSKey = v
            case ("amqp.tls_client_ca", .string(let v)): amqpTLSClientCA = v
            case ("amqp.tls_port", .integer(let v)) where (0...65535).contains(v): amqpTLSPort = Int(v)
            case ("amqp.virtual_hosts", .string(let v)):
                amqpVirtualHosts = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            case ("tier.endpoint", .string(let v)): tier.endpoint = v
            case ("tier.bucket", .string(let v)): tier.bucket = v
            case ("tier.prefix", .string(let v)): tier.prefix = v
            case ("tier.region", .string(let v)): tier.region = v
            case ("tier.access_key", .string(let v)): tier.accessKey = v
            case ("tier.secret_key", .string(let v)): tier.secretKey = v
            case ("tier.path_style", .bool(let v)): tier.pathStyle = v
            case ("tier.webhdfs", .string(let v)): tier.webHDFS = v
            case ("tier.webhdfs_root", .string(let v)): tier.webHDFSRoot = v
            case ("tier.webhdfs_user", .string(let v)): tier.webHDFSUser = v
            case ("tier.local_retention_ms", .integer(let v)) where v >= 0: tier.localRetentionMilliseconds = v
            case ("tier.max_object_bytes", .integer(let v)) where v >= 1 << 16: tier.maxObjectBytes = v
            case ("tier.interval_ms", .integer(let v)) where v >= 10: tier.intervalMilliseconds = v
            case ("tier.max_backoff_ms", .integer(let v)) where v >= 10: tier.maxBackoffMilliseconds = v
            case ("tier.cache_bytes", .integer(let v)) where v >= 0: tier.cacheBytes = Int(v)
            case ("journal.wal_io", .string(let v)):
                guard let mode = WALIOMode(rawValue: v) else {
                    throw JournalError(.invalidArgument, "config file: journal.wal_io is auto, uring or pwrite")
                }
                walIO = mode
            case ("journal.segment_bytes", .integer(let v)): segmentBytes = Int(v)
            case ("journal.max_batch_bytes", .integer(let v)): maxBatchBytes = Int(v)
            case ("journal.segment_ms", .integer(let v)) where v >= 100: segmentMilliseconds = v
            case ("journal.min_free_disk_bytes", .integer(let v)): minFreeDiskBytes = v
            case ("journal.memory_high_watermark_bytes", .integer(let v)) where v >= 0: memoryHighWatermarkBytes = v
            case ("journal.quarantine_damaged_wal", .bool(let v)): quarantineDamagedWAL = v
            case ("journal.slow_log_ms", .integer(let v)) where v >= 1: slowLogMilliseconds = v
            case ("journal.max_frame_bytes", .integer(let v)):
                guard (1 << 16)...(1 << 30) ~= v else {
                    throw JournalError(.invalidArgument, "config file: journal.max_frame_bytes is 64 KiB to 1 GiB")
                }
                maxFrameBytes = Int(v)
            default:
                throw JournalError(.invalidArgument, "config file: unknown setting or wrong type for \(key)")
            }
        }
    }

    /// The journal listener's access control and TLS, read from their files; both nil when none
    /// is configured. A half configuration (users without permissions, a certificate without
    /// its key, a client CA without TLS) is refused.
    public func journalSecurity() throws(JournalError) -> (access: JournalAccess?, tls: NIOSSLContext?) {
        var access: JournalAccess?
        if let journalPermissions {
            do { access = try JournalAccess(usersFile: journalUsers, permissionsFile: journalPermissions) } catch {
                throw JournalError(.invalidArgument, "\(error)")
            }
        } else if journalUsers != nil {
            throw JournalError(.invalidArgument, "journal.users needs journal.permissions (who may do what)")
        }
        var tls: NIOSSLContext?
        switch (journalTLSCertificate, journalTLSKey) {
        case (let certificate?, let key?):
            do {
                tls = try TLSFiles.serverContext(certificate: certificate, key: key, clientCA: journalTLSClientCA)
            } catch {
                throw JournalError(.invalidArgument, "journal \(error)")
            }
        case (nil, nil):
            if journalTLSClientCA != nil {
                throw JournalError(.invalidArgument, "journal.tls_client_ca needs journal.tls_cert and journal.tls_key")
            }
        default:
            throw JournalError(.invalidArgument, "journal TLS needs both journal.tls_cert and journal.tls_key")
        }
        if journalTLSClientCA != nil, access == nil {
            throw JournalError(.invalidArgument, "client certificates (journal.tls_client_ca) need journal.permissions")
        }
        return (access, tls)
    }

    /// The HTTP admin token, read from its file (nil when none is configured).
    public func adminToken() throws(JournalError) -> String? {
        guard let httpAdminTokenFile else { return nil }
        let token: String
        do { token = try String(contentsOfFile: httpAdminTokenFile, encoding: .utf8) } catch {
            throw JournalError(
                .invalidArgument,
                "cannot read the admin token file \(httpAdminTokenFile): \(error.localizedDescription)")
        }
        let trimmed = token.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.count >= 16 else {
            throw JournalError(
                .invalidArgument, "the admin token in \(httpAdminTokenFile) is shorter than 16 characters")
        }
        return trimmed
    }

    /// Listeners beyond loopback need authentication: the journal protocol its permissions, the
    /// HTTP admin API its token. Returns the warnings to log when `insecure` lets them run open.
    public func checkExposure(access: JournalAccess?, adminToken: String?) throws(JournalError) -> [String] {
        var open: [String] = []
        if access == nil, !listen.isLoopback {
            open.append("the journal protocol on \(listen) has no authentication (journal.permissions)")
        }
        if adminToken == nil, !http.isLoopback {
            open.append("the HTTP admin API on \(http) has no token (http.admin_token_file)")
        }
        guard !open.isEmpty else { return [] }
        guard insecure else {
            throw JournalError(
                .invalidArgument,
                open.joined(separator: "; ")
                    + ". Configure them, listen on loopback, or start with --insecure to run open anyway")
        }
        return open.map { "running insecure: \($0)" }
    }

    /// The gateways to start, with `all` expanded; unknown names are an error.
    public func resolvedGateways() throws(JournalError) -> [String] {
        var result: [String] = []
        for name in gateways {
            if name == "all" {
                result += Self.availableGateways
            } else if name == "none" {
                continue
            } else if Self.availableGateways.contains(name) {
                result.append(name)
            } else {
                let known =
                    Self.availableGateways.isEmpty ? "none exist yet" : Self.availableGateways.joined(separator: ", ")
                throw JournalError(.invalidArgument, "unknown gateway \(name) (gateways: \(known))")
            }
        }
        return result
    }

    public var journalConfiguration: JournalConfiguration {
        var configuration = JournalConfiguration(dataDirectory: dataDirectory)
        configuration.walIO = walIO
        if let segmentBytes { configuration.segmentBytes = segmentBytes }
        if let maxBatchBytes { configuration.maxBatchBytes = maxBatchBytes }
        if let milliseconds = segmentMilliseconds ?? (tier.destination != nil ? 3_600_000 : nil) {
            configuration.segmentMaxAge = .milliseconds(milliseconds)
        }
        if let minFreeDiskBytes { configuration.minFreeDiskBytes = minFreeDiskBytes }
        configuration.memoryHighWatermarkBytes = memoryHighWatermarkBytes
        configuration.quarantineDamagedWAL = quarantineDamagedWAL
        if let slowLogMilliseconds { configuration.slowOperationLog = .milliseconds(slowLogMilliseconds) }
        return configuration
    }

    /// The settings as the admin API shows them.
    public var summary: [String: String] {
        [
            "data_dir": dataDirectory, "listen": listen.description, "http": http.description, "node_name": nodeName,
            "gateways": gateways.joined(separator: ","), "users": users ?? "", "journal.wal_io": walIO.rawValue,
            "journal.segment_bytes": "\(journalConfiguration.segmentBytes)",
            "journal.max_batch_bytes": "\(journalConfiguration.maxBatchBytes)",
            "journal.min_free_disk_bytes": "\(journalConfiguration.minFreeDiskBytes)",
            "journal.memory_high_watermark_bytes": journalConfiguration.memoryHighWatermarkBytes.map { "\($0)" }
                ?? "40% of physical memory",
            "journal.max_frame_bytes": "\(maxFrameBytes)",
            "journal.slow_log_ms": "\(Int(journalConfiguration.slowOperationLog.seconds * 1000))",
            "mqtt.listen": mqttListen.description, "mqtt.allow_anonymous": "\(mqttAllowAnonymous)",
            "mqtt.retention": mqttRetention.map { "\($0)" } ?? "as stored in the journal (7 days if never set)",
            "mqtt.shared_topics": "\(mqttSharedTopics)", "mqtt.topic_partitions": "\(mqttTopicPartitions)",
            "mqtt.shared_redispatch": "\(mqttSharedRedispatch)", "mqtt.max_keepalive": "\(mqttMaxKeepAlive)",
            "mqtt.sys_interval": "\(mqttSysInterval)",
            "kafka.listen": kafkaListen.description, "kafka.advertised": kafkaAdvertised?.description ?? "",
            "kafka.default_partitions": "\(kafkaDefaultPartitions)", "kafka.node_id": "\(kafkaNodeID)",
            "kafka.auto_create_topics": "\(kafkaAutoCreateTopics)",
            "amqp.listen": amqpListen.description, "amqp.allow_anonymous": "\(amqpAllowAnonymous)",
            "amqp.virtual_hosts": amqpVirtualHosts.joined(separator: ","), "amqp.tls_port": "\(amqpTLSPort)",
            "tier": tier.destination ?? "none", "tier.local_retention_ms": "\(tier.localRetentionMilliseconds)",
        ]
    }
}

/// Where and when sealed data moves to the object tier (`tier.*` in the config file).
public struct TierSettings: Sendable {
    /// S3-compatible: endpoint URL (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL or AWS's own when
    /// nil), bucket, key prefix, region; credentials from the file or AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    public var endpoint: String?
    public var bucket: String?
    public var prefix = ""
    public var region: String?
    public var accessKey: String?
    public var secretKey: String?
    public var pathStyle = true
    /// WebHDFS instead: the namenode's URL, the directory objects go under, the user name.
    public var webHDFS: String?
    public var webHDFSRoot = "/strata"
    public var webHDFSUser: String?
    /// Offload batches of sealed segments older than this (shards' own settings win).
    public var localRetentionMilliseconds: Int64 = 10 * 60 * 1000
    public var maxObjectBytes: Int64 = 64 << 20
    public var intervalMilliseconds: Int64 = 5000
    public var maxBackoffMilliseconds: Int64 = 30_000
    /// Decoded blocks kept in memory for cold reads.
    public var cacheBytes = 256 << 20

    public init() {}

    /// Where objects go, for people (nil: no object tier).
    public var destination: String? {
        if let webHDFS { return "webhdfs \(webHDFS)\(webHDFSRoot)" }
        guard let bucket else { return nil }
        return "s3 \(endpoint ?? "(AWS environment)")/\(bucket)/\(prefix)"
    }
}
