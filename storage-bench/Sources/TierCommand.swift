import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import StrataJournal
import StrataObjects

/// `storage-bench tier`: the object tier against an S3-compatible endpoint it does not start.
/// Fills a journal, offloads every sealed batch (read from the segments, zstd blocks, PUT,
/// catalog), then reads back from the object tier: single reads of random offsets whose block
/// is not cached (first byte = the whole read's latency, as a consumer sees it), and every
/// shard from its first offset to the end of the tier. Beside each, the endpoint's own PUT and
/// GET figures for objects and ranges of the same sizes, in the same run.
struct TierCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tier",
        abstract: "Measures offload MB/s, compression ratio and cold reads against an S3 endpoint (AWS_* credentials).")

    @Option(help: "S3-compatible endpoint URL.") var endpoint: String
    @Option(help: "Bucket (must exist unless --create-bucket).") var bucket: String
    @Flag(help: "Create the bucket first (it may exist).") var createBucket = false
    @Option(help: "Key prefix for this run's objects (default: storage-bench/<random>/); removed at the end.")
    var prefix: String?
    @Option(help: "Bytes of batches to write and offload.") var bytes = 512 << 20
    @Option(help: "Shards.") var shards = 4
    @Option(help: "Bytes of each record's value.") var recordSize = 1024
    @Option(help: "Records per batch.") var batch = 64
    @Option(help: "Values: json (log-like JSON lines with random ids) or random (incompressible).") var payload = "json"
    @Option(help: "Objects are cut at about this many MiB of batches.") var objectMib = 64
    @Option(help: "Cold single reads (random offsets, block not cached).") var reads = 200
    @Option(help: "Directory for the journal (default: a new one under /tmp, removed at the end).") var dataDir: String?
    @Flag(help: "Print one JSON object per result line.") var json = false

    func validate() throws {
        guard payload == "json" || payload == "random" else { throw ValidationError("--payload is json or random") }
        guard bytes > 0, shards >= 1, recordSize >= 16, batch >= 1, objectMib >= 1, reads >= 1 else {
            throw ValidationError("check --bytes, --shards, --record-size, --batch, --object-mib, --reads")
        }
    }

    func run() async throws {
        let transfer = CurlTransfer(threads: 4)
        let runPrefix = prefix ?? "storage-bench/\(UUID().uuidString.lowercased().prefix(8))/"
        let store = S3ObjectStore(
            configuration: try S3Configuration.fromEnvironment(bucket: bucket, endpoint: endpoint, prefix: runPrefix),
            transfer: transfer)
        if createBucket { try? await store.createBucket() }
        let directory = try BenchDirectory(requested: dataDir)
        defer { directory.removeIfTemporary() }

        var configuration = JournalConfiguration(dataDirectory: directory.journalPath)
        configuration.segmentBytes = 64 << 20
        configuration.backgroundMaintenance = false
        configuration.tailBytesPerShard = 64 << 10
        let journal = try BenchJournal.open(configuration)
        defer { journal.close() }
        let names = (0..<shards).map { "bench/\($0)" }
        _ = try await journal.createShards(
            names.map { (name: $0, config: ShardConfig(durability: .async, localRetentionMilliseconds: 0)) })

        Console.error("filling \(bytes) bytes of \(payload) batches into \(shards) shards\n")
        try await fill(journal, names)
        try journal.checkpoint()

        // Offload everything sealed.
        var offloadConfiguration = TierOffloader.Configuration()
        offloadConfiguration.defaultLocalRetentionMilliseconds = 0
        offloadConfiguration.maxObjectBytes = Int64(objectMib) << 20
        var logger = Logger(label: "strata.bench")
        logger.logLevel = .notice
        let offloader = TierOffloader(
            configuration: offloadConfiguration, journal: journal, store: store, logger: logger)
        let offloadStart = ContinuousClock.now
        while try await offloader.pass() {}
        let offloadSeconds = offloadStart.duration(to: .now).seconds
        let status = offloader.status()
        guard status.uploadedObjects > 0 else {
            throw BenchError("nothing was offloaded (less than one segment written?)")
        }
        let objectSize = Int(status.uploadedBytes / status.uploadedObjects)

        // The endpoint alone: PUTs of incompressible objects of the same size.
        let rawCount = Int(min(status.uploadedObjects, 8))
        let raw = BatchFactory.randomBytes(objectSize)
        let putStart = ContinuousClock.now
        for n in 0..<rawCount { try await store.put("raw/\(n)", raw) }
        let putSeconds = putStart.duration(to: .now).seconds

        // Cold single reads: no block cache; each object's index fetched once beforehand.
        let tier = ObjectColdTier(store: store, cacheBytes: 0)
        journal.attachColdTier(tier)
        let infos = try names.map { try journal.describeShard($0) }
        var blockSizes: [Int] = []
        for info in infos {
            for object in try await journal.tieredObjects(shard: info.name) {
                let index = try await tier.index(of: object)
                blockSizes += index.blocks.map(\.compressedLength)
            }
        }
        // Each cold read is followed by the endpoint alone: a ranged GET of a mean block's length
        // at a random place (taking turns keeps the endpoint's own drift out of the comparison).
        let blockLength = blockSizes.reduce(0, +) / max(1, blockSizes.count)
        var latencies = Histogram<UInt64>.latency()
        var rawLatencies = Histogram<UInt64>.latency()
        for _ in 0..<reads {
            let info = infos.randomElement()!
            guard info.tierEndOffset > info.startOffset else { continue }
            let offset = UInt64.random(in: info.startOffset..<info.tierEndOffset)
            var start = ContinuousClock.now
            let result = try await journal.read(shard: info.name, from: offset, maxBytes: 1)
            latencies.record(latency: start.duration(to: .now))
            guard !result.batches.isEmpty else { throw BenchError("empty cold read at \(info.name) offset \(offset)") }
            let at = Int.random(in: 0...(objectSize - blockLength))
            start = ContinuousClock.now
            _ = try await store.get("raw/\(Int.random(in: 0..<rawCount))", range: at..<(at + blockLength))
            rawLatencies.record(latency: start.duration(to: .now))
        }

        // Sequential cold reads of everything offloaded, through a fresh cache.
        journal.attachColdTier(ObjectColdTier(store: store))
        let scanStart = ContinuousClock.now
        var scanned = 0
        for info in infos {
            var offset = info.startOffset
            while offset < info.tierEndOffset {
                let result = try await journal.read(shard: info.name, from: offset, maxBytes: 4 << 20)
                scanned += result.batches.reduce(0) { $0 + $1.readableBytes }
                offset = result.nextOffset
            }
        }
        let scanSeconds = scanStart.duration(to: .now).seconds
        // The endpoint alone: the same number of compressed bytes in 1 MiB ranged GETs.
        let rawScanBytes = Int(Double(scanned) / (Double(status.uploadedBatchBytes) / Double(status.uploadedBytes)))
        let rawScanStart = ContinuousClock.now
        var fetched = 0
        while fetched < rawScanBytes {
            let at = fetched % objectSize
            let length = min(1 << 20, objectSize - at)
            fetched += try await store.get("raw/\((fetched / objectSize) % rawCount)", range: at..<(at + length)).count
        }
        let rawScanSeconds = rawScanStart.duration(to: .now).seconds

        for key in try await store.list(prefix: "") { try await store.delete(key.key) }
        await transfer.shutdown()

        let figures = (
            offload: Double(status.uploadedBatchBytes) / offloadSeconds / 1e6,
            ratio: Double(status.uploadedBatchBytes) / Double(status.uploadedBytes),
            put: Double(rawCount * objectSize) / putSeconds / 1e6,
            p50: Double(latencies.valueAtPercentile(50)), p99: Double(latencies.valueAtPercentile(99)),
            rawP50: Double(rawLatencies.valueAtPercentile(50)), rawP99: Double(rawLatencies.valueAtPercentile(99)),
            scan: Double(scanned) / scanSeconds / 1e6, rawScan: Double(fetched) / rawScanSeconds / 1e6
        )
        if json {
            var line = JSONLine()
            line.add("mode", "tier")
            line.add("payload", payload)
            line.add("endpoint", endpoint)
            line.add("batch_bytes_offloaded", Int(status.uploadedBatchBytes))
            line.add("objects", Int(status.uploadedObjects))
            line.add("object_bytes", Int(status.uploadedBytes))
            line.add("offload_seconds", offloadSeconds)
            line.add("offload_mb_per_sec", figures.offload)
            line.add("compression_ratio", figures.ratio)
            line.add("endpoint_put_mb_per_sec", figures.put)
            line.add("block_bytes_mean", blockLength)
            line.add("cold_reads", Int(latencies.totalCount))
            line.add("cold_first_byte_p50_us", figures.p50)
            line.add("cold_first_byte_p99_us", figures.p99)
            line.add("endpoint_get_block_p50_us", figures.rawP50)
            line.add("endpoint_get_block_p99_us", figures.rawP99)
            line.add("cold_read_mb_per_sec", figures.scan)
            line.add("endpoint_get_mb_per_sec", figures.rawScan)
            print(line.text)
        } else {
            print(
                """
                offload: \(status.uploadedBatchBytes) bytes of batches in \(status.uploadedObjects) objects, \
                \(figures.offload.fixed(1)) MB/s (endpoint PUT alone: \(figures.put.fixed(1)) MB/s of objects)
                compression ratio: \(figures.ratio.fixed(2)) (\(payload) values)
                cold read first byte: p50 \(figures.p50.fixed(0)) µs, p99 \(figures.p99.fixed(0)) µs \
                (endpoint GET of a \(blockLength)-byte block alone: p50 \(figures.rawP50.fixed(0)) µs, \
                p99 \(figures.rawP99.fixed(0)) µs)
                cold sequential read: \(figures.scan.fixed(1)) MB/s of batches \
                (endpoint GET alone: \(figures.rawScan.fixed(1)) MB/s of object bytes)
                """)
        }
    }

    /// Appends about `bytes` of batches round robin over the shards, 8 appends in flight per shard.
    private func fill(_ journal: Journal, _ names: [String]) async throws {
        // 32 different batches in turn: a block of 1 MiB never holds the same batch twice.
        let batches = (0..<32).map { _ in
            payload == "json"
                ? BatchFactory.jsonBatch(records: batch, valueSize: recordSize)
                : BatchFactory.randomBatch(records: batch, valueSize: recordSize)
        }
        let perShard = bytes / names.count / batches[0].readableBytes + 1
        try await withThrowingTaskGroup(of: Void.self) { group in
            for name in names {
                for lane in 0..<8 {
                    group.addTask {
                        for n in stride(from: lane, to: perShard, by: 8) {
                            _ = try await journal.append(shard: name, batch: batches[n % batches.count])
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
