import Testing

@testable import StrataMQTT

/// The routing index must agree with the filter matching rules for every filter and topic.
@Suite struct MQTTSubscriptionTreeTests {
    static let filters = [
        "#", "+", "+/+", "a", "a/#", "a/+", "a/b", "a/b/c", "a/+/c", "+/b/#", "a//c", "a/+/+", "/a", "+/#",
        "$SYS/#", "$SYS/+", "$share/g/a/#", "$share/g/+/b", "$share/h/#",
    ]
    static let topics = ["a", "a/b", "a/b/c", "a/x/c", "a//c", "/a", "b", "x/b/y", "$SYS/load", "$SYS", "a/b/c/d", ""]

    static func session(_ id: String) -> MQTTSession {
        MQTTSession(
            clientID: id, version: .v5, receiveMaximum: 10, maxQueued: 10, clientMaxPacketSize: nil, overflow: {})
    }

    static func subscription(_ filter: String) -> MQTTSession.Subscription {
        .init(filter: filter, qos: 1, noLocal: false, retainAsPublished: false, identifier: nil)
    }

    @Test func agreesWithFilterMatching() {
        var tree = MQTTSubscriptionTree()
        let sessions = [Self.session("one"), Self.session("two")]
        for session in sessions {
            for filter in Self.filters { tree.insert(Self.subscription(filter), of: session) }
        }
        for topic in Self.topics {
            let found = tree.matches(topic).map { "\($0.session.clientID) \($0.subscription.filter)" }.sorted()
            let expected = sessions.flatMap { session in
                Self.filters.filter { filter in
                    MQTTTopic.matches(filter: MQTTTopic.sharedSubscription(filter)?.filter ?? filter, topic: topic)
                }.map { "\(session.clientID) \($0)" }
            }.sorted()
            #expect(found == expected, "topic \(topic)")
        }
    }

    @Test func removalLeavesOthersAndPrunes() {
        var tree = MQTTSubscriptionTree()
        let (one, two) = (Self.session("one"), Self.session("two"))
        tree.insert(Self.subscription("a/+"), of: one)
        tree.insert(Self.subscription("a/+"), of: two)
        tree.insert(Self.subscription("a/b/#"), of: one)
        tree.remove(Self.subscription("a/+"), of: one)
        #expect(tree.matches("a/b").map(\.session.clientID).sorted() == ["one", "two"])  // two's a/+, one's a/b/#
        tree.remove(Self.subscription("a/b/#"), of: one)
        #expect(tree.matches("a/b").map(\.session.clientID) == ["two"])
        // A replaced session's entry is not removed by the old one.
        let newer = Self.session("two")
        tree.insert(Self.subscription("a/+"), of: newer)
        tree.remove(Self.subscription("a/+"), of: two)
        #expect(tree.matches("a/q").count == 1 && tree.matches("a/q")[0].session === newer)
        tree.remove(Self.subscription("a/+"), of: newer)
        #expect(tree.matches("a/q").isEmpty)
    }
}
