import Crypto
import Foundation
import StrataAuth

/// A password file in mosquitto's format, so files made by `mosquitto_passwd` work as they are:
/// one `user:$7$ITERATIONS$SALT$HASH` line per user (PBKDF2-HMAC-SHA512, base64 salt and hash),
/// or `user:$6$SALT$HASH` (SHA-512 of password + salt). No default credentials exist.
public struct MQTTPasswordFile: Sendable {
    enum Hash: Sendable {
        case pbkdf2SHA512(iterations: Int, salt: [UInt8], hash: [UInt8])
        case sha512(salt: [UInt8], hash: [UInt8])
    }

    private let users: [String: Hash]

    public init(contentsOfFile path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try self.init(parsing: text, source: path)
    }

    public init(parsing text: String, source: String = "password file") throws {
        var users: [String: Hash] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ConfigFileError("\(source) line \(number + 1): expected user:hash")
            }
            let user = String(line[..<colon])
            let parts = line[line.index(after: colon)...].split(separator: "$", omittingEmptySubsequences: false)
            // "$7$101$salt$hash" splits into "", "7", "101", "salt", "hash".
            switch (parts.count, parts.dropFirst().first) {
            case (5, "7"):
                guard let iterations = Int(parts[2]), iterations > 0, let salt = Data(base64Encoded: String(parts[3])),
                    let hash = Data(base64Encoded: String(parts[4]))
                else { throw ConfigFileError("\(source) line \(number + 1): malformed $7$ entry") }
                users[user] = .pbkdf2SHA512(iterations: iterations, salt: Array(salt), hash: Array(hash))
            case (4, "6"):
                guard let salt = Data(base64Encoded: String(parts[2])), let hash = Data(base64Encoded: String(parts[3]))
                else {
                    throw ConfigFileError("\(source) line \(number + 1): malformed $6$ entry")
                }
                users[user] = .sha512(salt: Array(salt), hash: Array(hash))
            default:
                throw ConfigFileError("\(source) line \(number + 1): only $6$ and $7$ hashes are supported")
            }
        }
        self.users = users
    }

    public func verify(user: String, password: [UInt8]) -> Bool {
        guard let entry = users[user] else { return false }
        switch entry {
        case .pbkdf2SHA512(let iterations, let salt, let hash):
            let derived = PasswordHashing.pbkdf2(
                SHA512.self, password: password, salt: salt, iterations: iterations, length: hash.count)
            return PasswordHashing.constantTimeEqual(derived, hash)
        case .sha512(let salt, let hash):
            return PasswordHashing.constantTimeEqual(Array(SHA512.hash(data: password + salt)), hash)
        }
    }
}

/// Topic access rules in mosquitto's ACL format:
///
///     # rules before any `user` line apply to clients without a user name
///     topic read public/#
///     user alice
///     topic readwrite sensors/#
///     topic deny sensors/secret
///     pattern write clients/%c/#      (for every client; %c client id, %u user name)
///
/// With an ACL file nothing is allowed that no rule allows, and `deny` wins.
public struct MQTTACL: Sendable {
    public enum Access: Sendable { case read, write }

    struct Rule: Sendable {
        var filter: String
        var read: Bool
        var write: Bool
        var deny: Bool
    }

    private var anonymous: [Rule] = []
    private var users: [String: [Rule]] = [:]
    private var patterns: [Rule] = []

    public init(contentsOfFile path: String) throws {
        try self.init(parsing: try String(contentsOfFile: path, encoding: .utf8), source: path)
    }

    public init(parsing text: String, source: String = "ACL file") throws {
        var user: String?
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
            func rule(_ words: ArraySlice<String>) throws -> Rule {
                let access = words.count == 2 ? words[words.startIndex] : "readwrite"
                guard let filter = words.last, MQTTTopic.isValidFilter(filter) || filter.contains("%") else {
                    throw ConfigFileError("\(source) line \(number + 1): missing or invalid topic filter")
                }
                switch access {
                case "read": return Rule(filter: filter, read: true, write: false, deny: false)
                case "write": return Rule(filter: filter, read: false, write: true, deny: false)
                case "readwrite": return Rule(filter: filter, read: true, write: true, deny: false)
                case "deny": return Rule(filter: filter, read: true, write: true, deny: true)
                default: throw ConfigFileError("\(source) line \(number + 1): access is read, write, readwrite or deny")
                }
            }
            switch words.first {
            case "user" where words.count == 2:
                user = words[1]
                users[words[1], default: []] = users[words[1], default: []]
            case "topic" where words.count >= 2:
                let parsed = try rule(words.dropFirst())
                if let user { users[user, default: []].append(parsed) } else { anonymous.append(parsed) }
            case "pattern" where words.count >= 2:
                patterns.append(try rule(words.dropFirst()))
            default:
                throw ConfigFileError("\(source) line \(number + 1): expected user, topic or pattern")
            }
        }
    }

    /// Whether `user` (nil: anonymous) with `clientID` may read or write `topic` (for a
    /// subscription, its filter, whose wildcards then count as plain levels).
    public func allows(_ access: Access, user: String?, clientID: String, topic: String) -> Bool {
        let own = user.map { users[$0] ?? [] } ?? anonymous
        let expanded = patterns.map { pattern -> Rule in
            var rule = pattern
            rule.filter = rule.filter.replacingOccurrences(of: "%c", with: clientID)
                .replacingOccurrences(of: "%u", with: user ?? "")
            return rule
        }
        let matching = (own + expanded).filter { MQTTTopic.matches(filter: $0.filter, topic: topic) }
        if matching.contains(where: \.deny) { return false }
        return matching.contains { access == .read ? $0.read : $0.write }
    }
}
