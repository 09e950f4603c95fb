extension String {
    /// The string followed by spaces up to `width` characters (at least one space), for tables.
    func padded(to width: Int) -> String {
        self + String(repeating: " ", count: Swift.max(1, width - count))
    }
}
