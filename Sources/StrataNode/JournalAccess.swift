import Foundation
import StrataAuth
import StrataJournal
import StrataWire

/// Who may use the journal protocol, and for what: SCRAM-SHA-256 users (the users-file format
/// of `strata scram-user`) or client-certificate principals (the certificate's common name),
/// and grants per principal on shard-name prefixes and key-value namespace prefixes, one per
/// line of the permissions file:
///
///     # principal  permission  resource
///     admin        all         *
///     kafka        all         shard:kafka/
///     kafka        all         kv:kafka.
///     kafka        all         group:kafka/
///     reader       read        shard:kafka/orders/
///     reader       write       group:reporting
///
/// `read` lets a principal describe, read and subscribe to shards (or get and scan keys);
/// `write` adds appends (puts and deletes); `all` adds creating and deleting shards. Consumer
/// offsets are the group's, as Kafka has it: fetching one needs `read` on the shard and on the
/// group (`group:PREFIX`), committing one `read` on the shard and `write` on the group — so a
/// consumer that may only read a shard can still commit its own group's position, and no
/// principal can move another group's. `*` is every shard, namespace, queue and group. A
/// principal sees only the shards it may read in `listShards`. Nothing is allowed that no line
/// grants.
public struct JournalAccess: Sendable {
    public enum Permission: Int, Sendable, Comparable {
        case read = 1
        case write = 2
        case all = 3
        public static func < (a: Permission, b: Permission) -> Bool { a.rawValue < b.rawValue }
    }

    enum Resource: Sendable, Equatable {
        case everything
        case shards(prefix: String)
        case namespaces(prefix: String)
        case queues(prefix: String)
        case groups(prefix: String)
    }

    struct Grant: Sendable {
        var principal: String
        var permission: Permission
        var resource: Resource
    }

    public let users: SCRAMUsers?
    let grants: [Grant]

    public init(users: SCRAMUsers?, permissions text: String, source: String = "permissions file") throws {
        self.users = users
        var grants: [Grant] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if fields.isEmpty || fields[0].hasPrefix("#") { continue }
            let permission: Permission? =
                switch fields.count == 3 ? fields[1] : "" {
                case "read": .read
                case "write": .write
                case "all": .all
                default: nil
                }
            let resource: Resource? =
                if fields.count != 3 { nil } else if fields[2] == "*" {
                    .everything
                } else if fields[2].hasPrefix("shard:") {
                    .shards(prefix: String(fields[2].dropFirst(6)))
                } else if fields[2].hasPrefix("kv:") {
                    .namespaces(prefix: String(fields[2].dropFirst(3)))
                } else if fields[2].hasPrefix("queue:") {
                    .queues(prefix: String(fields[2].dropFirst(6)))
                } else if fields[2].hasPrefix("group:") {
                    .groups(prefix: String(fields[2].dropFirst(6)))
                } else { nil }
            guard let permission, let resource else {
                throw ConfigFileError(
                    "\(source) line \(number + 1): expected PRINCIPAL read|write|all */shard:PREFIX/kv:PREFIX/queue:PREFIX/group:PREFIX"
                )
            }
            grants.append(Grant(principal: fields[0], permission: permission, resource: resource))
        }
        self.grants = grants
    }

    public init(usersFile: String?, permissionsFile: String) throws {
        let users = try usersFile.map { try SCRAMUsers(contentsOfFile: $0) }
        let text: String
        do { text = try String(contentsOfFile: permissionsFile, encoding: .utf8) } catch {
            throw ConfigFileError("cannot read the permissions file \(permissionsFile): \(error.localizedDescription)")
        }
        try self.init(users: users, permissions: text, source: permissionsFile)
    }

    /// What a request acts on: a shard or a key-value namespace, by name.
    public enum Target: Sendable, Hashable {
        case shard(String)
        case namespace(String)
        case queue(String)
        /// A consumer group's offsets.
        case group(String)
    }

    public func allows(_ principal: String, _ permission: Permission, _ target: Target) -> Bool {
        grants.contains { grant in
            guard grant.principal == principal, grant.permission >= permission else { return false }
            switch (grant.resource, target) {
            case (.everything, _): return true
            case (.shards(let prefix), .shard(let name)), (.namespaces(let prefix), .namespace(let name)),
                (.queues(let prefix), .queue(let name)), (.groups(let prefix), .group(let name)):
                return name.hasPrefix(prefix)
            default: return false
            }
        }
    }

    /// What `request` needs, every one of them; none: any authenticated principal may send it.
    static func needs(_ request: JournalRequest) -> [(Permission, Target)] {
        switch request {
        case .createShard(let name, _), .alterShard(let name, _), .deleteShard(let name): [(.all, .shard(name))]
        case .describeShard(let name): [(.read, .shard(name))]
        case .read(let shard, _, _, _), .offsetForTimestamp(let shard, _), .subscribe(let shard, _, _, _):
            [(.read, .shard(shard))]
        case .fetchOffset(let group, let shard): [(.read, .shard(shard)), (.read, .group(group))]
        case .commitOffset(let group, let shard, _): [(.read, .shard(shard)), (.write, .group(group))]
        case .append(let shard, _): [(.write, .shard(shard))]
        case .kvGet(let namespace, _), .kvScan(let namespace, _, _): [(.read, .namespace(namespace))]
        case .kvPut(let namespace, _, _), .kvDelete(let namespace, _): [(.write, .namespace(namespace))]
        // A queue reads its sources and appends its dead letters with its declarer's rights.
        case .queueDeclare(let name, let definition):
            [(.all, .queue(name))] + definition.sources.map { (.read, .shard($0.shard)) }
                + (definition.deadLetterShard.map { [(.write, .shard($0))] } ?? [])
        case .queueDelete(let name): [(.all, .queue(name))]
        case .queueDescribe(let name): name.isEmpty ? [] : [(.read, .queue(name))]
        case .queueReceive(let name, _, _, _, _, _, _, _), .queueSettle(let name, _, _, _),
            .queueRelease(let name, _, _):
            [(.write, .queue(name))]
        case .hello, .authenticate, .listShards, .status, .unsubscribe, .credit: []
        }
    }

    /// Nil when `principal` may send `request`, else the refusal.
    func refusal(of request: JournalRequest, by principal: String) -> JournalError? {
        guard let (_, target) = Self.needs(request).first(where: { !allows(principal, $0.0, $0.1) }) else { return nil }
        let what: String =
            switch target {
            case .shard(let name): "shard \(name)"
            case .namespace(let name): "in namespace \(name)"
            case .queue(let name): "queue \(name)"
            case .group(let name): "for group \(name)"
            }
        return JournalError(.permissionDenied, "\(principal) may not \(request.type) \(what)")
    }
}
