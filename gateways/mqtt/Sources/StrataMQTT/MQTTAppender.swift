import NIOCore
import StrataClient
import StrataJournal
import Synchronization

/// Coalesces the publishes bound for one bucket shard into RecordBatches: while one append is
/// in flight, everything submitted meanwhile waits and goes out as the next batch, so small
/// messages share batch headers and journal round trips. FIFO per bucket, which keeps
/// per-topic order.
final class MQTTAppender: Sendable {
    typealias Completion = @Sendable (Result<Void, any Error>) -> Void

    private let shard: String
    private let journal: any JournalClient
    private let queue = Mutex<[(MQTTMessage, Completion)]>([])
    private let nudges: AsyncStream<Void>
    private let nudge: AsyncStream<Void>.Continuation
    /// Most messages and bytes in one batch.
    static let maxMessages = 1000
    static let maxBytes = 1 << 20

    init(shard: String, journal: any JournalClient) {
        self.shard = shard
        self.journal = journal
        (nudges, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a message; `completion` runs once it is in the journal (and, when retained,
    /// in the retained set) or failed.
    func submit(_ message: MQTTMessage, completion: @escaping Completion) {
        queue.withLock { $0.append((message, completion)) }
        nudge.yield()
    }

    func finish() { nudge.finish() }

    /// The appender's loop; runs as a child task of the gateway until `finish()`.
    func run() async {
        for await _ in nudges {
            while true {
                let batch = queue.withLock { queue -> [(MQTTMessage, Completion)] in
                    var taken = 0
                    var bytes = 0
                    while taken < queue.count, taken < Self.maxMessages, bytes < Self.maxBytes {
                        bytes += queue[taken].0.payload.readableBytes + queue[taken].0.topic.utf8.count + 64
                        taken += 1
                    }
                    defer { queue.removeFirst(taken) }
                    return Array(queue.prefix(taken))
                }
                if batch.isEmpty { break }
                await send(batch)
            }
        }
        // Shutting down: nothing queued is left without an answer.
        let left = queue.withLock { queue in
            defer { queue.removeAll() }
            return queue
        }
        for (_, completion) in left { completion(.failure(JournalError(.closed, "the gateway is shutting down"))) }
    }

    private func send(_ batch: [(MQTTMessage, Completion)]) async {
        do {
            _ = try await journal.append(shard: shard, batch: RecordBatch.encode(batch.map(\.0.record)))
            for (message, _) in batch where message.retain {
                if message.payload.readableBytes == 0 {
                    try await journal.delete(namespace: MQTTGateway.retainedNamespace, key: Array(message.topic.utf8))
                } else {
                    try await journal.put(
                        namespace: MQTTGateway.retainedNamespace, key: Array(message.topic.utf8),
                        value: message.retainedValue)
                }
            }
            for (_, completion) in batch { completion(.success(())) }
        } catch {
            for (_, completion) in batch { completion(.failure(error)) }
        }
    }
}
