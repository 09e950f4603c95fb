import ArgumentParser
import Foundation
import StrataObjects

/// `strata tier status`: the object tier of a node, per shard, from its HTTP admin API.
struct TierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tier", abstract: "The object tier.", subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Per shard: bytes in memory, on local disk and in the object tier; offload lag; last upload error.")

        @Option(help: "The journal-node's HTTP address, HOST:PORT.")
        var http: String = "127.0.0.1:7451"

        @Flag(help: "Print the node's JSON as it is.")
        var json = false

        func run() async throws {
            let transfer = CurlTransfer(threads: 1, timeoutSeconds: 10)
            let response: HTTPResponse
            do {
                // A node with an admin token wants it (STRATA_ADMIN_TOKEN).
                let token = ProcessInfo.processInfo.environment["STRATA_ADMIN_TOKEN"]
                response = try await transfer.perform(
                    HTTPRequest(
                        method: "GET", url: "http://\(http)/admin/tier",
                        headers: token.map { [("Authorization", "Bearer \($0)")] } ?? []))
            } catch {
                await transfer.shutdown()
                let reason = if case ObjectStoreError.transport(let detail) = error { detail } else { "\(error)" }
                FileHandle.standardError.write(
                    Data("strata: cannot reach the node's HTTP at \(http): \(reason)\n".utf8))
                throw ExitCode(3)
            }
            await transfer.shutdown()
            guard response.status == 200 else {
                let message = (try? JSONDecoder().decode([String: String].self, from: Data(response.body)))?["error"]
                FileHandle.standardError.write(Data("strata: \(message ?? "HTTP \(response.status)")\n".utf8))
                throw ExitCode(1)
            }
            if json {
                Output.write(String(decoding: response.body, as: UTF8.self))
                return
            }
            let status = try JSONDecoder().decode(TierOffloader.Status.self, from: Data(response.body))
            var text = "destination: \(status.destination)\n"
            text += "uploaded: \(status.uploadedObjects) objects, \(status.uploadedBytes) bytes"
            text += " (\(status.uploadedBatchBytes) bytes of batches); failed passes: \(status.uploadFailures)\n"
            text += "last error: \(status.lastError ?? "none")\n"
            text += "shard\tmemory_bytes\tlocal_bytes\ttier_bytes\ttier_objects\tlag_bytes\tlag_seconds\tlast_error\n"
            for shard in status.shards {
                text +=
                    "\(shard.name)\t\(shard.memoryBytes)\t\(shard.localBytes)\t\(shard.tierBytes)\t\(shard.tierObjects)"
                text +=
                    "\t\(shard.offloadLagBytes)\t\(String(format: "%.1f", shard.offloadLagSeconds))\t\(shard.lastError ?? "-")\n"
            }
            Output.write(text)
        }
    }
}
