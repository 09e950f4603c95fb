import ArgumentParser
import StrataAuth

/// `strata scram-user NAME`: prints a users-file line (SCRAM-SHA-256 keys, random salt) for a
/// password read from standard input: the Kafka gateway's `--users` file, the MQTT gateway's
/// `--scram-users` file.
struct SCRAMUserCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scram-user",
        abstract: "Prints a SCRAM users-file line for NAME with the password read from stdin.")

    @Argument(help: "The user name.")
    var name: String

    @Option(help: "PBKDF2 iterations (at least 4096).")
    var iterations: Int = 8192

    func run() throws {
        guard !name.isEmpty, !name.contains(":") else { throw ValidationError("a user name is non-empty without ':'") }
        guard iterations >= 4096 else { throw ValidationError("--iterations must be at least 4096") }
        guard let password = readLine(strippingNewline: true), !password.isEmpty else {
            throw ValidationError("no password on standard input")
        }
        print(SCRAMUsers.line(user: name, password: password, iterations: iterations))
    }
}
