import Foundation
import StrataAuth

/// Who may do what in a virtual host, as `rabbitmqctl set_permissions -p VHOST USER CONF WRITE
/// READ` sets it: one line per virtual host and user, three regular expressions matched against
/// exchange and queue names (`^$` matches nothing but the default exchange's empty name; `.*`
/// everything). A user without a line for a virtual host cannot open it.
///
///     # vhost  user   configure  write  read
///     /        app    ^app\.     .*     .*
public struct AMQPPermissions: Sendable {
    public struct Rule: Sendable, Hashable {
        public var configure: String
        public var write: String
        public var read: String
    }

    public enum Access: String, Sendable {
        case configure, write, read
    }

    private var rules: [String: Rule] = [:]

    public init(contentsOfFile path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigFileError("cannot read the AMQP permissions file \(path)")
        }
        try self.init(parsing: text, source: path)
    }

    public init(parsing text: String, source: String = "permissions file") throws {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard fields.count == 5 else {
                throw ConfigFileError("\(source):\(index + 1): expected VHOST USER CONFIGURE WRITE READ")
            }
            for pattern in fields[2...] where (try? NSRegularExpression(pattern: pattern)) == nil {
                throw ConfigFileError("\(source):\(index + 1): '\(pattern)' is not a regular expression")
            }
            rules[Self.key(fields[0], fields[1])] = Rule(configure: fields[2], write: fields[3], read: fields[4])
        }
    }

    private static func key(_ virtualHost: String, _ user: String) -> String { "\(virtualHost)\u{0}\(user)" }

    public func rule(virtualHost: String, user: String) -> Rule? { rules[Self.key(virtualHost, user)] }
}

/// One user's permissions in one virtual host, compiled (a connection keeps one).
struct AMQPAccess {
    private let patterns: [AMQPPermissions.Access: NSRegularExpression]?
    private let user: String
    private let virtualHost: String

    init(_ rule: AMQPPermissions.Rule?, user: String, virtualHost: String) {
        self.user = user
        self.virtualHost = virtualHost
        patterns = rule.map { rule in
            [
                .configure: try! NSRegularExpression(pattern: rule.configure),
                .write: try! NSRegularExpression(pattern: rule.write),
                .read: try! NSRegularExpression(pattern: rule.read),
            ]
        }
    }

    /// 403 unless the user may do `access` to the resource (RabbitMQ's text).
    func check(_ access: AMQPPermissions.Access, _ kind: String, _ name: String, classID: UInt16, methodID: UInt16)
        throws(AMQPError)
    {
        guard let patterns, let pattern = patterns[access] else { return }
        let range = NSRange(name.startIndex..., in: name)
        if pattern.firstMatch(in: name, range: range) != nil { return }
        throw AMQPError(
            AMQPError.accessRefused,
            "ACCESS_REFUSED - \(access.rawValue) access to \(kind) '\(name)' in vhost '\(virtualHost)' refused for user '\(user)'",
            classID: classID, methodID: methodID)
    }
}
