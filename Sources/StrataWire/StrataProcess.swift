import Foundation
import Logging
import NIOCore

/// What every Strata server executable does the same way: logs on stderr at a chosen level,
/// and one `NAME HOST:PORT` line per bound listener on stdout, unbuffered, which `make run`,
/// scripts and tests wait for.
public enum StrataProcess {
    /// Sends logs to standard error at `level` (trace … critical); nil for an unknown name.
    public static func bootstrapLogging(level name: String) -> Logger.Level? {
        guard let level = Logger.Level(rawValue: name) else { return nil }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return level
    }

    /// Prints `NAME HOST:PORT` for a bound listener.
    public static func announce(_ name: String, _ address: SocketAddress) {
        announce("\(name) \(display(address))")
    }

    public static func announce(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// `HOST:PORT`, with brackets around an IPv6 host.
    public static func display(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
