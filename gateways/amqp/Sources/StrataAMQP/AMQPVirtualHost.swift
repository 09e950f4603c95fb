import Foundation
import NIOCore
import StrataClient
import StrataJournal
import StrataTopics
import Synchronization

/// A queue as the virtual host keeps it: its flags, its owner when exclusive, its arguments as
/// declared and as understood.
public struct AMQPQueueRecord: Sendable, Hashable {
    public var durable: Bool
    public var autoDelete: Bool
    /// The connection that owns an exclusive queue (`AMQPGateway.connectionName`).
    public var owner: String?
    public var arguments: AMQPTable
    public var parsed: AMQPQueueArguments

    public init(durable: Bool, autoDelete: Bool, owner: String?, arguments: AMQPTable) throws(AMQPError) {
        self.durable = durable
        self.autoDelete = autoDelete
        self.owner = owner
        self.arguments = arguments
        parsed = try AMQPQueueArguments(arguments)
    }
}

/// One virtual host's exchanges, queues and bindings: the `AMQPRouting` value, kept in the
/// journal's key-value store (namespace `amqp`), one key per exchange, queue and binding, so
/// every gateway process on the journal serves the same virtual host. A change is made in
/// memory first (checked by `AMQPRouting`'s rules), then written; the keys it added, changed and
/// removed are written in the order the changes were made, followed by the host's version
/// token, which other gateways read every 100 ms (`refresh`) to load the host again.
public actor AMQPVirtualHost {
    public struct State: Sendable, Hashable {
        public var routing = AMQPRouting()
        public var queues: [String: AMQPQueueRecord] = [:]
    }

    public static let namespace = "amqp"
    /// The most bytes of arguments a binding may have (they are part of its key).
    public static let maxBindingArgumentBytes = 16 << 10
    public let name: String
    private let journal: any JournalClient
    public private(set) var state = State() {
        didSet { current.withLock { $0 = state } }
    }
    /// `state` for readers that must not wait for the actor (routing each publish).
    private nonisolated let current = Mutex(State())

    /// The host's state as of the last change or load, without waiting for the actor.
    public nonisolated var snapshot: State { current.withLock { $0 } }
    private var version: [UInt8]?
    private var pendingWrites = 0
    /// Changes made by this process: a refresh that read the journal while one was made drops
    /// what it read.
    private var changes = 0
    private let writes = KeyedChain<Void>()

    public init(name: String, journal: any JournalClient) {
        self.name = name
        self.journal = journal
    }

    // MARK: Keys

    static func key(_ kind: UInt8, _ fields: [[UInt8]]) -> [UInt8] {
        var key: [UInt8] = [kind]
        for field in fields {
            key.append(UInt8(field.count >> 8))
            key.append(UInt8(field.count & 0xFF))
            key += field
        }
        return key
    }

    static func fields(of key: [UInt8]) -> [[UInt8]]? {
        var fields: [[UInt8]] = []
        var index = 1
        while index < key.count {
            guard index + 2 <= key.count else { return nil }
            let count = Int(key[index]) << 8 | Int(key[index + 1])
            index += 2
            guard index + count <= key.count else { return nil }
            fields.append(Array(key[index..<index + count]))
            index += count
        }
        return fields
    }

    private static func bytes(_ table: AMQPTable) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeAMQPTable(table)
        return Array(buffer.readableBytesView)
    }

    private static func table(_ bytes: [UInt8]) -> AMQPTable? {
        var buffer = ByteBuffer(bytes: bytes)
        return try? buffer.readAMQPTable()
    }

    private var host: [UInt8] { Array(name.utf8) }

    /// Every key and value that stores `state`.
    func items(_ state: State) -> [[UInt8]: [UInt8]] {
        var items: [[UInt8]: [UInt8]] = [:]
        for (exchange, value) in state.routing.exchanges where AMQPRouting.predeclared[exchange] != value {
            var table: AMQPTable = [
                "type": .string(value.type.rawValue), "durable": .bool(value.durable),
                "auto-delete": .bool(value.autoDelete), "internal": .bool(value.internal),
            ]
            if let alternate = value.alternate { table["alternate-exchange"] = .string(alternate) }
            items[Self.key(0x65, [host, Array(exchange.utf8)])] = Self.bytes(table)
        }
        for (queue, record) in state.queues {
            var table: AMQPTable = [
                "durable": .bool(record.durable), "auto-delete": .bool(record.autoDelete),
                "arguments": .table(record.arguments),
            ]
            if let owner = record.owner { table["owner"] = .string(owner) }
            items[Self.key(0x71, [host, Array(queue.utf8)])] = Self.bytes(table)
        }
        for (source, bindings) in state.routing.bindings {
            for binding in bindings {
                let destination: [UInt8] =
                    switch binding.destination {
                    case .queue(let queue): [0x71] + Array(queue.utf8)
                    case .exchange(let exchange): [0x65] + Array(exchange.utf8)
                    }
                let key = Self.key(
                    0x62,
                    [
                        host, Array(source.utf8), destination, Array(binding.routingKey.utf8),
                        Self.bytes(binding.arguments),
                    ])
                items[key] = []
            }
        }
        return items
    }

    // MARK: Loading

    /// Reads the host from the journal (exchanges, then queues, then bindings, so each binding
    /// finds what it names).
    public func load() async throws {
        let loaded = try await Self.read(name, journal)
        state = loaded.state
        version = loaded.version
    }

    private static func read(_ name: String, _ journal: any JournalClient) async throws -> (
        state: State, version: [UInt8]?
    ) {
        let host = Array(name.utf8)
        let version = try await journal.get(namespace: namespace, key: key(0x76, [host]))
        var state = State()
        let prefix = { (kind: UInt8) in key(kind, [host]) }
        for pair in try await journal.scan(namespace: namespace, prefix: prefix(0x65), limit: .max) {
            guard let fields = fields(of: pair.key), fields.count == 2, let table = table(pair.value),
                let type = table["type"]?.stringValue.flatMap(AMQPRouting.ExchangeType.init(rawValue:))
            else { continue }
            let exchange = AMQPRouting.Exchange(
                type: type, durable: table["durable"]?.boolValue ?? true,
                autoDelete: table["auto-delete"]?.boolValue ?? false, internal: table["internal"]?.boolValue ?? false,
                alternate: table["alternate-exchange"]?.stringValue)
            try? state.routing.declareExchange(String(decoding: fields[1], as: UTF8.self), exchange, passive: false)
        }
        for pair in try await journal.scan(namespace: namespace, prefix: prefix(0x71), limit: .max) {
            guard let fields = fields(of: pair.key), fields.count == 2, let table = table(pair.value) else { continue }
            var arguments = AMQPTable()
            if case .table(let stored)? = table["arguments"] { arguments = stored }
            guard
                let record = try? AMQPQueueRecord(
                    durable: table["durable"]?.boolValue ?? true, autoDelete: table["auto-delete"]?.boolValue ?? false,
                    owner: table["owner"]?.stringValue, arguments: arguments)
            else { continue }
            let queue = String(decoding: fields[1], as: UTF8.self)
            state.queues[queue] = record
            state.routing.declareQueue(queue)
        }
        for pair in try await journal.scan(namespace: namespace, prefix: prefix(0x62), limit: .max) {
            guard let fields = fields(of: pair.key), fields.count == 5, let kind = fields[2].first,
                let arguments = table(fields[4])
            else { continue }
            let target = String(decoding: fields[2].dropFirst(), as: UTF8.self)
            let binding = AMQPRouting.Binding(
                destination: kind == 0x71 ? .queue(target) : .exchange(target),
                routingKey: String(decoding: fields[3], as: UTF8.self), arguments: arguments)
            try? state.routing.bind(binding, from: String(decoding: fields[1], as: UTF8.self))
        }
        return (state, version)
    }

    /// Loads the host again when another process changed it (its version token moved) and no
    /// change of this process is still being written.
    public func refresh() async throws {
        guard pendingWrites == 0 else { return }
        let before = changes
        let current = try await journal.get(namespace: Self.namespace, key: Self.key(0x76, [host]))
        guard current != version else { return }
        let loaded = try await Self.read(name, journal)
        guard pendingWrites == 0, changes == before else { return }
        state = loaded.state
        version = loaded.version
    }

    // MARK: Changes

    /// Runs `body` on the host's state; if it succeeds, the new state is in force at once and
    /// written to the journal before this returns. A write that fails reloads the host from the
    /// journal and throws.
    public func change<T: Sendable>(_ body: (inout State) throws(AMQPError) -> T) async throws -> T {
        var next = state
        let result = try body(&next)
        guard next != state else { return result }
        let before = items(state)
        let after = items(next)
        changes += 1
        state = next
        var token = [UInt8](repeating: 0, count: 8)
        for index in token.indices { token[index] = UInt8.random(in: 0...255) }
        version = token
        let written = token
        pendingWrites += 1
        defer { pendingWrites -= 1 }
        let journal = self.journal
        let versionKey = Self.key(0x76, [host])
        do {
            try await writes.submit(name) { previous in
                _ = await previous?.result
                for (key, value) in after where before[key] != value {
                    try await journal.put(namespace: Self.namespace, key: key, value: value)
                }
                for key in before.keys where after[key] == nil {
                    try await journal.delete(namespace: Self.namespace, key: key)
                }
                try await journal.put(namespace: Self.namespace, key: versionKey, value: written)
            }.value
        } catch {
            version = nil
            throw error
        }
        return result
    }
}
