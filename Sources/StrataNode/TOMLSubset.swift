/// The subset of TOML that Strata's config files use: `[table]` headers, `key = value` with
/// basic strings, integers, floats, booleans and one-line arrays of those, `#` comments.
/// Anything else is an error naming the line.
public enum TOMLSubset {
    public enum Value: Sendable, Hashable {
        case string(String)
        case integer(Int64)
        case float(Double)
        case bool(Bool)
        case array([Value])
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// Parses `text` into dotted keys (`table.key`) and values.
    public static func parse(_ text: String) throws(ParseError) -> [String: Value] {
        var result: [String: Value] = [:]
        var table = ""
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let line = stripComment(rawLine).trimmingWhitespace()
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), !line.hasPrefix("[[") else {
                    throw ParseError(line: number, message: "only [table] headers are supported")
                }
                table = String(line.dropFirst().dropLast()).trimmingWhitespace()
                guard isBareKey(table, dotted: true) else {
                    throw ParseError(line: number, message: "bad table name \(table)")
                }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw ParseError(line: number, message: "expected key = value")
            }
            let key = String(line[..<equals]).trimmingWhitespace()
            guard isBareKey(key, dotted: false) else { throw ParseError(line: number, message: "bad key \(key)") }
            var rest = Substring(line[line.index(after: equals)...].trimmingWhitespace())
            let value = try parseValue(&rest, line: number)
            guard rest.trimmingWhitespace().isEmpty else {
                throw ParseError(line: number, message: "unexpected text after the value")
            }
            let fullKey = table.isEmpty ? key : table + "." + key
            guard result[fullKey] == nil else { throw ParseError(line: number, message: "\(fullKey) is set twice") }
            result[fullKey] = value
        }
        return result
    }

    private static func stripComment(_ line: Substring) -> String {
        var inString = false
        var escaped = false
        var out = ""
        for character in line {
            if inString {
                if escaped {
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else if character == "\"" {
                    inString = false
                }
            } else if character == "\"" {
                inString = true
            } else if character == "#" {
                break
            }
            out.append(character)
        }
        return out
    }

    private static func isBareKey(_ key: String, dotted: Bool) -> Bool {
        !key.isEmpty
            && key.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || (dotted && $0 == ".") }
    }

    private static func parseValue(_ text: inout Substring, line: Int) throws(ParseError) -> Value {
        text = Substring(String(text).trimmingWhitespace())
        guard let first = text.first else { throw ParseError(line: line, message: "missing value") }
        if first == "\"" {
            text = text.dropFirst()
            var value = ""
            while let character = text.first {
                text = text.dropFirst()
                if character == "\"" { return .string(value) }
                if character == "\\" {
                    guard let escaped = text.first else { break }
                    text = text.dropFirst()
                    switch escaped {
                    case "n": value.append("\n")
                    case "t": value.append("\t")
                    case "\"": value.append("\"")
                    case "\\": value.append("\\")
                    default: throw ParseError(line: line, message: "unsupported escape \\\(escaped)")
                    }
                } else {
                    value.append(character)
                }
            }
            throw ParseError(line: line, message: "unterminated string")
        }
        if first == "[" {
            text = text.dropFirst()
            var values: [Value] = []
            while true {
                text = Substring(String(text).trimmingWhitespace())
                if text.first == "]" {
                    text = text.dropFirst()
                    return .array(values)
                }
                values.append(try parseValue(&text, line: line))
                text = Substring(String(text).trimmingWhitespace())
                if text.first == "," {
                    text = text.dropFirst()
                } else if text.first != "]" {
                    throw ParseError(line: line, message: "expected , or ] in an array")
                }
            }
        }
        let token = text.prefix { $0 != "," && $0 != "]" && $0 != " " }
        text = text.dropFirst(token.count)
        switch token {
        case "true": return .bool(true)
        case "false": return .bool(false)
        default:
            let digits = token.replacingOccurrences(of: "_", with: "")
            if let integer = Int64(digits) { return .integer(integer) }
            if let float = Double(digits) { return .float(float) }
            throw ParseError(line: line, message: "cannot read value \(token)")
        }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(
            drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }
                .reversed())
    }

    func replacingOccurrences(of target: Character, with replacement: String) -> String {
        var out = ""
        for character in self { if character == target { out += replacement } else { out.append(character) } }
        return out
    }
}
