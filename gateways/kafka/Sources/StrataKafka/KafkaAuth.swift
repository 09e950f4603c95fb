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

/// One connection's rules as a value (the kit's shape, docs/architecture.md): which requests
/// it may make in which phase of SASL authentication, and what each SaslHandshake and
/// SaslAuthenticate does. No I/O: the reader loop owns it and `KafkaConnectionStateTests` run
/// it as event → action tables. As Kafka does, a failed or out-of-order authentication is
/// answered and the connection closed.
struct KafkaConnectionState: Sendable {
    enum Mechanism: String, Sendable, CaseIterable {
        case plain = "PLAIN"
        case scramSHA256 = "SCRAM-SHA-256"
    }

    enum Phase: Sendable, Equatable {
        /// SASL is off on this listener: every request is served, no user.
        case open
        case awaitingHandshake
        case handshaken(Mechanism)
        case authenticated(user: String)
        /// The answer to the last request goes out, then the connection closes.
        case closing
    }

    /// What to do with a request of `api`.
    enum Admission: Sendable, Equatable {
        case serve(user: String?)
        case refuse(String)
    }

    enum Answer: Sendable, Equatable {
        /// SaslHandshake: the error code (none or UNSUPPORTED_SASL_MECHANISM) and the mechanisms offered.
        case handshake(KafkaError, offered: [String])
        /// SaslAuthenticate: the server's bytes (the client is authenticated once `phase` says so).
        case authenticate([UInt8])
        /// SaslAuthenticate failed: the error is answered, then the connection closes.
        case failed(KafkaFailure)
    }

    private(set) var phase: Phase
    /// A SCRAM exchange under way.
    private var scram = SCRAMServer()

    init(sasl: Bool) {
        phase = sasl ? .awaitingHandshake : .open
    }

    var user: String? {
        if case .authenticated(let user) = phase { user } else { nil }
    }

    var isClosing: Bool { phase == .closing }

    /// A request header was read.
    mutating func admit(_ api: KafkaAPI) -> Admission {
        switch phase {
        case .open: return .serve(user: nil)
        case .authenticated(let user):
            guard api != .saslHandshake && api != .saslAuthenticate else {
                // No re-authentication (SaslAuthenticate answers a session lifetime of 0).
                phase = .closing
                return .refuse("\(api) after the connection authenticated")
            }
            return .serve(user: user)
        case .awaitingHandshake, .handshaken:
            guard [.apiVersions, .saslHandshake, .saslAuthenticate].contains(api) else {
                phase = .closing
                return .refuse("\(api) request before SASL authentication")
            }
            return .serve(user: nil)
        case .closing:
            return .refuse("\(api) after a failed authentication")
        }
    }

    mutating func handshake(_ requested: String) -> Answer {
        let offered = Mechanism.allCases.map(\.rawValue)
        switch phase {
        case .open:
            return .handshake(.unsupportedSASLMechanism, offered: [])
        case .awaitingHandshake:
            guard let mechanism = Mechanism(rawValue: requested) else {
                return .handshake(.unsupportedSASLMechanism, offered: offered)
            }
            phase = .handshaken(mechanism)
            scram = SCRAMServer()
            return .handshake(.none, offered: offered)
        case .handshaken, .authenticated, .closing:
            phase = .closing
            return .handshake(.illegalSASLState, offered: offered)
        }
    }

    /// One SaslAuthenticate round against `users`.
    mutating func authenticate(_ bytes: [UInt8], users: SCRAMUsers?) -> Answer {
        guard let users, case .handshaken(let mechanism) = phase else {
            let message =
                switch phase {
                case .open: "SASL is not enabled on this listener"
                case .awaitingHandshake: "SaslAuthenticate before SaslHandshake"
                default: "SaslAuthenticate in the wrong state"
                }
            return fail(.illegalSASLState, message)
        }
        switch mechanism {
        case .plain:
            // authzid NUL user NUL password (RFC 4616)
            let parts = bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { return fail(.saslAuthenticationFailed, "malformed PLAIN message") }
            let user = String(decoding: parts[1], as: UTF8.self)
            let authzid = String(decoding: parts[0], as: UTF8.self)
            guard authzid.isEmpty || authzid == user, users.verify(user: user, password: Array(parts[2])) else {
                return fail(.saslAuthenticationFailed, "authentication failed: invalid credentials")
            }
            phase = .authenticated(user: user)
            return .authenticate([])
        case .scramSHA256:
            do {
                let answer = try scram.receive(bytes) { users[$0] }
                if let user = scram.authenticatedUser { phase = .authenticated(user: user) }
                return .authenticate(answer)
            } catch {
                return fail(.saslAuthenticationFailed, "authentication failed: \(error)")
            }
        }
    }

    private mutating func fail(_ code: KafkaError, _ message: String) -> Answer {
        phase = .closing
        return .failed(KafkaFailure(code, message))
    }
}

extension KafkaGateway {
    // MARK: SaslHandshake, SaslAuthenticate

    func saslHandshake(_ reader: inout KafkaReader, _ header: KafkaRequestHeader, state: inout KafkaConnectionState)
        throws -> KafkaWriter
    {
        let requested = try reader.string()
        guard case .handshake(let error, let offered) = state.handshake(requested) else {
            preconditionFailure("a handshake is answered with a handshake")
        }
        var writer = KafkaWriter(flexible: false)
        writer.int16(error.rawValue)
        writer.array(offered) { $0.string($1) }
        return writer
    }

    func saslAuthenticate(
        _ reader: inout KafkaReader, _ header: KafkaRequestHeader, state: inout KafkaConnectionState
    ) throws -> KafkaWriter {
        let bytes = try reader.nullableBytes().map { Array($0.readableBytesView) } ?? []
        try reader.taggedFields()
        var writer = KafkaWriter(flexible: header.flexible)
        switch state.authenticate(bytes, users: configuration.users) {
        case .authenticate(let answer):
            writer.int16(0)
            writer.nullableString(nil)
            writer.nullableBytes(ByteBuffer(bytes: answer))
        case .failed(let failure):
            logger.info(
                "kafka authentication failed", metadata: ["kafka.peer": "\(header.clientHost)", "error": "\(failure)"])
            writer.int16(failure.code.rawValue)
            writer.nullableString(failure.message)
            writer.nullableBytes(ByteBuffer())
        case .handshake:
            preconditionFailure("an authentication is answered with an authentication")
        }
        if header.version >= 1 { writer.int64(0) }  // session lifetime: no re-authentication required
        writer.taggedFields()
        return writer
    }
}
