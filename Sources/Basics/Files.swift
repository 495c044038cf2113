#if canImport(Glibc)
import Glibc
#endif

/// Thin wrappers over the system calls LayerStore uses, each turning errno into a StoreError
/// that names the path.
public enum Files {
    /// Retries a system call interrupted by a signal.
    @inline(__always)
    public static func retrying<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let r = body()
            if r == -1 && errno == EINTR { continue }
            return r
        }
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(StoreError) -> Int32 {
        let fd = try check(retrying { Glibc.open(path, flags | O_CLOEXEC, mode) }, "open", path)
        return fd
    }

    /// The whole content of a file.
    public static func read(_ path: String) throws(StoreError) -> [UInt8] {
        let fd = try OwnedDescriptor(opening: path, O_RDONLY)
        var st = stat()
        try check(fstat(fd.raw, &st), "stat", path)
        var out: [UInt8] = []
        out.reserveCapacity(Int(st.st_size) + 1)
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try check(chunk.withUnsafeMutableBytes { buf in retrying { Glibc.read(fd.raw, buf.baseAddress, buf.count) } }, "read", path)
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    /// Reads an open file from its position to its end, in 1 MiB chunks into one buffer.
    public static func forEachChunk(
        of fd: Int32, path: String, _ body: (UnsafeRawBufferPointer) throws(StoreError) -> Void
    ) throws(StoreError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            let n = try check(retrying { Glibc.read(fd, buffer.baseAddress, buffer.count) }, "read", path)
            if n == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(StoreError) {
        var offset = 0
        while offset < bytes.count {
            let n = try check(retrying { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }, "write", path)
            offset += n
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(StoreError) {
        var offset = 0
        while offset < bytes.count {
            let n = try check(bytes.withUnsafeBytes { buf in retrying { Glibc.write(fd, buf.baseAddress! + offset, buf.count - offset) } }, "write", path)
            offset += n
        }
    }

    public static func fsync(_ fd: Int32, path: String) throws(StoreError) {
        try check(retrying({ Glibc.fsync(fd) }), "fsync", path)
    }

    public static func fsyncDirectory(_ path: String) throws(StoreError) {
        let fd = try OwnedDescriptor(opening: path, O_RDONLY | O_DIRECTORY)
        try fsync(fd.raw, path: path)
    }

    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(StoreError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw .system("mkdir", path) }
    }

    /// Creates `path` and whatever of its parents is missing (`mkdir -p`).
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(StoreError) {
        if mkdir(path, mode) == 0 || errno == EEXIST && isDirectory(path) { return }
        guard errno == ENOENT else { throw .system("mkdir", path) }
        let parent = directoryName(path)
        if parent != path && parent != "." && parent != "/" { try makeDirectories(parent, mode: mode) }
        try makeDirectory(path, mode: mode)
    }

    public static func rename(_ from: String, _ to: String) throws(StoreError) {
        try check(Glibc.rename(from, to), "rename", "\(from) to \(to)")
    }

    public static func unlink(_ path: String) throws(StoreError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT { throw .system("remove", path) }
    }

    /// The names in a directory, without "." and "..".
    public static func list(_ path: String) throws(StoreError) -> [String] {
        let fd = try OwnedDescriptor(opening: path, O_RDONLY | O_DIRECTORY)
        return try list(fd: fd.raw, path: path)
    }

    /// A name for a temporary file that no other process picks: pid plus random bits.
    public static func temporaryName(prefix: String) -> String {
        "\(prefix)\(getpid())-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    /// Replaces `path` with `bytes` atomically: written to a temporary file beside it, fsynced,
    /// renamed over it, and the directory fsynced. Readers see the old or the new file, whole.
    /// Replaces `path` through a temporary file beside it, owned by `owner` when given.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644,
                                       owner: FileOwner? = nil) throws(StoreError) {
        let dir = directoryName(path)
        let temp = dir + "/" + temporaryName(prefix: ".umoci-tmp-")
        let fd = try open(temp, O_WRONLY | O_CREAT | O_EXCL, mode: mode)
        do throws(StoreError) {
            defer { close(fd) }
            try owner?.adopt(fd: fd, path: temp)
            try writeAll(fd, bytes, path: temp)
            try fsync(fd, path: temp)
            try rename(temp, path)
        } catch {
            Glibc.unlink(temp)
            throw error
        }
        try fsyncDirectory(dir)
    }

    public static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// Removes `path` and everything under it, never following a symlink.
    public static func removeTree(_ path: String) throws(StoreError) {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return }
            throw .system("stat", path)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            _ = makeRemovable(AT_FDCWD, path, st)
            let fd = try OwnedDescriptor(opening: path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            try removeContents(of: fd.raw, path: path)
            if rmdir(path) != 0 && errno != ENOENT { throw .system("remove", path) }
        } else if Glibc.unlink(path) != 0 && errno != ENOENT {
            throw .system("remove", path)
        }
    }

    /// Changes the permission bits of `dirfd`/`name` itself, never through a symlink: the
    /// object is pinned with an O_PATH|O_NOFOLLOW descriptor and changed through its
    /// /proc/self/fd link (fchmodat(2) has no working AT_SYMLINK_NOFOLLOW before Linux 6.6).
    /// A symlink's mode cannot be changed: EOPNOTSUPP, as fchmodat2(AT_SYMLINK_NOFOLLOW)
    /// answers. Returns 0, or -1 with errno set.
    public static func chmodNoFollow(_ dirfd: Int32, _ name: UnsafePointer<CChar>, _ mode: mode_t) -> Int32 {
        let fd = retrying { openat(dirfd, name, O_PATH_FLAG | O_NOFOLLOW | O_CLOEXEC) }
        if fd < 0 { return -1 }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { return -1 }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            errno = EOPNOTSUPP
            return -1
        }
        return chmod("/proc/self/fd/\(fd)", mode)
    }

    /// O_PATH, which Glibc's Swift module does not export.
    public static let O_PATH_FLAG: Int32 = 0o10000000

    /// Opens the directory at `components` below the open directory `root`, one component at
    /// a time, never following a symlink (an empty path opens `root` again). Returns an fd the
    /// caller closes, or -1 with errno set.
    public static func openDirectory(beneath root: Int32, _ components: [ByteString]) -> Int32 {
        var fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        for c in components where fd >= 0 {
            let next = openat(fd, c.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errno
            close(fd)
            errno = saved
            fd = next
        }
        return fd
    }

    /// The names in an open directory as text: only for directories this tool names itself
    /// (a layout's, /proc's); a tree from an image is listed with names(fd:path:).
    public static func list(fd directory: Int32, path: String) throws(StoreError) -> [String] {
        try names(fd: directory, path: path).map(\.description)
    }

    /// The names in an open directory as the file system has them (bytes), without "." and
    /// "..". Reads through a new open file description (a dup would share, and leave at its
    /// end, the directory's read position).
    public static func names(fd directory: Int32, path: String) throws(StoreError) -> [ByteString] {
        let listing = openat(directory, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard listing >= 0, let dir = fdopendir(listing) else {
            if listing >= 0 { close(listing) }
            throw .system("open directory", path)
        }
        defer { closedir(dir) }
        var names: [ByteString] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw .system("read directory", path) }
                break
            }
            let name = ByteString(dirent: entry.pointee.d_name)
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes everything inside an open directory, never following a symlink.
    /// A directory a user other than root owns but cannot list or empty (a rootless rootfs has
    /// 0555 /usr, /proc…) gets u+rwx before it is removed, as umoci's unpriv.RemoveAll does.
    static func makeRemovable(_ dirfd: Int32, _ name: UnsafePointer<CChar>, _ st: stat) -> Int32 {
        guard geteuid() != 0, st.st_uid == geteuid(), st.st_mode & 0o700 != 0o700 else { return 0 }
        return chmodNoFollow(dirfd, name, (st.st_mode & 0o7777) | 0o700)
    }

    public static func removeContents(of directory: Int32, path: String) throws(StoreError) {
        for name in try names(fd: directory, path: path) {
            let sub = path + "/" + name.description
            var st = stat()
            if fstatat(directory, name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                _ = makeRemovable(directory, name.c, st)
                let fd = try OwnedDescriptor(at: directory, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, path: sub)
                try removeContents(of: fd.raw, path: sub)
                if unlinkat(directory, name.c, AT_REMOVEDIR) != 0 && errno != ENOENT { throw .system("remove", sub) }
            } else if unlinkat(directory, name.c, 0) != 0 && errno != ENOENT {
                throw .system("remove", sub)
            }
        }
    }
}

/// The owner a command gives the files it creates in an image layout: the layout directory's,
/// as umoci does, so that a layout another user owns stays theirs when root edits it.
public struct FileOwner: Sendable, Equatable {
    public var uid: uid_t
    public var gid: gid_t

    /// The owner of `directory` when it differs from this process's and this process may give
    /// files away (it is root); nil when new files already get the right owner or cannot.
    public static func inherited(from directory: String) throws(StoreError) -> FileOwner? {
        var st = stat()
        try check(stat(directory, &st), "stat", directory)
        guard geteuid() == 0, st.st_uid != geteuid() || st.st_gid != getegid() else { return nil }
        return FileOwner(uid: st.st_uid, gid: st.st_gid)
    }

    public func adopt(fd: Int32, path: String) throws(StoreError) {
        try check(fchown(fd, uid, gid), "chown", path)
    }

    public func adopt(path: String) throws(StoreError) {
        try check(lchown(path, uid, gid), "chown", path)
    }
}
