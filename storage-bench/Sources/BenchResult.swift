import Histogram
import StrataJournal

/// The figures of one timed append or read run, printed as a table or as one JSON line.
struct BenchResult: Sendable {
    enum Mode: String, Sendable {
        case append
        case read
    }

    /// The run's parameters.
    struct Shape: Sendable {
        var shards: Int
        /// Writer tasks (append) or reader tasks (read).
        var workers: Int
        var batch: Int
        var recordSize: Int
        var durability: Durability
        var inflight: Int
    }

    var mode: Mode
    var shape: Shape
    var seconds: Double
    var records: Int
    /// Bytes of batches appended or read.
    var bytes: Int
    /// Per append (ack) or per read call, in microseconds.
    var latency: Histogram<UInt64>
    /// 0 when the limit was not measured.
    var limitMBPerSec: Double
    var limitLabel: String
    /// Bytes written to storage per byte appended (0 for reads).
    var writeAmplification: Double
    var writeBytesSource: String
    var cpuSeconds: Double
    var walIO: String
    var walSyncs: Int64

    var recordsPerSec: Double { seconds > 0 ? Double(records) / seconds : 0 }
    var mbPerSec: Double { seconds > 0 ? Double(bytes) / seconds / 1e6 : 0 }
    var ratioToLimit: Double { limitMBPerSec > 0 ? mbPerSec / limitMBPerSec : 0 }
    var cpuSecPerGB: Double { bytes > 0 ? cpuSeconds / (Double(bytes) / 1e9) : 0 }

    private var percentiles: [(name: String, key: String, micros: UInt64)] {
        [
            ("p50", "p50_us", latency.valueAtPercentile(50.0)),
            ("p99", "p99_us", latency.valueAtPercentile(99.0)),
            ("p999", "p999_us", latency.valueAtPercentile(99.9)),
            ("max", "max_us", latency.maxRecorded),
        ]
    }

    func printReport(json: Bool) {
        Console.out(json ? jsonLine + "\n" : table + "\n")
    }

    var jsonLine: String {
        var line = JSONLine()
        line.add("mode", mode.rawValue)
        line.add("records_per_sec", recordsPerSec)
        line.add("mb_per_sec", mbPerSec)
        for percentile in percentiles {
            line.add(percentile.key, Int(percentile.micros))
        }
        line.add("limit_mb_per_sec", limitMBPerSec)
        line.add("ratio_to_limit", ratioToLimit)
        line.add("limit_label", limitMBPerSec > 0 ? limitLabel : "")
        line.add("write_amplification", writeAmplification)
        line.add("write_bytes_source", writeBytesSource)
        line.add("cpu_sec_per_gb", cpuSecPerGB)
        line.add("shards", shape.shards)
        line.add("writers", shape.workers)
        line.add("batch", shape.batch)
        line.add("record_size", shape.recordSize)
        line.add("durability", shape.durability.rawValue)
        line.add("inflight", shape.inflight)
        line.add("wal_io", walIO)
        line.add("wal_syncs", Int(walSyncs))
        line.add("seconds", seconds)
        line.add("records", records)
        line.add("bytes", bytes)
        return line.text
    }

    var table: String {
        let workers = mode == .read ? "readers" : "writers"
        let latencyName = mode == .read ? "read" : "ack"
        let hasLimit = limitMBPerSec > 0
        var lines = [
            "\(mode.rawValue): \(shape.shards) shards, \(shape.workers) \(workers), batch \(shape.batch) x "
                + "\(shape.recordSize) B, \(shape.durability.rawValue), inflight \(shape.inflight), wal \(walIO), "
                + "\(seconds.fixed(1)) s",
            Self.row("figure", "value", "limit", "ratio"),
            Self.row("records/s", recordsPerSec.fixed(0)),
            Self.row(
                "MB/s", mbPerSec.fixed(1), hasLimit ? limitMBPerSec.fixed(1) : "-",
                hasLimit ? ratioToLimit.fixed(2) : "-"),
        ]
        for percentile in percentiles {
            lines.append(Self.row("\(latencyName) \(percentile.name) (µs)", String(percentile.micros)))
        }
        if mode == .append {
            lines.append(Self.row("write amplification", writeAmplification.fixed(3) + " (\(writeBytesSource))"))
        }
        lines.append(Self.row("CPU s/GB", cpuSecPerGB.fixed(2)))
        lines.append(Self.row("WAL syncs", String(walSyncs)))
        if hasLimit { lines.append("limit: \(limitLabel)") }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func row(_ figure: String, _ value: String, _ limit: String = "-", _ ratio: String = "-")
        -> String
    {
        figure.padded(to: 26) + value.padded(to: 22) + limit.padded(to: 12) + ratio
    }
}
