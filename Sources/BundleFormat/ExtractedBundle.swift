#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive
import LayerView
import UpperFormat
import Extraction
import LayerWriter

/// A bundle in umoci's own format (`unpack --extract`, or made by umoci itself): `rootfs/` a
/// plain directory, and `sha256_<manifest hex>.mtree` describing it as unpacked. Repack
/// compares the rootfs with that manifest, as umoci does, and writes what differs: new and
/// changed paths (a directory without its contents), and a whiteout for each removed path
/// whose parent is still a directory.
///
/// Beside the manifest this tool keeps `umoci-rootfs-stamps.sha256_<hex>`: stat stamps of the
/// files whose digest in the manifest is known to match (see RootfsWalk), so that repack
/// hashes only files that may have changed. A bundle without it (made by umoci) gets umoci's
/// full comparison.
public enum ExtractedBundle {
    public static func manifestPath(_ paths: BundlePaths, _ manifest: Digest) -> String {
        paths.bundle + "/" + manifest.algorithm + "_" + manifest.encoded + ".mtree"
    }

    public static func stampsPath(_ paths: BundlePaths, _ manifest: Digest) -> String {
        paths.bundle + "/umoci-rootfs-stamps." + manifest.algorithm + "_" + manifest.encoded
    }

    /// Extracts `view` into the bundle's rootfs (which must be missing or empty) and records
    /// it: the mtree manifest, the stamps and `umoci.json`. The caller removes what was
    /// created when this throws.
    /// `mapOptions` (mappings, rootless) are applied as umoci does and kept in `umoci.json`.
    public static func create(_ view: MergedView, _ paths: BundlePaths, from: DescriptorPath,
                              mapOptions: MapOptions = MapOptions(), warn: @escaping (String) -> Void = { _ in }) throws(StoreError) {
        try RootfsExtractor.extract(view, to: paths.rootfs, options: mapOptions, warn: warn)
        let walk = try RootfsWalk.walk(rootfs: paths.rootfs)
        let digest = from.manifest.digest
        try Files.writeAtomically(manifestPath(paths, digest), MtreeManifest(entries: walk.entries).serialized(tree: paths.rootfs))
        try walk.stamps.write(stampsPath(paths, digest))
        try BundleMetadata(from: from, mount: nil, mapOptions: mapOptions).write(bundle: paths.bundle)
    }

    /// One difference between the manifest and the rootfs, as go-mtree names them.
    public struct Delta: Sendable, Equatable {
        public enum Kind: Sendable { case modified, extra, missing }
        /// Relative to the rootfs, as bytes.
        public var path: ByteString
        public var kind: Kind
    }

    /// What repack found: the deltas, in umoci's order (paths in byte order), and the rootfs
    /// as walked (the next manifest, for --refresh-bundle).
    public struct Changes {
        public var deltas: [Delta]
        public var walk: RootfsWalk
    }

    /// Compares the rootfs with the manifest of the bundle's base `manifest`, path by path as
    /// bytes. `masks` (paths in the rootfs, as given on the command line) are left out with
    /// everything below them.
    public static func changes(_ paths: BundlePaths, base manifest: Digest, masks: [String]) throws(StoreError) -> Changes {
        let file = manifestPath(paths, manifest)
        guard Files.exists(file) else {
            throw StoreError(.notFound, "\(file) is missing: the bundle's rootfs cannot be compared with its image \(manifest)")
        }
        let mtree = try MtreeManifest.read(file)
        let walk = try RootfsWalk.walk(rootfs: paths.rootfs, known: try UpperBaseline.read(stampsPath(paths, manifest)), manifest: mtree)
        let before = mtree.byPath()
        var seen = Set<ByteString>()
        seen.reserveCapacity(walk.entries.count)
        var deltas: [Delta] = []
        for entry in walk.entries {
            seen.insert(entry.path)
            if let old = before[entry.path] {
                if !mtree.same(old.keywords, entry.keywords) { deltas.append(Delta(path: entry.path, kind: .modified)) }
            } else {
                deltas.append(Delta(path: entry.path, kind: .extra))
            }
        }
        // A whiteout only where the parent is still a directory: a removed directory is one
        // whiteout, not one per path it held (umoci's SimplifyFilter), and a directory replaced
        // by a file or symlink is hidden by that entry alone. (umoci writes whiteouts below the
        // replacement too, which a reader resolving the parent through a new symlink applies
        // to the symlink's target.)
        var directories = Set<ByteString>()
        for entry in walk.entries where entry.isDirectory { directories.insert(entry.path) }
        for entry in mtree.entries where !seen.contains(entry.path) && directories.contains(MtreeManifest.parentPath(entry.path)) {
            deltas.append(Delta(path: entry.path, kind: .missing))
        }
        let maskSet = Set(masks.map { cleanComponents(ByteString($0)) }.filter { !$0.isEmpty })
        deltas.removeAll { isMasked($0.path, maskSet) }
        deltas.sort { $0.path < $1.path }
        return Changes(deltas: deltas, walk: walk)
    }

    /// Whether `path` or a directory above it is one of `masks` (given as components).
    static func isMasked(_ path: ByteString, _ masks: Set<[ByteString]>) -> Bool {
        if masks.isEmpty || path == "." { return false }
        var components = path.split()
        while !components.isEmpty {
            if masks.contains(components) { return true }
            components.removeLast()
        }
        return false
    }

    /// Finds the changes (see `changes`) and writes them through `diff`: each new or changed
    /// path by itself, a whiteout for each missing one.
    public static func addChanges(_ paths: BundlePaths, base manifest: Digest, masks: [String],
                                  to diff: inout DirectoryDiff) throws(DirectoryDiff.Failure) -> Changes {
        let changes: Changes
        do { changes = try self.changes(paths, base: manifest, masks: masks) } catch { throw .store(error) }
        try add(changes, paths, to: &diff)
        return changes
    }

    static func add(_ changes: Changes, _ paths: BundlePaths, to diff: inout DirectoryDiff) throws(DirectoryDiff.Failure) {
        let root: OwnedDescriptor
        do { root = try OwnedDescriptor(opening: paths.rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) } catch { throw .store(error) }
        for delta in changes.deltas {
            if Whiteout.isWhiteout(MtreeManifest.baseName(delta.path)) {
                throw .store(StoreError(.invalidInput, "\(paths.rootfs)/\(delta.path): a name starting with .wh. cannot go into a layer (it would be a whiteout)"))
            }
            switch delta.kind {
            case .missing: try diff.addWhiteout(for: delta.path)
            case .modified, .extra: try diff.addEntry(beneath: root.raw, path: delta.path, display: paths.rootfs)
            }
        }
    }

    /// --refresh-bundle: the rootfs as walked by repack becomes the manifest of the new base
    /// `path`. The new manifest and stamps are written before umoci.json names the new base,
    /// and the old ones are removed after: a crash leaves a bundle consistent with one of them.
    public static func refresh(_ paths: BundlePaths, metadata: inout BundleMetadata, onto path: DescriptorPath,
                               walk: RootfsWalk) throws(StoreError) {
        let old = try metadata.fromDescriptorPath().manifest.digest
        let new = path.manifest.digest
        try Files.writeAtomically(manifestPath(paths, new), MtreeManifest(entries: walk.entries).serialized(tree: paths.rootfs))
        try walk.stamps.write(stampsPath(paths, new))
        metadata.setFromDescriptorPath(path)
        try metadata.write(bundle: paths.bundle)
        if old != new {
            try Files.unlink(manifestPath(paths, old))
            try Files.unlink(stampsPath(paths, old))
        }
    }
}
