import ArgumentParser

/// Measures the Strata journal against the limits of the disk under it: the raw disk limit,
/// append and read throughput and latency, and a writer for the crash test.
@main
struct StorageBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage-bench",
        abstract: "Benchmarks the Strata journal against the limits of the disk under it.",
        subcommands: [
            LimitCommand.self, AppendCommand.self, ReadCommand.self, MQTTCommand.self, KafkaCommand.self, AMQPCommand.self,
            TierCommand.self, SoakCommand.self, CrashWriterCommand.self, CrashSimCommand.self,
        ])
}
