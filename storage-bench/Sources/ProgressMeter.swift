import Synchronization

/// Counts records and bytes as they are appended or read and shows the rates once per second
/// on standard error, overwriting one line.
final class ProgressMeter: Sendable {
    let label: String
    private let records = Atomic<Int>(0)
    private let bytes = Atomic<Int>(0)

    init(label: String) {
        self.label = label
    }

    func add(records count: Int, bytes size: Int) {
        records.wrappingAdd(count, ordering: .relaxed)
        bytes.wrappingAdd(size, ordering: .relaxed)
    }

    /// Runs `body` while the progress line is updated every second.
    func reporting<T>(_ body: () async throws -> T) async throws -> T {
        let reporter = Task { await self.report() }
        do {
            let result = try await body()
            reporter.cancel()
            await reporter.value
            return result
        } catch {
            reporter.cancel()
            await reporter.value
            throw error
        }
    }

    private func report() async {
        let start = ContinuousClock.now
        var last = (instant: start, records: 0, bytes: 0)
        var printed = false
        while true {
            do {
                try await Task.sleep(for: .seconds(1))
            } catch {
                break
            }
            let now = ContinuousClock.now
            let current = (records: records.load(ordering: .relaxed), bytes: bytes.load(ordering: .relaxed))
            let interval = last.instant.duration(to: now).seconds
            let recordRate = Double(current.records - last.records) / interval
            let mbRate = Double(current.bytes - last.bytes) / 1e6 / interval
            let elapsed = start.duration(to: now).seconds
            Console.error(
                "\r\(label) \(elapsed.fixed(0)) s: \(recordRate.fixed(0)) records/s, \(mbRate.fixed(1)) MB/s     ")
            last = (instant: now, records: current.records, bytes: current.bytes)
            printed = true
        }
        if printed { Console.error("\n") }
    }
}
