import ArgumentParser
import Foundation
import NIOCore
import StrataClient
import StrataJournal
import Synchronization

/// Each line of stdin becomes one record. Lines that arrive together go out as one batch;
/// each acknowledged record's offset is printed, one per line, in input order.
struct ProduceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce", abstract: "Appends each line of stdin as a record; prints each record's offset.")
    @OptionGroup var node: NodeOptions
    @Argument(help: "Shard name.") var name: String
    @Option(help: "Most records per batch.") var maxBatch = 500

    func run() async throws {
        let shard = name
        let maxBatch = max(1, self.maxBatch)
        try await reportingFailures {
            try await node.withClient { client in
                _ = try await client.describeShard(shard)
                let buffered = LineBuffer()
                let (arrivals, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        // Blocking stdin reads on their own thread, off the cooperative pool.
                        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                            let reader = Thread {
                                while let line = readLine(strippingNewline: true) {
                                    buffered.lines.withLock { $0.append(Array(line.utf8)) }
                                    nudge.yield()
                                }
                                nudge.finish()
                                done.resume()
                            }
                            reader.start()
                        }
                    }
                    group.addTask {
                        // Every line that arrived while the previous batch was in flight joins the next one.
                        for await _ in arrivals {
                            try await Self.send(buffered, maxBatch: maxBatch, shard: shard, client: client)
                        }
                        try await Self.send(buffered, maxBatch: maxBatch, shard: shard, client: client)
                    }
                    try await group.waitForAll()
                }
            }
        }
    }

    private static func send(
        _ buffered: LineBuffer, maxBatch: Int, shard: String, client: RemoteJournalClient
    ) async throws {
        while true {
            let lines = buffered.lines.withLock { lines -> [[UInt8]] in
                let taken = Array(lines.prefix(maxBatch))
                lines.removeFirst(taken.count)
                return taken
            }
            if lines.isEmpty { return }
            let now = WallClock.milliseconds()
            let batch = RecordBatch.encode(lines.map { Record(timestamp: now, value: $0) })
            let result = try await client.append(shard: shard, batch: batch)
            Output.write((result.baseOffset...result.lastOffset).map { "\($0)\n" }.joined())
        }
    }
}

/// Lines read from stdin, waiting to be sent.
final class LineBuffer: Sendable {
    let lines = Mutex<[[UInt8]]>([])
}
