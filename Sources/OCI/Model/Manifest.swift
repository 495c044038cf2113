import Basics
/// An image manifest (image-spec/manifest.md), OCI or Docker schema 2, as a view over its JSON.
public struct Manifest: Sendable, Equatable {
    public private(set) var json: JSONObject
    public private(set) var config: Descriptor
    public private(set) var layers: [Descriptor]
    /// The manifest this one refers to (image-spec 1.1 `subject`), if any.
    public let subject: Descriptor?

    public init(json value: JSON, digest: Digest) throws(StoreError) {
        guard let object = value.object else { throw StoreError(.corrupt, "manifest \(digest) is not a JSON object") }
        guard object["schemaVersion"]?.int64 == 2 else {
            throw StoreError(.unsupported, "manifest \(digest) has unsupported schemaVersion \(object["schemaVersion"]?.text ?? "(none)")")
        }
        guard let configJSON = object["config"] else { throw StoreError(.corrupt, "manifest \(digest) has no config descriptor") }
        config = try Descriptor(json: configJSON, what: "config of manifest \(digest)")
        var layers: [Descriptor] = []
        for (i, l) in (object["layers"]?.array ?? []).enumerated() {
            layers.append(try Descriptor(json: l, what: "layer \(i) of manifest \(digest)"))
        }
        self.layers = layers
        if let subject = object["subject"], !subject.isNull {
            self.subject = try Descriptor(json: subject, what: "subject of manifest \(digest)")
        } else {
            self.subject = nil
        }
        self.json = object
    }

    /// A new OCI manifest for a config and its layers.
    public init(config: Descriptor, layers: [Descriptor]) {
        var json = JSONObject()
        json["schemaVersion"] = .int(2)
        json["mediaType"] = .string(MediaType.imageManifest)
        json["config"] = .object(config.json)
        json["layers"] = .array(layers.map { .object($0.json) })
        self.json = json
        self.config = config
        self.layers = layers
        self.subject = nil
    }

    public var mediaType: String { json["mediaType"]?.string ?? MediaType.imageManifest }

    public mutating func setConfig(_ descriptor: Descriptor) {
        config = descriptor
        json["config"] = .object(descriptor.json)
    }

    public mutating func setLayers(_ descriptors: [Descriptor]) {
        layers = descriptors
        json["layers"] = .array(descriptors.map { .object($0.json) })
    }

    public var annotations: [String: String] {
        get { json["annotations"]?.object?.stringMap ?? [:] }
        set { json["annotations"] = newValue.isEmpty ? nil : .object(JSONObject(stringMap: newValue)) }
    }
}

/// An image index (image-spec/image-index.md), OCI or Docker manifest list; also `index.json`.
public struct ImageIndex: Sendable, Equatable {
    public private(set) var json: JSONObject
    public private(set) var manifests: [Descriptor]

    public init(json value: JSON, what: String) throws(StoreError) {
        guard let object = value.object else { throw StoreError(.corrupt, "\(what) is not a JSON object") }
        guard object["schemaVersion"]?.int64 == 2 else {
            throw StoreError(.unsupported, "\(what) has unsupported schemaVersion \(object["schemaVersion"]?.text ?? "(none)")")
        }
        var manifests: [Descriptor] = []
        for (i, m) in (object["manifests"]?.array ?? []).enumerated() {
            manifests.append(try Descriptor(json: m, what: "entry \(i) of \(what)"))
        }
        self.manifests = manifests
        self.json = object
    }

    /// An empty index, as `umoci init` writes it.
    public init() {
        var json = JSONObject()
        json["schemaVersion"] = .int(2)
        json["mediaType"] = .string(MediaType.imageIndex)
        json["manifests"] = .array([])
        self.json = json
        self.manifests = []
    }

    public mutating func setManifests(_ descriptors: [Descriptor]) {
        manifests = descriptors
        json["manifests"] = .array(descriptors.map { .object($0.json) })
    }
}
