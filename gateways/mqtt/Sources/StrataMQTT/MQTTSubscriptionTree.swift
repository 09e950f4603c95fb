/// The subscriptions of the connected sessions, indexed by filter level, so that routing a
/// message costs the levels of its topic and the subscriptions it matches — not every
/// subscription of every session. Not thread-safe: the gateway keeps it under its registry lock.
struct MQTTSubscriptionTree {
    /// One subscriber's entry: the session and its subscription (shared ones under their inner filter).
    typealias Entry = (session: MQTTSession, subscription: MQTTSession.Subscription)

    private struct Node {
        var children: [Substring: Node] = [:]
        /// Subscriptions whose filter ends at this node, by client id and filter as written.
        var entries: [String: Entry] = [:]

        var isEmpty: Bool { children.isEmpty && entries.isEmpty }

        mutating func insert(_ levels: ArraySlice<Substring>, key: String, entry: Entry) {
            guard let level = levels.first else {
                entries[key] = entry
                return
            }
            children[level, default: Node()].insert(levels.dropFirst(), key: key, entry: entry)
        }

        /// Removes `key` if it belongs to `session`; empty nodes are pruned on the way back.
        mutating func remove(_ levels: ArraySlice<Substring>, key: String, session: MQTTSession) {
            guard let level = levels.first else {
                if entries[key]?.session === session { entries[key] = nil }
                return
            }
            guard var child = children.removeValue(forKey: level) else { return }
            child.remove(levels.dropFirst(), key: key, session: session)
            if !child.isEmpty { children[level] = child }
        }

        func collect(_ topic: ArraySlice<Substring>, root: Bool, dollar: Bool, into result: inout [Entry]) {
            // A leading wildcard does not match a `$` topic (MQTT 4.7.2).
            let wildcards = !(root && dollar)
            if wildcards, let all = children["#"] { result.append(contentsOf: all.entries.values) }
            guard let level = topic.first else {
                result.append(contentsOf: entries.values)
                return
            }
            children[level]?.collect(topic.dropFirst(), root: false, dollar: dollar, into: &result)
            if wildcards { children["+"]?.collect(topic.dropFirst(), root: false, dollar: dollar, into: &result) }
        }
    }

    private var root = Node()

    private static func levels(_ filter: String) -> ArraySlice<Substring> {
        filter.split(separator: "/", omittingEmptySubsequences: false)[...]
    }

    /// The filter a subscription is indexed under: a shared subscription's inner filter.
    private static func indexed(_ subscription: MQTTSession.Subscription) -> String {
        subscription.shared?.filter ?? subscription.filter
    }

    mutating func insert(_ subscription: MQTTSession.Subscription, of session: MQTTSession) {
        root.insert(
            Self.levels(Self.indexed(subscription)), key: session.clientID + "\u{0}" + subscription.filter,
            entry: (session, subscription))
    }

    mutating func remove(_ subscription: MQTTSession.Subscription, of session: MQTTSession) {
        root.remove(
            Self.levels(Self.indexed(subscription)), key: session.clientID + "\u{0}" + subscription.filter,
            session: session)
    }

    /// Every subscription whose filter matches `topic`.
    func matches(_ topic: String) -> [Entry] {
        var result: [Entry] = []
        root.collect(Self.levels(topic), root: true, dollar: topic.hasPrefix("$"), into: &result)
        return result
    }
}
