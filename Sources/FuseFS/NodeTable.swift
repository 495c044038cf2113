#if canImport(Glibc)
import Glibc
#endif
import CLinux
import LayerStore

/// The node table: the FUSE node ids the kernel knows, each a path (parent and name) with what
/// it shows (upper object, lower view node), and the st_ino numbers the mount reports. Guarded
/// by `state` (held only for table updates, never across I/O).
extension OverlayFS {
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

    /// Node.createdPlain.
    func setCreatedPlain(_ id: UInt64, _ value: Bool) {
        state.withLock { s in s.nodes[id]?.createdPlain = value }
    }

    /// Whether node id is a file this mount created that cannot carry security.capability
    /// (Node.createdPlain): one lookup in the table, no system call.
    func hasNoCapability(_ id: UInt64) -> Bool {
        state.withLock { s in s.nodes[id]?.createdPlain == true }
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
            if n.orphan >= 0 { close(n.orphan) }
            if let key = n.identity { s.removeLink(key, id) }
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

    /// The attached node at a path from the root, if the kernel knows one.
    func nodeAt(_ path: [ByteString]) -> UInt64? {
        state.withLock { s in
            var id = OverlayFS.rootId
            for name in path {
                guard let next = s.nodes[id]?.children[name] else { return nil }
                id = next
            }
            return id
        }
    }

    /// Records which upper file a node names when that file has more than one name (st from
    /// the upper directory), or forgets it.
    func noteIdentity(_ id: UInt64, _ st: stat) {
        let several = (st.st_mode & S_IFMT) != S_IFDIR && st.st_nlink > 1
        let key = several ? UpperKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)) : nil
        state.withLock { s in
            guard let n = s.nodes[id] else { return }
            if let old = n.identity, old != key { s.removeLink(old, id) }
            s.nodes[id]!.identity = key
            if let key { s.links[key, default: []].insert(id) }
        }
    }

    /// Queues for invalidation the other nodes naming the upper file `st` (sent before the
    /// reply, see OverlayFS.invalidations).
    func invalidateOtherNames(of id: UInt64, _ st: stat) {
        // Not only while the file has several names: a name unlinked while open stays in
        // `links` (its node is detached) and must see the file lose its last name.
        guard (st.st_mode & S_IFMT) != S_IFDIR else { return }
        let key = UpperKey(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        let others = state.withLock { s in (s.links[key] ?? []).subtracting([id]) }
        for other in others { queueInvalidation(other) }
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

    /// Keeps an O_PATH descriptor of the upper object at dirfd/name in node `id` before the
    /// object loses its name, when the kernel still refers to the node (an open file).
    func keepOrphan(_ id: UInt64, dirfd: Int32, _ name: ByteString) {
        let fd = openat(dirfd, name.c, Sys.O_PATH | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        // Regular files only: an orphan is reopened through /proc to change it, and opening a
        // device node or FIFO of the upper directory would act on the host.
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { close(fd); return }
        let kept = state.withLock { s -> Bool in
            guard let n = s.nodes[id], n.lookups > 0, n.orphan < 0 else { return false }
            s.nodes[id]!.orphan = fd
            return true
        }
        if !kept { close(fd) }
    }

    /// Makes fd (an anonymous copy of a detached lower file) node `id`'s orphan; false if the
    /// node is gone or has one.
    func adoptOrphan(_ id: UInt64, _ fd: Int32) -> Bool {
        state.withLock { s -> Bool in
            guard let n = s.nodes[id], n.parent == 0, n.orphan < 0 else { return false }
            s.nodes[id]!.orphan = fd
            return true
        }
    }

    func orphan(_ id: UInt64) -> Int32? {
        state.withLock { s in s.nodes[id].flatMap { $0.orphan >= 0 ? $0.orphan : nil } }
    }

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

    /// Queues for invalidation the other nodes naming node id's upper object, if it has one.
    func invalidateOtherNames(of id: UInt64) {
        guard let n = try? snapshot(id), let st = try? upperStat(id, n) else { return }
        invalidateOtherNames(of: id, st)
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

    /// A name of the view's file at lower node `lower`, shown from the view until now, is
    /// hidden (whited out or replaced): its other names count one link less.
    func hideLowerName(_ lower: Int32) {
        let number = view.inodeNumber(of: lower)
        guard view.attributes(ofInode: number).linkCount > 1 else { return }
        state.withLock { s in s.hiddenLowerNames[number, default: 0] += 1 }
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
}
