import NIOCore
import StrataJournal
import Synchronization

/// Decoded blocks of offloaded objects, bounded by bytes, least recently used out first.
public final class TierBlockCache: Sendable {
    private struct Key: Hashable {
        var object: String
        var block: Int
    }

    private struct State {
        var entries: [Key: (batches: [ByteBuffer], bytes: Int, used: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    private let state = Mutex(State())
    /// Blocks on their way in: a reader of one awaits the fetch already running.
    private let loading = Mutex<[Key: Task<[ByteBuffer], any Error>]>([:])

    /// The block from the cache, else from the fetch already running for it, else from `fetch`
    /// (whose result is cached).
    func load(
        _ object: String, _ block: Int, fetch: @escaping @Sendable () async throws -> [ByteBuffer]
    ) async throws -> [ByteBuffer] {
        if let cached = get(object, block) { return cached }
        return try await loadingTask(object, block, fetch).value
    }

    /// Starts fetching a block that is neither cached nor on its way (prefetch).
    func prefetch(_ object: String, _ block: Int, fetch: @escaping @Sendable () async throws -> [ByteBuffer]) {
        guard state.withLock({ $0.entries[Key(object: object, block: block)] == nil }) else { return }
        _ = loadingTask(object, block, fetch)
    }

    private func loadingTask(
        _ object: String, _ block: Int, _ fetch: @escaping @Sendable () async throws -> [ByteBuffer]
    ) -> Task<[ByteBuffer], any Error> {
        let key = Key(object: object, block: block)
        return loading.withLock { loading in
            if let running = loading[key] { return running }
            let task = Task {
                defer { _ = self.loading.withLock { $0.removeValue(forKey: key) } }
                let batches = try await fetch()
                self.put(object, block, batches)
                return batches
            }
            loading[key] = task
            return task
        }
    }

    public let capacityBytes: Int

    public init(capacityBytes: Int) {
        self.capacityBytes = capacityBytes
    }

    func get(_ object: String, _ block: Int) -> [ByteBuffer]? {
        state.withLock { state in
            state.clock += 1
            guard var entry = state.entries[Key(object: object, block: block)] else {
                state.misses += 1
                return nil
            }
            state.hits += 1
            entry.used = state.clock
            state.entries[Key(object: object, block: block)] = entry
            return entry.batches
        }
    }

    func put(_ object: String, _ block: Int, _ batches: [ByteBuffer]) {
        let size = batches.reduce(0) { $0 + $1.readableBytes }
        guard size <= capacityBytes else { return }
        state.withLock { state in
            state.clock += 1
            let key = Key(object: object, block: block)
            if let old = state.entries.updateValue((batches, size, state.clock), forKey: key) {
                state.bytes -= old.bytes
            }
            state.bytes += size
            while state.bytes > capacityBytes, let oldest = state.entries.min(by: { $0.value.used < $1.value.used }) {
                state.entries[oldest.key] = nil
                state.bytes -= oldest.value.bytes
            }
        }
    }

    public var statistics: (bytes: Int, entries: Int, hits: Int, misses: Int) {
        state.withLock { ($0.bytes, $0.entries.count, $0.hits, $0.misses) }
    }
}

/// Reads batches from offloaded objects: whole blocks by ranged GET, through the cache.
public struct TierReader: Sendable {
    public let store: any ObjectStore
    public let cache: TierBlockCache
    /// Blocks after the one being read that are fetched ahead (sequential readers of old data).
    public let readAhead: Int

    public init(store: any ObjectStore, cache: TierBlockCache, readAhead: Int = 4) {
        self.store = store
        self.cache = cache
        self.readAhead = readAhead
    }

    /// Whole batches from the block holding `offset` on, up to `maxBytes` (at least one batch
    /// when there is one), as a journal read returns them: the first may start before `offset`.
    /// The `readAhead` blocks after the first are fetched in the background meanwhile (when
    /// the cache has room for them).
    public func read(_ key: String, index: TierObject.Index, from offset: UInt64, maxBytes: Int) async throws
        -> [ByteBuffer]
    {
        guard var number = index.block(for: offset) else { return [] }
        let ahead = (number + 1)..<min(index.blocks.count, number + 1 + readAhead)
        if index.blocks[ahead].reduce(0, { $0 + $1.uncompressedLength }) <= cache.capacityBytes / 2 {
            for next in ahead {
                cache.prefetch(key, next) { [self] in try await fetch(key, index: index, number: next) }
            }
        }
        var result: [ByteBuffer] = []
        var bytes = 0
        reading: while number < index.blocks.count {
            for batch in try await block(key, index: index, number: number) {
                guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex),
                    UInt64(header.lastOffset) >= offset
                else { continue }
                if !result.isEmpty && bytes + batch.readableBytes > maxBytes { break reading }
                result.append(batch)
                bytes += batch.readableBytes
            }
            number += 1
        }
        return result
    }

    /// One block's batches: from the cache, else fetched (one ranged GET, or the one running).
    public func block(_ key: String, index: TierObject.Index, number: Int) async throws -> [ByteBuffer] {
        try await cache.load(key, number) { [self] in try await fetch(key, index: index, number: number) }
    }

    /// One block fetched (one ranged GET) and checked.
    func fetch(_ key: String, index: TierObject.Index, number: Int) async throws -> [ByteBuffer] {
        let block = index.blocks[number]
        return try TierObject.batches(
            ofBlock: try await store.get(key, range: block.byteRange), block, key: key, number: number)
    }
}
