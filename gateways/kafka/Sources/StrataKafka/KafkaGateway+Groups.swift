import NIOCore
import StrataJournal
import StrataTopics

// FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
// DescribeGroups, ListGroups: reading the requests and writing the responses; the group
// logic is KafkaGroupCoordinator's.

extension KafkaGateway {
    // MARK: FindCoordinator

    /// A group's coordinator is the gateway process that owns it among those serving this
    /// journal (`GatewayMembers`: rendezvous hashing over the live ones). Transaction
    /// coordinators are not offered.
    func findCoordinator(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWriter {
        let version = header.version
        var keys: [String] = []
        var keyType: Int8 = 0
        if version <= 3 { keys = [try reader.string()] }
        if version >= 1 { keyType = try reader.int8() }
        if version >= 4 { keys = try reader.array { try $0.string() } }
        try reader.taggedFields()
        let error: KafkaError = keyType == 0 ? .none : .coordinatorNotAvailable
        let message = keyType == 0 ? nil : "transactions are not supported"
        var writer = KafkaWriter(flexible: header.flexible)
        if version >= 1 { writer.int32(0) }
        if version >= 4 {
            writer.array(keys) { writer, key in
                let owner = coordinator(of: key)
                writer.string(key)
                writer.int32(error == .none ? owner.id : -1)
                writer.string(error == .none ? owner.host : "")
                writer.int32(error == .none ? owner.port : -1)
                writer.int16(error.rawValue)
                writer.nullableString(message)
                writer.taggedFields()
            }
        } else {
            let owner = coordinator(of: keys[0])
            writer.int16(error.rawValue)
            if version >= 1 { writer.nullableString(message) }
            writer.int32(error == .none ? owner.id : -1)
            writer.string(error == .none ? owner.host : "")
            writer.int32(error == .none ? owner.port : -1)
        }
        writer.taggedFields()
        return writer
    }

    // MARK: JoinGroup

    func joinGroup(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let groupID = try reader.string()
        let sessionTimeout = try reader.int32()
        let rebalanceTimeout = version >= 1 ? try reader.int32() : sessionTimeout
        let memberID = try reader.string()
        let instanceID = version >= 5 ? try reader.nullableString() : nil
        let protocolType = try reader.string()
        let protocols = try reader.array { reader in
            let name = try reader.string()
            let metadata = try reader.nullableBytes()
            try reader.taggedFields()
            return KafkaGroupCoordinator.JoinProtocol(
                name: name, metadata: metadata.map { Array($0.readableBytesView) } ?? [])
        }
        if version >= 8 { _ = try reader.nullableString() }  // reason
        try reader.taggedFields()
        let request = KafkaGroupCoordinator.JoinRequest(
            groupID: groupID, sessionTimeout: sessionTimeout, rebalanceTimeout: rebalanceTimeout, memberID: memberID,
            instanceID: instanceID, protocolType: protocolType, protocols: protocols,
            clientID: header.clientID ?? "", clientHost: header.clientHost, requireKnownMemberID: version >= 4)
        return { [self] in
            let result =
                coordinates(groupID)
                ? await groups.join(request) : KafkaGroupCoordinator.JoinResult(error: .notCoordinator)
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 2 { writer.int32(0) }
            writer.int16(result.error.rawValue)
            writer.int32(result.generation)
            if version >= 7 { writer.nullableString(result.protocolType) }
            if version >= 7 {
                writer.nullableString(result.protocolName)
            } else {
                writer.string(result.protocolName ?? "")
            }
            writer.string(result.leader)
            if version >= 9 { writer.bool(false) }  // skip assignment
            writer.string(result.memberID)
            writer.array(result.members) { writer, member in
                writer.string(member.id)
                if version >= 5 { writer.nullableString(member.instanceID) }
                writer.nullableBytes(ByteBuffer(bytes: member.metadata))
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }

    // MARK: SyncGroup

    func syncGroup(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let groupID = try reader.string()
        let generation = try reader.int32()
        let memberID = try reader.string()
        if version >= 3 { _ = try reader.nullableString() }  // group instance id
        if version >= 5 {
            _ = try reader.nullableString()  // protocol type
            _ = try reader.nullableString()  // protocol name
        }
        let assignments = try reader.array { reader -> (String, [UInt8]) in
            let member = try reader.string()
            let assignment = try reader.nullableBytes()
            try reader.taggedFields()
            return (member, assignment.map { Array($0.readableBytesView) } ?? [])
        }
        try reader.taggedFields()
        return { [self] in
            let result =
                coordinates(groupID)
                ? await groups.sync(
                    groupID: groupID, generation: generation, memberID: memberID, assignments: assignments)
                : KafkaGroupCoordinator.SyncResult(error: .notCoordinator)
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 1 { writer.int32(0) }
            writer.int16(result.error.rawValue)
            if version >= 5 {
                writer.nullableString(result.protocolType)
                writer.nullableString(result.protocolName)
            }
            writer.nullableBytes(ByteBuffer(bytes: result.assignment))
            writer.taggedFields()
            return writer
        }
    }

    // MARK: Heartbeat, LeaveGroup

    func heartbeat(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let groupID = try reader.string()
        let generation = try reader.int32()
        let memberID = try reader.string()
        if header.version >= 3 { _ = try reader.nullableString() }
        try reader.taggedFields()
        return { [self] in
            let error =
                coordinates(groupID)
                ? await groups.heartbeat(groupID: groupID, generation: generation, memberID: memberID) : .notCoordinator
            var writer = KafkaWriter(flexible: header.flexible)
            if header.version >= 1 { writer.int32(0) }
            writer.int16(error.rawValue)
            writer.taggedFields()
            return writer
        }
    }

    func leaveGroup(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let groupID = try reader.string()
        var members: [(id: String, instanceID: String?)] = []
        if version <= 2 {
            members = [(try reader.string(), nil)]
        } else {
            members = try reader.array { reader in
                let id = try reader.string()
                let instanceID = try reader.nullableString()
                if version >= 5 { _ = try reader.nullableString() }  // reason
                try reader.taggedFields()
                return (id, instanceID)
            }
        }
        try reader.taggedFields()
        return { [self, members] in
            let coordinated = coordinates(groupID)
            let outcomes: [KafkaError] =
                coordinated
                ? await groups.leave(groupID: groupID, memberIDs: members.map(\.id))
                : members.map { _ in .notCoordinator }
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 1 { writer.int32(0) }
            if version <= 2 {
                writer.int16(outcomes[0].rawValue)
            } else {
                writer.int16(coordinated ? 0 : KafkaError.notCoordinator.rawValue)
                writer.array(Array(zip(members, outcomes))) { writer, entry in
                    writer.string(entry.0.id)
                    writer.nullableString(entry.0.instanceID)
                    writer.int16(entry.1.rawValue)
                    writer.taggedFields()
                }
            }
            writer.taggedFields()
            return writer
        }
    }

    // MARK: OffsetCommit, OffsetFetch

    func offsetCommit(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let groupID = try reader.string()
        let generation = version >= 1 ? try reader.int32() : -1
        let memberID = version >= 1 ? try reader.string() : ""
        if version >= 7 { _ = try reader.nullableString() }  // group instance id
        if version >= 2 && version <= 4 { _ = try reader.int64() }  // retention time
        let topics = try reader.topics { reader -> (Int32, Int64) in
            let partition = try reader.int32()
            let offset = try reader.int64()
            if version >= 6 { _ = try reader.int32() }  // leader epoch
            if version == 1 { _ = try reader.int64() }  // commit timestamp
            _ = try reader.nullableString()  // metadata: not kept
            try reader.taggedFields()
            return (partition, offset)
        }
        try reader.taggedFields()
        let committed = commits.submit(groupID) { [self] previous in
            _ = await previous?.result
            let check =
                coordinates(groupID)
                ? await groups.validateCommit(groupID: groupID, generation: generation, memberID: memberID)
                : .notCoordinator
            var results: [(String, [(Int32, KafkaError)])] = []
            for (topic, partitions) in topics {
                var outcomes: [(Int32, KafkaError)] = []
                for (partition, offset) in partitions {
                    guard check == .none else {
                        outcomes.append((partition, check))
                        continue
                    }
                    guard permits(header, .consume, topic: topic) else {
                        outcomes.append((partition, .topicAuthorizationFailed))
                        continue
                    }
                    do {
                        guard offset >= 0 else { throw KafkaFailure(.invalidRequest, "negative offset") }
                        try await journal.commitOffset(
                            group: KafkaGroupCoordinator.offsetGroup(groupID), shard: Self.shardName(topic, partition),
                            offset: UInt64(offset))
                        outcomes.append((partition, .none))
                    } catch {
                        outcomes.append((partition, KafkaFailure.from(error).code))
                    }
                }
                results.append((topic, outcomes))
            }
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 3 { writer.int32(0) }
            writer.topics(results) { writer, outcome in
                writer.int32(outcome.0)
                writer.int16(outcome.1.rawValue)
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
        // The work cannot throw; the chain's task type allows it.
        return { (try? await committed.value) ?? KafkaWriter(flexible: header.flexible) }
    }

    func offsetFetch(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let groupID = try reader.string()
        let topics = try reader.nullableArray { reader in
            let name = try reader.string()
            let partitions = try reader.array { try $0.int32() }
            try reader.taggedFields()
            return (name, partitions)
        }
        if version >= 7 { _ = try reader.bool() }  // require stable: no transactions, always stable
        try reader.taggedFields()
        return { [self] in
            var wanted = topics ?? []
            var topLevel: KafkaError = .none
            let coordinated = coordinates(groupID)
            if !coordinated {
                topLevel = .notCoordinator  // v2+; earlier versions get it per partition below
            } else if topics == nil {
                // Every partition the group committed to: each topic's partitions are asked.
                do {
                    wanted = try await allTopics().sorted { $0.key < $1.key }.map {
                        ($0.key, Array(0..<$0.value.partitions))
                    }
                } catch {
                    topLevel = KafkaFailure.from(error).code
                }
            }
            var results: [(String, [(Int32, Int64, KafkaError)])] = []
            for (topic, partitions) in wanted {
                var found: [(Int32, Int64, KafkaError)] = []
                for partition in partitions {
                    guard coordinated else {
                        found.append((partition, -1, .notCoordinator))
                        continue
                    }
                    guard permits(header, .consume, topic: topic) else {
                        if topics != nil { found.append((partition, -1, .topicAuthorizationFailed)) }
                        continue
                    }
                    do {
                        let offset = try await journal.committedOffset(
                            group: KafkaGroupCoordinator.offsetGroup(groupID), shard: Self.shardName(topic, partition))
                        if offset != nil || topics != nil {
                            found.append((partition, offset.map { Int64($0) } ?? -1, .none))
                        }
                    } catch let failure as JournalError where failure.code == .unknownShard {
                        if topics != nil { found.append((partition, -1, .unknownTopicOrPartition)) }
                    } catch {
                        found.append((partition, -1, KafkaFailure.from(error).code))
                    }
                }
                if !found.isEmpty { results.append((topic, found)) }
            }
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 3 { writer.int32(0) }
            writer.topics(results) { writer, entry in
                writer.int32(entry.0)
                writer.int64(entry.1)
                if version >= 5 { writer.int32(-1) }  // leader epoch
                writer.nullableString("")  // metadata
                writer.int16(entry.2.rawValue)
                writer.taggedFields()
            }
            if version >= 2 { writer.int16(topLevel.rawValue) }
            writer.taggedFields()
            return writer
        }
    }

    // MARK: DescribeGroups, ListGroups

    func describeGroups(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let ids = try reader.array { try $0.string() }
        if version >= 3 { _ = try reader.bool() }  // include authorized operations
        try reader.taggedFields()
        return { [self] in
            var described: [(String, KafkaGroupCoordinator.Group?)] = []
            for id in ids { described.append((id, coordinates(id) ? await groups.describe(id) : nil)) }
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 1 { writer.int32(0) }
            writer.array(described) { writer, entry in
                let group = entry.1
                writer.int16(coordinates(entry.0) ? 0 : KafkaError.notCoordinator.rawValue)
                writer.string(entry.0)
                writer.string((group?.state ?? .dead).rawValue)
                writer.string(group?.protocolType ?? "")
                writer.string(group?.state == .stable ? group?.protocolName ?? "" : "")
                writer.array(group?.members ?? []) { writer, member in
                    writer.string(member.id)
                    if version >= 4 { writer.nullableString(member.instanceID) }
                    writer.string(member.clientID)
                    writer.string(member.clientHost)
                    let metadata = member.protocols.first { $0.name == group?.protocolName }?.metadata ?? []
                    writer.nullableBytes(ByteBuffer(bytes: metadata))
                    writer.nullableBytes(ByteBuffer(bytes: member.assignment))
                    writer.taggedFields()
                }
                if version >= 3 { writer.int32(Self.operationsNotRequested) }
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }

    func listGroups(_ reader: inout KafkaReader, _ header: KafkaRequestHeader) throws -> KafkaWork {
        let version = header.version
        let states = version >= 4 ? try reader.array { try $0.string() } : []
        if version >= 5 { _ = try reader.array { try $0.string() } }  // types filter
        try reader.taggedFields()
        return { [self] in
            var topLevel: KafkaError = .none
            var listed: [(String, String, KafkaGroupCoordinator.State)] = []
            do {
                // Each gateway lists the groups it coordinates, as each Kafka broker does.
                listed = try await groups.list().filter {
                    coordinates($0.0) && (states.isEmpty || states.contains($0.2.rawValue))
                }
            } catch {
                topLevel = KafkaFailure.from(error).code
            }
            var writer = KafkaWriter(flexible: header.flexible)
            if version >= 1 { writer.int32(0) }
            writer.int16(topLevel.rawValue)
            writer.array(listed) { writer, group in
                writer.string(group.0)
                writer.string(group.1)
                if version >= 4 { writer.string(group.2.rawValue) }
                writer.taggedFields()
            }
            writer.taggedFields()
            return writer
        }
    }
}
