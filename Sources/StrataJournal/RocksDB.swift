import CRocksDB
import Synchronization

/// The one owner of a RocksDB handle and its option objects. RocksDB's C API is thread-safe
/// for concurrent reads and writes on one handle, which is what makes this Sendable.
final class RocksDB: @unchecked Sendable {  // The C handle is thread-safe; all fields are immutable.
    private let db: OpaquePointer
    private let options: OpaquePointer
    private let tableOptions: OpaquePointer
    private let cache: OpaquePointer
    private let syncWrite: OpaquePointer
    private let unsyncedWrite: OpaquePointer
    private let readOptions: OpaquePointer
    let path: String
    private let closed = Mutex(false)

    /// Opens (creating when missing) the database at `path`, with an LRU block cache of
    /// `cacheBytes` for data blocks. Tables' index blocks stay with their table readers, outside
    /// it (RocksDB's default): they grow with the number of keys (`memoryUsage` shows how much).
    /// With them in the cache (cache_index_and_filter_blocks) an hour-long soak ran at 0.71× its
    /// first ten minutes' throughput on a CPU-bound two-core machine, against 0.92× without, and
    /// its RSS floor was higher (docs/benchmarks.md, "Soak"); which of that run's changes cost
    /// the throughput is not yet separated.
    init(path: String, cacheBytes: Int) throws(JournalError) {
        let options = rocksdb_options_create()!
        rocksdb_options_set_create_if_missing(options, 1)
        rocksdb_options_increase_parallelism(options, 2)
        rocksdb_options_set_compression(options, Int32(rocksdb_lz4_compression))
        rocksdb_options_set_max_open_files(options, 512)
        rocksdb_options_set_write_buffer_size(options, 16 << 20)
        // Tables are written back 1 MiB at a time while they are written, not all at their final
        // fsync: a burst of tens of MiB ahead of it in the disk's queue would delay WAL syncs.
        rocksdb_options_set_bytes_per_sync(options, 1 << 20)
        let cache = rocksdb_cache_create_lru(cacheBytes)!
        let tableOptions = rocksdb_block_based_options_create()!
        rocksdb_block_based_options_set_block_cache(tableOptions, cache)
        rocksdb_options_set_block_based_table_factory(options, tableOptions)
        var error: UnsafeMutablePointer<CChar>?
        let handle = rocksdb_open(options, path, &error)
        guard let handle, error == nil else {
            rocksdb_options_destroy(options)
            rocksdb_block_based_options_destroy(tableOptions)
            rocksdb_cache_destroy(cache)
            throw JournalError(.ioError, "cannot open the index database at \(path): \(Self.consume(error))")
        }
        self.db = handle
        self.options = options
        self.tableOptions = tableOptions
        self.cache = cache
        self.path = path
        // Catalog, consumer offsets and gateway KV: on disk before the call returns.
        syncWrite = rocksdb_writeoptions_create()!
        rocksdb_writeoptions_set_sync(syncWrite, 1)
        // The batch index: rebuilt from the WAL past the last checkpoint, so no RocksDB WAL at all.
        unsyncedWrite = rocksdb_writeoptions_create()!
        rocksdb_writeoptions_disable_WAL(unsyncedWrite, 1)
        readOptions = rocksdb_readoptions_create()!
    }

    /// Closes the database (releasing its lock file) once every user has stopped.
    func close() {
        let wasClosed = closed.withLock { closed in
            defer { closed = true }
            return closed
        }
        if !wasClosed { rocksdb_close(db) }
    }

    deinit {
        close()
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_writeoptions_destroy(syncWrite)
        rocksdb_writeoptions_destroy(unsyncedWrite)
        rocksdb_options_destroy(options)
        rocksdb_block_based_options_destroy(tableOptions)
        rocksdb_cache_destroy(cache)
    }

    /// Memory the database holds: the block cache (data, index and filter blocks), table
    /// readers outside it, and the memtables.
    var memoryUsage: IndexMemory {
        func property(_ name: String) -> Int {
            guard let value = rocksdb_property_value(db, name) else { return 0 }
            defer { rocksdb_free(value) }
            return Int(String(cString: value)) ?? 0
        }
        guard (try? checkOpen()) != nil else { return IndexMemory() }
        return IndexMemory(
            cacheBytes: Int(rocksdb_cache_get_usage(cache)),
            tableReaderBytes: property("rocksdb.estimate-table-readers-mem"),
            memtableBytes: property("rocksdb.cur-size-all-mem-tables"))
    }

    private static func consume(_ error: UnsafeMutablePointer<CChar>?) -> String {
        guard let error else { return "unknown error" }
        defer { rocksdb_free(error) }
        return String(cString: error)
    }

    private func check(_ error: UnsafeMutablePointer<CChar>?, _ what: String) throws(JournalError) {
        if let error {
            throw JournalError(.ioError, "index database \(what) failed: \(Self.consume(error))")
        }
    }

    private func checkOpen() throws(JournalError) {
        if closed.withLock({ $0 }) { throw JournalError(.closed, "the index database is closed") }
    }

    func get(_ key: [UInt8]) throws(JournalError) -> [UInt8]? {
        try checkOpen()
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        let value = key.withUnsafeBufferPointer { key in
            key.withMemoryRebound(to: CChar.self) {
                rocksdb_get(db, readOptions, $0.baseAddress, $0.count, &length, &error)
            }
        }
        try check(error, "get")
        guard let value else { return nil }
        defer { rocksdb_free(value) }
        return value.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    /// Writes `batch` atomically; `durable` syncs RocksDB's own WAL before returning.
    func write(_ batch: WriteBatch, durable: Bool) throws(JournalError) {
        try checkOpen()
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_write(db, durable ? syncWrite : unsyncedWrite, batch.handle, &error)
        try check(error, "write")
    }

    func put(_ key: [UInt8], _ value: [UInt8], durable: Bool) throws(JournalError) {
        let batch = WriteBatch()
        batch.put(key, value)
        try write(batch, durable: durable)
    }

    func delete(_ key: [UInt8], durable: Bool) throws(JournalError) {
        let batch = WriteBatch()
        batch.delete(key)
        try write(batch, durable: durable)
    }

    /// Flushes the memtables to SST files and waits: everything written so far, with or without
    /// RocksDB's WAL, is then on disk.
    func flush() throws(JournalError) {
        try checkOpen()
        let flushOptions = rocksdb_flushoptions_create()!
        defer { rocksdb_flushoptions_destroy(flushOptions) }
        rocksdb_flushoptions_set_wait(flushOptions, 1)
        var error: UnsafeMutablePointer<CChar>?
        rocksdb_flush(db, flushOptions, &error)
        try check(error, "flush")
    }

    func makeIterator() -> Iterator { Iterator(rocksdb_create_iterator(db, readOptions)!) }

    /// Calls `body` with every key/value whose key starts with `prefix`, in key order, until it returns false.
    func scan(prefix: [UInt8], from start: [UInt8]? = nil, _ body: (ArraySlice<UInt8>, [UInt8]) throws -> Bool) rethrows
    {
        let iterator = makeIterator()
        iterator.seek(start ?? prefix)
        while iterator.isValid {
            let key = iterator.key
            guard key.starts(with: prefix) else { return }
            guard try body(key[...], iterator.value) else { return }
            iterator.next()
        }
    }

    final class WriteBatch {
        let handle: OpaquePointer
        init() { handle = rocksdb_writebatch_create()! }
        deinit { rocksdb_writebatch_destroy(handle) }

        var count: Int { Int(rocksdb_writebatch_count(handle)) }

        func put(_ key: [UInt8], _ value: [UInt8]) {
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    rocksdb_writebatch_put(
                        handle, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count,
                        v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
                }
            }
        }

        func delete(_ key: [UInt8]) {
            key.withUnsafeBytes { k in
                rocksdb_writebatch_delete(handle, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count)
            }
        }

        /// Deletes every key in [start, end).
        func deleteRange(_ start: [UInt8], _ end: [UInt8]) {
            start.withUnsafeBytes { s in
                end.withUnsafeBytes { e in
                    rocksdb_writebatch_delete_range(
                        handle, s.baseAddress?.assumingMemoryBound(to: CChar.self), s.count,
                        e.baseAddress?.assumingMemoryBound(to: CChar.self), e.count)
                }
            }
        }
    }

    final class Iterator {
        private let handle: OpaquePointer
        init(_ handle: OpaquePointer) { self.handle = handle }
        deinit { rocksdb_iter_destroy(handle) }

        var isValid: Bool { rocksdb_iter_valid(handle) != 0 }
        func seek(_ key: [UInt8]) {
            key.withUnsafeBytes {
                rocksdb_iter_seek(handle, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count)
            }
        }
        /// Positions at the last key <= `key`.
        func seekForPrev(_ key: [UInt8]) {
            key.withUnsafeBytes {
                rocksdb_iter_seek_for_prev(handle, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count)
            }
        }
        func next() { rocksdb_iter_next(handle) }
        func previous() { rocksdb_iter_prev(handle) }
        var key: [UInt8] {
            var length = 0
            let pointer = rocksdb_iter_key(handle, &length)!
            return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
            }
        }
        var value: [UInt8] {
            var length = 0
            guard let pointer = rocksdb_iter_value(handle, &length) else { return [] }
            return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
            }
        }
    }
}
