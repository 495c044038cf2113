import CLinux
import Foundation
import LayerStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a path in an extracted tree is, for comparing two trees: type, mode, owner, size,
/// content, link target, xattrs, mtime, and which other paths are the same inode.
struct TreeEntry: Equatable, CustomStringConvertible {
    var type: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: Int64
    var content: String
    var link: String
    var xattrs: [String: [UInt8]]
    var mtime: Int
    var mtimeNanoseconds: Int
    var device: UInt64
    /// The first path (in sorted order) of this inode, for hardlink groups.
    var hardlinkGroup: String

    var description: String {
        "\(type) \(String(mode, radix: 8)) \(uid):\(gid) size=\(size) \(content.prefix(12)) ->\(link) xattrs=\(xattrs.keys.sorted()) mtime=\(mtime).\(mtimeNanoseconds) dev=\(device) group=\(hardlinkGroup)"
    }
}

/// Walks a tree without following symlinks.
func describeTree(_ root: String) throws -> [String: TreeEntry] {
    var out: [String: TreeEntry] = [:]
    var inodes: [UInt64: String] = [:]
    var paths: [String] = [""]
    let fm = FileManager.default
    if let e = fm.enumerator(atPath: root) {
        while let rel = e.nextObject() as? String { paths.append(rel) }
    }
    paths.sort()
    for rel in paths {
        let full = rel.isEmpty ? root : root + "/" + rel
        var st = stat()
        guard lstat(full, &st) == 0 else { throw StoreError.system("lstat", full) }
        let fmt = st.st_mode & S_IFMT
        let type: String
        switch fmt {
        case S_IFDIR: type = "dir"
        case S_IFREG: type = "file"
        case S_IFLNK: type = "symlink"
        case S_IFCHR: type = "char"
        case S_IFBLK: type = "block"
        case S_IFIFO: type = "fifo"
        default: type = "other"
        }
        var content = ""
        if fmt == S_IFREG {
            let data = try Data(contentsOf: URL(fileURLWithPath: full))
            content = try DigestHasher.digest(of: Array(data)).encoded
        }
        var link = ""
        if fmt == S_IFLNK { link = try fm.destinationOfSymbolicLink(atPath: full) }
        var xattrs: [String: [UInt8]] = [:]
        var names = [CChar](repeating: 0, count: 65536)
        let n = llistxattr(full, &names, names.count)
        if n > 0 {
            for name in names[0..<n].split(separator: 0).map({ String(cString: Array($0) + [0]) }) {
                var value = [UInt8](repeating: 0, count: 65536)
                let m = lgetxattr(full, name, &value, value.count)
                if m >= 0 { xattrs[name] = Array(value[0..<m]) }
            }
        }
        let key = UInt64(st.st_ino)
        var group = rel
        if fmt != S_IFDIR && st.st_nlink > 1 {
            if let first = inodes[key] { group = first } else { inodes[key] = rel }
        }
        out[rel] = TreeEntry(
            type: type, mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
            size: fmt == S_IFREG ? Int64(st.st_size) : 0, content: content, link: link, xattrs: xattrs,
            mtime: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec,
            device: fmt == S_IFCHR || fmt == S_IFBLK ? UInt64(st.st_rdev) : 0, hardlinkGroup: group)
    }
    return out
}

/// Expects two trees to be the same. Directory mtimes are compared only where `compareMtime`
/// says so: a directory that no tar entry defines gets the extraction time from umoci.
func expectSameTree(
    _ ours: String, _ theirs: String, compareDirectoryMtime: (String) -> Bool = { _ in true },
    wholeSecondMtimes: Bool = false, sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let a = try describeTree(ours), b = try describeTree(theirs)
    let onlyOurs = Set(a.keys).subtracting(b.keys).sorted()
    let onlyTheirs = Set(b.keys).subtracting(a.keys).sorted()
    #expect(onlyOurs.isEmpty, "only in ours: \(onlyOurs.prefix(20))", sourceLocation: sourceLocation)
    #expect(onlyTheirs.isEmpty, "only in theirs: \(onlyTheirs.prefix(20))", sourceLocation: sourceLocation)
    var differences: [String] = []
    for path in a.keys.sorted() {
        guard var x = a[path], var y = b[path] else { continue }
        if wholeSecondMtimes {
            // A layer keeps whole seconds, truncated as umoci 0.6 writes them.
            x.mtimeNanoseconds = 0
            y.mtimeNanoseconds = 0
        }
        if x.type == "dir" && !compareDirectoryMtime(path) {
            x.mtime = 0; x.mtimeNanoseconds = 0
            y.mtime = 0; y.mtimeNanoseconds = 0
        }
        if x != y { differences.append("\(path.isEmpty ? "." : path):\n  ours:   \(x)\n  theirs: \(y)") }
    }
    #expect(differences.isEmpty, "\(differences.count) paths differ:\n\(differences.prefix(10).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
}
