import Foundation
import NIOCore
import StrataClient
import StrataJournal
import StrataTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// journal-node as a real process, driven by the strata CLI, the remote client and HTTP.
@Suite(.serialized) struct NodeProcessTests {
    @Test func cliAgainstARunningNode() async throws {
        try await withTemporaryDirectory { dir in
            let node = try await NodeProcess(dataDirectory: dir + "/data")
            defer { Task { await node.stop() } }
            let n = ["--node", node.node]

            var r = try await strata(n + ["shard", "create", "demo"])
            #expect(r.status == 0 && r.out.contains("created demo"))
            r = try await strata(n + ["shard", "create", "demo"])
            #expect(r.status == 1 && r.err.contains("exists already"))
            r = try await strata(n + ["shard", "create", "fast", "--durability", "async"])
            #expect(r.status == 0)

            r = try await strata(n + ["produce", "demo"], stdin: "alpha\nbeta\ngamma\n")
            #expect(r.status == 0)
            #expect(r.out == "0\n1\n2\n")
            r = try await strata(n + ["produce", "demo"], stdin: "delta\n")
            #expect(r.out == "3\n")

            r = try await strata(n + ["consume", "demo", "--from", "0"])
            #expect(r.status == 0 && r.out == "alpha\nbeta\ngamma\ndelta\n")
            r = try await strata(n + ["consume", "demo", "--from", "1", "--count", "2", "--offsets"])
            #expect(r.out == "1\tbeta\n2\tgamma\n")

            r = try await strata(n + ["shard", "list"])
            #expect(r.out.contains("demo\t0\t4\t") && r.out.contains("fast\t0\t0\t0\tasync"))
            r = try await strata(n + ["shard", "describe", "demo"])
            #expect(r.out.contains("end_offset: 4"))
            r = try await strata(n + ["status"])
            #expect(r.status == 0 && r.out.contains("shards: 2"))

            r = try await strata(n + ["consume", "missing"])
            #expect(r.status == 4 && r.err.contains("no shard named missing"))
            r = try await strata(n + ["shard", "delete", "fast"])
            #expect(r.status == 0)
            r = try await strata(["--node", "127.0.0.1:1", "--timeout", "1", "status"])
            #expect(r.status == 3 && r.err.contains("cannot reach"))
            r = try await strata(["--node", "nonsense", "status"])
            #expect(r.status == 64)
            r = try await strata(n + ["consume", "demo", "--count", "-1"])
            #expect(r.status == 64)

            // HTTP: health, Prometheus metrics, admin JSON.
            let health = try await httpGet(port: node.httpPort, path: "/health")
            #expect(health.contains("\"ok\""))
            let metrics = try await httpGet(port: node.httpPort, path: "/metrics")
            #expect(metrics.contains("strata_journal_wal_syncs"))
            #expect(metrics.contains("strata_journal_wal_sync_seconds_bucket{le=\"+Inf\"}"))
            #expect(metrics.contains("strata_journal_segment_bytes"))
            #expect(metrics.contains("strata_shard_end_offset{shard=\"demo\"} 4"))
            let shards = try await httpGet(port: node.httpPort, path: "/admin/shards")
            #expect(shards.contains("\"name\" : \"demo\""))
            let segments = try await httpGet(port: node.httpPort, path: "/admin/segments")
            #expect(segments.contains("\"active\" : true"))
        }
    }

    /// `strata consume --follow` in one process sees a record produced by another, pushed by the node.
    @Test func followSeesNewRecords() async throws {
        try await withTemporaryDirectory { dir in
            let node = try await NodeProcess(dataDirectory: dir + "/data")
            defer { Task { await node.stop() } }
            let n = ["--node", node.node]
            _ = try await strata(n + ["shard", "create", "live"])

            let follower = Process()
            follower.executableURL = productsDirectory().appendingPathComponent("strata")
            follower.arguments = n + ["consume", "live", "--follow", "--count", "2", "--offsets"]
            let out = Pipe()
            follower.standardOutput = out
            try follower.run()
            try await Task.sleep(for: .milliseconds(300))
            _ = try await strata(n + ["produce", "live"], stdin: "hello\n")
            _ = try await strata(n + ["produce", "live"], stdin: "world\n")
            let text = await readToEnd(out.fileHandleForReading)
            follower.waitUntilExit()
            #expect(follower.terminationStatus == 0)
            #expect(text == "0\thello\n1\tworld\n")
        }
    }

    /// SIGKILL while a remote client appends under fsync; after a restart every acknowledged
    /// batch is there with its bytes, several times over.
    @Test func acknowledgedAppendsSurviveNodeSIGKILL() async throws {
        try await withTemporaryDirectory { dir in
            let data = dir + "/data"
            var acknowledged: [String: [(UInt64, String)]] = [:]
            for round in 0..<3 {
                let node = try await NodeProcess(dataDirectory: data)
                let client = RemoteJournalClient(
                    configuration: .init(host: "127.0.0.1", port: node.journalPort), logger: quietLogger)
                if round == 0 {
                    for s in 0..<4 { _ = try await client.createShard("k/\(s)") }
                }
                // Verify everything acknowledged so far.
                for (shard, acks) in acknowledged {
                    for (offset, value) in acks {
                        let read = try await client.read(shard: shard, from: offset, maxBytes: 1)
                        #expect(
                            try values(read.batches, from: offset).first == value, "round \(round): \(shard)@\(offset)")
                    }
                }
                let acked = Acknowledgements()
                let killer = Task {
                    try await Task.sleep(for: .milliseconds(Int.random(in: 300...900)))
                    node.kill(SIGKILL)
                }
                await withTaskGroup(of: Void.self) { group in
                    for writer in 0..<4 {
                        group.addTask {
                            var n = 0
                            while true {
                                let value = "r\(round)-w\(writer)-\(n)"
                                guard
                                    let result = try? await client.append(
                                        shard: "k/\(writer)", batch: makeBatch(value, count: 1))
                                else { return }
                                acked.list.withLock { $0.append(("k/\(writer)", result.baseOffset, "\(value)-0")) }
                                n += 1
                            }
                        }
                    }
                }
                try await killer.value
                _ = try await node.waitForExit()
                await client.close()
                for (shard, offset, value) in acked.list.withLock({ $0 }) {
                    acknowledged[shard, default: []].append((offset, value))
                }
            }
            // Final check on a clean node.
            let node = try await NodeProcess(dataDirectory: data)
            defer { Task { await node.stop() } }
            let client = RemoteJournalClient(
                configuration: .init(host: "127.0.0.1", port: node.journalPort), logger: quietLogger)
            var total = 0
            for (shard, acks) in acknowledged {
                let info = try await client.describeShard(shard)
                #expect(info.endOffset >= (acks.map(\.0).max() ?? 0) + 1)
                for (offset, value) in acks {
                    let read = try await client.read(shard: shard, from: offset, maxBytes: 1)
                    #expect(try values(read.batches, from: offset).first == value)
                    total += 1
                }
            }
            await client.close()
            #expect(total > 20, "too few acknowledged appends to mean anything")
        }
    }

    /// SIGTERM: the node stops accepting, finishes, syncs, exits 0; the data is there after a restart.
    @Test func sigtermShutsDownGracefully() async throws {
        try await withTemporaryDirectory { dir in
            let data = dir + "/data"
            let node = try await NodeProcess(dataDirectory: data)
            _ = try await strata(["--node", node.node, "shard", "create", "t", "--durability", "async"])
            _ = try await strata(["--node", node.node, "produce", "t"], stdin: "one\ntwo\n")
            node.kill(SIGTERM)
            let (reason, status) = try await node.waitForExit()
            #expect(reason == .exit && status == 0)
            let again = try await NodeProcess(dataDirectory: data)
            defer { Task { await again.stop() } }
            let r = try await strata(["--node", again.node, "consume", "t"])
            #expect(r.out == "one\ntwo\n")
        }
    }
}

/// Appends acknowledged by the node, collected from several writer tasks.
final class Acknowledgements: Sendable {
    let list = Mutex<[(String, UInt64, String)]>([])
}

/// GET on the loopback HTTP listener with curl; returns the body.
func httpGet(port: Int, path: String) async throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-sS", "--max-time", "10", "http://127.0.0.1:\(port)\(path)"]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let body = await readToEnd(out.fileHandleForReading)
    process.waitUntilExit()
    return body
}

/// A queue served to two clients (two gateway processes) through the journal protocol, with
/// the node killed under them: no message is lost, and none whose ack was answered comes back.
@Suite(.serialized) struct QueueProcessTests {
    @Test func twoClientsShareAQueueAcrossSIGKILL() async throws {
        try await withTemporaryDirectory { dir in
            let data = dir + "/data"
            let total = 3_000
            let acknowledged = AcknowledgementCounts()
            for round in 0..<3 {
                let node = try await NodeProcess(dataDirectory: data)
                let clients = (0..<2).map { _ in
                    RemoteJournalClient(
                        configuration: .init(host: "127.0.0.1", port: node.journalPort), logger: quietLogger)
                }
                if round == 0 {
                    _ = try await clients[0].createShard("orders/0")
                    _ = try await clients[0].createShard("orders/1")
                    _ = try await clients[0].declareQueue(
                        "workers",
                        definition: QueueDefinition(sources: [.init(shard: "orders/0"), .init(shard: "orders/1")]))
                    for n in stride(from: 0, to: total, by: 10) {
                        _ = try await clients[0].append(
                            shard: "orders/\(n / 10 % 2)", batch: makeBatch("m\(n)", count: 10))
                    }
                }
                let killer = Task {
                    try await Task.sleep(for: .milliseconds(Int.random(in: 200...600)))
                    if round < 2 { node.kill(SIGKILL) }
                }
                await withTaskGroup(of: Void.self) { group in
                    for (index, client) in clients.enumerated() {
                        group.addTask {
                            while true {
                                guard
                                    let got = try? await client.receive(
                                        queue: "workers", consumer: "gateway-\(index)", max: 5, maxBytes: 1 << 20,
                                        visibilityMilliseconds: 2_000, resume: false,
                                        wait: .milliseconds(round < 2 ? 500 : 3_000)),
                                    !got.isEmpty
                                else { return }
                                let values = got.map { String(decoding: $0.record.value!, as: UTF8.self) }
                                guard
                                    (try? await client.settle(
                                        queue: "workers", consumer: "gateway-\(index)", receipts: got.map(\.receipt),
                                        as: .ack))
                                        != nil
                                else {
                                    // The node may have stored the ack and died before answering.
                                    acknowledged.uncertain.withLock { $0.formUnion(values) }
                                    return
                                }
                                acknowledged.counts.withLock { seen in
                                    for value in values { seen[value, default: 0] += 1 }
                                }
                            }
                        }
                    }
                }
                killer.cancel()
                if round < 2 { _ = try await node.waitForExit() } else { await node.stop() }
                for client in clients { await client.close() }
            }
            let seen = acknowledged.counts.withLock { $0 }
            let expected = Set(stride(from: 0, to: total, by: 10).flatMap { n in (0..<10).map { "m\(n)-\($0)" } })
            let missing = expected.subtracting(seen.keys).subtracting(acknowledged.uncertain.withLock { $0 })
            #expect(
                missing.isEmpty,
                "\(missing.count) of \(expected.count) never acknowledged: \(missing.sorted().prefix(10))")
            #expect(
                seen.filter { $0.value > 1 }.isEmpty,
                "acknowledged twice: \(seen.filter { $0.value > 1 }.keys.sorted().prefix(10))")
        }
    }
}

private final class AcknowledgementCounts: Sendable {
    let counts = Mutex<[String: Int]>([:])
    /// Values of settles that failed without an answer.
    let uncertain = Mutex<Set<String>>([])
}
