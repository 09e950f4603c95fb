import Foundation
import StrataJournal
import StrataTestSupport
import Testing

@testable import StrataObjects

/// The S3 client against AWS's published SigV4 example and against a real S3-protocol server:
/// moto's standalone server from the project's venv, started on loopback by the test.
@Suite(.serialized) struct S3ObjectStoreTests {
    @Test func signatureMatchesAWSExample() {
        // "GET Object" example of the S3 SigV4 documentation (header-based auth).
        let configuration = S3Configuration(
            endpoint: "https://s3.amazonaws.com", region: "us-east-1", bucket: "examplebucket",
            accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", pathStyle: false)
        let store = S3ObjectStore(configuration: configuration, transfer: CurlTransfer(threads: 1))
        let request = store.sign(
            method: "GET", key: "test.txt", query: [], body: [], headers: [("Range", "bytes=0-9")],
            now: Date(timeIntervalSince1970: 1_369_353_600))
        let authorization = request.headers.first { $0.0 == "Authorization" }?.1
        #expect(
            authorization
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(request.url == "https://examplebucket.s3.amazonaws.com/test.txt")
    }

    @Test func putGetListDeleteAndMultipartAgainstMoto() async throws {
        let server = try MotoServer.start()
        defer { server.stop() }
        let transfer = CurlTransfer(threads: 2)
        let store = S3ObjectStore(
            configuration: S3Configuration(
                endpoint: server.endpoint, bucket: "strata-test", prefix: "node-1/", accessKey: "testing",
                secretKey: "testing", partSize: 5 << 20),
            transfer: transfer)
        try await store.createBucket()
        // A conditional write: only the first of two creates the object.
        #expect(try await store.putIfAbsent("strata-node", Array("first".utf8)))
        #expect(try await store.putIfAbsent("strata-node", Array("second".utf8)) == false)
        #expect(try await store.get("strata-node", range: nil) == Array("first".utf8))
        try await store.delete("strata-node")
        let small = Array("hello, object tier".utf8)
        try await store.put("shards/a/0001", small)
        #expect(try await store.get("shards/a/0001", range: nil) == small)
        #expect(try await store.get("shards/a/0001", range: 7..<13) == Array("object".utf8))
        // 12 MiB goes up in three parts and reads back whole and by range.
        let large = (0..<(12 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        try await store.put("shards/b/0001 with space", large)
        #expect(try await store.get("shards/b/0001 with space", range: nil) == large)
        #expect(try await store.get("shards/b/0001 with space", range: (6 << 20)..<((6 << 20) + 100)) == Array(large[(6 << 20)..<((6 << 20) + 100)]))
        let listed = try await store.list(prefix: "shards/")
        #expect(listed.map(\.key) == ["shards/a/0001", "shards/b/0001 with space"])
        #expect(listed.map(\.size) == [small.count, large.count])
        try await store.delete("shards/a/0001")
        await #expect(throws: ObjectStoreError.notFound("shards/a/0001")) { try await store.get("shards/a/0001", range: nil) }
        #expect(try await store.list(prefix: "shards/a/").isEmpty)
        // A bucket that is not there: the store's own error code, not a "not found" object.
        let elsewhere = S3ObjectStore(
            configuration: S3Configuration(
                endpoint: server.endpoint, bucket: "no-such-bucket", accessKey: "testing", secretKey: "testing"),
            transfer: transfer)
        await #expect {
            try await elsewhere.put("x", [1])
        } throws: { error in
            guard case ObjectStoreError.service(404, "NoSuchBucket", _) = error else { return false }
            return true
        }
        server.stop()
        // A dead endpoint is a transport error (retry later), not a hang.
        await #expect {
            try await store.get("shards/b/0001 with space", range: 0..<1)
        } throws: { error in
            guard case ObjectStoreError.transport = error else { return false }
            return true
        }
        await transfer.shutdown()
    }
}

extension S3ObjectStoreTests {
    /// With moto's authentication switched on, a request signed with a wrong secret is refused
    /// with the store's error (SignatureDoesNotMatch), and the right one goes through.
    @Test func wrongCredentialsAreRefusedClearly() async throws {
        // The first 3 requests (creating an IAM user, its policy and its key) go unchecked.
        let server = try MotoServer.start(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"])
        defer { server.stop() }
        let keys = try MotoServer.python(
            """
            import boto3
            iam = boto3.client("iam", endpoint_url="\(server.endpoint)", region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x")
            iam.create_user(UserName="strata")
            iam.put_user_policy(UserName="strata", PolicyName="s3", PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}')
            key = iam.create_access_key(UserName="strata")["AccessKey"]
            print(key["AccessKeyId"], key["SecretAccessKey"])
            """
        ).split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let transfer = CurlTransfer(threads: 1)
        func store(secret: String) -> S3ObjectStore {
            S3ObjectStore(
                configuration: S3Configuration(
                    endpoint: server.endpoint, bucket: "checked", accessKey: keys[0], secretKey: secret),
                transfer: transfer)
        }
        try await store(secret: keys[1]).createBucket()
        try await store(secret: keys[1]).put("k", [1, 2, 3])
        await #expect {
            try await store(secret: keys[1] + "wrong").put("k", [4])
        } throws: { error in
            guard case ObjectStoreError.service(403, "SignatureDoesNotMatch", _) = error else { return false }
            return true
        }
        #expect(try await store(secret: keys[1]).get("k", range: nil) == [1, 2, 3])
        await transfer.shutdown()
    }
}

/// moto's standalone S3 server, from the venv `make` creates (`.venv/bin/moto_server`).
struct MotoServer {
    let process: Process
    let endpoint: String

    static var venv: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".venv/bin")
    }

    /// Runs a Python script with the venv's interpreter (boto3 is there); returns its stdout.
    static func python(_ script: String) throws -> String {
        let process = Process()
        process.executableURL = venv.appendingPathComponent("python")
        process.arguments = ["-c", script]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw MotoError("python script failed (\(process.terminationStatus))") }
        return String(decoding: data, as: UTF8.self)
    }

    static func start(environment: [String: String] = [:]) throws -> MotoServer {
        let executable = venv.appendingPathComponent("moto_server").path
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw MotoError("moto_server not found at \(executable): run `make venv`")
        }
        let port = freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-H", "127.0.0.1", "-p", "\(port)"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let endpoint = "http://127.0.0.1:\(port)"
        // Wait until it answers (a Python server takes a moment to import).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if canConnect(port: port) { return MotoServer(process: process, endpoint: endpoint) }
            Thread.sleep(forTimeInterval: 0.1)
        }
        process.terminate()
        throw MotoError("moto_server did not start on port \(port)")
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)  // werkzeug does not always stop on SIGTERM
            process.waitUntilExit()
        }
    }
}

struct MotoError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension S3ObjectStoreTests {
    /// An offloaded object in a real S3 server: its index from two ranged GETs, reads from any
    /// offset crossing blocks, repeated reads served by the block cache, a corrupted copy
    /// refused with its key and block.
    @Test func coldReadsThroughTheBlockCache() async throws {
        let server = try MotoServer.start()
        defer { server.stop() }
        let transfer = CurlTransfer(threads: 2)
        let store = S3ObjectStore(
            configuration: S3Configuration(endpoint: server.endpoint, bucket: "cold", accessKey: "k", secretKey: "s"),
            transfer: transfer)
        try await store.createBucket()
        let batches = TierObjectTests.batches()
        let (bytes, index) = try TierObject.encode(shard: "kafka/t/0", batches: batches, blockBytes: 64 << 10)
        try await store.put("kafka/t/0/00000000000000000000", bytes)
        let read = try await TierObject.index(of: "kafka/t/0/00000000000000000000", size: bytes.count, in: store)
        #expect(read == index)
        let reader = TierReader(store: store, cache: TierBlockCache(capacityBytes: 4 << 20))
        let from450 = try await reader.read("kafka/t/0/00000000000000000000", index: read, from: 450, maxBytes: 200 << 10)
        #expect(from450.first.map { RecordBatch.Header.peek($0, at: $0.readerIndex)!.baseOffset } == 450)
        // Up to 200 KiB: several 64 KiB blocks, read on across block boundaries.
        let lastOffset = from450.last.map { RecordBatch.Header.peek($0, at: $0.readerIndex)!.lastOffset } ?? 0
        #expect(UInt64(lastOffset) > read.blocks[read.block(for: 450)! + 1].lastOffset)
        // The 4 blocks after the first one read were fetched ahead, in the background.
        let first = read.block(for: 450)!
        let expected = min(read.blocks.count, first + 5) - first
        let deadline = ContinuousClock.now + .seconds(5)
        while reader.cache.statistics.entries < expected, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(reader.cache.statistics.entries == expected)
        let again = try await reader.read("kafka/t/0/00000000000000000000", index: read, from: 450, maxBytes: 200 << 10)
        #expect(again == from450)
        let stats = reader.cache.statistics
        #expect(stats.hits >= stats.misses && stats.misses > 0)
        // The same object with one byte flipped in block 1: an error naming it, not data.
        var damaged = bytes
        damaged[index.blocks[1].position + 10] ^= 0x01
        try await store.put("kafka/t/0/damaged", damaged)
        let coldReader = TierReader(store: store, cache: TierBlockCache(capacityBytes: 4 << 20))
        await #expect(throws: ObjectStoreError.corrupt("kafka/t/0/damaged: block 1 checksum mismatch")) {
            _ = try await coldReader.read("kafka/t/0/damaged", index: read, from: index.blocks[1].firstOffset, maxBytes: 1)
        }
        await transfer.shutdown()
    }
}
