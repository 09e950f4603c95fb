import ArgumentParser
import StrataJournal

/// The `--wal-io` flag: how the WAL submits its writes and syncs.
enum WALIOChoice: String, CaseIterable, ExpressibleByArgument {
    case auto
    case uring
    case pwrite

    var mode: WALIOMode {
        switch self {
        case .auto: .auto
        case .uring: .uring
        case .pwrite: .pwrite
        }
    }
}
