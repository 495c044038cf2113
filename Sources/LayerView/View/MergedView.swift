#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive

/// The root filesystem of an image, as its layers' indexes combined in order, exactly as an
/// extraction of the layers one after the other would leave it (umoci's rules):
///
/// - names are cleaned lexically (`./a`, `a//b`, `../x` clamped at the root, `/abs` relative);
/// - the parent of an entry is resolved through symlinks, never leaving the root; missing
///   parents are created as directories (0755, root);
/// - an existing path is replaced unless both old and new are directories (with
///   `keepDirlinks`, a symlink to a directory counts as that directory);
/// - `.wh.NAME` removes NAME and `.wh..wh..opq` the contents of its directory, except what the
///   same layer created, in whatever order the entries come;
/// - a hardlink refers to the inode of its target, which must already exist.
///
/// Nodes are names in the tree (0 is the root), numbered so that a directory's children are a
/// contiguous range sorted by name; inodes are files, shared by hardlinked names. Both numbers
/// are stable for a given image and options. Immutable once built, so any number of threads
/// may look up, list and read at once.
public final class MergedView: Sendable {
    public struct Options: Sendable {
        public var keepDirlinks = false
        /// Bytes of inflated gzip regions kept in memory.
        public var regionCacheBytes = 64 << 20
        public init(keepDirlinks: Bool = false, regionCacheBytes: Int = 64 << 20) {
            self.keepDirlinks = keepDirlinks
            self.regionCacheBytes = regionCacheBytes
        }
    }

    /// A file's metadata, materialized (see `attributes(ofInode:)` for the allocation-free form).
    public struct Inode: Sendable {
        public var type: TarEntryType
        public var mode: UInt32
        public var uid: Int64
        public var gid: Int64
        public var size: Int64
        public var mtime: Int64
        public var mtimeNanoseconds: Int32
        /// A symlink's target.
        public var linkName: ByteString
        public var devMajor: UInt32
        public var devMinor: UInt32
        public var xattrs: [Xattr]
        /// Names in the tree that refer to this inode (directories: 2 + subdirectories).
        public var linkCount: UInt32
        /// A directory no tar entry defines, made for a missing parent.
        public var implicit: Bool
    }

    /// The numeric metadata of an inode, without allocating.
    public struct Attributes: Sendable {
        public var type: TarEntryType
        public var mode: UInt32
        public var uid: Int64
        public var gid: Int64
        public var size: Int64
        public var mtime: Int64
        public var mtimeNanoseconds: Int32
        public var devMajor: UInt32
        public var devMinor: UInt32
        public var linkCount: UInt32
    }

    let storage: ViewStorage
    let readers: [LayerReader]
    /// The inflated gzip regions shared by the readers.
    let regions: RegionCache

    public static let root: Int32 = 0

    /// The names (nodes) of each non-directory inode that has more than one.
    let hardlinkNames: [Int32: [Int32]]

    init(storage: ViewStorage, readers: [LayerReader], regions: RegionCache) {
        self.storage = storage
        self.readers = readers
        self.regions = regions
        var names: [Int32: [Int32]] = [:]
        let directory = TarEntryType.directory.rawValue
        for (node, record) in storage.nodes.enumerated() {
            let inode = storage.inodes[Int(record.inode)]
            if inode.linkCount > 1 && inode.type != directory { names[record.inode, default: []].append(Int32(node)) }
        }
        hardlinkNames = names
    }

    /// The other nodes (names) of the file that `node` names.
    public func otherNames(of node: Int32) -> [Int32] {
        (hardlinkNames[inodeNumber(of: node)] ?? []).filter { $0 != node }
    }

    /// Frees the inflated regions this view keeps and keeps none from now on: for a view that
    /// was replaced and serves only what is still open on it.
    public func dropRegionCache() { regions.disable() }

    // MARK: Tree

    public var nodeCount: Int { storage.nodes.count }
    public var inodeCount: Int { storage.inodes.count }

    public func parent(of node: Int32) -> Int32 { storage.nodes[Int(node)].parent }
    public func inodeNumber(of node: Int32) -> Int32 { storage.nodes[Int(node)].inode }

    public func children(of node: Int32) -> Range<Int32> {
        let n = storage.nodes[Int(node)]
        return n.firstChild..<(n.firstChild + n.childCount)
    }

    public func name(of node: Int32) -> ByteString {
        let n = storage.nodes[Int(node)]
        return storage.bytes(n.nameStart, n.nameLength)
    }

    /// Calls `body` with a node's name bytes, without allocating.
    public func withName<R>(of node: Int32, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        let n = storage.nodes[Int(node)]
        return storage.strings.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[Int(n.nameStart)..<Int(n.nameStart + n.nameLength)])) }
    }

    /// The child of `parent` with this name (binary search, no allocation).
    public func child(_ parent: Int32, named name: UnsafeBufferPointer<UInt8>) -> Int32? {
        let p = storage.nodes[Int(parent)]
        guard p.childCount > 0 else { return nil }
        return storage.strings.withUnsafeBufferPointer { blob -> Int32? in
            var lo = Int(p.firstChild), hi = Int(p.firstChild + p.childCount) - 1
            while lo <= hi {
                let mid = (lo + hi) / 2
                let c = storage.nodes[mid]
                let common = min(Int(c.nameLength), name.count)
                var r: Int32 = 0
                if common > 0 { r = memcmp(blob.baseAddress! + Int(c.nameStart), name.baseAddress!, common) }
                if r == 0 { r = Int(c.nameLength) == name.count ? 0 : (Int(c.nameLength) < name.count ? -1 : 1) }
                if r == 0 { return Int32(mid) }
                if r < 0 { lo = mid + 1 } else { hi = mid - 1 }
            }
            return nil
        }
    }

    public func child(_ parent: Int32, named name: ByteString) -> Int32? {
        name.withBytes { child(parent, named: $0) }
    }

    /// A node by path relative to the root, cleaned, without following symlinks.
    public func lookup(_ path: ByteString) -> Int32? {
        var current = MergedView.root
        for component in cleanComponents(path) {
            guard let next = child(current, named: component) else { return nil }
            current = next
        }
        return current
    }

    /// The path of a node from the root, without a leading '/' ("" for the root).
    public func path(of node: Int32) -> ByteString {
        chain(to: node).map { name(of: $0) }.joined(separator: "/")
    }

    /// The nodes from the root's child down to `node` (empty for the root itself).
    public func chain(to node: Int32) -> [Int32] {
        var nodes: [Int32] = []
        var current = node
        while current != MergedView.root {
            nodes.append(current)
            current = parent(of: current)
        }
        return nodes.reversed()
    }

    // MARK: Inodes

    public func attributes(ofInode number: Int32) -> Attributes {
        let r = storage.inodes[Int(number)]
        return Attributes(type: TarEntryType(rawValue: r.type)!, mode: r.mode, uid: r.uid, gid: r.gid, size: r.size,
                          mtime: r.mtime, mtimeNanoseconds: r.mtimeNanoseconds, devMajor: r.devMajor,
                          devMinor: r.devMinor, linkCount: r.linkCount)
    }

    public func inode(number: Int32) -> Inode {
        let r = storage.inodes[Int(number)]
        var xattrs: [Xattr] = []
        for x in storage.xattrs[Int(r.xattrStart)..<Int(r.xattrStart + r.xattrCount)] {
            xattrs.append(Xattr(name: storage.bytes(x.nameStart, x.nameLength),
                                   value: Array(storage.strings[Int(x.valueStart)..<Int(x.valueStart + x.valueLength)])))
        }
        return Inode(type: TarEntryType(rawValue: r.type)!, mode: r.mode, uid: r.uid, gid: r.gid, size: r.size,
                     mtime: r.mtime, mtimeNanoseconds: r.mtimeNanoseconds,
                     linkName: storage.bytes(r.linkStart, r.linkLength), devMajor: r.devMajor, devMinor: r.devMinor,
                     xattrs: xattrs, linkCount: r.linkCount, implicit: r.implicit != 0)
    }

    public func inode(of node: Int32) -> Inode { inode(number: inodeNumber(of: node)) }

    /// The layer holding a regular file's data (nil: none), to name it when a read fails.
    public func layer(ofInode number: Int32) -> Digest? {
        let layer = Int(storage.inodes[Int(number)].layer)
        return layer >= 0 && layer < readers.count ? readers[layer].digest : nil
    }

    /// Reads a regular file's data from `offset`; returns the count, short only at its end.
    public func read(inode number: Int32, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        let r = storage.inodes[Int(number)]
        guard r.type == TarEntryType.regular.rawValue, r.layer >= 0, offset < r.size, offset >= 0 else { return 0 }
        let count = Int(min(Int64(buffer.count), r.size - offset))
        return try readers[Int(r.layer)].read(
            at: r.dataOffset + offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
    }

    // MARK: Opening

    /// Opens the merged view of an image. With a warm cache this reads the layers' access
    /// points and the stored tree; otherwise the layers are indexed (in parallel), combined,
    /// and the tree stored for next time.
    public static func open(
        layout: ImageLayout, image: Image, cache: IndexCache, options: Options = Options(),
        progress: (@Sendable (Int, Int64) -> Void)? = nil
    ) throws(StoreError) -> MergedView {
        let key = try cache.viewKey(image: image, keepDirlinks: options.keepDirlinks)
        let stored = cache.storedView(key)
        let indexes = try cache.indexes(layout: layout, image: image, entries: stored == nil, progress: progress)
        let storage: ViewStorage
        if let stored {
            storage = stored
        } else {
            var builder = TreeBuilder(keepDirlinks: options.keepDirlinks)
            for (number, index) in indexes.enumerated() {
                for e in index.entries {
                    do {
                        try builder.apply(e, layer: Int32(number))
                    } catch {
                        throw error.wrapped("layer \(index.layer): entry \(quoted: e.entry.name)", subject: "\(index.layer)")
                    }
                }
            }
            storage = builder.finish()
            try cache.storeView(key, storage)
        }
        let regions = RegionCache(capacity: options.regionCacheBytes)
        var readers: [LayerReader] = []
        for (i, index) in indexes.enumerated() {
            readers.append(try LayerReader(number: i, index: index, blobPath: layout.blobPath(index.layer),
                                           zstdCopyPath: cache.zstdCopyPath(index.layer), cache: regions))
        }
        return MergedView(storage: storage, readers: readers, regions: regions)
    }
}
