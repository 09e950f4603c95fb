import NIOCore
import StrataJournal
import Synchronization

/// The frame limit one connection's decoder enforces while it may change: a node that
/// requires authentication takes only small frames (hello, SCRAM steps) until the client has
/// authenticated, and raises the limit then.
public final class FrameSizeGate: Sendable {
    private let limit: Atomic<Int>

    public init(_ limit: Int) { self.limit = Atomic(limit) }

    public var current: Int { limit.load(ordering: .acquiring) }

    public func raise(to limit: Int) { self.limit.store(limit, ordering: .releasing) }
}

/// The gates of a listener's connections, from a channel's pipeline set-up (where its decoder
/// gets the gate) to its close, so that the connection's handler finds the same gate.
public final class FrameSizeGates: Sendable {
    private let gates = Mutex<[ObjectIdentifier: FrameSizeGate]>([:])

    public init() {}

    /// A gate at `limit` for a channel being set up.
    public func attach(to channel: any Channel, limit: Int) -> FrameSizeGate {
        let gate = FrameSizeGate(limit)
        let key = ObjectIdentifier(channel)
        gates.withLock { $0[key] = gate }
        channel.closeFuture.whenComplete { [self] _ in _ = gates.withLock { $0.removeValue(forKey: key) } }
        return gate
    }

    public func gate(of channel: any Channel) -> FrameSizeGate? {
        gates.withLock { $0[ObjectIdentifier(channel)] }
    }
}

/// Splits the byte stream into frames. The length is checked against `maxFrameBytes` before
/// anything is allocated; unknown types and short frames are protocol errors.
public struct JournalFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = JournalFrame
    public let maxFrameBytes: Int
    /// A lower limit in force for now (before authentication), when given.
    public let gate: FrameSizeGate?

    public init(maxFrameBytes: Int = JournalFrame.defaultMaxFrameBytes, gate: FrameSizeGate? = nil) {
        self.maxFrameBytes = maxFrameBytes
        self.gate = gate
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> JournalFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= UInt32(JournalFrame.headerSize) else {
            throw JournalError(.protocolError, "frame length \(length) is shorter than the 5-byte frame header")
        }
        guard length <= UInt32(maxFrameBytes) else {
            throw JournalError(.protocolError, "frame length \(length) exceeds the limit of \(maxFrameBytes) bytes")
        }
        if let limit = gate?.current, length > UInt32(limit) {
            throw JournalError(
                .protocolError, "frame length \(length) exceeds the limit of \(limit) bytes before authentication")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        let rawType: UInt8 = buffer.getInteger(at: buffer.readerIndex + 4)!
        guard let type = JournalMessageType(rawValue: rawType) else {
            throw JournalError(.protocolError, "unknown frame type 0x\(String(rawType, radix: 16))")
        }
        buffer.moveReaderIndex(forwardBy: 5)
        let correlationID: UInt32 = buffer.readInteger()!
        let payload = buffer.readSlice(length: Int(length) - JournalFrame.headerSize)!
        return JournalFrame(type: type, correlationID: correlationID, payload: payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> JournalFrame? {
        try decode(buffer: &buffer)
    }
}

/// Writes frames.
public struct JournalFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = JournalFrame

    public init() {}

    public func encode(data frame: JournalFrame, out: inout ByteBuffer) {
        out.writeInteger(UInt32(JournalFrame.headerSize + frame.payload.readableBytes))
        out.writeInteger(frame.type.rawValue)
        out.writeInteger(frame.correlationID)
        out.writeImmutableBuffer(frame.payload)
    }
}
