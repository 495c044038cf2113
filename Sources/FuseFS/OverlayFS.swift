#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics
import Archive
import LayerView
import UpperFormat
import Synchronization

/// The filesystem logic behind OverlayServer (see FuseFS.swift for the semantics). Every method
/// either returns a result or throws an `Errno`; the C callbacks turn that into the reply.
///
/// Concurrency and ownership:
/// - `view` (immutable and thread-safe itself) and `lowerInos` are replaced only by rebase(),
///   under the exclusive `tree` lock; everything else reads them under the lock, shared or
///   exclusive. Open lower handles keep the view they were opened on. `upperRoot` is an fd
///   owned by this object, closed in deinit (after the session is destroyed).
/// - `tree` (a writer-preferring pthread rwlock) orders namespace operations: anything that
///   changes the upper directory's names or copies up (create, mkdir, mknod, symlink, link,
///   unlink, rmdir, rename, setattr, setxattr, removexattr, open for writing) holds it
///   exclusively; lookups, getattr, readdir, readlink, getxattr, listxattr and read-only opens
///   hold it shared. read/write/fsync on open handles hold no lock (they use their fd/inode).
///   Operations never take it twice (no recursion).
/// - `table` (a Mutex) guards the NodeTable (nodes, inode numbers, writers, link groups);
///   it is held only for table updates, never across I/O, and never taken inside itself.
/// - File and directory handles are objects retained in `fuse_file_info.fh` between
///   open/opendir and release/releasedir; the kernel serializes their use with release, and
///   directory handles are not used concurrently (the kernel holds the file's position lock).
final class OverlayFS: @unchecked Sendable {
    static let rootId = NodeTable.rootId
    static let opaqueName = Whiteout.opaqueMarker
    /// How long the kernel may keep entries (also negative ones) and attributes. Every change
    /// goes through this mount, so the kernel's caches only go stale for changes made behind
    /// its back (edits of the upper directory from outside, which are not supported) and for
    /// the attributes of other names of a hardlinked lower file after one name is copied up.
    static let timeout: Double = 10.0

    /// How long the kernel may keep a file's attributes: `timeout`, but not at all for a
    /// file with several names. Each name is a node of its own in the kernel, so a write
    /// through one name does not update the others' cached size and mtime; asking again
    /// each time (and AUTO_INVAL_DATA dropping pages when those moved) makes every name
    /// show every change, as one inode would.
    static func attributeTimeout(_ st: stat) -> Double {
        (st.st_mode & S_IFMT) != S_IFDIR && st.st_nlink > 1 ? 0 : timeout
    }
    static let upperInoBase = NodeTable.upperInoBase

    /// The lower layer (see the ownership notes above).
    var view: MergedView
    /// The st_ino each view inode reports, indexed by view inode number; empty: number + 1.
    /// Set by rebase(), so that the paths of a new view keep the numbers they had.
    var lowerInos: [UInt64] = []
    /// Counts rebases; a handle remembers the one it was opened in (see Handle.generation).
    let generation = Atomic<UInt64>(0)
    /// The upper directory (owned).
    let upper: UpperDirectory
    /// Its root's descriptor.
    var upperRoot: Int32 { upper.root }
    private let tree: UnsafeMutablePointer<pthread_rwlock_t>
    /// The node table (see NodeTable), owned by this object; every access is one `withLock`.
    let table: Mutex<NodeTable>
    /// The FUSE session, for notifications; set once before serving, then only read.
    var session: OpaquePointer?
    /// Regular files copied up so far: a handle reading a lower file looks for its copy when
    /// this has moved (see followCopyUp).
    let copyUps = Atomic<UInt64>(0)
    /// Extended-attribute calls made on upper objects (xattrTarget), for tests.
    let upperXattrCalls = Atomic<UInt64>(0)
    /// Node ids whose kernel caches (attributes, pages) went stale through a change made under
    /// another name of the same file; the callbacks send them (takeInvalidations) before they
    /// answer the request that made them.
    let invalidations = Mutex<[UInt64]>([])
    let invalidationsPending = Atomic<Bool>(false)
    /// Set when the server is an unprivileged user's: owners are mapped and kept in xattrs
    /// (RootlessMount.swift); nil: the server is root and chowns.
    let ownership: MountOwnership?
    /// Where the server reports what the requests cannot (a corrupt layer behind a read's
    /// EIO): one line each. Set at init, then only read.
    let log: @Sendable (String) -> Void

    /// The default log: a line on stderr (the bundle's log file for a mount server), with
    /// write(2), not stdio (see umoci_stderr_without_lock).
    static let stderrLog: @Sendable (String) -> Void = { line in
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    init(view: MergedView, upperDirectory: String, ownership: MountOwnership? = nil,
         log: @escaping @Sendable (String) -> Void = OverlayFS.stderrLog) throws(StoreError) {
        self.view = view
        self.ownership = ownership
        self.log = log
        upper = try UpperDirectory(path: upperDirectory, rootless: ownership != nil)
        let fd = upper.root
        tree = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(tree, &attr)
        pthread_rwlockattr_destroy(&attr)

        var st = stat()
        let opaque = fstatat(fd, OverlayFS.opaqueName.c, &st, AT_SYMLINK_NOFOLLOW) == 0
        var s = NodeTable(rootLower: opaque ? -1 : MergedView.root)
        if fstat(fd, &st) == 0 {
            s.inoMap[UpperKey(st)] = UInt64(view.inodeNumber(of: MergedView.root)) + 1
        }
        table = Mutex(s)
        try adoptRootMetadata(upperDirectory)
        try UpperDirectory.removeInternalFiles(fd, path: upperDirectory)
    }

    deinit {
        pthread_rwlock_destroy(tree)
        tree.deallocate()
    }

    /// A fresh (empty) upper root takes the image root's owner, mode, mtime and xattrs, so the
    /// mount's root looks like the image's.
    private func adoptRootMetadata(_ path: String) throws(StoreError) {
        guard let dir = opendir(path) else { throw .system("open upper directory", path) }
        var empty = true
        while let e = readdir(dir) {
            let isDot = withUnsafeBytes(of: e.pointee.d_name) { raw -> Bool in
                raw[0] == 0x2E && (raw[1] == 0 || (raw[1] == 0x2E && raw[2] == 0))
            }
            if !isDot { empty = false; break }
        }
        closedir(dir)
        guard empty else { return }
        do throws(Errno) {
            try copyingUp { (c: inout CopyUp) throws(Errno) in try c.applyLowerMetadata(dirfd: upperRoot, name: nil, lower: MergedView.root) }
        } catch {
            throw StoreError("set the attributes of upper directory \(path): \(String(cString: strerror(error.code)))")
        }
    }

    // MARK: Locks

    func shared<R>(_ body: () throws(Errno) -> R) throws(Errno) -> R {
        pthread_rwlock_rdlock(tree)
        defer { pthread_rwlock_unlock(tree) }
        return try body()
    }

    func exclusive<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(tree)
        defer { pthread_rwlock_unlock(tree) }
        return try body()
    }

    // MARK: Resolution

    struct Resolved {
        var upper: Bool
        var upperStat: stat
        /// As Node.lower.
        var lower: Int32
        var isDirectory: Bool
    }

    func viewIsDirectory(_ node: Int32) -> Bool {
        view.attributes(ofInode: view.inodeNumber(of: node)).type == .directory
    }

    /// The lower view node at parent/name regardless of whiteouts (nil if the parent is opaque
    /// or has no lower directory).
    func lowerAt(_ parent: Snapshot, _ name: ByteString) -> Int32? {
        guard parent.lower >= 0 else { return nil }
        return view.child(parent.lower, named: name)
    }

    /// What the merged view has at parent/name, or nil.
    func resolve(_ parentId: UInt64, _ parent: Snapshot, _ name: ByteString) throws(Errno) -> Resolved? {
        if name.isWhiteoutName { return nil }
        if parent.upper {
            let dir = try openUpperDir(parentId)
            defer { dir.close() }
            return try resolve(in: dir.fd, parent, name)
        }
        if let l = lowerAt(parent, name) {
            return Resolved(upper: false, upperStat: stat(), lower: l, isDirectory: viewIsDirectory(l))
        }
        return nil
    }

    /// resolve, given the parent's upper directory.
    func resolve(in dirfd: Int32, _ parent: Snapshot, _ name: ByteString) throws(Errno) -> Resolved? {
        if name.isWhiteoutName { return nil }
        var st = stat()
        if fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 {
            if UpperWhiteout.isDevice(st, name: name) { return nil }
            st = reportingOwner(st, .entry(parent: dirfd, name: name))
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            var lower: Int32 = -1
            if isDir, let l = lowerAt(parent, name), viewIsDirectory(l), !upper.isOpaque(dirfd, name) { lower = l }
            return Resolved(upper: true, upperStat: st, lower: lower, isDirectory: isDir)
        }
        guard errno == ENOENT else { throw Errno.current }
        guard let l = lowerAt(parent, name) else { return nil }
        if UpperWhiteout.exists(dirfd, name) { return nil }
        return Resolved(upper: false, upperStat: stat(), lower: l, isDirectory: viewIsDirectory(l))
    }

    // MARK: Attributes

    static func typeBits(_ t: TarEntryType) -> mode_t {
        switch t {
        case .regular, .hardlink: return S_IFREG
        case .directory: return S_IFDIR
        case .symlink: return S_IFLNK
        case .characterDevice: return S_IFCHR
        case .blockDevice: return S_IFBLK
        case .fifo: return S_IFIFO
        }
    }

    func lowerStat(_ node: Int32) -> stat {
        let number = view.inodeNumber(of: node)
        let a = view.attributes(ofInode: number)
        var st = stat()
        st.st_ino = numericCast(lowerIno(number))
        // A symlink's permission bits mean nothing on Linux and read 0777 there, whatever the
        // tar header said.
        let type = ownership == nil ? a.type : MountOwnership.reportedType(a.type)
        st.st_mode = OverlayFS.typeBits(type) | (a.type == .symlink ? 0o777 : mode_t(a.mode & 0o7777))
        st.st_nlink = numericCast(max(a.linkCount, 1))
        if a.linkCount > 1 {
            // The table's lock only for a file with several names.
            let hidden = table.withLock { $0.hiddenLowerNames[number] ?? 0 }
            st.st_nlink = numericCast(max(a.linkCount - min(hidden, a.linkCount), 1))
        }
        st.st_uid = ownership?.hostUid(a.uid) ?? uid_t(truncatingIfNeeded: a.uid)
        st.st_gid = ownership?.hostGid(a.gid) ?? gid_t(truncatingIfNeeded: a.gid)
        st.st_size = a.type == .symlink ? numericCast(view.inode(number: number).linkName.count) : numericCast(a.size)
        st.st_blksize = 4096
        st.st_blocks = numericCast((a.size + 511) / 512)
        if type == .characterDevice || type == .blockDevice {
            st.st_rdev = numericCast(umoci_makedev(a.devMajor, a.devMinor))
        }
        let ts = timespec(tv_sec: Int(a.mtime), tv_nsec: Int(a.mtimeNanoseconds))
        st.st_atim = ts
        st.st_mtim = ts
        st.st_ctim = ts
        return st
    }

    /// An upper object's stat as the mount reports it.
    func presentUpper(_ st: stat, mergedDir: Bool) -> stat {
        var st = st
        st.st_ino = numericCast(reportedIno(st))
        if mergedDir { st.st_nlink = 1 }
        return st
    }

    func attributes(of r: Resolved) -> stat {
        r.upper ? presentUpper(r.upperStat, mergedDir: r.isDirectory && r.lower >= 0) : lowerStat(r.lower)
    }

    func getattr(_ id: UInt64, fd: Int32? = nil) throws(Errno) -> stat {
        if let fd {
            var st = stat()
            if fstat(fd, &st) != 0 { throw Errno.current }
            return presentUpper(reportingOwner(st, .pathDescriptor(fd)), mergedDir: false)
        }
        let n = try snapshot(id)
        // (An unlinked lower file that was changed while open has an anonymous copy: its orphan.)
        if n.upper || (n.parent == 0 && id != OverlayFS.rootId && orphan(id) != nil) {
            let st = try upperStat(id, n)
            return presentUpper(st, mergedDir: (st.st_mode & S_IFMT) == S_IFDIR && n.lower >= 0)
        }
        guard n.lower >= 0 else { throw Errno(ENOENT) }
        var st = lowerStat(n.lower)
        if n.parent == 0 && id != OverlayFS.rootId { st.st_nlink = 0 }  // unlinked, still open
        return st
    }

    /// The upper object's own stat (not as the mount presents it, but with the owner it
    /// reports); for a node unlinked while open, its orphan's.
    func upperStat(_ id: UInt64, _ n: Snapshot) throws(Errno) -> stat {
        var st = stat()
        if id == OverlayFS.rootId {
            if fstat(upperRoot, &st) != 0 { throw Errno.current }
            st = reportingOwner(st, .pathDescriptor(upperRoot))
        } else if n.parent == 0 {
            guard let fd = orphan(id) else { throw Errno(ENOENT) }
            if fstat(fd, &st) != 0 { throw Errno.current }
            st = reportingOwner(st, .pathDescriptor(fd))
        } else {
            let dir = try openUpperDir(n.parent)
            defer { dir.close() }
            if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
            st = reportingOwner(st, .entry(parent: dir.fd, name: n.name))
        }
        return st
    }

    // MARK: Lookup

    func lookup(_ parentId: UInt64, _ name: ByteString) throws(Errno) -> (UInt64, stat) {
        try shared { () throws(Errno) -> (UInt64, stat) in
            let parent = try snapshot(parentId)
            guard let r = try resolve(parentId, parent, name) else { throw Errno(ENOENT) }
            let id = install(parent: parentId, name: name, upper: r.upper, lower: r.lower)
            if r.upper && r.upperStat.st_nlink > 1 { noteIdentity(id, r.upperStat) }
            return (id, attributes(of: r))
        }
    }

    // MARK: Directory listing

    struct DirEntry {
        var name: ByteString
        var ino: UInt64
        var type: UInt8
    }

    static func direntType(_ mode: mode_t) -> UInt8 { UInt8((mode & S_IFMT) >> 12) }

    /// The merged entries of a directory whose upper directory is `upper` (an fd listing may
    /// consume; nil if none) and lower directory `lower` (-1: none).
    func mergedEntries(upper: Int32?, lower: Int32) throws(Errno) -> [DirEntry] {
        var entries: [DirEntry] = []
        var upperNames = Set<ByteString>()
        var whiteouts = Set<ByteString>()
        if let upper {
            try self.upper.forEachEntry(of: upper) { name, ino, type in
                if name.isWhiteoutName {
                    if lower >= 0 && !UpperWhiteout.isInternal(name) { whiteouts.insert(name.dropFirst(4)) }
                    return
                }
                if type == UInt8(DT_CHR), self.upper.isDeviceWhiteout(upper, name) {
                    whiteouts.insert(name)
                    return
                }
                upperNames.insert(name)
                // d_ino with the upper root's device (no stat per entry; readdirplus and stat
                // give the exact number).
                var st = stat()
                st.st_dev = self.upper.dev
                st.st_ino = ino
                entries.append(DirEntry(name: name, ino: reportedIno(st), type: type))
            }
        }
        if lower >= 0 {
            for c in view.children(of: lower) {
                let name = view.name(of: c)
                if upperNames.contains(name) || whiteouts.contains(name) { continue }
                let number = view.inodeNumber(of: c)
                let t = ownership == nil ? view.attributes(ofInode: number).type : MountOwnership.reportedType(view.attributes(ofInode: number).type)
                entries.append(DirEntry(name: name, ino: lowerIno(number), type: OverlayFS.direntType(OverlayFS.typeBits(t))))
            }
        }
        return entries
    }

    func listDirectory(_ id: UInt64) throws(Errno) -> [DirEntry] {
        try shared { () throws(Errno) -> [DirEntry] in
            let n = try snapshot(id)
            if n.upper {
                let dir = try openUpperDir(id)
                defer { dir.close() }
                return try mergedEntries(upper: dir.fd, lower: n.lower)
            }
            return try mergedEntries(upper: nil, lower: n.lower)
        }
    }

    // MARK: Creation

    enum Kind {
        case file(flags: Int32)
        case directory
        case node(type: mode_t, rdev: dev_t)
        case symlink(ByteString)
    }

    struct Created {
        var id: UInt64
        var attr: stat
        var fd: Int32
    }

    /// Creates parent/name as `kind`, owned by the caller (gid and S_ISGID from a setgid parent).
    func create(_ parentId: UInt64, _ name: ByteString, _ kind: Kind, mode: mode_t, uid: uid_t, gid: gid_t) throws(Errno) -> Created {
        if name.isWhiteoutName { throw Errno(EINVAL) }
        // A character device 0/0 under a name too long for a `.wh.` file is how the upper
        // directory whites that name out (UpperWhiteout): it cannot also be a device.
        if case .node(let type, let rdev) = kind, type == S_IFCHR, rdev == 0, UpperWhiteout.usesDevice(name) {
            throw Errno(EPERM)
        }
        return try exclusive { () throws(Errno) -> Created in
            let parent = try snapshot(parentId)
            if try resolve(parentId, parent, name) != nil { throw Errno(EEXIST) }
            try ensureUpper(parentId)
            let dir = try openUpperDir(parentId)
            defer { dir.close() }
            var pst = stat()
            if fstat(dir.fd, &pst) != 0 { throw Errno.current }
            var gid = gid
            var mode = mode & 0o7777
            if pst.st_mode & S_ISGID != 0 {
                gid = reportingOwner(pst, .pathDescriptor(dir.fd)).st_gid
                if case .directory = kind { mode |= S_ISGID }
            }
            if UpperWhiteout.remove(dir.fd, name) != 0 { throw Errno.current }
            var fd: Int32 = -1
            switch kind {
            case .file(let flags):
                let access = flags & O_ACCMODE
                fd = openat(dir.fd, name.c, access | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                if fd < 0 { throw Errno.current }
            case .directory:
                if mkdirat(dir.fd, name.c, 0o700) != 0 { throw Errno.current }
            case .node(let type, let rdev):
                if mknodat(dir.fd, name.c, type | 0o600, rdev) != 0 { throw Errno.current }
            case .symlink(let target):
                if symlinkat(target.c, dir.fd, name.c) != 0 { throw Errno.current }
            }
            do throws(Errno) {
                if let ownership {
                    try Xattr.Target.entry(parent: dir.fd, name: name).recordRootlessOwner(uid: ownership.containerUid(uid), gid: ownership.containerGid(gid))
                    if case .symlink = kind {} else if Files.chmodNoFollow(dir.fd, name.c, mode) != 0 { throw Errno.current }
                } else if fd >= 0 {
                    // The new file's own descriptor: no path to resolve again.
                    if fchown(fd, uid, gid) != 0 || fchmod(fd, mode) != 0 { throw Errno.current }
                } else {
                    if fchownat(dir.fd, name.c, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
                    if case .symlink = kind {} else if Files.chmodNoFollow(dir.fd, name.c, mode) != 0 { throw Errno.current }
                }
                if case .directory = kind, let l = lowerAt(parent, name), viewIsDirectory(l) {
                    try upper.makeOpaque(dir.fd, name)
                }
            } catch {
                if fd >= 0 { close(fd) }
                unlinkat(dir.fd, name.c, { if case .directory = kind { return AT_REMOVEDIR } else { return 0 } }())
                throw error
            }
            var st = stat()
            if fstatat(dir.fd, name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 {
                if fd >= 0 { close(fd) }
                throw Errno.current
            }
            let id = install(parent: parentId, name: name, upper: true, lower: -1)
            if case .file = kind { setCreatedPlain(id, true) }
            return Created(id: id, attr: presentUpper(reportingOwner(st, .entry(parent: dir.fd, name: name)), mergedDir: false), fd: fd)
        }
    }
}
