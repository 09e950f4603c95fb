/// The header names every gateway uses for the message properties protocols share, so that
/// what one protocol's client set reaches another's (docs/topics.md, "One record"). Headers
/// outside these names and the `mqtt.` / `amqp.` / `strata.` prefixes are the application's own
/// (MQTT user properties, Kafka headers, AMQP headers-table entries).
public enum RecordEnvelope {
    /// MIME type of the payload (MQTT content type).
    public static let contentType = "content-type"
    /// Bytes that tie a response to its request (MQTT correlation data).
    public static let correlationID = "correlation-id"
    /// Where a response goes, as the writer's protocol names it (MQTT response topic).
    public static let replyTo = "reply-to"
    /// Milliseconds after the record's timestamp that it expires (MQTT message expiry), decimal.
    public static let ttl = "ttl-ms"
    /// `utf-8` when the payload is declared UTF-8 text (MQTT payload format indicator 1).
    public static let payloadFormat = "payload-format"

    static let fields: Set<String> = [contentType, correlationID, replyTo, ttl, payloadFormat]
    /// Application header names that would read as one of the above are stored under this prefix.
    static let escape = "strata.user."

    /// The header an application property (MQTT user property, …) named `name` is stored under.
    public static func header(forApplicationProperty name: String) -> String {
        isReserved(name) ? escape + name : name
    }

    /// The application property a header is, or nil when the header is one of the envelope's
    /// own (a field above, or a protocol's `mqtt.` / `amqp.` / `strata.` header).
    public static func applicationProperty(ofHeader name: String) -> String? {
        if name.hasPrefix(escape) { return String(name.dropFirst(escape.count)) }
        return isReserved(name) ? nil : name
    }

    static func isReserved(_ name: String) -> Bool {
        fields.contains(name) || name.hasPrefix("mqtt.") || name.hasPrefix("strata.") || name.hasPrefix("amqp.")
    }
}
