#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import LayerView
import UpperFormat
import Synchronization

/// An open file or directory, retained in `fuse_file_info.fh` from open to release.
final class Handle {
    /// The upper file's descriptor, or -1 for a lower file (read from `view`).
    var fd: Int32 = -1
    /// The view and its inode read when fd is -1: the view the file was opened on, which a
    /// rebase does not disturb.
    var view: MergedView?
    /// The view inode number of a lower file.
    var inode: Int32 = -1
    /// For a handle that can write: its upper file, counted in NodeTable.writers until
    /// release, so that a rebase leaves the file where it is.
    var writer: UpperKey?
    /// The rebase generation it was opened in. A read-only upper fd from an earlier one may be
    /// a file a rebase moved out of the upper directory (same data, no longer the file at its
    /// path), so metadata requests do not use it (see OverlayFS.currentFd).
    var generation: UInt64 = 0
    /// A directory listing taken at opendir (offsets index it, so they stay stable).
    var entries: [OverlayFS.DirEntry] = []
    /// For a directory: the st_ino of `.` and `..` in its listing (see OverlayFS.dotInos).
    var dotInos: (dot: UInt64, dotDot: UInt64) = (1, 1)
    /// The node it was opened on (files).
    var node: UInt64 = 0
    /// For a lower file: the upper copy made after it was opened, once a read found it
    /// (-1: none yet), and the copy-up count (OverlayFS.copyUps) that read last looked at.
    /// Reads on one handle run concurrently, hence atomics.
    let follow = Atomic<Int32>(-1)
    let seenCopyUps = Atomic<UInt64>(0)
    init() {}
    deinit {
        if fd >= 0 { close(fd) }
        let f = follow.load(ordering: .relaxed)
        if f >= 0 { close(f) }
    }
}

extension OverlayFS {
    // MARK: Removal

    func remove(_ parentId: UInt64, _ name: ByteString, directory: Bool) throws(Errno) {
        try exclusive { () throws(Errno) in
            let parent = try snapshot(parentId)
            guard let r = try resolve(parentId, parent, name) else { throw Errno(ENOENT) }
            if directory && !r.isDirectory { throw Errno(ENOTDIR) }
            if !directory && r.isDirectory { throw Errno(EISDIR) }
            if directory {
                try checkEmpty(parentId, parent, name, r)
            }
            let needsWhiteout = lowerAt(parent, name) != nil
            if needsWhiteout || r.upper { try ensureUpper(parentId) }
            let dir = try openUpperDir(parentId)
            defer { dir.close() }
            let id = existingChild(parentId, name)
            if r.upper {
                if directory {
                    try upper.removeWhiteouts(dir.fd, name)
                    if unlinkat(dir.fd, name.c, AT_REMOVEDIR) != 0 { throw Errno.current }
                } else {
                    if let id { keepOrphan(id, dirfd: dir.fd, name) }
                    if unlinkat(dir.fd, name.c, 0) != 0 { throw Errno.current }
                    invalidateOtherNames(of: id ?? 0, r.upperStat)
                }
            }
            if needsWhiteout { try upper.makeWhiteout(dir.fd, name) }
            if !r.upper && !r.isDirectory { hideLowerName(r.lower) }
            if let id { detach(id) }
        }
    }

    /// ENOTEMPTY unless the merged directory parent/name (resolved as r) shows no entries.
    func checkEmpty(_ parentId: UInt64, _ parent: Snapshot, _ name: ByteString, _ r: Resolved) throws(Errno) {
        let entries: [DirEntry]
        if r.upper {
            let dir = try openUpperDir(parentId)
            defer { dir.close() }
            let sub = try upper.openChildDir(dir.fd, name)
            defer { close(sub) }
            entries = try mergedEntries(upper: sub, lower: r.lower)
        } else {
            entries = try mergedEntries(upper: nil, lower: r.lower)
        }
        if !entries.isEmpty { throw Errno(ENOTEMPTY) }
    }

    // MARK: Rename

    func rename(_ parentId: UInt64, _ name: ByteString, _ newParentId: UInt64, _ newName: ByteString, flags: UInt32) throws(Errno) {
        if flags & ~(Sys.RENAME_NOREPLACE | Sys.RENAME_EXCHANGE) != 0 { throw Errno(EINVAL) }
        if flags & Sys.RENAME_NOREPLACE != 0 && flags & Sys.RENAME_EXCHANGE != 0 { throw Errno(EINVAL) }
        if newName.isWhiteoutName { throw Errno(flags & Sys.RENAME_EXCHANGE != 0 ? ENOENT : EINVAL) }
        if name.isWhiteoutName { throw Errno(ENOENT) }
        if flags & Sys.RENAME_EXCHANGE != 0 {
            return try exchange(parentId, name, newParentId, newName)
        }
        try exclusive { () throws(Errno) in
            let parent = try snapshot(parentId)
            let newParent = try snapshot(newParentId)
            guard let source = try resolve(parentId, parent, name) else { throw Errno(ENOENT) }
            let target = try resolve(newParentId, newParent, newName)
            if parentId == newParentId && name == newName { return }
            // Two names of one file: POSIX says rename does nothing.
            if let target, sameFile(source, target) { return }
            if let target {
                if flags & Sys.RENAME_NOREPLACE != 0 { throw Errno(EEXIST) }
                if source.isDirectory && !target.isDirectory { throw Errno(ENOTDIR) }
                if !source.isDirectory && target.isDirectory { throw Errno(EISDIR) }
                if target.isDirectory { try checkEmpty(newParentId, newParent, newName, target) }
            }
            // The source, upper and whole.
            let sourceId = install(parent: parentId, name: name, upper: source.upper, lower: source.lower)
            defer { forget(sourceId, 1) }
            try ensureUpper(sourceId)
            try ensureUpper(newParentId)
            let from = try openUpperDir(parentId)
            defer { from.close() }
            let to = try openUpperDir(newParentId)
            defer { to.close() }
            let madeOpaque = try makeSelfContained(from.fd, name, source)
            // The target: an upper directory loses its whiteouts (it is merged-empty).
            if let target, target.upper, target.isDirectory { try upper.removeWhiteouts(to.fd, newName) }
            if UpperWhiteout.remove(to.fd, newName) != 0 { throw Errno.current }
            if let target, target.upper, !target.isDirectory, let targetId = existingChild(newParentId, newName) {
                keepOrphan(targetId, dirfd: to.fd, newName)
            }
            if renameat(from.fd, name.c, to.fd, newName.c) != 0 { throw Errno.current }
            if lowerAt(parent, name) != nil { try upper.makeWhiteout(from.fd, name) }
            if source.isDirectory && !madeOpaque, let l = lowerAt(newParent, newName), viewIsDirectory(l) {
                try upper.makeOpaque(to.fd, newName)
            }
            if let target, !target.upper, !target.isDirectory { hideLowerName(target.lower) }
            if let targetId = existingChild(newParentId, newName) { detach(targetId) }
            move(sourceId, to: newParentId, newName)
            markSubtreeUpper(sourceId)
        }
    }

    /// Whether two resolved names are one file (hardlinks of one lower inode, or one upper
    /// inode).
    func sameFile(_ a: Resolved, _ b: Resolved) -> Bool {
        if a.isDirectory || b.isDirectory { return false }
        if a.upper && b.upper { return a.upperStat.st_dev == b.upperStat.st_dev && a.upperStat.st_ino == b.upperStat.st_ino }
        if !a.upper && !b.upper { return view.inodeNumber(of: a.lower) == view.inodeNumber(of: b.lower) }
        return false
    }

    /// A directory that merges a lower directory is about to move: its upper copy gets every
    /// entry it shows and becomes opaque, so that it shows the same wherever it lands. Keeps
    /// its times (moving a directory changes neither its mtime nor its atime). Returns whether
    /// it did anything.
    func makeSelfContained(_ dirfd: Int32, _ name: ByteString, _ r: Resolved) throws(Errno) -> Bool {
        guard r.isDirectory && r.lower >= 0 else { return false }
        let sub = try upper.openChildDir(dirfd, name, flags: O_RDONLY)
        defer { close(sub) }
        var before = stat()
        if fstat(sub, &before) != 0 { throw Errno.current }
        try copyingUp { (c: inout CopyUp) throws(Errno) in try c.tree(dirfd: sub, lower: r.lower) }
        try upper.makeMarker(sub, OverlayFS.opaqueName)
        try upper.restoreTimes(sub, before)
        return true
    }

    /// renameat2(RENAME_EXCHANGE): both names exist and swap what they show.
    private func exchange(_ parentId: UInt64, _ name: ByteString, _ newParentId: UInt64, _ newName: ByteString) throws(Errno) {
        try exclusive { () throws(Errno) in
            let parent = try snapshot(parentId)
            let newParent = try snapshot(newParentId)
            guard let a = try resolve(parentId, parent, name), let b = try resolve(newParentId, newParent, newName) else {
                throw Errno(ENOENT)
            }
            if parentId == newParentId && name == newName { return }
            let aId = install(parent: parentId, name: name, upper: a.upper, lower: a.lower)
            defer { forget(aId, 1) }
            let bId = install(parent: newParentId, name: newName, upper: b.upper, lower: b.lower)
            defer { forget(bId, 1) }
            try ensureUpper(aId)
            try ensureUpper(bId)
            let from = try openUpperDir(parentId)
            defer { from.close() }
            let to = try openUpperDir(newParentId)
            defer { to.close() }
            // Each side shows in the other place exactly what it shows now.
            let aSealed = try makeSelfContained(from.fd, name, a)
            let bSealed = try makeSelfContained(to.fd, newName, b)
            if Sys.renameat2(from.fd, name, to.fd, newName, Sys.RENAME_EXCHANGE) != 0 { throw Errno.current }
            if a.isDirectory && !aSealed, let l = lowerAt(newParent, newName), viewIsDirectory(l) { try upper.makeOpaque(to.fd, newName) }
            if b.isDirectory && !bSealed, let l = lowerAt(parent, name), viewIsDirectory(l) { try upper.makeOpaque(from.fd, name) }
            swapNodes(aId, bId)
            markSubtreeUpper(aId)
            markSubtreeUpper(bId)
        }
    }

    // MARK: Link

    func link(_ id: UInt64, _ newParentId: UInt64, _ newName: ByteString) throws(Errno) -> (UInt64, stat) {
        if newName.isWhiteoutName { throw Errno(EINVAL) }
        return try exclusive { () throws(Errno) -> (UInt64, stat) in
            let newParent = try snapshot(newParentId)
            if try resolve(newParentId, newParent, newName) != nil { throw Errno(EEXIST) }
            try ensureUpper(id)
            let n = try snapshot(id)
            guard n.parent != 0 else { throw Errno(ENOENT) }
            try ensureUpper(newParentId)
            let from = try openUpperDir(n.parent)
            defer { from.close() }
            let to = try openUpperDir(newParentId)
            defer { to.close() }
            if UpperWhiteout.remove(to.fd, newName) != 0 { throw Errno.current }
            if linkat(from.fd, n.name.c, to.fd, newName.c, 0) != 0 { throw Errno.current }
            setCreatedPlain(id, false)
            var st = stat()
            if fstatat(to.fd, newName.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
            let newId = install(parent: newParentId, name: newName, upper: true, lower: -1)
            noteIdentity(id, st)
            noteIdentity(newId, st)
            invalidateOtherNames(of: newId, st)
            return (newId, presentUpper(reportingOwner(st, .entry(parent: to.fd, name: newName)), mergedDir: false))
        }
    }

    // MARK: Setattr

    struct AttrChange {
        var mode: mode_t?
        var uid: uid_t?
        var gid: gid_t?
        var size: off_t?
        var atime: timespec?
        var mtime: timespec?
    }

    func setattr(_ id: UInt64, _ change: AttrChange, handle: Handle?) throws(Errno) -> stat {
        try exclusive { () throws(Errno) -> stat in
            if let fd = currentFd(handle) {
                try apply(change, fd: fd, dirfd: -1, name: "")
                var st = stat()
                if fstat(fd, &st) != 0 { throw Errno.current }
                invalidateOtherNames(of: id, st)
                return presentUpper(reportingOwner(st, .pathDescriptor(fd)), mergedDir: false)
            }
            if orphan(id) == nil, id != OverlayFS.rootId {
                let n = try snapshot(id)
                if n.parent == 0 && !n.upper && n.lower >= 0 { try copyUpOrphan(id, lower: n.lower) }
            }
            if let fd = try openOrphan(id, writing: change.size != nil) {
                // Unlinked while open: the file itself, through a descriptor of its own.
                defer { close(fd) }
                try apply(change, fd: fd, dirfd: -1, name: "")
                return try getattr(id, fd: fd)
            }
            try ensureUpper(id, data: change.size != 0)
            let n = try snapshot(id)
            var st = stat()
            if id == OverlayFS.rootId {
                try apply(change, fd: upperRoot, dirfd: -1, name: "")
                if fstat(upperRoot, &st) != 0 { throw Errno.current }
                st = reportingOwner(st, .pathDescriptor(upperRoot))
            } else {
                guard n.parent != 0 else { throw Errno(ENOENT) }
                let dir = try openUpperDir(n.parent)
                defer { dir.close() }
                try apply(change, fd: -1, dirfd: dir.fd, name: n.name)
                if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
                st = reportingOwner(st, .entry(parent: dir.fd, name: n.name))
            }
            invalidateOtherNames(of: id, st)
            return presentUpper(st, mergedDir: (st.st_mode & S_IFMT) == S_IFDIR && n.lower >= 0)
        }
    }

    /// Applies a change to fd, or to dirfd/name without following a symlink.
    private func apply(_ c: AttrChange, fd: Int32, dirfd: Int32, name: ByteString) throws(Errno) {
        let target = fd >= 0 ? "" : name
        let base = fd >= 0 ? fd : dirfd
        let nofollow = fd >= 0 ? Sys.AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW
        if ownership != nil && (c.uid != nil || c.gid != nil) {
            try rootlessChown(fd >= 0 ? .pathDescriptor(fd) : .entry(parent: dirfd, name: name), uid: c.uid, gid: c.gid)
        } else if c.uid != nil || c.gid != nil {
            if fchownat(base, target.c, c.uid ?? uid_t.max, c.gid ?? gid_t.max, nofollow) != 0 { throw Errno.current }
        }
        if let mode = c.mode {
            let r = fd >= 0 ? fchmod(fd, mode & 0o7777) : Files.chmodNoFollow(dirfd, name.c, mode & 0o7777)
            if r != 0 { throw Errno.current }
        }
        if let size = c.size {
            if fd >= 0 {
                if ftruncate(fd, size) != 0 { throw Errno.current }
            } else {
                // Only a regular file is ever opened: a device node or FIFO in the upper
                // directory is a host object, and opening it could act on the host.
                var st = stat()
                if fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
                if (st.st_mode & S_IFMT) == S_IFDIR { throw Errno(EISDIR) }
                if (st.st_mode & S_IFMT) != S_IFREG { throw Errno(EINVAL) }
                let f = openat(dirfd, name.c, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                if f < 0 { throw Errno.current }
                defer { close(f) }
                if ftruncate(f, size) != 0 { throw Errno.current }
            }
        }
        if c.atime != nil || c.mtime != nil {
            let omit = timespec(tv_sec: 0, tv_nsec: Sys.UTIME_OMIT)
            var times = (c.atime ?? omit, c.mtime ?? omit)
            let r = withUnsafePointer(to: &times) { p in
                p.withMemoryRebound(to: timespec.self, capacity: 2) { t in
                    fd >= 0 ? futimens(fd, t) : utimensat(dirfd, name.c, t, AT_SYMLINK_NOFOLLOW)
                }
            }
            if r != 0 { throw Errno.current }
        }
    }

    // MARK: Open

    /// Opens a regular file: lower files read-only from the view (no copy-up), anything else
    /// through an upper fd (copying up first when opened for writing or truncation).
    func open(_ id: UInt64, flags: Int32) throws(Errno) -> Handle {
        let writing = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0
        let upperFlags = (flags & O_ACCMODE) | (flags & (O_TRUNC | O_SYNC | O_DSYNC)) | O_NOFOLLOW | O_CLOEXEC
        if writing {
            return try exclusive { () throws(Errno) -> Handle in
                try ensureUpper(id, data: flags & O_TRUNC == 0)
                let h = try openUpper(id, upperFlags)
                if flags & O_ACCMODE != O_RDONLY { registerWriter(h) }
                return h
            }
        }
        return try shared { () throws(Errno) -> Handle in
            let n = try snapshot(id)
            if n.upper { return try openUpper(id, upperFlags) }
            guard n.lower >= 0 else { throw Errno(ENOENT) }
            let h = Handle()
            h.view = view
            h.inode = view.inodeNumber(of: n.lower)
            h.node = id
            h.generation = generation.load(ordering: .relaxed)
            h.seenCopyUps.store(copyUps.load(ordering: .acquiring), ordering: .relaxed)
            return h
        }
    }

    /// For a handle opened on a lower file: the upper copy of that file if one was made since
    /// (by a writer through this or another name), opened read-only, so that the handle reads
    /// what was written there, as on ext4. nil: keep reading the lower view. Cheap when no
    /// copy-up happened since the last look.
    func followCopyUp(_ h: Handle) -> Int32? {
        let f = h.follow.load(ordering: .acquiring)
        if f >= 0 { return f }
        let count = copyUps.load(ordering: .acquiring)
        if h.seenCopyUps.load(ordering: .relaxed) == count { return nil }
        h.seenCopyUps.store(count, ordering: .relaxed)
        // A rebase moves copies out again; a handle of an earlier view keeps that view.
        guard h.generation == generation.load(ordering: .relaxed) else { return nil }
        let fd: Int32? = try? shared { () throws(Errno) -> Int32? in
            let n = try snapshot(h.node)
            guard n.upper, n.parent != 0 else { return nil }
            let dir = try openUpperDir(n.parent)
            defer { dir.close() }
            var st = stat()
            guard fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
            let fd = openat(dir.fd, n.name.c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            return fd >= 0 ? fd : nil
        }
        guard let fd else { return nil }
        let (exchanged, current) = h.follow.compareExchange(expected: -1, desired: fd, ordering: .acquiringAndReleasing)
        if !exchanged { close(fd); return current }
        return fd
    }

    // MARK: Directories

    /// The st_ino of directory `id` and of its parent (the root's own for the root), which
    /// its listing gives `.` and `..`, as ext4 does.
    func dotInos(_ id: UInt64) throws(Errno) -> (dot: UInt64, dotDot: UInt64) {
        try shared { () throws(Errno) -> (dot: UInt64, dotDot: UInt64) in
            let dot = UInt64(try getattr(id).st_ino)
            let n = try snapshot(id)
            guard id != OverlayFS.rootId, n.parent != 0 else { return (dot, dot) }
            return (dot, UInt64(try getattr(n.parent).st_ino))
        }
    }

    // MARK: Read

    /// Reads from an open file into `buffer` (at most its size); the count read (0 at the end).
    /// An upper file, or the upper copy a lower handle follows, is read with pread; a lower
    /// file from the view it was opened on.
    func read(_ h: Handle, at offset: off_t, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        var count = 0
        if let fd = h.fd >= 0 ? h.fd : followCopyUp(h) {
            while count < buffer.count {
                let r = pread(fd, buffer.baseAddress! + count, buffer.count - count, offset + off_t(count))
                if r < 0 { if errno == EINTR { continue }; throw Errno.current }
                if r == 0 { break }
                count += r
            }
            return count
        }
        guard let view = h.view else { throw Errno(EBADF) }
        do throws(StoreError) {
            return try view.read(inode: h.inode, at: Int64(offset), into: buffer)
        } catch {
            // The request can only say EIO: the log says which layer and which file.
            let path = (try? components(h.node).joined(separator: "/")).map { "/" + $0.description } ?? "a file unlinked since it was opened"
            let layer = view.layer(ofInode: h.inode).map { "layer \($0)" } ?? "no layer"
            log("read \(path) at \(offset) (\(layer)): \(error.message.split(separator: "\n").joined(separator: " "))")
            throw Errno(EIO)
        }
    }

    /// Counts an upper handle that can write as a writer of its file (until release).
    func registerWriter(_ h: Handle) {
        var st = stat()
        guard h.fd >= 0, fstat(h.fd, &st) == 0 else { return }
        let key = UpperKey(st)
        h.writer = key
        table.withLock { s in s.writers[key, default: 0] += 1 }
    }

    /// Called on release of a handle.
    func released(_ h: Handle) {
        guard let key = h.writer else { return }
        table.withLock { s in
            let count = (s.writers[key] ?? 1) - 1
            s.writers[key] = count > 0 ? count : nil
        }
    }

    /// After a write through handle h: the other names of its file (if it has any) show it
    /// once their caches are dropped, before the reply.
    func wrote(_ h: Handle) {
        guard let key = h.writer else { return }
        let others = table.withLock { $0.otherNames(of: key, except: h.node) }
        for other in others { queueInvalidation(other) }
    }

    /// A handle's upper fd, if metadata requests may use it: it can write (rebase never moves
    /// such a file), or no rebase happened since it was opened. Caller holds the tree lock.
    func currentFd(_ h: Handle?) -> Int32? {
        guard let h, h.fd >= 0 else { return nil }
        return h.writer != nil || h.generation == generation.load(ordering: .relaxed) ? h.fd : nil
    }

    private func openUpper(_ id: UInt64, _ flags: Int32) throws(Errno) -> Handle {
        let n = try snapshot(id)
        guard n.parent != 0 else { throw Errno(ENOENT) }
        let dir = try openUpperDir(n.parent)
        defer { dir.close() }
        // Only regular files are opened (the kernel opens FIFOs itself and never sends a
        // device node's open on a nodev mount): opening anything else would reach the host.
        var st = stat()
        if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw Errno(EISDIR)
        case S_IFLNK: throw Errno(ELOOP)
        default: throw Errno(EACCES)
        }
        let fd = openat(dir.fd, n.name.c, flags | O_NOFOLLOW)
        if fd < 0 { throw Errno.current }
        let h = Handle()
        h.fd = fd
        h.node = id
        h.generation = generation.load(ordering: .relaxed)
        return h
    }

    // MARK: Readlink

    func readlink(_ id: UInt64) throws(Errno) -> [CChar] {
        try shared { () throws(Errno) -> [CChar] in
            let n = try snapshot(id)
            if n.upper {
                guard n.parent != 0 else { throw Errno(ENOENT) }
                let dir = try openUpperDir(n.parent)
                defer { dir.close() }
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let count = readlinkat(dir.fd, n.name.c, &buffer, buffer.count - 1)
                if count < 0 { throw Errno.current }
                buffer[count] = 0
                return buffer
            }
            guard n.lower >= 0 else { throw Errno(ENOENT) }
            let inode = view.inode(of: n.lower)
            guard inode.type == .symlink else { throw Errno(EINVAL) }
            return inode.linkName.c
        }
    }

    // MARK: Extended attributes

    /// ensureUpper, or for a file unlinked while open its orphan (an anonymous copy of the
    /// image file if it has none).
    private func ensureUpperOrOrphan(_ id: UInt64) throws(Errno) {
        let n = try snapshot(id)
        guard n.parent == 0, id != OverlayFS.rootId, !n.upper else { return try ensureUpper(id) }
        if orphan(id) != nil { return }
        guard n.lower >= 0 else { throw Errno(ENOENT) }
        try copyUpOrphan(id, lower: n.lower)
    }

    /// Runs one xattr call on node id's upper object itself, never following it: the root
    /// through its descriptor, a file unlinked while open through a descriptor of its own,
    /// anything else by name in its upper directory (Xattr.Target).
    private func xattrTarget(_ id: UInt64, _ body: (Xattr.Target) -> Int) throws(Errno) -> Int {
        upperXattrCalls.add(1, ordering: .relaxed)
        let r: Int
        if id == OverlayFS.rootId {
            r = body(.descriptor(upperRoot))
        } else if let fd = try openOrphan(id) {
            defer { close(fd) }
            r = body(.descriptor(fd))
        } else {
            let n = try snapshot(id)
            guard n.parent != 0 else { throw Errno(ENOENT) }
            let dir = try openUpperDir(n.parent)
            defer { dir.close() }
            r = body(.entry(parent: dir.fd, name: n.name))
        }
        if r < 0 { throw Errno.current }
        return r
    }

    /// Fills `buffer` (nil: size query) with the value; returns its size.
    func getxattr(_ id: UInt64, _ key: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        if hidesXattr(key) { throw Errno(ENODATA) }
        return try shared { () throws(Errno) -> Int in
            let n = try snapshot(id)
            if n.upper || (n.parent == 0 && orphan(id) != nil) {
                return try xattrTarget(id) { Xattr.get($0, key, into: buffer) }
            }
            guard n.lower >= 0 else { throw Errno(ENOENT) }
            guard let x = view.inode(of: n.lower).xattrs.first(where: { strcmp($0.name.c, key) == 0 }) else { throw Errno(ENODATA) }
            guard let buffer else { return x.value.count }
            if buffer.count < x.value.count { throw Errno(ERANGE) }
            x.value.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return x.value.count
        }
    }

    func listxattr(_ id: UInt64, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        guard ownership == nil else { return try listxattrHidingOwner(buffer) { b throws(Errno) in try listxattrAll(id, b) } }
        return try listxattrAll(id, buffer)
    }

    private func listxattrAll(_ id: UInt64, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try shared { () throws(Errno) -> Int in
            let n = try snapshot(id)
            if n.upper || (n.parent == 0 && orphan(id) != nil) {
                return try xattrTarget(id) { Xattr.listNames($0, into: buffer) }
            }
            guard n.lower >= 0 else { throw Errno(ENOENT) }
            var names: [UInt8] = []
            for x in view.inode(of: n.lower).xattrs {
                x.name.withBytes { names.append(contentsOf: $0) }
                names.append(0)
            }
            guard let buffer else { return names.count }
            if buffer.count < names.count { throw Errno(ERANGE) }
            names.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return names.count
        }
    }

    func setxattr(_ id: UInt64, _ key: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        if hidesXattr(key) { throw Errno(EPERM) }
        try exclusive { () throws(Errno) in
            setCreatedPlain(id, false)
            try ensureUpperOrOrphan(id)
            _ = try xattrTarget(id) { Int(Xattr.set($0, key, value, flags: flags)) }
            invalidateOtherNames(of: id)
        }
    }

    func removexattr(_ id: UInt64, _ key: UnsafePointer<CChar>) throws(Errno) {
        if hidesXattr(key) { throw Errno(EPERM) }
        try exclusive { () throws(Errno) in
            let n = try snapshot(id)
            if !n.upper && orphan(id) == nil {
                // Nothing to copy up for an attribute the file does not have.
                guard n.lower >= 0, view.inode(of: n.lower).xattrs.contains(where: { strcmp($0.name.c, key) == 0 }) else {
                    throw Errno(ENODATA)
                }
            }
            try ensureUpperOrOrphan(id)
            _ = try xattrTarget(id) { Int(Xattr.remove($0, key)) }
            invalidateOtherNames(of: id)
        }
    }
}
