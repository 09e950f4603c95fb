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
    private let prefetching = Mutex<Set<Key>>([])

    /// Marks a block as being prefetched; false when it is cached or on its way already.
    func claimPrefetch(_ object: String, _ block: Int) -> Bool {
        let key = Key(object: object, block: block)
        guard state.withLock({ $0.entries[key] == nil }) else { return false }
        return prefetching.withLock { $0.insert(key).inserted }
    }

    func endPrefetch(_ object: String, _ block: Int) {
        _ = prefetching.withLock { $0.remove(Key(object: object, block: block)) }
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
            if let old = state.entries.updateValue((batches, size, state.clock), forKey: key) { state.bytes -= old.bytes }
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

    public init(store: any ObjectStore, cache: TierBlockCache) {
        self.store = store
        self.cache = cache
    }

    /// Whole batches from the block holding `offset` on, up to `maxBytes` (at least one batch
    /// when there is one), as a journal read returns them: the first may start before `offset`.
    public func read(_ key: String, index: TierObject.Index, from offset: UInt64, maxBytes: Int) async throws -> [ByteBuffer] {
        guard var number = index.block(for: offset) else { return [] }
        var result: [ByteBuffer] = []
        var bytes = 0
        reading: while number < index.blocks.count {
            for batch in try await block(key, index: index, number: number) {
                guard let header = RecordBatch.Header.peek(batch, at: batch.readerIndex), UInt64(header.lastOffset) >= offset
                else { continue }
                if !result.isEmpty && bytes + batch.readableBytes > maxBytes { break reading }
                result.append(batch)
                bytes += batch.readableBytes
            }
            number += 1
        }
        prefetch(key, index: index, number: result.isEmpty ? number : number + 1)
        return result
    }

    /// Readers of old data mostly go on where they stopped: the block after the last one read
    /// is fetched into the cache in the background (when the cache can hold it and lacks it).
    func prefetch(_ key: String, index: TierObject.Index, number: Int) {
        guard number < index.blocks.count, index.blocks[number].uncompressedLength <= cache.capacityBytes / 4,
            cache.claimPrefetch(key, number)
        else { return }
        Task {
            _ = try? await fetch(key, index: index, number: number)
            cache.endPrefetch(key, number)
        }
    }

    /// One block's batches: from the cache, else fetched (one ranged GET) and checked.
    public func block(_ key: String, index: TierObject.Index, number: Int) async throws -> [ByteBuffer] {
        if let cached = cache.get(key, number) { return cached }
        return try await fetch(key, index: index, number: number)
    }

    /// One block fetched (one ranged GET), checked, decoded and put in the cache.
    func fetch(_ key: String, index: TierObject.Index, number: Int) async throws -> [ByteBuffer] {
        let block = index.blocks[number]
        let batches = try TierObject.batches(
            ofBlock: try await store.get(key, range: block.byteRange), block, key: key, number: number)
        cache.put(key, number, batches)
        return batches
    }
}
