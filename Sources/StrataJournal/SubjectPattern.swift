/// Level-wise patterns over record subjects, the one matcher behind MQTT topic filters and
/// (with `.` and `*`) AMQP topic bindings: a single-level wildcard fills exactly one level, a
/// multi-level wildcard, last, fills the rest including none (`a/#` matches `a`).
public struct SubjectPattern: Sendable, Hashable, Codable {
    public var pattern: String
    public var separator: UInt8
    public var single: UInt8
    public var multi: UInt8

    /// MQTT's syntax: `/`, `+`, `#`.
    public static func mqtt(_ filter: String) -> SubjectPattern {
        SubjectPattern(
            pattern: filter, separator: UInt8(ascii: "/"), single: UInt8(ascii: "+"), multi: UInt8(ascii: "#"))
    }

    public init(pattern: String, separator: UInt8, single: UInt8, multi: UInt8) {
        self.pattern = pattern
        self.separator = separator
        self.single = single
        self.multi = multi
    }

    /// Whether `subject` matches. A subject starting with `$` is not matched by a pattern
    /// starting with a wildcard (MQTT 4.7.2; `$` subjects never leave the MQTT gateway).
    public func matches(_ subject: String) -> Bool {
        let subjectBytes = subject.utf8
        let patternBytes = pattern.utf8
        if subjectBytes.first == UInt8(ascii: "$"), let first = patternBytes.first, first == single || first == multi {
            return false
        }
        var patternLevels = patternBytes.split(separator: separator, omittingEmptySubsequences: false)[...]
        var subjectLevels = subjectBytes.split(separator: separator, omittingEmptySubsequences: false)[...]
        while let level = patternLevels.first {
            if level.count == 1 && level.first == multi { return true }
            guard let subjectLevel = subjectLevels.first else { return false }
            if !(level.count == 1 && level.first == single) && !level.elementsEqual(subjectLevel) { return false }
            patternLevels = patternLevels.dropFirst()
            subjectLevels = subjectLevels.dropFirst()
        }
        return subjectLevels.isEmpty
    }

    /// The subject of a record of topic `root` (docs/topics.md): its key when that is valid
    /// UTF-8 naming `root` or a subject below it (no wildcard characters, no NUL), else `root`.
    public func subject(ofKey key: [UInt8]?, root: String) -> String {
        guard let key, key.count <= 65_535, let name = String(validating: key, as: UTF8.self) else { return root }
        guard name == root || name.utf8.starts(with: Array(root.utf8) + [separator]) else { return root }
        guard !key.contains(where: { $0 == 0 || $0 == single || $0 == multi }) else { return root }
        return name
    }
}
