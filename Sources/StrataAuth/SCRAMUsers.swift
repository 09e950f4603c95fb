import Foundation

/// Users for SCRAM-SHA-256 and PLAIN authentication (Kafka SASL, MQTT 5 enhanced
/// authentication), one line per user:
///
///     # user:SCRAM-SHA-256:ITERATIONS:SALT:STORED_KEY:SERVER_KEY   (base64 salt and keys)
///     alice:SCRAM-SHA-256:4096:c2FsdA==:...:...
///
/// Only salted SCRAM keys are kept, never passwords; PLAIN is checked by deriving the same
/// keys. `strata scram-user NAME` prints such a line for a password read from stdin. There are
/// no default users.
public struct SCRAMUsers: Sendable {
    let credentials: [String: SCRAMCredential]

    public subscript(user: String) -> SCRAMCredential? { credentials[user] }

    /// Whether `password` is `user`'s (PLAIN logins: Kafka SASL PLAIN, MQTT CONNECT). An unknown
    /// user costs the same key derivation as a known one, so the time taken does not tell which
    /// users exist. The derivation takes milliseconds: callers on an event loop or the
    /// cooperative pool should run it elsewhere.
    public func verify(user: String, password: [UInt8]) -> Bool {
        guard let credential = credentials[user] else {
            _ = Self.madeUp.verifies(password: password)
            return false
        }
        return credential.verifies(password: password)
    }

    /// A credential no password opens, with the iterations `strata scram-user` uses.
    static let madeUp = SCRAMCredential(
        password: (0..<32).map { _ in UInt8.random(in: 0...255) },
        salt: (0..<16).map { _ in UInt8.random(in: 0...255) },
        iterations: 8192)

    public init(contentsOfFile path: String) throws {
        try self.init(parsing: try String(contentsOfFile: path, encoding: .utf8), source: path)
    }

    public init(parsing text: String, source: String = "users file") throws {
        var credentials: [String: SCRAMCredential] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 6, fields[1] == "SCRAM-SHA-256", let iterations = Int(fields[2]), iterations >= 4096,
                let salt = Data(base64Encoded: fields[3]), let stored = Data(base64Encoded: fields[4]),
                stored.count == 32,
                let server = Data(base64Encoded: fields[5]), server.count == 32, !fields[0].isEmpty
            else {
                throw ConfigFileError(
                    "\(source) line \(number + 1): expected user:SCRAM-SHA-256:ITERATIONS(>=4096):SALT:STORED_KEY:SERVER_KEY"
                )
            }
            credentials[fields[0]] = SCRAMCredential(
                salt: Array(salt), iterations: iterations, storedKey: Array(stored), serverKey: Array(server))
        }
        self.credentials = credentials
    }

    /// The line for a user with this password (a fresh random salt).
    /// PBKDF2 iterations of the lines `line` writes (and of unknown users' challenges).
    public static let defaultIterations = 8192

    public static func line(user: String, password: String, iterations: Int = defaultIterations) -> String {
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let credential = SCRAMCredential(password: Array(password.utf8), salt: salt, iterations: iterations)
        return [
            user, "SCRAM-SHA-256", "\(iterations)", Data(salt).base64EncodedString(),
            Data(credential.storedKey).base64EncodedString(), Data(credential.serverKey).base64EncodedString(),
        ].joined(separator: ":")
    }
}

/// A configuration file (users, passwords, ACLs, certificates) that cannot be used: the
/// message names the file and line.
public struct ConfigFileError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
