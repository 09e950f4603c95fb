import NIOCore

/// The user name and password in a connection.start-ok response, for the mechanisms the
/// gateway offers: PLAIN (RFC 4616: authzid NUL user NUL password) and RabbitMQ's AMQPLAIN
/// (a field table without its size, with LOGIN and PASSWORD). A response that is not one is
/// refused like a wrong password: 403.
public enum AMQPSASL {
    public struct Credentials: Sendable, Hashable {
        public var user: String
        public var password: [UInt8]
    }

    public static func credentials(mechanism: String, response: [UInt8]) throws(AMQPError) -> Credentials {
        switch mechanism {
        case "PLAIN":
            let parts = response.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, !parts[1].isEmpty else {
                throw refused("a PLAIN response is authzid NUL user NUL password")
            }
            let user = String(decoding: parts[1], as: UTF8.self)
            // An authorization identity other than the user would be acting as someone else.
            guard parts[0].isEmpty || String(decoding: parts[0], as: UTF8.self) == user else {
                throw refused("PLAIN authorization identity differs from the user")
            }
            return Credentials(user: user, password: Array(parts[2]))
        case "AMQPLAIN":
            var table = ByteBuffer()
            table.writeInteger(UInt32(response.count))
            table.writeBytes(response)
            guard let fields = try? table.readAMQPTable(), let user = fields["LOGIN"]?.stringValue, !user.isEmpty,
                case .longString(let password)? = fields["PASSWORD"]
            else { throw refused("an AMQPLAIN response is a table with LOGIN and PASSWORD") }
            return Credentials(user: user, password: password)
        default:
            throw refused("mechanism \(mechanism) is not offered")
        }
    }

    static func refused(_ text: String) -> AMQPError {
        AMQPError(AMQPError.accessRefused, "ACCESS_REFUSED - \(text)", classID: 10, methodID: 11)
    }
}
