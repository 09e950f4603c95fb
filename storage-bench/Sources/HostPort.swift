/// `HOST:PORT` (the port after the last colon), as the load generators take their brokers.
func parseHostPort(_ text: Substring) -> (host: String, port: Int)? {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else { return nil }
    return (String(text[..<colon]), port)
}
