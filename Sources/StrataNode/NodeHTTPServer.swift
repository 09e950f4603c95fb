import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import StrataAuth
import StrataClient
import StrataJournal
import StrataKit
import StrataObjects
import StrataTopics
import StrataWire

/// The node's HTTP side, served by the kit's `HTTPEndpoint`: `/metrics` (Prometheus text),
/// `/health`, and a read-only JSON admin API (`/admin/status`, `/admin/shards`,
/// `/admin/shards/<name>`, `/admin/topics`, `/admin/topics/<name>`, `/admin/segments`, `/admin/config`,
/// `/admin/tier`).
public enum NodeHTTPServer {
    public static func endpoint(
        host: String, port: Int, routes: NodeHTTPRoutes, logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) -> HTTPEndpoint {
        HTTPEndpoint(host: host, port: port, logger: logger, onBound: onBound) { method, uri, authorization in
            await routes.respond(method: method, uri: uri, authorization: authorization)
        }
    }
}

/// What each path answers.
public struct NodeHTTPRoutes: Sendable {
    let journal: Journal
    let metrics: NodeMetrics
    let status: @Sendable () -> NodeStatus
    let config: @Sendable () -> [String: String]
    /// The object tier's status, when the node has one.
    let tier: (@Sendable () -> TierOffloader.Status)?

    /// The bearer token /admin requires (nil: none).
    let adminToken: String?
    /// The topics every gateway shares (read for /admin/topics).
    let registry: TopicRegistry

    public init(
        journal: Journal, metrics: NodeMetrics, status: @escaping @Sendable () -> NodeStatus,
        config: @escaping @Sendable () -> [String: String], tier: (@Sendable () -> TierOffloader.Status)? = nil,
        adminToken: String? = nil
    ) {
        self.adminToken = adminToken
        self.journal = journal
        self.metrics = metrics
        self.status = status
        self.config = config
        self.tier = tier
        registry = TopicRegistry(
            journal: InProcessJournalClient(journal: journal, node: "http"), logger: Logger(label: "strata.http"))
    }

    /// The journal's health (failed after a WAL or index I/O error, degraded at the disk
    /// reserve), degraded further by object-tier errors. Failed answers 503, the rest 200.
    func health() -> JournalHealth {
        var health = journal.health
        if let tier = tier?() {
            var problems: [String] = []
            if let error = tier.lastError { problems.append("object tier: \(error)") }
            for shard in tier.shards {
                if let error = shard.lastError { problems.append("object tier, \(shard.name): \(error)") }
            }
            if !problems.isEmpty {
                health.problems += problems
                if health.status == .ok { health.status = .degraded }
            }
        }
        return health
    }

    func respond(method: HTTPMethod, uri: String, authorization: String? = nil) async -> EndpointResponse {
        guard method == .GET || method == .HEAD else { return .error(.methodNotAllowed, "only GET is served") }
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        if path.hasPrefix("/admin"), let adminToken {
            let expected = Array("Bearer \(adminToken)".utf8)
            guard let authorization, PasswordHashing.constantTimeEqual(Array(authorization.utf8), expected) else {
                return .error(.unauthorized, "/admin needs the admin token: Authorization: Bearer TOKEN")
            }
        }
        switch path {
        case "/metrics":
            var queues: [QueueStatus] = []
            for name in (try? await journal.queueNames()) ?? [] {
                if let status = try? await journal.describeQueue(name) { queues.append(status) }
            }
            let offsets = (try? await journal.committedOffsets()) ?? []
            return EndpointResponse(
                status: .ok, contentType: "text/plain; version=0.0.4",
                body: metrics.render(journal: journal, tier: tier?(), queues: queues, committed: offsets))
        case "/health":
            let health = self.health()
            return .json(health, status: health.status == .failed ? .serviceUnavailable : .ok)
        case "/admin/status":
            return .json(status())
        case "/admin/shards":
            return .json(journal.listShards())
        case "/admin/segments":
            return .json(journal.segmentInfos())
        case "/admin/config":
            return .json(config())
        case "/admin/topics":
            do {
                let topics = try await registry.all()
                return .json(topics.sorted { $0.key < $1.key }.map { TopicSummary(name: $0.key, entry: $0.value) })
            } catch {
                return .error(.internalServerError, "\(error)")
            }
        case "/admin/queues":
            do {
                return .json(try await journal.listQueues())
            } catch {
                return .error(.internalServerError, "\(error)")
            }
        case "/admin/tier":
            guard let tier else {
                return .error(.notFound, "this node has no object tier (tier.bucket or tier.webhdfs)")
            }
            return .json(tier())
        default:
            if path.hasPrefix("/admin/topics/") {
                let name = String(path.dropFirst("/admin/topics/".count)).removingPercentEncoding ?? ""
                do {
                    guard let entry = try await registry.entry(name) else {
                        return .error(.notFound, "no topic '\(name)'")
                    }
                    var summary = TopicSummary(name: name, entry: entry)
                    summary.shards = try (0..<entry.partitions).map {
                        try journal.describeShard(TopicRegistry.shardName(name, $0))
                    }
                    return .json(summary)
                } catch {
                    return .error(.internalServerError, "\(error)")
                }
            }
            if path.hasPrefix("/admin/queues/") {
                let name = String(path.dropFirst("/admin/queues/".count)).removingPercentEncoding ?? ""
                do {
                    return .json(try await journal.describeQueue(name))
                } catch let error as JournalError where error.code == .unknownQueue {
                    return .error(.notFound, error.message)
                } catch {
                    return .error(.internalServerError, "\(error)")
                }
            }
            if path.hasPrefix("/admin/shards/") {
                let name = String(path.dropFirst("/admin/shards/".count)).removingPercentEncoding ?? ""
                do {
                    return .json(try journal.describeShard(name))
                } catch {
                    return .error(.notFound, error.message)
                }
            }
            return .error(.notFound, "no route for \(path)")
        }
    }
}

/// A registry topic as /admin/topics shows it: partitions, configs (defaults included) and, for
/// one topic, its partitions' shards.
struct TopicSummary: Encodable {
    var name: String
    var partitions: Int32
    var id: String
    var configs: [String: String]
    var shards: [ShardInfo]?

    init(name: String, entry: TopicEntry) {
        self.name = name
        partitions = entry.partitions
        id = entry.id.map { String(format: "%02x", $0) }.joined()
        configs = Dictionary(uniqueKeysWithValues: entry.describedConfigs.map { ($0.name, $0.value) })
    }
}
