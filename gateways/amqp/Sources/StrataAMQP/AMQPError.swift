/// An AMQP 0-9-1 error as the spec's reply-code table has it: a channel error closes one
/// channel (channel.close), a connection error the whole connection (connection.close).
/// `classID`/`methodID` name the method that failed (0 when none did).
public struct AMQPError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: UInt16
    public var text: String
    public var classID: UInt16
    public var methodID: UInt16

    public init(_ code: UInt16, _ text: String, classID: UInt16 = 0, methodID: UInt16 = 0) {
        self.code = code
        self.text = text
        self.classID = classID
        self.methodID = methodID
    }

    // Reply codes (AMQP 0-9-1 §1.2, "Constants").
    public static let contentTooLarge: UInt16 = 311
    public static let noRoute: UInt16 = 312
    public static let noConsumers: UInt16 = 313
    public static let connectionForced: UInt16 = 320
    public static let invalidPath: UInt16 = 402
    public static let accessRefused: UInt16 = 403
    public static let notFound: UInt16 = 404
    public static let resourceLocked: UInt16 = 405
    public static let preconditionFailed: UInt16 = 406
    public static let frameError: UInt16 = 501
    public static let syntaxError: UInt16 = 502
    public static let commandInvalid: UInt16 = 503
    public static let channelError: UInt16 = 504
    public static let unexpectedFrame: UInt16 = 505
    public static let resourceError: UInt16 = 506
    public static let notAllowed: UInt16 = 530
    public static let notImplemented: UInt16 = 540
    public static let internalError: UInt16 = 541

    /// Whether the spec makes this a connection error (5xx and 320, 402) rather than a channel
    /// error (311–313, 403–406).
    public var closesConnection: Bool {
        switch code {
        case Self.contentTooLarge, Self.noRoute, Self.noConsumers, Self.accessRefused, Self.notFound,
            Self.resourceLocked, Self.preconditionFailed:
            false
        default: true
        }
    }

    /// The same error, naming the method it answers.
    public func on(classID: UInt16, methodID: UInt16) -> AMQPError {
        var error = self
        error.classID = classID
        error.methodID = methodID
        return error
    }

    public static func frame(_ text: String) -> AMQPError { AMQPError(frameError, text) }
    public static func syntax(_ text: String) -> AMQPError { AMQPError(syntaxError, text) }

    public var description: String { "\(code) \(text)" }
}
