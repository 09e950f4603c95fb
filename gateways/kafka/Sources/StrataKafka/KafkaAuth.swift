import Foundation
import NIOCore
import StrataAuth
import StrataWire
import Synchronization

/// Who may do what, when SASL is on, one rule per line:
///
///     # USER OPERATION TOPIC-PATTERN      (operation: produce, consume, admin; * for every user)
///     alice produce orders
///     alice consume orders*
///     ops   admin   *
///
/// A pattern is a topic name, a prefix ending in `*`, or `*`. produce: Produce; consume: Fetch,
/// ListOffsets and offset commits and fetches; admin: creating (also automatically), deleting
/// and growing topics. Any rule on a topic lets a user see it in Metadata and describe its
/// configs. Consumer groups are open to every authenticated user. Without a rule, no.
public struct KafkaACL: Sendable {
    public enum Operation: String, Sendable { case produce, consume, admin }

    struct Rule: Sendable {
        var user: String
        var operation: Operation
        var pattern: String

        func matches(user: String, topic: String) -> Bool {
            guard self.user == "*" || self.user == user else { return false }
            if pattern == "*" { return true }
            if pattern.hasSuffix("*") { return topic.hasPrefix(pattern.dropLast()) }
            return pattern == topic
        }
    }

    let rules: [Rule]

    public init(contentsOfFile path: String) throws {
        try self.init(parsing: try String(contentsOfFile: path, encoding: .utf8), source: path)
    }

    public init(parsing text: String, source: String = "ACL file") throws {
        var rules: [Rule] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fields = line.split(whereSeparator: \.isWhitespace).map(String.init)
            if fields.isEmpty || fields[0].hasPrefix("#") { continue }
            guard fields.count == 3, let operation = Operation(rawValue: fields[1]) else {
                throw ConfigFileError("\(source) line \(number + 1): expected USER produce|consume|admin TOPIC-PATTERN")
            }
            rules.append(Rule(user: fields[0], operation: operation, pattern: fields[2]))
        }
        self.rules = rules
    }

    public func allows(_ user: String, _ operation: Operation, topic: String) -> Bool {
        rules.contains { $0.operation == operation && $0.matches(user: user, topic: topic) }
    }

    /// Any rule at all on the topic (Metadata, DescribeConfigs).
    public func canSee(_ user: String, topic: String) -> Bool {
        rules.contains { $0.matches(user: user, topic: topic) }
    }
}

/// One connection's SASL state.
final class KafkaSASLSession: Sendable {
    enum Mechanism: String, Sendable, CaseIterable {
        case plain = "PLAIN"
        case scramSHA256 = "SCRAM-SHA-256"
    }

    private struct State: Sendable {
        var mechanism: Mechanism?
        var scram = SCRAMServer()
        var user: String?
    }

    private let state = Mutex(State())
    /// The connection's request-size gate, raised to `limit` once the client authenticated.
    private let gate: FrameSizeGate?
    private let limit: Int

    init(gate: FrameSizeGate? = nil, limit: Int = .max) {
        self.gate = gate
        self.limit = limit
    }

    var user: String? { state.withLock { $0.user } }

    func select(_ mechanism: Mechanism) {
        state.withLock { $0.mechanism = mechanism }
    }

    /// One SaslAuthenticate round: the answer to send, or the failure.
    func authenticate(_ bytes: [UInt8], users: SCRAMUsers) -> Result<[UInt8], KafkaFailure> {
        state.withLock { state in
            switch state.mechanism {
            case nil:
                return .failure(KafkaFailure(.illegalSASLState, "SaslAuthenticate before SaslHandshake"))
            case .plain?:
                // authzid NUL user NUL password (RFC 4616)
                let parts = bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else {
                    return .failure(KafkaFailure(.saslAuthenticationFailed, "malformed PLAIN message"))
                }
                let user = String(decoding: parts[1], as: UTF8.self)
                let authzid = String(decoding: parts[0], as: UTF8.self)
                guard authzid.isEmpty || authzid == user, let credential = users[user],
                    credential.verifies(password: Array(parts[2]))
                else {
                    return .failure(
                        KafkaFailure(.saslAuthenticationFailed, "authentication failed: invalid credentials"))
                }
                state.user = user
                gate?.raise(to: limit)
                return .success([])
            case .scramSHA256?:
                do {
                    let answer = try state.scram.receive(bytes) { users[$0] }
                    if let user = state.scram.authenticatedUser {
                        state.user = user
                        gate?.raise(to: limit)
                    }
                    return .success(answer)
                } catch {
                    return .failure(KafkaFailure(.saslAuthenticationFailed, "authentication failed: \(error)"))
                }
            }
        }
    }
}

extension KafkaGateway {
    // MARK: SaslHandshake, SaslAuthenticate

    func saslHandshake(_ reader: inout KafkaReader, _ header: KafkaRequestHeader, session: KafkaSASLSession) throws
        -> KafkaWriter
    {
        let requested = try reader.string()
        let mechanism = configuration.users == nil ? nil : KafkaSASLSession.Mechanism(rawValue: requested)
        if let mechanism { session.select(mechanism) }
        var writer = KafkaWriter(flexible: false)
        writer.int16(mechanism == nil ? KafkaError.unsupportedSASLMechanism.rawValue : 0)
        let offered = configuration.users == nil ? [] : KafkaSASLSession.Mechanism.allCases.map(\.rawValue)
        writer.array(offered) { $0.string($1) }
        return writer
    }

    func saslAuthenticate(_ reader: inout KafkaReader, _ header: KafkaRequestHeader, session: KafkaSASLSession) throws
        -> KafkaWriter
    {
        let bytes = try reader.nullableBytes().map { Array($0.readableBytesView) } ?? []
        try reader.taggedFields()
        let outcome: Result<[UInt8], KafkaFailure> =
            if let users = configuration.users {
                session.authenticate(bytes, users: users)
            } else {
                .failure(KafkaFailure(.illegalSASLState, "SASL is not enabled on this listener"))
            }
        var writer = KafkaWriter(flexible: header.flexible)
        switch outcome {
        case .success(let answer):
            writer.int16(0)
            writer.nullableString(nil)
            writer.nullableBytes(ByteBuffer(bytes: answer))
        case .failure(let failure):
            logger.info(
                "kafka authentication failed", metadata: ["kafka.peer": "\(header.clientHost)", "error": "\(failure)"])
            writer.int16(failure.code.rawValue)
            writer.nullableString(failure.message)
            writer.nullableBytes(ByteBuffer())
        }
        if header.version >= 1 { writer.int64(0) }  // session lifetime: no re-authentication required
        writer.taggedFields()
        return writer
    }
}
