import Foundation
import Logging
import NIOCore
import StrataClient
import StrataJournal
import StrataWire
import Synchronization

/// The group coordinator for Kafka's classic rebalance protocol (JoinGroup, SyncGroup,
/// Heartbeat, LeaveGroup). The assignors run in the clients (the group leader assigns), so
/// range, roundrobin and cooperative-sticky all work: the coordinator picks a protocol every
/// member supports, collects the joins of a generation, hands the leader the members, and
/// hands every member what the leader assigned it.
///
/// Group state is written to the journal (KV namespace `kafka.groups`, JSON) whenever a
/// generation completes or members leave, so a restarted gateway knows the members and their
/// generation and they carry on heartbeating; committed offsets are journal consumer offsets
/// (group `kafka/<group id>`).
final class KafkaGroupCoordinator: Sendable {
    enum State: String, Codable, Sendable {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
        case dead = "Dead"
    }

    struct JoinProtocol: Codable, Sendable, Equatable {
        var name: String
        var metadata: [UInt8]
    }

    struct JoinResult: Sendable {
        var error: KafkaError
        var generation: Int32 = -1
        var protocolType: String?
        var protocolName: String?
        var leader = ""
        var memberID = ""
        /// For the leader: every member's id, instance id and metadata for the chosen protocol.
        var members: [(id: String, instanceID: String?, metadata: [UInt8])] = []
    }

    struct SyncResult: Sendable {
        var error: KafkaError
        var protocolType: String?
        var protocolName: String?
        var assignment: [UInt8] = []
    }

    struct Member: Codable, Sendable {
        var id: String
        var instanceID: String?
        var clientID: String
        var clientHost: String
        var sessionTimeout: Int32
        var rebalanceTimeout: Int32
        var protocols: [JoinProtocol]
        var assignment: [UInt8] = []
        /// Milliseconds since 1970 of the last sign of life (heartbeat, join, sync).
        var lastSeen: Int64
    }

    struct Group: Sendable {
        var id: String
        var state: State = .empty
        var generation: Int32 = 0
        var protocolType: String?
        var protocolName: String?
        var leader: String?
        /// Members in joining order.
        var members: [Member] = []
        var joinWaiters: [String: CheckedContinuation<JoinResult, Never>] = [:]
        var syncWaiters: [String: CheckedContinuation<SyncResult, Never>] = [:]
        var rebalanceDeadline: Int64?

        func index(of memberID: String) -> Int? { members.firstIndex { $0.id == memberID } }

        var record: Record {
            Record(
                state: state == .stable ? .stable : (members.isEmpty ? .empty : .preparingRebalance),
                generation: generation, protocolType: protocolType, protocolName: protocolName, leader: leader,
                members: members)
        }
    }

    /// What the journal keeps of a group.
    struct Record: Codable, Sendable {
        var state: State
        var generation: Int32
        var protocolType: String?
        var protocolName: String?
        var leader: String?
        var members: [Member]
    }

    static let namespace = "kafka.groups"
    static let minSessionTimeout: Int32 = 1_000
    static let maxSessionTimeout: Int32 = 1_800_000

    private let journal: any JournalClient
    private let logger: Logger
    private let groups = Mutex<[String: Group]>([:])
    /// Per group, the last store of its record: stores happen in order.
    private let storeTails = Mutex<[String: Task<Void, Never>]>([:])

    init(journal: any JournalClient, logger: Logger) {
        self.journal = journal
        self.logger = logger
    }

    /// The journal consumer-offset group that holds a Kafka group's commits.
    static func offsetGroup(_ groupID: String) -> String { "kafka/\(groupID)" }

    // MARK: Loading and storing

    /// Brings a group's stored record into memory the first time it is used here. A group
    /// the journal does not know is not created here (JoinGroup creates groups), so requests
    /// naming made-up groups leave nothing behind.
    func load(_ groupID: String) async {
        if groups.withLock({ $0[groupID] != nil }) { return }
        var group = Group(id: groupID)
        do {
            guard let bytes = try await journal.get(namespace: Self.namespace, key: Array(groupID.utf8)) else { return }
            let record = try Record(stored: bytes)
            group.state = record.members.isEmpty ? .empty : record.state
            group.generation = record.generation
            group.protocolType = record.protocolType
            group.protocolName = record.protocolName
            group.leader = record.leader
            let now = WallClock.milliseconds()
            group.members = record.members.map { member in
                var member = member
                member.lastSeen = now  // their session starts over with this gateway
                return member
            }
            if group.state == .preparingRebalance { group.rebalanceDeadline = now + Self.rebalanceTimeout(group) }
        } catch {
            // Not loaded: the next request tries again (an unreadable record is not replaced).
            logger.error("kafka group record unreadable", metadata: ["kafka.group": "\(groupID)", "error": "\(error)"])
            return
        }
        groups.withLock { groups in
            if groups[groupID] == nil { groups[groupID] = group }
        }
    }

    private func store(_ group: Group) {
        let record = group.record
        let (journal, logger, id) = (self.journal, self.logger, group.id)
        storeTails.withLock { tails in
            let previous = tails[id]
            tails[id] = Task {
                await previous?.value
                do {
                    if record.members.isEmpty && record.generation == 0 {
                        try await journal.delete(namespace: Self.namespace, key: Array(id.utf8))
                    } else {
                        try await journal.put(
                            namespace: Self.namespace, key: Array(id.utf8),
                            value: record.kvBytes)
                    }
                } catch {
                    logger.error(
                        "kafka group record not stored", metadata: ["kafka.group": "\(id)", "error": "\(error)"])
                }
            }
        }
    }

    /// Resumes waiters outside the lock.
    private struct Wakeups {
        var joins: [(CheckedContinuation<JoinResult, Never>, JoinResult)] = []
        var syncs: [(CheckedContinuation<SyncResult, Never>, SyncResult)] = []
        var store: Group?

        func run(_ coordinator: KafkaGroupCoordinator) {
            if let store { coordinator.store(store) }
            for (waiter, result) in joins { waiter.resume(returning: result) }
            for (waiter, result) in syncs { waiter.resume(returning: result) }
        }
    }

    private static func rebalanceTimeout(_ group: Group) -> Int64 {
        Int64(group.members.map(\.rebalanceTimeout).max() ?? 0)
    }

    // MARK: JoinGroup

    struct JoinRequest: Sendable {
        var groupID: String
        var sessionTimeout: Int32
        var rebalanceTimeout: Int32
        var memberID: String
        var instanceID: String?
        var protocolType: String
        var protocols: [JoinProtocol]
        var clientID: String
        var clientHost: String
        /// v4+: a member without an id is given one and asked to join again with it (KIP-394).
        var requireKnownMemberID: Bool
    }

    func join(_ request: JoinRequest) async -> JoinResult {
        guard !request.groupID.isEmpty else { return JoinResult(error: .invalidGroupID) }
        guard (Self.minSessionTimeout...Self.maxSessionTimeout).contains(request.sessionTimeout) else {
            return JoinResult(error: .invalidSessionTimeout)
        }
        guard !request.protocols.isEmpty, !request.protocolType.isEmpty else {
            return JoinResult(error: .inconsistentGroupProtocol)
        }
        await load(request.groupID)
        return await withCheckedContinuation { (waiter: CheckedContinuation<JoinResult, Never>) in
            var wakeups = Wakeups()
            groups.withLock { groups in
                var group = groups[request.groupID] ?? Group(id: request.groupID)
                defer { groups[request.groupID] = group }
                var memberID = request.memberID
                if !group.members.isEmpty {
                    let supported = Set(request.protocols.map(\.name))
                    let shared = group.members.allSatisfy { member in
                        member.protocols.contains { supported.contains($0.name) }
                    }
                    guard request.protocolType == group.protocolType, shared else {
                        return wakeups.joins.append((waiter, JoinResult(error: .inconsistentGroupProtocol)))
                    }
                }
                if memberID.isEmpty {
                    memberID = "\(request.clientID.prefix(200))-\(UUID().uuidString.lowercased())"
                    if request.requireKnownMemberID {
                        return wakeups.joins.append((waiter, JoinResult(error: .memberIDRequired, memberID: memberID)))
                    }
                } else if group.index(of: memberID) == nil && !request.requireKnownMemberID {
                    return wakeups.joins.append((waiter, JoinResult(error: .unknownMemberID)))
                }
                let now = WallClock.milliseconds()
                let member = Member(
                    id: memberID, instanceID: request.instanceID, clientID: request.clientID,
                    clientHost: request.clientHost,
                    sessionTimeout: request.sessionTimeout, rebalanceTimeout: request.rebalanceTimeout,
                    protocols: request.protocols,
                    assignment: group.index(of: memberID).map { group.members[$0].assignment } ?? [], lastSeen: now)
                let existing = group.index(of: memberID)
                let unchanged = existing.map { group.members[$0].protocols == request.protocols } ?? false
                if let existing { group.members[existing] = member } else { group.members.append(member) }
                group.protocolType = request.protocolType
                if group.state == .stable && unchanged && memberID != group.leader {
                    // A follower joining again with nothing new: the current generation stands.
                    return wakeups.joins.append((waiter, joinResult(group, for: memberID)))
                }
                group.joinWaiters[memberID]?.resume(returning: JoinResult(error: .unknownMemberID))
                group.joinWaiters[memberID] = waiter
                if group.state != .preparingRebalance { prepareRebalance(&group, &wakeups) }
                if group.members.allSatisfy({ group.joinWaiters[$0.id] != nil }) { completeJoin(&group, &wakeups) }
            }
            wakeups.run(self)
        }
    }

    private func joinResult(_ group: Group, for memberID: String) -> JoinResult {
        var result = JoinResult(
            error: .none, generation: group.generation, protocolType: group.protocolType,
            protocolName: group.protocolName, leader: group.leader ?? "", memberID: memberID)
        if memberID == group.leader {
            result.members = group.members.map { member in
                (member.id, member.instanceID, member.protocols.first { $0.name == group.protocolName }?.metadata ?? [])
            }
        }
        return result
    }

    private func prepareRebalance(_ group: inout Group, _ wakeups: inout Wakeups) {
        group.state = .preparingRebalance
        group.rebalanceDeadline = WallClock.milliseconds() + Self.rebalanceTimeout(group)
        for (_, waiter) in group.syncWaiters {
            wakeups.syncs.append((waiter, SyncResult(error: .rebalanceInProgress)))
        }
        group.syncWaiters = [:]
    }

    /// Ends the join phase: members that did not join again are dropped, the generation
    /// advances, and every joined member is answered (the leader with the member list).
    private func completeJoin(_ group: inout Group, _ wakeups: inout Wakeups) {
        group.members.removeAll { group.joinWaiters[$0.id] == nil }
        group.rebalanceDeadline = nil
        group.generation &+= 1
        guard let first = group.members.first else {
            group.state = .empty
            group.leader = nil
            group.protocolName = nil
            wakeups.store = group
            return
        }
        group.protocolName =
            first.protocols.first { candidate in
                group.members.allSatisfy { member in member.protocols.contains { $0.name == candidate.name } }
            }?.name
        if group.leader == nil || group.index(of: group.leader!) == nil { group.leader = first.id }
        group.state = .completingRebalance
        let now = WallClock.milliseconds()
        for index in group.members.indices { group.members[index].lastSeen = now }
        for (memberID, waiter) in group.joinWaiters { wakeups.joins.append((waiter, joinResult(group, for: memberID))) }
        group.joinWaiters = [:]
        logger.info(
            "kafka group rebalanced",
            metadata: [
                "kafka.group": "\(group.id)", "kafka.generation": "\(group.generation)",
                "kafka.members": "\(group.members.count)", "kafka.protocol": "\(group.protocolName ?? "-")",
            ])
    }

    // MARK: SyncGroup

    func sync(groupID: String, generation: Int32, memberID: String, assignments: [(String, [UInt8])]) async
        -> SyncResult
    {
        await load(groupID)
        return await withCheckedContinuation { (waiter: CheckedContinuation<SyncResult, Never>) in
            var wakeups = Wakeups()
            groups.withLock { groups in
                guard var group = groups[groupID], let index = group.index(of: memberID) else {
                    return wakeups.syncs.append((waiter, SyncResult(error: .unknownMemberID)))
                }
                defer { groups[groupID] = group }
                guard generation == group.generation else {
                    return wakeups.syncs.append((waiter, SyncResult(error: .illegalGeneration)))
                }
                group.members[index].lastSeen = WallClock.milliseconds()
                switch group.state {
                case .preparingRebalance:
                    wakeups.syncs.append((waiter, SyncResult(error: .rebalanceInProgress)))
                case .stable:
                    wakeups.syncs.append((waiter, syncResult(group, index: index)))
                case .completingRebalance:
                    group.syncWaiters[memberID]?.resume(returning: SyncResult(error: .unknownMemberID))
                    group.syncWaiters[memberID] = waiter
                    guard memberID == group.leader else { return }
                    let given = Dictionary(assignments, uniquingKeysWith: { first, _ in first })
                    for index in group.members.indices {
                        group.members[index].assignment = given[group.members[index].id] ?? []
                    }
                    group.state = .stable
                    for (id, waiting) in group.syncWaiters {
                        wakeups.syncs.append((waiting, syncResult(group, index: group.index(of: id)!)))
                    }
                    group.syncWaiters = [:]
                    wakeups.store = group
                case .empty, .dead:
                    wakeups.syncs.append((waiter, SyncResult(error: .unknownMemberID)))
                }
            }
            wakeups.run(self)
        }
    }

    private func syncResult(_ group: Group, index: Int) -> SyncResult {
        SyncResult(
            error: .none, protocolType: group.protocolType, protocolName: group.protocolName,
            assignment: group.members[index].assignment)
    }

    // MARK: Heartbeat, LeaveGroup

    func heartbeat(groupID: String, generation: Int32, memberID: String) async -> KafkaError {
        await load(groupID)
        return groups.withLock { groups -> KafkaError in
            guard let index = groups[groupID]?.index(of: memberID) else { return .unknownMemberID }
            groups[groupID]!.members[index].lastSeen = WallClock.milliseconds()
            let group = groups[groupID]!
            if group.state == .preparingRebalance { return .rebalanceInProgress }
            return generation == group.generation ? .none : .illegalGeneration
        }
    }

    /// Removes members; the others rebalance. Returns each member's outcome.
    func leave(groupID: String, memberIDs: [String]) async -> [KafkaError] {
        await load(groupID)
        var wakeups = Wakeups()
        let outcomes = groups.withLock { groups -> [KafkaError] in
            guard var group = groups[groupID] else { return memberIDs.map { _ in .unknownMemberID } }
            defer { groups[groupID] = group }
            let outcomes = memberIDs.map { id -> KafkaError in
                guard group.index(of: id) != nil else { return .unknownMemberID }
                remove(id, from: &group, &wakeups)
                return .none
            }
            return outcomes
        }
        wakeups.run(self)
        return outcomes
    }

    private func remove(_ memberID: String, from group: inout Group, _ wakeups: inout Wakeups) {
        group.members.removeAll { $0.id == memberID }
        if let waiter = group.joinWaiters.removeValue(forKey: memberID) {
            wakeups.joins.append((waiter, JoinResult(error: .unknownMemberID)))
        }
        if let waiter = group.syncWaiters.removeValue(forKey: memberID) {
            wakeups.syncs.append((waiter, SyncResult(error: .unknownMemberID)))
        }
        switch group.state {
        case .stable, .completingRebalance:
            if group.members.isEmpty {
                group.state = .empty
                group.generation &+= 1
                group.leader = nil
                group.protocolName = nil
            } else {
                prepareRebalance(&group, &wakeups)
            }
        case .preparingRebalance:
            if group.members.allSatisfy({ group.joinWaiters[$0.id] != nil }) { completeJoin(&group, &wakeups) }
        case .empty, .dead:
            break
        }
        wakeups.store = group
    }

    /// Drops the groups this gateway no longer coordinates (another gateway process owns them
    /// now, `GatewayMembers`): their waiting joins and syncs are answered NOT_COORDINATOR and
    /// nothing of them is stored, so the new coordinator's record is not overwritten.
    func release(keeping owns: (String) -> Bool) {
        let dropped = groups.withLock { groups -> [Group] in
            let gone = groups.values.filter { !owns($0.id) }
            for group in gone { groups[group.id] = nil }
            return gone
        }
        for group in dropped {
            logger.info("kafka group handed to another gateway", metadata: ["kafka.group": "\(group.id)"])
            for waiter in group.joinWaiters.values { waiter.resume(returning: JoinResult(error: .notCoordinator)) }
            for waiter in group.syncWaiters.values { waiter.resume(returning: SyncResult(error: .notCoordinator)) }
        }
    }

    /// Drops members whose session ran out and ends join phases whose rebalance timeout passed.
    /// Run every few hundred milliseconds by the gateway.
    func expire() {
        var all: [Wakeups] = []
        groups.withLock { groups in
            let now = WallClock.milliseconds()
            for id in Array(groups.keys) {
                var group = groups[id]!
                var wakeups = Wakeups()
                let expired = group.members.filter { member in
                    group.joinWaiters[member.id] == nil && now - member.lastSeen > Int64(member.sessionTimeout)
                }
                for member in expired {
                    logger.info(
                        "kafka group member expired",
                        metadata: ["kafka.group": "\(id)", "kafka.member": "\(member.id)"])
                    remove(member.id, from: &group, &wakeups)
                }
                if group.state == .preparingRebalance, let deadline = group.rebalanceDeadline, now >= deadline {
                    completeJoin(&group, &wakeups)
                }
                groups[id] = group
                all.append(wakeups)
            }
        }
        for wakeups in all { wakeups.run(self) }
    }

    /// Whether an offset commit from this member and generation may go ahead (generation -1
    /// with no member id: a consumer outside the group protocol, allowed while the group is empty).
    func validateCommit(groupID: String, generation: Int32, memberID: String) async -> KafkaError {
        await load(groupID)
        return groups.withLock { groups -> KafkaError in
            guard let group = groups[groupID] else { return .none }
            if generation < 0 && memberID.isEmpty { return group.members.isEmpty ? .none : .illegalGeneration }
            guard let index = group.index(of: memberID) else { return .unknownMemberID }
            groups[groupID]!.members[index].lastSeen = WallClock.milliseconds()
            // Kafka's rule: a member of the current generation may commit while the group prepares
            // a rebalance (the revoke callback commits then), not while it completes one (the
            // member already has the next generation's id but no assignment).
            guard generation == group.generation else { return .illegalGeneration }
            return group.state == .completingRebalance ? .rebalanceInProgress : .none
        }
    }

    // MARK: DescribeGroups, ListGroups

    func describe(_ groupID: String) async -> Group? {
        await load(groupID)
        return groups.withLock { groups in
            guard let group = groups[groupID], !(group.state == .empty && group.generation == 0) else { return nil }
            return group
        }
    }

    /// Every group known to the journal or to this gateway: (id, protocol type, state).
    func list() async throws -> [(String, String, State)] {
        for pair in try await journal.scan(namespace: Self.namespace) {
            await load(String(decoding: pair.key, as: UTF8.self))
        }
        return groups.withLock { groups in
            groups.values.filter { !($0.state == .empty && $0.generation == 0) }.sorted { $0.id < $1.id }.map {
                ($0.id, $0.protocolType ?? "", $0.state)
            }
        }
    }
}

/// The binary group record (`KVRecord`), version 1; JSON records of earlier gateways are still read.
extension KafkaGroupCoordinator.Record: KVRecord {
    static let recordVersion: UInt8 = 1

    func write(to buffer: inout ByteBuffer) {
        buffer.writeWireString(state.rawValue)
        buffer.writeInteger(generation)
        buffer.writeWireOptional(protocolType) { $0.writeWireString($1) }
        buffer.writeWireOptional(protocolName) { $0.writeWireString($1) }
        buffer.writeWireOptional(leader) { $0.writeWireString($1) }
        buffer.writeWireList(members) { buffer, member in
            buffer.writeWireString(member.id)
            buffer.writeWireOptional(member.instanceID) { $0.writeWireString($1) }
            buffer.writeWireString(member.clientID)
            buffer.writeWireString(member.clientHost)
            buffer.writeInteger(member.sessionTimeout)
            buffer.writeInteger(member.rebalanceTimeout)
            buffer.writeWireList(member.protocols) { buffer, joined in
                buffer.writeWireString(joined.name)
                buffer.writeWireBytes(joined.metadata)
            }
            buffer.writeWireBytes(member.assignment)
            buffer.writeInteger(member.lastSeen)
        }
    }

    init(reading buffer: inout ByteBuffer, version: UInt8) throws(JournalError) {
        let name = try buffer.readWireString()
        guard let state = KafkaGroupCoordinator.State(rawValue: name) else {
            throw JournalError(.protocolError, "unknown group state \(name)")
        }
        self.state = state
        generation = try buffer.readWireInteger()
        protocolType = try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireString() }
        protocolName = try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireString() }
        leader = try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireString() }
        members = try buffer.readWireList { buffer throws(JournalError) in
            KafkaGroupCoordinator.Member(
                id: try buffer.readWireString(),
                instanceID: try buffer.readWireOptional { buffer throws(JournalError) in try buffer.readWireString() },
                clientID: try buffer.readWireString(), clientHost: try buffer.readWireString(),
                sessionTimeout: try buffer.readWireInteger(), rebalanceTimeout: try buffer.readWireInteger(),
                protocols: try buffer.readWireList { buffer throws(JournalError) in
                    KafkaGroupCoordinator.JoinProtocol(
                        name: try buffer.readWireString(), metadata: try buffer.readWireBytes())
                },
                assignment: try buffer.readWireBytes(), lastSeen: try buffer.readWireInteger())
        }
    }
}
