import ArgumentParser
import NIOCore
import StrataClient
import StrataJournal

/// Prints each record's value, one per line, from `--from` on; `--follow` keeps going as
/// records are appended (pushed by the node, no polling).
struct ConsumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume", abstract: "Prints record values from an offset on, one per line.")
    @OptionGroup var node: NodeOptions
    @Argument(help: "Shard name.") var name: String
    @Option(help: "First offset to print.") var from: UInt64 = 0
    @Option(help: "Stop after this many records.") var count: Int?
    @Flag(help: "Wait for new records instead of stopping at the end.") var follow = false
    @Flag(help: "Prefix each value with its offset and a tab.") var offsets = false

    func run() async throws {
        if let count, count < 0 { throw ValidationError("--count must not be negative") }
        try await reportingFailures {
            try await node.withClient { client in
                var printed = 0
                let limit = count ?? .max
                if limit == 0 { return }
                if follow {
                    for try await result in try await client.subscribe(shard: name, from: from) {
                        if print(result, printed: &printed, limit: limit) { return }
                    }
                } else {
                    var next = from
                    while true {
                        let result = try await client.read(shard: name, from: next, maxBytes: 1 << 20)
                        if result.batches.isEmpty { return }
                        if print(result, printed: &printed, limit: limit) { return }
                        next = result.nextOffset
                    }
                }
            }
        }
    }

    /// Prints the records at or after `from`; true once `limit` records were printed.
    private func print(_ result: ReadResult, printed: inout Int, limit: Int) -> Bool {
        var text = ""
        defer { Output.write(text) }
        for batch in result.batches {
            let records: [Record]
            do {
                records = try RecordBatch.decode(batch)
            } catch {
                text +=
                    "# batch at \(RecordBatch.Header.peek(batch, at: batch.readerIndex)?.baseOffset ?? -1): \(error.message)\n"
                continue
            }
            for record in records where record.offset! >= from {
                let value = String(decoding: record.value ?? [], as: UTF8.self)
                text += offsets ? "\(record.offset!)\t\(value)\n" : "\(value)\n"
                printed += 1
                if printed >= limit { return true }
            }
        }
        return false
    }
}
