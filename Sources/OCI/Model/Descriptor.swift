import Basics
/// A content descriptor (image-spec/descriptor.md), as a view over its JSON object so that
/// fields this tool does not model (urls, platform, data, artifactType, ...) survive edits.
public struct Descriptor: Sendable, Equatable {
    public private(set) var json: JSONObject
    public let digest: Digest

    public init(json: JSONObject) throws(StoreError) {
        guard let mediaType = json["mediaType"]?.string, !mediaType.isEmpty else {
            throw StoreError(.corrupt, "descriptor without a mediaType: \(JSON.object(json).text)")
        }
        guard let digestText = json["digest"]?.string else {
            throw StoreError(.corrupt, "descriptor of \(mediaType) without a digest")
        }
        digest = try Digest(parsing: digestText)
        guard let size = json["size"]?.int64, size >= 0 else {
            throw StoreError(.corrupt, "descriptor \(digest) has no valid size")
        }
        _ = size
        self.json = json
    }

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String] = [:]) {
        var json = JSONObject()
        json["mediaType"] = .string(mediaType)
        json["digest"] = .string(digest.description)
        json["size"] = .int(size)
        self.json = json
        self.digest = digest
        self.annotations = annotations
    }

    public init(json value: JSON, what: @autoclosure () -> String) throws(StoreError) {
        guard let object = value.object else { throw StoreError(.corrupt, "\(what()) is not a descriptor object") }
        try self.init(json: object)
    }

    public var mediaType: String { json["mediaType"]?.string ?? "" }
    public var size: Int64 { json["size"]?.int64 ?? 0 }

    /// The descriptor's annotations; setting an empty map removes the field.
    public var annotations: [String: String] {
        get { json["annotations"]?.object?.stringMap ?? [:] }
        set { json["annotations"] = newValue.isEmpty ? nil : .object(JSONObject(stringMap: newValue)) }
    }

    /// The content embedded in the descriptor (image-spec 1.1 `data`, base64), or nil when
    /// there is none. It is not verified here: `ImageLayout.readBlob` checks it against the
    /// descriptor's size and digest.
    public func embeddedData() throws(StoreError) -> [UInt8]? {
        guard let value = json["data"], !value.isNull else { return nil }
        guard let text = value.string, let bytes = Base64.decode(text) else {
            throw StoreError(.corrupt, "descriptor \(digest) has invalid embedded data: not base64")
        }
        return bytes
    }

    public var refName: String? { json["annotations"]?.object?["org.opencontainers.image.ref.name"]?.string }

    /// This descriptor with a tag set or removed, leaving every other annotation alone.
    public func withRefName(_ name: String?) -> Descriptor {
        var copy = self
        var a = copy.json[object: "annotations"]
        a[Annotation.refName] = name.map { .string($0) }
        copy.json["annotations"] = a.isEmpty ? nil : .object(a)
        return copy
    }
}

extension JSONObject {
    /// The string members of this object, as Go would decode a map[string]string.
    public var stringMap: [String: String] {
        var out: [String: String] = [:]
        for m in members { if let s = m.value.string { out[m.key] = s } }
        return out
    }

    /// A map written with its keys sorted, as Go marshals a map.
    public init(stringMap: [String: String]) {
        self.init()
        for key in stringMap.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            self[key] = .string(stringMap[key]!)
        }
    }
}
