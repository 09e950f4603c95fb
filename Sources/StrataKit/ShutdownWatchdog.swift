import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Bounds a server process's shutdown (journal-node and the standalone gateways alike): once graceful shutdown begins, a thread waits `limit` and, if the
/// process is still alive then, logs that shutdown did not finish and exits it. It is the last
/// service of the group, so it is the first to hear of the shutdown. (The group itself cancels
/// services that have not stopped after `NodeShutdown.gracefulLimit`.)
public struct ShutdownWatchdog: Service {
    let limit: Duration
    let logger: Logger

    public init(limit: Duration = NodeShutdown.exitLimit, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    public func run() async throws {
        try? await gracefulShutdown()
        let limit = self.limit
        let logger = self.logger
        let thread = Thread {
            Thread.sleep(forTimeInterval: limit.seconds)
            logger.critical(
                "shutdown did not finish: exiting anyway",
                metadata: ["node.shutdown_limit_seconds": "\(limit.seconds)"])
            _exit(70)
        }
        thread.name = "strata-shutdown-watchdog"
        thread.start()
    }
}

/// How long a server process's shutdown may take.
public enum NodeShutdown {
    /// Services still running this long after SIGTERM are cancelled (and logged by the group).
    public static let gracefulLimit: Duration = .seconds(10)
    /// The process exits this long after SIGTERM whatever is still running.
    public static let exitLimit: Duration = .seconds(15)

    /// The one way a Strata server runs its services: SIGTERM and SIGINT start a graceful
    /// shutdown, services still running after `gracefulLimit` are cancelled, and the process
    /// exits after `exitLimit` whatever is left (`ShutdownWatchdog`, the last service).
    public static func run(_ services: [ServiceGroupConfiguration.ServiceConfiguration], logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(
            services: services + [.init(service: ShutdownWatchdog(logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = gracefulLimit
        try await ServiceGroup(configuration: configuration).run()
    }
}
