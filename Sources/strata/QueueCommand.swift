import ArgumentParser
import StrataClient
import StrataJournal

struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Lists, describes and deletes queues (docs/queues.md): MQTT shared subscriptions and the like.",
        subcommands: [List.self, Describe.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lists queues: name, depth, in flight, waiting, delayed, dead-lettered, lost to retention.")
        @OptionGroup var node: NodeOptions

        func run() async throws {
            try await reportingFailures {
                for queue in try await node.withClient({ try await $0.describeQueues(nil) }) {
                    Output.write(
                        "\(queue.name)\t\(queue.depth)\t\(queue.inFlight)\t\(queue.waiting)\t\(queue.delayed)\t\(queue.deadLettered)\t\(queue.lostToRetention)\n"
                    )
                }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shows one queue and where it is in each source.")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Queue name, e.g. mqtt/default/$share/workers/jobs/#.") var name: String

        func run() async throws {
            try await reportingFailures {
                guard let queue = try await node.withClient({ try await $0.describeQueues(name) }).first else {
                    throw ExitCode(4)
                }
                var text = """
                    name: \(queue.name)
                    depth: \(queue.depth)
                    in_flight: \(queue.inFlight)
                    waiting: \(queue.waiting)
                    delayed: \(queue.delayed)
                    dead_lettered: \(queue.deadLettered)
                    discarded: \(queue.discarded)
                    lost_to_retention: \(queue.lostToRetention)
                    sources (shard, settled below, read below, end):

                    """
                for source in queue.sources {
                    text += "  \(source.shard)\t\(source.floor)\t\(source.cursor)\t\(source.end)\n"
                }
                Output.write(text)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deletes a queue and its state (its source shards are untouched).")
        @OptionGroup var node: NodeOptions
        @Argument(help: "Queue name.") var name: String

        func run() async throws {
            try await reportingFailures {
                try await node.withClient { try await $0.deleteQueue(name) }
                Output.write("deleted \(name)\n")
            }
        }
    }
}
