import Basics
/// `--image PATH[:TAG]`: a layout path and a tag, split at the first ':'.
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    public var layout: String
    public var tag: String

    public static let defaultTag = "latest"

    public init(layout: String, tag: String) {
        self.layout = layout
        self.tag = tag
    }

    public init(parsing text: String) throws(StoreError) {
        var layout = text
        var tag = ImageReference.defaultTag
        if let colon = text.firstIndex(of: ":") {
            layout = String(text[..<colon])
            tag = String(text[text.index(after: colon)...])
        }
        guard !layout.isEmpty else { throw StoreError(.invalidInput, "invalid --image \(quoted: text): path is empty") }
        guard !tag.isEmpty else { throw StoreError(.invalidInput, "invalid --image \(quoted: text): tag is empty") }
        try ImageReference.validateTag(tag)
        self.layout = layout
        self.tag = tag
    }

    public var description: String { "\(layout):\(tag)" }

    /// The OCI ref-name grammar:
    /// `^([A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*)(/([A-Za-z0-9]+(([-._:@+]|--)[A-Za-z0-9]+)*))*$`
    public static func isValidTag(_ tag: String) -> Bool {
        func isAlnum(_ b: UInt8) -> Bool {
            (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b)
        }
        func isSeparator(_ b: UInt8) -> Bool {
            b == UInt8(ascii: "-") || b == UInt8(ascii: ".") || b == UInt8(ascii: "_")
                || b == UInt8(ascii: ":") || b == UInt8(ascii: "@") || b == UInt8(ascii: "+")
        }
        for component in tag.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            guard let first = component.first, let last = component.last, isAlnum(first), isAlnum(last) else { return false }
            var run: [UInt8] = []
            for b in component {
                if isAlnum(b) {
                    if !run.isEmpty {
                        guard run.count == 1 || run == [0x2D, 0x2D] else { return false }
                        run.removeAll(keepingCapacity: true)
                    }
                } else if isSeparator(b) {
                    run.append(b)
                } else {
                    return false
                }
            }
        }
        return true
    }

    public static func validateTag(_ tag: String) throws(StoreError) {
        guard isValidTag(tag) else { throw StoreError(.invalidInput, "invalid tag \(quoted: tag): must match the OCI ref-name grammar") }
    }
}

/// `--layout PATH`: a path that may not contain ':'.
public func validateLayoutPath(_ path: String) throws(StoreError) {
    guard !path.isEmpty else { throw StoreError(.invalidInput, "invalid --layout: path is empty") }
    guard !path.contains(":") else { throw StoreError(.invalidInput, "invalid --layout \(quoted: path): path must not contain ':'") }
}
