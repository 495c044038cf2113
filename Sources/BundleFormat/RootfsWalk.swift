import CLinux

#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive
import UpperFormat
import LayerWriter

/// Walks an extracted rootfs the way go-mtree does (a directory, then its non-directories,
/// then its subdirectories, names in byte order) and gives each path umoci's mtree keywords.
///
/// Everything is read through directory fds opened with O_NOFOLLOW, one name at a time: a
/// rootfs holds absolute symlinks that resolve on the host, and none is ever followed. Names
/// and link targets are the bytes the directory and readlink give (ByteString), so a name
/// that is not UTF-8, or one of two spellings of "café", is its own path.
///
/// Hashing every file is what makes umoci's repack slow. A file's digest is taken from the
/// manifest instead when its stat stamp (inode, size, mtime, ctime; see UpperBaseline) is the
/// one recorded when that digest was computed, and its ctime is before that walk started
/// (racily clean files are hashed again, as git does). Every file hashed gets a new stamp.
public struct RootfsWalk: Sendable {
    /// Every path in go-mtree's order, with its keywords.
    public var entries: [MtreeManifest.Entry] = []
    /// The stamps of the regular files whose digest in `entries` is known to match their content.
    public var stamps = UpperBaseline()

    /// Walks `rootfs`. `known` are stamps recorded for `manifest`'s digests: a file whose
    /// stamp still matches keeps its digest from there.
    public static func walk(rootfs: String, known: UpperBaseline? = nil, manifest: MtreeManifest? = nil) throws(StoreError) -> RootfsWalk {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var walker = Walker(rootfs: rootfs, knownStamps: known, knownDigests: known == nil ? [:] : manifest?.byPath() ?? [:],
                            buffer: buffer)
        walker.result.stamps.started = UpperBaseline.fileSystemNow(besides: rootfs)
        let fd = try OwnedDescriptor(opening: rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        var st = stat()
        try check(fstat(fd.raw, &st), "stat", rootfs)
        try walker.directory(fd: fd.raw, st: st, path: ".")
        return walker.result
    }
}

/// The state of one RootfsWalk.walk.
struct Walker {
    var result = RootfsWalk()
    let rootfs: String
    let knownStamps: UpperBaseline?
    let knownDigests: [ByteString: MtreeManifest.Entry]
    /// Scratch space for hashing, owned by RootfsWalk.walk.
    let buffer: UnsafeMutableRawBufferPointer

    mutating func directory(fd: Int32, st: stat, path: ByteString) throws(StoreError) {
        let display = path == "." ? rootfs : rootfs + "/" + path.description
        result.entries.append(entry(path, st, xattrs: try Xattr.list(.descriptor(fd), path: display), link: nil, digest: nil))
        var files: [(ByteString, stat)] = []
        var directories: [(ByteString, stat)] = []
        for name in try Files.names(fd: fd, path: display) {
            var child = stat()
            guard fstatat(fd, name.c, &child, AT_SYMLINK_NOFOLLOW) == 0 else {
                if errno == ENOENT { continue }  // removed while we walk: it is gone
                throw .system("stat", display + "/" + name.description)
            }
            if child.st_mode & S_IFMT == S_IFDIR { directories.append((name, child)) } else { files.append((name, child)) }
        }
        files.sort { $0.0 < $1.0 }
        directories.sort { $0.0 < $1.0 }
        for (name, child) in files {
            try file(parent: fd, name: name, st: child, path: path == "." ? name : path + "/" + name,
                     display: display + "/" + name.description)
        }
        for (name, child) in directories {
            let sub = Files.retrying { openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard sub >= 0 else {
                if errno == ENOENT { continue }
                throw .system("open", display + "/" + name.description)
            }
            defer { close(sub) }
            try directory(fd: sub, st: child, path: path == "." ? name : path + "/" + name)
        }
    }

    /// `display` is the path for messages only.
    mutating func file(parent: Int32, name: ByteString, st: stat, path: ByteString, display: String) throws(StoreError) {
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            if let knownStamps, knownStamps.unchanged(path, st), let known = knownDigests[path],
               let digest = known.keywords["sha256digest"] {
                // The same ctime: content and xattrs are as the manifest has them.
                result.stamps.stamps[path] = UpperBaseline.stamp(st)
                var e = entry(path, st, xattrs: [], link: nil, digest: digest)
                for key in known.xattrKeys { e.keywords[key] = known.keywords[key] }
                e.xattrKeys = known.xattrKeys
                result.entries.append(e)
                return
            }
            let grant = ReadGrant(parent: parent, name: name.c, st: st)  // a rootless 0000 file
            defer { grant.restore() }
            let fd = try OwnedDescriptor(at: parent, name.c, O_RDONLY | O_NOFOLLOW, path: display)
            var before = stat()
            try check(fstat(fd.raw, &before), "stat", display)
            before.st_mode = grant.original(before.st_mode)
            let digest = try hash(fd: fd.raw, path: display)
            var after = stat()
            if fstat(fd.raw, &after) == 0, UpperBaseline.stamp(after) == UpperBaseline.stamp(before) {
                result.stamps.stamps[path] = UpperBaseline.stamp(before)
            }
            result.entries.append(entry(path, before, xattrs: try Xattr.list(.descriptor(fd.raw), path: display), link: nil, digest: digest))
        case S_IFLNK:
            var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = try check(readlinkat(parent, name.c, &target, target.count), "readlink", display)
            result.entries.append(entry(path, st, xattrs: [], link: target[0..<n], digest: nil))
        default:
            // go-mtree records xattrs of regular files and directories only.
            result.entries.append(entry(path, st, xattrs: [], link: nil, digest: nil))
        }
    }

    func hash(fd: Int32, path: String) throws(StoreError) -> String {
        let hasher = try DigestHasher()
        var offset: off_t = 0
        while true {
            let n = try check(Files.retrying { pread(fd, buffer.baseAddress, buffer.count, offset) }, "read", path)
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += off_t(n)
        }
        return hasher.finalize().encoded
    }

    /// The entry of `path` with umoci's keywords, as go-mtree computes them from lstat.
    func entry(_ path: ByteString, _ st: stat, xattrs: [Xattr], link: ArraySlice<UInt8>?, digest: String?) -> MtreeManifest.Entry {
        var k: [String: String] = [:]
        k["size"] = String(st.st_size)
        switch st.st_mode & S_IFMT {
        case S_IFDIR: k["type"] = "dir"
        case S_IFREG: k["type"] = "file"
        case S_IFLNK: k["type"] = "link"
        case S_IFIFO: k["type"] = "fifo"
        case S_IFSOCK: k["type"] = "socket"
        case S_IFCHR: k["type"] = "char"
        default: k["type"] = "block"
        }
        k["uid"] = String(st.st_uid)
        k["gid"] = String(st.st_gid)
        let mode = st.st_mode & 0o7777
        k["mode"] = mode == 0 ? "0" : "0" + String(mode, radix: 8)
        if let link { k["link"] = MtreeManifest.vis(link) }
        k["nlink"] = String(st.st_nlink)
        k["tar_time"] = "\(st.st_mtim.tv_sec).000000000"
        if let digest { k["sha256digest"] = digest }
        var xattrKeys: [String] = []
        for x in xattrs {
            let key = "xattr." + MtreeManifest.vis(x.name)
            if k[key] == nil { xattrKeys.append(key) }
            k[key] = Base64.encode(x.value)
        }
        return MtreeManifest.Entry(path: path, keywords: k, xattrKeys: xattrKeys)
    }
}
