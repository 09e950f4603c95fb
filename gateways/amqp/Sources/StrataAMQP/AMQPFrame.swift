import NIOCore

/// One AMQP 0-9-1 frame (§4.2.3), its payload decoded: a method, a content header, a piece
/// of a content body, or a heartbeat. The protocol header a connection opens with is an
/// inbound "frame" of its own.
public enum AMQPFrame: Sendable, Hashable {
    /// "AMQP" 0 0 9 1: the client speaks 0-9-1.
    case protocolHeader
    case method(channel: UInt16, AMQPMethod)
    case header(channel: UInt16, AMQPContentHeader)
    case body(channel: UInt16, ByteBuffer)
    case heartbeat

    public static let protocolHeaderBytes: [UInt8] = Array("AMQP".utf8) + [0, 0, 9, 1]
    static let frameEnd: UInt8 = 0xCE
    /// Type, channel and size before the payload, and the end octet after it.
    public static let overhead = 8
    /// The spec's frame-min-size: every peer takes frames this large before Tune.
    public static let minFrameMax: UInt32 = 4096

    public var channel: UInt16 {
        switch self {
        case .protocolHeader, .heartbeat: 0
        case .method(let channel, _), .header(let channel, _), .body(let channel, _): channel
        }
    }
}

/// A content header frame (§4.2.6.1): the class of the method it follows (60, basic), the
/// body's size, and the message's properties.
public struct AMQPContentHeader: Sendable, Hashable {
    public var classID: UInt16
    public var bodySize: UInt64
    public var properties: AMQPProperties

    public init(classID: UInt16 = 60, bodySize: UInt64, properties: AMQPProperties) {
        self.classID = classID
        self.bodySize = bodySize
        self.properties = properties
    }
}

/// Splits bytes into AMQP frames, server side: first the 8-byte protocol header, then frames
/// whose size is checked against `frameMax` (the negotiated frame-max, or the server's
/// before Tune) as soon as the 7-byte frame header is in, before the payload is waited for.
public struct AMQPFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = AMQPFrame

    /// The client's opening bytes were not 0-9-1's header: the server answers with its own
    /// and closes (§4.2.2).
    public struct WrongProtocolHeader: Error, Hashable {
        public var received: [UInt8]
    }

    public var frameMax: UInt32
    private var headerSeen: Bool

    public init(frameMax: UInt32 = 131_072, expectsProtocolHeader: Bool = true) {
        self.frameMax = max(frameMax, AMQPFrame.minFrameMax)
        headerSeen = !expectsProtocolHeader
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> AMQPFrame? {
        if !headerSeen {
            guard let bytes = buffer.getBytes(at: buffer.readerIndex, length: 8) else {
                // A peer that sends something else entirely is told at once, not waited for.
                if let some = buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes),
                    !AMQPFrame.protocolHeaderBytes.starts(with: some)
                {
                    throw WrongProtocolHeader(received: some)
                }
                return nil
            }
            guard bytes == AMQPFrame.protocolHeaderBytes else { throw WrongProtocolHeader(received: bytes) }
            buffer.moveReaderIndex(forwardBy: 8)
            headerSeen = true
            return .protocolHeader
        }
        guard let type: UInt8 = buffer.getInteger(at: buffer.readerIndex),
            let channel: UInt16 = buffer.getInteger(at: buffer.readerIndex + 1),
            let size: UInt32 = buffer.getInteger(at: buffer.readerIndex + 3)
        else { return nil }
        guard UInt64(size) + UInt64(AMQPFrame.overhead) <= UInt64(frameMax) else {
            throw AMQPError.frame("frame of \(UInt64(size) + 8) bytes exceeds frame-max \(frameMax)")
        }
        guard buffer.readableBytes >= Int(size) + AMQPFrame.overhead else { return nil }
        buffer.moveReaderIndex(forwardBy: 7)
        var payload = buffer.readSlice(length: Int(size))!
        let end: UInt8 = buffer.readInteger()!
        guard end == AMQPFrame.frameEnd else {
            throw AMQPError.frame("frame end octet is 0x\(String(end, radix: 16)), not 0xce")
        }
        return try Self.parse(type: type, channel: channel, payload: &payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> AMQPFrame? {
        try decode(buffer: &buffer)
    }

    static func parse(type: UInt8, channel: UInt16, payload: inout ByteBuffer) throws(AMQPError) -> AMQPFrame {
        switch type {
        case 1:
            let method = try AMQPMethod.decode(&payload)
            guard payload.readableBytes == 0 else {
                throw AMQPError.syntax("\(payload.readableBytes) bytes after the method's arguments")
                    .on(classID: method.classID, methodID: method.methodID)
            }
            return .method(channel: channel, method)
        case 2:
            let classID: UInt16 = try payload.readAMQPInteger()
            let weight: UInt16 = try payload.readAMQPInteger()
            guard weight == 0 else { throw AMQPError.frame("content header weight \(weight), not 0") }
            let bodySize: UInt64 = try payload.readAMQPInteger()
            let properties = try AMQPProperties.decode(&payload)
            guard payload.readableBytes == 0 else {
                throw AMQPError.frame("\(payload.readableBytes) bytes after the content header's properties")
            }
            return .header(
                channel: channel, AMQPContentHeader(classID: classID, bodySize: bodySize, properties: properties))
        case 3:
            return .body(channel: channel, payload)
        case 8:
            guard channel == 0 else { throw AMQPError.frame("heartbeat on channel \(channel)") }
            guard payload.readableBytes == 0 else { throw AMQPError.frame("heartbeat frame with a payload") }
            return .heartbeat
        default:
            throw AMQPError.frame("unknown frame type \(type)")
        }
    }
}

/// Writes AMQP frames: a method, a content header, body pieces no larger than the
/// negotiated frame-max allows, heartbeats.
public enum AMQPFrameEncoder {
    public static func write(_ frame: AMQPFrame, into buffer: inout ByteBuffer) {
        switch frame {
        case .protocolHeader:
            buffer.writeBytes(AMQPFrame.protocolHeaderBytes)
        case .heartbeat:
            buffer.writeInteger(UInt8(8))
            buffer.writeInteger(UInt16(0))
            buffer.writeInteger(UInt32(0))
            buffer.writeInteger(AMQPFrame.frameEnd)
        case .method(let channel, let method):
            framed(type: 1, channel: channel, into: &buffer) { method.encode(into: &$0) }
        case .header(let channel, let header):
            framed(type: 2, channel: channel, into: &buffer) { payload in
                payload.writeInteger(header.classID)
                payload.writeInteger(UInt16(0))
                payload.writeInteger(header.bodySize)
                header.properties.encode(into: &payload)
            }
        case .body(let channel, var body):
            framed(type: 3, channel: channel, into: &buffer) { $0.writeBuffer(&body) }
        }
    }

    /// A whole message as it goes to a client: the method, the header, the body cut into
    /// frames of at most `frameMax`.
    public static func writeContent(
        channel: UInt16, method: AMQPMethod, properties: AMQPProperties, body: ByteBuffer, frameMax: UInt32,
        into buffer: inout ByteBuffer
    ) {
        write(.method(channel: channel, method), into: &buffer)
        let header = AMQPContentHeader(
            classID: method.classID, bodySize: UInt64(body.readableBytes), properties: properties)
        write(.header(channel: channel, header), into: &buffer)
        var rest = body
        let piece = Int(frameMax) - AMQPFrame.overhead
        while rest.readableBytes > 0 {
            write(.body(channel: channel, rest.readSlice(length: min(piece, rest.readableBytes))!), into: &buffer)
        }
    }

    private static func framed(
        type: UInt8, channel: UInt16, into buffer: inout ByteBuffer, _ payload: (inout ByteBuffer) -> Void
    ) {
        buffer.writeInteger(type)
        buffer.writeInteger(channel)
        let sizeIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        payload(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - sizeIndex - 4), at: sizeIndex)
        buffer.writeInteger(AMQPFrame.frameEnd)
    }
}
