import Foundation
import NIOCore
import StrataAuth
import StrataClient
import StrataJournal
import StrataTestSupport
import StrataWire
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The journal protocol with authentication (SCRAM-SHA-256, client certificates), TLS and
/// per-principal permissions; listeners beyond loopback refused without them; the admin token.
@Suite(.serialized) struct JournalSecurityTests {
    static let permissions = """
        # principal permission resource
        admin all *
        kafka all shard:kafka/
        kafka all kv:kafka.
        kafka write group:kafka/
        """

    /// Users admin/admin-secret and kafka/kafka-secret, the permissions above.
    static func accessFiles(_ dir: String) throws -> [String] {
        let users =
            [
                SCRAMUsers.line(user: "admin", password: "admin-secret"),
                SCRAMUsers.line(user: "kafka", password: "kafka-secret"),
            ]
            .joined(separator: "\n")
        try users.write(toFile: dir + "/users", atomically: true, encoding: .utf8)
        try permissions.write(toFile: dir + "/permissions", atomically: true, encoding: .utf8)
        return ["--journal-users", dir + "/users", "--journal-permissions", dir + "/permissions"]
    }

    static func client(
        _ node: NodeProcess, user: String? = nil, password: String? = nil,
        tls: (ca: String, cert: String?, key: String?)? = nil
    ) -> RemoteJournalClient {
        var configuration = RemoteJournalClient.Configuration(host: "127.0.0.1", port: node.journalPort)
        configuration.connectTimeout = .seconds(3)
        configuration.user = user
        configuration.password = password
        configuration.tlsCAFile = tls?.ca
        configuration.tlsCertificateFile = tls?.cert
        configuration.tlsKeyFile = tls?.key
        return RemoteJournalClient(configuration: configuration, logger: quietLogger)
    }

    static func refusal(_ body: () async throws -> Void) async -> JournalError? {
        do {
            try await body()
            return nil
        } catch let error as JournalError {
            return error
        } catch {
            return JournalError(.ioError, "\(error)")
        }
    }

    @Test func scramAuthenticationAndPermissions() async throws {
        try await withTemporaryDirectory { dir in
            let node = try await NodeProcess(dataDirectory: dir + "/node", extraArguments: try Self.accessFiles(dir))
            defer { Task { await node.stop() } }

            let anonymous = Self.client(node)
            let none = await Self.refusal { _ = try await anonymous.createShard("kafka/anon") }
            #expect(none?.code == .unauthenticated, "\(String(describing: none))")
            await anonymous.close()
            let wrong = Self.client(node, user: "kafka", password: "not-it")
            let bad = await Self.refusal { _ = try await wrong.createShard("kafka/wrong") }
            #expect(bad?.code == .unauthenticated, "\(String(describing: bad))")
            await wrong.close()
            let unknown = Self.client(node, user: "mallory", password: "x")
            #expect(await Self.refusal { _ = try await unknown.status() }?.code == .unauthenticated)
            await unknown.close()

            let admin = Self.client(node, user: "admin", password: "admin-secret")
            _ = try await admin.createShard("mqtt/sessions-0")
            _ = try await admin.createShard("kafka/orders/0")
            #expect(try await admin.listShards().map(\.name) == ["kafka/orders/0", "mqtt/sessions-0"])

            let kafka = Self.client(node, user: "kafka", password: "kafka-secret")
            let denied = await Self.refusal { try await kafka.deleteShard("mqtt/sessions-0") }
            #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
            #expect(
                await Self.refusal { _ = try await kafka.append(shard: "mqtt/sessions-0", batch: makeBatch("x")) }?.code
                    == .permissionDenied)
            #expect(
                await Self.refusal { try await kafka.put(namespace: "mqtt.sessions", key: [1], value: [2]) }?.code
                    == .permissionDenied)
            try await kafka.put(namespace: "kafka.groups", key: [1], value: [2])
            _ = try await kafka.createShard("kafka/orders/1")
            _ = try await kafka.append(shard: "kafka/orders/1", batch: makeBatch("ok"))
            #expect(try await kafka.listShards().map(\.name) == ["kafka/orders/0", "kafka/orders/1"])
            // Offsets belong to groups: its own groups' it may commit and fetch, no other's.
            try await kafka.commitOffset(group: "kafka/g", shard: "kafka/orders/1", offset: 1)
            #expect(try await kafka.committedOffset(group: "kafka/g", shard: "kafka/orders/1") == 1)
            let otherGroup = await Self.refusal {
                try await kafka.commitOffset(group: "mqtt/other", shard: "kafka/orders/1", offset: 0)
            }
            #expect(otherGroup?.code == .permissionDenied, "\(String(describing: otherGroup))")
            #expect(
                await Self.refusal {
                    _ = try await kafka.committedOffset(group: "mqtt/other", shard: "kafka/orders/1")
                }?
                .code == .permissionDenied)
            await kafka.close()

            // Nothing the refused requests asked for happened.
            #expect(
                try await admin.listShards().map(\.name) == ["kafka/orders/0", "kafka/orders/1", "mqtt/sessions-0"])
            #expect(try await admin.describeShard("mqtt/sessions-0").endOffset == 0)
            #expect(try await admin.get(namespace: "mqtt.sessions", key: [1]) == nil)
            await admin.close()
        }
    }

    @Test func tlsWithClientCertificates() async throws {
        try await withTemporaryDirectory { dir in
            let certificates = try TestCertificates(dir)
            var arguments = try Self.accessFiles(dir)
            arguments += [
                "--journal-tls-cert", certificates.serverCertificate, "--journal-tls-key", certificates.serverKey,
                "--journal-tls-client-ca", certificates.ca,
            ]
            let node = try await NodeProcess(dataDirectory: dir + "/node", extraArguments: arguments)
            defer { Task { await node.stop() } }

            // The certificate's common name is the principal.
            let kafka = Self.client(node, tls: (certificates.ca, certificates.kafkaCertificate, certificates.kafkaKey))
            _ = try await kafka.createShard("kafka/tls/0")
            #expect(await Self.refusal { _ = try await kafka.createShard("mqtt/tls") }?.code == .permissionDenied)
            await kafka.close()

            // No client certificate, one from another CA, or no TLS at all: refused.
            let anonymous = Self.client(node, user: "admin", password: "admin-secret", tls: (certificates.ca, nil, nil))
            #expect(await Self.refusal { _ = try await anonymous.createShard("kafka/no-cert") } != nil)
            await anonymous.close()
            let rogue = Self.client(node, tls: (certificates.ca, certificates.rogueCertificate, certificates.rogueKey))
            #expect(await Self.refusal { _ = try await rogue.createShard("kafka/rogue") } != nil)
            await rogue.close()
            let plain = Self.client(node, user: "admin", password: "admin-secret")
            #expect(await Self.refusal { _ = try await plain.createShard("kafka/plain") } != nil)
            await plain.close()
            let check = Self.client(node, tls: (certificates.ca, certificates.kafkaCertificate, certificates.kafkaKey))
            #expect(try await check.listShards().map(\.name) == ["kafka/tls/0"])
            await check.close()
        }
    }

    @Test func listenersBeyondLoopbackNeedAuthenticationUnlessInsecure() async throws {
        try await withTemporaryDirectory { dir in
            let process = Process()
            process.executableURL = NodeProcess.binaries.appendingPathComponent("journal-node")
            process.arguments = ["--data-dir", dir + "/open", "--listen", "0.0.0.0:0", "--http", "127.0.0.1:0"]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let message = await readToEnd(errors.fileHandleForReading)
            process.waitUntilExit()
            #expect(process.terminationStatus != 0)
            #expect(message.contains("no authentication") && message.contains("--insecure"), "\(message)")

            let insecure = try await NodeProcess(
                dataDirectory: dir + "/insecure", extraArguments: ["--listen", "0.0.0.0:0", "--insecure"])
            let client = RemoteJournalClient(
                configuration: .init(host: "127.0.0.1", port: insecure.journalPort), logger: quietLogger)
            _ = try await client.status()
            await client.close()
            await insecure.stop()
        }
    }

    @Test func theAdminAPINeedsItsToken() async throws {
        try await withTemporaryDirectory { dir in
            let token = "t0ken-for-the-admin-api"
            try token.write(toFile: dir + "/token", atomically: true, encoding: .utf8)
            let node = try await NodeProcess(
                dataDirectory: dir + "/node", extraArguments: ["--http-admin-token-file", dir + "/token"])
            defer { Task { await node.stop() } }
            #expect(try await curl(port: node.httpPort, path: "/admin/status").status == 401)
            #expect(
                try await curl(port: node.httpPort, path: "/admin/status", token: "wrong-token-wrong-token").status
                    == 401)
            #expect(try await curl(port: node.httpPort, path: "/admin/status", token: token).status == 200)
            #expect(try await curl(port: node.httpPort, path: "/metrics").status == 200)
            #expect(try await curl(port: node.httpPort, path: "/health").status == 200)
        }
    }

    private func curl(port: Int, path: String, token: String? = nil) async throws -> (status: Int, body: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments =
            ["-sS", "--max-time", "10", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]
            + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? [])
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = await readToEnd(out.fileHandleForReading)
        process.waitUntilExit()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }
}

/// A CA, a server certificate for 127.0.0.1, a client certificate (CN kafka) it signed, and a
/// client certificate (CN admin) from another CA, made with openssl.
struct TestCertificates {
    let ca: String
    let serverCertificate: String
    let serverKey: String
    let kafkaCertificate: String
    let kafkaKey: String
    let rogueCertificate: String
    let rogueKey: String

    init(_ dir: String) throws {
        func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "openssl \(arguments.joined(separator: " "))")
        }
        func authority(_ name: String) throws {
            try openssl([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=\(name)", "-keyout",
                "\(dir)/\(name).key", "-out", "\(dir)/\(name).pem",
            ])
        }
        func issue(_ name: String, by issuer: String, extensions: String?) throws {
            try openssl([
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)", "-keyout", "\(dir)/\(name).key", "-out",
                "\(dir)/\(name).csr",
            ])
            var arguments = [
                "x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/\(issuer).pem", "-CAkey",
                "\(dir)/\(issuer).key",
                "-CAcreateserial", "-days", "2", "-out", "\(dir)/\(name).pem",
            ]
            if let extensions {
                try extensions.write(toFile: "\(dir)/\(name).ext", atomically: true, encoding: .utf8)
                arguments += ["-extfile", "\(dir)/\(name).ext"]
            }
            try openssl(arguments)
        }
        try authority("ca")
        try authority("rogue-ca")
        try issue("server", by: "ca", extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        try issue("kafka", by: "ca", extensions: nil)
        try issue("admin", by: "rogue-ca", extensions: nil)
        ca = dir + "/ca.pem"
        serverCertificate = dir + "/server.pem"
        serverKey = dir + "/server.key"
        kafkaCertificate = dir + "/kafka.pem"
        kafkaKey = dir + "/kafka.key"
        rogueCertificate = dir + "/admin.pem"
        rogueKey = dir + "/admin.key"
    }
}
