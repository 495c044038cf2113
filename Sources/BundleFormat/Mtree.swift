import CLinux

#if canImport(Glibc)
import Glibc
#endif
import Basics

/// The go-mtree manifest umoci keeps beside an extracted rootfs (`sha256_<manifest hex>.mtree`):
/// what every path was when the bundle was unpacked, so that repack finds what changed.
///
/// Written exactly as go-mtree (as vendored by umoci 0.4.7) writes it: a comment header, then
/// per directory a blank line, `# path` (the path's raw bytes, not encoded), a `/set` line
/// whenever the directory's owner differs from the current one, the directory's line, its
/// non-directories (indented, names in byte order), its subdirectories, and `..`. Names and
/// link targets are vis(3)-encoded (VIS_WHITE|VIS_OCTAL|VIS_GLOB); xattrs (of files and
/// directories only) are `xattr.NAME=BASE64`. A keyword equal to the current `/set` value is
/// left out of a line.
///
/// Paths are bytes (ByteString) throughout, read from and written to the file as bytes: two
/// names that are different bytes (the NFC and NFD spellings of "café", names that are not
/// UTF-8) are two entries. Keyword values are ASCII as go-mtree writes them (vis, base64,
/// numbers), so they are kept as text; a `link=` value is kept in one canonical vis spelling,
/// so that comparing two values compares the target's bytes.
public struct MtreeManifest: Sendable {
    /// umoci's keywords (`umoci.MtreeKeywords`), in the order go-mtree writes them.
    public static let keywords = ["size", "type", "uid", "gid", "mode", "link", "nlink", "tar_time", "sha256digest", "xattr"]

    /// One path: "." for the root, else relative ("etc/passwd"), names decoded; and its
    /// keywords with `/set` applied, key to value ("xattr.user.x" is a key of its own).
    public struct Entry: Sendable, Equatable {
        public var path: ByteString
        public var keywords: [String: String]
        /// The xattr keys in the order they are written (the order the kernel lists them).
        public var xattrKeys: [String]
        public var isDirectory: Bool { keywords["type"] == "dir" }
        public init(path: ByteString, keywords: [String: String], xattrKeys: [String] = []) {
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

    /// The manifest's entry for every path (by bytes).
    public func byPath() -> [ByteString: Entry] {
        var out: [ByteString: Entry] = [:]
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
    /// Lines are split on bytes; names are the bytes vis encodes.
    public static func parse(_ bytes: [UInt8], path file: String) throws(StoreError) -> MtreeManifest {
        var entries: [Entry] = []
        var used = Set<String>()
        var set: [String: String] = [:]
        var directory: ByteString? = nil  // the current directory's path; nil before the root and after it closes
        var started = false
        let backslash = UInt8(ascii: "\\")
        func text(_ s: ArraySlice<UInt8>) -> String { String(decoding: s, as: UTF8.self) }
        func fieldsOf(_ line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] { line.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 }) }
        // The logical lines (a line ending in one backslash goes on in the next, but not a
        // comment: "# dir\\" is a directory whose name ends in a backslash), each with the
        // number of its last physical line.
        var lines: [(number: Int, bytes: ArraySlice<UInt8>)] = []
        var pending: [UInt8] = []
        for (i, rawLine) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let isComment = rawLine.first(where: { $0 != 0x20 && $0 != 0x09 }) == UInt8(ascii: "#")
            if pending.isEmpty && isComment {
                lines.append((i + 1, rawLine))
                continue
            }
            if rawLine.last == backslash && !(rawLine.count >= 2 && rawLine[rawLine.endIndex - 2] == backslash) {
                pending += rawLine.dropLast()
                pending.append(0x20)
                continue
            }
            if pending.isEmpty {
                lines.append((i + 1, rawLine))
            } else {
                lines.append((i + 1, (pending + rawLine)[...]))
                pending = []
            }
        }
        /// go-mtree writes a directory's `# path` comment with the path's raw bytes, so a
        /// newline in the path breaks the comment into lines that are not entries (and
        /// go-mtree's own reader takes them for entries). The number of lines after the
        /// comment at `at` that belong to it: those before the directory's own line (after an
        /// optional /set) whose name is the last component of the path they complete; 0 when
        /// there is no such line.
        func commentContinuation(_ at: Int) -> Int {
            var path = Array(lines[at].bytes.dropFirst(2))
            var k = at + 1
            while k < lines.count && path.count <= Int(PATH_MAX) {
                let fields = fieldsOf(lines[k].bytes)
                var candidate = fields
                if fields.first?.elementsEqual("/set".utf8) == true, k + 1 < lines.count { candidate = fieldsOf(lines[k + 1].bytes) }
                if let name = candidate.first, candidate.contains(where: { $0.elementsEqual("type=dir".utf8) }),
                   let decoded = try? unvis(name), ByteString(bytes: decoded) == baseName(ByteString(bytes: path)) {
                    return k - at - 1
                }
                if fields.first?.elementsEqual("..".utf8) == true || fields.contains(where: { $0.elementsEqual("type=dir".utf8) }) {
                    return 0
                }
                path.append(0x0A)
                path += lines[k].bytes
                k += 1
            }
            return 0
        }
        var index = 0
        while index < lines.count {
            let (lineNumber, line) = lines[index]
            index += 1
            let fields = fieldsOf(line)
            guard let first = fields.first else { continue }
            if first.first == UInt8(ascii: "#") {
                // go-mtree's header names the keywords it collected: compare those too, even
                // where no entry has one (an xattr added to a manifest without xattrs).
                if !started, fields.count == 3, fields[1].elementsEqual("keywords:".utf8) {
                    for k in fields[2].split(separator: UInt8(ascii: ",")) { used.insert(text(k)) }
                }
                if started && line.starts(with: "# ".utf8) { index += commentContinuation(index - 1) }
                continue
            }
            func bad(_ why: String) -> StoreError {
                StoreError(.corrupt, "\(file): line \(lineNumber): \(why): \(text(line).debugDescription)", subject: file)
            }
            var keywords: [String: String] = [:]
            var xattrKeys: [String] = []
            for field in fields.dropFirst() {
                guard let eq = field.firstIndex(of: UInt8(ascii: "=")) else {
                    if first.elementsEqual("/unset".utf8) { keywords[text(field)] = ""; continue }
                    throw bad("keyword without a value")
                }
                let key = text(field[..<eq])
                if key.hasPrefix("xattr.") && keywords[key] == nil { xattrKeys.append(key) }
                var value = text(field[field.index(after: eq)...])
                if key == "link" {
                    // One spelling for one target: \M-x and \370 are the same byte.
                    do { value = vis(try unvis(field[field.index(after: eq)...])) } catch { throw bad(error.message) }
                }
                keywords[key] = value
            }
            if first.elementsEqual("/set".utf8) {
                for (k, v) in keywords { set[k] = v; used.insert(keywordName(k)) }
            } else if first.elementsEqual("/unset".utf8) {
                if keywords["all"] != nil { set = [:] } else { for k in keywords.keys { set[k] = nil } }
            } else if first.elementsEqual("..".utf8) {
                guard let current = directory else { throw bad("'..' above the root") }
                directory = current == "." ? nil : parentPath(current)
            } else {
                let decoded: [UInt8]
                do { decoded = try unvis(first) } catch { throw bad(error.message) }
                guard !decoded.contains(0) else { throw bad("a name with a NUL byte") }
                let name = ByteString(bytes: decoded)
                var resolved = set
                for (k, v) in keywords { resolved[k] = v; used.insert(keywordName(k)) }
                if decoded.contains(0x2F) {
                    // A full path: relative to the root, it does not change the directory.
                    let components = cleanComponents(name)
                    entries.append(Entry(path: components.isEmpty ? "." : components.joined(separator: "/"), keywords: resolved,
                                         xattrKeys: xattrKeys))
                    continue
                }
                let entryPath: ByteString
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
        guard started else { throw StoreError(.corrupt, "\(file): no root entry \".\": not an mtree manifest") }
        return MtreeManifest(entries: entries, usedKeywords: used)
    }

    // MARK: Writing

    /// go-mtree's bytes for `entries`, which must be in walk order (as RootfsWalk produces
    /// them); `tree` is the path named in the header.
    public func serialized(tree: String) -> [UInt8] {
        var out: [UInt8] = []
        func add(_ s: String) { out += s.utf8 }
        func header(_ key: String, _ value: String) {
            add("#" + String(repeating: " ", count: max(0, 15 - key.count - 1)) + key + ": " + value + "\n")
        }
        header("user", MtreeManifest.userName())
        header("machine", MtreeManifest.hostName())
        header("tree", tree)
        header("date", MtreeManifest.ansicDate())
        header("keywords", MtreeManifest.keywords.joined(separator: ","))
        var openDirectories: [ByteString] = []
        var set: [String: String]? = nil
        for entry in entries {
            let parent = entry.path == "." ? nil : MtreeManifest.parentPath(entry.path)
            if let parent {
                while let top = openDirectories.last, top != parent {
                    add("..\n")
                    openDirectories.removeLast()
                }
            }
            if entry.isDirectory {
                // go-mtree writes this comment as the path's raw bytes; a newline must not end
                // it early (a carriage return does not: go-mtree's reader drops only a
                // trailing one, and this is a comment).
                add("\n# ")
                let raw = entry.path.bytes
                if raw.contains(0x0A) { add(MtreeManifest.vis(entry.path)) } else { out += raw }
                add("\n")
                let owner = ["uid": entry.keywords["uid"] ?? "", "gid": entry.keywords["gid"] ?? ""].filter { !$0.value.isEmpty }
                if set == nil || owner.contains(where: { set?[$0.key] != $0.value }) {
                    var newSet = ["type": "file", "nlink": "1", "mode": "0664"]
                    for (k, v) in owner { newSet[k] = v }
                    set = newSet
                    add("/set type=file nlink=1 mode=0664")
                    for k in ["uid", "gid"] { if let v = owner[k] { add(" \(k)=\(v)") } }
                    add("\n")
                }
                add(entry.path == "." ? "." : MtreeManifest.vis(MtreeManifest.baseName(entry.path)))
                openDirectories.append(entry.path)
            } else {
                add("    " + MtreeManifest.vis(MtreeManifest.baseName(entry.path)))
            }
            for keyword in MtreeManifest.keywords {
                if keyword == "xattr" {
                    for key in entry.xattrKeys { if let value = entry.keywords[key] { add(" " + key + "=" + value) } }
                } else if let value = entry.keywords[keyword], set?[keyword] != value {
                    add(" " + keyword + "=" + value)
                }
            }
            add("\n")
        }
        for _ in openDirectories { add("..\n") }
        return out
    }

    /// The path up to its last '/', or "." for a name in the root.
    static func parentPath(_ path: ByteString) -> ByteString {
        path.withBytes { b in
            guard let slash = b.lastIndex(of: 0x2F) else { return "." }
            return ByteString(bytes: b[..<slash])
        }
    }

    /// The last component of a path.
    static func baseName(_ path: ByteString) -> ByteString {
        path.withBytes { b in
            guard let slash = b.lastIndex(of: 0x2F) else { return path }
            return ByteString(bytes: b[(slash + 1)...])
        }
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
    /// byte is `\ooo`. The result is ASCII.
    public static func vis<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount)
        for b in bytes {
            let graphic = b > 0x20 && b < 0x7F
            if graphic && b != UInt8(ascii: "*") && b != UInt8(ascii: "?") && b != UInt8(ascii: "[") && b != UInt8(ascii: "#") {
                if b == UInt8(ascii: "\\") { out.append(b) }
                out.append(b)
            } else {
                out += [UInt8(ascii: "\\"), 0x30 + (b >> 6), 0x30 + (b >> 3 & 7), 0x30 + (b & 7)]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// vis of a name's bytes.
    public static func vis(_ name: ByteString) -> String { name.withBytes { vis($0) } }

    /// Decodes vis(3): `\ooo`, `\\`, C-style escapes (`\s \n \t \r \b \a \v \f \0 \E`), `\M-x`,
    /// `\M^x` and `\^x`.
    public static func unvis<S: Collection>(_ s: S) throws(StoreError) -> [UInt8] where S.Element == UInt8 {
        var bytes: [UInt8] = []
        let input = Array(s)
        func shown() -> String { String(decoding: input, as: UTF8.self).debugDescription }
        var i = 0
        func next() throws(StoreError) -> UInt8 {
            guard i < input.count else { throw StoreError(.corrupt, "incomplete escape in \(shown())") }
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
                guard value < 256 else { throw StoreError(.corrupt, "invalid octal escape in \(shown())") }
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
                    throw StoreError(.corrupt, "invalid \\M escape in \(shown())")
                }
            case UInt8(ascii: "^"):
                let x = try next()
                bytes.append(x == UInt8(ascii: "?") ? 0x7F : x & 0x1F)
            default:
                // vis(3) leaves any other escaped character as itself.
                bytes.append(c)
            }
        }
        return bytes
    }

    /// unvis of a keyword value (a link target).
    public static func unvis(_ value: String) throws(StoreError) -> [UInt8] { try unvis(Array(value.utf8)) }
}
