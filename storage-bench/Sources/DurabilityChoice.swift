import ArgumentParser
import StrataJournal

/// The `--durability` flag: when an append is acknowledged.
enum DurabilityChoice: String, CaseIterable, ExpressibleByArgument {
    case fsync
    case async

    var durability: Durability {
        switch self {
        case .fsync: .fsync
        case .async: .async
        }
    }
}
