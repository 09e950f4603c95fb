import Crypto
import Foundation

/// A user's SCRAM-SHA-256 credential (RFC 5802 / 7677) as a server keeps it: the salt and
/// iteration count, and the stored and server keys derived from the password — never the
/// password itself. It also checks a plain password (SASL PLAIN) by deriving the same keys.
public struct SCRAMCredential: Sendable, Hashable {
    public var salt: [UInt8]
    public var iterations: Int
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    public init(salt: [UInt8], iterations: Int, storedKey: [UInt8], serverKey: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// Derives the credential for `password`.
    public init(password: [UInt8], salt: [UInt8], iterations: Int) {
        let salted = PasswordHashing.pbkdf2(
            SHA256.self, password: password, salt: salt, iterations: iterations, length: 32)
        let saltedKey = SymmetricKey(data: salted)
        let clientKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Client Key".utf8), using: saltedKey))
        self.init(
            salt: salt, iterations: iterations, storedKey: Array(SHA256.hash(data: clientKey)),
            serverKey: Array(HMAC<SHA256>.authenticationCode(for: Array("Server Key".utf8), using: saltedKey)))
    }

    public func verifies(password: [UInt8]) -> Bool {
        PasswordHashing.constantTimeEqual(
            SCRAMCredential(password: password, salt: salt, iterations: iterations).storedKey, storedKey)
    }
}

public struct SCRAMError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The server side of one SCRAM-SHA-256 exchange: client-first → server-first,
/// client-final → server-final. Channel binding is not offered ("n,," only). An unknown user
/// goes through the exchange with a made-up credential and fails at the proof, as a wrong
/// password does, so the exchange does not reveal which users exist.
public struct SCRAMServer: Sendable {
    private enum Stage: Sendable {
        case initial
        case challenged(user: String, credential: SCRAMCredential, known: Bool, nonce: String, authPrefix: String)
        case finished
    }

    private var stage = Stage.initial
    /// Keys the made-up salts of unknown users (random per process).
    static let unknownUserKey = SymmetricKey(size: .bits256)
    public private(set) var authenticatedUser: String?

    public init() {}

    /// Takes the client's next message and returns the server's answer. Throws when the
    /// exchange fails (bad message, wrong proof); then it is over.
    public mutating func receive(
        _ message: [UInt8], credential lookup: (String) -> SCRAMCredential?
    ) throws(SCRAMError) -> [UInt8] {
        let text = String(decoding: message, as: UTF8.self)
        switch stage {
        case .initial:
            guard text.hasPrefix("n,") else {
                throw SCRAMError("channel binding is not supported (gs2 header must be n,,)")
            }
            let parts = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1].isEmpty || parts[1].hasPrefix("a=") else {
                throw SCRAMError("malformed client-first message")
            }
            let bare = String(parts[2])
            let attributes = Self.attributes(bare)
            guard let rawUser = attributes["n"], let clientNonce = attributes["r"], !clientNonce.isEmpty else {
                throw SCRAMError("client-first message without user or nonce")
            }
            let user = rawUser.replacingOccurrences(of: "=2C", with: ",").replacingOccurrences(of: "=3D", with: "=")
            let found = lookup(user)
            // An unknown user gets a challenge like a known one's — a 16-byte salt stable for the
            // name (keyed with a secret of this process, so nobody can compute it) and the
            // default iteration count — and fails only at the proof, as a wrong password does.
            let credential =
                found
                ?? SCRAMCredential(
                    salt: Array(
                        HMAC<SHA256>.authenticationCode(for: Array(user.utf8), using: Self.unknownUserKey).prefix(16)),
                    iterations: SCRAMUsers.defaultIterations,
                    storedKey: [UInt8](repeating: 0, count: 32), serverKey: [UInt8](repeating: 0, count: 32))
            let nonce = clientNonce + Self.randomNonce()
            let serverFirst = "r=\(nonce),s=\(Data(credential.salt).base64EncodedString()),i=\(credential.iterations)"
            stage = .challenged(
                user: user, credential: credential, known: found != nil, nonce: nonce,
                authPrefix: bare + "," + serverFirst + ",")
            return Array(serverFirst.utf8)
        case .challenged(let user, let credential, let known, let nonce, let authPrefix):
            stage = .finished
            guard let proofRange = text.range(of: ",p=") else { throw SCRAMError("client-final message without proof") }
            let withoutProof = String(text[..<proofRange.lowerBound])
            let attributes = Self.attributes(withoutProof)
            guard attributes["c"] == "biws" else {
                throw SCRAMError("unexpected channel binding in client-final message")
            }
            guard attributes["r"] == nonce else { throw SCRAMError("nonce mismatch") }
            guard let proof = Data(base64Encoded: String(text[proofRange.upperBound...])), proof.count == 32 else {
                throw SCRAMError("malformed proof")
            }
            let authMessage = Array((authPrefix + withoutProof).utf8)
            let signature = Array(
                HMAC<SHA256>.authenticationCode(for: authMessage, using: SymmetricKey(data: credential.storedKey)))
            let clientKey = zip(Array(proof), signature).map { $0 ^ $1 }
            guard known, PasswordHashing.constantTimeEqual(Array(SHA256.hash(data: clientKey)), credential.storedKey)
            else {
                throw SCRAMError("authentication failed for user \(user)")
            }
            authenticatedUser = user
            let serverSignature = HMAC<SHA256>.authenticationCode(
                for: authMessage, using: SymmetricKey(data: credential.serverKey))
            return Array("v=\(Data(serverSignature).base64EncodedString())".utf8)
        case .finished:
            throw SCRAMError("the SCRAM exchange is over")
        }
    }

    private static func attributes(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in text.split(separator: ",") where part.count >= 2 && part.dropFirst().first == "=" {
            result[String(part.prefix(1))] = String(part.dropFirst(2))
        }
        return result
    }

    private static func randomNonce() -> String {
        Data((0..<18).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }
}
