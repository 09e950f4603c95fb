import ArgumentParser
import Foundation
import Logging
import NIOCore
import StrataClient
import StrataJournal
import StrataTopics
import StrataWire

/// `strata`: the admin and data CLI for a journal-node.
@main
struct StrataCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "Talks to a Strata journal-node.",
        discussion: """
            Exit codes: 0 success, 1 the node refused the request, 3 the node cannot be reached, \
            4 unknown shard, topic or queue, 64 bad arguments.
            """,
        subcommands: [
            ShardCommand.self, TopicCommand.self, QueueCommand.self, ProduceCommand.self, ConsumeCommand.self,
            StatusCommand.self,
            SCRAMUserCommand.self,
            TierCommand.self,
        ])

    /// `strata --node HOST:PORT shard create NAME`: the connection options may come before the
    /// subcommand; they are moved behind it, where every subcommand reads them.
    static func main() async {
        await main(hoistingConnectionOptions(Array(CommandLine.arguments.dropFirst())))
    }

    static func hoistingConnectionOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first, first.hasPrefix("--") {
            let name = first.split(separator: "=", maxSplits: 1)[0]
            guard ["--node", "--timeout", "--user", "--password", "--tls-ca", "--tls-cert", "--tls-key"].contains(name)
            else { break }
            leading.append(first)
            rest = rest.dropFirst()
            if !first.contains("="), let value = rest.first {
                leading.append(value)
                rest = rest.dropFirst()
            }
        }
        guard !leading.isEmpty else { return arguments }
        if let separator = rest.firstIndex(of: "--") {
            return Array(rest[..<separator]) + leading + Array(rest[separator...])
        }
        return Array(rest) + leading
    }
}

/// The `--node` option every command takes, and the client it makes.
struct NodeOptions: ParsableArguments {
    @Option(help: "The journal-node's journal protocol address, HOST:PORT.")
    var node: String = "127.0.0.1:7450"

    @Option(help: "Seconds to wait for each request (and for the node to be reachable).")
    var timeout: Double = 10

    @Option(help: "SCRAM-SHA-256 user for a node that requires authentication (or STRATA_USER).")
    var user: String?

    @Option(help: "Its password (or STRATA_PASSWORD, which keeps it out of the process list).")
    var password: String?

    @Option(help: "CA (PEM) of the node's TLS certificate: connect with TLS (or STRATA_TLS_CA).")
    var tlsCa: String?

    @Option(help: "Client certificate (PEM) for a node that verifies clients (or STRATA_TLS_CERT).")
    var tlsCert: String?

    @Option(help: "Client certificate key (PEM) (or STRATA_TLS_KEY).")
    var tlsKey: String?

    func withClient<T>(_ body: (RemoteJournalClient) async throws -> T) async throws -> T {
        guard let address = try? HostPort(parsing: node) else {
            throw ValidationError("--node must be HOST:PORT, got \(node)")
        }
        var configuration = RemoteJournalClient.Configuration(host: address.host, port: address.port)
        configuration.requestTimeout = .milliseconds(Int64(timeout * 1000))
        configuration.connectTimeout = .milliseconds(Int64(timeout * 1000))
        configuration.clientName = "strata-cli"
        configuration.applyEnvironment()
        if let user { configuration.user = user }
        if let password { configuration.password = password }
        if let tlsCa { configuration.tlsCAFile = tlsCa }
        if let tlsCert { configuration.tlsCertificateFile = tlsCert }
        if let tlsKey { configuration.tlsKeyFile = tlsKey }
        var logger = Logger(label: "strata.cli")
        logger.logLevel = .critical
        let client = RemoteJournalClient(configuration: configuration, logger: logger)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch let error as JournalError {
            await client.close()
            throw CLIFailure(error)
        } catch {
            await client.close()
            throw error
        }
    }
}

/// A journal error as the CLI reports it: the message on stderr and an exit code by kind.
struct CLIFailure: Error, CustomStringConvertible {
    let error: JournalError
    init(_ error: JournalError) { self.error = error }
    var description: String { error.message }
}

extension AsyncParsableCommand {
    /// Runs `body`, turning journal errors into `strata: message` and their exit codes.
    func reportingFailures(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let failure as CLIFailure {
            FileHandle.standardError.write(Data("strata: \(failure.error.message)\n".utf8))
            switch failure.error.code {
            case .unavailable, .timeout: throw ExitCode(3)
            case .unknownShard, .unknownQueue: throw ExitCode(4)
            default: throw ExitCode(1)
            }
        } catch let refusal as TopicError {
            FileHandle.standardError.write(Data("strata: \(refusal.message)\n".utf8))
            throw ExitCode(refusal.code == .unknown ? 4 : 1)
        }
    }
}

/// Standard output through one buffered writer, flushed at the end of each burst.
enum Output {
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
