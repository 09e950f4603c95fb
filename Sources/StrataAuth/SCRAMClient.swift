import Crypto
import Foundation

/// The client side of one SCRAM-SHA-256 exchange (RFC 5802 / 7677), without channel binding:
/// `firstMessage`, then `finalMessage(serverFirst:)`, then `verify(serverFinal:)`, which proves
/// the server knew the credential too.
public struct SCRAMClient: Sendable {
    private let user: String
    private let password: [UInt8]
    private let nonce: String
    private var authMessage: [UInt8] = []
    private var serverKey: [UInt8] = []

    public init(user: String, password: String) {
        self.user = user
        self.password = Array(password.utf8)
        nonce = Data((0..<18).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    private var firstBare: String {
        "n=" + user.replacingOccurrences(of: "=", with: "=3D").replacingOccurrences(of: ",", with: "=2C") + ",r="
            + nonce
    }

    public func firstMessage() -> [UInt8] { Array(("n,," + firstBare).utf8) }

    public mutating func finalMessage(serverFirst message: [UInt8]) throws(SCRAMError) -> [UInt8] {
        let serverFirst = String(decoding: message, as: UTF8.self)
        var attributes: [String: String] = [:]
        for part in serverFirst.split(separator: ",") where part.count >= 2 && part.dropFirst().first == "=" {
            attributes[String(part.prefix(1))] = String(part.dropFirst(2))
        }
        guard let combined = attributes["r"], combined.hasPrefix(nonce), combined.count > nonce.count,
            let saltText = attributes["s"], let salt = Data(base64Encoded: saltText),
            let iterations = attributes["i"].flatMap(Int.init), (4096...1_000_000) ~= iterations
        else { throw SCRAMError("malformed server-first message") }
        let salted = PasswordHashing.pbkdf2(
            SHA256.self, password: password, salt: Array(salt), iterations: iterations, length: 32)
        let saltedKey = SymmetricKey(data: salted)
        let clientKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Client Key".utf8), using: saltedKey))
        let storedKey = Array(SHA256.hash(data: clientKey))
        serverKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Server Key".utf8), using: saltedKey))
        let withoutProof = "c=biws,r=" + combined
        authMessage = Array((firstBare + "," + serverFirst + "," + withoutProof).utf8)
        let signature = Array(HMAC<SHA256>.authenticationCode(for: authMessage, using: SymmetricKey(data: storedKey)))
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        return Array((withoutProof + ",p=" + Data(proof).base64EncodedString()).utf8)
    }

    public func verify(serverFinal message: [UInt8]) throws(SCRAMError) {
        let text = String(decoding: message, as: UTF8.self)
        let expected = HMAC<SHA256>.authenticationCode(for: authMessage, using: SymmetricKey(data: serverKey))
        guard text.hasPrefix("v="), let signature = Data(base64Encoded: String(text.dropFirst(2))),
            PasswordHashing.constantTimeEqual(Array(signature), Array(expected))
        else { throw SCRAMError("the server's SCRAM signature is wrong: it does not know this user's credential") }
    }
}
