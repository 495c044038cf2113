#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import OCI
import Archive
import LayerView
import UpperFormat

/// Copy-up: making an upper object of what the lower view shows, before its first change.
/// Given the view (and the st_ino its inodes report), the upper directory and the server's
/// ownership mode, it works on the file system only; what the node table must learn from it
/// (numbers kept, directories and other names of a hardlink group that are upper now) it
/// records in `effects`, which its user applies (OverlayFS.copyingUp). The caller holds the
/// exclusive tree lock.
struct CopyUp {
    let view: MergedView
    let upper: UpperDirectory
    /// The st_ino each view inode reports (OverlayFS.lowerIno).
    let lowerIno: (Int32) -> UInt64
    /// Set for an unprivileged server (see MountOwnership).
    let ownership: MountOwnership?
    /// Whether the mount's root shows the view's root (it is not opaque): otherwise no other
    /// name of a hardlink group shows from the view.
    let rootShowsLower: Bool

    /// What a copy-up did that the node table must learn, in order.
    enum Effect {
        /// The upper object `key` keeps the st_ino `ino` (its lower object's).
        case keepsIno(UpperKey, UInt64)
        /// The directory at `path` is upper now and still merges lower node `lower`.
        case directory([ByteString], lower: Int32)
        /// The other name of a hardlink group at `path` is now a link of the copy (`st`).
        case linked([ByteString], stat)
        /// A regular file was copied (OverlayFS.copyUps).
        case file
    }
    var effects: [Effect] = []

    /// Sets owner, mode, xattrs and times of an upper object (dirfd/name, or dirfd itself) from
    /// a lower node. Mode after chown, so chown's clearing of setuid bits does not stick.
    /// An unprivileged server records the owner in user.rootlesscontainers instead (before
    /// the mode, which may deny it writing), and skips the xattrs it may not set, as umoci's
    /// rootless extraction does (RootlessMount.swift).
    func applyLowerMetadata(dirfd: Int32, name: ByteString?, lower: Int32) throws(Errno) {
        let inode = view.inode(of: lower)
        let target = name ?? ByteString()
        let flags = name == nil ? Sys.AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW
        let object: Xattr.Target = name.map { .entry(parent: dirfd, name: $0) } ?? .descriptor(dirfd)
        if ownership != nil {
            try object.recordRootlessOwner(uid: UInt32(truncatingIfNeeded: inode.uid), gid: UInt32(truncatingIfNeeded: inode.gid))
        } else if fchownat(dirfd, target.c, uid_t(truncatingIfNeeded: inode.uid), gid_t(truncatingIfNeeded: inode.gid), flags) != 0 {
            throw Errno.current
        }
        if inode.type != .symlink {
            let r = name == nil ? fchmod(dirfd, mode_t(inode.mode & 0o7777)) : Files.chmodNoFollow(dirfd, target.c, mode_t(inode.mode & 0o7777))
            if r != 0 { throw Errno.current }
        }
        for x in inode.xattrs {
            if ownership != nil && x.name == ByteString(RootlessResource.xattrName) { continue }
            let r = x.value.withUnsafeBytes { Xattr.set(object, x.name, $0) }
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

    private mutating func keepIno(dirfd: Int32, name: ByteString, _ ino: UInt64) {
        var st = stat()
        guard fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        effects.append(.keepsIno(UpperKey(st), ino))
    }

    /// Copies lower node `lower` to dirfd/name in the upper directory (a directory as an empty
    /// directory; other files whole, through a temporary name renamed into place). The copy
    /// keeps the st_ino the lower object had.
    mutating func object(dirfd: Int32, name: ByteString, lower: Int32, data: Bool = true) throws(Errno) {
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
            keepIno(dirfd: dirfd, name: name, lowerIno(number))
            return
        }
        let temp = CopyUp.temporaryName()
        do throws(Errno) {
            switch a.type {
            case .regular, .hardlink:
                let fd = openat(dirfd, temp.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd < 0 { throw Errno.current }
                defer { close(fd) }
                if data { try copyData(of: lower, to: fd) }
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
        keepIno(dirfd: dirfd, name: name, lowerIno(number))
        if a.type == .regular || a.type == .hardlink {
            effects.append(.file)
            try linkOtherNames(of: lower, to: dirfd, name)
        }
    }

    /// Writes the data of lower file `lower` into fd.
    func copyData(of lower: Int32, to fd: Int32) throws(Errno) {
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
    /// packed) with its data and metadata and st_ino. Returns its descriptor (the caller's).
    mutating func orphan(lower: Int32) throws(Errno) -> Int32 {
        let number = view.inodeNumber(of: lower)
        let type = view.attributes(ofInode: number).type
        guard type == .regular || type == .hardlink else { throw Errno(ENOENT) }
        let fd = openat(upper.root, ".", Sys.O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600)
        if fd < 0 { throw Errno.current }
        do throws(Errno) {
            try copyData(of: lower, to: fd)
            try applyLowerMetadata(dirfd: fd, name: nil, lower: lower)
        } catch {
            close(fd)
            throw error
        }
        var st = stat()
        if fstat(fd, &st) == 0 { effects.append(.keepsIno(UpperKey(st), lowerIno(number))) }
        return fd
    }

    // MARK: Hardlink groups

    /// The other names of a hardlinked lower file that the mount still shows become hardlinks
    /// of its copy at dirfd/name, so that the group stays one file: a change through any name
    /// shows through all, with one st_ino and the right link count (as overlayfs's index
    /// keeps groups). The nodes the kernel knows for those names learn it from `.linked`.
    mutating func linkOtherNames(of lower: Int32, to dirfd: Int32, _ name: ByteString) throws(Errno) {
        let others = view.otherNames(of: lower)
        guard !others.isEmpty, rootShowsLower else { return }
        for other in others {
            guard let path = shownLowerPath(other) else { continue }
            let parent = try openUpperParent(of: other)
            defer { close(parent) }
            var before = stat()
            if fstat(parent, &before) != 0 { throw Errno.current }
            if linkat(dirfd, name.c, parent, view.name(of: other).c, 0) != 0 { throw Errno.current }
            try upper.restoreTimes(parent, before)
            var st = stat()
            if fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 { effects.append(.linked(path, st)) }
        }
    }

    /// The path of lower node `node` if the mount shows that very node there (no upper object,
    /// whiteout or opaque directory in the way), else nil. Changes nothing.
    func shownLowerPath(_ node: Int32) -> [ByteString]? {
        let chain = view.chain(to: node)
        var path: [ByteString] = []
        var dir: Int32 = openat(upper.root, ".", Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        defer { if dir >= 0 { close(dir) } }
        for (i, n) in chain.enumerated() {
            let name = view.name(of: n)
            path.append(name)
            guard dir >= 0 else { continue }  // below here the lower view shows through
            var st = stat()
            if fstatat(dir, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                // Replaced or already upper, or a directory of which only a merged one shows
                // its lower content.
                if i == chain.count - 1 || (st.st_mode & S_IFMT) != S_IFDIR || UpperWhiteout.isDevice(st, name: name)
                    || upper.isOpaque(dir, name) { return nil }
                let sub = openat(dir, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                close(dir)
                dir = sub
                if sub < 0 { return nil }
            } else {
                if UpperWhiteout.exists(dir, name) { return nil }
                close(dir)
                dir = -1
            }
        }
        return path
    }

    /// Opens (O_PATH) the upper directory of lower node `node`'s parent, copying up the
    /// directories on the way (the caller checked that the mount shows them from the lower
    /// view).
    mutating func openUpperParent(of node: Int32) throws(Errno) -> Int32 {
        var current = openat(upper.root, ".", Sys.O_PATH | O_DIRECTORY | O_CLOEXEC)
        if current < 0 { throw Errno.current }
        var path: [ByteString] = []
        for n in view.chain(to: node).dropLast() {
            let name = view.name(of: n)
            path.append(name)
            if !upper.exists(current, name) {
                do throws(Errno) { try object(dirfd: current, name: name, lower: n) } catch { close(current); throw error }
                // A node the kernel knows for this directory must look in its upper directory
                // from now on (resolve), or the names linked there stay hidden behind the lower
                // ones: stale data and link counts.
                effects.append(.directory(path, lower: n))
            }
            let next = openat(current, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errno
            close(current)
            if next < 0 { throw Errno(saved) }
            current = next
        }
        return current
    }

    /// Copies everything the merged directory dirfd (lower directory `lower`) shows into the
    /// upper directory, recursively, and drops whiteouts in it (the caller makes it opaque).
    mutating func tree(dirfd: Int32, lower: Int32) throws(Errno) {
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
        let hidden = Set(whiteouts.filter { $0 != Whiteout.opaqueMarker }.map { $0.dropFirst(4) } + deviceWhiteouts)
        let opaque = whiteouts.contains(Whiteout.opaqueMarker)
        if lower >= 0 && !opaque {
            for c in view.children(of: lower) {
                let name = view.name(of: c)
                if hidden.contains(name) { continue }
                let lowerIsDir = view.attributes(ofInode: view.inodeNumber(of: c)).type == .directory
                // Checked again here: copying up one name of a link group links the others.
                if upperNames.contains(name) || upper.exists(dirfd, name) {
                    var st = stat()
                    guard lowerIsDir, fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                } else {
                    try object(dirfd: dirfd, name: name, lower: c)
                    if !lowerIsDir { continue }
                }
                let sub = try upper.openChildDir(dirfd, name)
                defer { close(sub) }
                try tree(dirfd: sub, lower: c)
            }
        }
        for w in whiteouts + deviceWhiteouts where w != Whiteout.opaqueMarker {
            if unlinkat(dirfd, w.c, 0) != 0 && errno != ENOENT { throw Errno.current }
        }
    }
}

extension OverlayFS {
    /// Runs `body` with a CopyUp of this mount's view and upper directory, then tells the node
    /// table what it did (also when it failed part way: what it made is there). The caller
    /// holds the exclusive tree lock.
    func copyingUp<R>(_ body: (inout CopyUp) throws(Errno) -> R) throws(Errno) -> R {
        let rootLower = (try? snapshot(OverlayFS.rootId).lower) ?? -1
        var c = CopyUp(view: view, upper: upper, lowerIno: { self.lowerIno($0) }, ownership: ownership, rootShowsLower: rootLower >= 0)
        defer { apply(c.effects) }
        return try body(&c)
    }

    private func apply(_ effects: [CopyUp.Effect]) {
        for e in effects {
            switch e {
            case .keepsIno(let key, let ino):
                table.withLock { $0.inoMap[key] = ino }
            case .directory(let path, let lower):
                if let id = nodeAt(path) { update(id, upper: true, lower: lower) }
            case .linked(let path, let st):
                if let id = nodeAt(path) {
                    update(id, upper: true, lower: -1)
                    noteIdentity(id, st)
                    queueInvalidation(id)
                }
            case .file:
                copyUps.add(1, ordering: .releasing)
            }
        }
    }

    /// Makes sure node `id` has an upper object: copies up its parent chain, then itself.
    func ensureUpper(_ id: UInt64, data: Bool = true) throws(Errno) {
        let n = try snapshot(id)
        if n.upper { return }
        guard n.parent != 0, n.lower >= 0 else { throw Errno(ENOENT) }
        try ensureUpper(n.parent)
        let dir = try openUpperDir(n.parent)
        defer { dir.close() }
        try copyingUp { (c: inout CopyUp) throws(Errno) in try c.object(dirfd: dir.fd, name: n.name, lower: n.lower, data: data) }
        update(id, upper: true, lower: viewIsDirectory(n.lower) ? n.lower : -1)
        var st = stat()
        if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 { noteIdentity(id, st) }
    }

    /// Node `id`, a lower file unlinked while open, gets its anonymous upper copy as its
    /// orphan (CopyUp.orphan).
    func copyUpOrphan(_ id: UInt64, lower: Int32) throws(Errno) {
        let fd = try copyingUp { (c: inout CopyUp) throws(Errno) in try c.orphan(lower: lower) }
        if !adoptOrphan(id, fd) { close(fd) }
    }
}
