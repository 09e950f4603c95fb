import Foundation

extension Double {
    /// The number with `digits` digits after the decimal point, for tables.
    func fixed(_ digits: Int) -> String {
        String(format: "%.\(digits)f", self)
    }
}
