#if canImport(Glibc)
import Glibc
#endif
import CLinux
import LayerStore

/// Copy-up: making an upper object of what the lower view shows, before its first change. The
/// caller holds the exclusive tree lock.
extension OverlayFS {
    // MARK: Copy-up (exclusive lock held by the caller)

    /// Sets owner, mode, xattrs and times of an upper object (dirfd/name, or dirfd itself) from
    /// a lower node. Mode after chown, so chown's clearing of setuid bits does not stick.
    /// An unprivileged server records the owner in user.rootlesscontainers instead (before
    /// the mode, which may deny it writing), and skips the xattrs it may not set, as umoci's
    /// rootless extraction does (RootlessMount.swift).
    func applyLowerMetadata(dirfd: Int32, name: ByteString?, lower: Int32) throws(Errno) {
        let inode = view.inode(of: lower)
        let target = name ?? ByteString()
        let flags = name == nil ? Sys.AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW
        let object: UpperObject = name.map { .at(dirfd, $0) } ?? .open(dirfd)
        if ownership != nil {
            try recordRootlessOwner(object,
                                    uid: UInt32(truncatingIfNeeded: inode.uid), gid: UInt32(truncatingIfNeeded: inode.gid))
        } else if fchownat(dirfd, target.c, uid_t(truncatingIfNeeded: inode.uid), gid_t(truncatingIfNeeded: inode.gid), flags) != 0 {
            throw Errno.current
        }
        if inode.type != .symlink {
            let r = name == nil ? fchmod(dirfd, mode_t(inode.mode & 0o7777)) : Files.chmodNoFollow(dirfd, target.c, mode_t(inode.mode & 0o7777))
            if r != 0 { throw Errno.current }
        }
        for x in inode.xattrs {
            if ownership != nil && x.name == RootlessResource.xattrName { continue }
            let r = x.value.withUnsafeBytes { object.set(x.name, $0) }
            if r != 0 && !(ownership != nil && (errno == EPERM || errno == EACCES)) { throw Errno.current }
        }
        let ts = timespec(tv_sec: Int(inode.mtime), tv_nsec: Int(inode.mtimeNanoseconds))
        var times = (ts, ts)
        let r = withUnsafePointer(to: &times) { p in
            p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(dirfd, target.c, $0, flags) }
        }
        if r != 0 { throw Errno.current }
    }

    static func temporaryName() -> ByteString {
        ByteString(".wh..wh..umoci-copyup." + String(UInt64.random(in: 0...UInt64.max), radix: 16))
    }

    /// Copies lower node `lower` to dirfd/name in the upper directory (a directory as an empty
    /// directory; other files whole, through a temporary name renamed into place). The copy
    /// keeps the st_ino the lower object had.
    func copyUpObject(dirfd: Int32, name: ByteString, lower: Int32, data: Bool = true) throws(Errno) {
        // A copy-up changes no name the mount shows: the directory keeps its times.
        var parentBefore = stat()
        if fstat(dirfd, &parentBefore) != 0 { throw Errno.current }
        defer { try? upper.restoreTimes(dirfd, parentBefore) }
        let number = view.inodeNumber(of: lower)
        let a = view.attributes(ofInode: number)
        if a.type == .directory {
            if mkdirat(dirfd, name.c, 0o700) != 0 {
                if errno == EEXIST { return }
                throw Errno.current
            }
            do throws(Errno) {
                try applyLowerMetadata(dirfd: dirfd, name: name, lower: lower)
            } catch {
                unlinkat(dirfd, name.c, AT_REMOVEDIR)
                throw error
            }
            mapIno(dirfd: dirfd, name: name, to: lowerIno(number))
            return
        }
        let temp = OverlayFS.temporaryName()
        do throws(Errno) {
            switch a.type {
            case .regular, .hardlink:
                let fd = openat(dirfd, temp.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd < 0 { throw Errno.current }
                defer { close(fd) }
                if data { try copyLowerData(of: lower, to: fd) }
            case .symlink:
                if symlinkat(view.inode(number: number).linkName.c, dirfd, temp.c) != 0 { throw Errno.current }
            case .characterDevice where ownership != nil, .blockDevice where ownership != nil:
                // Unprivileged: the empty file the mount shows for a device (RootlessMount.swift).
                let fd = openat(dirfd, temp.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd < 0 { throw Errno.current }
                close(fd)
            case .characterDevice, .blockDevice, .fifo:
                if mknodat(dirfd, temp.c, OverlayFS.typeBits(a.type) | 0o600, numericCast(umoci_makedev(a.devMajor, a.devMinor))) != 0 {
                    throw Errno.current
                }
            case .directory:
                break
            }
            try applyLowerMetadata(dirfd: dirfd, name: temp, lower: lower)
            if renameat(dirfd, temp.c, dirfd, name.c) != 0 { throw Errno.current }
        } catch {
            unlinkat(dirfd, temp.c, 0)
            throw error
        }
        mapIno(dirfd: dirfd, name: name, to: lowerIno(number))
        if a.type == .regular || a.type == .hardlink {
            copyUps.add(1, ordering: .releasing)
            try linkOtherNames(of: lower, to: dirfd, name)
        }
    }

    /// Writes the data of lower file `lower` into fd.
    func copyLowerData(of lower: Int32, to fd: Int32) throws(Errno) {
        let number = view.inodeNumber(of: lower)
        let size = view.attributes(ofInode: number).size
        let buffer = ThreadBuffer.get(1 << 20)
        var offset: Int64 = 0
        while offset < size {
            let n: Int
            do { n = try view.read(inode: number, at: offset, into: buffer) } catch { throw Errno(EIO) }
            if n <= 0 { break }
            var done = 0
            while done < n {
                let w = pwrite(fd, buffer.baseAddress! + done, n - done, off_t(offset) + off_t(done))
                if w < 0 { if errno == EINTR { continue }; throw Errno.current }
                done += w
            }
            offset += Int64(n)
        }
    }

    /// A lower file that was unlinked or replaced while open, never copied up, is about to
    /// change through its open file (fchmod, fchown, futimens): on ext4 that works, so it
    /// becomes an anonymous upper file (O_TMPFILE in the upper directory: never linked, never
    /// packed) with its data and metadata and st_ino, kept as the node's orphan.
    func copyUpOrphan(_ id: UInt64, lower: Int32) throws(Errno) {
        let number = view.inodeNumber(of: lower)
        let type = view.attributes(ofInode: number).type
        guard type == .regular || type == .hardlink else { throw Errno(ENOENT) }
        let fd = openat(upperRoot, ".", Sys.O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if fd < 0 { throw Errno.current }
        do throws(Errno) {
            try copyLowerData(of: lower, to: fd)
            try applyLowerMetadata(dirfd: fd, name: nil, lower: lower)
        } catch {
            close(fd)
            throw error
        }
        var st = stat()
        if fstat(fd, &st) == 0 {
            let key = UpperKey(st)
            table.withLock { s in s.inoMap[key] = lowerIno(number) }
        }
        if !adoptOrphan(id, fd) { close(fd) }
    }

    // MARK: Hardlink groups

    /// The other names of a hardlinked lower file that the mount still shows become hardlinks
    /// of its copy at dirfd/name, so that the group stays one file: a change through any name
    /// shows through all, with one st_ino and the right link count (as overlayfs's index
    /// keeps groups). Nodes the kernel knows for those names are updated and their caches
    /// invalidated before the reply (see queueInvalidation).
    func linkOtherNames(of lower: Int32, to dirfd: Int32, _ name: ByteString) throws(Errno) {
        let others = view.otherNames(of: lower)
        guard !others.isEmpty else { return }
        let rootLower = try snapshot(OverlayFS.rootId).lower
        for other in others {
            guard rootLower >= 0, let path = shownLowerPath(other) else { continue }
            let parent = try openUpperParent(of: other)
            defer { close(parent) }
            var before = stat()
            if fstat(parent, &before) != 0 { throw Errno.current }
            if linkat(dirfd, name.c, parent, view.name(of: other).c, 0) != 0 { throw Errno.current }
            try upper.restoreTimes(parent, before)
            if let id = nodeAt(path) {
                update(id, upper: true, lower: -1)
                var st = stat()
                if fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 { noteIdentity(id, st) }
                queueInvalidation(id)
            }
        }
    }

    /// The path of lower node `node` if the mount shows that very node there (no upper object,
    /// whiteout or opaque directory in the way), else nil. Changes nothing.
    func shownLowerPath(_ node: Int32) -> [ByteString]? {
        let chain = view.chain(to: node)
        var path: [ByteString] = []
        var upper: Int32 = openat(upperRoot, ".", Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        defer { if upper >= 0 { close(upper) } }
        for (i, n) in chain.enumerated() {
            let name = view.name(of: n)
            path.append(name)
            guard upper >= 0 else { continue }  // below here the lower view shows through
            var st = stat()
            if fstatat(upper, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                // Replaced or already upper, or a directory of which only a merged one shows
                // its lower content.
                if i == chain.count - 1 || (st.st_mode & S_IFMT) != S_IFDIR || UpperWhiteout.isDevice(st, name: name)
                    || self.upper.isOpaque(upper, name) { return nil }
                let sub = openat(upper, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                close(upper)
                upper = sub
                if sub < 0 { return nil }
            } else {
                if UpperWhiteout.exists(upper, name) { return nil }
                close(upper)
                upper = -1
            }
        }
        return path
    }

    /// Opens (O_PATH) the upper directory of lower node `node`'s parent, copying up the
    /// directories on the way (the caller checked that the mount shows them from the lower
    /// view).
    func openUpperParent(of node: Int32) throws(Errno) -> Int32 {
        var current = openat(upperRoot, ".", Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        if current < 0 { throw Errno.current }
        var path: [ByteString] = []
        for n in view.chain(to: node).dropLast() {
            let name = view.name(of: n)
            path.append(name)
            if !upper.exists(current, name) {
                do throws(Errno) { try copyUpObject(dirfd: current, name: name, lower: n) } catch { close(current); throw error }
                // A node the kernel knows for this directory must look in its upper directory
                // from now on (resolve), or the names linked there stay hidden behind the lower
                // ones: stale data and link counts.
                if let id = nodeAt(path) { update(id, upper: true, lower: n) }
            }
            let next = openat(current, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errno
            close(current)
            if next < 0 { throw Errno(saved) }
            current = next
        }
        return current
    }

    /// Makes sure node `id` has an upper object: copies up its parent chain, then itself.
    func ensureUpper(_ id: UInt64, data: Bool = true) throws(Errno) {
        let n = try snapshot(id)
        if n.upper { return }
        guard n.parent != 0, n.lower >= 0 else { throw Errno(ENOENT) }
        try ensureUpper(n.parent)
        let dir = try openUpperDir(n.parent)
        defer { dir.close() }
        try copyUpObject(dirfd: dir.fd, name: n.name, lower: n.lower, data: data)
        update(id, upper: true, lower: viewIsDirectory(n.lower) ? n.lower : -1)
        var st = stat()
        if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 { noteIdentity(id, st) }
    }

    /// Copies everything the merged directory dirfd (lower directory `lower`) shows into the
    /// upper directory, recursively, and drops whiteouts in it (the caller makes it opaque).
    func copyUpTree(dirfd: Int32, lower: Int32) throws(Errno) {
        var upperNames = Set<ByteString>()
        var whiteouts: [ByteString] = []
        var deviceWhiteouts: [ByteString] = []
        try upper.forEachEntry(of: dirfd) { name, _, type in
            if name.isWhiteoutName {
                if !UpperWhiteout.isInternal(name) { whiteouts.append(name) }
            } else if type == UInt8(DT_CHR), upper.isDeviceWhiteout(dirfd, name) {
                deviceWhiteouts.append(name)
            } else {
                upperNames.insert(name)
            }
        }
        let hidden = Set(whiteouts.filter { $0 != OverlayFS.opaqueName }.map { $0.dropFirst(4) } + deviceWhiteouts)
        let opaque = whiteouts.contains(OverlayFS.opaqueName)
        if lower >= 0 && !opaque {
            for c in view.children(of: lower) {
                let name = view.name(of: c)
                if hidden.contains(name) { continue }
                let lowerIsDir = viewIsDirectory(c)
                // Checked again here: copying up one name of a link group links the others.
                if upperNames.contains(name) || upper.exists(dirfd, name) {
                    var st = stat()
                    guard lowerIsDir, fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                } else {
                    try copyUpObject(dirfd: dirfd, name: name, lower: c)
                    if !lowerIsDir { continue }
                }
                let sub = try upper.openChildDir(dirfd, name)
                defer { close(sub) }
                try copyUpTree(dirfd: sub, lower: c)
            }
        }
        for w in whiteouts + deviceWhiteouts where w != OverlayFS.opaqueName {
            if unlinkat(dirfd, w.c, 0) != 0 && errno != ENOENT { throw Errno.current }
        }
    }
}
