#if canImport(Glibc)
import Glibc
#endif
import Basics

extension ImageLayout {
    /// Every blob reachable from index.json: manifests, their configs and layers (and subject),
    /// and the children of image indexes, as umoci's walk follows every descriptor of a
    /// manifest. Content embedded in a descriptor (image-spec 1.1 `data`) is verified instead
    /// of looked up; a blob file of the same digest is kept. A reachable blob that is missing or corrupt is an
    /// error, so that nothing is deleted on the strength of a graph that could not be read.
    public func reachableBlobs() throws(StoreError) -> Set<Digest> {
        var marked = Set<Digest>()
        var pending = try readIndex().manifests
        while let d = pending.popLast() {
            guard marked.insert(d.digest).inserted else { continue }
            if MediaType.isManifest(d.mediaType) {
                let manifest = try Manifest(json: readJSONBlob(d), digest: d.digest)
                pending.append(manifest.config)
                pending.append(contentsOf: manifest.layers)
                if let subject = manifest.subject { pending.append(subject) }
            } else if MediaType.isIndex(d.mediaType) {
                let index = try ImageIndex(json: readJSONBlob(d), what: "image index \(d.digest)")
                pending.append(contentsOf: index.manifests)
                if let subject = index.json["subject"], !subject.isNull {
                    pending.append(try Descriptor(json: subject, what: "subject of image index \(d.digest)"))
                }
            } else if try d.embeddedData() != nil {
                _ = try readBlob(d)  // verified; it needs no blob file
            } else if !hasBlob(d.digest) {
                throw StoreError(.notFound, "blob \(d.digest) is missing from the image layout (\(blobPath(d.digest)))")
            }
        }
        return marked
    }

    /// Deletes every blob not reachable from index.json and this tool's stale temporary files.
    /// Call with the exclusive lock held: then no temporary file belongs to a live writer.
    /// Returns what was removed, as paths relative to the layout.
    @discardableResult
    public func garbageCollect() throws(StoreError) -> [String] {
        let keep = try reachableBlobs()
        var removed: [String] = []
        for name in try Files.list(path) where name.hasPrefix(ImageLayout.temporaryPrefix) {
            try Files.unlink(path + "/" + name)
            removed.append(name)
        }
        let blobs = path + "/blobs"
        for algorithm in try Files.list(blobs) where Files.isDirectory(blobs + "/" + algorithm) {
            let directory = blobs + "/" + algorithm
            var changed = false
            for name in try Files.list(directory) {
                if let digest = try? Digest(parsing: algorithm + ":" + name), keep.contains(digest) { continue }
                // Only regular files: a stray directory is not ours to judge.
                var st = stat()
                guard lstat(directory + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
                try Files.unlink(directory + "/" + name)
                removed.append("blobs/\(algorithm)/\(name)")
                changed = true
            }
            if changed { try Files.fsyncDirectory(directory) }
        }
        return removed
    }
}
