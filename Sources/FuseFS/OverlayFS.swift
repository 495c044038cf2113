#if canImport(Glibc)
import Glibc
#endif
import CLinux
import LayerStore
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
/// - `state` (a Mutex) guards the node table and the inode map; it is held only for table
///   updates, never across I/O.
/// - File and directory handles are objects retained in `fuse_file_info.fh` between
///   open/opendir and release/releasedir; the kernel serializes their use with release, and
///   directory handles are not used concurrently (the kernel holds the file's position lock).
final class OverlayFS: @unchecked Sendable {
    static let rootId: UInt64 = 1
    static let opaqueName = UpperWhiteout.opaqueMarker
    /// How long the kernel may keep entries (also negative ones) and attributes. Every change
    /// goes through this mount, so the kernel's caches only go stale for changes made behind
    /// its back (edits of the upper directory from outside, which are not supported) and for
    /// the attributes of other names of a hardlinked lower file after one name is copied up.
    static let timeout: Double = 10.0
    static let upperInoBase: UInt64 = 1 << 40

    /// The lower layer (see the ownership notes above).
    var view: MergedView
    /// The st_ino each view inode reports, indexed by view inode number; empty: number + 1.
    /// Set by rebase(), so that the paths of a new view keep the numbers they had.
    var lowerInos: [UInt64] = []
    /// Counts rebases; a handle remembers the one it was opened in (see Handle.generation).
    let generation = Atomic<UInt64>(0)
    let upperRoot: Int32
    private let tree: UnsafeMutablePointer<pthread_rwlock_t>
    let state: Mutex<State>
    /// Whether openat2(2) works here (probed once at init).
    let useOpenat2: Bool
    /// st_dev of the upper root.
    let upperDev: dev_t
    /// The FUSE session, for notifications; set once before serving, then only read.
    var session: OpaquePointer?

    struct Node {
        /// 0 once detached (unlinked or replaced); the node then lives on until forgotten.
        var parent: UInt64
        var name: ByteString
        var lookups: UInt64
        /// The lower view node this path shows when there is no upper object, or, for an upper
        /// directory, the lower directory merged into it (-1: none, or opaque).
        var lower: Int32
        /// Whether an upper object exists at this path (kept up to date by every change).
        var upper: Bool
        var children: [ByteString: UInt64] = [:]
    }

    struct UpperKey: Hashable { var dev: UInt64; var ino: UInt64 }

    struct State {
        var nodes: [UInt64: Node] = [:]
        var nextId: UInt64 = 2
        /// st_ino a copied-up object keeps: upper (st_dev, st_ino) -> the st_ino it had.
        var inoMap: [UpperKey: UInt64] = [:]
        /// Upper files open for writing (count of handles): rebase() never moves them.
        var writers: [UpperKey: Int] = [:]
        /// Upper-derived st_ino values (upper st_ino + 2^40) that paths of the lower view now
        /// carry, after rebase() moved their files out: a new upper file whose own number
        /// would be one of them gets a fresh number instead (from nextFreshIno).
        var retired: Set<UInt64> = []
        var nextFreshIno: UInt64 = 1 << 50
    }

    struct Snapshot {
        var parent: UInt64
        var name: ByteString
        var lower: Int32
        var upper: Bool
    }

    init(view: MergedView, upperDirectory: String) throws(StoreError) {
        self.view = view
        let fd = Glibc.open(upperDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw .system("open upper directory", upperDirectory) }
        upperRoot = fd
        let probe = Sys.openat2(fd, ".", flags: Sys.O_PATH | O_DIRECTORY | O_CLOEXEC,
                                resolve: Sys.RESOLVE_BENEATH | Sys.RESOLVE_NO_SYMLINKS | Sys.RESOLVE_NO_MAGICLINKS)
        useOpenat2 = probe >= 0
        if probe >= 0 { close(probe) }
        tree = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(tree, &attr)
        pthread_rwlockattr_destroy(&attr)

        var st = stat()
        let opaque = fstatat(fd, OverlayFS.opaqueName.c, &st, AT_SYMLINK_NOFOLLOW) == 0
        var s = State()
        s.nodes[OverlayFS.rootId] = Node(parent: 0, name: "", lookups: 1, lower: opaque ? -1 : MergedView.root, upper: true)
        upperDev = fstat(fd, &st) == 0 ? st.st_dev : 0
        if upperDev != 0 {
            s.inoMap[UpperKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))] = UInt64(view.inodeNumber(of: MergedView.root)) + 1
        }
        state = Mutex(s)
        try adoptRootMetadata(upperDirectory)
        try OverlayFS.removeInternalFiles(fd, path: upperDirectory)
    }

    /// Removes what an interrupted copy-up left (UpperWhiteout.isInternal names) anywhere in
    /// the upper directory, before it is served.
    static func removeInternalFiles(_ directory: Int32, path: String) throws(StoreError) {
        for name in try Files.names(fd: directory, path: path) {
            let sub = path + "/" + name.description
            if UpperWhiteout.isInternal(name) {
                if unlinkat(directory, name.c, 0) != 0 && errno != ENOENT { throw .system("remove", sub) }
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

    deinit {
        close(upperRoot)
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
            try applyLowerMetadata(dirfd: upperRoot, name: nil, lower: MergedView.root)
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

    // MARK: Node table

    func snapshot(_ id: UInt64) throws(Errno) -> Snapshot {
        let s: Snapshot? = state.withLock { s in
            guard let n = s.nodes[id] else { return nil }
            return Snapshot(parent: n.parent, name: n.name, lower: n.lower, upper: n.upper)
        }
        guard let s else { throw Errno(ESTALE) }
        return s
    }

    /// The live (attached) node at parent/name in the table, if any.
    func existingChild(_ parent: UInt64, _ name: ByteString) -> UInt64? {
        state.withLock { s in s.nodes[parent]?.children[name] }
    }

    /// Records a lookup of parent/name (creating the node, or refreshing its upper/lower state).
    func install(parent: UInt64, name: ByteString, upper: Bool, lower: Int32) -> UInt64 {
        state.withLock { s in
            if let id = s.nodes[parent]?.children[name], s.nodes[id] != nil {
                s.nodes[id]!.lookups += 1
                s.nodes[id]!.upper = upper
                s.nodes[id]!.lower = lower
                return id
            }
            let id = s.nextId
            s.nextId += 1
            s.nodes[id] = Node(parent: parent, name: name, lookups: 1, lower: lower, upper: upper)
            s.nodes[parent]?.children[name] = id
            return id
        }
    }

    func update(_ id: UInt64, upper: Bool, lower: Int32) {
        state.withLock { s in
            s.nodes[id]?.upper = upper
            s.nodes[id]?.lower = lower
        }
    }

    func forget(_ id: UInt64, _ count: UInt64) {
        guard id != OverlayFS.rootId else { return }
        state.withLock { s in
            guard let n = s.nodes[id] else { return }
            s.nodes[id]!.lookups = n.lookups > count ? n.lookups - count : 0
            OverlayFS.collect(&s, id)
        }
    }

    /// Removes a node nobody refers to (no kernel lookups, no children), then its parent if that
    /// became unreferenced too.
    private static func collect(_ s: inout State, _ start: UInt64) {
        var id = start
        while id != rootId, let n = s.nodes[id], n.lookups == 0, n.children.isEmpty {
            s.nodes[id] = nil
            guard n.parent != 0 else { return }
            if s.nodes[n.parent]?.children[n.name] == id { s.nodes[n.parent]!.children[n.name] = nil }
            id = n.parent
        }
    }

    /// Unlinks a node from its name (after unlink/rmdir/rename over it).
    func detach(_ id: UInt64) {
        state.withLock { s in
            guard let n = s.nodes[id], n.parent != 0 else { return }
            if s.nodes[n.parent]?.children[n.name] == id { s.nodes[n.parent]!.children[n.name] = nil }
            let parent = n.parent
            s.nodes[id]!.parent = 0
            OverlayFS.collect(&s, id)
            OverlayFS.collect(&s, parent)
        }
    }

    /// Moves a node to newParent/newName (the target's node must have been detached).
    func move(_ id: UInt64, to newParent: UInt64, _ newName: ByteString) {
        state.withLock { s in
            guard let n = s.nodes[id] else { return }
            if n.parent != 0, s.nodes[n.parent]?.children[n.name] == id { s.nodes[n.parent]!.children[n.name] = nil }
            let old = n.parent
            s.nodes[id]!.parent = newParent
            s.nodes[id]!.name = newName
            s.nodes[newParent]?.children[newName] = id
            if old != 0 { OverlayFS.collect(&s, old) }
        }
    }

    /// Swaps the names of two attached nodes (after RENAME_EXCHANGE).
    func swapNodes(_ a: UInt64, _ b: UInt64) {
        state.withLock { s in
            guard let x = s.nodes[a], let y = s.nodes[b], x.parent != 0, y.parent != 0 else { return }
            s.nodes[a]!.parent = y.parent
            s.nodes[a]!.name = y.name
            s.nodes[b]!.parent = x.parent
            s.nodes[b]!.name = x.name
            s.nodes[x.parent]?.children[x.name] = b
            s.nodes[y.parent]?.children[y.name] = a
        }
    }

    /// Marks a node and everything below it in the table as upper-only (after a subtree copy).
    func markSubtreeUpper(_ id: UInt64) {
        state.withLock { s in
            var stack = [id]
            while let x = stack.popLast() {
                guard let n = s.nodes[x] else { continue }
                s.nodes[x]!.upper = true
                s.nodes[x]!.lower = -1
                stack.append(contentsOf: n.children.values)
            }
        }
    }

    // MARK: Inode numbers

    /// The st_ino a view inode reports (caller holds the tree lock).
    func lowerIno(_ inode: Int32) -> UInt64 {
        lowerInos.isEmpty ? UInt64(inode) + 1 : lowerInos[Int(inode)]
    }

    func reportedIno(_ st: stat) -> UInt64 {
        let key = UpperKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        let own = UInt64(st.st_ino) &+ OverlayFS.upperInoBase
        return state.withLock { s in
            if let mapped = s.inoMap[key] { return mapped }
            guard s.retired.contains(own) else { return own }
            // The upper inode number of a file that a rebase moved out, whose path still
            // reports it: this new file gets a number of its own.
            let fresh = s.nextFreshIno
            s.nextFreshIno += 1
            s.inoMap[key] = fresh
            return fresh
        }
    }

    func mapIno(dirfd: Int32, name: ByteString, to ino: UInt64) {
        var st = stat()
        guard fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        let key = UpperKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        state.withLock { s in s.inoMap[key] = ino }
    }

    // MARK: Upper paths

    /// The components of a node's path ("" for the root); ENOENT when it is detached.
    func components(_ id: UInt64) throws(Errno) -> [ByteString] {
        let parts: [ByteString]? = state.withLock { s in
            var parts: [ByteString] = []
            var x = id
            while x != OverlayFS.rootId {
                guard let n = s.nodes[x], n.parent != 0 else { return nil }
                parts.append(n.name)
                x = n.parent
            }
            return parts.reversed()
        }
        guard let parts else { throw Errno(ENOENT) }
        return parts
    }

    /// Opens node `id`'s upper directory, never following a symlink (openat2 with
    /// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or component by component with O_NOFOLLOW).
    /// With the default O_PATH the root fd itself is returned (borrowed).
    func openUpperDir(_ id: UInt64, flags: Int32 = Sys.O_PATH) throws(Errno) -> DirFD {
        let parts = try components(id)
        if parts.isEmpty {
            if flags == Sys.O_PATH { return DirFD(fd: upperRoot, owned: false) }
            let fd = openat(upperRoot, ".", flags | O_DIRECTORY | O_CLOEXEC)
            if fd < 0 { throw Errno.current }
            return DirFD(fd: fd, owned: true)
        }
        if useOpenat2 {
            let fd = Sys.openat2(upperRoot, parts.joined(separator: "/"), flags: flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                                 resolve: Sys.RESOLVE_BENEATH | Sys.RESOLVE_NO_SYMLINKS | Sys.RESOLVE_NO_MAGICLINKS)
            if fd < 0 { throw errno == ELOOP ? Errno(ENOTDIR) : Errno.current }
            return DirFD(fd: fd, owned: true)
        }
        var current = upperRoot
        for (i, part) in parts.enumerated() {
            let last = i == parts.count - 1
            let fd = openat(current, part.c, (last ? flags : Sys.O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errno
            if current != upperRoot { close(current) }
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
        return exists(fd, OverlayFS.opaqueName)
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
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            var lower: Int32 = -1
            if isDir, let l = lowerAt(parent, name), viewIsDirectory(l), !isOpaque(dirfd, name) { lower = l }
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
        st.st_mode = OverlayFS.typeBits(a.type) | (a.type == .symlink ? 0o777 : mode_t(a.mode & 0o7777))
        st.st_nlink = numericCast(max(a.linkCount, 1))
        st.st_uid = uid_t(truncatingIfNeeded: a.uid)
        st.st_gid = gid_t(truncatingIfNeeded: a.gid)
        st.st_size = a.type == .symlink ? numericCast(view.inode(number: number).linkName.count) : numericCast(a.size)
        st.st_blksize = 4096
        st.st_blocks = numericCast((a.size + 511) / 512)
        if a.type == .characterDevice || a.type == .blockDevice {
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
            return presentUpper(st, mergedDir: false)
        }
        let n = try snapshot(id)
        if n.upper {
            var st = stat()
            if id == OverlayFS.rootId {
                if fstat(upperRoot, &st) != 0 { throw Errno.current }
            } else {
                guard n.parent != 0 else { throw Errno(ENOENT) }
                let dir = try openUpperDir(n.parent)
                defer { dir.close() }
                if fstatat(dir.fd, n.name.c, &st, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
            }
            return presentUpper(st, mergedDir: (st.st_mode & S_IFMT) == S_IFDIR && n.lower >= 0)
        }
        guard n.lower >= 0 else { throw Errno(ENOENT) }
        return lowerStat(n.lower)
    }

    // MARK: Lookup

    func lookup(_ parentId: UInt64, _ name: ByteString) throws(Errno) -> (UInt64, stat) {
        try shared { () throws(Errno) -> (UInt64, stat) in
            let parent = try snapshot(parentId)
            guard let r = try resolve(parentId, parent, name) else { throw Errno(ENOENT) }
            let id = install(parent: parentId, name: name, upper: r.upper, lower: r.lower)
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

    /// The merged entries of a directory whose upper directory is `upper` (an fd listing may
    /// consume; nil if none) and lower directory `lower` (-1: none).
    func mergedEntries(upper: Int32?, lower: Int32) throws(Errno) -> [DirEntry] {
        var entries: [DirEntry] = []
        var upperNames = Set<ByteString>()
        var whiteouts = Set<ByteString>()
        if let upper {
            try forEachEntry(of: upper) { name, ino, type in
                if name.isWhiteoutName {
                    if lower >= 0 && !UpperWhiteout.isInternal(name) { whiteouts.insert(name.dropFirst(4)) }
                    return
                }
                if type == UInt8(DT_CHR), isDeviceWhiteout(upper, name) {
                    whiteouts.insert(name)
                    return
                }
                upperNames.insert(name)
                // d_ino with the upper root's device (no stat per entry; readdirplus and stat
                // give the exact number).
                var st = stat()
                st.st_dev = upperDev
                st.st_ino = ino
                entries.append(DirEntry(name: name, ino: reportedIno(st), type: type))
            }
        }
        if lower >= 0 {
            for c in view.children(of: lower) {
                let name = view.name(of: c)
                if upperNames.contains(name) || whiteouts.contains(name) { continue }
                let number = view.inodeNumber(of: c)
                let t = view.attributes(ofInode: number).type
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

    // MARK: Copy-up (exclusive lock held by the caller)

    /// Sets an xattr on dirfd/name (not following it), or on the directory dirfd itself.
    func setXattr(dirfd: Int32, name: ByteString?, _ key: String, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) -> Int32 {
        guard let name else { return fsetxattr(dirfd, key, value.baseAddress, value.count, flags) }
        return lsetxattr((ByteString("/proc/self/fd/\(dirfd)/") + name).c, key, value.baseAddress, value.count, flags)
    }

    /// Sets owner, mode, xattrs and times of an upper object (dirfd/name, or dirfd itself) from
    /// a lower node. Mode after chown, so chown's clearing of setuid bits does not stick.
    func applyLowerMetadata(dirfd: Int32, name: ByteString?, lower: Int32) throws(Errno) {
        let inode = view.inode(of: lower)
        let target = name ?? ByteString()
        let flags = name == nil ? Sys.AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW
        if fchownat(dirfd, target.c, uid_t(truncatingIfNeeded: inode.uid), gid_t(truncatingIfNeeded: inode.gid), flags) != 0 {
            throw Errno.current
        }
        if inode.type != .symlink {
            let r = name == nil ? fchmod(dirfd, mode_t(inode.mode & 0o7777)) : Files.chmodNoFollow(dirfd, target.c, mode_t(inode.mode & 0o7777))
            if r != 0 { throw Errno.current }
        }
        for x in inode.xattrs {
            let r = x.value.withUnsafeBytes { setXattr(dirfd: dirfd, name: name, x.name, $0) }
            if r != 0 { throw Errno.current }
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
        defer { try? restoreTimes(dirfd, parentBefore) }
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
                if data {
                    let buffer = ThreadBuffer.get(1 << 20)
                    var offset: Int64 = 0
                    while offset < a.size {
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
            case .symlink:
                if symlinkat(view.inode(number: number).linkName.c, dirfd, temp.c) != 0 { throw Errno.current }
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
    }

    /// Copies everything the merged directory dirfd (lower directory `lower`) shows into the
    /// upper directory, recursively, and drops whiteouts in it (the caller makes it opaque).
    func copyUpTree(dirfd: Int32, lower: Int32) throws(Errno) {
        var upperNames = Set<ByteString>()
        var whiteouts: [ByteString] = []
        var deviceWhiteouts: [ByteString] = []
        try forEachEntry(of: dirfd) { name, _, type in
            if name.isWhiteoutName {
                if !UpperWhiteout.isInternal(name) { whiteouts.append(name) }
            } else if type == UInt8(DT_CHR), isDeviceWhiteout(dirfd, name) {
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
                if upperNames.contains(name) {
                    var st = stat()
                    guard lowerIsDir, fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                } else {
                    try copyUpObject(dirfd: dirfd, name: name, lower: c)
                    if !lowerIsDir { continue }
                }
                let sub = try openChildDir(dirfd, name)
                defer { close(sub) }
                try copyUpTree(dirfd: sub, lower: c)
            }
        }
        for w in whiteouts + deviceWhiteouts where w != OverlayFS.opaqueName {
            if unlinkat(dirfd, w.c, 0) != 0 && errno != ENOENT { throw Errno.current }
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
        if UpperWhiteout.make(dirfd, name) != 0 { throw Errno.current }
    }

    func makeMarker(_ dirfd: Int32, _ name: ByteString) throws(Errno) {
        let fd = openat(dirfd, name.c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 {
            if errno == EEXIST { return }
            throw Errno.current
        }
        defer { close(fd) }
        if fchown(fd, 0, 0) != 0 || fchmod(fd, 0) != 0 { throw Errno.current }
    }

    func makeOpaque(_ dirfd: Int32, _ name: ByteString) throws(Errno) {
        let fd = try openChildDir(dirfd, name)
        defer { close(fd) }
        try makeMarker(fd, OverlayFS.opaqueName)
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
                gid = pst.st_gid
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
                if fchownat(dir.fd, name.c, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 { throw Errno.current }
                if case .symlink = kind {} else if Files.chmodNoFollow(dir.fd, name.c, mode) != 0 { throw Errno.current }
                if case .directory = kind, let l = lowerAt(parent, name), viewIsDirectory(l) {
                    try makeOpaque(dir.fd, name)
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
            return Created(id: id, attr: presentUpper(st, mergedDir: false), fd: fd)
        }
    }
}
