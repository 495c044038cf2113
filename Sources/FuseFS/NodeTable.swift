#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics

/// An upper object's identity: its (st_dev, st_ino) in the upper directory.
struct UpperKey: Hashable {
    var dev: UInt64
    var ino: UInt64
    init(dev: UInt64, ino: UInt64) { self.dev = dev; self.ino = ino }
    init(_ st: stat) { self.init(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)) }
}

/// The node table: the FUSE node ids the kernel knows, each a path (parent and name) with what
/// it shows (upper object, lower view node), and the st_ino numbers the mount reports. Plain
/// data, no I/O (except closing the orphan descriptors of nodes it drops).
///
/// Ownership: one OverlayFS owns one table, in `OverlayFS.table` (a Mutex). Every access is
/// one `withLock` closure, held only for the update, never across I/O and never nested; the
/// tree lock (OverlayFS.exclusive/shared), when held, is always taken first.
struct NodeTable {
    static let rootId: UInt64 = 1
    /// Upper objects report their upper st_ino + this (see FuseFS.swift, "Inode numbers").
    static let upperInoBase: UInt64 = 1 << 40

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
        /// For an upper file with more than one name: its inode, so that a change through one
        /// name can invalidate the others (`links`).
        var identity: UpperKey?
        /// An O_PATH descriptor of the upper file this node named when it was unlinked while
        /// the kernel still knew it (an open file): fstat, fchmod and friends go on working.
        /// Owned by the table: closed when the node goes.
        var orphan: Int32 = -1
        /// A regular file this mount created under this node, with one name, on which nothing
        /// has set an extended attribute since: it has no security.capability, which the
        /// kernel asks for before every write (a FUSE mount never marks inodes S_NOSEC), so
        /// that question is answered here instead of in the upper directory. Cleared by
        /// setxattr through the node, by link (another name could set one), and by rebase.
        var createdPlain = false
    }

    /// What a node shows, copied out of the table.
    struct Snapshot {
        var parent: UInt64
        var name: ByteString
        var lower: Int32
        var upper: Bool
    }

    var nodes: [UInt64: Node] = [:]
    var nextId: UInt64 = 2
    /// st_ino a copied-up object keeps: upper (st_dev, st_ino) -> the st_ino it had.
    var inoMap: [UpperKey: UInt64] = [:]
    /// Upper files open for writing (count of handles): rebase() never moves them.
    var writers: [UpperKey: Int] = [:]
    /// Upper-derived st_ino values (upper st_ino + 2^40) that paths of the lower view now
    /// carry, after rebase() moved their files out: a new upper file whose own number would
    /// be one of them gets a fresh number instead (from nextFreshIno).
    var retired: Set<UInt64> = []
    var nextFreshIno: UInt64 = 1 << 50
    /// The nodes naming each upper file that has several names (Node.identity).
    var links: [UpperKey: Set<UInt64>] = [:]
    /// For a hardlinked file of the view (by view inode number): how many of its names a
    /// whiteout or a rename over them has hidden, which its other names' st_nlink no longer
    /// counts (as on ext4). Only ever non-zero for files still in the view; a copy-up links
    /// the names still shown, and rebase starts again with a new view.
    var hiddenLowerNames: [Int32: UInt32] = [:]

    /// A table that knows the root (its lower directory `rootLower`, -1 if opaque).
    init(rootLower: Int32) {
        nodes[NodeTable.rootId] = Node(parent: 0, name: "", lookups: 1, lower: rootLower, upper: true)
    }

    // MARK: Reading

    func snapshot(_ id: UInt64) -> Snapshot? {
        guard let n = nodes[id] else { return nil }
        return Snapshot(parent: n.parent, name: n.name, lower: n.lower, upper: n.upper)
    }

    /// The live (attached) node at parent/name, if any.
    func child(_ parent: UInt64, _ name: ByteString) -> UInt64? { nodes[parent]?.children[name] }

    /// The attached node at a path from the root, if the kernel knows one.
    func node(at path: [ByteString]) -> UInt64? {
        var id = NodeTable.rootId
        for name in path {
            guard let next = nodes[id]?.children[name] else { return nil }
            id = next
        }
        return id
    }

    /// The components of a node's path (none for the root); nil when it is detached.
    func components(_ id: UInt64) -> [ByteString]? {
        var parts: [ByteString] = []
        var x = id
        while x != NodeTable.rootId {
            guard let n = nodes[x], n.parent != 0 else { return nil }
            parts.append(n.name)
            x = n.parent
        }
        return parts.reversed()
    }

    func orphan(_ id: UInt64) -> Int32? { nodes[id].flatMap { $0.orphan >= 0 ? $0.orphan : nil } }

    /// The nodes other than `id` naming the upper file `key` (see `links`).
    func otherNames(of key: UpperKey, except id: UInt64) -> Set<UInt64> {
        links[key].map { $0.subtracting([id]) } ?? []
    }

    // MARK: Changes

    /// Records a lookup of parent/name (creating the node, or refreshing its upper/lower state).
    mutating func install(parent: UInt64, name: ByteString, upper: Bool, lower: Int32) -> UInt64 {
        if let id = nodes[parent]?.children[name], nodes[id] != nil {
            nodes[id]!.lookups += 1
            nodes[id]!.upper = upper
            nodes[id]!.lower = lower
            return id
        }
        let id = nextId
        nextId += 1
        nodes[id] = Node(parent: parent, name: name, lookups: 1, lower: lower, upper: upper)
        nodes[parent]?.children[name] = id
        return id
    }

    mutating func update(_ id: UInt64, upper: Bool, lower: Int32) {
        nodes[id]?.upper = upper
        nodes[id]?.lower = lower
    }

    mutating func forget(_ id: UInt64, _ count: UInt64) {
        guard id != NodeTable.rootId, let n = nodes[id] else { return }
        nodes[id]!.lookups = n.lookups > count ? n.lookups - count : 0
        collect(id)
    }

    /// Unlinks a node from its name (after unlink/rmdir/rename over it).
    mutating func detach(_ id: UInt64) {
        guard let n = nodes[id], n.parent != 0 else { return }
        if nodes[n.parent]?.children[n.name] == id { nodes[n.parent]!.children[n.name] = nil }
        nodes[id]!.parent = 0
        collect(id)
        collect(n.parent)
    }

    /// Moves a node to newParent/newName (the target's node must have been detached).
    mutating func move(_ id: UInt64, to newParent: UInt64, _ newName: ByteString) {
        guard let n = nodes[id] else { return }
        if n.parent != 0, nodes[n.parent]?.children[n.name] == id { nodes[n.parent]!.children[n.name] = nil }
        nodes[id]!.parent = newParent
        nodes[id]!.name = newName
        nodes[newParent]?.children[newName] = id
        if n.parent != 0 { collect(n.parent) }
    }

    /// Swaps the names of two attached nodes (after RENAME_EXCHANGE).
    mutating func swap(_ a: UInt64, _ b: UInt64) {
        guard let x = nodes[a], let y = nodes[b], x.parent != 0, y.parent != 0 else { return }
        nodes[a]!.parent = y.parent
        nodes[a]!.name = y.name
        nodes[b]!.parent = x.parent
        nodes[b]!.name = x.name
        nodes[x.parent]?.children[x.name] = b
        nodes[y.parent]?.children[y.name] = a
    }

    /// Marks a node and everything below it as upper-only (after a subtree copy).
    mutating func markSubtreeUpper(_ id: UInt64) {
        var stack = [id]
        while let x = stack.popLast() {
            guard let n = nodes[x] else { continue }
            nodes[x]!.upper = true
            nodes[x]!.lower = -1
            stack.append(contentsOf: n.children.values)
        }
    }

    /// Records which upper file a node names when that file has several names (nil: one).
    mutating func setIdentity(_ id: UInt64, _ key: UpperKey?) {
        guard let n = nodes[id] else { return }
        if let old = n.identity, old != key { removeLink(old, id) }
        nodes[id]!.identity = key
        if let key { links[key, default: []].insert(id) }
    }

    /// Makes `fd` node `id`'s orphan if it has none and, `detached`, the node is detached
    /// (an anonymous copy), or else the kernel still refers to it; false: the caller closes fd.
    mutating func adoptOrphan(_ id: UInt64, _ fd: Int32, detached: Bool) -> Bool {
        guard let n = nodes[id], n.orphan < 0 else { return false }
        if detached ? n.parent != 0 : n.lookups == 0 { return false }
        nodes[id]!.orphan = fd
        return true
    }

    /// The st_ino the mount reports for the upper object `key` whose own number is `own`.
    mutating func reportedIno(_ key: UpperKey, own: UInt64) -> UInt64 {
        if let mapped = inoMap[key] { return mapped }
        guard retired.contains(own) else { return own }
        // The upper inode number of a file that a rebase moved out, whose path still reports
        // it: this new file gets a number of its own.
        let fresh = nextFreshIno
        nextFreshIno += 1
        inoMap[key] = fresh
        return fresh
    }

    // MARK: Internals

    private mutating func removeLink(_ key: UpperKey, _ id: UInt64) {
        links[key]?.remove(id)
        if links[key]?.isEmpty == true { links[key] = nil }
    }

    /// Removes a node nobody refers to (no kernel lookups, no children), then its parent if that
    /// became unreferenced too.
    private mutating func collect(_ start: UInt64) {
        var id = start
        while id != NodeTable.rootId, let n = nodes[id], n.lookups == 0, n.children.isEmpty {
            nodes[id] = nil
            if n.orphan >= 0 { close(n.orphan) }
            if let key = n.identity { removeLink(key, id) }
            guard n.parent != 0 else { return }
            if nodes[n.parent]?.children[n.name] == id { nodes[n.parent]!.children[n.name] = nil }
            id = n.parent
        }
    }
}

/// The node table as the operations use it: each call one locked access to `table`.
extension OverlayFS {
    typealias Snapshot = NodeTable.Snapshot

    func snapshot(_ id: UInt64) throws(Errno) -> Snapshot {
        guard let s = table.withLock({ $0.snapshot(id) }) else { throw Errno(ESTALE) }
        return s
    }

    func existingChild(_ parent: UInt64, _ name: ByteString) -> UInt64? { table.withLock { $0.child(parent, name) } }

    func install(parent: UInt64, name: ByteString, upper: Bool, lower: Int32) -> UInt64 {
        table.withLock { $0.install(parent: parent, name: name, upper: upper, lower: lower) }
    }

    /// Node.createdPlain.
    func setCreatedPlain(_ id: UInt64, _ value: Bool) { table.withLock { $0.nodes[id]?.createdPlain = value } }

    /// Whether node id is a file this mount created that cannot carry security.capability
    /// (Node.createdPlain): one lookup in the table, no system call.
    func hasNoCapability(_ id: UInt64) -> Bool { table.withLock { $0.nodes[id]?.createdPlain == true } }

    func update(_ id: UInt64, upper: Bool, lower: Int32) { table.withLock { $0.update(id, upper: upper, lower: lower) } }

    func forget(_ id: UInt64, _ count: UInt64) { table.withLock { $0.forget(id, count) } }

    func detach(_ id: UInt64) { table.withLock { $0.detach(id) } }

    func move(_ id: UInt64, to newParent: UInt64, _ newName: ByteString) { table.withLock { $0.move(id, to: newParent, newName) } }

    func nodeAt(_ path: [ByteString]) -> UInt64? { table.withLock { $0.node(at: path) } }

    func swapNodes(_ a: UInt64, _ b: UInt64) { table.withLock { $0.swap(a, b) } }

    func markSubtreeUpper(_ id: UInt64) { table.withLock { $0.markSubtreeUpper(id) } }

    func orphan(_ id: UInt64) -> Int32? { table.withLock { $0.orphan(id) } }

    /// The components of a node's path ("" for the root); ENOENT when it is detached.
    func components(_ id: UInt64) throws(Errno) -> [ByteString] {
        guard let parts = table.withLock({ $0.components(id) }) else { throw Errno(ENOENT) }
        return parts
    }

    /// Records which upper file a node names when that file has more than one name (st from
    /// the upper directory), or forgets it.
    func noteIdentity(_ id: UInt64, _ st: stat) {
        let several = (st.st_mode & S_IFMT) != S_IFDIR && st.st_nlink > 1
        table.withLock { $0.setIdentity(id, several ? UpperKey(st) : nil) }
    }

    /// A name of the view's file at lower node `lower`, shown from the view until now, is
    /// hidden (whited out or replaced): its other names count one link less.
    func hideLowerName(_ lower: Int32) {
        let number = view.inodeNumber(of: lower)
        guard view.attributes(ofInode: number).linkCount > 1 else { return }
        table.withLock { $0.hiddenLowerNames[number, default: 0] += 1 }
    }

    /// Queues for invalidation the other nodes naming the upper file `st` (sent before the
    /// reply, see OverlayFS.invalidations).
    func invalidateOtherNames(of id: UInt64, _ st: stat) {
        // Not only while the file has several names: a name unlinked while open stays in
        // `links` (its node is detached) and must see the file lose its last name.
        guard (st.st_mode & S_IFMT) != S_IFDIR else { return }
        let others = table.withLock { $0.otherNames(of: UpperKey(st), except: id) }
        for other in others { queueInvalidation(other) }
    }

    /// Queues for invalidation the other nodes naming node id's upper object, if it has one.
    func invalidateOtherNames(of id: UInt64) {
        guard let n = try? snapshot(id), let st = try? upperStat(id, n) else { return }
        invalidateOtherNames(of: id, st)
    }

    func queueInvalidation(_ id: UInt64) {
        invalidations.withLock { $0.append(id) }
        invalidationsPending.store(true, ordering: .releasing)
    }

    /// The queued invalidations (see OverlayFS.invalidations), emptied.
    func takeInvalidations() -> [UInt64] {
        guard invalidationsPending.load(ordering: .acquiring) else { return [] }
        return invalidations.withLock { q in
            invalidationsPending.store(false, ordering: .releasing)
            defer { q.removeAll(keepingCapacity: true) }
            return q
        }
    }

    // MARK: Orphans

    /// Keeps an O_PATH descriptor of the upper object at dirfd/name in node `id` before the
    /// object loses its name, when the kernel still refers to the node (an open file).
    func keepOrphan(_ id: UInt64, dirfd: Int32, _ name: ByteString) {
        let fd = openat(dirfd, name.c, Sys.O_PATH | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        // Regular files only: an orphan is reopened through /proc to change it, and opening a
        // device node or FIFO of the upper directory would act on the host.
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { close(fd); return }
        if !table.withLock({ $0.adoptOrphan(id, fd, detached: false) }) { close(fd) }
    }

    /// Makes fd (an anonymous copy of a detached lower file) node `id`'s orphan; false if the
    /// node is gone, attached or has one.
    func adoptOrphan(_ id: UInt64, _ fd: Int32) -> Bool { table.withLock { $0.adoptOrphan(id, fd, detached: true) } }

    /// A descriptor of node id's orphan (a regular file: keepOrphan and copyUpOrphan keep no
    /// other), opened again through /proc to read or change it; nil when the node is attached
    /// or has none. The caller closes it.
    func openOrphan(_ id: UInt64, writing: Bool = false) throws(Errno) -> Int32? {
        guard let orphan = orphan(id), try snapshot(id).parent == 0 else { return nil }
        var st = stat()
        guard fstat(orphan, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw Errno(ENOENT) }
        let fd = Glibc.open("/proc/self/fd/\(orphan)", (writing ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 { throw Errno.current }
        return fd
    }

    // MARK: Inode numbers

    /// The st_ino a view inode reports (caller holds the tree lock).
    func lowerIno(_ inode: Int32) -> UInt64 {
        lowerInos.isEmpty ? UInt64(inode) + 1 : lowerInos[Int(inode)]
    }

    func reportedIno(_ st: stat) -> UInt64 {
        let own = UInt64(st.st_ino) &+ NodeTable.upperInoBase
        return table.withLock { $0.reportedIno(UpperKey(st), own: own) }
    }

    func mapIno(dirfd: Int32, name: ByteString, to ino: UInt64) {
        var st = stat()
        guard fstatat(dirfd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        table.withLock { $0.inoMap[UpperKey(st)] = ino }
    }
}
