/// Where a published message goes: the exchanges and bindings of one virtual host, as a value,
/// and RabbitMQ's matching rules for each exchange type. The gateway keeps this in the topic
/// registry and routes with it; nothing here does I/O.
public struct AMQPRouting: Sendable, Hashable {
    public enum ExchangeType: String, Sendable, Hashable, CaseIterable {
        case direct, fanout, topic, headers
    }

    public struct Exchange: Sendable, Hashable {
        public var type: ExchangeType
        public var durable: Bool
        public var autoDelete: Bool
        public var `internal`: Bool
        /// The alternate-exchange argument: where messages this exchange cannot route go.
        public var alternate: String?

        public init(
            type: ExchangeType, durable: Bool = true, autoDelete: Bool = false, internal: Bool = false,
            alternate: String? = nil
        ) {
            self.type = type
            self.durable = durable
            self.autoDelete = autoDelete
            self.internal = `internal`
            self.alternate = alternate
        }
    }

    public enum Destination: Sendable, Hashable {
        case queue(String)
        case exchange(String)
    }

    public struct Binding: Sendable, Hashable {
        public var destination: Destination
        public var routingKey: String
        public var arguments: AMQPTable

        public init(destination: Destination, routingKey: String, arguments: AMQPTable = [:]) {
            self.destination = destination
            self.routingKey = routingKey
            self.arguments = arguments
        }
    }

    public private(set) var exchanges: [String: Exchange]
    /// Bindings by source exchange.
    public private(set) var bindings: [String: [Binding]] = [:]
    public private(set) var queues: Set<String> = []

    /// The exchanges every RabbitMQ virtual host has: the default one ("") and the amq.* ones.
    public static let predeclared: [String: Exchange] = [
        "": Exchange(type: .direct), "amq.direct": Exchange(type: .direct), "amq.fanout": Exchange(type: .fanout),
        "amq.topic": Exchange(type: .topic), "amq.headers": Exchange(type: .headers),
        "amq.match": Exchange(type: .headers),
    ]

    public init() { exchanges = Self.predeclared }

    // MARK: Changes (each checked as RabbitMQ checks it)

    /// exchange.declare. An existing exchange must be declared with the same type and flags
    /// (406 otherwise); names starting "amq." are reserved (403); passive only checks (404).
    public mutating func declareExchange(_ name: String, _ exchange: Exchange, passive: Bool) throws(AMQPError) {
        if let existing = exchanges[name] {
            guard
                passive
                    || (existing.type == exchange.type && existing.durable == exchange.durable
                        && existing.autoDelete == exchange.autoDelete && existing.internal == exchange.internal)
            else {
                throw AMQPError(
                    AMQPError.preconditionFailed,
                    "PRECONDITION_FAILED - inequivalent arg for exchange '\(name)': declared \(existing.type.rawValue)"
                        + " durable=\(existing.durable) auto_delete=\(existing.autoDelete) internal=\(existing.internal)"
                )
            }
            return
        }
        if passive { throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(name)'") }
        guard !name.hasPrefix("amq.") else {
            throw AMQPError(
                AMQPError.accessRefused, "ACCESS_REFUSED - exchange name '\(name)' contains reserved prefix 'amq.*'")
        }
        exchanges[name] = exchange
    }

    /// exchange.delete; the predeclared ones cannot go (403); if-unused refuses one with
    /// bindings from it (406). Bindings to and from it go with it.
    public mutating func deleteExchange(_ name: String, ifUnused: Bool) throws(AMQPError) {
        guard exchanges[name] != nil else { throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(name)'") }
        guard Self.predeclared[name] == nil else {
            throw AMQPError(AMQPError.accessRefused, "ACCESS_REFUSED - operation not permitted on exchange '\(name)'")
        }
        if ifUnused, !(bindings[name] ?? []).isEmpty {
            throw AMQPError(AMQPError.preconditionFailed, "PRECONDITION_FAILED - exchange '\(name)' in use")
        }
        exchanges[name] = nil
        bindings[name] = nil
        removeBindings(to: .exchange(name))
    }

    public mutating func declareQueue(_ name: String) { queues.insert(name) }

    /// A queue deleted: its bindings go, and auto-delete exchanges left without bindings.
    public mutating func deleteQueue(_ name: String) {
        queues.remove(name)
        removeBindings(to: .queue(name))
    }

    /// queue.bind and exchange.bind. The default exchange takes no bindings (403); the
    /// source and destination must exist (404). Binding twice is one binding.
    public mutating func bind(_ binding: Binding, from source: String) throws(AMQPError) {
        guard !source.isEmpty else {
            throw AMQPError(AMQPError.accessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
        }
        guard exchanges[source] != nil else {
            throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(source)'")
        }
        try checkExists(binding.destination)
        if case .headers = exchanges[source]!.type, let match = binding.arguments["x-match"] {
            guard let mode = match.stringValue, ["all", "any", "all-with-x", "any-with-x"].contains(mode) else {
                throw AMQPError(
                    AMQPError.preconditionFailed, "PRECONDITION_FAILED - invalid x-match field value \(match)")
            }
        }
        if !(bindings[source] ?? []).contains(binding) { bindings[source, default: []].append(binding) }
    }

    /// queue.unbind and exchange.unbind: unbinding what is not bound succeeds, as in RabbitMQ
    /// 3.x; a missing exchange or queue is 404.
    public mutating func unbind(_ binding: Binding, from source: String) throws(AMQPError) {
        guard exchanges[source] != nil else {
            throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(source)'")
        }
        try checkExists(binding.destination)
        bindings[source]?.removeAll { $0 == binding }
        if bindings[source]?.isEmpty == true { bindings[source] = nil }
        deleteIfUnused(source)
    }

    private func checkExists(_ destination: Destination) throws(AMQPError) {
        switch destination {
        case .queue(let name) where !queues.contains(name):
            throw AMQPError(AMQPError.notFound, "NOT_FOUND - no queue '\(name)'")
        case .exchange(let name) where exchanges[name] == nil:
            throw AMQPError(AMQPError.notFound, "NOT_FOUND - no exchange '\(name)'")
        default: break
        }
    }

    private mutating func removeBindings(to destination: Destination) {
        for source in bindings.keys {
            let before = bindings[source]!.count
            bindings[source]!.removeAll { $0.destination == destination }
            let after = bindings[source]!.count
            // No key without bindings: a host's value is the same however it came about.
            if after == 0 { bindings[source] = nil }
            if after < before { deleteIfUnused(source) }
        }
    }

    /// An auto-delete exchange goes when its last binding does.
    private mutating func deleteIfUnused(_ name: String) {
        guard let exchange = exchanges[name], exchange.autoDelete, (bindings[name] ?? []).isEmpty else { return }
        exchanges[name] = nil
        bindings[name] = nil
        removeBindings(to: .exchange(name))
    }

    // MARK: Routing

    /// The queues a message published to `exchange` with `routingKey` and `headers` reaches,
    /// through exchange-to-exchange bindings and alternate exchanges, each queue once.
    public func route(exchange name: String, routingKey: String, headers: AMQPTable?) -> Set<String> {
        var queues: Set<String> = []
        var visited: Set<String> = []
        route(name, routingKey, headers ?? [:], into: &queues, visited: &visited)
        return queues
    }

    private func route(
        _ name: String, _ routingKey: String, _ headers: AMQPTable, into queues: inout Set<String>,
        visited: inout Set<String>
    ) {
        guard let exchange = exchanges[name], visited.insert(name).inserted else { return }
        // The alternate exchange takes what matched no binding at all (as RabbitMQ: a match to
        // another exchange that then routes nowhere does not count as unroutable here).
        var matched = false
        if name.isEmpty {
            if self.queues.contains(routingKey) {
                queues.insert(routingKey)
                matched = true
            }
        } else {
            for binding in bindings[name] ?? [] where Self.matches(exchange.type, binding, routingKey, headers) {
                matched = true
                switch binding.destination {
                case .queue(let queue): queues.insert(queue)
                case .exchange(let next): route(next, routingKey, headers, into: &queues, visited: &visited)
                }
            }
        }
        if !matched, let alternate = exchange.alternate {
            route(alternate, routingKey, headers, into: &queues, visited: &visited)
        }
    }

    static func matches(_ type: ExchangeType, _ binding: Binding, _ routingKey: String, _ headers: AMQPTable) -> Bool {
        switch type {
        case .direct: binding.routingKey == routingKey
        case .fanout: true
        case .topic: topicMatches(pattern: binding.routingKey, routingKey: routingKey)
        case .headers: headersMatch(binding.arguments, headers)
        }
    }

    /// RabbitMQ's topic rule: words separated by dots, `*` one word, `#` zero or more words.
    /// Dynamic programming over (pattern word, key word), so no pattern takes exponential time.
    public static func topicMatches(pattern: String, routingKey: String) -> Bool {
        func words(_ s: String) -> [Substring] {
            s.isEmpty ? [] : s.split(separator: ".", omittingEmptySubsequences: false)
        }
        let key = words(routingKey)
        // reachable[j]: the pattern words so far can match the first j key words.
        var reachable = [Bool](repeating: false, count: key.count + 1)
        reachable[0] = true
        for word in words(pattern) {
            var next = [Bool](repeating: false, count: key.count + 1)
            if word == "#" {
                if let first = reachable.firstIndex(of: true) { for j in first...key.count { next[j] = true } }
            } else {
                for j in 0..<key.count where reachable[j] && (word == "*" || word == key[j]) { next[j + 1] = true }
            }
            reachable = next
        }
        return reachable[key.count]
    }

    /// The headers exchange: `x-match` all (the default) or any; the -with-x forms also
    /// compare arguments starting "x-". A void binding value matches any value of that name.
    public static func headersMatch(_ arguments: AMQPTable, _ headers: AMQPTable) -> Bool {
        let mode = arguments["x-match"]?.stringValue ?? "all"
        let withX = mode.hasSuffix("-with-x")
        let required = arguments.entries.filter { $0.key != "x-match" && (withX || !$0.key.hasPrefix("x-")) }
        func present(_ entry: AMQPTable.Entry) -> Bool {
            guard let value = headers[entry.key] else { return false }
            return entry.value == .void || value == entry.value
        }
        if mode.hasPrefix("any") { return required.contains(where: present) }
        return required.allSatisfy(present)
    }
}
