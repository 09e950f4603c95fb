import Foundation
import StrataTestSupport
import StrataWire
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `journal-node` child process on free loopback ports, stopped when the test is done.
final class NodeProcess: Sendable {
    let process: Process
    let journalPort: Int
    let httpPort: Int
    private let output: Output

    final class Output: Sendable {
        let text = Mutex("")
    }

    static var binaries: URL { productsDirectory() }

    /// Starts the node on `dataDirectory` and waits until both listeners are announced.
    init(dataDirectory: String, extraArguments: [String] = []) async throws {
        let executable = Self.binaries.appendingPathComponent("journal-node")
        try #require(FileManager.default.isExecutableFile(atPath: executable.path), "build journal-node first")
        let process = Process()
        process.executableURL = executable
        process.arguments =
            ["--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warning"]
            + extraArguments
        let pipe = Pipe()
        let output = Output()
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.text.withLock { $0 += String(decoding: data, as: UTF8.self) }
        }
        process.standardOutput = pipe
        process.standardError = FileHandle.standardError
        try process.run()
        let deadline = ContinuousClock.now + .seconds(60)
        var ports: (Int, Int)?
        while ports == nil {
            try #require(process.isRunning, "journal-node exited at start: \(output.text.withLock { $0 })")
            try #require(ContinuousClock.now < deadline, "journal-node never announced its listeners")
            try await Task.sleep(for: .milliseconds(20))
            ports = output.text.withLock { Self.ports(in: $0) }
        }
        self.process = process
        self.output = output
        (journalPort, httpPort) = ports!
    }

    private static func ports(in text: String) -> (Int, Int)? {
        var journal: Int?
        var http: Int?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let port = (try? HostPort(parsing: String(parts[1])))?.port else { continue }
            if parts[0] == "journal" { journal = port }
            if parts[0] == "http" { http = port }
        }
        guard let journal, let http else { return nil }
        return (journal, http)
    }

    var node: String { "127.0.0.1:\(journalPort)" }

    func kill(_ signal: Int32) {
        Glibc.kill(process.processIdentifier, signal)
    }

    /// Waits for the process to end and returns how it ended.
    func waitForExit(timeout: Duration = .seconds(30)) async throws -> (Process.TerminationReason, Int32) {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            try #require(ContinuousClock.now < deadline, "journal-node did not exit")
            try await Task.sleep(for: .milliseconds(20))
        }
        return (process.terminationReason, process.terminationStatus)
    }

    func stop() async {
        if process.isRunning {
            kill(SIGKILL)
            _ = try? await waitForExit()
        }
    }
}

/// Runs the `strata` CLI; returns exit status, stdout and stderr.
func strata(_ arguments: [String], stdin: String? = nil) async throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent("strata")
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read both pipes fully before waiting, so a full pipe never blocks the child.
    async let outText = readToEnd(out.fileHandleForReading)
    async let errText = readToEnd(err.fileHandleForReading)
    let (o, e) = await (outText, errText)
    process.waitUntilExit()
    return (process.terminationStatus, o, e)
}

/// Reads a pipe to its end on a thread of its own (blocking reads stay off the task pool).
func readToEnd(_ handle: FileHandle) async -> String {
    await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
        Thread { continuation.resume(returning: String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)) }.start()
    }
}
