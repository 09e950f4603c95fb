/// The version string nodes and tools report.
public enum StrataVersion {
    public static let current = "0.1.0"
    /// Journal protocol versions this build speaks.
    public static let protocolVersions: ClosedRange<UInt16> = 2...2
}
