import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI

/// Layer indexes on disk, keyed by layer digest and shared by every image and bundle that uses
/// the layer (docs/formats.md):
///
///     <dir>/index/<alg>/<hex>         the index (versioned, checksummed; rebuilt when not valid)
///     <dir>/zstd/<alg>/<hex>          decompressed copy of a zstd layer
///     <dir>/verified/<key>            which blob file was last verified against that digest
///     <dir>/view/<key>                the merged tree of a list of layers (see ViewStorage)
///     <dir>/layout/                   an OCI layout of the blobs of mounted images (keepBlobs)
///
/// Every file is written to a temporary name and renamed, so a crash never leaves a partial one.
/// An index is only ever written after its blob's digest, size and diff_id were verified. A
/// later use of the same blob file (same device, inode, size, mtime and ctime) trusts that
/// verification; any other blob file with the digest is hashed again before it is used.
public struct IndexCache: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// `UMOCI_CACHE_DIR`, else `$XDG_CACHE_HOME/umoci`, else `~/.cache/umoci`.
    public static func defaultDirectory(environment: [String: String]) -> String {
        if let dir = environment["UMOCI_CACHE_DIR"], !dir.isEmpty { return dir }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/umoci" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/root"
        return home + "/.cache/umoci"
    }

    /// The cache at `directory`, created with its parents. Where that cannot be created or
    /// written (a HOME that does not exist or is read-only), a private cache in the temporary
    /// directory instead, after one line to `warn` saying why.
    public static func usable(directory: String, environment: [String: String], warn: (String) -> Void) -> IndexCache {
        let reason: String
        do throws(StoreError) {
            try Files.makeDirectories(directory)
            if access(directory, W_OK | X_OK) == 0 { return IndexCache(directory: directory) }
            reason = "\(directory) is not writable: \(String(cString: strerror(errno)))"
        } catch {
            reason = error.message
        }
        let fallback = privateTemporaryDirectory(environment: environment)
        warn("cannot use the index cache at \(directory) (\(reason)); using \(fallback)")
        return IndexCache(directory: fallback)
    }

    /// `$TMPDIR/umoci-cache-UID` when it is (or can be made) a directory only this user can
    /// use, else a new directory from mkdtemp.
    static func privateTemporaryDirectory(environment: [String: String]) -> String {
        let tmp = environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let shared = "\(tmp)/umoci-cache-\(getuid())"
        _ = mkdir(shared, 0o700)
        var st = stat()
        if lstat(shared, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == getuid(), st.st_mode & 0o077 == 0,
           access(shared, W_OK | X_OK) == 0 {
            return shared
        }
        var template = Array("\(tmp)/umoci-cache-XXXXXX".utf8CString)
        if let made = mkdtemp(&template) { return String(cString: made) }
        return shared
    }

    public func indexPath(_ layer: Digest) -> String { "\(directory)/index/\(layer.algorithm)/\(layer.encoded)" }
    public func zstdCopyPath(_ layer: Digest) -> String { "\(directory)/zstd/\(layer.algorithm)/\(layer.encoded)" }

    /// The cached index of a layer, when there is a valid one for this digest and diff_id.
    public func cached(_ layer: Descriptor, diffID: Digest, entries: Bool = true) -> LayerIndex? {
        guard let bytes = try? Files.read(indexPath(layer.digest)),
              let index = LayerIndex.decode(bytes, entries: entries),
              index.layer == layer.digest, index.diffID == diffID, index.compressedSize == layer.size else { return nil }
        if index.compression == .zstd {
            var st = stat()
            guard stat(zstdCopyPath(layer.digest), &st) == 0, Int64(st.st_size) == index.uncompressedSize else { return nil }
        }
        return index
    }

    /// The index of one layer of `layout`: from the cache when valid, else built and stored.
    public func index(
        layout: ImageLayout, layer: Descriptor, diffID: Digest, entries: Bool = true, progress: ((Int64) -> Void)? = nil
    ) throws(StoreError) -> LayerIndex {
        let blob = layout.blobPath(layer.digest)
        if let index = cached(layer, diffID: diffID, entries: entries) {
            try verifyBlob(blob, layer)
            return index
        }
        let pending = try pendingIndex(layer)
        defer { pending.discard() }
        let index = try LayerIndexer.build(blobPath: blob, layer: layer, diffID: diffID, zstdCopy: pending.zstdCopy, progress: progress)
        try pending.store(index, blob: blob)
        return index
    }

    /// Where a layer's index goes while it is being built: the temporary decompressed copy of a
    /// zstd layer, then `store` puts the copy and the index in place and records the blob file
    /// as verified. Built from a file (`index(layout:...)`) or from a download as it arrives.
    /// One owner at a time; `discard` (after `store` a no-op) removes what was not stored.
    public final class PendingIndex {
        let cache: IndexCache
        let layer: Digest
        private var zstdTemp: (fd: Int32, path: String)?

        /// For zstd layers, the file that receives the decompressed stream.
        public var zstdCopy: Int32? { zstdTemp?.fd }

        init(cache: IndexCache, layer: Descriptor) throws(StoreError) {
            self.cache = cache
            self.layer = layer.digest
            try cache.makeDirectories(for: layer.digest)
            if (try? LayerCompression(mediaType: layer.mediaType)) == .zstd {
                let path = Files.directoryName(cache.zstdCopyPath(layer.digest)) + "/" + Files.temporaryName(prefix: ".tmp-")
                zstdTemp = (try Files.open(path, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644), path)
            }
        }

        deinit { discard() }

        /// Stores `index`, built from the bytes of the blob file `blob` (verified: its digest,
        /// size and diff_id checked), so that a later open finds it.
        public func store(_ index: LayerIndex, blob: String) throws(StoreError) {
            if let zstdTemp {
                try Files.fsync(zstdTemp.fd, path: zstdTemp.path)
                try Files.rename(zstdTemp.path, cache.zstdCopyPath(layer))
                close(zstdTemp.fd)
                self.zstdTemp = nil
            }
            try Files.writeAtomically(cache.indexPath(layer), index.encoded())
            try cache.recordVerified(blob, layer)
        }

        public func discard() {
            if let zstdTemp {
                close(zstdTemp.fd)
                unlink(zstdTemp.path)
                self.zstdTemp = nil
            }
        }
    }

    public func pendingIndex(_ layer: Descriptor) throws(StoreError) -> PendingIndex {
        try PendingIndex(cache: self, layer: layer)
    }

    /// The indexes of all layers of an image, built in parallel (as many at once as there are
    /// cores) where the cache has none. Without `entries`, cached indexes are read without
    /// their entries. `progress(layer, bytesDone)` may be called from several threads at once.
    public func indexes(
        layout: ImageLayout, image: Image, entries: Bool = true, progress: (@Sendable (Int, Int64) -> Void)? = nil
    ) throws(StoreError) -> [LayerIndex] {
        let layers = image.manifest.layers
        let diffIDs = image.config.diffIDs
        guard layers.count == diffIDs.count else {
            throw StoreError(.corrupt, "image \(image.path.manifest.digest): manifest has \(layers.count) layers but config has \(diffIDs.count) diff_ids")
        }
        var expected: [Digest] = []
        for (i, text) in diffIDs.enumerated() {
            do {
                expected.append(try Digest(parsing: text))
            } catch {
                throw error.wrapped("config \(image.manifest.config.digest): diff_id \(i)", subject: "\(image.manifest.config.digest)")
            }
        }
        let results = Mutex<[Result<LayerIndex, StoreError>?]>(Array(repeating: nil, count: layers.count))
        let cache = self
        let diffs = expected
        // Largest first: the big layer's index is the critical path, the small ones fill in.
        let order = layers.indices.sorted { layers[$0].size > layers[$1].size }
        DispatchQueue.concurrentPerform(iterations: layers.count) { n in
            let i = order[n]
            let r: Result<LayerIndex, StoreError>
            do throws(StoreError) {
                r = .success(try cache.index(layout: layout, layer: layers[i], diffID: diffs[i], entries: entries,
                                             progress: progress.map { p in { p(i, $0) } }))
            } catch {
                r = .failure(error)
            }
            results.withLock { $0[i] = r }
        }
        return try results.withLock { (all) throws(StoreError) -> [LayerIndex] in
            try all.map { (r) throws(StoreError) -> LayerIndex in try r!.get() }
        }
    }

    // MARK: Merged trees

    /// Names the merged tree of an image's layers under given options.
    func viewKey(image: Image, keepDirlinks: Bool) throws(StoreError) -> String {
        var text = "umoci merged view \(ViewStorage.version)\nkeep-dirlinks \(keepDirlinks)\n"
        for (layer, diffID) in zip(image.manifest.layers, image.config.diffIDs) { text += "\(layer.digest) \(diffID)\n" }
        return try DigestHasher.digest(of: Array(text.utf8)).encoded
    }

    /// Whether opening this image's view will find everything in the cache (a cheap check of
    /// which files exist; opening still verifies them).
    public func isWarm(image: Image, keepDirlinks: Bool) -> Bool {
        guard let key = try? viewKey(image: image, keepDirlinks: keepDirlinks),
              Files.exists("\(directory)/view/\(key)") else { return false }
        return image.manifest.layers.allSatisfy { Files.exists(indexPath($0.digest)) }
    }

    func storedView(_ key: String) -> ViewStorage? {
        (try? Files.read("\(directory)/view/\(key)")).flatMap(ViewStorage.decode)
    }

    func storeView(_ key: String, _ storage: ViewStorage) throws(StoreError) {
        try Files.makeDirectories(directory)
        try Files.makeDirectory(directory + "/view")
        try Files.writeAtomically("\(directory)/view/\(key)", storage.encoded())
    }

    fileprivate func makeDirectories(for digest: Digest) throws(StoreError) {
        try Files.makeDirectories(directory)
        for sub in ["/index", "/index/\(digest.algorithm)", "/zstd", "/zstd/\(digest.algorithm)", "/verified"] {
            try Files.makeDirectory(directory + sub)
        }
    }

    // MARK: Blobs of mounted images

    /// An OCI image layout without tags that holds the blobs of the images mounted with this
    /// cache: hard links to the blobs of their layouts, so that a bundle can be mounted again
    /// after its layout was deleted or garbage-collected (see keepBlobs).
    public var blobLayoutPath: String { directory + "/layout" }

    /// The blob layout, made on first use.
    func blobLayout() throws(StoreError) -> ImageLayout {
        if let layout = try? ImageLayout(opening: blobLayoutPath) { return layout }
        try Files.makeDirectories(directory)
        do {
            return try ImageLayout.create(at: blobLayoutPath)
        } catch {
            // Made by another process meanwhile.
            if let layout = try? ImageLayout(opening: blobLayoutPath) { return layout }
            throw error
        }
    }

    /// Keeps `image`'s manifest, config and layers from `layout` in the blob layout: hard links
    /// where both are on one file system; elsewhere copies of the manifest and config only
    /// (layers are too big to copy on every unpack; mounting again without the layout then
    /// names the missing layer). A layer verified before keeps counting as verified (the link
    /// changes its ctime, which is part of the stamp).
    public func keepBlobs(of image: Image, from layout: ImageLayout) throws(StoreError) {
        let kept = try blobLayout()
        let small = [image.path.manifest, image.manifest.config]
        for descriptor in small + image.manifest.layers {
            let source = layout.blobPath(descriptor.digest), target = kept.blobPath(descriptor.digest)
            if Files.exists(target) { continue }
            try Files.makeDirectories(Files.directoryName(target))
            let verified = isRecordedVerified(source, descriptor.digest)
            // AT_SYMLINK_FOLLOW: a blob that is a symlink (blobs shared that way) is linked
            // as the file it names.
            if linkat(AT_FDCWD, source, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0 {
                if verified { try recordVerified(source, descriptor.digest) }
                continue
            }
            if errno == EEXIST { continue }
            guard errno == EXDEV || errno == EPERM || errno == EMLINK else { throw .system("link", "\(source) to \(target)") }
            if small.contains(where: { $0.digest == descriptor.digest }) {
                try Files.writeAtomically(target, try layout.readBlob(descriptor))
            }
        }
    }

    // MARK: Which blob files were verified

    private func stamp(_ blob: String, _ digest: Digest) -> (key: String, value: [UInt8])? {
        var st = stat()
        guard stat(blob, &st) == 0 else { return nil }
        let value = "\(st.st_dev) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec) \(digest)\n"
        let key = (try? DigestHasher.digest(of: Array("\(st.st_dev):\(st.st_ino)".utf8)))?.encoded ?? "unknown"
        return (key, Array(value.utf8))
    }

    fileprivate func recordVerified(_ blob: String, _ digest: Digest) throws(StoreError) {
        guard let s = stamp(blob, digest) else { return }
        try Files.makeDirectories(directory + "/verified")
        try Files.writeAtomically(directory + "/verified/" + s.key, s.value)
    }

    private func isRecordedVerified(_ blob: String, _ digest: Digest) -> Bool {
        guard let s = stamp(blob, digest), let recorded = try? Files.read(directory + "/verified/" + s.key) else { return false }
        return recorded == s.value
    }

    /// A cached index is used only with a blob that was verified: the same file as last time,
    /// unchanged, or else one whose content hashes to the digest now.
    private func verifyBlob(_ blob: String, _ layer: Descriptor) throws(StoreError) {
        guard let s = stamp(blob, layer.digest) else {
            throw StoreError(.notFound, "blob \(layer.digest) is missing from the image layout (\(blob))")
        }
        if let recorded = try? Files.read(directory + "/verified/" + s.key), recorded == s.value { return }
        let fd = try OwnedDescriptor(opening: blob, O_RDONLY)
        let hasher = try DigestHasher(algorithm: layer.digest.isVerifiable ? layer.digest.algorithm : Digest.sha256)
        var total: Int64 = 0
        try Files.forEachChunk(of: fd.raw, path: blob) { chunk in
            hasher.update(chunk)
            total += Int64(chunk.count)
        }
        guard total == layer.size else {
            throw StoreError(.corrupt, "layer \(layer.digest): verified reader size mismatch: descriptor says \(layer.size) bytes, blob has \(total)")
        }
        if layer.digest.isVerifiable {
            let actual = hasher.finalize()
            guard actual == layer.digest else {
                throw StoreError(.corrupt, "layer \(layer.digest): verified reader digest mismatch: blob content hashes to \(actual)")
            }
        }
        try recordVerified(blob, layer.digest)
    }
}
