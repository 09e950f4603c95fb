import Crypto
import Foundation
import StrataAuth
import Testing

/// SCRAM's first answer must not tell an unknown user from a known one.
@Suite struct SCRAMUnknownUserTests {
    static func serverFirst(_ user: String, users: SCRAMUsers) throws -> (salt: [UInt8], iterations: Int) {
        var server = SCRAMServer()
        let answer = try server.receive(Array("n,,n=\(user),r=clientnonce".utf8)) { users[$0] }
        var fields: [String: String] = [:]
        for part in String(decoding: answer, as: UTF8.self).split(separator: ",") {
            fields[String(part.prefix(1))] = String(part.dropFirst(2))
        }
        let salt = try #require(fields["s"].flatMap { Data(base64Encoded: $0) })
        let iterations = try #require(fields["i"].flatMap { Int($0) })
        return (Array(salt), iterations)
    }

    @Test func unknownUsersGetAChallengeLikeAKnownOne() throws {
        let users = try SCRAMUsers(parsing: SCRAMUsers.line(user: "alice", password: "secret"))
        let known = try Self.serverFirst("alice", users: users)
        let unknown = try Self.serverFirst("mallory", users: users)
        #expect(unknown.salt.count == known.salt.count)
        #expect(unknown.iterations == known.iterations)
        // Stable for a name (a real user's salt does not change between attempts)…
        #expect(try Self.serverFirst("mallory", users: users).salt == unknown.salt)
        // …and not one anybody can compute from the name.
        #expect(unknown.salt != Array(SHA256.hash(data: Array("mallory".utf8)).prefix(16)))
        #expect(unknown.salt != Array(SHA256.hash(data: Array("mallory".utf8))))
    }
}
