import Basics
/// What `umoci stat` reports about one image manifest (umoci 0.6's `ManifestStat`, utils.go):
/// the manifest, its config when the config blob is JSON, and the history when the config is
/// an image config. Artifacts (image-spec 1.1: an empty or foreign config, no layers) are
/// reported as far as they go instead of refused.
public struct ImageStat: Sendable {
    public struct ConfigStat: Sendable {
        public var descriptor: Descriptor
        /// The config blob as JSON.
        public var blob: JSON
        /// The image config, when the config's media type is an image config.
        public var image: ImageConfig?
    }

    /// One history entry and the layer it created (none for an `empty_layer` entry).
    public struct HistoryRow: Sendable {
        public var layer: Descriptor?
        public var diffID: String
        public var entry: History

        /// `{"layer","diff_id","created","created_by","author","comment","empty_layer"}`, the
        /// last three omitted when empty, as umoci writes them.
        public var json: JSON {
            var o = JSONObject()
            o["layer"] = layer.map { .object($0.json) } ?? .null
            o["diff_id"] = .string(diffID)
            o["created"] = .string(entry.created)
            o["created_by"] = .string(entry.createdBy)
            if !entry.author.isEmpty { o["author"] = .string(entry.author) }
            if !entry.comment.isEmpty { o["comment"] = .string(entry.comment) }
            if entry.emptyLayer { o["empty_layer"] = .bool(true) }
            return .object(o)
        }
    }

    /// The manifest's descriptor as the walk from index.json reached it (with its annotations).
    public var descriptor: Descriptor
    public var manifest: Manifest
    public var config: ConfigStat?
    /// nil when the config is not an image config.
    public var history: [HistoryRow]?

    /// Pairs history entries with layers: each entry that is not `empty_layer` takes the next
    /// layer of the manifest (and diff_id of the config).
    static func history(manifest: Manifest, config: ImageConfig) -> [HistoryRow] {
        let layers = manifest.layers
        let diffIDs = config.diffIDs
        var rows: [HistoryRow] = []
        var next = 0
        for entry in config.history {
            if entry.emptyLayer || next >= layers.count {
                rows.append(HistoryRow(layer: nil, diffID: "", entry: entry))
            } else {
                rows.append(HistoryRow(layer: layers[next], diffID: next < diffIDs.count ? diffIDs[next] : "", entry: entry))
                next += 1
            }
        }
        return rows
    }

    /// `{"manifest":{"descriptor","blob"},"config":{"descriptor","blob"},"history":[...]}`;
    /// `config` and `history` are left out when there is nothing to say (umoci 0.6's omitzero).
    public var json: JSON {
        var out = JSONObject()
        out["manifest"] = .object(JSONObject([
            "descriptor": .object(descriptor.json), "blob": .object(manifest.json),
        ]))
        if let config {
            out["config"] = .object(JSONObject(["descriptor": .object(config.descriptor.json), "blob": config.blob]))
        }
        if let history { out["history"] = .array(history.map(\.json)) }
        return .object(out)
    }
}

extension ImageStat {
    /// Whether umoci 0.6 keeps the raw bytes of a config that is not an image config (and so
    /// prints `== CONFIG ==` and `"config"` for it): only when its media type is one umoci
    /// parses (the empty JSON, a descriptor, an index or a manifest) or the descriptor embeds
    /// its data. A foreign media type (`application/vnd.example.config+json`) gets neither.
    static func keepsRawConfig(_ config: Descriptor) -> Bool {
        [MediaType.empty, MediaType.imageIndex, MediaType.imageManifest, "application/vnd.oci.descriptor.v1+json"]
            .contains(config.mediaType) || config.json["data"].map { !$0.isNull } == true
    }
}

extension ImageLayout {
    /// The stat of the manifest at the end of `path`. The manifest and config blobs are
    /// verified; a config blob that is not JSON, or of a media type umoci does not parse (an
    /// artifact's), is verified and left out.
    public func statImage(_ path: DescriptorPath) throws(StoreError) -> ImageStat {
        let descriptor = path.manifest
        let manifest = try Manifest(json: readJSONBlob(descriptor), digest: descriptor.digest)
        let bytes = try readBlob(manifest.config)
        var stat = ImageStat(descriptor: descriptor, manifest: manifest, config: nil, history: nil)
        if MediaType.isImageConfig(manifest.config.mediaType) {
            let json: JSON
            do {
                json = try JSON.parse(bytes)
            } catch {
                throw StoreError(.corrupt, "blob \(manifest.config.digest): \(error)")
            }
            let image = try ImageConfig(json: json, digest: manifest.config.digest)
            stat.config = ImageStat.ConfigStat(descriptor: manifest.config, blob: json, image: image)
            stat.history = ImageStat.history(manifest: manifest, config: image)
        } else if ImageStat.keepsRawConfig(manifest.config), let json = try? JSON.parse(bytes) {
            stat.config = ImageStat.ConfigStat(descriptor: manifest.config, blob: json, image: nil)
        }
        return stat
    }
}
