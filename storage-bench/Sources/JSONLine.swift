import Foundation

/// One JSON object written on one line, keys in the order they were added.
struct JSONLine {
    private var fields: [String] = []

    mutating func add(_ key: String, _ value: String) {
        fields.append(Self.quoted(key) + ":" + Self.quoted(value))
    }

    mutating func add(_ key: String, _ value: Int) {
        fields.append(Self.quoted(key) + ":" + String(value))
    }

    /// Adds a number rounded to three decimals; a non-finite value is written as 0.
    mutating func add(_ key: String, _ value: Double) {
        let number = value.isFinite ? ((value * 1000).rounded() / 1000).description : "0"
        fields.append(Self.quoted(key) + ":" + number)
    }

    var text: String { "{" + fields.joined(separator: ",") + "}" }

    private static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
