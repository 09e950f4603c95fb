import Logging
import ServiceLifecycle
import StrataJournal

/// Keeps the journal open for the life of the node and closes it (queue drained, WAL synced,
/// index checkpointed) on graceful shutdown, after the services that use it have stopped.
public struct JournalService: Service {
    public let journal: Journal

    public init(journal: Journal) {
        self.journal = journal
    }

    public func run() async throws {
        try? await gracefulShutdown()
        journal.close()
    }
}
