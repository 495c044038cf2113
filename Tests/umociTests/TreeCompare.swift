import CLinux
import Foundation
import Basics
import OCI
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
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
    var link: ByteString
    var xattrs: [String: [UInt8]]
    var mtime: Int
    var mtimeNanoseconds: Int
    var device: UInt64
    /// The first path (in byte order) of this inode, for hardlink groups.
    var hardlinkGroup: ByteString

    var description: String {
        "\(type) \(String(mode, radix: 8)) \(uid):\(gid) size=\(size) \(content.prefix(12)) ->\(link) xattrs=\(xattrs.keys.sorted()) mtime=\(mtime).\(mtimeNanoseconds) dev=\(device) group=\(hardlinkGroup)"
    }
}

/// Walks a tree without following symlinks, by directory fds, with names as the bytes the
/// file system has (so that NFC and NFD spellings, or names that are not UTF-8, stay apart).
func describeTree(_ root: String) throws -> [ByteString: TreeEntry] {
    var out: [ByteString: TreeEntry] = [:]
    var inodes: [UInt64: ByteString] = [:]
    var paths: [ByteString] = [ByteString()]
    func walk(_ fd: Int32, _ prefix: ByteString) throws {
        for name in try Files.names(fd: fd, path: root) {
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            paths.append(rel)
            var st = stat()
            guard fstatat(fd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw StoreError.system("lstat", rel.description) }
            if st.st_mode & S_IFMT == S_IFDIR {
                let sub = openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw StoreError.system("open", rel.description) }
                defer { close(sub) }
                try walk(sub, rel)
            }
        }
    }
    let rootFd = try Files.open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
    defer { close(rootFd) }
    try walk(rootFd, ByteString())
    paths.sort()
    for rel in paths {
        let full = rel.isEmpty ? ByteString(root) : ByteString(root) + "/" + rel
        var st = stat()
        guard lstat(full.c, &st) == 0 else { throw StoreError.system("lstat", full.description) }
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
            let fd = open(full.c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw StoreError.system("open", full.description) }
            defer { close(fd) }
            let hasher = try DigestHasher(algorithm: Digest.sha256)
            try Files.forEachChunk(of: fd, path: full.description) { hasher.update($0) }
            content = hasher.finalize().encoded
        }
        var link = ByteString()
        if fmt == S_IFLNK {
            var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(full.c, &target, target.count)
            guard n >= 0 else { throw StoreError.system("readlink", full.description) }
            link = ByteString(bytes: target[0..<n])
        }
        var xattrs: [String: [UInt8]] = [:]
        var names = [CChar](repeating: 0, count: 65536)
        let n = llistxattr(full.c, &names, names.count)
        if n > 0 {
            for name in names[0..<n].split(separator: 0).map({ String(cString: Array($0) + [0]) }) {
                var value = [UInt8](repeating: 0, count: 65536)
                let m = lgetxattr(full.c, name, &value, value.count)
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
    _ ours: String, _ theirs: String, compareDirectoryMtime: (ByteString) -> Bool = { _ in true },
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
        if x != y { differences.append("\(path.isEmpty ? "." : path.description):\n  ours:   \(x)\n  theirs: \(y)") }
    }
    #expect(differences.isEmpty, "\(differences.count) paths differ:\n\(differences.prefix(10).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
}
