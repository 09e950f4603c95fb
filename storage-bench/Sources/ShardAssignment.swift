/// Which shards a writer or reader works on: worker w of W takes shards w, w+W, w+2W, ... of N,
/// so every shard has one worker when N >= W, and several workers share a shard when N < W.
enum ShardAssignment {
    static func indices(worker: Int, workers: Int, shards: Int) -> [Int] {
        stride(from: worker, to: max(shards, worker + 1), by: workers).map { $0 % shards }
    }

    static func names(worker: Int, workers: Int, of shardNames: [String]) -> [String] {
        indices(worker: worker, workers: workers, shards: shardNames.count).map { shardNames[$0] }
    }
}
