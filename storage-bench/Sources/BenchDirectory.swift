import Foundation

/// The benchmark's data directory: the one given on the command line, kept afterwards, or a new
/// one under /tmp that is removed at the end.
struct BenchDirectory: Sendable {
    let path: String
    let isTemporary: Bool

    init(requested: String?) throws {
        if let requested {
            path = requested
            isTemporary = false
        } else {
            path = "/tmp/storage-bench-" + UUID().uuidString.lowercased()
            isTemporary = true
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw BenchError("cannot create \(path): \(error)")
        }
    }

    /// The journal's directory inside this one.
    var journalPath: String { path + "/journal" }

    func removeIfTemporary() {
        guard isTemporary else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            Console.error("cannot remove \(path): \(error)\n")
        }
    }
}
