import StrataJournal

/// x-expires, RabbitMQ's queue TTL: a queue unused for its x-expires milliseconds is deleted.
/// Unused means no consumer on any gateway, no basic.get and no queue.declare of it for that
/// long. The evidence is in the journal (KV namespace `amqp`), so every gateway on it judges
/// alike:
/// - key `u` (last use, ms) is written when the queue is declared, on each basic.get, and when
///   the last consumer of a gateway goes;
/// - key `c` (consumers seen, ms) is written by each gateway that has consumers on the queue
///   when the first starts and every half second after; it is stale 2 s after the last write
///   (a gateway that died stops writing it).
/// Each gateway's half-second tick deletes a queue it has no consumers of once `c` is stale and
/// x-expires has passed since the later of the two.
///
/// Exclusive queues go with their connection. When the connection's gateway was killed, the
/// others find out from key `g` (the gateway's heartbeat, ms), which each gateway writes when it
/// starts and every half second: an exclusive queue whose owner's gateway has not written it for
/// 5 s is deleted by whichever gateway's tick sees that first.
extension AMQPGateway {
    static let lastUseKind: UInt8 = 0x75  // "u"
    static let consumersSeenKind: UInt8 = 0x63  // "c"
    static let gatewayAliveKind: UInt8 = 0x67  // "g"
    /// How long a gateway is taken to be alive after its last `g` write.
    static let gatewayGraceMilliseconds: Int64 = 5_000
    /// How long a gateway's consumers count after its last `c` write.
    static let consumersGraceMilliseconds: Int64 = 2_000

    private static func usageKey(_ kind: UInt8, _ host: String, _ queue: String) -> [UInt8] {
        AMQPVirtualHost.key(kind, [Array(host.utf8), Array(queue.utf8)])
    }

    private static func milliseconds(_ value: [UInt8]?) -> Int64? {
        guard let value, value.count == 8 else { return nil }
        return value.reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

    private static func bytes(_ value: Int64) -> [UInt8] {
        (0..<8).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    /// The queue was used now (declared, read with basic.get, its last consumer here went).
    func markUsed(virtualHost: String, queue: String, arguments: AMQPQueueArguments) async throws {
        guard arguments.expires != nil else { return }
        try await journal.put(
            namespace: AMQPVirtualHost.namespace, key: Self.usageKey(Self.lastUseKind, virtualHost, queue),
            value: Self.bytes(WallClock.milliseconds()))
    }

    /// This gateway has consumers on the queue now.
    func markConsumed(virtualHost: String, queue: String, arguments: AMQPQueueArguments) async throws {
        guard arguments.expires != nil else { return }
        try await journal.put(
            namespace: AMQPVirtualHost.namespace, key: Self.usageKey(Self.consumersSeenKind, virtualHost, queue),
            value: Self.bytes(WallClock.milliseconds()))
    }

    /// One tick: renews `c` for the queues with an x-expires this gateway consumes, and deletes
    /// those unused for longer than their x-expires.
    func expireQueues(in host: AMQPVirtualHost) async {
        let now = WallClock.milliseconds()
        for (queue, record) in await host.state.queues {
            guard let expires = record.parsed.expires else { continue }
            do {
                if localConsumers(host.name, queue).count > 0 {
                    try await markConsumed(virtualHost: host.name, queue: queue, arguments: record.parsed)
                    continue
                }
                let lastUse = Self.milliseconds(
                    try await journal.get(
                        namespace: AMQPVirtualHost.namespace, key: Self.usageKey(Self.lastUseKind, host.name, queue)))
                guard let lastUse else {
                    // No use recorded (a queue declared before the key existed): from now on.
                    try await markUsed(virtualHost: host.name, queue: queue, arguments: record.parsed)
                    continue
                }
                let seen =
                    Self.milliseconds(
                        try await journal.get(
                            namespace: AMQPVirtualHost.namespace,
                            key: Self.usageKey(Self.consumersSeenKind, host.name, queue))) ?? 0
                guard now - seen > Self.consumersGraceMilliseconds, now - max(lastUse, seen) >= Int64(expires) else {
                    continue
                }
                try await drop(queue, in: host)
                logger.info(
                    "amqp queue expired",
                    metadata: ["amqp.vhost": "\(host.name)", "amqp.queue": "\(queue)", "amqp.expires": "\(expires)"])
            } catch {
                logger.warning("amqp queue expiry failed", metadata: ["amqp.queue": "\(queue)", "error": "\(error)"])
            }
        }
    }

    /// Deletes a queue nobody holds (its bindings, messages and keys).
    private func drop(_ queue: String, in host: AMQPVirtualHost) async throws {
        try await host.change { state throws(AMQPError) in
            state.queues[queue] = nil
            state.routing.deleteQueue(queue)
        }
        try await deleteStorage(virtualHost: host.name, queue: queue)
    }

    // MARK: Exclusive queues of connections that are gone

    /// This gateway is alive: its connections' exclusive queues stay.
    func markAlive() async throws {
        try await journal.put(
            namespace: AMQPVirtualHost.namespace,
            key: AMQPVirtualHost.key(Self.gatewayAliveKind, [Array(instance.utf8)]),
            value: Self.bytes(WallClock.milliseconds()))
    }

    /// Gone for good (a clean shutdown): its heartbeat key goes too.
    func markGone() async {
        try? await journal.delete(
            namespace: AMQPVirtualHost.namespace,
            key: AMQPVirtualHost.key(Self.gatewayAliveKind, [Array(instance.utf8)]))
    }

    /// Whether the gateway process `instance` wrote its heartbeat within the grace period.
    func isAlive(gateway instance: String) async throws -> Bool {
        let heard = Self.milliseconds(
            try await journal.get(
                namespace: AMQPVirtualHost.namespace,
                key: AMQPVirtualHost.key(Self.gatewayAliveKind, [Array(instance.utf8)])))
        return heard.map { WallClock.milliseconds() - $0 <= Self.gatewayGraceMilliseconds } ?? false
    }

    /// Deletes the exclusive queues whose connection is gone: one of this gateway's that ended
    /// (its own deletion failed), or any of a gateway that stopped writing its heartbeat.
    func dropOrphanedExclusiveQueues(in host: AMQPVirtualHost) async {
        for (queue, record) in await host.state.queues {
            guard let owner = record.owner else { continue }
            let parts = owner.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            do {
                let orphaned: Bool
                if parts[0] == instance {
                    orphaned = !isOpen(UInt64(parts[1]) ?? .max)
                } else {
                    orphaned = !(try await isAlive(gateway: parts[0]))
                }
                guard orphaned else { continue }
                try await drop(queue, in: host)
                logger.info(
                    "amqp exclusive queue of a connection that is gone deleted",
                    metadata: ["amqp.vhost": "\(host.name)", "amqp.queue": "\(queue)", "amqp.owner": "\(owner)"])
            } catch {
                logger.warning(
                    "amqp exclusive queue cleanup failed", metadata: ["amqp.queue": "\(queue)", "error": "\(error)"])
            }
        }
    }

    /// The usage keys of a deleted queue go with it.
    func forgetUsage(virtualHost: String, queue: String) async throws {
        for kind in [Self.lastUseKind, Self.consumersSeenKind] {
            try await journal.delete(namespace: AMQPVirtualHost.namespace, key: Self.usageKey(kind, virtualHost, queue))
        }
    }
}
