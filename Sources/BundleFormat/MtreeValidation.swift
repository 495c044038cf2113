import CCrypto
import CLinux
import Basics
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// `umoci raw mtree-validate` (umoci 0.6's hidden command, for its own tests): a directory
/// checked against an mtree manifest as go-mtree's `Check` does it, with the keywords umoci
/// picks (cmd/umoci/raw-mtree-validate.go).
///
/// The directory is walked by RootfsWalk (never following a symlink; umoci's keywords); the
/// keywords it does not compute (`time` with nanoseconds, `uname`, `gname`, other digests)
/// are read for each path afterwards, through directory fds opened beneath the root.
public enum MtreeValidation {
    /// go-mtree's keyword names (after `KeywordSynonym`) that this validator computes. `flags`
    /// is BSD's and yields nothing on Linux, as in go-mtree.
    public static let knownKeywords: Set<String> = [
        "size", "type", "time", "tar_time", "link", "uid", "gid", "nlink", "uname", "gname", "mode", "flags", "xattr",
        "md5digest", "sha1digest", "sha256digest", "sha384digest", "sha512digest", "ripemd160digest",
    ]

    /// go-mtree's `KeywordSynonym`: the short names of digests, "xattrs".
    public static func synonym(_ name: String) -> String {
        switch name {
        case "md5": return "md5digest"
        case "rmd160", "rmd160digest": return "ripemd160digest"
        case "sha1", "sha256", "sha384", "sha512": return name + "digest"
        case "xattrs": return "xattr"
        default: return name
        }
    }

    /// A `-k`/`-K` value: names delimited by commas or spaces.
    public static func parseKeywords(_ argument: String) -> [String] {
        argument.split(whereSeparator: { $0 == "," || $0 == " " }).map { synonym(String($0)) }
    }

    /// The keywords compared, as umoci 0.6 picks them: `use` (-k) if given, else umoci's own
    /// (--umoci-keywords) or the ones the manifest's entries use; then `add` (-K); `type`
    /// always, first.
    public static func compareKeywords(manifest: MtreeManifest, use: [String]?, add: [String], umoci: Bool) -> [String] {
        var keywords = use ?? (umoci ? MtreeManifest.keywords : entryKeywords(manifest))
        for k in add where !keywords.contains(k) { keywords.append(k) }
        if !keywords.contains("type") { keywords.insert("type", at: 0) }
        return keywords
    }

    /// The keywords the manifest's entries carry (go-mtree's `UsedKeywords`: not the header's).
    static func entryKeywords(_ manifest: MtreeManifest) -> [String] {
        var out: [String] = []
        for entry in manifest.entries {
            for key in entry.keywords.keys.sorted() {
                let name = synonym(MtreeManifest.keywordName(key))
                if !out.contains(name) { out.append(name) }
            }
        }
        return out
    }

    /// One difference, printed as go-mtree's `InodeDelta.String()`.
    public struct Delta: Sendable, Equatable, CustomStringConvertible {
        public enum Kind: Sendable, Equatable {
            case missing, extra
            /// The first differing keyword (by name) and its values (empty when absent).
            case modified(keyword: String, expected: String, got: String)
        }
        public var path: ByteString
        public var kind: Kind

        public var description: String {
            let quoted = GoText.quote(path.description)
            switch kind {
            case .missing: return "\(quoted): missing path"
            case .extra: return "\(quoted): unexpected path"
            case let .modified(keyword, expected, got):
                return "\(quoted): keyword \(GoText.quote(keyword)): expected \(expected); got \(got)"
            }
        }
    }

    /// The differences between `root` and `manifest` on `keywords`, by path in byte order
    /// (go-mtree returns them in map order). Throws for an unknown keyword, as go-mtree's walk.
    public static func check(root: String, manifest: MtreeManifest, keywords: [String]) throws(StoreError) -> [Delta] {
        for k in keywords where !knownKeywords.contains(k) {
            throw StoreError("unknown keyword \(GoText.quote(k)) for file \(GoText.quote(root))")
        }
        let walked = try RootfsWalk.walk(rootfs: root).entries
        let extras = keywords.filter { ["time", "uname", "gname"].contains($0) || ($0.hasSuffix("digest") && $0 != "sha256digest") }
        let rootFd = try Files.open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        defer { close(rootFd) }
        let selected = Set(keywords)
        var now: [ByteString: [String: String]] = [:]
        for entry in walked {
            var k = entry.keywords.filter { selected.contains(MtreeManifest.keywordName($0.key)) }
            if !extras.isEmpty { try addExtraKeywords(extras, to: &k, path: entry.path, root: rootFd, display: root) }
            now[entry.path] = k
        }
        let before = manifest.byPath()
        var deltas: [Delta] = []
        for path in Set(before.keys).union(now.keys).sorted() {
            guard let old = before[path]?.keywords else { deltas.append(Delta(path: path, kind: .extra)); continue }
            guard let new = now[path] else { deltas.append(Delta(path: path, kind: .missing)); continue }
            if let first = try differences(old, new, keywords: selected).first {
                deltas.append(Delta(path: path, kind: .modified(keyword: first.key, expected: first.expected, got: first.got)))
            }
        }
        return deltas
    }

    /// go-mtree's `compareEntry` and the keyword filter of `compare`: every key of either side
    /// whose keyword is compared; `time` and `tar_time` are compared as `tar_time` when one
    /// side has each.
    static func differences(_ old: [String: String], _ new: [String: String],
                            keywords: Set<String>) throws(StoreError) -> [(key: String, expected: String, got: String)] {
        var old = old, new = new
        if (old["tar_time"] != nil || new["tar_time"] != nil) && (old["time"] != nil || new["time"] != nil) {
            let oldTime = old.removeValue(forKey: "time"), newTime = new.removeValue(forKey: "time")
            if let oldTime, old["tar_time"] == nil {
                old["tar_time"] = try tarTime(oldTime)
            } else if let newTime, new["tar_time"] == nil {
                new["tar_time"] = try tarTime(newTime)
            }
        }
        var out: [(key: String, expected: String, got: String)] = []
        for key in Set(old.keys).union(new.keys).sorted() where old[key] != new[key] {
            let name = MtreeManifest.keywordName(key)
            guard keywords.contains(name) || (name == "time" && keywords.contains("tar_time"))
                    || (name == "tar_time" && keywords.contains("time")) else { continue }
            out.append((key, old[key] ?? "", new[key] ?? ""))
        }
        return out
    }

    /// A `time` value ("sec.nsec") as `tar_time` (the seconds).
    static func tarTime(_ time: String) throws(StoreError) -> String {
        let parts = time.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let seconds = Int64(parts[0]), Int64(parts[1]) != nil else {
            throw StoreError("failed to parse \"time\" key: invalid format \(GoText.quote(time))")
        }
        return "\(seconds).000000000"
    }

    /// `time`, `uname`, `gname` and digests other than sha256 for the path, as go-mtree's
    /// keyword functions compute them (digests of regular files only).
    static func addExtraKeywords(_ extras: [String], to k: inout [String: String], path: ByteString, root: Int32,
                                 display: String) throws(StoreError) {
        var components = cleanComponents(path)
        let name = components.popLast()
        let parent = name == nil ? dup(root) : Files.openDirectory(beneath: root, components)
        let shown = display + "/" + path.description
        guard parent >= 0 else { throw .system("open", shown) }
        defer { close(parent) }
        let leaf = name ?? "."
        var st = stat()
        guard fstatat(parent, leaf.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw .system("stat", shown) }
        for keyword in extras {
            switch keyword {
            case "time":
                let ns = String(st.st_mtim.tv_nsec)
                k["time"] = "\(st.st_mtim.tv_sec)." + String(repeating: "0", count: max(0, 9 - ns.count)) + ns
            case "uname":
                if let pw = getpwuid(st.st_uid), let n = pw.pointee.pw_name { k["uname"] = String(cString: n) }
            case "gname":
                if let gr = getgrgid(st.st_gid), let n = gr.pointee.gr_name { k["gname"] = String(cString: n) }
            default:
                guard st.st_mode & S_IFMT == S_IFREG else { continue }
                let grant = ReadGrant(parent: parent, name: leaf.c, st: st)  // a rootless 0000 file
                defer { grant.restore() }
                let fd = Files.retrying { openat(parent, leaf.c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
                guard fd >= 0 else { throw .system("open", shown) }
                defer { close(fd) }
                k[keyword] = try hexDigest(fd: fd, algorithm: String(keyword.dropLast("digest".count)), path: shown)
            }
        }
    }

    /// The hex digest of a file by OpenSSL's name for the algorithm (md5, sha1, ripemd160, ...).
    static func hexDigest(fd: Int32, algorithm: String, path: String) throws(StoreError) -> String {
        guard let md = EVP_get_digestbyname(algorithm), let ctx = EVP_MD_CTX_new() else {
            throw StoreError("\(path): digest \(algorithm) is not available from libcrypto")
        }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestInit_ex(ctx, md, nil) == 1 else { throw StoreError("\(path): digest \(algorithm) is not available from libcrypto") }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset: off_t = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { b in Files.retrying { pread(fd, b.baseAddress, b.count, offset) } }
            if n < 0 { throw .system("read", path) }
            if n == 0 { break }
            EVP_DigestUpdate(ctx, buffer, n)
            offset += off_t(n)
        }
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &length)
        return out.prefix(Int(length)).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
