#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import Archive
import UpperFormat

/// The upper directory: it owns the descriptor of its root, opens every path one directory at a
/// time beneath it without following symlinks, and changes every object by a descriptor or by
/// name in its directory, never through a path the container could redirect. It also makes
/// and removes the upper format's markers (whiteouts, opaque markers). Immutable after init;
/// the OverlayFS's tree lock orders what is done in it.
final class UpperDirectory: Sendable {
    /// O_RDONLY descriptor of the upper root, owned (closed in deinit).
    let root: Int32
    /// st_dev of the upper root (0 if it could not be read).
    let dev: dev_t
    /// Whether openat2(2) works here (probed once at init).
    let useOpenat2: Bool
    /// An unprivileged server's upper directory: markers are the server's user's (root's by
    /// not carrying user.rootlesscontainers), not chowned to root.
    let rootless: Bool

    init(path: String, rootless: Bool) throws(StoreError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw .system("open upper directory", path) }
        root = fd
        self.rootless = rootless
        let probe = Sys.openat2(fd, ".", flags: Sys.O_PATH | O_DIRECTORY | O_CLOEXEC, resolve: Sys.RESOLVE_BENEATH_NO_LINKS)
        useOpenat2 = probe >= 0
        if probe >= 0 { close(probe) }
        var st = stat()
        dev = fstat(fd, &st) == 0 ? st.st_dev : 0
    }

    deinit { close(root) }

    /// Opens the upper directory at `parts` below the root, never following a symlink
    /// (openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or component by component with
    /// O_NOFOLLOW). With the default O_PATH the root fd itself is returned (borrowed).
    func openDirectory(_ parts: [ByteString], flags: Int32 = Sys.O_PATH) throws(Errno) -> DirFD {
        if parts.isEmpty {
            if flags == Sys.O_PATH { return DirFD(fd: root, owned: false) }
            let fd = openat(root, ".", flags | O_DIRECTORY | O_CLOEXEC)
            if fd < 0 { throw Errno.current }
            return DirFD(fd: fd, owned: true)
        }
        if useOpenat2 {
            let fd = Sys.openat2(root, parts.joined(separator: "/"), flags: flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                                 resolve: Sys.RESOLVE_BENEATH_NO_LINKS)
            if fd < 0 { throw errno == ELOOP ? Errno(ENOTDIR) : Errno.current }
            return DirFD(fd: fd, owned: true)
        }
        var current = root
        for (i, part) in parts.enumerated() {
            let last = i == parts.count - 1
            let fd = openat(current, part.c, (last ? flags : Sys.O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errno
            if current != root { close(current) }
            if fd < 0 { throw Errno(saved == ELOOP ? ENOTDIR : saved) }
            current = fd
        }
        return DirFD(fd: current, owned: true)
    }

    /// Opens a child directory of an open upper directory (no symlink following).
    func openChildDir(_ dirfd: Int32, _ name: ByteString, flags: Int32 = Sys.O_PATH) throws(Errno) -> Int32 {
        let fd = openat(dirfd, name.c, flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 { throw errno == ELOOP ? Errno(ENOTDIR) : Errno.current }
        return fd
    }

    func exists(_ dirfd: Int32, _ name: ByteString) -> Bool {
        var st = stat()
        return fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    func isOpaque(_ dirfd: Int32, _ name: ByteString) -> Bool {
        let fd = openat(dirfd, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return exists(fd, Whiteout.opaqueMarker)
    }

    /// Calls `body` with the name (bytes), d_ino and d_type of each entry of an upper
    /// directory, without "." and "..".
    func forEachEntry(of directory: Int32, _ body: (ByteString, ino_t, UInt8) -> Void) throws(Errno) {
        let fd = openat(directory, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw Errno.current }
        guard let dir = fdopendir(fd) else { close(fd); throw Errno.current }
        defer { closedir(dir) }
        while true {
            errno = 0
            guard let e = readdir(dir) else {
                if errno != 0 { throw Errno.current }
                return
            }
            let name = ByteString(dirent: e.pointee.d_name)
            if name == "." || name == ".." { continue }
            body(name, e.pointee.d_ino, e.pointee.d_type)
        }
    }

    /// Removes what an interrupted copy-up left (UpperWhiteout.isInternal names) anywhere in
    /// the upper directory, before it is served.
    /// The directory keeps its times: repack compares them with the image's (the shared
    /// whiteout file sits in the root, whose mtime is a "." entry when it moves).
    static func removeInternalFiles(_ directory: Int32, path: String) throws(StoreError) {
        var before = stat()
        var removed = false
        guard fstat(directory, &before) == 0 else { throw .system("stat", path) }
        defer {
            if removed {
                var times = (before.st_atim, before.st_mtim)
                _ = withUnsafePointer(to: &times) { p in
                    p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(directory, "", $0, Sys.AT_EMPTY_PATH) }
                }
            }
        }
        for name in try Files.names(fd: directory, path: path) {
            let sub = path + "/" + name.description
            if UpperWhiteout.isInternal(name) {
                if unlinkat(directory, name.c, 0) != 0 && errno != ENOENT { throw .system("remove", sub) }
                removed = true
                continue
            }
            var st = stat()
            guard fstatat(directory, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            let fd = openat(directory, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 { throw .system("open", sub) }
            defer { close(fd) }
            try removeInternalFiles(fd, path: sub)
        }
    }

    /// Sets an upper directory's atime and mtime back to `st`'s (fd: any open descriptor of it,
    /// O_PATH included).
    func restoreTimes(_ fd: Int32, _ st: stat) throws(Errno) {
        var times = (st.st_atim, st.st_mtim)
        let r = withUnsafePointer(to: &times) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(fd, "", $0, Sys.AT_EMPTY_PATH) }
        }
        if r != 0 { throw Errno.current }
    }

    // MARK: Markers

    /// Whether the entry `name` of an upper directory is a device whiteout (UpperWhiteout).
    func isDeviceWhiteout(_ dirfd: Int32, _ name: ByteString) -> Bool {
        guard UpperWhiteout.usesDevice(name) else { return false }
        var st = stat()
        return fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 && UpperWhiteout.isDevice(st, name: name)
    }

    /// Records `name` in an upper directory as deleted (UpperWhiteout).
    func makeWhiteout(_ dirfd: Int32, _ name: ByteString) throws(Errno) {
        if UpperWhiteout.make(dirfd, name, root: root) != 0 { throw Errno.current }
    }

    func makeMarker(_ dirfd: Int32, _ name: ByteString) throws(Errno) {
        let fd = openat(dirfd, name.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 {
            if errno == EEXIST { return }
            throw Errno.current
        }
        defer { close(fd) }
        // An unprivileged server's files are root's by not carrying user.rootlesscontainers.
        if (!rootless && fchown(fd, 0, 0) != 0) || fchmod(fd, 0) != 0 { throw Errno.current }
    }

    /// Makes an upper directory opaque. The marker is internal: the directory keeps its times
    /// (a directory moved over an image directory keeps its mtime, as on ext4).
    func makeOpaque(_ dirfd: Int32, _ name: ByteString) throws(Errno) {
        let fd = try openChildDir(dirfd, name)
        defer { close(fd) }
        var before = stat()
        if fstat(fd, &before) != 0 { throw Errno.current }
        try makeMarker(fd, Whiteout.opaqueMarker)
        try restoreTimes(fd, before)
    }

    /// Removes every `.wh.*` file in an upper directory (before removing or replacing it).
    func removeWhiteouts(_ parentfd: Int32, _ name: ByteString) throws(Errno) {
        let fd = try openChildDir(parentfd, name, flags: O_RDONLY)
        guard let dir = fdopendir(fd) else { close(fd); throw Errno.current }
        defer { closedir(dir) }
        var names: [ByteString] = []
        while let e = readdir(dir) {
            let n = ByteString(dirent: e.pointee.d_name)
            if n.isWhiteoutName || (e.pointee.d_type == UInt8(DT_CHR) && isDeviceWhiteout(dirfd(dir), n)) { names.append(n) }
        }
        for n in names where unlinkat(dirfd(dir), n.c, 0) != 0 && errno != ENOENT { throw Errno.current }
    }
}

extension OverlayFS {
    /// Opens node `id`'s upper directory (UpperDirectory.openDirectory).
    func openUpperDir(_ id: UInt64, flags: Int32 = Sys.O_PATH) throws(Errno) -> DirFD {
        try upper.openDirectory(components(id), flags: flags)
    }
}
