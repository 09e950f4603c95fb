import NIOCore
import StrataJournal

/// Splits the byte stream into frames. The length is checked against `maxFrameBytes` before
/// anything is allocated; unknown types and short frames are protocol errors.
public struct JournalFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = JournalFrame
    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = JournalFrame.defaultMaxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> JournalFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= UInt32(JournalFrame.headerSize) else {
            throw JournalError(.protocolError, "frame length \(length) is shorter than the 5-byte frame header")
        }
        guard length <= UInt32(maxFrameBytes) else {
            throw JournalError(.protocolError, "frame length \(length) exceeds the limit of \(maxFrameBytes) bytes")
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
