import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// The go-mtree manifest umoci keeps beside an extracted rootfs (`sha256_<manifest hex>.mtree`):
/// what every path was when the bundle was unpacked, so that repack finds what changed.
///
/// Written exactly as go-mtree (as vendored by umoci 0.4.7) writes it: a comment header, then
/// per directory a blank line, `# path` (not encoded), a `/set` line whenever the directory's owner differs
/// from the current one, the directory's line, its non-directories (indented, names in byte
/// order), its subdirectories, and `..`. Names and link targets are vis(3)-encoded
/// (VIS_WHITE|VIS_OCTAL|VIS_GLOB); xattrs (of files and directories only) are
/// `xattr.NAME=BASE64`. A keyword equal to the current `/set` value is left out of a line.
public struct MtreeManifest: Sendable {
    /// umoci's keywords (`umoci.MtreeKeywords`), in the order go-mtree writes them.
    public static let keywords = ["size", "type", "uid", "gid", "mode", "link", "nlink", "tar_time", "sha256digest", "xattr"]

    /// One path: "." for the root, else relative ("etc/passwd"), names decoded; and its
    /// keywords with `/set` applied, key to value ("xattr.user.x" is a key of its own).
    public struct Entry: Sendable, Equatable {
        public var path: String
        public var keywords: [String: String]
        /// The xattr keys in the order they are written (the order the kernel lists them).
        public var xattrKeys: [String]
        public var isDirectory: Bool { keywords["type"] == "dir" }
        public init(path: String, keywords: [String: String], xattrKeys: [String] = []) {
            self.path = path
            self.keywords = keywords
            self.xattrKeys = xattrKeys
        }
    }

    /// In walk order (a directory before its contents).
    public var entries: [Entry]
    /// The keywords the manifest uses (xattr for every xattr.*) or names in its header: the
    /// ones repack compares.
    public var usedKeywords: Set<String>

    public init(entries: [Entry], usedKeywords: Set<String> = Set(MtreeManifest.keywords)) {
        self.entries = entries
        self.usedKeywords = usedKeywords
    }

    /// The manifest's entry for every path.
    public func byPath() -> [String: Entry] {
        var out: [String: Entry] = [:]
        out.reserveCapacity(entries.count)
        for e in entries { out[e.path] = e }
        return out
    }

    /// Whether `a` and `b` agree on every keyword this manifest uses.
    public func same(_ a: [String: String], _ b: [String: String]) -> Bool {
        if a == b { return true }
        for key in Set(a.keys).union(b.keys) where usedKeywords.contains(MtreeManifest.keywordName(key)) {
            if a[key] != b[key] { return false }
        }
        return true
    }

    static func keywordName(_ key: String) -> String {
        key.hasPrefix("xattr.") ? "xattr" : key
    }

    // MARK: Reading

    public static func read(_ path: String) throws(StoreError) -> MtreeManifest {
        try parse(try Files.read(path), path: path)
    }

    /// Parses go-mtree's format: comments, blank lines, `/set`, `/unset`, `..`, relative
    /// entries (a directory entry descends into it) and full-path entries (containing '/').
    public static func parse(_ bytes: [UInt8], path file: String) throws(StoreError) -> MtreeManifest {
        var entries: [Entry] = []
        var used = Set<String>()
        var set: [String: String] = [:]
        var directory: String? = nil  // the current directory's path; nil before the root and after it closes
        var started = false
        var lineNumber = 0
        let text = String(decoding: bytes, as: UTF8.self)
        var pending = ""
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\\") && !line.hasSuffix("\\\\") {
                pending += line.dropLast() + " "
                continue
            }
            if !pending.isEmpty {
                pending += line
                line = Substring(pending)
                pending = ""
            }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = fields.first else { continue }
            if first.hasPrefix("#") {
                // go-mtree's header names the keywords it collected: compare those too, even
                // where no entry has one (an xattr added to a manifest without xattrs).
                if !started, fields.count == 3, fields[1] == "keywords:" {
                    for k in fields[2].split(separator: ",") { used.insert(String(k)) }
                }
                continue
            }
            func bad(_ why: String) -> StoreError {
                StoreError("\(file): line \(lineNumber): \(why): \(String(line).debugDescription)")
            }
            var keywords: [String: String] = [:]
            var xattrKeys: [String] = []
            for field in fields.dropFirst() {
                guard let eq = field.firstIndex(of: "=") else {
                    if first == "/unset" { keywords[String(field)] = ""; continue }
                    throw bad("keyword without a value")
                }
                let key = String(field[..<eq])
                if key.hasPrefix("xattr.") && keywords[key] == nil { xattrKeys.append(key) }
                keywords[key] = String(field[field.index(after: eq)...])
            }
            switch first {
            case "/set":
                for (k, v) in keywords { set[k] = v; used.insert(keywordName(k)) }
            case "/unset":
                if keywords["all"] != nil { set = [:] } else { for k in keywords.keys { set[k] = nil } }
            case "..":
                guard let current = directory else { throw bad("'..' above the root") }
                directory = current == "." ? nil : parentPath(current)
            default:
                let name: String
                do { name = try unvis(first) } catch { throw bad(error.message) }
                var resolved = set
                for (k, v) in keywords { resolved[k] = v; used.insert(keywordName(k)) }
                if name.contains("/") {
                    // A full path: relative to the root, it does not change the directory.
                    let components = cleanComponents(name)
                    entries.append(Entry(path: components.isEmpty ? "." : components.joined(separator: "/"), keywords: resolved,
                                         xattrKeys: xattrKeys))
                    continue
                }
                let entryPath: String
                if !started {
                    guard name == "." else { throw bad("the first entry must be the root \".\"") }
                    started = true
                    entryPath = "."
                } else {
                    guard let current = directory else { throw bad("an entry after the root directory was closed") }
                    guard name != "." && name != ".." && !name.isEmpty else { throw bad("invalid name") }
                    entryPath = current == "." ? name : current + "/" + name
                }
                entries.append(Entry(path: entryPath, keywords: resolved, xattrKeys: xattrKeys))
                if resolved["type"] == "dir" { directory = entryPath }
            }
        }
        guard started else { throw StoreError("\(file): no root entry \".\": not an mtree manifest") }
        return MtreeManifest(entries: entries, usedKeywords: used)
    }

    // MARK: Writing

    /// go-mtree's text for `entries`, which must be in walk order (as MtreeWalk produces them);
    /// `tree` is the path named in the header.
    public func serialized(tree: String) -> [UInt8] {
        var out = ""
        func header(_ key: String, _ value: String) {
            out += "#" + String(repeating: " ", count: max(0, 15 - key.count - 1)) + key + ": " + value + "\n"
        }
        header("user", MtreeManifest.userName())
        header("machine", MtreeManifest.hostName())
        header("tree", tree)
        header("date", MtreeManifest.ansicDate())
        header("keywords", MtreeManifest.keywords.joined(separator: ","))
        var openDirectories: [String] = []
        var set: [String: String]? = nil
        for entry in entries {
            let parent = entry.path == "." ? nil : MtreeManifest.parentPath(entry.path)
            if let parent {
                while let top = openDirectories.last, top != parent {
                    out += "..\n"
                    openDirectories.removeLast()
                }
            }
            if entry.isDirectory {
                // go-mtree writes this comment unencoded; a line break must not end it early.
                let comment = entry.path.contains(where: { $0 == "\n" || $0 == "\r" }) ? MtreeManifest.vis(entry.path) : entry.path
                out += "\n# " + comment + "\n"
                let owner = ["uid": entry.keywords["uid"] ?? "", "gid": entry.keywords["gid"] ?? ""].filter { !$0.value.isEmpty }
                if set == nil || owner.contains(where: { set?[$0.key] != $0.value }) {
                    var newSet = ["type": "file", "nlink": "1", "mode": "0664"]
                    for (k, v) in owner { newSet[k] = v }
                    set = newSet
                    out += "/set type=file nlink=1 mode=0664"
                    for k in ["uid", "gid"] { if let v = owner[k] { out += " \(k)=\(v)" } }
                    out += "\n"
                }
                out += entry.path == "." ? "." : MtreeManifest.vis(MtreeManifest.baseName(entry.path))
                openDirectories.append(entry.path)
            } else {
                out += "    " + MtreeManifest.vis(MtreeManifest.baseName(entry.path))
            }
            for keyword in MtreeManifest.keywords {
                if keyword == "xattr" {
                    for key in entry.xattrKeys { if let value = entry.keywords[key] { out += " " + key + "=" + value } }
                } else if let value = entry.keywords[keyword], set?[keyword] != value {
                    out += " " + keyword + "=" + value
                }
            }
            out += "\n"
        }
        for _ in openDirectories { out += "..\n" }
        return Array(out.utf8)
    }

    static func parentPath(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    static func userName() -> String {
        if let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name { return String(cString: name) }
        return String(geteuid())
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Go's time.ANSIC in local time: "Mon Jan _2 15:04:05 2006".
    static func ansicDate() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, "%a %b %e %H:%M:%S %Y", &parts)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: vis(3)

    /// go-mtree's encoding of names and link targets (govis with VIS_WHITE|VIS_OCTAL|VIS_GLOB):
    /// printable ASCII stays, except `*?[#` and white space; a backslash is doubled; every other
    /// byte is `\ooo`.
    public static func vis(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            let graphic = b > 0x20 && b < 0x7F
            if graphic && b != UInt8(ascii: "*") && b != UInt8(ascii: "?") && b != UInt8(ascii: "[") && b != UInt8(ascii: "#") {
                if b == UInt8(ascii: "\\") { out += "\\" }
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let octal = String(b, radix: 8)
                out += "\\" + String(repeating: "0", count: 3 - octal.count) + octal
            }
        }
        return out
    }

    public struct VisError: Error {
        public var message: String
    }

    /// Decodes vis(3): `\ooo`, `\\`, C-style escapes (`\s \n \t \r \b \a \v \f \0 \E`), `\M-x`,
    /// `\M^x` and `\^x`.
    public static func unvis<S: StringProtocol>(_ s: S) throws(StoreError) -> String {
        var bytes: [UInt8] = []
        let input = Array(s.utf8)
        var i = 0
        func next() throws(StoreError) -> UInt8 {
            guard i < input.count else { throw StoreError("incomplete escape in \(String(s).debugDescription)") }
            defer { i += 1 }
            return input[i]
        }
        while i < input.count {
            let b = input[i]
            i += 1
            guard b == UInt8(ascii: "\\") else { bytes.append(b); continue }
            let c = try next()
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var value = Int(c - UInt8(ascii: "0"))
                var digits = 1
                while digits < 3, i < input.count, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(input[i]) {
                    value = value * 8 + Int(input[i] - UInt8(ascii: "0"))
                    i += 1
                    digits += 1
                }
                guard value < 256 else { throw StoreError("invalid octal escape in \(String(s).debugDescription)") }
                bytes.append(UInt8(value))
            case UInt8(ascii: "\\"): bytes.append(c)
            case UInt8(ascii: "s"): bytes.append(0x20)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "a"): bytes.append(0x07)
            case UInt8(ascii: "v"): bytes.append(0x0B)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "E"): bytes.append(0x1B)
            case UInt8(ascii: "M"):
                let kind = try next()
                if kind == UInt8(ascii: "-") {
                    bytes.append(try next() | 0x80)
                } else if kind == UInt8(ascii: "^") {
                    let x = try next()
                    bytes.append((x == UInt8(ascii: "?") ? 0x7F : x & 0x1F) | 0x80)
                } else {
                    throw StoreError("invalid \\M escape in \(String(s).debugDescription)")
                }
            case UInt8(ascii: "^"):
                let x = try next()
                bytes.append(x == UInt8(ascii: "?") ? 0x7F : x & 0x1F)
            default:
                // vis(3) leaves any other escaped character as itself.
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: base64

    static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Standard base64 with padding (Go's base64.StdEncoding), for xattr values.
    public static func base64(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let v = b0 << 16 | b1 << 8 | b2
            out.append(base64Alphabet[Int(v >> 18 & 63)])
            out.append(base64Alphabet[Int(v >> 12 & 63)])
            out.append(i + 1 < bytes.count ? base64Alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? base64Alphabet[Int(v & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
