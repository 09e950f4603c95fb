import ArgumentParser
import Foundation
import Logging
import StrataJournal

/// `storage-bench crash-sim`: power cuts at random points of recorded journal workloads (see
/// `PowerCut` in StrataJournal), every acknowledged record checked on the disk image each cut
/// leaves. Prints points tried, acknowledged records checked and lost (which must be 0).
struct CrashSimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-sim",
        abstract:
            "Simulates power cuts (unsynced writes dropped, torn or reordered) and checks every acknowledged record.")

    @Option(help: "Crash points to try.")
    var points = 1000

    @Option(help: "Crash points per recorded workload.")
    var pointsPerWorkload = 250

    @Option(help: "Random seed (default: random; printed, so a failure can be run again).")
    var seed: UInt64?

    @Option(help: "Scratch directory (default: a new one under /tmp, removed afterwards).")
    var dataDir: String?

    @Flag(help: "Print one JSON object: points, records_checked, lost, workloads, seconds, seed.")
    var json = false

    func validate() throws {
        guard points >= 1, pointsPerWorkload >= 1 else {
            throw ValidationError("--points and --points-per-workload are at least 1")
        }
    }

    func run() async throws {
        let directory = try BenchDirectory(requested: dataDir)
        defer { directory.removeIfTemporary() }
        var logger = Logger(label: "strata.bench") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = .critical
        let seed = self.seed ?? UInt64.random(in: 0...UInt64.max)
        let started = ContinuousClock.now
        let report = try await PowerCut.simulate(
            points: points, pointsPerWorkload: pointsPerWorkload, seed: seed, directory: directory.path, logger: logger)
        let seconds = (ContinuousClock.now - started).seconds
        if json {
            var line = JSONLine()
            line.add("points", report.points)
            line.add("records_checked", report.recordsChecked)
            line.add("lost", report.lost)
            line.add("workloads", report.workloads)
            line.add("seconds", seconds)
            line.add("seed", String(seed))
            Console.out(line.text + "\n")
        } else {
            Console.out(
                "crash points \(report.points) (\(report.workloads) workloads, seed \(seed), \(String(format: "%.1f", seconds)) s): "
                    + "acknowledged records checked \(report.recordsChecked), lost \(report.lost)\n")
        }
        for failure in report.failures { Console.error(failure + "\n") }
        if report.lost > 0 || !report.failures.isEmpty { throw ExitCode(1) }
    }
}
