import Foundation
import StrataTestSupport
import Testing

@testable import StrataObjects

/// The WebHDFS store against Tests/webhdfs_server.py (a namenode that redirects to a datanode,
/// as WebHDFS does; Tests/integration/test_webhdfs.py shows HdfsCLI working against it too).
@Suite struct WebHDFSObjectStoreTests {
    @Test func createOpenListDeleteThroughRedirects() async throws {
        try await withTemporaryDirectory { directory in
            let server = try WebHDFSServer.start(root: directory)
            defer { server.stop() }
            let transfer = CurlTransfer(threads: 1)
            let store = WebHDFSObjectStore(endpoint: server.endpoint, root: "/strata", user: "strata", transfer: transfer)
            let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            try await store.put("kafka/t/0/00000000000000000000", bytes)
            try await store.put("kafka/t/1/00000000000000000000", [1, 2, 3])
            #expect(try await store.get("kafka/t/0/00000000000000000000", range: nil) == bytes)
            #expect(try await store.get("kafka/t/0/00000000000000000000", range: 1000..<1010) == Array(bytes[1000..<1010]))
            #expect(try await store.list(prefix: "kafka/t/").map(\.key) == ["kafka/t/0/00000000000000000000", "kafka/t/1/00000000000000000000"])
            #expect(try await store.list(prefix: "kafka/t/1/").map(\.size) == [3])
            try await store.delete("kafka/t/1/00000000000000000000")
            await #expect(throws: ObjectStoreError.notFound("kafka/t/1/00000000000000000000")) {
                try await store.get("kafka/t/1/00000000000000000000", range: nil)
            }
            #expect(try await store.list(prefix: "nothing/").isEmpty)
            // A conditional create (overwrite=false): only the first of two creates the file.
            #expect(try await store.putIfAbsent("strata-node", [1]))
            #expect(try await store.putIfAbsent("strata-node", [2]) == false)
            #expect(try await store.get("strata-node", range: nil) == [1])
            await transfer.shutdown()
        }
    }
}

/// Tests/webhdfs_server.py run with the venv's Python.
struct WebHDFSServer {
    let process: Process
    let endpoint: String

    static func start(root: String) throws -> WebHDFSServer {
        let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        let port = freePort()
        let process = Process()
        process.executableURL = MotoServer.venv.appendingPathComponent("python")
        process.arguments = [tests.appendingPathComponent("webhdfs_server.py").path, root + "/hdfs", "\(port)"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if canConnect(port: port) { return WebHDFSServer(process: process, endpoint: "http://127.0.0.1:\(port)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        process.terminate()
        throw MotoError("the WebHDFS test server did not start")
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
