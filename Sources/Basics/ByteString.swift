#if canImport(Glibc)
import Glibc
#endif

/// A file name or path as the bytes file systems and tar archives carry. Compared, hashed and
/// ordered byte for byte: Swift's `String` compares by canonical equivalence (the NFC and NFD
/// spellings of "café" are equal strings, though they are two files) and cannot hold bytes
/// that are not UTF-8, so no name on its way from a layer to the disk or to the kernel is a
/// `String`. Kept with a trailing NUL, so that `c` passes it to C without copying.
public struct ByteString: Hashable, Comparable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    /// The bytes followed by one NUL.
    public private(set) var c: [CChar]

    public init() { c = [0] }

    public init(_ s: String) {
        c = Array(s.utf8CString)
    }

    public init(stringLiteral s: String) { self.init(s) }

    /// The bytes up to (not including) the first NUL, if any.
    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        var out: [CChar] = []
        out.reserveCapacity(bytes.count + 1)
        for b in bytes {
            if b == 0 { break }
            out.append(CChar(bitPattern: b))
        }
        out.append(0)
        c = out
    }

    public init(cString p: UnsafePointer<CChar>) {
        let n = strlen(p)
        c = Array(UnsafeBufferPointer(start: p, count: n + 1))
    }

    /// The bytes of a dirent's `d_name` (a fixed array holding a C string).
    public init<T>(dirent name: T) {
        self = withUnsafeBytes(of: name) { raw in
            ByteString(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
    }

    public var count: Int { c.count - 1 }
    public var isEmpty: Bool { c.count == 1 }

    /// The bytes, without the NUL.
    public var bytes: [UInt8] { withBytes { Array($0) } }

    public func withBytes<R, E: Error>(_ body: (UnsafeBufferPointer<UInt8>) throws(E) -> R) throws(E) -> R {
        try c.withUnsafeBufferPointer { p throws(E) -> R in
            try p.withMemoryRebound(to: UInt8.self) { u throws(E) -> R in try body(UnsafeBufferPointer(rebasing: u[0..<(u.count - 1)])) }
        }
    }

    /// For messages: the bytes as UTF-8, with U+FFFD for what is not.
    public var description: String { withBytes { String(decoding: $0, as: UTF8.self) } }

    public var first: UInt8? { isEmpty ? nil : UInt8(bitPattern: c[0]) }
    public var last: UInt8? { isEmpty ? nil : UInt8(bitPattern: c[c.count - 2]) }

    public func hasPrefix(_ prefix: ByteString) -> Bool {
        prefix.count <= count && memcmp(c, prefix.c, prefix.count) == 0
    }

    public func hasSuffix(_ suffix: ByteString) -> Bool {
        suffix.count <= count && c.withUnsafeBufferPointer { memcmp($0.baseAddress! + (count - suffix.count), suffix.c, suffix.count) } == 0
    }

    public func dropFirst(_ k: Int) -> ByteString { withBytes { ByteString(bytes: $0.dropFirst(k)) } }
    public func dropLast(_ k: Int) -> ByteString { withBytes { ByteString(bytes: $0.dropLast(k)) } }

    public static func + (a: ByteString, b: ByteString) -> ByteString {
        var out = a.c
        out.removeLast()
        out.append(contentsOf: b.c)
        return ByteString(storage: out)
    }

    public static func += (a: inout ByteString, b: ByteString) { a = a + b }

    /// Byte order (unsigned), shorter first on a common prefix: readdir's and tar's order here.
    public static func < (a: ByteString, b: ByteString) -> Bool {
        let r = memcmp(a.c, b.c, min(a.count, b.count))
        return r != 0 ? r < 0 : a.count < b.count
    }

    /// The non-empty components between '/' separators.
    public func split() -> [ByteString] {
        withBytes { $0.split(separator: 0x2F, omittingEmptySubsequences: true).map { ByteString(bytes: $0) } }
    }

    /// `storage` ends with its one NUL.
    fileprivate init(storage: [CChar]) { c = storage }
}

extension Array where Element == ByteString {
    public func joined(separator: ByteString) -> ByteString {
        var out: [CChar] = []
        for (i, part) in enumerated() {
            if i > 0 { out.append(contentsOf: separator.c.dropLast()) }
            out.append(contentsOf: part.c.dropLast())
        }
        out.append(0)
        return ByteString(storage: out)
    }
}

extension String.StringInterpolation {
    /// A name in a message, quoted as a Go %q would show it, bytes that are not UTF-8 escaped.
    public mutating func appendInterpolation(quoted name: ByteString) {
        appendInterpolation(quoted: name.description)
    }
}

/// Lexical cleaning of a tar name: the components of the path it names inside the root.
/// Works on the bytes: this runs for every entry of every layer when a view opens.
public func cleanComponents(_ name: ByteString) -> [ByteString] {
    var out: [ByteString] = []
    name.withBytes { bytes in
        var start = 0
        let n = bytes.count
        while start < n {
            var end = start
            while end < n && bytes[end] != 0x2F { end += 1 }
            let length = end - start
            if length == 0 || (length == 1 && bytes[start] == 0x2E) {
                // empty or "."
            } else if length == 2 && bytes[start] == 0x2E && bytes[start + 1] == 0x2E {
                if !out.isEmpty { out.removeLast() }
            } else {
                out.append(ByteString(bytes: UnsafeBufferPointer(rebasing: bytes[start..<end])))
            }
            start = end + 1
        }
    }
    return out
}

/// cleanComponents for a path given as text (the command line).
public func cleanComponents(_ name: String) -> [String] {
    cleanComponents(ByteString(name)).map(\.description)
}
