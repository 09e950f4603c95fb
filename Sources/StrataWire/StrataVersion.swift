/// The version string nodes and tools report.
public enum StrataVersion {
    public static let current = "0.1.0"
    /// Journal protocol versions this build speaks (3 added `authenticate` and the hello
    /// answer's authentication flag, 4 `alterShard`, 5 the queue requests, 6 a shard's batch limit
    /// in its configuration).
    public static let protocolVersions: ClosedRange<UInt16> = 2...6

}
