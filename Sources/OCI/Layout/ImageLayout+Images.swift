import Basics
/// The descriptors walked from an `index.json` entry down to its target (an image manifest
/// for every command but `tag`), through any
/// nested image indexes (umoci.json's `from_descriptor_path.descriptor_walk`).
public struct DescriptorPath: Sendable, Equatable {
    public var walk: [Descriptor]

    public init(walk: [Descriptor]) {
        precondition(!walk.isEmpty)
        self.walk = walk
    }

    public var root: Descriptor { walk[0] }
    public var manifest: Descriptor { walk[walk.count - 1] }
}

/// An image read from a layout: its manifest and config, both verified.
public struct Image: Sendable {
    public var path: DescriptorPath
    public var manifest: Manifest
    public var config: ImageConfig
}

extension Image {
    /// Adds a layer on top: its descriptor to the manifest, its diff_id to the config, and
    /// the history entry that describes it.
    public mutating func appendLayer(_ layer: Descriptor, diffID: Digest, history: History?) {
        manifest.setLayers(manifest.layers + [layer])
        config.appendDiffID(diffID)
        if let history { config.appendHistory(history) }
    }
}

extension Descriptor {
    /// This descriptor pointing at other content of the same kind; every other field is kept.
    public func withContent(_ other: Descriptor) -> Descriptor {
        var json = self.json
        json["digest"] = .string(other.digest.description)
        json["size"] = .int(other.size)
        return try! Descriptor(json: json)
    }
}

extension ImageLayout {
    static let maximumIndexDepth = 32

    /// Every target reached from the `index.json` entries tagged `tag`: the descriptors that
    /// are not image indexes (manifests, and blobs of types this tool does not parse), each
    /// with the walk through the indexes above it, as umoci resolves a reference.
    public func resolve(tag: String) throws(StoreError) -> [DescriptorPath] {
        var paths: [DescriptorPath] = []
        for root in try readIndex().manifests where root.refName == tag {
            try walk([root], into: &paths)
        }
        return paths
    }

    private func walk(_ prefix: [Descriptor], into paths: inout [DescriptorPath]) throws(StoreError) {
        let last = prefix[prefix.count - 1]
        if MediaType.isIndex(last.mediaType) {
            guard prefix.count < ImageLayout.maximumIndexDepth else {
                throw StoreError(.limit, "image index \(last.digest) nests deeper than \(ImageLayout.maximumIndexDepth) levels")
            }
            let index = try ImageIndex(json: readJSONBlob(last), what: "image index \(last.digest)")
            for child in index.manifests { try walk(prefix + [child], into: &paths) }
        } else {
            paths.append(DescriptorPath(walk: prefix))
        }
    }

    /// The one target tagged `tag`: an error when there is none or more than one.
    public func resolveTarget(tag: String) throws(StoreError) -> DescriptorPath {
        let paths = try resolve(tag: tag)
        guard let first = paths.first else { throw StoreError(.notFound, "image tag \(quoted: tag) not found in \(path)") }
        guard paths.count == 1 else {
            throw StoreError(.invalidInput, "image tag \(quoted: tag) is ambiguous in \(path): it names \(paths.count) manifests")
        }
        return first
    }

    /// The one image manifest tagged `tag`; a tag naming anything else is an error, as in umoci.
    public func resolveImage(tag: String) throws(StoreError) -> DescriptorPath {
        let target = try resolveTarget(tag: tag)
        guard MediaType.isManifest(target.manifest.mediaType) else {
            throw StoreError(.unsupported, "image tag \(quoted: tag) does not name an image manifest: descriptor does not point to ispec.MediaTypeImageManifest: not implemented: \(target.manifest.mediaType)")
        }
        return target
    }

    public func loadImage(_ descriptorPath: DescriptorPath) throws(StoreError) -> Image {
        let manifestDescriptor = descriptorPath.manifest
        let manifest = try Manifest(json: readJSONBlob(manifestDescriptor), digest: manifestDescriptor.digest)
        // An artifact (image-spec 1.1) is no image to edit or unpack; umoci refuses it too.
        guard MediaType.isImageConfig(manifest.config.mediaType) else {
            throw StoreError(.unsupported, "manifest \(manifestDescriptor.digest) is not an image: unknown config blob type: \(manifest.config.mediaType)")
        }
        let config = try ImageConfig(json: readJSONBlob(manifest.config), digest: manifest.config.digest)
        return Image(path: descriptorPath, manifest: manifest, config: config)
    }

    public func loadImage(tag: String) throws(StoreError) -> Image {
        try loadImage(resolveImage(tag: tag))
    }

    /// Writes an edited image: its config, its manifest, every image index on its descriptor
    /// path, and finally `tag` in index.json pointing at the new root. Returns the new path.
    @discardableResult
    public func commit(_ image: Image, tag: String) throws(StoreError) -> DescriptorPath {
        var manifest = image.manifest
        let config = try putJSONBlob(image.config.json, mediaType: manifest.config.mediaType)
        manifest.setConfig(manifest.config.withContent(config))
        let manifestBlob = try putJSONBlob(manifest.json, mediaType: image.path.manifest.mediaType)

        var walk = image.path.walk
        walk[walk.count - 1] = walk[walk.count - 1].withContent(manifestBlob)
        // Rewrite each parent index so it names its rewritten child.
        for level in stride(from: walk.count - 2, through: 0, by: -1) {
            let old = image.path.walk[level]
            let oldChild = image.path.walk[level + 1]
            var index = try ImageIndex(json: readJSONBlob(old), what: "image index \(old.digest)")
            index.setManifests(index.manifests.map { $0.digest == oldChild.digest ? $0.withContent(walk[level + 1]) : $0 })
            walk[level] = old.withContent(try putJSONBlob(index.json, mediaType: old.mediaType))
        }
        let newPath = DescriptorPath(walk: walk)
        try setTag(tag, to: newPath.root)
        return newPath
    }

    /// `umoci new`: an image with no layers and a config for this machine's platform (its
    /// `created` time given), tagged `tag`. Returns the manifest's descriptor.
    public func newImage(tag: String, created: String) throws(StoreError) -> Descriptor {
        let host = Platform.host
        let config = ImageConfig(created: created, architecture: host.architecture, os: host.os)
        let configBlob = try putJSONBlob(config.json, mediaType: MediaType.imageConfig)
        let manifest = Manifest(config: configBlob, layers: [])
        let manifestBlob = try putJSONBlob(manifest.json, mediaType: MediaType.imageManifest)
        try setTag(tag, to: manifestBlob)
        return manifestBlob
    }

    /// Points `tag` at `descriptor`: every index.json entry with that name is removed and the
    /// new one appended, as umoci does.
    public func setTag(_ tag: String, to descriptor: Descriptor) throws(StoreError) {
        try ImageReference.validateTag(tag)
        var index = try readIndex()
        var entries = index.manifests.filter { $0.refName != tag }
        entries.append(descriptor.withRefName(tag))
        index.setManifests(entries)
        try writeIndex(index)
    }

    /// Removes every index.json entry named `tag`. Like umoci, removing a tag that is not
    /// there is not an error; the result says whether anything was removed.
    @discardableResult
    public func removeTag(_ tag: String) throws(StoreError) -> Bool {
        var index = try readIndex()
        let kept = index.manifests.filter { $0.refName != tag }
        guard kept.count != index.manifests.count else { return false }
        index.setManifests(kept)
        try writeIndex(index)
        return true
    }

    /// The tags of index.json, in its order, each once.
    public func tags() throws(StoreError) -> [String] {
        var seen = Set<String>()
        var out: [String] = []
        for d in try readIndex().manifests {
            if let name = d.refName, seen.insert(name).inserted { out.append(name) }
        }
        return out
    }
}
