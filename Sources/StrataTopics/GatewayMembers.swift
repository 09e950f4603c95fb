import Foundation
import Logging
import StrataClient
import StrataJournal
import Synchronization

/// The gateway processes of one protocol serving a journal, and which of them owns a key (a
/// Kafka group, …): each member rewrites its entry (KV namespace `<protocol>.gateways`, key =
/// member id) every `heartbeat`; an entry not rewritten for `lease` is a dead member. A key's
/// owner is the live member with the highest rendezvous hash of (key, member id), so members
/// agree without talking to each other, and a key moves only when its owner comes or goes. A
/// member owns keys only once it has been in the list for `settle` (every member has seen it
/// by then), which keeps two members from both owning a key while the newcomer is announced.
public final class GatewayMembers: Sendable {
    public struct Member: Codable, Sendable, Hashable {
        public var id: Int32
        public var host: String
        public var port: Int32
        /// A random token of the process, telling two processes with one id apart.
        public var instance: String
        /// When it first wrote its entry, and last rewrote it (`WallClock` ms).
        public var joined: Int64
        public var heartbeat: Int64

        public init(id: Int32, host: String, port: Int32, instance: String, joined: Int64, heartbeat: Int64) {
            self.id = id
            self.host = host
            self.port = port
            self.instance = instance
            self.joined = joined
            self.heartbeat = heartbeat
        }
    }

    public let namespace: String
    public let journal: any JournalClient
    private let logger: Logger
    private let heartbeat: Duration
    private let lease: Int64
    private let settle: Int64
    private let state: Mutex<(me: Member, live: [Member])>

    public init(
        protocol name: String, id: Int32, host: String, port: Int32, journal: any JournalClient, logger: Logger,
        heartbeat: Duration = .seconds(1), lease: Duration = .seconds(5)
    ) {
        namespace = "\(name).gateways"
        self.journal = journal
        self.logger = logger
        self.heartbeat = heartbeat
        self.lease = lease.nanoseconds / 1_000_000
        settle = 2 * (heartbeat.nanoseconds / 1_000_000)
        let now = WallClock.milliseconds()
        let me = Member(id: id, host: host, port: port, instance: UUID().uuidString, joined: now, heartbeat: now)
        state = Mutex((me, [me]))
    }

    /// This process.
    public var me: Member { state.withLock { $0.me } }

    /// The live members as last read, this one included, by id.
    public var live: [Member] { state.withLock { $0.live } }

    /// Announces this member. Another process's entry with this id at another address holds
    /// the id until its lease runs out (a killed gateway restarted at once waits for that);
    /// one still renewed then is a second gateway with this id, and joining fails.
    public func join() async throws {
        let me = self.me
        let deadline = ContinuousClock.now + .milliseconds(lease) + heartbeat
        while true {
            let others = try await read()
            let clash = others.first { $0.id == me.id && ($0.host != me.host || $0.port != me.port) }
            guard let clash else {
                try await write()
                state.withLock { $0.live = Self.merge(others, me) }
                return
            }
            guard ContinuousClock.now < deadline else {
                throw JournalError(
                    .invalidArgument,
                    "gateway id \(me.id) is in use by \(clash.host):\(clash.port) (\(namespace)); give each gateway its own id"
                )
            }
            logger.notice(
                "gateway id held by another address; waiting for its lease",
                metadata: ["gateway.id": "\(me.id)", "gateway.holder": "\(clash.host):\(clash.port)"])
            try await Task.sleep(for: heartbeat)
        }
    }

    /// Rewrites this member's entry and reads the others every `heartbeat` until cancelled.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: heartbeat)
            guard !Task.isCancelled else { return }  // shutting down: not a failed renewal
            do {
                try await write()
                let others = try await read()
                state.withLock { $0.live = Self.merge(others, $0.me) }
            } catch {
                logger.warning(
                    "gateway membership not renewed",
                    metadata: ["gateway.members": "\(namespace)", "error": "\(error)"])
            }
        }
    }

    /// Removes this member's entry (a graceful stop hands its keys over at once).
    public func leave() async {
        try? await journal.delete(namespace: namespace, key: Array(String(me.id).utf8))
    }

    /// The member that owns `key` now.
    public func owner(of key: String) -> Member {
        let now = WallClock.milliseconds()
        let live = state.withLock { $0.live }
        // Newcomers own nothing until everyone has seen them; when every member is new (they
        // started together), all of them are candidates, so they still agree once they have
        // read each other.
        let settled = live.filter { now - $0.joined >= settle }
        let candidates = settled.isEmpty ? live : settled
        return candidates.max { Self.weight(key, $0.id) < Self.weight(key, $1.id) }!
    }

    public func owns(_ key: String) -> Bool { owner(of: key).id == me.id }

    private func write() async throws {
        let entry = state.withLock { state -> Member in
            state.me.heartbeat = WallClock.milliseconds()
            return state.me
        }
        try await journal.put(
            namespace: namespace, key: Array(String(entry.id).utf8), value: Array(try JSONEncoder().encode(entry)))
    }

    /// The other members whose lease has not run out. Entries of members dead for more than a
    /// hundred leases (killed, never to return under that id) are removed.
    private func read() async throws -> [Member] {
        let now = WallClock.milliseconds()
        let me = self.me
        var live: [Member] = []
        for pair in try await journal.scan(namespace: namespace) {
            guard let member = try? JSONDecoder().decode(Member.self, from: Data(pair.value)) else { continue }
            if now - member.heartbeat > 100 * lease {
                try? await journal.delete(namespace: namespace, key: pair.key)
            } else if member.instance != me.instance, now - member.heartbeat < lease {
                live.append(member)
            }
        }
        return live
    }

    private static func merge(_ others: [Member], _ me: Member) -> [Member] {
        (others.filter { $0.id != me.id } + [me]).sorted { $0.id < $1.id }
    }

    /// Rendezvous weight: FNV-1a over the key and the member id.
    static func weight(_ key: String, _ id: Int32) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(key.utf8) + [0] + withUnsafeBytes(of: id.littleEndian, Array.init) {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        // A final mix, so that ids differing in one bit do not order keys alike.
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        return hash
    }
}
