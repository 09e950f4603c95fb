import Foundation
import NIOCore
import StrataJournal
import StrataTestSupport
import Testing

@testable import StrataObjects

/// The object tier end to end in one process: a journal, the offloader and the cold reader
/// against moto's standalone S3 server; boto3 checks independently what landed in the bucket.
@Suite(.serialized) struct TierOffloadTests {
    static let bucket = "tier"
    static let prefix = "node-1/"

    /// A moto server with the bucket, and a store over it.
    struct Fixture {
        let server: MotoServer
        let transfer: CurlTransfer
        let store: S3ObjectStore

        static func start(timeoutSeconds: Int = 60) async throws -> Fixture {
            let server = try MotoServer.start()
            let transfer = CurlTransfer(threads: 2, timeoutSeconds: timeoutSeconds)
            let store = S3ObjectStore(
                configuration: S3Configuration(
                    endpoint: server.endpoint, bucket: TierOffloadTests.bucket, prefix: TierOffloadTests.prefix,
                    accessKey: "k", secretKey: "s"),
                transfer: transfer)
            try await store.createBucket()
            return Fixture(server: server, transfer: transfer, store: store)
        }

        func stop() async {
            server.stop()
            await transfer.shutdown()
        }

        /// The bucket's objects as boto3 sees them: key (without the node prefix) → size, for
        /// those whose last bytes carry the Strata object footer.
        func listedByBoto3() throws -> [String: Int] {
            let output = try MotoServer.python(
                """
                import boto3
                s3 = boto3.client("s3", endpoint_url="\(server.endpoint)", region_name="us-east-1",
                                  aws_access_key_id="k", aws_secret_access_key="s")
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket="\(TierOffloadTests.bucket)", Prefix="\(TierOffloadTests.prefix)"):
                    for o in page.get("Contents", []):
                        tail = s3.get_object(Bucket="\(TierOffloadTests.bucket)", Key=o["Key"], Range="bytes=-12")["Body"].read()
                        if tail[:8] == b"STRATOBJ":
                            print(o["Key"][len("\(TierOffloadTests.prefix)"):], o["Size"])
                """)
            var listed: [String: Int] = [:]
            for line in output.split(separator: "\n") {
                let parts = line.split(separator: " ")
                listed[String(parts[0])] = Int(parts[1])
            }
            return listed
        }
    }

    /// A moto fixture for `body`, stopped afterwards (also when `body` throws).
    static func withFixture(timeoutSeconds: Int = 60, _ body: (Fixture) async throws -> Void) async throws {
        let fixture = try await Fixture.start(timeoutSeconds: timeoutSeconds)
        do {
            try await body(fixture)
        } catch {
            await fixture.stop()
            throw error
        }
        await fixture.stop()
    }

    /// A moto fixture and a new journal (`journal(_:)`) in a temporary directory with shard "a"
    /// (offloaded as soon as its segment seals, unless `a` says otherwise) and the filler shard
    /// "b"; closed and stopped afterwards.
    static func withTierJournal(
        timeoutSeconds: Int = 60, a: ShardConfig = ShardConfig(localRetentionMilliseconds: 0), b: ShardConfig = ShardConfig(),
        _ body: (Fixture, Journal, String) async throws -> Void
    ) async throws {
        try await withFixture(timeoutSeconds: timeoutSeconds) { fixture in
            try await withTemporaryDirectory { directory in
                let journal = try Self.journal(directory)
                defer { journal.close() }
                _ = try await journal.createShard("a", config: a)
                _ = try await journal.createShard("b", config: b)
                try await body(fixture, journal, directory)
            }
        }
    }

    static func journal(_ directory: String) throws -> Journal {
        var configuration = JournalConfiguration(dataDirectory: directory)
        configuration.segmentBytes = 256 << 10
        configuration.maxBatchBytes = 64 << 10
        configuration.backgroundMaintenance = false
        configuration.tailBytesPerShard = 16 << 10  // reads of older offsets go to the tiers, not memory
        return try Journal(configuration: configuration)
    }

    static func offloader(_ journal: Journal, _ store: any ObjectStore) -> TierOffloader {
        var configuration = TierOffloader.Configuration()
        configuration.defaultLocalRetentionMilliseconds = 3_600_000  // shards without their own setting stay local
        configuration.maxObjectBytes = 200 << 10
        configuration.blockBytes = 32 << 10
        return TierOffloader(configuration: configuration, journal: journal, store: store, logger: .init(label: "test"))
    }

    /// `count` batches of 4 records (~4 KiB) for `shard`, interleaved with as many for the
    /// filler shard "b", so both spread over several 256 KiB segments. Timestamps: batch n's
    /// records at `start + 10 n + i`.
    static func write(_ journal: Journal, shard: String, batches range: Range<Int>, start: Int64) async throws {
        for n in range {
            _ = try await journal.append(shard: shard, batch: makeBatch("\(shard)\(n)", count: 4, timestamp: start + Int64(10 * n), size: 1000))
            _ = try await journal.append(shard: "b", batch: makeBatch("b\(n)", count: 4, timestamp: start + Int64(10 * n), size: 1000))
        }
    }

    static func expected(_ shard: String, _ range: Range<Int>) -> [String] {
        range.flatMap { n in (0..<4).map { "\(shard)\(n)-\($0)" } }
    }

    /// Reads `shard` from `offset` to its end, through whichever tiers hold it.
    static func readAll(_ journal: Journal, _ shard: String, from offset: UInt64 = 0) async throws -> [String] {
        var next = offset
        var result: [String] = []
        while true {
            let read = try await journal.read(shard: shard, from: next, maxBytes: 48 << 10)
            if read.batches.isEmpty { return result }
            result += try values(read.batches, from: next)
            next = read.nextOffset
        }
    }

    @Test func offloadedDataReadsAsOneShardAcrossTiers() async throws {
        try await Self.withTierJournal { fixture, journal, directory in
            let start = nowMilliseconds() - 600_000
            try await Self.write(journal, shard: "a", batches: 0..<200, start: start)
            let liveBefore = journal.segmentInfos().reduce(0) { $0 + $1.liveBytes }

            let offloader = Self.offloader(journal, fixture.store)
            journal.attachColdTier(ObjectColdTier(store: fixture.store, cacheBytes: 1 << 20))
            #expect(try await offloader.pass())
            let a = try journal.describeShard("a")
            let b = try journal.describeShard("b")
            #expect(a.tierEndOffset > 400 && a.tierEndOffset < 800)  // sealed segments only
            #expect(a.tierBytes > 0 && a.storedBytes > a.tierBytes)
            #expect(b.tierBytes == 0 && b.tierEndOffset == 0)  // its local retention (the default) is not over
            let objects = try await journal.tieredObjects(shard: "a")
            #expect(objects.count >= 3)
            #expect(objects.first?.firstOffset == 0 && objects.last.map { $0.lastOffset + 1 } == a.tierEndOffset)
            // What landed in the bucket, as boto3 lists it: exactly the catalog's objects.
            let listed = try fixture.listedByBoto3()
            #expect(listed == Dictionary(uniqueKeysWithValues: objects.map { ($0.key, Int($0.objectBytes)) }))
            #expect(objects.allSatisfy { $0.objectBytes < $0.batchBytes / 5 })  // padded values compress well

            // Maintenance reclaims the offloaded batches' segment space.
            try journal.runMaintenance()
            let liveAfter = journal.segmentInfos().reduce(0) { $0 + $1.liveBytes }
            #expect(liveBefore - liveAfter >= a.tierBytes)

            // One continuous shard from offset 0: object tier, then segments, then memory.
            #expect(try await Self.readAll(journal, "a") == Self.expected("a", 0..<200))
            #expect(try await Self.readAll(journal, "a", from: 301) == Array(Self.expected("a", 0..<200).dropFirst(301)))
            // Timestamp lookups land in the object tier too (exact record of an uncompressed batch).
            #expect(try await journal.offset(shard: "a", atOrAfter: start + 10 * 50 + 2) == 202)
            #expect(UInt64(202) < a.tierEndOffset)
            // A subscription from 0 crosses from the object tier into local data without a gap.
            var seen: [String] = []
            for try await read in journal.subscribe(shard: "a", from: 0, maxBytes: 32 << 10) {
                seen += try values(read.batches, from: UInt64(seen.count))
                if read.nextOffset == a.endOffset { break }
            }
            #expect(seen == Self.expected("a", 0..<200))
            let status = offloader.status()
            #expect(status.uploadedObjects == Int64(objects.count))
            #expect(status.shards.first { $0.name == "a" }?.tierObjects == objects.count)
            #expect(status.shards.first { $0.name == "a" }?.localBytes == a.storedBytes - a.tierBytes)
            journal.close()

            // Reopened without an object store: offloaded offsets fail as unavailable, local ones read.
            let reopened = try Self.journal(directory)
            let again = try reopened.describeShard("a")
            #expect(again.tierEndOffset == a.tierEndOffset && again.endOffset == a.endOffset && again.startOffset == 0)
            await #expect {
                _ = try await reopened.read(shard: "a", from: 0, maxBytes: 1)
            } throws: { error in
                (error as? JournalError)?.code == .unavailable
            }
            #expect(try await Self.readAll(reopened, "a", from: a.tierEndOffset).count == Int(a.endOffset - a.tierEndOffset))
            reopened.attachColdTier(ObjectColdTier(store: fixture.store))
            #expect(try await Self.readAll(reopened, "a") == Self.expected("a", 0..<200))
            reopened.close()
        }
    }

    /// A shard whose every batch went to the object tier: after a restart it reads from the
    /// tier alone and appends go on at its end.
    @Test func restartWithAShardOnlyInTheObjectTier() async throws {
        try await Self.withTierJournal { fixture, journal, directory in
            let start = nowMilliseconds() - 600_000
            try await Self.write(journal, shard: "a", batches: 0..<40, start: start)
            // Filler alone seals the segments holding "a".
            for n in 0..<120 {
                _ = try await journal.append(shard: "b", batch: makeBatch("b\(n)", count: 4, timestamp: start, size: 1000))
            }
            try await Self.offloader(journal, fixture.store).pass()
            try journal.runMaintenance()
            let a = try journal.describeShard("a")
            #expect(a.tierEndOffset == 160 && a.endOffset == 160 && a.storedBytes == a.tierBytes)
            journal.close()

            let reopened = try Self.journal(directory)
            reopened.attachColdTier(ObjectColdTier(store: fixture.store))
            let info = try reopened.describeShard("a")
            #expect(info.startOffset == 0 && info.endOffset == 160 && info.tierEndOffset == 160)
            #expect(info.storedBytes == a.storedBytes)
            #expect(try await Self.readAll(reopened, "a") == Self.expected("a", 0..<40))
            let appended = try await reopened.append(shard: "a", batch: makeBatch("a40", count: 4, size: 1000))
            #expect(appended.baseOffset == 160)
            #expect(try await Self.readAll(reopened, "a", from: 156) == Self.expected("a", 39..<41))
            reopened.close()
        }
    }

    /// The endpoint stops answering (the moto process is frozen with SIGSTOP): passes fail with
    /// the error recorded, appends and local reads go on, nothing is lost; once it answers again
    /// (SIGCONT) the next pass catches up.
    @Test func anUnreachableEndpointDelaysOffloadAndLosesNothing() async throws {
        try await Self.withTierJournal(timeoutSeconds: 2) { fixture, journal, directory in
            let offloader = Self.offloader(journal, fixture.store)
            #expect(try await offloader.pass() == false)  // claims the prefix; nothing is due yet
            let start = nowMilliseconds() - 600_000
            try await Self.write(journal, shard: "a", batches: 0..<100, start: start)
            journal.attachColdTier(ObjectColdTier(store: fixture.store))

            kill(fixture.server.process.processIdentifier, SIGSTOP)
            await #expect(throws: ObjectStoreError.self) { try await offloader.pass() }
            try await Self.write(journal, shard: "a", batches: 100..<150, start: start)
            await #expect(throws: ObjectStoreError.self) { try await offloader.pass() }
            let stalled = offloader.status()
            #expect(stalled.uploadFailures == 2 && stalled.uploadedObjects == 0)
            #expect(stalled.lastError?.contains("unreachable") == true)
            let shard = try #require(stalled.shards.first { $0.name == "a" })
            #expect(shard.offloadLagBytes > 0 && shard.tierBytes == 0 && shard.lastError != nil)
            #expect(try await Self.readAll(journal, "a") == Self.expected("a", 0..<150))
            // The failed uploads' keys were queued for deletion before each PUT.
            #expect(try await journal.remoteDeletions().count >= 2)

            kill(fixture.server.process.processIdentifier, SIGCONT)
            // The PUTs frozen with moto complete now; their objects are deleted by the next passes
            // (queued before each upload, or found unnamed when the bucket is listed).
            try await Task.sleep(for: .seconds(1))
            #expect(try await offloader.pass())
            let caughtUp = offloader.status()
            #expect(try await journal.remoteDeletions().isEmpty)
            let a = try journal.describeShard("a")
            #expect(caughtUp.lastError == nil && a.tierEndOffset > 400)
            #expect(caughtUp.shards.first { $0.name == "a" }?.offloadLagBytes == 0)
            try journal.runMaintenance()
            #expect(try await Self.readAll(journal, "a") == Self.expected("a", 0..<150))
            let objects = try await journal.tieredObjects(shard: "a")
            #expect(Set(try fixture.listedByBoto3().keys) == Set(objects.map(\.key)))
        }
    }

    /// Retention by age removes whole objects: the catalog lets go first, the next pass deletes
    /// them from the bucket.
    @Test func retentionDeletesRemoteObjects() async throws {
        let a = ShardConfig(retentionMilliseconds: 3_600_000, localRetentionMilliseconds: 0)
        try await Self.withTierJournal(a: a) { fixture, journal, directory in
            // 100 batches two hours old, then 100 from a minute ago.
            let now = nowMilliseconds()
            try await Self.write(journal, shard: "a", batches: 0..<100, start: now - 7_200_000)
            try await Self.write(journal, shard: "a", batches: 100..<200, start: now - 60_000 - 1000)
            let offloader = Self.offloader(journal, fixture.store)
            journal.attachColdTier(ObjectColdTier(store: fixture.store))
            try await offloader.pass()
            let objects = try await journal.tieredObjects(shard: "a")
            let old = objects.filter { $0.maxTimestamp < now - 3_600_000 }
            #expect(!old.isEmpty && old.count < objects.count)
            // "b" has the default local retention (an hour): its two-hour-old batches went too.
            let filler = try await journal.tieredObjects(shard: "b")
            #expect(!filler.isEmpty)
            #expect(Set(try fixture.listedByBoto3().keys) == Set((objects + filler).map(\.key)))

            try journal.runMaintenance()
            let a = try journal.describeShard("a")
            #expect(a.startOffset == old.last!.lastOffset + 1)
            #expect(Set(try await journal.remoteDeletions()) == Set(old.map(\.key)))
            try await offloader.pass()
            #expect(try await journal.remoteDeletions().isEmpty)
            // (The pass may have offloaded more: compaction's copies can seal a segment.)
            let remaining = try await journal.tieredObjects(shard: "a") + journal.tieredObjects(shard: "b")
            let listedAfter = Set(try fixture.listedByBoto3().keys)
            #expect(listedAfter == Set(remaining.map(\.key)))
            #expect(listedAfter.isDisjoint(with: old.map(\.key)))
            #expect(Set(objects.dropFirst(old.count).map(\.key)).isSubset(of: listedAfter))
            #expect(offloader.status().deletedObjects == Int64(old.count))
            await #expect {
                _ = try await journal.read(shard: "a", from: 0, maxBytes: 1)
            } throws: { error in
                (error as? JournalError)?.code == .offsetOutOfRange
            }
            #expect(
                try await Self.readAll(journal, "a", from: a.startOffset)
                    == Array(Self.expected("a", 0..<200).dropFirst(Int(a.startOffset))))
        }
    }

    /// An object damaged in the bucket is an error naming its key, never data.
    @Test func aCorruptObjectIsReportedNotServed() async throws {
        try await Self.withTierJournal { fixture, journal, directory in
            try await Self.write(journal, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
            try await Self.offloader(journal, fixture.store).pass()
            let object = try #require(try await journal.tieredObjects(shard: "a").first)
            // Flip one byte inside the first block, with boto3.
            _ = try MotoServer.python(
                """
                import boto3
                s3 = boto3.client("s3", endpoint_url="\(fixture.server.endpoint)", region_name="us-east-1",
                                  aws_access_key_id="k", aws_secret_access_key="s")
                key = "\(Self.prefix)\(object.key)"
                data = bytearray(s3.get_object(Bucket="\(Self.bucket)", Key=key)["Body"].read())
                data[20] ^= 0x40
                s3.put_object(Bucket="\(Self.bucket)", Key=key, Body=bytes(data))
                """)
            journal.attachColdTier(ObjectColdTier(store: fixture.store))
            await #expect {
                _ = try await journal.read(shard: "a", from: 0, maxBytes: 1)
            } throws: { error in
                guard let error = error as? JournalError else { return false }
                return error.code == .corruptData && error.message.contains(object.key)
                    && error.message.contains("block 0 checksum mismatch")
            }
            // Offsets in other objects still read.
            #expect(try await Self.readAll(journal, "a", from: object.lastOffset + 1).count == 400 - Int(object.lastOffset + 1))
        }
    }

    /// A shard written once on a quiet node: maintenance seals the active segment once it is
    /// older than `segmentMaxAge`, and the data reaches the object tier.
    @Test func aQuietShardReachesTheObjectTier() async throws {
        try await Self.withFixture { fixture in
            try await withTemporaryDirectory { directory in
                var configuration = JournalConfiguration(dataDirectory: directory)
                configuration.backgroundMaintenance = false
                configuration.segmentMaxAge = .milliseconds(200)
                let journal = try Journal(configuration: configuration)
                _ = try await journal.createShard("a", config: ShardConfig(localRetentionMilliseconds: 0))
                for n in 0..<3 { _ = try await journal.append(shard: "a", batch: makeBatch("a\(n)", count: 4, timestamp: nowMilliseconds() - 1000)) }
                let offloader = Self.offloader(journal, fixture.store)
                #expect(try await offloader.pass() == false)  // all in the active segment
                let active = try #require(journal.segmentInfos().first { $0.active })
                try await Task.sleep(for: .milliseconds(250))
                try journal.runMaintenance()
                let deadline = ContinuousClock.now + .seconds(5)
                while journal.segmentInfos().first(where: { $0.active })?.id == active.id, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(journal.segmentInfos().first { $0.active }?.id == active.id + 1)
                #expect(try await offloader.pass())
                #expect(try journal.describeShard("a").tierEndOffset == 12)
                journal.close()
            }
        }
    }

    /// Readers going over the shard again and again while runs are committed (many small
    /// objects): every read starts at the offset asked for, none skips what just moved.
    @Test func readsDuringOffloadNeitherSkipNorRepeat() async throws {
        try await Self.withTierJournal { fixture, journal, directory in
            try await Self.write(journal, shard: "a", batches: 0..<200, start: nowMilliseconds() - 600_000)
            journal.attachColdTier(ObjectColdTier(store: fixture.store, cacheBytes: 4 << 20))
            var configuration = TierOffloader.Configuration()
            configuration.maxObjectBytes = 8 << 10  // two batches per object: many commits
            configuration.maxRunsPerPass = 4
            let offloader = TierOffloader(configuration: configuration, journal: journal, store: fixture.store, logger: .init(label: "test"))
            let expected = Self.expected("a", 0..<200)
            let readers = Task {
                var rounds = 0
                while !Task.isCancelled {
                    var next: UInt64 = 0
                    while next < 800 {
                        let read: ReadResult
                        do {
                            read = try await journal.read(shard: "a", from: next, maxBytes: 12 << 10)
                        } catch is CancellationError {
                            return rounds
                        }
                        let got = try values(read.batches, from: next)
                        guard got.first == expected[Int(next)], read.nextOffset == next + UInt64(got.count) else {
                            throw MotoError("read from \(next) gave \(got.first ?? "nothing") then \(read.nextOffset)")
                        }
                        next = read.nextOffset
                    }
                    rounds += 1
                }
                return rounds
            }
            while try await offloader.pass() {}
            readers.cancel()
            let rounds = try await readers.value
            #expect(rounds > 0)
            #expect(try journal.describeShard("a").tierEndOffset > 400)
            #expect(try await journal.tieredObjects(shard: "a").count > 50)
            #expect(try await Self.readAll(journal, "a") == expected)
        }
    }

    /// A run refused at commit (retention removed its head while it was uploaded) and the run
    /// planned behind it: neither enters the catalog, so no gap opens below the tier's end; the
    /// next pass offloads from the new first batch on.
    @Test func aRunBehindARefusedOneWaits() async throws {
        let batchBytes = Int64(makeBatch("a0", count: 4, size: 1000).readableBytes)
        let a = ShardConfig(retentionBytes: 96 * batchBytes, localRetentionMilliseconds: 0)
        try await Self.withTierJournal(a: a) { fixture, journal, directory in
            try await Self.write(journal, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
            let (runs, _) = try await journal.offloadRuns(defaultLocalRetention: 3_600_000, maxRunBytes: 32 << 10)
            let planned = runs.filter { $0.shard == "a" }
            #expect(planned.count >= 2 && planned[0].firstOffset == 0 && planned[1].firstOffset == 32)
            try journal.runMaintenance()  // retention: the first 4 batches go
            #expect(try journal.describeShard("a").startOffset == 16)
            #expect(try await journal.commitOffload(planned[1], key: "k1", objectBytes: 1) == nil)
            #expect(try await journal.commitOffload(planned[0], key: "k0", objectBytes: 1) == nil)
            #expect(try journal.describeShard("a").tierEndOffset == 0)
            try await Self.offloader(journal, fixture.store).pass()
            journal.attachColdTier(ObjectColdTier(store: fixture.store))
            let a = try journal.describeShard("a")
            #expect(a.tierEndOffset > 16)
            #expect(try await Self.readAll(journal, "a", from: 16) == Array(Self.expected("a", 0..<100).dropFirst(16)))
        }
    }

    /// An object left by an upload whose commit never happened (the node was killed between
    /// them) is deleted by the offloader's first pass; the catalog's objects stay.
    @Test func objectsNoCatalogEntryNamesAreDeleted() async throws {
        try await Self.withTierJournal { fixture, journal, directory in
            try await Self.write(journal, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
            try await Self.offloader(journal, fixture.store).pass()
            let objects = try await journal.tieredObjects(shard: "a")
            let leftover = TierOffloader.key(shardID: 1, firstOffset: 999_999)
            try await fixture.store.put(leftover, [1, 2, 3])
            try await fixture.store.put("notes.txt", [4])  // not an object key: left alone
            try await Self.offloader(journal, fixture.store).pass()  // a new offloader, as after a restart
            let listed = try await fixture.store.list(prefix: "")
            #expect(Set(listed.map(\.key)) == Set(objects.map(\.key) + ["notes.txt", "strata-node"]))
        }
    }

    /// A prefix another journal claimed is refused: nothing is uploaded or deleted there.
    @Test func aPrefixClaimedByAnotherNodeIsRefused() async throws {
        try await Self.withFixture { fixture in
            try await withTemporaryDirectory { directory in
                let first = try Self.journal(directory + "/first")
                _ = try await first.createShard("a", config: ShardConfig(localRetentionMilliseconds: 0))
                _ = try await first.createShard("b")
                try await Self.write(first, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
                try await Self.offloader(first, fixture.store).pass()
                let objects = try await first.tieredObjects(shard: "a")
                #expect(!objects.isEmpty)

                let second = try Self.journal(directory + "/second")
                _ = try await second.createShard("a", config: ShardConfig(localRetentionMilliseconds: 0))
                _ = try await second.createShard("b")
                try await Self.write(second, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
                let intruder = Self.offloader(second, fixture.store)
                await #expect {
                    try await intruder.pass()
                } throws: { error in
                    "\(error)".contains("PrefixClaimed") && "\(error)".contains("tier.prefix of its own")
                }
                #expect(try second.describeShard("a").tierBytes == 0)
                #expect(intruder.status().shards.first { $0.name == "a" }?.lastError?.contains("PrefixClaimed") == true)
                #expect(Set(try fixture.listedByBoto3().keys) == Set(objects.map(\.key) + (try await first.tieredObjects(shard: "b")).map(\.key)))
                first.close()
                second.close()
            }
        }
    }

    /// One shard's run fails (a damaged frame in a sealed segment): the pass reports it, the
    /// shard keeps its data local, and the other shards' runs go on.
    @Test func aFailingRunHoldsBackOnlyItsShard() async throws {
        try await Self.withTierJournal(b: ShardConfig(localRetentionMilliseconds: 0)) { fixture, journal, directory in
            try await Self.write(journal, shard: "a", batches: 0..<100, start: nowMilliseconds() - 600_000)
            // Damage one record value of "a" in the first segment.
            let path = directory + "/wal/00000000000000000001.wal"
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let needle = Array("a5-2".utf8)
            let at = try #require((0..<(bytes.count - needle.count)).first { Array(bytes[$0..<($0 + needle.count)]) == needle })
            bytes[at] ^= 0x20
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let offloader = Self.offloader(journal, fixture.store)
            await #expect {
                try await offloader.pass()
            } throws: { error in
                (error as? JournalError)?.code == .corruptData
            }
            #expect(try journal.describeShard("a").tierBytes == 0)
            #expect(try journal.describeShard("b").tierBytes > 0)
            let status = offloader.status()
            #expect(status.shards.first { $0.name == "a" }?.lastError?.contains("corrupt") == true)
            #expect(status.shards.first { $0.name == "b" }?.lastError == nil)
        }
    }
}
