import BundleKit
import Basics
import OCI
import LayerView
import BundleFormat
import Registry

#if canImport(Glibc)
import Glibc
#endif

/// Where `repack --image` puts the new image: a layout as before, or a registry. A registry
/// image is committed into a temporary layout beside the index cache's blob layout (the
/// base's blobs hard-linked in), then pushed: every layer the repository lacks (HEAD first;
/// a cross-repository mount where the base came from another repository of the same
/// registry), the config, the manifest under the tag. A bundle unpacked from a registry keeps
/// its base in the cache's blob layout (umoci.json's `image_source.layout`): repack into a
/// local layout links or copies the base's blobs from there, so the layout gets a complete
/// image that Debian's umoci and skopeo can read.
struct RepackDestination: RepackTarget {
    /// The layout the new image is committed into.
    let layout: String
    let tag: String
    /// Push afterwards, with these options.
    let registry: (reference: RegistryReference, options: RegistryOptions)?
    /// Where the bundle's base blobs are taken from, when not in `layout` itself: the blob
    /// layout of a registry-based bundle, or for a push, the layout of a mounted one. (A
    /// layout-based bundle repacked into another layout is refused, as umoci does.)
    let baseLayout: String?
    let source: RegistryReference?

    init(_ image: SourceImageOptions, metadata: BundleMetadata) throws {
        let recorded = metadata.json["image_source"]?.object
        source = recorded?["resolved"]?.string.flatMap { try? RegistryReference(parsing: $0) }
        switch try image.location() {
        case .layout(let reference):
            layout = reference.layout
            tag = reference.tag
            registry = nil
            baseLayout = recorded?["layout"]?.string
        case .registry(let reference):
            let baseLayout = recorded?["layout"]?.string ?? metadata.mount?.layout
            self.baseLayout = baseLayout
            guard let tag = reference.tag else {
                throw UsageError("--image \(reference): repack pushes to a tag, not a digest")
            }
            guard let baseLayout else {
                throw StoreError("repack --image \(reference): \(BundleMetadata.fileName) names no layout the bundle's base came from")
            }
            self.tag = tag
            registry = (reference, try image.registryOptions())
            // In the index cache, beside its blob layout: on its file system, so the base's blobs
            // are linked, not copied.
            let cacheDirectory = recorded?["layout"]?.string.map(Files.directoryName) ?? metadata.mount?.cacheDirectory ?? Files.directoryName(baseLayout)
            layout = cacheDirectory + "/push-" + String(getpid())
            try? Files.removeTree(layout)
            _ = try ImageLayout.create(at: layout)
        }
    }

    /// Puts the base's blobs into `layout` when they are not there: hard links from the
    /// layout the bundle's base came from, else copies.
    func provideBase(_ from: DescriptorPath, into layout: ImageLayout) throws {
        guard let baseLayout, Mounting.canonical(baseLayout) != Mounting.canonical(layout.path),
              !layout.hasBlob(from.manifest.digest) else { return }
        try ImageLayout.withLocked(baseLayout, .shared) { source in
            let image = try source.loadImage(from)
            for descriptor in from.walk + [image.manifest.config] + image.manifest.layers {
                let target = layout.blobPath(descriptor.digest)
                if Files.exists(target) { continue }
                try Files.makeDirectories(Files.directoryName(target))
                let origin = source.blobPath(descriptor.digest)
                if linkat(AT_FDCWD, origin, AT_FDCWD, target, AT_SYMLINK_FOLLOW) == 0 || errno == EEXIST { continue }
                try copyBlob(origin, to: target)
            }
        }
    }

    /// After the commit: the new image pushed when the destination is a registry.
    func publish(_ path: DescriptorPath, from layout: ImageLayout) throws {
        guard let (reference, options) = registry else { return }
        do {
            let image = try layout.loadImage(path)
            let client = try RegistryClient(for: reference, options: options)
            // From another repository of the same registry, the registry links base layers.
            let mountFrom = source.flatMap { $0.registry == reference.registry && $0.repository != reference.repository ? $0.repository : nil }
            for blob in image.manifest.layers + [image.manifest.config] {
                let file = layout.blobPath(blob.digest)
                let fd = try Files.open(file, O_RDONLY)
                defer { close(fd) }
                let result = try client.pushBlob(blob, body: .file(descriptor: fd, offset: 0, length: blob.size),
                                                 to: reference.repository, mountFrom: mountFrom)
                Log.info("\(blob.digest): \(result == .existed ? "already in" : result == .mounted ? "mounted into" : "uploaded to") \(reference.registry)/\(reference.repository)")
            }
            let manifest = try layout.readBlob(path.manifest)
            let digest = try client.putManifest(manifest, mediaType: path.manifest.mediaType, to: reference.repository, reference: tag)
            Log.info("pushed \(reference) (\(digest))")
        } catch let error as RegistryError {
            throw StoreError(error.message)
        }
    }

    /// The temporary layout of a push, removed whatever happened.
    func cleanUp() {
        if registry != nil { try? Files.removeTree(layout) }
    }
}

/// A file copied to `target` through a temporary name beside it.
private func copyBlob(_ origin: String, to target: String) throws {
    let input = try Files.open(origin, O_RDONLY)
    defer { close(input) }
    let temporary = Files.temporaryName(prefix: target + ".tmp-")
    let output = try Files.open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
    do {
        defer { close(output) }
        try Files.forEachChunk(of: input, path: origin) { chunk throws(StoreError) in try Files.writeAll(output, chunk, path: temporary) }
        try Files.fsync(output, path: temporary)
    } catch {
        unlink(temporary)
        throw error
    }
    try Files.rename(temporary, target)
}
