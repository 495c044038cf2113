#if canImport(Glibc)
import Glibc
#endif
import Basics
import LayerView
import UpperFormat

/// What a rebase did (OverlayServer.rebase).
public struct RebaseReport: Sendable {
    /// Upper entries renamed into the trash (a directory counts once, with its contents).
    public var moved = 0
    /// Upper entries that stay (changed since they were packed, open for writing, or on
    /// the way to one of those).
    public var kept = 0
    /// Why moving stopped early, if it did (what stays behind is identical to the new
    /// view, so it only makes the next layer larger).
    public var moveFailure: String?
    /// How long namespace operations on the mount waited for it.
    public var pauseSeconds = 0.0
}

/// Rebasing a live mount onto a new lower view: `repack --refresh-bundle` of a mounted bundle.
///
/// The new view is the image just packed from the upper directory, so it already shows what
/// the upper directory held then (`packed`, the stamps of what the layer was made from). The
/// mount shows the same tree before and after; what changes is only where each object comes
/// from. Under the exclusive tree lock (namespace operations wait; reads and writes on open
/// handles go on):
/// 1. what was packed and has been removed since gets its whiteout, since the new view has it;
/// 2. the st_ino of every path the new view has is carried over from what the mount reports
///    for that path now, so numbers stay stable across the rebase;
/// 3. the upper entries that are still exactly as packed are chosen to leave the upper
///    directory. What changed since, what is open for writing, everything below a directory
///    made opaque since, and the directories leading to any of these stay. `commit` gets the
///    stamps of what stays unchanged (the bundle's new baseline) before anything moves, so a
///    crash in between only leaves copies identical to the new view in the upper directory;
/// 4. the leaving entries are renamed into `trash` (a directory on the same file system, which
///    the caller deletes afterwards). Open read-only handles keep their files;
/// 5. the view is swapped, and every node the kernel knows is resolved again by its path.
extension OverlayFS {
    func rebase(onto newView: MergedView, packed: UpperBaseline, trash: Int32,
                commit: (UpperBaseline) throws(StoreError) -> Void) throws(StoreError) -> RebaseReport {
        try exclusive { () throws(StoreError) -> RebaseReport in
            let started = OverlayFS.now()
            try packed.reconcile(upperRoot: upperRoot, path: "the upper directory")
            let inos = carriedInos(to: newView)
            // What stays unchanged was stamped before packing started (the sweep counts later
            // ctimes as changed), so any later change gives it a later ctime: the remaining
            // stamps need no start time.
            var plan = Sweep(packed: packed, writers: table.withLock { $0.writers })
            let moves = try plan.run(root: upperRoot)
            try commit(plan.remaining)
            var report = RebaseReport(moved: 0, kept: plan.kept)
            moveAside(moves, trash: trash, &report)
            // The directories things left have a new ctime: stamp them again, so that the next
            // layer does not repeat them. The lock is released only once the file system clock
            // has moved past those ctimes, so a change right after the rebase cannot keep one.
            var restamped = plan.remaining
            var latest: UpperBaseline.FileTime?
            for path in moves.keys where plan.remaining.stamps[path] != nil {
                let fd = Files.openDirectory(beneath: upperRoot, path.split())
                guard fd >= 0 else { continue }
                var st = stat()
                if fstat(fd, &st) == 0 {
                    restamped.stamps[path] = UpperBaseline.stamp(st)
                    latest = max(latest ?? UpperBaseline.FileTime(st.st_ctim), UpperBaseline.FileTime(st.st_ctim))
                }
                close(fd)
            }
            if let latest, waitForClock(after: latest, probeIn: trash) { try? commit(restamped) }

            // Files still open on the old view read it uncached from now on.
            view.dropRegionCache()
            view = newView
            lowerInos = inos
            generation.add(1, ordering: .relaxed)
            table.withLock { s in
                for id in s.nodes.keys { s.nodes[id]!.createdPlain = false }
                // The new view's link counts are the shown ones.
                s.hiddenLowerNames = [:]
            }
            forgetMovedUpperInos(carried: inos)
            resolveNodesAgain()
            report.pauseSeconds = OverlayFS.now() - started
            return report
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    // MARK: Inode numbers

    /// For each inode of `newView`, the st_ino the mount reports now at (the first of) its
    /// paths; a fresh number, above every upper and lower one, for what it does not show.
    private func carriedInos(to newView: MergedView) -> [UInt64] {
        var map = [UInt64](repeating: 0, count: newView.inodeCount)
        let next = generation.load(ordering: .relaxed) + 1
        func fresh(_ number: Int32) -> UInt64 { (1 << 41) + (next << 31) + UInt64(number) }
        var st = stat()
        let rootNumber = newView.inodeNumber(of: MergedView.root)
        map[Int(rootNumber)] = fstat(upperRoot, &st) == 0 ? reportedIno(st) : fresh(rootNumber)
        let rootLower = (try? snapshot(OverlayFS.rootId).lower) ?? -1

        func walk(_ newParent: Int32, oldLower: Int32, upper: Int32) {
            for c in newView.children(of: newParent) {
                let number = newView.inodeNumber(of: c)
                let isDirectory = newView.attributes(ofInode: number).type == .directory
                let name = newView.name(of: c)
                var ino: UInt64 = 0
                var subUpper: Int32 = -1
                var subLower: Int32 = -1
                if upper >= 0 && fstatat(upper, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 && !UpperWhiteout.isDevice(st, name: name) {
                    ino = reportedIno(st)
                    if isDirectory && (st.st_mode & S_IFMT) == S_IFDIR {
                        subUpper = openat(upper, name.c, Sys.O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                        if subUpper >= 0, oldLower >= 0, !self.upper.exists(subUpper, OverlayFS.opaqueName),
                           let l = view.child(oldLower, named: name), viewIsDirectory(l) {
                            subLower = l
                        }
                    }
                } else if upper >= 0 && UpperWhiteout.exists(upper, name) {
                    // Hidden until now: nothing to carry over.
                } else if oldLower >= 0, let l = view.child(oldLower, named: name) {
                    ino = lowerIno(view.inodeNumber(of: l))
                    if isDirectory && viewIsDirectory(l) { subLower = l }
                }
                if map[Int(number)] == 0 { map[Int(number)] = ino != 0 ? ino : fresh(number) }
                if isDirectory { walk(c, oldLower: subLower, upper: subUpper) }
                if subUpper >= 0 { close(subUpper) }
            }
        }
        walk(MergedView.root, oldLower: rootLower, upper: upperRoot)
        return map
    }

    /// Drops the kept st_ino of upper objects that are no longer in the upper directory (their
    /// inodes may be reused by new files); their paths now carry it through the new view. The
    /// upper-derived numbers `carried` to the view for objects that left are retired.
    private func forgetMovedUpperInos(carried: [UInt64]) {
        var present = Set<UpperKey>()
        /// false when some directory could not be read: then nothing is forgotten, since an
        /// object not seen may still be there (its st_ino must not change).
        func walk(_ fd: Int32) -> Bool {
            var st = stat()
            guard fstat(fd, &st) == 0 else { return false }
            present.insert(UpperKey(st))
            guard let names = try? Files.names(fd: fd, path: "the upper directory") else { return false }
            for name in names {
                guard fstatat(fd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return false }
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    let sub = openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    guard sub >= 0 else { return false }
                    defer { close(sub) }
                    if !walk(sub) { return false }
                } else {
                    present.insert(UpperKey(st))
                }
            }
            return true
        }
        guard walk(upperRoot) else { return }
        let dev = UInt64(upper.dev)
        var retired: [UInt64] = []
        for n in carried where n >= OverlayFS.upperInoBase && n < 2 * OverlayFS.upperInoBase {
            if !present.contains(UpperKey(dev: dev, ino: n - OverlayFS.upperInoBase)) { retired.append(n) }
        }
        table.withLock { s in
            s.inoMap = s.inoMap.filter { present.contains($0.key) }
            s.retired.formUnion(retired)
        }
    }

    // MARK: What leaves the upper directory

    struct Sweep {
        let packed: UpperBaseline
        let writers: [UpperKey: Int]
        /// What stays and is unchanged since it was packed.
        var remaining = UpperBaseline()
        var kept = 0

        /// The entries to move out of the upper directory, by the path of their parent.
        mutating func run(root: Int32) throws(StoreError) -> [ByteString: [ByteString]] {
            try sweep(directory: root, path: "", frozen: false).moves
        }

        private func join(_ path: ByteString, _ name: ByteString) -> ByteString { path.isEmpty ? name : path + "/" + name }

        private func unchanged(_ path: ByteString, _ st: stat, frozen: Bool) -> Bool {
            !frozen && packed.unchanged(path, st)
        }

        /// The moves below `directory` (path relative to the upper root), and whether anything
        /// in it has to stay.
        private mutating func sweep(directory fd: Int32, path: ByteString, frozen: Bool) throws(StoreError) -> (mustStay: Bool, moves: [ByteString: [ByteString]]) {
            let names = try Files.names(fd: fd, path: path.isEmpty ? "the upper directory" : path.description)
            var st = stat()
            // Below a directory made opaque since it was packed, the new view's contents are
            // hidden: everything there stays.
            var frozen = frozen
            if names.contains(OverlayFS.opaqueName), fstatat(fd, OverlayFS.opaqueName.c, &st, AT_SYMLINK_NOFOLLOW) == 0,
               !unchanged(join(path, OverlayFS.opaqueName), st, frozen: false) {
                frozen = true
            }
            var mustStay = false
            var moves: [ByteString: [ByteString]] = [:]
            var leaving: [ByteString] = []
            for name in names {
                guard fstatat(fd, name.c, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                let child = join(path, name)
                let same = unchanged(child, st, frozen: frozen)
                var stays: Bool
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    let sub = openat(fd, name.c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    guard sub >= 0 else { throw StoreError.system("open", child.description) }
                    defer { close(sub) }
                    let inner = try sweep(directory: sub, path: child, frozen: frozen)
                    stays = !same || inner.mustStay
                    if stays { moves.merge(inner.moves) { a, _ in a } }
                } else {
                    let writing = (st.st_mode & S_IFMT) == S_IFREG
                        && writers[UpperKey(st)] != nil
                    stays = !same || writing
                }
                if stays {
                    mustStay = true
                    kept += 1
                    if same { remaining.stamps[child] = UpperBaseline.stamp(st) }
                } else {
                    leaving.append(name)
                }
            }
            if !leaving.isEmpty { moves[path] = leaving }
            return (mustStay, moves)
        }
    }

    /// Renames the planned entries into `trash`, keeping the times of the directories they
    /// leave; stops at the first failure.
    private func moveAside(_ moves: [ByteString: [ByteString]], trash: Int32, _ report: inout RebaseReport) {
        for (path, names) in moves {
            let dir = Files.openDirectory(beneath: upperRoot, path.split())
            guard dir >= 0 else {
                report.moveFailure = "cannot open \(path) in the upper directory: \(String(cString: strerror(errno)))"
                return
            }
            defer { close(dir) }
            var before = stat()
            guard fstat(dir, &before) == 0 else {
                report.moveFailure = "cannot stat \(path) in the upper directory: \(String(cString: strerror(errno)))"
                return
            }
            defer { try? upper.restoreTimes(dir, before) }
            for name in names {
                if renameat(dir, name.c, trash, "\(report.moved)") != 0 {
                    let path = path.isEmpty ? name : path + "/" + name
                    report.moveFailure = "cannot move \(path) out of the upper directory: \(String(cString: strerror(errno)))"
                    return
                }
                report.moved += 1
            }
        }
    }

    /// Waits (at most 100 ms) until a file created in `directory` gets a ctime after `time`.
    private func waitForClock(after time: UpperBaseline.FileTime, probeIn directory: Int32) -> Bool {
        for _ in 0..<100 {
            let fd = openat(directory, ".umoci-clock", O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return false }
            var st = stat()
            let ok = fstat(fd, &st) == 0
            close(fd)
            unlinkat(directory, ".umoci-clock", 0)
            guard ok else { return false }
            if time < UpperBaseline.FileTime(st.st_ctim) { return true }
            usleep(1000)
        }
        return false
    }


    // MARK: Nodes

    /// Resolves every attached node again, parents first, against the new view and what stays
    /// in the upper directory; a node whose path is gone is detached. Detached nodes lose
    /// their lower object (its number meant the old view).
    private func resolveNodesAgain() {
        let order: [(id: UInt64, parent: UInt64, name: ByteString)] = table.withLock { s in
            var out: [(UInt64, UInt64, ByteString)] = []
            var queue = [OverlayFS.rootId]
            var i = 0
            while i < queue.count {
                let id = queue[i]
                i += 1
                for (name, child) in s.nodes[id]?.children ?? [:] {
                    out.append((child, id, name))
                    queue.append(child)
                }
            }
            for (id, n) in s.nodes where n.parent == 0 && id != OverlayFS.rootId {
                s.nodes[id]!.lower = -1
            }
            return out
        }
        update(OverlayFS.rootId, upper: true, lower: upper.exists(upperRoot, OverlayFS.opaqueName) ? -1 : MergedView.root)
        for (id, parent, name) in order {
            guard let p = try? snapshot(parent), p.parent != 0 || parent == OverlayFS.rootId else {
                // Below a node detached in this pass.
                update(id, upper: false, lower: -1)
                continue
            }
            if let r = try? resolve(parent, p, name) {
                update(id, upper: r.upper, lower: r.lower)
            } else {
                detach(id)
            }
        }
    }
}
