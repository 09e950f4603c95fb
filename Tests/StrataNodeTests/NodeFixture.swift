import Logging
import NIOCore
import StrataClient
import StrataJournal
import StrataNode
import StrataTestSupport

import Testing

enum ClientKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inProcess, remote
    var testDescription: String { rawValue }
}

/// Runs `body` with a fresh journal behind the chosen kind of client. For `.remote` a
/// JournalServer serves the journal on a free loopback port in this process.
func withJournalClient(
    _ kind: ClientKind, _ body: (any JournalClient, Journal) async throws -> Void
) async throws {
    try await withTemporaryDirectory { dir in
        var configuration = JournalConfiguration(dataDirectory: dir)
        configuration.backgroundMaintenance = false
        let journal = try Journal(configuration: configuration, logger: quietLogger)
        defer { journal.close() }
        switch kind {
        case .inProcess:
            try await body(InProcessJournalClient(journal: journal), journal)
        case .remote:
            try await withJournalServer(journal) { port in
                try await withRemoteClient(port: port) { try await body($0, journal) }
            }
        }
    }
}

/// Serves `journal` on a free loopback port for the duration of `body`.
func withJournalServer(
    _ journal: Journal, configure: (inout JournalServer.Configuration) -> Void = { _ in },
    _ body: (Int) async throws -> Void
) async throws {
    let (bound, boundContinuation) = AsyncStream<Int>.makeStream()
    var configuration = JournalServer.Configuration(host: "127.0.0.1", port: 0)
    configure(&configuration)
    let server = JournalServer(
        configuration: configuration, journal: journal, metrics: NodeMetrics(), logger: quietLogger,
        onBound: { boundContinuation.yield($0.port ?? 0) })
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            do {
                try await server.run()
            } catch {
                boundContinuation.finish()
                throw error
            }
        }
        var ports = bound.makeAsyncIterator()
        guard let port = await ports.next() else { return }
        do {
            try await body(port)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
    }
}

/// A remote client to the node on `port`, closed when `body` returns or throws.
func withRemoteClient(port: Int, _ body: (RemoteJournalClient) async throws -> Void) async throws {
    let client = RemoteJournalClient(configuration: .init(host: "127.0.0.1", port: port), logger: quietLogger)
    do {
        try await body(client)
    } catch {
        await client.close()
        throw error
    }
    await client.close()
}
