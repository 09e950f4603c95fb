import StrataJournal

/// Topic names and filters (MQTT 4.7): validation, matching, shared subscriptions.
public enum MQTTTopic {
    /// A topic name a client may publish to: non-empty, no wildcards.
    public static func isValidName(_ topic: String) -> Bool {
        !topic.isEmpty && topic.utf8.count <= 65_535 && !topic.contains("+") && !topic.contains("#")
    }

    /// A filter: `+` fills a whole level, `#` a whole last level; `$share/GROUP/FILTER` checked too.
    public static func isValidFilter(_ filter: String) -> Bool {
        guard !filter.isEmpty, filter.utf8.count <= 65_535 else { return false }
        if let shared = sharedSubscription(filter) {
            return !shared.group.isEmpty && !shared.group.contains("+") && !shared.group.contains("#")
                && isValidFilter(shared.filter)
        }
        if filter.hasPrefix("$share/") { return false }
        let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
        for (index, level) in levels.enumerated() {
            if level.contains("#") && (level != "#" || index != levels.count - 1) { return false }
            if level.contains("+") && level != "+" { return false }
        }
        return true
    }

    /// `$share/GROUP/FILTER` split into its group and filter.
    public static func sharedSubscription(_ filter: String) -> (group: String, filter: String)? {
        guard filter.hasPrefix("$share/") else { return nil }
        let rest = filter.dropFirst("$share/".count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let inner = rest[rest.index(after: slash)...]
        guard !inner.isEmpty else { return nil }
        return (String(rest[..<slash]), String(inner))
    }

    /// Whether `filter` (not shared) matches `topic`. Topics starting with `$` are not matched
    /// by a filter starting with a wildcard (MQTT 4.7.2).
    public static func matches(filter: String, topic: String) -> Bool {
        SubjectPattern.mqtt(filter).matches(topic)
    }
}
