#if canImport(Glibc)
import Glibc
#endif
import Basics
import Archive

/// The mutable tree while layers are applied; see MergedView for the rules.
struct TreeBuilder {
    struct BuildNode {
        var name: ByteString
        var parent: Int32
        var inode: Int32
        var children: [ByteString: Int32]
        var alive = true
        /// The last layer that created this node or something below it.
        var touched: Int32
    }

    /// An inode while building: its entry, or nothing for a directory made for a missing parent.
    struct BuildInode {
        var entry: TarEntry?
        var layer: Int32
        var dataOffset: Int64
        var type: TarEntryType { entry?.type ?? .directory }
    }

    let keepDirlinks: Bool
    var nodes: [BuildNode] = []
    var inodes: [BuildInode] = []

    static let maxSymlinks = 255

    init(keepDirlinks: Bool) {
        self.keepDirlinks = keepDirlinks
        inodes.append(BuildInode(entry: nil, layer: -1, dataOffset: 0))
        nodes.append(BuildNode(name: "", parent: 0, inode: 0, children: [:], touched: -1))
    }

    func type(_ node: Int32) -> TarEntryType { inodes[Int(nodes[Int(node)].inode)].type }

    /// Resolves a cleaned path, following symlinks in every component but the last (and in
    /// the last too when `followLast`), never leaving the root. Missing directories are made
    /// when `create`; otherwise nil is returned for a missing component.
    mutating func resolve(_ components: [ByteString], followLast: Bool, create: Bool, layer: Int32) throws(StoreError) -> Int32? {
        var pending = Array(components.reversed())
        var current: Int32 = 0
        var links = 0
        while let name = pending.popLast() {
            if name == ".." {
                current = nodes[Int(current)].parent
                continue
            }
            if name == "." { continue }
            let isLast = pending.isEmpty
            guard let next = nodes[Int(current)].children[name] else {
                guard create else { return nil }
                current = makeNode(name, in: current, inode: implicitDirectory(), layer: layer)
                continue
            }
            if type(next) == .symlink && (!isLast || followLast) {
                links += 1
                guard links <= TreeBuilder.maxSymlinks else { throw StoreError(.limit, "too many levels of symbolic links") }
                let target = inodes[Int(nodes[Int(next)].inode)].entry?.linkName ?? ByteString()
                if target.first == UInt8(ascii: "/") { current = 0 }
                pending.append(contentsOf: target.split().reversed())
                continue
            }
            if !isLast && type(next) != .directory {
                throw StoreError(.invalidInput, "\(quoted: name) is not a directory")
            }
            current = next
        }
        return current
    }

    mutating func implicitDirectory() -> Int32 {
        inodes.append(BuildInode(entry: nil, layer: -1, dataOffset: 0))
        return Int32(inodes.count - 1)
    }

    mutating func makeNode(_ name: ByteString, in parent: Int32, inode: Int32, layer: Int32) -> Int32 {
        let id = Int32(nodes.count)
        nodes.append(BuildNode(name: name, parent: parent, inode: inode, children: [:], touched: layer))
        nodes[Int(parent)].children[name] = id
        return id
    }

    /// Marks a node and its ancestors as touched by `layer`, so this layer's whiteouts spare them.
    mutating func touch(_ node: Int32, layer: Int32) {
        var current = node
        while true {
            nodes[Int(current)].touched = layer
            if current == 0 { return }
            current = nodes[Int(current)].parent
        }
    }

    mutating func remove(_ node: Int32) {
        let parent = nodes[Int(node)].parent
        nodes[Int(parent)].children[nodes[Int(node)].name] = nil
        markDead(node)
    }

    mutating func markDead(_ node: Int32) {
        var stack = [node]
        while let n = stack.popLast() {
            nodes[Int(n)].alive = false
            stack.append(contentsOf: nodes[Int(n)].children.values)
        }
    }

    /// Removes what a whiteout hides: everything under `node` not touched by this layer.
    mutating func prune(_ node: Int32, layer: Int32) {
        if nodes[Int(node)].touched != layer {
            remove(node)
            return
        }
        for child in Array(nodes[Int(node)].children.values) { prune(child, layer: layer) }
    }

    /// Linux's limits on what an entry carries: a symlink target (PATH_MAX with its NUL), an
    /// xattr name and value (XATTR_NAME_MAX, XATTR_SIZE_MAX). An image beyond them cannot be
    /// extracted (`raw unpack` fails), so neither is it mounted.
    static let maxLinkTarget = Int(PATH_MAX) - 1
    static let maxXattrName = 255
    static let maxXattrValue = 65536

    static func checkLimits(_ entry: TarEntry) throws(StoreError) {
        if entry.type == .symlink && entry.linkName.count > maxLinkTarget {
            throw StoreError(.limit, "symlink target of \(entry.linkName.count) bytes (Linux allows \(maxLinkTarget))")
        }
        for x in entry.xattrs {
            if x.name.count > maxXattrName { throw StoreError(.limit, "xattr name of \(x.name.count) bytes (Linux allows \(maxXattrName))") }
            if x.value.count > maxXattrValue {
                throw StoreError(.limit, "xattr \(x.name) of \(x.value.count) bytes (Linux allows \(maxXattrValue))")
            }
        }
    }

    mutating func apply(_ indexed: LayerIndex.Entry, layer: Int32) throws(StoreError) {
        let entry = indexed.entry
        try TreeBuilder.checkLimits(entry)
        var components = cleanComponents(entry.name)
        guard let base = components.popLast() else {
            // The root itself: only a directory entry means something here.
            if entry.type == .directory { setMetadata(of: 0, from: indexed, layer: layer) }
            return
        }
        // Below a directory named like a whiteout (".wh.x/file"): such a name cannot be
        // shown (it is the upper directory's and the layer format's marker), so neither can
        // what it holds.
        if components.contains(where: { $0.hasPrefix(Whiteout.prefix) }) { return }
        if base.hasPrefix(Whiteout.prefix) {
            guard let parent = try resolve(components, followLast: true, create: false, layer: layer),
                  type(parent) == .directory else { return }
            if base == Whiteout.opaqueMarker {
                for child in Array(nodes[Int(parent)].children.values) { prune(child, layer: layer) }
            } else {
                let hidden = base.dropFirst(Whiteout.prefix.count)
                if let target = nodes[Int(parent)].children[hidden] { prune(target, layer: layer) }
            }
            return
        }
        guard let parent = try resolve(components, followLast: true, create: true, layer: layer) else { return }
        guard type(parent) == .directory else { throw StoreError(.invalidInput, "parent is not a directory") }

        if let existing = nodes[Int(parent)].children[base] {
            if entry.type == .directory {
                if type(existing) == .directory {
                    setMetadata(of: existing, from: indexed, layer: layer)
                    touch(existing, layer: layer)
                    return
                }
                // A symlink that does not lead to a directory (dangling, or a loop) is replaced
                // by the directory, as umoci does.
                if keepDirlinks, type(existing) == .symlink,
                   let target = (try? resolve(components + [base], followLast: true, create: false, layer: layer)) ?? nil,
                   type(target) == .directory {
                    setMetadata(of: target, from: indexed, layer: layer)
                    touch(existing, layer: layer)
                    return
                }
            }
            if entry.type == .hardlink, try hardlinkTarget(entry) == existing {
                // A link to itself: nothing changes.
                touch(existing, layer: layer)
                return
            }
            remove(existing)
        }

        let inode: Int32
        if entry.type == .hardlink {
            guard let target = try hardlinkTarget(entry) else {
                throw StoreError(.invalidInput, "hardlink target \(quoted: entry.linkName) does not exist")
            }
            guard type(target) != .directory else { throw StoreError(.invalidInput, "hardlink target \(quoted: entry.linkName) is a directory") }
            inode = nodes[Int(target)].inode
        } else {
            inode = Int32(inodes.count)
            inodes.append(BuildInode(entry: nil, layer: -1, dataOffset: 0))
        }
        let node = makeNode(base, in: parent, inode: inode, layer: layer)
        if entry.type != .hardlink { setMetadata(of: node, from: indexed, layer: layer) }
        touch(node, layer: layer)
    }

    mutating func hardlinkTarget(_ entry: TarEntry) throws(StoreError) -> Int32? {
        let target = cleanComponents(entry.linkName)
        guard !target.isEmpty else { return nil }
        return try resolve(target, followLast: false, create: false, layer: -2)
    }

    mutating func setMetadata(of node: Int32, from indexed: LayerIndex.Entry, layer: Int32) {
        let i = Int(nodes[Int(node)].inode)
        inodes[i] = BuildInode(entry: indexed.entry, layer: indexed.entry.type == .regular ? layer : -1,
                               dataOffset: indexed.dataOffset)
    }

    /// The final tree as flat storage: live nodes only, numbered breadth-first with the root at
    /// 0 so that each directory's children are consecutive and sorted by name; inodes numbered
    /// in order of first appearance, with link counts.
    consuming func finish() -> ViewStorage {
        var out = ViewStorage()
        out.nodes.reserveCapacity(nodes.count)
        var inodeMap = [Int32](repeating: -1, count: inodes.count)
        var oldInodeOf: [Int32] = []

        // Breadth-first: (old node, new parent).
        var queue: [(old: Int32, parent: Int32)] = [(0, 0)]
        var head = 0
        while head < queue.count {
            let (old, parent) = queue[head]
            head += 1
            let b = nodes[Int(old)]
            let id = Int32(out.nodes.count)
            var inode = inodeMap[Int(b.inode)]
            if inode < 0 {
                inode = Int32(oldInodeOf.count)
                inodeMap[Int(b.inode)] = inode
                oldInodeOf.append(b.inode)
            }
            let (nameStart, nameLength) = out.intern(b.name)
            let children = b.children.sorted { $0.key < $1.key }
            out.nodes.append(ViewStorage.NodeRecord(
                nameStart: nameStart, nameLength: nameLength, parent: old == 0 ? 0 : parent, inode: inode,
                firstChild: Int32(queue.count), childCount: Int32(children.count)))
            for (_, child) in children { queue.append((child, id)) }
        }

        var linkCounts = [UInt32](repeating: 0, count: oldInodeOf.count)
        for node in out.nodes {
            if inodes[Int(oldInodeOf[Int(node.inode)])].type == .directory {
                var subdirectories: UInt32 = 0
                for c in node.firstChild..<(node.firstChild + node.childCount)
                where inodes[Int(oldInodeOf[Int(out.nodes[Int(c)].inode)])].type == .directory {
                    subdirectories += 1
                }
                linkCounts[Int(node.inode)] = 2 + subdirectories
            } else {
                linkCounts[Int(node.inode)] += 1
            }
        }

        out.inodes.reserveCapacity(oldInodeOf.count)
        for (n, old) in oldInodeOf.enumerated() {
            let b = inodes[Int(old)]
            guard let e = b.entry else {
                out.inodes.append(ViewStorage.InodeRecord(
                    type: TarEntryType.directory.rawValue, implicit: 1, mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0,
                    mtimeNanoseconds: 0, devMajor: 0, devMinor: 0, layer: -1, dataOffset: 0, linkCount: linkCounts[n],
                    linkStart: 0, linkLength: 0, xattrStart: 0, xattrCount: 0))
                continue
            }
            let (linkStart, linkLength) = e.type == .symlink ? out.intern(e.linkName) : (0, 0)
            let xattrStart = UInt32(out.xattrs.count)
            // An empty PAX value deletes a key, so umoci (Go) sets no xattr for it.
            for x in e.xattrs where !x.value.isEmpty {
                let (ns, nl) = out.intern(x.name)
                let (vs, vl) = out.intern(x.value)
                out.xattrs.append(ViewStorage.XattrRecord(nameStart: ns, nameLength: nl, valueStart: vs, valueLength: vl))
            }
            out.inodes.append(ViewStorage.InodeRecord(
                type: e.type.rawValue, implicit: 0, mode: e.mode & 0o7777, uid: e.uid, gid: e.gid,
                size: e.type == .regular ? e.size : 0, mtime: e.mtime, mtimeNanoseconds: e.mtimeNanoseconds,
                devMajor: e.devMajor, devMinor: e.devMinor, layer: b.layer, dataOffset: b.dataOffset,
                linkCount: linkCounts[n], linkStart: linkStart, linkLength: linkLength,
                xattrStart: xattrStart, xattrCount: UInt32(out.xattrs.count) - xattrStart))
        }
        return out
    }
}
